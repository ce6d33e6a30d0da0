// Package safefile opens the files broker writes in its directory
// (locks, queue tickets, logs, leases, temporary files) without following
// symbolic links. CI jobs often run as root: a link planted at a lock
// file's path must not make broker write into /etc/passwd.
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// ErrUnsafe is wrapped by every error that refuses a path because of what
// is there (a symbolic link, a directory, a device, another user's file).
var ErrUnsafe = errors.New("not a regular file of ours")

// OpenFile is os.OpenFile with O_NOFOLLOW: a symbolic link at name is
// refused, as is anything but a regular file owned by this process's
// user (root may own nothing else either: a file another user planted is
// refused too). The error names the path and what was found there.
func OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	f, err := os.OpenFile(name, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.EMLINK) {
			return nil, fmt.Errorf("%s: is a symbolic link; refusing to follow it (remove it): %w", name, ErrUnsafe)
		}
		return nil, err
	}
	if err := Check(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Create makes a new file at name, failing if anything (a link
// included) is there already.
func Create(name string, perm fs.FileMode) (*os.File, error) {
	return OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
}

// Check refuses an open file that is not a regular file owned by this
// process's effective user.
func Check(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: is a %s, not a regular file; refusing to use it: %w", f.Name(), kind(fi.Mode()), ErrUnsafe)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s: owned by uid %d, not by this user (uid %d); refusing to use it: %w", f.Name(), st.Uid, os.Geteuid(), ErrUnsafe)
	}
	return nil
}

// WriteFile is os.WriteFile through OpenFile.
func WriteFile(name string, data []byte, perm fs.FileMode) error {
	f, err := OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// CreateTemp is os.CreateTemp (a new file, never an existing one or a
// link) checked as OpenFile checks, with permissions 0600.
func CreateTemp(dir, pattern string) (*os.File, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	if err := Check(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ReadFile is os.ReadFile through OpenFile: a link, a named pipe or a
// device at name is refused rather than read (or waited on).
func ReadFile(name string) ([]byte, error) {
	f, err := OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeDir != 0:
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}
