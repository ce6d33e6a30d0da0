package container

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moby/moby/client"
)

// sshTarget is an engine reached through the ssh client: the address
// ssh://[user@]host[:port][/socket], and how to run ssh for it.
//
// Without a socket path the remote command is `docker system dial-stdio`,
// as the docker CLI runs it (the remote user's default engine). With one,
// a POSIX sh on the remote host connects its stdio to the socket with the
// first of docker (`docker --host unix://PATH system dial-stdio`), podman
// (`podman --url unix://PATH system dial-stdio`), socat or `nc -U` it
// finds (podman first for the podman runtime).
type sshTarget struct {
	user, host, port string
	path             string // remote socket path; "" for `docker system dial-stdio`
	podman           bool   // runtime podman: try podman first
	config           string // ssh -F file; "" reads the user's ~/.ssh/config
	identity         string // ssh -i file (CONTAINER_SSHKEY); ""
	failures         *dialFailures
}

// podmanRootSocket is the socket of an ssh:// engine of the podman runtime
// given without a path: rootful Podman's, as the Python broker's.
const podmanRootSocket = "/run/podman/podman.sock"

// safeSocketPath is what a socket path may hold: it is written into the
// remote shell's command line unquoted.
var safeSocketPath = regexp.MustCompile(`^/[A-Za-z0-9._/@+-]+$`)

// newSSHTarget reads an ssh:// engine address.
func newSSHTarget(u *url.URL, o engineOptions) (sshTarget, error) {
	t := sshTarget{host: u.Hostname(), port: u.Port(), path: u.Path, podman: o.runtime == "podman", config: o.sshConfig, identity: o.sshKey, failures: &dialFailures{}}
	if u.User != nil {
		t.user = u.User.Username()
		if _, ok := u.User.Password(); ok {
			return t, errors.New("a password in an ssh:// address is not supported (use a key or ssh-agent)")
		}
	}
	if t.host == "" {
		return t, errors.New("no host")
	}
	if strings.HasPrefix(t.host, "-") || strings.HasPrefix(t.user, "-") {
		return t, errors.New("a host or user may not begin with '-'")
	}
	if t.path == "/" {
		t.path = ""
	}
	if t.path == "" && t.podman {
		t.path = podmanRootSocket
	}
	if t.path != "" && !safeSocketPath.MatchString(t.path) {
		return t, fmt.Errorf("socket path %q: only letters, digits and ._/@+- are passed to the remote shell", t.path)
	}
	return t, nil
}

// String names the target as ssh would be told: user@host, port, socket.
func (t sshTarget) String() string {
	s := t.host
	if t.user != "" {
		s = t.user + "@" + s
	}
	if t.port != "" {
		s += " -p " + t.port
	}
	if t.path != "" {
		s += " (socket " + t.path + ")"
	}
	return "ssh " + s
}

// remoteCommand is what ssh runs on the engine host.
func (t sshTarget) remoteCommand() []string {
	if t.path == "" {
		return []string{"docker", "system", "dial-stdio"}
	}
	type tool struct{ name, cmd string }
	docker := tool{"docker", "docker --host unix://" + t.path + " system dial-stdio"}
	podman := tool{"podman", "podman --url unix://" + t.path + " system dial-stdio"}
	tools := []tool{docker, podman}
	if t.podman {
		tools = []tool{podman, docker}
	}
	// socat's -t: how long it waits for the other direction after one
	// side's EOF (half-closed exec streams go on for as long as the command).
	tools = append(tools, tool{"socat", "socat -t 86400 - UNIX-CONNECT:" + t.path}, tool{"nc", "nc -U " + t.path})
	var b strings.Builder
	var names []string
	for i, tl := range tools {
		if i == 0 {
			b.WriteString("if")
		} else {
			b.WriteString(" elif")
		}
		fmt.Fprintf(&b, " command -v %s >/dev/null 2>&1; then exec %s;", tl.name, tl.cmd)
		names = append(names, tl.name)
	}
	fmt.Fprintf(&b, ` else echo "none of %s found on the engine host to reach %s" >&2; exit 127; fi`, strings.Join(names, ", "), t.path)
	// One argument, single-quoted: ssh joins its arguments into the line
	// the remote user's shell runs, whatever that shell is.
	return []string{"sh", "-c", "'" + b.String() + "'"}
}

// maxConnectTimeout bounds ssh's ConnectTimeout, as the docker CLI's.
const maxConnectTimeout = 30 * time.Second

// args are ssh's arguments for one connection made within timeout.
func (t sshTarget) args(timeout time.Duration) []string {
	secs := int(math.Ceil(min(timeout, maxConnectTimeout).Seconds()))
	args := []string{
		"-T", "-x", "-a", // no pty, no X11 or agent forwarding
		"-o", "BatchMode=yes",
		"-o", fmt.Sprintf("ConnectTimeout=%d", max(secs, 1)),
		"-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3",
	}
	if t.config != "" {
		args = append(args, "-F", t.config)
	}
	if t.identity != "" {
		args = append(args, "-i", t.identity)
	}
	if t.port != "" {
		args = append(args, "-p", t.port)
	}
	if t.user != "" {
		args = append(args, "-l", t.user)
	}
	args = append(args, "--", t.host)
	return append(args, t.remoteCommand()...)
}

// dial starts ssh for one connection to the engine: the command's stdin
// and stdout are the connection. ctx bounds ssh's connection set-up (its
// ConnectTimeout); the connection itself outlives ctx, as a net.Dialer's.
func (t sshTarget) dial(ctx context.Context) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	timeout := maxConnectTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	// Not CommandContext: the connection outlives the dial's context.
	cmd := exec.Command("ssh", t.args(timeout)...)
	cmd.Stdin, cmd.Stdout = inR, outW
	stderr := &tailBuffer{max: stderrTail}
	cmd.Stderr = stderr
	// ssh may leave a process holding stderr (ControlPersist): bound the
	// wait for it once ssh has exited.
	cmd.WaitDelay = time.Second
	// Its own session: a terminal's ^C (which the broker handles by
	// checking hosts in through this engine) does not reach ssh, and ssh
	// never prompts on the terminal. Close kills the session's group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	c := &cmdConn{cmd: cmd, w: inW, r: outR, stderr: stderr, desc: t.String(), host: t.host, done: make(chan struct{}), failures: t.failures}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// stderrTail is how much of ssh's stderr (its last bytes) an error quotes.
const stderrTail = 4 << 10

// exitWait bounds the wait for ssh to exit once its output ended, to tell
// a failure (its status and stderr) from the end of a connection.
const exitWait = 2 * time.Second

// cmdConn is a net.Conn over a command's stdin and stdout. When the
// command fails (exits non-zero), reads and writes fail with its exit
// status and the tail of its stderr.
type cmdConn struct {
	cmd    *exec.Cmd
	w      *os.File // the command's stdin
	r      *os.File // the command's stdout
	stderr *tailBuffer
	desc   string // the command, for errors
	host   string

	done     chan struct{} // closed once the command has exited
	waitErr  error         // cmd.Wait's, set before done is closed
	closed   atomic.Bool
	once     sync.Once
	failures *dialFailures // where a failure is recorded; may be nil
}

func (c *cmdConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil {
		err = c.failure(err)
	}
	return n, err
}

func (c *cmdConn) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil {
		err = c.failure(err)
	}
	return n, err
}

// failure turns err, which ended a read or a write, into the command's
// failure when it failed: its exit status and stderr. The end of a
// command that succeeded, a deadline and our own Close keep err.
func (c *cmdConn) failure(err error) error {
	if c.closed.Load() || errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	t := time.NewTimer(exitWait)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		return err
	}
	var exit *exec.ExitError
	if !errors.As(c.waitErr, &exit) {
		return err
	}
	cerr := &commandError{desc: c.desc, exit: exit, stderr: c.stderr.String()}
	c.failures.record(cerr)
	return cerr
}

// dialFailures keeps the last failure of an engine's connections. The
// moby client reports some failures, those whose text holds "connection
// refused" or "dial unix" (as a remote command's stderr may), only as
// "Cannot connect to the Docker daemon at …": explain adds it back.
type dialFailures struct {
	mu   sync.Mutex
	last error
	at   time.Time
}

// failureMemory is how long a connection's failure explains a later
// "cannot connect".
const failureMemory = time.Minute

func (d *dialFailures) record(err error) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.last, d.at = err, time.Now()
}

// explain adds the last recent connection failure to err when the moby
// client reported err as a failure to connect without its cause.
func (d *dialFailures) explain(err error) error {
	if d == nil || err == nil || !client.IsErrConnectionFailed(err) {
		return err
	}
	d.mu.Lock()
	last, at := d.last, d.at
	d.mu.Unlock()
	if last == nil || time.Since(at) > failureMemory || strings.Contains(err.Error(), last.Error()) {
		return err
	}
	return fmt.Errorf("%w: %w", err, last)
}

// commandError is a command that ended with a failure: its status and the
// last lines it wrote on stderr.
type commandError struct {
	desc   string
	exit   *exec.ExitError
	stderr string
}

func (e *commandError) Error() string {
	lines := strings.FieldsFunc(e.stderr, func(r rune) bool { return r == '\n' || r == '\r' })
	var kept []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			kept = append(kept, l)
		}
	}
	if len(kept) == 0 {
		return fmt.Sprintf("%s: %v (nothing on stderr)", e.desc, e.exit)
	}
	return fmt.Sprintf("%s: %v: %s", e.desc, e.exit, strings.Join(kept, "; "))
}

func (e *commandError) Unwrap() error { return e.exit }

// CloseWrite closes the command's stdin (half-close, for exec stdin EOF).
func (c *cmdConn) CloseWrite() error { return c.w.Close() }

// Close ends the command (its whole process group: ssh's ProxyCommand
// too) and waits for it.
func (c *cmdConn) Close() error {
	c.once.Do(func() {
		c.closed.Store(true)
		c.w.Close()
		c.r.Close()
		select {
		case <-c.done:
		default:
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			_ = c.cmd.Process.Kill()
		}
		<-c.done
	})
	return nil
}

func (c *cmdConn) LocalAddr() net.Addr  { return cmdAddr("local") }
func (c *cmdConn) RemoteAddr() net.Addr { return cmdAddr(c.host) }

// SetDeadline sets both pipes' deadlines.
func (c *cmdConn) SetDeadline(t time.Time) error {
	return errors.Join(c.r.SetReadDeadline(t), c.w.SetWriteDeadline(t))
}
func (c *cmdConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c *cmdConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

type cmdAddr string

func (a cmdAddr) Network() string { return "ssh" }
func (a cmdAddr) String() string  { return string(a) }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	if len(p) >= b.max {
		p = p[len(p)-b.max:]
		b.buf = b.buf[:0]
	}
	if over := len(b.buf) + len(p) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
