package hostkit_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/leakcheck"
	"github.com/hostbroker/broker/internal/sshtest"
	"github.com/hostbroker/broker/internal/testenv"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// countingDialer counts the TCP connections a host opens.
type countingDialer struct{ n atomic.Int64 }

func (d *countingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func newHost(t testing.TB, cfg hostkit.Config) *hostkit.Host {
	h := hostkit.New("test-host", cfg)
	t.Cleanup(func() { h.Close() })
	return h
}

// withDial is cfg dialing with dial.
func withDial(cfg hostkit.Config, dial hostkit.DialFunc) hostkit.Config {
	cfg.Dial = dial
	return cfg
}

// remoteTempDir makes a directory on the host (as the remote user) and
// removes it at cleanup.
func remoteTempDir(t *testing.T, h *hostkit.Host) string {
	t.Helper()
	res, err := h.Execute(testCtx(t), "mktemp -d")
	require.NoError(t, err)
	require.Equal(t, 0, res.Status, res.Stderr)
	dir := strings.TrimSpace(res.Stdout)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h.Execute(ctx, "rm -rf "+hostkit.ShellQuote(dir))
	})
	return dir
}

func run(t *testing.T, h *hostkit.Host, cmd string) string {
	t.Helper()
	res, err := h.Execute(testCtx(t), cmd)
	require.NoError(t, err)
	require.Equal(t, 0, res.Status, "%s: %s", cmd, res.Stderr)
	return res.Stdout
}

func TestExecute(t *testing.T) {
	srv := sshtest.Start(t)
	h := newHost(t, srv.Config())
	ctx := testCtx(t)

	t.Run("output and status", func(t *testing.T) {
		res, err := h.Execute(ctx, "echo out; echo err >&2; exit 7")
		require.NoError(t, err)
		assert.Equal(t, hostkit.Result{Status: 7, Stdout: "out\n", Stderr: "err\n"}, res)
	})
	t.Run("exit codes", func(t *testing.T) {
		for _, code := range []int{0, 1, 2, 42, 255} {
			res, err := h.Execute(ctx, fmt.Sprintf("exit %d", code))
			require.NoError(t, err)
			assert.Equal(t, code, res.Status)
		}
	})
	t.Run("user", func(t *testing.T) {
		assert.Equal(t, srv.User+"\n", run(t, h, "id -un"))
	})
	t.Run("stdin", func(t *testing.T) {
		in := "line one\nline 'two'\n"
		res, err := h.Execute(ctx, "cat; echo done", hostkit.WithStdin(strings.NewReader(in)))
		require.NoError(t, err)
		assert.Equal(t, in+"done\n", res.Stdout)
	})
	t.Run("no stdin reads EOF", func(t *testing.T) {
		res, err := h.Execute(ctx, "cat; echo eof")
		require.NoError(t, err)
		assert.Equal(t, "eof\n", res.Stdout)
	})
	t.Run("env quoting", func(t *testing.T) {
		env := map[string]string{
			"PLAIN":  "value",
			"QUOTES": `it's "quoted" \ back`,
			"DOLLAR": "$HOME `id` $(id)",
			"NL":     "a\nb",
			"EMPTY":  "",
		}
		res, err := h.Execute(ctx, `printf '%s|' "$PLAIN" "$QUOTES" "$DOLLAR" "$NL" "$EMPTY"`, hostkit.WithEnv(env))
		require.NoError(t, err)
		require.Equal(t, 0, res.Status, res.Stderr)
		assert.Equal(t, "value|"+env["QUOTES"]+"|"+env["DOLLAR"]+"|a\nb||", res.Stdout)
	})
	t.Run("bad env name", func(t *testing.T) {
		_, err := h.Execute(ctx, "true", hostkit.WithEnv(map[string]string{"A;rm": "x"}))
		require.Error(t, err)
		assert.Contains(t, err.Error(), `"A;rm"`)
	})
	t.Run("large output", func(t *testing.T) {
		res, err := h.Execute(ctx, "head -c 3000000 /dev/zero | tr '\\0' x; head -c 100000 /dev/zero | tr '\\0' y >&2")
		require.NoError(t, err)
		assert.Len(t, res.Stdout, 3000000)
		assert.Len(t, res.Stderr, 100000)
	})
	t.Run("signal", func(t *testing.T) {
		res, err := h.Execute(ctx, "echo before; kill -KILL $$")
		require.Error(t, err)
		assert.Equal(t, -1, res.Status)
		assert.Contains(t, err.Error(), "KILL")
		assert.Equal(t, "before\n", res.Stdout)
	})
}

func TestExecuteLogsNoSecrets(t *testing.T) {
	srv := sshtest.Start(t)
	var logs testenv.LogBuffer
	cfg := srv.Config()
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := newHost(t, cfg)
	res, err := h.Execute(testCtx(t), `printf %s "$TOKEN" | wc -c`, hostkit.WithEnv(map[string]string{"TOKEN": "s3cr3t-value"}))
	require.NoError(t, err)
	assert.Equal(t, "12", strings.TrimSpace(res.Stdout))
	assert.Contains(t, logs.String(), "TOKEN")
	assert.NotContains(t, logs.String(), "s3cr3t-value")
}

func TestExecuteTimeout(t *testing.T) {
	srv := sshtest.Start(t)
	h := newHost(t, srv.Config())
	ctx := testCtx(t)

	marker := fmt.Sprintf("sleep %d", 3000+time.Now().UnixNano()%1000)
	res, err := h.Execute(ctx, marker, hostkit.WithTimeout(300*time.Millisecond))
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, -1, res.Status)

	// The remote command is killed, not left running.
	require.Eventually(t, func() bool {
		res, err := h.Execute(ctx, "pgrep -f "+hostkit.ShellQuote("^"+marker+"$"))
		return err == nil && res.Status == 1
	}, 10*time.Second, 100*time.Millisecond, "remote %q still running", marker)

	// Config.CommandTimeout applies when no WithTimeout is given.
	cfg := srv.Config()
	cfg.CommandTimeout = 200 * time.Millisecond
	h2 := newHost(t, cfg)
	_, err = h2.Execute(ctx, "sleep 60")
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	// The host stays usable.
	assert.Equal(t, "still\n", run(t, h, "echo still"))
}

func TestConcurrentExecuteOneConnection(t *testing.T) {
	srv := sshtest.Start(t)
	var d countingDialer
	h := newHost(t, withDial(srv.Config(), d.dial))
	ctx := testCtx(t)

	const n = 32 // more than sshd's MaxSessions (10)
	var wg sync.WaitGroup
	errs := make([]error, n)
	outs := make([]string, n)
	for i := range n {
		wg.Go(func() {
			res, err := h.Execute(ctx, fmt.Sprintf("sleep 0.1; echo %d", i))
			errs[i], outs[i] = err, res.Stdout
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i], "execute %d", i)
		assert.Equal(t, fmt.Sprintf("%d\n", i), outs[i])
	}
	assert.Equal(t, int64(1), d.n.Load(), "TCP connections dialed")
}

func TestAuth(t *testing.T) {
	srv := sshtest.Start(t)
	ctx := testCtx(t)

	t.Run("key file", func(t *testing.T) {
		h := newHost(t, srv.Config())
		assert.Equal(t, "ok\n", run(t, h, "echo ok"))
	})
	t.Run("signer", func(t *testing.T) {
		cfg := srv.Config()
		cfg.KeyFiles, cfg.Signers = nil, []ssh.Signer{srv.Signer}
		h := newHost(t, cfg)
		assert.Equal(t, "ok\n", run(t, h, "echo ok"))
	})
	t.Run("wrong key not retried", func(t *testing.T) {
		cfg := srv.Config()
		cfg.KeyFiles = []string{writeNewKey(t)}
		var d countingDialer
		h := newHost(t, withDial(cfg, d.dial))
		_, err := h.Execute(ctx, "true")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "authentication as \""+srv.User+"\" failed")
		assert.Equal(t, int64(1), d.n.Load(), "auth failure must not be retried")
	})
	t.Run("bad key file", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "not-a-key")
		require.NoError(t, os.WriteFile(bad, []byte("garbage"), 0o600))
		cfg := srv.Config()
		cfg.KeyFiles = []string{bad}
		h := newHost(t, cfg)
		_, err := h.Execute(ctx, "true")
		require.Error(t, err)
		assert.Contains(t, err.Error(), bad)

		cfg.KeyFiles = []string{bad + ".missing"}
		h = newHost(t, cfg)
		_, err = h.Execute(ctx, "true")
		require.Error(t, err)
		assert.ErrorIs(t, err, fs.ErrNotExist)
		assert.Contains(t, err.Error(), bad+".missing")
	})
	t.Run("no auth", func(t *testing.T) {
		cfg := srv.Config()
		cfg.KeyFiles = nil
		_, err := newHost(t, cfg).Execute(ctx, "true")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "no SSH authentication")
	})
}

func TestAuthAgent(t *testing.T) {
	srv := sshtest.Start(t)
	ctx := testCtx(t)

	// An agent holding the client key, on a unix socket.
	keyring := agent.NewKeyring()
	b, err := os.ReadFile(srv.KeyFile)
	require.NoError(t, err)
	raw, err := ssh.ParseRawPrivateKey(b)
	require.NoError(t, err)
	require.NoError(t, keyring.Add(agent.AddedKey{PrivateKey: raw}))
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	var served sync.WaitGroup
	served.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			served.Go(func() {
				defer c.Close()
				agent.ServeAgent(keyring, c)
			})
		}
	})
	t.Cleanup(func() { l.Close(); served.Wait() })
	t.Setenv("SSH_AUTH_SOCK", sock)

	cfg := srv.Config()
	cfg.KeyFiles, cfg.UseAgent = nil, true
	h := newHost(t, cfg)
	assert.Equal(t, "agent\n", run(t, h, "echo agent"))
	require.NoError(t, h.Close())

	t.Setenv("SSH_AUTH_SOCK", "")
	_, err = newHost(t, cfg).Execute(ctx, "true")
	assert.ErrorContains(t, err, "SSH_AUTH_SOCK")
}

func TestAuthPassword(t *testing.T) {
	srv := sshtest.Start(t, sshtest.WithPassword())
	ctx := testCtx(t)
	require.NotEmpty(t, srv.Password)
	cfg := srv.Config()
	cfg.KeyFiles = nil
	cfg.Password = srv.Password
	h := newHost(t, cfg)
	assert.Equal(t, srv.User+"\n", run(t, h, "id -un"))

	cfg.Password = "wrong-Pa55word"
	var d countingDialer
	_, err := newHost(t, withDial(cfg, d.dial)).Execute(ctx, "true")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "authentication")
	assert.NotContains(t, err.Error(), "wrong-Pa55word")
	assert.Equal(t, int64(1), d.n.Load())
}

// writeNewKey writes a fresh ed25519 key the server does not know.
func writeNewKey(t *testing.T) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	blk, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "id_other")
	require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(blk), 0o600))
	return p
}

func TestHostKeys(t *testing.T) {
	srv := sshtest.Start(t)
	ctx := testCtx(t)

	t.Run("pinned mismatch", func(t *testing.T) {
		other, _, _, _, err := ssh.ParseAuthorizedKey([]byte(sshtest.Start(t).HostKeyLine))
		require.NoError(t, err)
		cfg := srv.Config()
		cfg.HostKeys = []ssh.PublicKey{other}
		var d countingDialer
		_, err = newHost(t, withDial(cfg, d.dial)).Execute(ctx, "true")
		require.Error(t, err)
		var hke *hostkit.HostKeyError
		require.ErrorAs(t, err, &hke)
		assert.Equal(t, ssh.FingerprintSHA256(srv.HostKey), hke.Got)
		assert.Equal(t, []string{ssh.FingerprintSHA256(other)}, hke.Want)
		assert.Contains(t, err.Error(), "test-host")
		assert.Contains(t, err.Error(), ssh.FingerprintSHA256(srv.HostKey))
		assert.Contains(t, err.Error(), ssh.FingerprintSHA256(other))
		assert.Equal(t, int64(1), d.n.Load(), "host key mismatch must not be retried")
	})
	t.Run("known_hosts", func(t *testing.T) {
		kh := filepath.Join(t.TempDir(), "known_hosts")
		line := knownhosts.Line([]string{knownhosts.Normalize(srv.Addr)}, srv.HostKey)
		require.NoError(t, os.WriteFile(kh, []byte(line+"\n"), 0o600))
		cfg := srv.Config()
		cfg.HostKeys, cfg.KnownHostsFiles = nil, []string{kh}
		assert.Equal(t, "ok\n", run(t, newHost(t, cfg), "echo ok"))

		// Another key for the address is refused.
		other := sshtest.Start(t)
		line = knownhosts.Line([]string{knownhosts.Normalize(srv.Addr)}, other.HostKey)
		require.NoError(t, os.WriteFile(kh, []byte(line+"\n"), 0o600))
		_, err := newHost(t, cfg).Execute(ctx, "true")
		require.Error(t, err)
		var ke *knownhosts.KeyError
		assert.ErrorAs(t, err, &ke)
		assert.Contains(t, err.Error(), kh)
	})
	t.Run("changed on reconnect", func(t *testing.T) {
		// The address answers with another sshd (another host key) after the
		// first connection dies: the reconnect is refused, and says why.
		first := sshtest.Start(t)
		impostor := sshtest.Start(t)
		var target atomic.Value
		target.Store(first.Addr)
		dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, network, target.Load().(string))
		}
		h := newHost(t, withDial(first.Config(), dial))
		assert.Equal(t, "1\n", run(t, h, "echo 1"))
		target.Store(impostor.Addr)
		require.NoError(t, first.Kill())
		_, err := h.Execute(ctx, "true") // may fail on the dead connection
		if err == nil || !errors.As(err, new(*hostkit.HostKeyError)) {
			_, err = h.Execute(ctx, "true")
		}
		var hke *hostkit.HostKeyError
		require.ErrorAs(t, err, &hke, "the changed key is refused")
		assert.Equal(t, ssh.FingerprintSHA256(impostor.HostKey), hke.Got)
		assert.Contains(t, err.Error(), ssh.FingerprintSHA256(first.HostKey))
	})
	t.Run("unverified refused", func(t *testing.T) {
		cfg := srv.Config()
		cfg.HostKeys = nil
		_, err := newHost(t, cfg).Execute(ctx, "true")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "InsecureIgnoreHostKey")
	})
	t.Run("insecure warns once", func(t *testing.T) {
		var logs testenv.LogBuffer
		cfg := srv.Config()
		cfg.HostKeys, cfg.InsecureIgnoreHostKey = nil, true
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		h := newHost(t, cfg)
		run(t, h, "true")
		// A second connection (after the first is lost) must not warn again.
		c, err := h.SSHClient(ctx)
		require.NoError(t, err)
		c.Close()
		require.Eventually(t, func() bool {
			res, err := h.Execute(ctx, "echo again")
			return err == nil && res.Stdout == "again\n"
		}, 10*time.Second, 50*time.Millisecond)
		assert.Equal(t, 1, strings.Count(logs.String(), "host key not verified"), logs.String())
		assert.Contains(t, logs.String(), ssh.FingerprintSHA256(srv.HostKey))
	})
}

func TestReconnect(t *testing.T) {
	leakcheck.Check(t)
	srv := sshtest.Start(t)
	var d countingDialer
	h := newHost(t, withDial(srv.Config(), d.dial))
	ctx := testCtx(t)

	assert.Equal(t, "1\n", run(t, h, "echo 1"))
	_, err := h.ReadFile(ctx, "/etc/hostname")
	require.NoError(t, err)

	// A command running when sshd dies ends with an error, not a hang.
	type result struct {
		res hostkit.Result
		err error
	}
	// Its sleep has an argument of its own (GNU sleep takes fractions), so
	// that the wait below sees this command running, not another test's
	// sleep of the same user (packages run in parallel).
	marker := fmt.Sprintf("sleep 600.%d%09d", os.Getpid(), time.Now().UnixNano()%1_000_000_000)
	done := make(chan result, 1)
	go func() {
		res, err := h.Execute(ctx, "echo started; "+marker)
		done <- result{res, err}
	}()
	require.Eventually(t, func() bool {
		res, err := h.Execute(ctx, "pgrep -x -f -u "+srv.User+" "+hostkit.ShellQuote(marker)+" >/dev/null && echo yes")
		return err == nil && res.Stdout == "yes\n"
	}, time.Minute, 20*time.Millisecond, "%q never ran", marker)
	require.NoError(t, srv.Kill())
	r := <-done
	if r.err == nil {
		// Under load the session may report its command killed (with
		// the rest of sshd's process group) before the connection drops:
		// it ended, not hung, and not successfully.
		assert.NotEqual(t, 0, r.res.Status, "the killed command reported success")
	} else {
		assert.Equal(t, -1, r.res.Status)
	}

	require.NoError(t, srv.Restart())

	assert.Equal(t, "2\n", run(t, h, "echo 2"))
	_, err = h.ReadFile(ctx, "/etc/hostname")
	require.NoError(t, err, "sftp re-opened over the new connection")
	assert.Equal(t, int64(2), d.n.Load())
}

func TestDialDeadline(t *testing.T) {
	leakcheck.Check(t)
	// A listener that accepts connections but never speaks SSH.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns sync.WaitGroup
	var mu sync.Mutex
	var accepted []net.Conn
	conns.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		l.Close()
		conns.Wait()
		for _, c := range accepted {
			c.Close()
		}
	})
	srv := sshtest.Start(t)
	cfg := srv.Config()
	cfg.Addr = l.Addr().String()

	t.Run("context deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := newHost(t, cfg).Execute(ctx, "true")
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
	t.Run("connect timeout with retries", func(t *testing.T) {
		cfg := cfg
		cfg.ConnectTimeout = 200 * time.Millisecond
		cfg.ConnectRetries = 1
		var d countingDialer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := newHost(t, withDial(cfg, d.dial)).Execute(ctx, "true")
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.NoError(t, ctx.Err(), "gave up on ConnectTimeout, not on the caller's deadline")
		assert.Equal(t, int64(2), d.n.Load(), "one retry")
	})
}

func TestClose(t *testing.T) {
	srv := sshtest.Start(t)
	h := hostkit.New("h", srv.Config())
	ctx := testCtx(t)
	run(t, h, "true")
	require.NoError(t, h.Close())
	require.NoError(t, h.Close())
	_, err := h.Execute(ctx, "true")
	assert.ErrorIs(t, err, hostkit.ErrClosed)
	_, err = h.ReadFile(ctx, "/etc/hostname")
	assert.ErrorIs(t, err, hostkit.ErrClosed)
	_, err = h.SFTP(ctx)
	assert.ErrorIs(t, err, hostkit.ErrClosed)
}

func TestShell(t *testing.T) {
	srv := sshtest.Start(t)
	h := newHost(t, srv.Config())
	var out bytes.Buffer
	err := h.Shell(testCtx(t), strings.NewReader("echo shell-$((6*7))\nexit 3\n"), &out, io.Discard)
	var ee *ssh.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 3, ee.ExitStatus())
	assert.Contains(t, out.String(), "shell-42")

	// Input that ends without exit ends the shell, as ^D does.
	out.Reset()
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	require.NoError(t, h.Shell(ctx, strings.NewReader("echo no-exit-$((6*7))\n"), &out, io.Discard))
	assert.Contains(t, out.String(), "no-exit-42")
}

func TestFiles(t *testing.T) {
	srv := sshtest.Start(t)
	h := newHost(t, srv.Config())
	ctx := testCtx(t)
	dir := remoteTempDir(t, h)

	p := dir + "/secret.txt"
	require.NoError(t, h.WriteFile(ctx, p, []byte("hello\n"), 0o600))
	got, err := h.ReadFile(ctx, p)
	require.NoError(t, err)
	assert.Equal(t, "hello\n", string(got))
	assert.Equal(t, "600 hello\n", run(t, h, "printf '%s ' $(stat -c %a "+p+"); cat "+p))

	// Overwrite truncates and sets the mode.
	require.NoError(t, h.WriteFile(ctx, p, []byte("hi"), 0o644))
	assert.Equal(t, "644 hi", run(t, h, "printf '%s ' $(stat -c %a "+p+"); cat "+p))

	// Empty file.
	require.NoError(t, h.WriteFile(ctx, dir+"/empty", nil, 0o644))
	got, err = h.ReadFile(ctx, dir+"/empty")
	require.NoError(t, err)
	assert.Empty(t, got)

	_, err = h.ReadFile(ctx, dir+"/missing")
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.Contains(t, err.Error(), dir+"/missing")

	_, err = h.ReadFile(ctx, dir)
	assert.ErrorContains(t, err, "is a directory")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = h.ReadFile(cctx, p)
	assert.ErrorIs(t, err, context.Canceled)
}

func sha256File(t testing.TB, path string) string {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	s := sha256.New()
	_, err = io.Copy(s, f)
	require.NoError(t, err)
	return hex.EncodeToString(s.Sum(nil))
}

func randomFile(t testing.TB, size int64, perm fs.FileMode) string {
	p := filepath.Join(t.TempDir(), "data")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	require.NoError(t, err)
	_, err = io.CopyN(f, rand.Reader, size)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Chmod(p, perm))
	return p
}

func TestUploadDownload(t *testing.T) {
	srv := sshtest.Start(t)
	h := newHost(t, srv.Config())
	ctx := testCtx(t)
	dir := remoteTempDir(t, h)

	local := randomFile(t, 64<<20, 0o640)
	sum := sha256File(t, local)
	remote := dir + "/big.bin"
	require.NoError(t, h.Upload(ctx, local, remote))
	assert.Equal(t, sum+"  "+remote+"\n", run(t, h, "sha256sum "+remote))
	assert.Equal(t, "640\n", run(t, h, "stat -c %a "+remote))

	back := filepath.Join(t.TempDir(), "back.bin")
	require.NoError(t, h.Download(ctx, remote, back))
	assert.Equal(t, sum, sha256File(t, back))
	fi, err := os.Stat(back)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o640), fi.Mode().Perm())

	// A cancelled context stops an upload.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	assert.ErrorIs(t, h.Upload(cctx, local, dir+"/cancelled"), context.Canceled)

	assert.ErrorIs(t, h.Upload(ctx, local+".missing", dir+"/x"), fs.ErrNotExist)
	assert.ErrorIs(t, h.Download(ctx, dir+"/missing", back), fs.ErrNotExist)
}

// TestSFTPRequestSizeOpenSSH: Debian's sshd states its limits
// (limits@openssh.com) and hostkit reads them: 255 KiB per read or write,
// OpenSSH's message limit less 1 KiB, where pkg/sftp alone would use 32 KiB.
func TestSFTPRequestSizeOpenSSH(t *testing.T) {
	srv := sshtest.Start(t)
	h := newHost(t, srv.Config())
	ctx := testCtx(t)
	c, err := h.SSHClient(ctx)
	require.NoError(t, err)
	size, err := hostkit.SFTPRequestSize(ctx, c)
	require.NoError(t, err)
	assert.Equal(t, 255<<10, size)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = hostkit.SFTPRequestSize(cctx, c)
	assert.Error(t, err, "a cancelled context ends the exchange")
}

func TestCopyTo(t *testing.T) {
	a, b := sshtest.Start(t), sshtest.Start(t)
	ha, hb := newHost(t, a.Config()), newHost(t, b.Config())
	ctx := testCtx(t)
	da, db := remoteTempDir(t, ha), remoteTempDir(t, hb)

	run(t, ha, "head -c 5000000 /dev/urandom > "+da+"/src && chmod 751 "+da+"/src")
	want := strings.Fields(run(t, ha, "sha256sum "+da+"/src"))[0]
	require.NoError(t, ha.CopyTo(ctx, hb, da+"/src", db+"/dst"))
	assert.Equal(t, want, strings.Fields(run(t, hb, "sha256sum "+db+"/dst"))[0])
	assert.Equal(t, "751\n", run(t, hb, "stat -c %a "+db+"/dst"))

	// Same host, too.
	require.NoError(t, ha.CopyTo(ctx, ha, da+"/src", da+"/copy"))
	assert.Equal(t, want, strings.Fields(run(t, ha, "sha256sum "+da+"/copy"))[0])

	assert.ErrorIs(t, ha.CopyTo(ctx, hb, da+"/missing", db+"/x"), fs.ErrNotExist)
}

func TestFS(t *testing.T) {
	srv := sshtest.Start(t)
	h := newHost(t, srv.Config())
	ctx := testCtx(t)
	dir := remoteTempDir(t, h)
	run(t, h, "cd "+dir+" && mkdir -p a/b/c empty && printf one > a/one.txt && printf two > a/b/two.txt && "+
		"head -c 200000 /dev/urandom > a/b/c/big && printf top > top && chmod 600 top")

	fsys, err := h.FSAt(ctx, dir)
	require.NoError(t, err)
	require.NoError(t, fstest.TestFS(fsys, "a/one.txt", "a/b/two.txt", "a/b/c/big", "top", "empty"))

	b, err := fs.ReadFile(fsys, "a/b/two.txt")
	require.NoError(t, err)
	assert.Equal(t, "two", string(b))
	_, err = fs.Stat(fsys, "nope")
	assert.ErrorIs(t, err, fs.ErrNotExist)
	_, err = fsys.Open("../etc/passwd")
	assert.ErrorIs(t, err, fs.ErrInvalid)
	_, err = fsys.Open(dir + "/top")
	assert.ErrorIs(t, err, fs.ErrInvalid, "names are unrooted, as FS says")

	root, err := h.FS(ctx)
	require.NoError(t, err)
	b, err = fs.ReadFile(root, strings.TrimPrefix(dir, "/")+"/a/one.txt")
	require.NoError(t, err)
	assert.Equal(t, "one", string(b))

	_, err = h.FSAt(ctx, dir+"/top")
	assert.ErrorContains(t, err, "not a directory")
}

// fakeTransport is a host without sshd: a map of files and a tiny command
// set.
type fakeTransport struct {
	mu     sync.Mutex
	files  map[string][]byte
	modes  map[string]fs.FileMode
	cmds   []string
	closed bool
}

func newFakeTransport() *fakeTransport {
	return &fakeTransport{files: map[string][]byte{}, modes: map[string]fs.FileMode{}}
}

func (f *fakeTransport) Execute(ctx context.Context, cmd string, o hostkit.ExecOptions) (hostkit.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, cmd)
	switch cmd {
	case "fail":
		return hostkit.Result{Status: 3, Stderr: "failed\n"}, nil
	case "env":
		return hostkit.Result{Stdout: o.Env["A"]}, nil
	case "cat":
		b, err := io.ReadAll(o.Stdin)
		return hostkit.Result{Stdout: string(b)}, err
	}
	return hostkit.Result{Stdout: cmd + "\n"}, nil
}

func (f *fakeTransport) Open(ctx context.Context, path string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.files[path]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (f *fakeTransport) Create(ctx context.Context, path string, perm fs.FileMode, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[path], f.modes[path] = b, perm
	return nil
}

func (f *fakeTransport) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func TestTransportFallback(t *testing.T) {
	ctx := testCtx(t)
	ft := newFakeTransport()
	h := hostkit.New("container", hostkit.Config{Transport: ft})

	res, err := h.Execute(ctx, "fail")
	require.NoError(t, err)
	assert.Equal(t, hostkit.Result{Status: 3, Stderr: "failed\n"}, res)
	res, err = h.Execute(ctx, "env", hostkit.WithEnv(map[string]string{"A": "b"}))
	require.NoError(t, err)
	assert.Equal(t, "b", res.Stdout)
	res, err = h.Execute(ctx, "cat", hostkit.WithStdin(strings.NewReader("in")))
	require.NoError(t, err)
	assert.Equal(t, "in", res.Stdout)

	require.NoError(t, h.WriteFile(ctx, "/etc/x", []byte("data"), 0o600))
	assert.Equal(t, fs.FileMode(0o600), ft.modes["/etc/x"])
	b, err := h.ReadFile(ctx, "/etc/x")
	require.NoError(t, err)
	assert.Equal(t, "data", string(b))
	_, err = h.ReadFile(ctx, "/missing")
	assert.ErrorIs(t, err, fs.ErrNotExist)

	local := randomFile(t, 100000, 0o751)
	require.NoError(t, h.Upload(ctx, local, "/up"))
	assert.Equal(t, fs.FileMode(0o751), ft.modes["/up"])
	back := filepath.Join(t.TempDir(), "down")
	require.NoError(t, h.Download(ctx, "/up", back))
	assert.Equal(t, sha256File(t, local), sha256File(t, back))

	// Copy between a transport host and an SSH host, both ways.
	srv := sshtest.Start(t)
	hs := newHost(t, srv.Config())
	dir := remoteTempDir(t, hs)
	require.NoError(t, h.CopyTo(ctx, hs, "/up", dir+"/up"))
	assert.Equal(t, sha256File(t, local)+"  "+dir+"/up\n", run(t, hs, "sha256sum "+dir+"/up"))
	require.NoError(t, hs.CopyTo(ctx, h, dir+"/up", "/again"))
	assert.Equal(t, ft.files["/up"], ft.files["/again"])

	// What needs SSH says so.
	_, err = h.SFTP(ctx)
	assert.ErrorIs(t, err, hostkit.ErrNoSSH)
	_, err = h.FS(ctx)
	assert.ErrorIs(t, err, hostkit.ErrNoSSH)
	assert.ErrorIs(t, h.Shell(ctx, nil, io.Discard, io.Discard), hostkit.ErrNoSSH)
	_, err = h.SSHClient(ctx)
	assert.ErrorIs(t, err, hostkit.ErrNoSSH)

	require.NoError(t, h.Close())
	assert.True(t, ft.closed)
	_, err = h.Execute(ctx, "x")
	assert.ErrorIs(t, err, hostkit.ErrClosed)

	// Neither SSH nor transport.
	none := hostkit.New("none", hostkit.Config{})
	_, err = none.Execute(ctx, "true")
	assert.ErrorIs(t, err, hostkit.ErrNoSSH)
	_, err = none.ReadFile(ctx, "/x")
	assert.ErrorIs(t, err, hostkit.ErrNoSSH)
	assert.ErrorIs(t, none.WriteFile(ctx, "/x", nil, 0o644), hostkit.ErrNoSSH)
	assert.ErrorIs(t, none.Upload(ctx, local, "/x"), hostkit.ErrNoSSH)
	assert.ErrorIs(t, none.Download(ctx, "/x", back), hostkit.ErrNoSSH)
	assert.ErrorIs(t, none.CopyTo(ctx, hs, "/x", "/y"), hostkit.ErrNoSSH)
	_, err = none.FS(ctx)
	assert.ErrorIs(t, err, hostkit.ErrNoSSH)
}

func TestAddrString(t *testing.T) {
	h := hostkit.New("name", hostkit.Config{Addr: "127.0.0.1:22"})
	assert.Equal(t, "127.0.0.1:22", h.Addr())
	assert.Equal(t, "name", h.String())
	assert.Equal(t, "name", fmt.Sprint(h))
	h.Via = "engine-stream"
	assert.Equal(t, "name via engine-stream", h.String())
	assert.Equal(t, "name", h.Hostname)
}

func TestCredentials(t *testing.T) {
	const secret = "s3cret-pw"
	h := hostkit.New("name", hostkit.Config{Addr: "127.0.0.1:22", KeyFiles: []string{"/k/id"}, Password: secret, UseAgent: true})
	c := h.Credentials()
	assert.Equal(t, "root", c.User, "an empty Config.User logs in as root")
	assert.Equal(t, []string{"/k/id"}, c.KeyFiles)
	assert.Equal(t, secret, c.Password)
	assert.True(t, c.UseAgent)
	assert.Equal(t, "user root, key files [/k/id], password set, ssh agent", c.String())
	c.KeyFiles[0] = "/changed"
	assert.Equal(t, []string{"/k/id"}, h.Credentials().KeyFiles, "Credentials returns a copy")

	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("creds", "c", c)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("creds", "c", c)
	raw, err := json.Marshal(c)
	require.NoError(t, err)
	for _, out := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%v", &c), text.String(), js.String(), string(raw)} {
		assert.NotContains(t, out, secret)
	}

	u := hostkit.New("name", hostkit.Config{User: "alice"}).Credentials()
	assert.Equal(t, "user alice", u.String())
}
