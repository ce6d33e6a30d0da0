package hostkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// SFTP returns the host's SFTP client, opened over its SSH connection on
// first use and re-opened after a reconnect. It is shared: do not close it.
// ctx bounds only the opening: calls on the client wait as long as the peer
// takes, while Host's own file methods (ReadFile, Upload, FS, ...) give up
// when their ctx ends.
func (h *Host) SFTP(ctx context.Context) (*sftp.Client, error) {
	sc, _, err := h.sftpConn(ctx)
	return sc, err
}

// sftpConn is SFTP, with the connection the client runs over.
func (h *Host) sftpConn(ctx context.Context) (*sftp.Client, *ssh.Client, error) {
	if h.cfg.Addr == "" {
		if h.isClosed() {
			return nil, nil, ErrClosed
		}
		return nil, nil, fmt.Errorf("%w: %s: SFTP needs SSH", ErrNoSSH, h.Hostname)
	}
	for attempt := 0; ; attempt++ {
		c, err := h.SSHClient(ctx)
		if err != nil {
			return nil, nil, err
		}
		if sc := h.sftpFor(c); sc != nil {
			return sc, c, nil
		}
		sc, err := h.openSFTP(ctx, c)
		if err == nil {
			return sc, c, nil
		}
		if attempt == 0 && isConnLost(err) && ctx.Err() == nil {
			h.forget(c)
			continue
		}
		return nil, nil, err
	}
}

func (h *Host) sftpFor(c *ssh.Client) *sftp.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sftpOwner == c {
		return h.sftp
	}
	return nil
}

func (h *Host) openSFTP(ctx context.Context, c *ssh.Client) (*sftp.Client, error) {
	select {
	case h.sftpSem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("hostkit: host %s: waiting for sftp: %w", h.Hostname, ctx.Err())
	}
	defer func() { <-h.sftpSem }()
	if sc := h.sftpFor(c); sc != nil {
		return sc, nil
	}
	// sftp.NewClient takes no context.
	sc, err := await(ctx, h, c, func() (*sftp.Client, error) {
		opts := []sftp.ClientOption{sftp.UseConcurrentWrites(true), sftp.UseConcurrentReads(true)}
		size, err := sftpRequestSize(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// Only the speed of large files depends on it.
			h.log.Debug("hostkit: sftp request size unknown, using 32 KiB", "host", h.Hostname, "error", err)
		}
		if size > 0 {
			opts = append(opts, sftp.MaxPacketUnchecked(size))
		}
		return sftp.NewClient(c, opts...)
	}, func(sc *sftp.Client) { sc.Close() })
	if err != nil {
		return nil, fmt.Errorf("hostkit: host %s: open sftp: %w", h.Hostname, ctxErr(ctx, err))
	}
	h.mu.Lock()
	if h.closed || h.client != c {
		h.mu.Unlock()
		h.aside(c, func() { sc.Close() })
		if h.isClosed() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("hostkit: host %s: open sftp: %w", h.Hostname, io.EOF)
	}
	old := h.sftp
	h.sftp, h.sftpOwner = sc, c
	left := len(h.leftovers)
	h.mu.Unlock()
	if old != nil {
		h.aside(c, func() { old.Close() })
	}
	if left > 0 {
		h.removeLeftovers(ctx, sc, c)
	}
	return sc, nil
}

// file is an open SFTP file whose calls give up when ctx ends (see await).
type file struct {
	ctx context.Context
	h   *Host
	c   *ssh.Client // the connection its SFTP client runs over
	f   *sftp.File
}

// Read reads through a buffer of its own: an abandoned read may still fill
// it after Read returned.
func (f *file) Read(p []byte) (int, error) {
	buf := make([]byte, len(p))
	n, err := await(f.ctx, f.h, f.c, func() (int, error) { return f.f.Read(buf) }, nil)
	return copy(p, buf[:n]), ctxErr(f.ctx, err)
}

// writeTo streams the file to w with concurrent reads. w may be written to
// until it returns, and once more if ctx ended (a write under way).
func (f *file) writeTo(w io.Writer) (int64, error) {
	n, err := await(f.ctx, f.h, f.c, func() (int64, error) {
		return f.f.WriteTo(&ctxWriter{ctx: f.ctx, w: w})
	}, nil)
	return n, ctxErr(f.ctx, err)
}

// Close releases the file's handle: aside once ctx is done, so that it is
// released on a peer that answers and nothing waits on one that does not.
func (f *file) Close() error {
	if err := f.ctx.Err(); err != nil {
		f.h.aside(f.c, func() { f.f.Close() })
		return err
	}
	return ctxErr(f.ctx, awaitErr(f.ctx, f.h, f.c, f.f.Close))
}

// openFile opens a remote file with sc (over c) under await.
func (h *Host) openFile(ctx context.Context, sc *sftp.Client, c *ssh.Client, path string, flags int) (*file, error) {
	f, err := await(ctx, h, c, func() (*sftp.File, error) { return sc.OpenFile(path, flags) },
		func(f *sftp.File) { f.Close() })
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	return &file{ctx: ctx, h: h, c: c, f: f}, nil
}

// ctxReader fails reads once ctx is done, so long copies stop, or once
// stopped. It keeps the size of what it wraps, which sftp uses to copy
// concurrently.
type ctxReader struct {
	ctx  context.Context
	r    io.Reader
	size int64 // -1: unknown

	mu      sync.Mutex // held while reading r
	stopped bool
}

func (c *ctxReader) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return 0, os.ErrClosed
	}
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// stop waits for a read under way and fails later ones: a copy given up
// on (see await) no longer reads the caller's reader once stop returns.
func (c *ctxReader) stop() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
}

func (c *ctxReader) Size() int64 { return c.size }

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// ctxErr prefers ctx's error over the one a cancelled copy produced.
func ctxErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// open streams a remote file, over SFTP or the transport. size is -1 when
// unknown.
func (h *Host) open(ctx context.Context, path string) (rc io.ReadCloser, size int64, mode fs.FileMode, err error) {
	if h.cfg.Addr == "" {
		t, err := h.viaTransport()
		if err != nil {
			return nil, 0, 0, err
		}
		rc, err := t.Open(ctx, path)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("hostkit: host %s: open %s: %w", h.Hostname, path, err)
		}
		size, mode := int64(-1), fs.FileMode(0o644)
		if st, ok := rc.(interface{ Stat() (fs.FileInfo, error) }); ok {
			if fi, err := st.Stat(); err == nil {
				size, mode = fi.Size(), fi.Mode().Perm()
			}
		}
		return rc, size, mode, nil
	}
	sc, c, err := h.sftpConn(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	f, err := h.openFile(ctx, sc, c, path, os.O_RDONLY)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("hostkit: host %s: open %s: %w", h.Hostname, path, err)
	}
	fi, err := await(ctx, h, c, f.f.Stat, nil)
	if err != nil {
		f.Close()
		return nil, 0, 0, fmt.Errorf("hostkit: host %s: stat %s: %w", h.Hostname, path, ctxErr(ctx, err))
	}
	if fi.IsDir() {
		f.Close()
		return nil, 0, 0, fmt.Errorf("hostkit: host %s: open %s: is a directory", h.Hostname, path)
	}
	return f, fi.Size(), fi.Mode().Perm(), nil
}

// create writes r (size bytes, -1 unknown) to a remote file with mode perm:
// through a temporary beside it, renamed over it once complete (see
// replace.go), so that a write cut short leaves the file as it was.
func (h *Host) create(ctx context.Context, path string, perm fs.FileMode, r io.Reader, size int64) error {
	if h.cfg.Addr == "" {
		t, err := h.viaTransport()
		if err != nil {
			return err
		}
		if err := t.Create(ctx, path, perm, &ctxReader{ctx: ctx, r: r, size: size}); err != nil {
			return fmt.Errorf("hostkit: host %s: write %s: %w", h.Hostname, path, ctxErr(ctx, err))
		}
		return nil
	}
	sc, c, err := h.sftpConn(ctx)
	if err != nil {
		return err
	}
	target, inPlace, err := h.sftpTarget(ctx, sc, c, path)
	if err != nil {
		return fmt.Errorf("hostkit: host %s: write %s: %w", h.Hostname, path, err)
	}
	if !inPlace {
		tmp := TempName(target)
		openFailed, err := h.sftpWrite(ctx, sc, c, tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm, r, size)
		if err == nil {
			err = h.sftpRename(ctx, sc, c, tmp, target)
			if err != nil {
				err = fmt.Errorf("rename %s to %s: %w", tmp, target, err)
			}
		}
		if err == nil {
			return nil
		}
		if !openFailed {
			h.discard(ctx, sc, c, tmp)
			return fmt.Errorf("hostkit: host %s: write %s: %w", h.Hostname, path, h.lostWhy(c, err))
		}
		if !errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("hostkit: host %s: create %s: %w", h.Hostname, path, err)
		}
		// The directory is not ours to write in; the file may be.
	}
	if _, err := h.sftpWrite(ctx, sc, c, target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm, r, size); err != nil {
		return fmt.Errorf("hostkit: host %s: write %s: %w", h.Hostname, path, h.lostWhy(c, err))
	}
	return nil
}

// lostWhyOf is lostWhy for an error reading rc, when rc is an SFTP file.
func (h *Host) lostWhyOf(rc io.Reader, err error) error {
	if f, ok := rc.(*file); ok {
		return h.lostWhy(f.c, err)
	}
	return err
}

// copyOut streams rc to w: sftp files read concurrently.
func copyOut(ctx context.Context, w io.Writer, rc io.Reader) (int64, error) {
	if f, ok := rc.(*file); ok {
		return f.writeTo(w)
	}
	return io.Copy(&ctxWriter{ctx: ctx, w: w}, &ctxReader{ctx: ctx, r: rc, size: -1})
}

// ReadFile returns the content of a remote file.
func (h *Host) ReadFile(ctx context.Context, path string) ([]byte, error) {
	rc, size, _, err := h.open(ctx, path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	if size > 0 {
		buf.Grow(int(size))
	}
	if _, err := copyOut(ctx, &buf, rc); err != nil {
		return nil, fmt.Errorf("hostkit: host %s: read %s: %w", h.Hostname, path, h.lostWhyOf(rc, ctxErr(ctx, err)))
	}
	return buf.Bytes(), nil
}

// WriteFile writes data to a remote file, creating or replacing it; the
// file's mode is set to perm. The data goes to a temporary file beside
// path, renamed over it once complete: a write that fails leaves path as it
// was (see the package documentation).
func (h *Host) WriteFile(ctx context.Context, path string, data []byte, perm fs.FileMode) error {
	return h.create(ctx, path, perm, bytes.NewReader(data), int64(len(data)))
}

// Upload streams a local file to remotePath, keeping its permission bits,
// through a temporary file beside remotePath as WriteFile does.
func (h *Host) Upload(ctx context.Context, localPath, remotePath string) error {
	f, err := os.Open(localPath)
	if err != nil {
		return fmt.Errorf("hostkit: host %s: upload: %w", h.Hostname, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("hostkit: host %s: upload: %w", h.Hostname, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("hostkit: host %s: upload %s: is a directory", h.Hostname, localPath)
	}
	return h.create(ctx, remotePath, fi.Mode().Perm(), f, fi.Size())
}

// Download streams remotePath to a local file, keeping its permission bits.
// It writes a temporary file beside localPath and renames it over
// localPath once complete: a download cut short leaves localPath as it was
// and no temporary behind. (A localPath that is a symbolic link is written
// through; a device or FIFO is written in place, as is a file whose
// directory is not writable.)
func (h *Host) Download(ctx context.Context, remotePath, localPath string) error {
	rc, _, mode, err := h.open(ctx, remotePath)
	if err != nil {
		return err
	}
	defer rc.Close()
	err = writeLocal(localPath, mode, func(w io.Writer) error {
		_, err := copyOut(ctx, w, rc)
		return h.lostWhyOf(rc, ctxErr(ctx, err))
	})
	if err != nil {
		return fmt.Errorf("hostkit: host %s: download %s to %s: %w", h.Hostname, remotePath, localPath, err)
	}
	return nil
}

// CopyTo streams srcPath on h to dstPath on dst (which may be h), keeping the
// permission bits; nothing is held in memory or written locally. dstPath is
// written through a temporary file beside it as WriteFile does.
func (h *Host) CopyTo(ctx context.Context, dst *Host, srcPath, dstPath string) error {
	if dst == nil {
		return errors.New("hostkit: CopyTo: nil destination host")
	}
	rc, size, mode, err := h.open(ctx, srcPath)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := dst.create(ctx, dstPath, mode, rc, size); err != nil {
		return fmt.Errorf("hostkit: copy %s:%s: %w", h.Hostname, srcPath, err)
	}
	return nil
}
