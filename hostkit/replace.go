package hostkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// Why temporaries: a transfer cut short (sshd killed, a container killed or
// paused past the deadline) used to leave a truncated file under the
// destination's name, an existing good file already truncated. Every write
// of a whole file (WriteFile, Upload, CopyTo, Download) now goes to a
// temporary beside the destination, renamed over it once complete, and
// removed when the write fails.

// A transfer's temporary file is made beside its destination:
// ".<destination's name>.broker-<random>.tmp".
const (
	tempPrefix = "."
	tempMarker = ".broker-"
	tempSuffix = ".tmp"
)

// TempName returns a new temporary name beside dst (same directory) for a
// file being written to dst: hidden, unique, and never longer than a
// file name may be.
func TempName(dst string) string {
	dir, base := path.Split(dst)
	return dir + tempBase(base)
}

func tempBase(base string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	// NAME_MAX is 255 bytes: keep room for the frame and the random part.
	if len(base) > 200 {
		base = base[:200]
	}
	return tempPrefix + base + tempMarker + hex.EncodeToString(b[:]) + tempSuffix
}

// IsTempName reports whether name (a base name) is one TempName makes.
func IsTempName(name string) bool {
	return strings.HasPrefix(name, tempPrefix) && strings.HasSuffix(name, tempSuffix) && strings.Contains(name, tempMarker)
}

// lostWhy adds to err, when it says that the SFTP client over c lost its
// connection, why c ended (what its reads failed with: e.g. ErrHostGone
// from a dialer whose container stopped), once SSHClient's watch on c has
// seen it end: at once when the connection is what failed (its channels
// are closed as it ends), never when only the SFTP server did.
func (h *Host) lostWhy(c *ssh.Client, err error) error {
	if !errors.Is(err, sftp.ErrSSHFxConnectionLost) {
		return err
	}
	for deadline := time.Now().Add(100 * time.Millisecond); ; time.Sleep(5 * time.Millisecond) {
		h.mu.Lock()
		ended, why := h.endedConn == c, h.endedWhy
		h.mu.Unlock()
		if ended {
			if why != nil && !errors.Is(why, io.EOF) && !errors.Is(err, why) {
				return fmt.Errorf("%w (%w)", err, why)
			}
			return err
		}
		if time.Now().After(deadline) {
			return err
		}
	}
}

// maxLinks bounds the symbolic links followed to a destination.
const maxLinks = 40

// sftpTarget says where a write to dst goes: the file a symbolic link at
// dst points to (written through, as opening it would), and whether it
// must be written in place: dst exists and is neither a regular file nor
// a directory (a device, a FIFO), or cannot be looked at.
func (h *Host) sftpTarget(ctx context.Context, sc *sftp.Client, c *ssh.Client, dst string) (string, bool, error) {
	// Each op reads a path of its own: one given up on may still run (see await).
	lstat := func(p string) (fs.FileInfo, error) {
		fi, err := await(ctx, h, c, func() (fs.FileInfo, error) { return sc.Lstat(p) }, nil)
		return fi, ctxErr(ctx, err)
	}
	readlink := func(p string) (string, error) {
		l, err := await(ctx, h, c, func() (string, error) { return sc.ReadLink(p) }, nil)
		return l, ctxErr(ctx, err)
	}
	lost := func(err error) bool { return ctx.Err() != nil || isConnLost(err) }
	return writeTarget(dst, lstat, readlink, lost)
}

// writeTarget is sftpTarget and localTarget: lstat and readlink look at
// the destination's side; an lstat error for which fatal holds ends the
// write, any other means "write in place", as before (e.g. a directory we
// may not search).
func writeTarget(dst string, lstat func(string) (fs.FileInfo, error), readlink func(string) (string, error), fatal func(error) bool) (string, bool, error) {
	target := dst
	for range maxLinks {
		fi, err := lstat(target)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return target, false, nil
		case err != nil && fatal(err):
			return "", false, err
		case err != nil:
			return target, true, nil
		case fi.Mode().IsRegular():
			return target, false, nil
		case fi.IsDir():
			return "", false, fmt.Errorf("%s is a directory", target)
		case fi.Mode()&fs.ModeSymlink == 0:
			return target, true, nil
		}
		link, err := readlink(target)
		if err != nil {
			return "", false, err
		}
		if !path.IsAbs(link) {
			link = path.Join(path.Dir(target), link)
		}
		target = link
	}
	return "", false, fmt.Errorf("%s: too many symbolic links", dst)
}

// sftpWrite writes r (size bytes, -1 unknown) to path, opened with flags,
// with mode perm set before any byte is written (so that a secret is never
// readable by others). openFailed says the file could not be opened.
func (h *Host) sftpWrite(ctx context.Context, sc *sftp.Client, c *ssh.Client, path string, flags int, perm fs.FileMode, r io.Reader, size int64) (openFailed bool, err error) {
	f, err := h.openFile(ctx, sc, c, path, flags)
	if err != nil {
		return true, err
	}
	if err := awaitErr(ctx, h, c, func() error { return f.f.Chmod(perm) }); err != nil {
		f.Close()
		return false, fmt.Errorf("chmod: %w", ctxErr(ctx, err))
	}
	cr := &ctxReader{ctx: ctx, r: r, size: size}
	_, err = await(ctx, h, c, func() (int64, error) { return f.f.ReadFrom(cr) }, nil)
	cr.stop() // r is the caller's again
	if err != nil {
		f.Close()
		return false, ctxErr(ctx, err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("close: %w", err)
	}
	return false, nil
}

// sftpRename renames tmp over dst: atomically with OpenSSH's
// posix-rename@openssh.com; else (a server without it, or denying it:
// sftp-server -P) with SFTP's own rename, which servers may refuse when dst
// exists (OpenSSH's does): dst is then removed first, which leaves a moment
// without dst, never a partial one.
func (h *Host) sftpRename(ctx context.Context, sc *sftp.Client, c *ssh.Client, tmp, dst string) error {
	if _, ok := sc.HasExtension("posix-rename@openssh.com"); ok {
		err := awaitErr(ctx, h, c, func() error { return sc.PosixRename(tmp, dst) })
		if err == nil || ctx.Err() != nil || !(errors.Is(err, fs.ErrPermission) || isUnsupported(err)) {
			return ctxErr(ctx, err)
		}
	}
	err := awaitErr(ctx, h, c, func() error { return sc.Rename(tmp, dst) })
	if err == nil || ctx.Err() != nil || isConnLost(err) || errors.Is(err, fs.ErrPermission) {
		return ctxErr(ctx, err)
	}
	if rerr := awaitErr(ctx, h, c, func() error { return sc.Remove(dst) }); rerr != nil {
		return ctxErr(ctx, err) // the first error says more
	}
	return ctxErr(ctx, awaitErr(ctx, h, c, func() error { return sc.Rename(tmp, dst) }))
}

// isUnsupported reports whether err is the server's "operation unsupported".
func isUnsupported(err error) bool {
	var se *sftp.StatusError
	return errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxOpUnsupported
}

// discard removes the temporary tmp of a write that failed: now, while ctx
// lasts; else aside, and it is kept in h's leftovers until removed, which
// the next SFTP client of h (after a reconnect) does first.
func (h *Host) discard(ctx context.Context, sc *sftp.Client, c *ssh.Client, tmp string) {
	gone := func(err error) bool { return err == nil || errors.Is(err, fs.ErrNotExist) }
	if ctx.Err() == nil {
		if err := awaitErr(ctx, h, c, func() error { return sc.Remove(tmp) }); gone(err) {
			return
		}
	}
	h.mu.Lock()
	h.leftovers[tmp] = struct{}{}
	h.mu.Unlock()
	h.aside(c, func() {
		if gone(sc.Remove(tmp)) {
			h.mu.Lock()
			delete(h.leftovers, tmp)
			h.mu.Unlock()
		}
	})
}

// removeLeftovers removes the temporaries that earlier failed writes could
// not (their connection lost), with a new SFTP client; those it cannot
// remove yet stay listed.
func (h *Host) removeLeftovers(ctx context.Context, sc *sftp.Client, c *ssh.Client) {
	h.mu.Lock()
	var paths []string
	for p := range h.leftovers {
		paths = append(paths, p)
	}
	h.mu.Unlock()
	for _, p := range paths {
		err := awaitErr(ctx, h, c, func() error { return sc.Remove(p) })
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			h.log.Debug("hostkit: temporary file of a failed write not removed yet", "host", h.Hostname, "path", p, "error", err)
			continue
		}
		h.mu.Lock()
		delete(h.leftovers, p)
		h.mu.Unlock()
	}
}

// localTarget is sftpTarget for a local destination.
func localTarget(dst string) (string, bool, error) {
	return writeTarget(filepath.Clean(dst), os.Lstat, os.Readlink, func(error) bool { return false })
}

// writeLocal writes what fill gives to the local file dst with mode perm:
// through a temporary beside it, renamed over it once complete and removed
// otherwise. A destination that is not a regular file (a device, a FIFO),
// or whose directory we may not write in, is written in place.
func writeLocal(dst string, perm fs.FileMode, fill func(io.Writer) error) error {
	target, inPlace, err := localTarget(dst)
	if err != nil {
		return err
	}
	if !inPlace {
		dir, base := filepath.Split(target)
		if dir == "" {
			dir = "."
		}
		f, err := os.OpenFile(filepath.Join(dir, tempBase(base)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		switch {
		case err == nil:
			return replaceLocal(f, target, perm, fill)
		case !errors.Is(err, fs.ErrPermission):
			return err
		}
		// The directory is not ours to write in; the file may be.
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if err := fill(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if fi, err := os.Stat(target); err == nil && fi.Mode().IsRegular() {
		return os.Chmod(target, perm)
	}
	return nil
}

// replaceLocal fills the temporary f, gives it mode perm (umask aside)
// and renames it to dst; it removes f on failure.
func replaceLocal(f *os.File, dst string, perm fs.FileMode, fill func(io.Writer) error) (err error) {
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := fill(f); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}
