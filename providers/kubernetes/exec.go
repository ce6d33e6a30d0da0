package kubernetes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/hostbroker/broker/hostkit"
)

// execStreams are the streams of one exec.
type execStreams struct {
	stdin          io.Reader // nil: none
	stdout, stderr io.Writer
}

// exec runs cmd in the pod's container through the API server: WebSocket
// where the server offers it, SPDY otherwise. A non-zero exit is an
// exitError, anything else an error of the exec itself.
func (p *Provider) exec(ctx context.Context, ns, pod string, cmd []string, s execStreams) error {
	req := p.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: ContainerName, Command: cmd,
			Stdin: s.stdin != nil, Stdout: s.stdout != nil, Stderr: s.stderr != nil,
		}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(p.rest, http.MethodGet, req.URL().String())
	if err != nil {
		return fmt.Errorf("exec in pod %s: %w", pod, err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(p.rest, http.MethodPost, req.URL())
	if err != nil {
		return fmt.Errorf("exec in pod %s: %w", pod, err)
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return fmt.Errorf("exec in pod %s: %w", pod, err)
	}
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: s.stdin, Stdout: s.stdout, Stderr: s.stderr})
	var ee utilexec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return exitError(ee.ExitStatus())
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("exec in pod %s: %w", pod, ctx.Err())
		}
		return fmt.Errorf("exec in pod %s in namespace %s (%s): %w", pod, ns, p.where, explain(err))
	}
	return nil
}

// exitError is a command's non-zero exit status.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// findSSHDScript prints the path of sshd and its host key, and makes the
// privilege separation directory Debian's sshd wants (its start-up script
// makes it, which a pod running another command never ran);
// "broker-no-sshd" when the image has no sshd.
const findSSHDScript = `s=
for f in /usr/sbin/sshd /usr/local/sbin/sshd /sbin/sshd /usr/bin/sshd; do
	if [ -x "$f" ]; then s=$f; break; fi
done
if [ -z "$s" ]; then echo broker-no-sshd; exit 0; fi
[ -d /run/sshd ] || mkdir -m 0755 /run/sshd 2>/dev/null
k=
for f in /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub /etc/ssh/ssh_host_rsa_key.pub; do
	if [ -s "$f" ] && IFS= read -r k <"$f"; then break; fi
done
if [ -z "$k" ]; then
	ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key </dev/null >/dev/null 2>&1 &&
		IFS= read -r k </etc/ssh/ssh_host_ed25519_key.pub || { echo "no sshd host key in /etc/ssh, and ssh-keygen could not make one" >&2; exit 2; }
fi
echo "$s"
echo "$k"`

// findSSHD finds the pod's sshd and its host key (authorized_keys form);
// errNoSSHD when the image has none.
func (p *Provider) findSSHD(ctx context.Context, ns, pod string) (sshd, hostKey string, err error) {
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err = p.exec(cctx, ns, pod, []string{"/bin/sh", "-c", findSSHDScript}, execStreams{stdout: &stdout, stderr: &stderr})
	if strings.TrimSpace(stdout.String()) == "broker-no-sshd" {
		return "", "", errNoSSHD
	}
	if err != nil {
		return "", "", fmt.Errorf("find sshd: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	path, rest, _ := strings.Cut(stdout.String(), "\n")
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rest))
	if err != nil {
		return "", "", fmt.Errorf("sshd host key: %w (got %q)", err, rest)
	}
	return path, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key))), nil
}

// sshDialer dials the pod's sshd: each connection is an exec of
// `sshd -i` whose stdin and stdout carry it, the client's public key
// given on sshd's command line (nothing is written in the pod).
func (p *Provider) sshDialer(ns, pod, sshd, keyFile string) hostkit.DialFunc {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		pub, err := clientPub(keyFile)
		if err != nil {
			return nil, err
		}
		return p.streamConn(ns, pod, sshdCommand(sshd, pub)), nil
	}
}

// sshdCommand is `sshd -i` accepting the client key pub, given on its
// command line (AuthorizedKeysCommand), so that nothing is written in the
// pod; -e sends its log to stderr, kept for error messages.
func sshdCommand(sshd, pub string) []string {
	return []string{sshd, "-i", "-e",
		"-o", "AuthorizedKeysCommand=/bin/echo " + pub,
		"-o", "AuthorizedKeysCommandUser=root",
		"-o", "AuthorizedKeysFile=none"}
}

// streamConn starts cmd in the pod with its stdin and stdout as the
// returned connection. The exec ends when the connection is closed (or
// the command exits); its error, and the tail of its stderr, are what a
// read returns after that.
func (p *Provider) streamConn(ns, pod string, cmd []string) net.Conn {
	local, remote := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	c := &execConn{Conn: local, cancel: cancel, pod: pod, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		err := p.exec(ctx, ns, pod, cmd, execStreams{stdin: remote, stdout: remote, stderr: &c.stderr})
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		remote.Close()
	}()
	return c
}

// execConn is one end of an exec's stdin and stdout.
type execConn struct {
	net.Conn
	cancel context.CancelFunc
	pod    string
	done   chan struct{}

	mu     sync.Mutex
	err    error
	stderr tail
}

// Read returns the command's stdout; at its end, the exec's error.
func (c *execConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if errors.Is(err, io.EOF) {
		select {
		case <-c.done:
		case <-time.After(2 * time.Second):
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.err != nil && !isExit(c.err) {
			return n, fmt.Errorf("kubernetes: ssh through exec in pod %s: %w%s", c.pod, c.err, c.stderr.note())
		}
	}
	return n, err
}

// Close ends the command's stdin, so that it exits and the exec ends
// cleanly; an exec still running a moment later is cut.
func (c *execConn) Close() error {
	err := c.Conn.Close()
	go func() {
		select {
		case <-c.done:
		case <-time.After(2 * time.Second):
		}
		c.cancel()
	}()
	return err
}

func (c *execConn) RemoteAddr() net.Addr { return podAddr(c.pod) }

type podAddr string

func (a podAddr) Network() string { return TransportStream }
func (a podAddr) String() string  { return "pod " + string(a) }

func isExit(err error) bool {
	var e exitError
	return errors.As(err, &e)
}

// tail keeps the last 2 KiB written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - 2048; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tail) note() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := strings.TrimSpace(string(t.buf)); s != "" {
		return "; its stderr: " + s
	}
	return ""
}

// transport drives a pod without sshd through exec: commands by
// /bin/sh -c, files by cat.
type transport struct {
	p       *Provider
	ns, pod string
}

var _ hostkit.Transport = (*transport)(nil)

// Execute runs cmd by /bin/sh -c with opts' environment and stdin.
func (t *transport) Execute(ctx context.Context, cmd string, opts hostkit.ExecOptions) (hostkit.Result, error) {
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	var script strings.Builder
	for k, v := range opts.Env {
		fmt.Fprintf(&script, "export %s=%s\n", k, hostkit.ShellQuote(v))
	}
	script.WriteString(cmd)
	var stdout, stderr bytes.Buffer
	err := t.p.exec(ctx, t.ns, t.pod, []string{"/bin/sh", "-c", script.String()}, execStreams{stdin: opts.Stdin, stdout: &stdout, stderr: &stderr})
	res := hostkit.Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee exitError
	if errors.As(err, &ee) {
		res.Status = int(ee)
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("kubernetes: %w", err)
	}
	return res, nil
}

// Open streams the file at path (cat); a missing file's error wraps
// fs.ErrNotExist.
func (t *transport) Open(ctx context.Context, path string) (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		var stderr bytes.Buffer
		err := t.p.exec(ctx, t.ns, t.pod, []string{"cat", "--", path}, execStreams{stdout: pw, stderr: &stderr})
		if err != nil {
			msg := strings.TrimSpace(stderr.String())
			if strings.Contains(msg, "No such file") {
				err = fmt.Errorf("kubernetes: read %s in pod %s: %s: %w", path, t.pod, msg, fs.ErrNotExist)
			} else {
				err = fmt.Errorf("kubernetes: read %s in pod %s: %w: %s", path, t.pod, err, msg)
			}
		}
		pw.CloseWithError(err)
	}()
	return &cancelReader{ReadCloser: pr, cancel: cancel}, nil
}

type cancelReader struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (r *cancelReader) Close() error {
	r.cancel()
	return r.ReadCloser.Close()
}

// Create writes r to path with mode perm; a missing directory's error
// wraps fs.ErrNotExist.
func (t *transport) Create(ctx context.Context, path string, perm fs.FileMode, r io.Reader) error {
	var stderr bytes.Buffer
	err := t.p.exec(ctx, t.ns, t.pod, []string{"/bin/sh", "-c", `cat >"$1" && chmod "$2" "$1"`, "sh", path, fmt.Sprintf("%o", perm.Perm())},
		execStreams{stdin: r, stderr: &stderr})
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "nonexistent directory") || strings.Contains(msg, "No such file") {
			return fmt.Errorf("kubernetes: write %s in pod %s: %s: %w", path, t.pod, msg, fs.ErrNotExist)
		}
		return fmt.Errorf("kubernetes: write %s in pod %s: %w: %s", path, t.pod, err, msg)
	}
	return nil
}

// Close releases nothing: every call has its own exec.
func (t *transport) Close() error { return nil }
