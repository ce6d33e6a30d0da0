package hostkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/internal/pidline"
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ShellQuote quotes s for a POSIX shell, as one word.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// envPrefix returns "export K='v'; …" for env, names sorted. sshd usually
// refuses the "env" request (AcceptEnv), so the shell sets them instead.
func envPrefix(env map[string]string) (string, error) {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if !envName.MatchString(k) {
			return "", fmt.Errorf("invalid environment variable name %q", k)
		}
		b.WriteString("export ")
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(ShellQuote(env[k]))
		b.WriteString("; ")
	}
	return b.String(), nil
}

// Execute runs cmd with the remote user's shell (a POSIX one: sh, bash,
// dash, ksh, zsh) and returns its exit status and output. A non-zero exit
// status is a Result, not an error; an error means the command could not be
// run or its end not seen (connection lost; or ctx done: then the command
// is killed on the host with what it started, and ctx's error returned with
// the output so far). A command killed by a signal gives Status -1 and an
// error naming the signal; through a Transport (hosts without sshd) it gives
// Status 128+N and no error, since the engine reports only the shell's exit
// code.
func (h *Host) Execute(ctx context.Context, cmd string, opts ...ExecOption) (Result, error) {
	var o ExecOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.Timeout == 0 {
		o.Timeout = h.cfg.CommandTimeout
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	if len(h.cfg.Env) > 0 && h.cfg.Addr != "" {
		env := maps.Clone(h.cfg.Env)
		maps.Copy(env, o.Env)
		o.Env = env
	}
	prefix, err := envPrefix(o.Env)
	if err != nil {
		return Result{Status: -1}, fmt.Errorf("hostkit: host %s: %w", h.Hostname, err)
	}
	// Env values may be secrets: log their names only.
	h.log.Debug("hostkit: execute", "host", h.Hostname, "cmd", cmd, "env", slices.Sorted(maps.Keys(o.Env)))
	if h.cfg.Addr == "" {
		t, err := h.viaTransport()
		if err != nil {
			return Result{Status: -1}, err
		}
		res, err := t.Execute(ctx, cmd, o)
		if err != nil {
			return res, fmt.Errorf("hostkit: host %s: execute: %w", h.Hostname, err)
		}
		return res, nil
	}
	return h.execSSH(ctx, prefix+cmd, o.Stdin)
}

// viaTransport returns the host's transport, or ErrClosed / ErrNoSSH.
func (h *Host) viaTransport() (Transport, error) {
	if h.isClosed() {
		return nil, ErrClosed
	}
	if h.transport == nil {
		return nil, fmt.Errorf("%w and no transport: %s", ErrNoSSH, h.Hostname)
	}
	return h.transport, nil
}

// pidLine makes the remote shell tell its pid first (see pidline). sshd
// made that shell the leader of a new session, so its process group holds
// the command and what it started; a cancelled command is ended by killing
// that group, since sshd refuses signals to root's sessions.
const pidLine = `printf '` + pidline.Marker + `%d\n' "$$" >&2; `

func (h *Host) execSSH(ctx context.Context, cmd string, stdin io.Reader) (Result, error) {
	sess, c, release, err := h.session(ctx)
	if err != nil {
		return Result{Status: -1}, err
	}
	var kill ssh.Signal
	defer func() { release(kill) }()
	// The buffers are read while an abandoned command may still write.
	var stdout, stderr lockedBuffer
	pw := pidline.NewWriter(&stderr)
	sess.Stdout = &stdout
	sess.Stderr = pw
	if stdin != nil {
		// Copy stdin ourselves: Session.Wait would wait for a reader the
		// command never drains.
		w, err := sess.StdinPipe()
		if err != nil {
			return Result{Status: -1}, fmt.Errorf("hostkit: host %s: stdin: %w", h.Hostname, err)
		}
		go func() {
			_, _ = io.Copy(w, stdin)
			w.Close()
		}()
	}
	if err := awaitErr(ctx, h, c, func() error { return sess.Start(pidLine + cmd) }); err != nil {
		return Result{Status: -1}, fmt.Errorf("hostkit: host %s: start command: %w", h.Hostname, ctxErr(ctx, err))
	}
	err = awaitErr(ctx, h, c, sess.Wait)
	if err != nil && ctx.Err() != nil {
		// Kill the command's process group through a session of its own;
		// the signal is for sshd's that take one.
		h.aside(c, func() { h.killGroup(c, pw) })
		kill = ssh.SIGKILL
		return Result{Status: -1, Stdout: stdout.String(), Stderr: stderr.String()}, fmt.Errorf("hostkit: host %s: command: %w", h.Hostname, ctxErr(ctx, err))
	}
	pw.Flush()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *ssh.ExitError
	var em *ssh.ExitMissingError
	switch {
	case err == nil:
		return res, nil
	case errors.As(err, &ee) && ee.Signal() != "":
		res.Status = -1
		return res, fmt.Errorf("hostkit: host %s: command killed by signal %s", h.Hostname, ee.Signal())
	case errors.As(err, &ee):
		res.Status = ee.ExitStatus()
		return res, nil
	case errors.As(err, &em):
		res.Status = -1
		return res, fmt.Errorf("hostkit: host %s: command ended without an exit status (connection lost?): %w", h.Hostname, err)
	}
	res.Status = -1
	return res, fmt.Errorf("hostkit: host %s: command: %w", h.Hostname, err)
}

// killWait bounds the kill of a cancelled command: the wait for its pid
// (a command cancelled as it starts) and the kill's session.
const killWait = 5 * time.Second

// killGroup kills the process group of the command whose pid pw learns,
// in a new session on c.
func (h *Host) killGroup(c *ssh.Client, pw *pidline.Writer) {
	pid := pw.Wait(killWait)
	if pid <= 1 {
		h.log.Debug("hostkit: cancelled command's pid unknown; it may go on", "host", h.Hostname)
		return
	}
	sess, err := c.NewSession()
	if err != nil {
		h.log.Debug("hostkit: kill cancelled command", "host", h.Hostname, "pid", pid, "error", err)
		return
	}
	defer sess.Close()
	if out, err := sess.CombinedOutput(pidline.KillCommand(pid)); err != nil {
		h.log.Debug("hostkit: kill cancelled command", "host", h.Hostname, "pid", pid, "error", err, "output", string(out))
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Shell runs the user's interactive login shell on a pseudo-terminal, wired
// to stdin, stdout and stderr, until it exits or ctx is done. When stdin
// ends, the shell is sent ^D, as a terminal's user ends input. A non-zero
// exit status is returned as an error wrapping *ssh.ExitError.
func (h *Host) Shell(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) error {
	if h.cfg.Addr == "" {
		if h.isClosed() {
			return ErrClosed
		}
		return fmt.Errorf("%w: %s: shell needs SSH", ErrNoSSH, h.Hostname)
	}
	sess, c, release, err := h.session(ctx)
	if err != nil {
		return err
	}
	var hangup ssh.Signal
	defer func() { release(hangup) }()
	modes := ssh.TerminalModes{ssh.ECHO: 1, ssh.TTY_OP_ISPEED: 38400, ssh.TTY_OP_OSPEED: 38400}
	if err := awaitErr(ctx, h, c, func() error { return sess.RequestPty("xterm", 40, 120, modes) }); err != nil {
		return fmt.Errorf("hostkit: host %s: request pty: %w", h.Hostname, ctxErr(ctx, err))
	}
	sess.Stdout, sess.Stderr = stdout, stderr
	if stdin != nil {
		w, err := sess.StdinPipe()
		if err != nil {
			return fmt.Errorf("hostkit: host %s: stdin: %w", h.Hostname, err)
		}
		go func() {
			_, _ = io.Copy(w, stdin)
			// A tty has no EOF of its own: end the input as a terminal's
			// user does, with ^D (at the start of a line). Closing stdin
			// would not end the shell.
			_, _ = w.Write([]byte{0x04})
		}()
	}
	if err := awaitErr(ctx, h, c, sess.Shell); err != nil {
		return fmt.Errorf("hostkit: host %s: start shell: %w", h.Hostname, ctxErr(ctx, err))
	}
	err = awaitErr(ctx, h, c, sess.Wait)
	if err != nil && ctx.Err() != nil {
		hangup = ssh.SIGHUP
		return fmt.Errorf("hostkit: host %s: shell: %w", h.Hostname, ctxErr(ctx, err))
	}
	if err != nil {
		return fmt.Errorf("hostkit: host %s: shell: %w", h.Hostname, err)
	}
	return nil
}
