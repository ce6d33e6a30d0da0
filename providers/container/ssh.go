package container

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/internal/safefile"
)

// newClientKey writes a new ed25519 key for host id to
// <dir>/container/<id>/client_key (0600) and returns its path and its
// public key in authorized_keys form.
func (p *Provider) newClientKey(id string) (path, pub string, err error) {
	// Nothing in the broker directory is followed through a link.
	dir, err := safefile.MkdirAll(p.settings.dir, filepath.Join("container", id), 0o700)
	if err != nil {
		return "", "", fmt.Errorf("container: key dir: %w", err)
	}
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("container: generate client key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(sk, "broker "+id)
	if err != nil {
		return "", "", fmt.Errorf("container: encode client key: %w", err)
	}
	path = filepath.Join(dir, "client_key")
	if err := safefile.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", "", fmt.Errorf("container: write client key: %w", err)
	}
	spk, err := ssh.NewPublicKey(pk)
	if err != nil {
		return "", "", fmt.Errorf("container: client public key: %w", err)
	}
	pub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spk))) + " broker-" + id
	if err := safefile.WriteFile(path+".pub", []byte(pub+"\n"), 0o644); err != nil {
		return "", "", fmt.Errorf("container: write client public key: %w", err)
	}
	return path, pub, nil
}

// waitBanner waits until addr answers with an SSH banner, for at most wait
// (and ctx), and returns the connection that did, its banner still to be
// read. A published port accepts connections before sshd listens (the
// engine's proxy), so only the banner proves sshd is up. alive, called
// now and then while the wait lasts, ends it early with its error (the
// container exited).
func waitBanner(parent context.Context, addr string, wait time.Duration, alive func(context.Context) error) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(parent, wait)
	defer cancel()
	var last error
	// An attempt costs a loopback connect that the engine's proxy answers
	// at once, so poll every few ms while sshd is likely starting (it is
	// up ~50 ms after the container starts), then back off. The engine is
	// asked whether the container still runs only every aliveEvery.
	const fastPolls, aliveEvery = 20, 250 * time.Millisecond
	nextAlive := time.Now().Add(aliveEvery)
	for attempt, delay := 0, 5*time.Millisecond; ; attempt++ {
		var conn net.Conn
		if conn, last = banner(ctx, addr); last == nil {
			return conn, nil
		}
		if time.Now().After(nextAlive) {
			// An error because the wait ended during the check (a slow
			// engine) is the end of the wait, reported as such below.
			if err := alive(ctx); err != nil && ctx.Err() == nil {
				return nil, err
			}
			nextAlive = time.Now().Add(aliveEvery)
		}
		if attempt >= fastPolls {
			delay = min(delay*3/2, 200*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				// The caller's deadline, not ssh_wait, ended the wait.
				return nil, fmt.Errorf("no SSH banner yet: %w", errors.Join(parent.Err(), last))
			}
			return nil, fmt.Errorf("no SSH banner within %v (ssh_wait): %w", wait, errors.Join(ctx.Err(), last))
		case <-time.After(delay):
		}
	}
}

// banner dials addr and reads the first line; when it is an SSH banner the
// connection is returned, replaying what was read.
func banner(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(2 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetDeadline(deadline)
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if strings.HasPrefix(line, "SSH-") {
		_ = c.SetDeadline(time.Time{})
		return &replayConn{Conn: c, r: io.MultiReader(strings.NewReader(line), br)}, nil
	}
	c.Close()
	if err != nil {
		return nil, fmt.Errorf("reading banner: %w", err)
	}
	return nil, fmt.Errorf("not an SSH banner: %q", line)
}

// installKeyScript appends stdin to the user's authorized_keys and prints
// sshd's host key (ed25519 preferred). Shell builtins only where it can: a
// fresh container's first processes are slow to start.
const installKeyScript = `umask 077
h="${HOME:-/root}"
a="$h/.ssh/authorized_keys"
[ -d "$h/.ssh" ] || mkdir -p "$h/.ssh" || exit 1
{
	# A last line without its newline would swallow our key.
	[ -s "$a" ] && echo
	while IFS= read -r line; do printf '%s\n' "$line"; done
} >>"$a" || exit 1
# The image may still be generating its host keys: wait up to ~10 s.
i=0
while [ $i -lt 200 ]; do
	for f in /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub /etc/ssh/ssh_host_rsa_key.pub; do
		if [ -s "$f" ] && IFS= read -r k <"$f"; then printf '%s\n' "$k"; exit 0; fi
	done
	sleep 0.05 2>/dev/null || sleep 1
	i=$((i+1))
done
echo "no sshd host key in /etc/ssh" >&2
exit 2`

// installKey installs pub for user through the engine and returns the host
// key of the container's sshd, in authorized_keys form.
func (p *Provider) installKey(ctx context.Context, cid, user, pub string) (string, error) {
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	var stdout, stderr bytes.Buffer
	status, err := p.eng.exec(cctx, cid, execRequest{
		Cmd: []string{"/bin/sh", "-c", installKeyScript}, User: user,
		Stdin: strings.NewReader(pub + "\n"), Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil {
		return "", fmt.Errorf("install client key for %s: %w", user, err)
	}
	if status != 0 {
		return "", fmt.Errorf("install client key for %s: exit status %d: %s", user, status, strings.TrimSpace(stderr.String()))
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(stdout.Bytes())
	if err != nil {
		return "", fmt.Errorf("read sshd host key: %w (got %q)", err, stdout.String())
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key))), nil
}

// readSSHDScript prints the path of sshd and its host key (the first
// that exists of ed25519, ecdsa, rsa); "broker-no-sshd" when there is no
// sshd.
const readSSHDScript = `s=$(command -v sshd 2>/dev/null) || s=
case "$s" in /*) ;; *) s= ;; esac
if [ -z "$s" ]; then
	for f in /usr/sbin/sshd /usr/local/sbin/sshd /sbin/sshd /usr/bin/sshd; do
		if [ -x "$f" ]; then s=$f; break; fi
	done
fi
if [ -z "$s" ]; then echo broker-no-sshd; exit 0; fi
echo "$s"
for f in /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub /etc/ssh/ssh_host_rsa_key.pub; do
	if [ -s "$f" ] && IFS= read -r k <"$f"; then printf '%s\n' "$k"; exit 0; fi
done
echo "no sshd host key in /etc/ssh" >&2
exit 2`

// readSSHD reads sshd's host key and path through the engine (for Sync);
// errNoSSHD when the container has no sshd.
func (p *Provider) readSSHD(ctx context.Context, cid string) (hostKey, sshd string, err error) {
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	var stdout, stderr bytes.Buffer
	status, err := p.eng.exec(cctx, cid, execRequest{
		Cmd: []string{"/bin/sh", "-c", readSSHDScript}, User: "0", Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil {
		return "", "", err
	}
	if strings.TrimSpace(stdout.String()) == "broker-no-sshd" {
		return "", "", errNoSSHD
	}
	if status != 0 {
		return "", "", fmt.Errorf("read host key: exit status %d: %s", status, strings.TrimSpace(stderr.String()))
	}
	sshd, rest, _ := strings.Cut(stdout.String(), "\n")
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rest))
	if err != nil {
		return "", "", fmt.Errorf("read host key: %w", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key))), sshd, nil
}
