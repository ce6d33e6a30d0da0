package container

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/pidline"
)

// execRequest is one command run through the engine's exec API.
type execRequest struct {
	Cmd    []string
	User   string
	Env    []string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// OnCancel, when set, runs when ctx ends before the command does,
	// before the attached stream is closed; exec returns after it.
	OnCancel func()
	// StreamEnd, when set, runs when the output stream has ended.
	StreamEnd func()
}

// exec runs req in container id and returns its exit status. Output is
// demultiplexed (no TTY) into req.Stdout and req.Stderr. ctx bounds the whole
// run: when it ends, req.OnCancel runs, the attached stream is closed and
// ctx's error returned (the process goes on inside the container unless
// OnCancel ends it: the engine has no API to kill an exec).
func (e *engine) exec(ctx context.Context, id string, req execRequest) (int, error) {
	created, err := e.cli.ExecCreate(ctx, id, client.ExecCreateOptions{
		User:         req.User,
		Env:          req.Env,
		Cmd:          req.Cmd,
		AttachStdin:  req.Stdin != nil,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return -1, fmt.Errorf("exec create in container %s: %w", shortID(id), err)
	}
	att, err := e.cli.ExecAttach(ctx, created.ID, client.ExecAttachOptions{})
	if err != nil {
		return -1, fmt.Errorf("exec attach in container %s: %w", shortID(id), err)
	}
	defer att.Close()
	// The hijacked connection ignores ctx once established: close it when
	// ctx ends so the copies below return.
	cancelled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(cancelled)
		if req.OnCancel != nil {
			req.OnCancel()
		}
		att.Close()
	})
	// An OnCancel under way finishes before exec returns.
	defer func() {
		if !stop() {
			<-cancelled
		}
	}()

	if req.Stdin != nil {
		// Not waited for: a stdin that never ends must not hold the result;
		// the copy ends when the connection closes or stdin does.
		go func() {
			_, _ = io.Copy(att.Conn, req.Stdin)
			_ = att.CloseWrite()
		}()
	}
	stdout, stderr := req.Stdout, req.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	_, cerr := stdcopy.StdCopy(stdout, stderr, att.Reader)
	if req.StreamEnd != nil {
		req.StreamEnd()
	}
	if ctx.Err() != nil {
		return -1, ctx.Err()
	}
	if cerr != nil {
		return -1, fmt.Errorf("exec output from container %s: %w", shortID(id), cerr)
	}
	att.Close()

	// The stream can end a moment before the engine records the exit.
	for delay := time.Millisecond; ; delay = min(delay*2, 50*time.Millisecond) {
		ins, err := e.cli.ExecInspect(ctx, created.ID, client.ExecInspectOptions{})
		if err != nil {
			return -1, fmt.Errorf("exec inspect in container %s: %w", shortID(id), err)
		}
		if !ins.Running {
			return ins.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(delay):
		}
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// transport drives a container without sshd through the engine: commands by
// exec, files by the archive API. It implements hostkit.Transport.
type transport struct {
	p    *Provider
	user string
	// resolve finds the container id (lazily, so Connect does not call the
	// engine).
	resolve func(ctx context.Context) (string, error)
	once    sync.Mutex
	id      string

	leftMu    sync.Mutex
	leftovers []string // temporaries of failed writes not removed yet (transfer.go)
}

var _ hostkit.Transport = (*transport)(nil)

func (t *transport) containerID(ctx context.Context) (string, error) {
	t.once.Lock()
	defer t.once.Unlock()
	if t.id != "" {
		return t.id, nil
	}
	id, err := t.resolve(ctx)
	if err != nil {
		return "", err
	}
	t.id = id
	return id, nil
}

// execWrapper runs the command ($1) as `/bin/sh -c` would, after telling
// its pid on stderr (a pidline.Marker line, removed from the output). An
// exec'd process leads its own process group, and exec keeps the pid: so
// a cancelled command is ended with its children by killing that group.
const execWrapper = `printf '` + pidline.Marker + `%d\n' "$$" >&2; exec /bin/sh -c "$1"`

// Execute runs cmd with /bin/sh -c in the container. When ctx ends first,
// the command's process group is killed inside the container (the engine
// cannot kill an exec), and ctx's error returned with the output so far.
func (t *transport) Execute(ctx context.Context, cmd string, opts hostkit.ExecOptions) (_ hostkit.Result, err error) {
	defer t.p.tidy(&err)
	id, err := t.containerID(ctx)
	if err != nil {
		return hostkit.Result{Status: -1}, err
	}
	t.sweep(ctx, id)
	var env []string
	for k, v := range opts.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	var stdout, stderr bytes.Buffer
	pw := pidline.NewWriter(&stderr)
	status, err := t.p.eng.exec(ctx, id, execRequest{
		Cmd: []string{"/bin/sh", "-c", execWrapper, "sh", cmd}, User: t.user, Env: env,
		Stdin: opts.Stdin, Stdout: &stdout, Stderr: pw,
		OnCancel: func() { t.killGroup(ctx, id, pw) }, StreamEnd: pw.Flush,
	})
	res := hostkit.Result{Status: status, Stdout: stdout.String(), Stderr: stderr.String()}
	if err != nil {
		return res, t.exited(ctx, id, err)
	}
	return res, nil
}

// exited adds to err, from an engine call on container id, why the
// container is not running when it is not (see notRunning and exitDetail).
func (t *transport) exited(ctx context.Context, id string, err error) error {
	if ctx.Err() != nil {
		return err // cancelled, not failed
	}
	cctx, cancel := t.p.callCtx(ctx)
	defer cancel()
	ins, ierr := t.p.eng.cli.ContainerInspect(cctx, id, client.ContainerInspectOptions{})
	if ierr != nil {
		return err
	}
	why := notRunning(ins.Container)
	if why == nil {
		return err
	}
	return fmt.Errorf("%w: %v%s", err, why, t.p.exitDetail(cctx, ins.Container))
}

// exitDetail says what a container that is not running ran and last wrote,
// which a host whose command ended at once (one that does not keep running)
// needs to be understood.
func (p *Provider) exitDetail(ctx context.Context, c container.InspectResponse) string {
	ctx, cancel := p.callCtx(ctx)
	defer cancel()
	detail := ""
	if c.Config != nil && len(c.Config.Cmd) > 0 {
		detail = fmt.Sprintf(" (its command %q ended; a host needs one that keeps running)", strings.Join(c.Config.Cmd, " "))
	}
	if logs, err := p.eng.cli.ContainerLogs(ctx, c.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: "5"}); err == nil {
		var out bytes.Buffer
		_, _ = stdcopy.StdCopy(&out, &out, io.LimitReader(logs, 4<<10))
		logs.Close()
		if s := strings.TrimSpace(out.String()); s != "" {
			detail += "; its last output: " + strconv.Quote(s)
		}
	}
	return detail
}

// killWait bounds how long a cancelled Execute waits for the command's pid
// (a command cancelled as it starts) and for the kill.
const killWait = 5 * time.Second

// killGroup kills the process group of the command whose pid pw learns,
// through a new exec as root.
func (t *transport) killGroup(ctx context.Context, id string, pw *pidline.Writer) {
	pid := pw.Wait(killWait)
	if pid <= 1 {
		if pid == 0 {
			t.p.log.Warn("container: cancelled command's pid unknown; it may go on", "container", shortID(id))
		}
		return
	}
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(killWait, t.p.settings.callTimeout))
	defer cancel()
	var stderr bytes.Buffer
	status, err := t.p.eng.exec(kctx, id, execRequest{
		Cmd:    []string{"/bin/sh", "-c", pidline.KillCommand(pid)},
		User:   "0",
		Stderr: &stderr,
	})
	if err != nil || status != 0 {
		t.p.log.Debug("container: kill cancelled command", "container", shortID(id), "pid", pid, "status", status, "err", err, "stderr", stderr.String())
	}
}

// Open streams the file at p out of the container (symbolic links
// followed). The reader has Stat, whose mode is the file's (from the
// archive's header). A missing file's error is fs.ErrNotExist.
func (t *transport) Open(ctx context.Context, p string) (_ io.ReadCloser, err error) {
	defer t.p.tidy(&err)
	id, err := t.containerID(ctx)
	if err != nil {
		return nil, err
	}
	for range 8 {
		res, err := t.p.eng.cli.CopyFromContainer(ctx, id, client.CopyFromContainerOptions{SourcePath: p})
		if err != nil {
			if t.pathMissing(ctx, id, err) {
				return nil, fmt.Errorf("open %s in container %s: %w", p, shortID(id), &notExistError{err})
			}
			return nil, fmt.Errorf("copy %s from container %s: %w", p, shortID(id), err)
		}
		tr := tar.NewReader(res.Content)
		hdr, err := tr.Next()
		if err != nil {
			res.Content.Close()
			return nil, fmt.Errorf("copy %s from container %s: reading archive: %w", p, shortID(id), err)
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			return &tarFile{Reader: tr, c: res.Content, fi: hdr.FileInfo()}, nil
		case tar.TypeSymlink:
			res.Content.Close()
			target := hdr.Linkname
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(p), target)
			}
			p = target
			continue
		case tar.TypeDir:
			res.Content.Close()
			return nil, fmt.Errorf("open %s in container %s: is a directory", p, shortID(id))
		default:
			res.Content.Close()
			return nil, fmt.Errorf("open %s in container %s: not a regular file (type %q)", p, shortID(id), hdr.Typeflag)
		}
	}
	return nil, fmt.Errorf("open %s in container %s: too many symbolic links", p, shortID(id))
}

// pathMissing reports whether err, from the archive API, means a missing
// path: a 404 while the container exists (the engine answers 404 for a
// missing container too).
func (t *transport) pathMissing(ctx context.Context, id string, err error) bool {
	if !isNotFound(err) {
		return false
	}
	cctx, cancel := t.p.callCtx(ctx)
	defer cancel()
	_, ierr := t.p.eng.cli.ContainerInspect(cctx, id, client.ContainerInspectOptions{})
	return ierr == nil
}

// tarFile is a file streamed out of an archive. Stat gives its header's
// mode and size, so a download keeps the permission bits (hostkit reads
// them from a reader with Stat, as from an *os.File or *sftp.File).
type tarFile struct {
	*tar.Reader
	c  io.Closer
	fi fs.FileInfo
}

func (f *tarFile) Close() error { return f.c.Close() }

// Stat describes the file as the archive's header does.
func (f *tarFile) Stat() (fs.FileInfo, error) { return f.fi, nil }

// sizer is a reader that knows how many bytes it will give (-1: unknown).
type sizer interface{ Size() int64 }

// Create writes r to p in the container with mode perm, as a one-entry tar
// stream (streamed when r's size is known, else buffered to learn it)
// under a temporary name beside p, renamed over p once complete (see
// transfer.go): a write cut short leaves p as it was. A missing
// directory's error is fs.ErrNotExist.
func (t *transport) Create(ctx context.Context, p string, perm fs.FileMode, r io.Reader) (err error) {
	defer t.p.tidy(&err)
	id, err := t.containerID(ctx)
	if err != nil {
		return err
	}
	size := int64(-1)
	if s, ok := r.(sizer); ok {
		size = s.Size()
	}
	if size < 0 {
		data, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("write %s in container %s: reading input: %w", p, shortID(id), err)
		}
		r, size = bytes.NewReader(data), int64(len(data))
	}
	dir, name := path.Split(path.Clean(p))
	if name == "" || name == "/" || name == "." {
		return fmt.Errorf("write %s in container %s: not a file path", p, shortID(id))
	}
	if dir == "" {
		dir = "/"
	}
	t.sweep(ctx, id)
	if t.p.eng.createsDirs(ctx) {
		// As over SFTP, a missing directory is an error, not made.
		if _, err := t.p.eng.cli.ContainerStatPath(ctx, id, client.ContainerStatPathOptions{Path: dir}); err != nil {
			if t.pathMissing(ctx, id, err) {
				return fmt.Errorf("write %s in container %s: directory %s: %w", p, shortID(id), path.Clean(dir), &notExistError{err})
			}
			return fmt.Errorf("write %s in container %s: %w", p, shortID(id), err)
		}
	}
	tmp := hostkit.TempName(name)
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: tmp, Size: size, Mode: int64(perm.Perm()),
			ModTime: time.Now(), Format: tar.FormatPAX,
		})
		if err == nil {
			var n int64
			n, err = io.Copy(tw, io.LimitReader(r, size))
			if err == nil && n != size {
				err = fmt.Errorf("input ended after %d of %d bytes", n, size)
			}
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	_, err = t.p.eng.cli.CopyToContainer(ctx, id, client.CopyToContainerOptions{DestinationPath: dir, Content: pr})
	pr.CloseWithError(errors.New("copy ended"))
	if err != nil {
		if t.pathMissing(ctx, id, err) {
			return fmt.Errorf("write %s in container %s: directory %s: %w", p, shortID(id), path.Clean(dir), &notExistError{err})
		}
		t.discard(ctx, id, path.Join(dir, tmp))
		return fmt.Errorf("write %s in container %s: %w", p, shortID(id), t.exited(ctx, id, err))
	}
	return t.replace(ctx, id, path.Join(dir, tmp), path.Join(dir, name))
}

// Close releases nothing: the engine client belongs to the provider.
func (t *transport) Close() error { return nil }
