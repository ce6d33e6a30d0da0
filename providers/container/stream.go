package container

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
)

// How a host is reached: recorded as the SSH block's transport (the SSH
// ones) and as the provider data's "transport" (all three), and shown by
// the host's String.
const (
	// TransportStream is SSH through the engine's own exec stream: each
	// connection is an exec of the image's `sshd -i` (inetd mode) whose
	// attached stdin and stdout carry the SSH connection. Nothing is
	// published, and no sshd daemon has to run.
	TransportStream = "engine-stream"
	// TransportTCP is SSH to the container's sshd daemon through port 22
	// published on 127.0.0.1: for images whose sshd cannot run in inetd
	// mode.
	TransportTCP = "tcp"
	// TransportExec is no SSH: commands through the engine's exec, files
	// through its archive API (images without sshd, or ssh: false).
	TransportExec = "engine-exec"
)

// Stream framing of an exec attached without a TTY: each frame is an
// 8-byte header (the stream, three zero bytes, the payload's length, big
// endian) and the payload.
const (
	frameStdin  = 0
	frameStdout = 1
	frameStderr = 2
	frameSyserr = 3 // the engine's own error message
)

// stderrKeep bounds the tail of an exec's stderr kept for error messages.
const stderrKeep = 2 << 10

// streamConn is a net.Conn over an exec attached with stdin, stdout and
// stderr: writes go to the process's stdin as they are; reads give its
// stdout, demultiplexed from the engine's framing; stderr is kept (its last
// stderrKeep bytes) for error messages. Close half-closes stdin, so the
// process reads its end, and closes the connection: `sshd -i` then exits.
// Deadlines are the hijacked connection's (a socket's, for unix:// and
// tcp:// engines); a connection that has none is bounded by Close, which
// hostkit calls when a dial's context ends.
type streamConn struct {
	conn net.Conn  // the hijacked connection: writes, deadlines, close
	r    io.Reader // its reader, buffered by the engine client
	cid  string

	// Demultiplexing state, used by Read alone (one reader at a time, as
	// for any net.Conn).
	hdr     [8]byte
	hdrN    int // header bytes read
	left    int // payload bytes left in the current frame
	kind    byte
	scratch []byte

	stderr tailBuffer // the last stderrKeep bytes of stderr and engine errors

	// ended is why the stream was ended from our side (its container
	// stopped, or its exec ended: see watch); Read and Write return it
	// from then on.
	ended     atomic.Pointer[error]
	execID    string             // the exec's, for watch
	writing   atomic.Int64       // when the write under way began (UnixNano), 0: none
	stopWatch context.CancelFunc // ends watch; nil when not watched
	closeOnce sync.Once
}

var _ net.Conn = (*streamConn)(nil)

func newStreamConn(conn net.Conn, r io.Reader, cid string) *streamConn {
	return &streamConn{conn: conn, r: r, cid: cid, stderr: tailBuffer{max: stderrKeep}}
}

// Read returns the process's stdout.
func (c *streamConn) Read(p []byte) (int, error) {
	n, err := c.read(p)
	if err != nil {
		err = c.why(err)
	}
	return n, err
}

// why is err, or why the stream was ended from our side.
func (c *streamConn) why(err error) error {
	if e := c.ended.Load(); e != nil {
		return *e
	}
	return err
}

// end ends the stream for the reason err: the calls blocked on it return
// err (a transfer's writes too), and so do later ones.
func (c *streamConn) end(err error) {
	c.ended.CompareAndSwap(nil, &err)
	c.Close()
}

func (c *streamConn) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.left == 0 {
			if err := c.header(); err != nil {
				return 0, err
			}
			continue
		}
		if c.kind == frameStdout {
			n, err := c.r.Read(p[:min(len(p), c.left)])
			c.left -= n
			if n > 0 {
				return n, nil // an error comes again with the next read
			}
			return 0, c.midFrame(err)
		}
		// stderr (or the engine's error): kept, not returned.
		if c.scratch == nil {
			c.scratch = make([]byte, 512)
		}
		n, err := c.r.Read(c.scratch[:min(len(c.scratch), c.left)])
		c.left -= n
		c.stderr.Write(c.scratch[:n])
		if err != nil && n == 0 {
			return 0, c.midFrame(err)
		}
	}
}

// header reads the next frame's header (resuming one a deadline cut).
func (c *streamConn) header() error {
	for c.hdrN < len(c.hdr) {
		n, err := c.r.Read(c.hdr[c.hdrN:])
		c.hdrN += n
		if c.hdrN == len(c.hdr) {
			break
		}
		if err != nil {
			if errors.Is(err, io.EOF) && c.hdrN > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	c.hdrN = 0
	c.kind = c.hdr[0]
	if c.kind > frameSyserr || c.hdr[1] != 0 || c.hdr[2] != 0 || c.hdr[3] != 0 {
		return fmt.Errorf("exec stream of container %s: not the engine's stream framing (header % x)", shortID(c.cid), c.hdr)
	}
	c.left = int(binary.BigEndian.Uint32(c.hdr[4:]))
	return nil
}

// midFrame is the error of a read that ended inside a frame.
func (c *streamConn) midFrame(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Stderr is the tail of what the process wrote on stderr so far.
func (c *streamConn) Stderr() string {
	return strings.TrimSpace(c.stderr.String())
}

// Write writes p to the process's stdin.
func (c *streamConn) Write(p []byte) (int, error) {
	c.writing.Store(time.Now().UnixNano())
	n, err := c.conn.Write(p)
	c.writing.Store(0)
	if err != nil {
		err = c.why(err)
	}
	return n, err
}

// CloseWrite ends the process's stdin.
func (c *streamConn) CloseWrite() error {
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close ends stdin and closes the connection; the engine then closes the
// process's stdin and stdout. It is idempotent.
func (c *streamConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.stopWatch != nil {
			c.stopWatch()
		}
		_ = c.CloseWrite()
		err = c.conn.Close()
	})
	return err
}

func (c *streamConn) LocalAddr() net.Addr { return streamAddr("broker") }
func (c *streamConn) RemoteAddr() net.Addr {
	return streamAddr("container " + shortID(c.cid))
}
func (c *streamConn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// streamAddr is an end of an exec stream.
type streamAddr string

func (a streamAddr) Network() string { return TransportStream }
func (a streamAddr) String() string  { return string(a) }

// streamExec starts cmd in container cid as root with stdin, stdout and
// stderr attached, and returns the stream as a connection. ctx bounds the
// start only.
func (p *Provider) streamExec(ctx context.Context, cid string, cmd []string) (*streamConn, error) {
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	created, err := p.eng.cli.ExecCreate(cctx, cid, client.ExecCreateOptions{
		User: "0", Cmd: cmd,
		AttachStdin: true, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return nil, fmt.Errorf("exec create in container %s: %w", shortID(cid), err)
	}
	att, err := p.eng.cli.ExecAttach(cctx, created.ID, client.ExecAttachOptions{})
	if err != nil {
		return nil, fmt.Errorf("exec attach in container %s: %w", shortID(cid), err)
	}
	p.streams.Add(1)
	sc := newStreamConn(att.Conn, att.Reader, cid)
	sc.execID = created.ID
	p.watch(sc)
	return sc, nil
}

// stallCheck is how long a write to an exec stream may stay blocked before
// the engine is asked whether the exec still runs, and how often it is
// asked again while the write stays blocked.
const stallCheck = time.Second

// watch ends sc once its container stops running, or once its exec has
// ended while a write to it stays blocked; it stops when sc closes.
//
// Why: the engine may keep an exec's attach stream open long after the
// exec or its container ended, while our writes to the dead process's
// stdin fill the buffers on the way: a transfer over it hung for minutes
// (Docker), while a command, which waits to read, failed at once. The
// container's own wait ends when the container does; an exec has no wait,
// so it is inspected while a write stalls (a paused container's exec
// still runs: that is left to hostkit's deadlines and keepalives).
func (p *Provider) watch(sc *streamConn) {
	ctx, cancel := context.WithCancel(context.Background())
	sc.stopWatch = cancel
	go func() {
		defer cancel()
		wait := p.eng.cli.ContainerWait(ctx, sc.cid, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
		tick := time.NewTicker(stallCheck)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case res := <-wait.Result:
				sc.end(fmt.Errorf("container %s stopped (exit code %d): %w", shortID(sc.cid), res.StatusCode, hostkit.ErrHostGone))
				return
			case err := <-wait.Error:
				if ctx.Err() != nil {
					return
				}
				// The engine's connection, not the container: the exec
				// is still looked at when writes stall.
				p.log.Debug("container: cannot wait on the container of an exec stream", "container", shortID(sc.cid), "error", err)
				wait = client.ContainerWaitResult{}
			case <-tick.C:
				since := sc.writing.Load()
				if since == 0 || time.Since(time.Unix(0, since)) < stallCheck {
					continue
				}
				if why := p.execEnded(ctx, sc); why != nil {
					sc.end(why)
					return
				}
			}
		}
	}()
}

// execEnded says how sc's exec ended, or nil while it runs (or the engine
// does not say).
func (p *Provider) execEnded(ctx context.Context, sc *streamConn) error {
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	ins, err := p.eng.cli.ExecInspect(cctx, sc.execID, client.ExecInspectOptions{})
	switch {
	case err == nil && !ins.Running:
		return fmt.Errorf("sshd -i in container %s ended (exit code %d)%s", shortID(sc.cid), ins.ExitCode, stderrNote(sc))
	case err != nil && isNotFound(err) && ctx.Err() == nil:
		return fmt.Errorf("sshd -i in container %s ended (its exec is gone)%s", shortID(sc.cid), stderrNote(sc))
	}
	return nil
}

// sshdArgs are `sshd -i`'s arguments: inetd mode, logging to stderr (kept
// for error messages) instead of a syslog the container has not.
var sshdArgs = []string{"-i", "-e"}

// streamScript, run as root with the user and the client's public key as
// $1 and $2, finds the image's sshd, installs the key in the user's
// authorized_keys, finds (or, when the image has none after a short wait,
// makes) sshd's host key, and prints on stdout
//
//	broker-hostname <the container's hostname>
//	broker-sshd <path of sshd>
//	broker-host-key <host key, authorized_keys form>
//
// before becoming `sshd -i`, whose banner follows on the same stdout. An
// image without sshd prints "broker-no-sshd" and exits; any failure
// prints "broker-error <what>" and exits. Shell builtins where it can: a
// fresh container's first processes are slow to start.
const streamScript = `u=$1 pub=$2
# sshd: on PATH first (no subshell: a fork costs), then where it usually is.
s=
IFS=:
for d in $PATH; do
	case "$d" in /*) if [ -x "$d/sshd" ]; then s=$d/sshd; break; fi ;; esac
done
unset IFS
if [ -z "$s" ]; then
	for f in /usr/sbin/sshd /usr/local/sbin/sshd /sbin/sshd /usr/bin/sshd; do
		if [ -x "$f" ]; then s=$f; break; fi
	done
fi
if [ -z "$s" ]; then echo broker-no-sshd; exit 0; fi
h= ids=
while IFS=: read -r n _ uid gid _ d _; do
	if [ "$n" = "$u" ]; then h=$d ids=$uid:$gid; break; fi
done </etc/passwd
if [ -z "$h" ]; then
	if [ "$u" = root ]; then h=/root; else echo "broker-error no user $u in /etc/passwd"; exit 0; fi
fi
umask 077
a="$h/.ssh/authorized_keys"
[ -d "$h/.ssh" ] || mkdir -p "$h/.ssh" || { echo "broker-error cannot make $h/.ssh"; exit 0; }
{
	# A last line without its newline would swallow our key.
	[ -s "$a" ] && echo
	printf '%s\n' "$pub"
} >>"$a" || { echo "broker-error cannot write $a"; exit 0; }
if [ "$u" != root ] && [ -n "$ids" ]; then chown "$ids" "$h/.ssh" "$a" || { echo "broker-error cannot give $a to $u"; exit 0; }; fi
# The host key: the image may still be making its own at start; after ~1 s
# without one, an ed25519 key is made.
k=
hostkey() {
	for f in /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub /etc/ssh/ssh_host_rsa_key.pub; do
		if [ -s "$f" ] && IFS= read -r k <"$f"; then return 0; fi
	done
	return 1
}
i=0
until hostkey; do
	if [ $i -ge 20 ]; then
		mkdir -p /etc/ssh && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key </dev/null >/dev/null 2>&1 && hostkey ||
			{ echo "broker-error no sshd host key in /etc/ssh, and ssh-keygen could not make one"; exit 0; }
		break
	fi
	sleep 0.05 2>/dev/null || sleep 1
	i=$((i+1))
done
# Debian's sshd wants its privilege separation directory, which its
# start-up script makes.
[ -d /run ] && [ ! -d /run/sshd ] && mkdir -m 0755 /run/sshd 2>/dev/null
hn=
IFS= read -r hn </proc/sys/kernel/hostname 2>/dev/null
printf 'broker-hostname %s\nbroker-sshd %s\nbroker-host-key %s\n' "$hn" "$s" "$k"
exec "$s" -i -e`

// errNoSSHD is the setup's finding that the image has no sshd.
var errNoSSHD = errors.New("the image has no sshd")

// inetdError is sshd found but unusable in inetd mode: the published
// port is the way left.
type inetdError struct{ msg string }

func (e *inetdError) Error() string { return e.msg }

// streamReady is what the checkout's stream exec found.
type streamReady struct {
	conn     net.Conn // the SSH connection, its banner still to be read
	sshd     string   // the path of sshd in the container
	hostKey  string   // authorized_keys form
	hostname string   // the container's, as it knows it
}

// streamSetup runs streamScript in container cid: one exec installs pub
// for user, reads the host key, and becomes the host's first SSH
// connection (checked up to sshd's banner). Its errors: errNoSSHD, an
// *inetdError (sshd did not start in inetd mode), or the engine's.
func (p *Provider) streamSetup(ctx context.Context, cid, user, pub string) (*streamReady, error) {
	sc, err := p.streamExec(ctx, cid, []string{"/bin/sh", "-c", streamScript, "sh", user, pub})
	if err != nil {
		return nil, err
	}
	// The wait for the banner is bounded by ctx and ssh_wait.
	wctx, cancel := context.WithTimeout(ctx, p.settings.sshWait)
	defer cancel()
	stop := context.AfterFunc(wctx, func() { sc.Close() })
	ready, err := readSetup(sc)
	if !stop() {
		sc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("sshd -i in container %s: %w", shortID(cid), ctx.Err())
		}
		return nil, fmt.Errorf("sshd -i in container %s: no SSH banner within %v (ssh_wait): %w%s", shortID(cid), p.settings.sshWait, context.DeadlineExceeded, stderrNote(sc))
	}
	if err != nil {
		sc.Close()
		return nil, err
	}
	return ready, nil
}

// readSetup reads streamScript's lines and sshd's banner from sc.
func readSetup(sc *streamConn) (*streamReady, error) {
	br := bufio.NewReaderSize(sc, 4096)
	ready := &streamReady{}
	for {
		line, err := br.ReadString('\n')
		switch {
		case strings.HasPrefix(line, "SSH-"):
			if ready.sshd == "" || ready.hostKey == "" {
				return nil, fmt.Errorf("sshd setup in container %s: banner before the host key", shortID(sc.cid))
			}
			ready.conn = &replayConn{Conn: sc, r: io.MultiReader(strings.NewReader(line), br)}
			return ready, nil
		case line == "broker-no-sshd\n":
			return nil, errNoSSHD
		case strings.HasPrefix(line, "broker-error "):
			return nil, fmt.Errorf("sshd setup in container %s: %s", shortID(sc.cid), strings.TrimSpace(strings.TrimPrefix(line, "broker-error ")))
		case strings.HasPrefix(line, "broker-hostname "):
			ready.hostname = strings.TrimSpace(strings.TrimPrefix(line, "broker-hostname "))
		case strings.HasPrefix(line, "broker-sshd "):
			ready.sshd = strings.TrimSpace(strings.TrimPrefix(line, "broker-sshd "))
		case strings.HasPrefix(line, "broker-host-key "):
			k := strings.TrimPrefix(line, "broker-host-key ")
			key, _, _, _, perr := ssh.ParseAuthorizedKey([]byte(k))
			if perr != nil {
				return nil, fmt.Errorf("sshd host key in container %s: %w (got %q)", shortID(sc.cid), perr, strings.TrimSpace(k))
			}
			ready.hostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
		case err == nil && ready.hostKey != "":
			// sshd printed something else first: not an SSH server's stdout.
			return nil, &inetdError{msg: fmt.Sprintf("%s -i printed %q, not an SSH banner%s", ready.sshd, strings.TrimSpace(line), stderrNote(sc))}
		}
		if err != nil {
			if ready.hostKey != "" {
				// sshd exited (or was never run) without a banner.
				return nil, &inetdError{msg: fmt.Sprintf("%s -i ended before its SSH banner (%v)%s", ready.sshd, err, stderrNote(sc))}
			}
			return nil, fmt.Errorf("sshd setup in container %s: %w%s", shortID(sc.cid), err, stderrNote(sc))
		}
	}
}

// stderrNote is ": stderr: <tail>" when the exec wrote on stderr.
func stderrNote(sc *streamConn) string {
	if s := sc.Stderr(); s != "" {
		return "; its stderr: " + s
	}
	return ""
}

// streamDialer dials host rec through the engine: each dial is a new exec
// of the container's `sshd -i` (the connection Checkout kept first).
func (p *Provider) streamDialer(rec *inventory.Record) hostkit.DialFunc {
	sshd := "/usr/sbin/sshd"
	if rec.Broker != nil {
		if s, ok := rec.Broker.Data["sshd"].(string); ok && strings.HasPrefix(s, "/") {
			sshd = s
		}
	}
	id := rec.ID()
	// The container id is found on first use and kept, as the engine
	// transport finds it.
	found := p.transport(rec)
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		if c := p.handovers.take(id, ""); c != nil {
			return c, nil
		}
		cid, err := found.containerID(ctx)
		if err != nil {
			return nil, err
		}
		sc, err := p.streamExec(ctx, cid, append([]string{sshd}, sshdArgs...))
		if err != nil {
			return nil, fmt.Errorf("container: ssh through the engine to %s: %w", rec.Name, p.gone(ctx, cid, readable(err, p.eng.uri)))
		}
		return sc, nil
	}
}

// gone adds to err, from an engine call on container cid, that the
// container is not running, when it is not: hostkit.ErrHostGone, which
// hostkit does not dial again.
func (p *Provider) gone(ctx context.Context, cid string, err error) error {
	if ctx.Err() != nil {
		return err
	}
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	ins, ierr := p.eng.cli.ContainerInspect(cctx, cid, client.ContainerInspectOptions{})
	if ierr != nil {
		if isNotFound(ierr) {
			return fmt.Errorf("%w: container %s is gone: %w", err, shortID(cid), hostkit.ErrHostGone)
		}
		return err
	}
	if why := notRunning(ins.Container); why != nil {
		return fmt.Errorf("%w: %v: %w", err, why, hostkit.ErrHostGone)
	}
	return err
}

// proxyCommand is an OpenSSH ProxyCommand that reaches the container's
// sshd as the stream transport does, for people (`ssh -o ProxyCommand=…`).
func (p *Provider) proxyCommand(cid, sshd string) string {
	cli := "docker"
	if p.settings.runtime == "podman" {
		cli = "podman --url " + shellQuote(p.eng.uri)
	} else {
		cli += " -H " + shellQuote(p.eng.uri)
	}
	return cli + " exec -i -u 0 " + cid + " " + sshd + " -i"
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/:._-@+=,") == "" {
		return s
	}
	return hostkit.ShellQuote(s)
}
