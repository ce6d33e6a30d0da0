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
	"path/filepath"
	"strings"
	"syscall"
)

// ErrUnsafe is wrapped by every error that refuses a path because of what
// is there (a symbolic link, a directory, a device, another user's file).
var ErrUnsafe = errors.New("not a regular file of ours")

// OpenFile is os.OpenFile with O_NOFOLLOW: a symbolic link at name is
// refused, as is anything but a regular file owned by this process's
// user (root may own nothing else either: a file another user planted is
// refused too). The error names the path and what was found there.
//
// The open does not block on a named pipe (O_NONBLOCK, which changes
// nothing for a regular file), and O_TRUNC is applied only once the file
// has passed the check, so a refused file is left as it was.
func OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	trunc := flag&os.O_TRUNC != 0
	f, err := os.OpenFile(name, flag&^os.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) || errors.Is(err, syscall.EMLINK) {
			return nil, fmt.Errorf("%s: is a symbolic link; refusing to follow it (remove it): %w", name, ErrUnsafe)
		}
		// A named pipe with no reader, a socket: say what is there.
		if fi, lerr := os.Lstat(name); lerr == nil && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: is a %s, not a regular file; refusing to use it: %w", name, kind(fi.Mode()), ErrUnsafe)
		}
		return nil, err
	}
	if err := Check(f); err != nil {
		f.Close()
		return nil, err
	}
	if trunc {
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, err
		}
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
	return owned(f.Name(), fi)
}

// owned refuses fi when another user owns it.
func owned(name string, fi fs.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s: owned by uid %d, not by this user (uid %d); refusing to use it: %w", name, st.Uid, os.Geteuid(), ErrUnsafe)
	}
	return nil
}

// MkdirAll makes the directory sub below dir, with its parents below dir,
// and returns its path. Each directory of sub must be a real directory of
// this user, not a symbolic link: a link at dir/logs must not send broker's
// files elsewhere. dir itself is the user's choice and may be a link; ""
// is the working directory.
func MkdirAll(dir, sub string, perm fs.FileMode) (string, error) {
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return "", err
	}
	path := dir
	for part := range strings.SplitSeq(filepath.Clean(sub), string(filepath.Separator)) {
		if part == "" || part == "." {
			continue
		}
		if part == ".." {
			return "", fmt.Errorf("%s: leaves %s: %w", sub, dir, ErrUnsafe)
		}
		path = filepath.Join(path, part)
		if err := os.Mkdir(path, perm); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", err
		}
		if err := CheckDir(path); err != nil {
			return "", err
		}
	}
	return path, nil
}

// CheckDir refuses a path that is not a directory of this user (a
// symbolic link to one included).
func CheckDir(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: is a %s, not a directory; refusing to use it: %w", path, kind(fi.Mode()), ErrUnsafe)
	}
	return owned(path, fi)
}

// RemoveAll removes sub, a path below dir, and all it holds, after
// checking that no directory on the way from dir to it is a symbolic link
// or another user's: os.RemoveAll follows a link in the middle of a path,
// so a link planted at dir/container would make it remove files elsewhere.
// A sub that is not there is no error.
func RemoveAll(dir, sub string) error {
	path := dir
	parts := strings.Split(filepath.Clean(sub), string(filepath.Separator))
	for i, part := range parts {
		if part == "" || part == "." {
			continue
		}
		if part == ".." {
			return fmt.Errorf("%s: leaves %s: %w", sub, dir, ErrUnsafe)
		}
		path = filepath.Join(path, part)
		if i == len(parts)-1 {
			break
		}
		if err := CheckDir(path); errors.Is(err, fs.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
	}
	return os.RemoveAll(path)
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
	case m.IsRegular():
		return "regular file"
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
