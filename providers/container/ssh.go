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
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// newClientKey writes a new ed25519 key for host id to
// <dir>/container/<id>/client_key (0600) and returns its path and its
// public key in authorized_keys form.
func (p *Provider) newClientKey(id string) (path, pub string, err error) {
	dir := p.keyDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
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
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", "", fmt.Errorf("container: write client key: %w", err)
	}
	spk, err := ssh.NewPublicKey(pk)
	if err != nil {
		return "", "", fmt.Errorf("container: client public key: %w", err)
	}
	pub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spk))) + " broker-" + id
	if err := os.WriteFile(path+".pub", []byte(pub+"\n"), 0o644); err != nil {
		return "", "", fmt.Errorf("container: write client public key: %w", err)
	}
	return path, pub, nil
}

// waitBanner waits until addr answers with an SSH banner, for at most wait
// (and ctx). A published port accepts connections before sshd listens (the
// engine's proxy), so only the banner proves sshd is up. alive, called
// after each failed attempt, ends the wait early with its error (the
// container exited).
func waitBanner(ctx context.Context, addr string, wait time.Duration, alive func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var last error
	// Poll often (sshd is usually up within a few hundred ms) but ask the
	// engine whether the container still runs only every few attempts.
	for attempt, delay := 0, 10*time.Millisecond; ; attempt, delay = attempt+1, min(delay*3/2, 200*time.Millisecond) {
		if last = banner(ctx, addr); last == nil {
			return nil
		}
		if attempt%4 == 3 {
			if err := alive(ctx); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no SSH banner within %v: %w", wait, errors.Join(ctx.Err(), last))
		case <-time.After(delay):
		}
	}
}

func banner(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(2 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetDeadline(deadline)
	line, err := bufio.NewReader(c).ReadString('\n')
	if strings.HasPrefix(line, "SSH-") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading banner: %w", err)
	}
	return fmt.Errorf("not an SSH banner: %q", line)
}

// installKeyScript appends stdin to the user's authorized_keys and prints
// sshd's host key (ed25519 preferred).
const installKeyScript = `umask 077
h="${HOME:-/root}"
mkdir -p "$h/.ssh" && cat >> "$h/.ssh/authorized_keys" || exit 1
# The image may still be generating its host keys: wait up to ~10 s.
i=0
while [ $i -lt 200 ]; do
	for f in /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ecdsa_key.pub /etc/ssh/ssh_host_rsa_key.pub; do
		if [ -s "$f" ]; then cat "$f"; exit 0; fi
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

// readHostKey reads sshd's host key through the engine (for Sync).
func (p *Provider) readHostKey(ctx context.Context, cid string) (string, error) {
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	var stdout bytes.Buffer
	status, err := p.eng.exec(cctx, cid, execRequest{
		Cmd:    []string{"/bin/sh", "-c", "cat /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null || cat /etc/ssh/ssh_host_ecdsa_key.pub 2>/dev/null || cat /etc/ssh/ssh_host_rsa_key.pub"},
		Stdout: &stdout,
	})
	if err != nil {
		return "", err
	}
	if status != 0 {
		return "", fmt.Errorf("read host key: exit status %d", status)
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(stdout.Bytes())
	if err != nil {
		return "", fmt.Errorf("read host key: %w", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key))), nil
}
