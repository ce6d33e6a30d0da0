package hostkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// FS returns the host's file system, rooted at "/", as an io/fs.FS (also
// fs.ReadDirFS and fs.StatFS) over SFTP. Operations fail once ctx is done,
// those under way too.
//
// Names are io/fs names: slash-separated and unrooted, relative to the
// root, so /etc/hostname is "etc/hostname" and the root itself is ".". A
// rooted name ("/etc/hostname"), or one with "..", fails with
// fs.ErrInvalid (fs.ValidPath). Missing files give fs.ErrNotExist.
//
// FS needs SSH: on a host driven through a Transport only (a container
// without sshd) it returns an error wrapping ErrNoSSH; use ReadFile,
// Download or Execute there.
func (h *Host) FS(ctx context.Context) (fs.FS, error) { return h.FSAt(ctx, "/") }

// FSAt is FS rooted at the remote directory root, which must be absolute
// and a directory; names are relative to it, as for FS.
func (h *Host) FSAt(ctx context.Context, root string) (fs.FS, error) {
	sc, c, err := h.sftpConn(ctx)
	if err != nil {
		return nil, err
	}
	if !path.IsAbs(root) {
		return nil, fmt.Errorf("hostkit: host %s: FS root %q is not absolute", h.Hostname, root)
	}
	fi, err := await(ctx, h, c, func() (fs.FileInfo, error) { return sc.Stat(root) }, nil)
	if err != nil {
		return nil, fmt.Errorf("hostkit: host %s: FS root %s: %w", h.Hostname, root, ctxErr(ctx, err))
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("hostkit: host %s: FS root %s is not a directory", h.Hostname, root)
	}
	return &remoteFS{ctx: ctx, h: h, conn: c, c: sc, root: path.Clean(root)}, nil
}

type remoteFS struct {
	ctx  context.Context
	h    *Host
	conn *ssh.Client // the connection c runs over
	c    *sftp.Client
	root string
}

// stat is c.Stat under await.
func (f *remoteFS) stat(full string) (fs.FileInfo, error) {
	fi, err := await(f.ctx, f.h, f.conn, func() (fs.FileInfo, error) { return f.c.Stat(full) }, nil)
	return fi, ctxErr(f.ctx, err)
}

var (
	_ fs.ReadDirFS = (*remoteFS)(nil)
	_ fs.StatFS    = (*remoteFS)(nil)
)

func (f *remoteFS) full(op, name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	if err := f.ctx.Err(); err != nil {
		return "", &fs.PathError{Op: op, Path: name, Err: err}
	}
	return path.Join(f.root, name), nil
}

// named gives a FileInfo the base name of the path the caller asked for
// ("." for the root), as io/fs expects.
type named struct {
	fs.FileInfo
	name string
}

func (n named) Name() string { return n.name }

func (f *remoteFS) Stat(name string) (fs.FileInfo, error) {
	full, err := f.full("stat", name)
	if err != nil {
		return nil, err
	}
	fi, err := f.stat(full)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: unwrapStatus(err)}
	}
	return named{fi, path.Base(name)}, nil
}

func (f *remoteFS) ReadDir(name string) ([]fs.DirEntry, error) {
	full, err := f.full("readdir", name)
	if err != nil {
		return nil, err
	}
	// ReadDirContext closes the directory without the context.
	infos, err := await(f.ctx, f.h, f.conn, func() ([]fs.FileInfo, error) { return f.c.ReadDirContext(f.ctx, full) }, nil)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: unwrapStatus(ctxErr(f.ctx, err))}
	}
	out := make([]fs.DirEntry, 0, len(infos))
	for _, fi := range infos {
		if fi.Name() == "." || fi.Name() == ".." {
			continue
		}
		out = append(out, fs.FileInfoToDirEntry(fi))
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

func (f *remoteFS) Open(name string) (fs.File, error) {
	full, err := f.full("open", name)
	if err != nil {
		return nil, err
	}
	fi, err := f.stat(full)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: unwrapStatus(err)}
	}
	info := named{fi, path.Base(name)}
	if fi.IsDir() {
		return &remoteDir{fsys: f, name: name, info: info}, nil
	}
	rf, err := f.h.openFile(f.ctx, f.c, f.conn, full, os.O_RDONLY)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: unwrapStatus(err)}
	}
	file := &remoteFile{ctx: f.ctx, f: rf, name: name, info: info}
	// Abort on ctx done: a later Read fails, and the handle is released.
	file.stop = context.AfterFunc(f.ctx, func() { rf.Close() })
	return file, nil
}

// unwrapStatus maps sftp status errors onto the io/fs sentinels.
func unwrapStatus(err error) error {
	var se *sftp.StatusError
	if errors.As(err, &se) {
		switch se.FxCode() {
		case sftp.ErrSSHFxNoSuchFile:
			return fs.ErrNotExist
		case sftp.ErrSSHFxPermissionDenied:
			return fs.ErrPermission
		}
	}
	return err
}

// remoteFile reads through a window of readChunk bytes: io/fs users (and
// fstest) read in small pieces, and each SFTP read is a round trip.
type remoteFile struct {
	ctx  context.Context
	f    *file
	name string
	info fs.FileInfo
	stop func() bool

	mu     sync.Mutex
	pos    int64  // Read/Seek position
	chunk  []byte // backing store of buf
	buf    []byte // file content at bufOff
	bufOff int64
}

const (
	readChunk = 32 << 10
	bigRead   = 8 << 20 // larger reads go through a buffer of this size
)

func (r *remoteFile) Stat() (fs.FileInfo, error) { return r.info, nil }

func (r *remoteFile) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	n, err := r.readAt(p, r.pos)
	r.pos += int64(n)
	if n > 0 && err == io.EOF {
		err = nil
	}
	return n, err
}

func (r *remoteFile) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.readAt(p, off)
}

func (r *remoteFile) readAt(p []byte, off int64) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, &fs.PathError{Op: "read", Path: r.name, Err: err}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: r.name, Err: fs.ErrInvalid}
	}
	n := 0
	var big []byte
	for n < len(p) {
		o := off + int64(n)
		if o < r.bufOff || o >= r.bufOff+int64(len(r.buf)) {
			if len(p)-n >= readChunk {
				// Not straight into p: see readRemote.
				if big == nil {
					big = make([]byte, min(len(p)-n, bigRead))
				}
				k := min(len(p)-n, len(big))
				m, err := r.readRemote(big[:k], o)
				n += copy(p[n:], big[:m])
				if m < k || err != nil {
					return n, err
				}
				continue
			}
			if r.chunk == nil {
				r.chunk = make([]byte, readChunk)
			}
			m, err := r.readRemote(r.chunk, o)
			r.buf, r.bufOff = r.chunk[:m], o
			if m == 0 {
				if err == nil {
					err = io.EOF
				}
				return n, err
			}
			if err != nil && err != io.EOF {
				return n, err
			}
		}
		n += copy(p[n:], r.buf[o-r.bufOff:])
	}
	return n, nil
}

// readRemote reads the file at off into buf, which a read given up on
// (see await) may still fill: it is never reused then.
func (r *remoteFile) readRemote(buf []byte, off int64) (int, error) {
	n, err := await(r.ctx, r.f.h, r.f.c, func() (int, error) { return r.f.f.ReadAt(buf, off) }, nil)
	if err != nil && r.ctx.Err() != nil {
		r.chunk, r.buf = nil, nil
		return 0, &fs.PathError{Op: "read", Path: r.name, Err: r.ctx.Err()}
	}
	return n, err
}

func (r *remoteFile) Seek(offset int64, whence int) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.pos + offset
	case io.SeekEnd:
		fi, err := await(r.ctx, r.f.h, r.f.c, r.f.f.Stat, nil)
		if err != nil {
			return 0, &fs.PathError{Op: "seek", Path: r.name, Err: ctxErr(r.ctx, err)}
		}
		abs = fi.Size() + offset
	default:
		return 0, &fs.PathError{Op: "seek", Path: r.name, Err: fs.ErrInvalid}
	}
	if abs < 0 {
		return 0, &fs.PathError{Op: "seek", Path: r.name, Err: fs.ErrInvalid}
	}
	r.pos = abs
	return abs, nil
}

func (r *remoteFile) Close() error {
	if r.stop() {
		return r.f.Close()
	}
	return nil
}

type remoteDir struct {
	fsys    *remoteFS
	name    string
	info    fs.FileInfo
	entries []fs.DirEntry
	read    bool
	off     int
	closed  bool
}

func (d *remoteDir) Stat() (fs.FileInfo, error) { return d.info, nil }

func (d *remoteDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: errors.New("is a directory")}
}

func (d *remoteDir) Close() error {
	if d.closed {
		return &fs.PathError{Op: "close", Path: d.name, Err: fs.ErrClosed}
	}
	d.closed = true
	return nil
}

func (d *remoteDir) ReadDir(n int) ([]fs.DirEntry, error) {
	if d.closed {
		return nil, &fs.PathError{Op: "readdir", Path: d.name, Err: fs.ErrClosed}
	}
	if !d.read {
		e, err := d.fsys.ReadDir(d.name)
		if err != nil {
			return nil, err
		}
		d.entries, d.read = e, true
	}
	rest := d.entries[d.off:]
	if n <= 0 {
		d.off = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(rest))
	d.off += n
	return rest[:n], nil
}
