package container_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/internal/sshtest"
	"github.com/hostbroker/broker/internal/testenv"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/container"
)

// Remote engines, for real: an engine reached through a real OpenSSH sshd
// on 127.0.0.1 (ssh://, with and without a socket path; Docker and
// Podman), and through a TLS proxy with client-certificate verification
// in front of the engine's socket (tcp:// with DOCKER_TLS_VERIFY and
// DOCKER_CERT_PATH). Hosts made through them are used end to end.

// localSocket is the unix socket of engine e on this machine, skipping
// when e is missing or not on a socket.
func localSocket(t *testing.T, e engine) string {
	t.Helper()
	open(t, e, nil) // skips when the engine or the test images are missing
	u, err := url.Parse(e.uri(t))
	if err != nil || u.Scheme != "unix" {
		t.Skipf("skipping: engine %s is not on a unix socket (%s)", e.name, e.uri(t))
	}
	return u.Path
}

// sshEngineHost is a real sshd on 127.0.0.1 standing in for a remote
// engine host: its sessions' DOCKER_HOST is the engine, and a private
// ssh_config (key, pinned host key) reaches it without ~/.ssh.
type sshEngineHost struct {
	srv    *sshtest.Server
	sock   string // the engine socket as the ssh user reaches it
	config string // ssh_config for the setting engine_ssh_config
}

// startSSHEngineHost starts sshd in front of the engine socket target.
// Running as root, sshd's user (sshtest.TestUser) cannot open the
// engine's socket: it reaches it through a relay socket in a directory
// only that user (and root) may enter.
func startSSHEngineHost(t *testing.T, target string) *sshEngineHost {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		testenv.Require(t, "docker", fmt.Errorf("the docker CLI (the engine host's `docker system dial-stdio`): %w", err))
	}
	h := &sshEngineHost{sock: target}
	var r *relay
	if os.Geteuid() == 0 {
		r = startRelay(t, target)
		h.sock = r.sock
	}
	h.srv = sshtest.Start(t, sshtest.WithConfig("SetEnv DOCKER_HOST=unix://"+h.sock))
	if r != nil {
		r.handTo(t, h.srv.User)
	}
	h.config = sshClientConfig(t, h.srv, h.srv.KeyFile)
	return h
}

// uri is the engine's ssh:// address, with the socket path when given.
func (h *sshEngineHost) uri(path string) string {
	return "ssh://" + h.srv.User + "@" + h.srv.Addr + path
}

// sshClientConfig writes an ssh_config for srv using keyFile, with srv's
// host key pinned: nothing is read from or written to ~/.ssh.
func sshClientConfig(t *testing.T, srv *sshtest.Server, keyFile string) string {
	t.Helper()
	dir := t.TempDir()
	host, port, _ := net.SplitHostPort(srv.Addr)
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, fmt.Appendf(nil, "[%s]:%s %s\n", host, port, srv.HostKeyLine), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "ssh_config")
	body := strings.Join([]string{
		"Host *",
		"  IdentityFile " + keyFile,
		"  IdentitiesOnly yes",
		"  UserKnownHostsFile " + kh,
		"  GlobalKnownHostsFile /dev/null",
		"  StrictHostKeyChecking yes",
		"  PasswordAuthentication no",
		"  KbdInteractiveAuthentication no",
		"  ControlMaster no",
		"",
	}, "\n")
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// relay is a unix socket forwarding every connection to another socket.
type relay struct {
	dir, sock string
}

// startRelay listens on a socket in a new directory (short path: socket
// paths are limited) and forwards to target until the test ends.
func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	dir, err := os.MkdirTemp("", "eng")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &relay{dir: dir, sock: filepath.Join(dir, "engine.sock")}
	ln, err := net.Listen("unix", r.sock)
	if err != nil {
		t.Fatal(err)
	}
	serveProxy(t, ln, target)
	return r
}

// handTo gives the relay's directory and socket to the user name, who
// alone (besides root) may then use it.
func (r *relay) handTo(t *testing.T, name string) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, p := range []string{r.dir, r.sock} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
}

// serveProxy forwards each connection ln accepts to the unix socket
// target (TLS connections once their handshake is done), half-closes
// included, until the test ends.
func serveProxy(t testing.TB, ln net.Listener, target string) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			return false
		}
		conns[c] = true
		return true
	}
	untrack := func(c net.Conn) {
		c.Close()
		mu.Lock()
		defer mu.Unlock()
		delete(conns, c)
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !track(c) {
				c.Close()
				return
			}
			wg.Go(func() {
				defer untrack(c)
				if tc, ok := c.(*tls.Conn); ok {
					tc.SetDeadline(time.Now().Add(30 * time.Second))
					if tc.Handshake() != nil {
						return
					}
					tc.SetDeadline(time.Time{})
				}
				d, err := net.DialTimeout("unix", target, 10*time.Second)
				if err != nil || !track(d) {
					if d != nil {
						d.Close()
					}
					return
				}
				defer untrack(d)
				up := make(chan struct{})
				go func() {
					defer close(up)
					io.Copy(d, c)
					closeWrite(d)
				}()
				io.Copy(c, d)
				closeWrite(c)
				<-up
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// openRemote opens a provider with settings (host_uri and how to reach
// it), failing the test when the engine does not answer.
func openRemote(t *testing.T, settings map[string]any) *container.Provider {
	t.Helper()
	s := map[string]any{"name_prefix": "brokertest"}
	for k, v := range settings {
		s[k] = v
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	p, err := container.Open(ctx, providers.Config{Provider: container.Name, Instance: "remote", Settings: s, Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("Open %v: %v", settings["host_uri"], err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// remoteLifecycle uses hosts made through p's engine end to end: an sshd
// host (SSH-ready, a command over SSH through the engine's exec stream,
// itself through the remote connection) and an engine-exec host (exec and
// archive API, hijacked through the remote connection), each checked in.
func remoteLifecycle(t *testing.T, p *container.Provider) {
	t.Helper()
	ctx := testCtx(t)
	rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage}, nil)
	if rec.Broker.SSH == nil || rec.Broker.SSH.Transport != container.TransportStream || rec.Broker.SSH.Port != 0 {
		// A port published on the engine's machine would not reach this
		// one: SSH goes through the engine's own exec stream.
		t.Fatalf("a host made through %s: SSH block %+v, want SSH through the engine's exec stream", p.EngineURI(), rec.Broker.SSH)
	}
	h := connect(t, ctx, p, rec)
	res, err := h.Execute(ctx, "echo hello; id -un")
	if err != nil || res.Stdout != "hello\nroot\n" || res.Status != 0 {
		t.Fatalf("Execute over SSH on a host made through %s: %+v, %v", p.EngineURI(), res, err)
	}
	if err := p.Checkin(ctx, rec); err != nil {
		t.Fatalf("Checkin through %s: %v", p.EngineURI(), err)
	}
	if ids, err := containersWithID(ctx, p, rec.ID()); err != nil || len(ids) != 0 {
		t.Errorf("after check-in: containers %v, %v", ids, err)
	}

	brec, bh := busyboxHost(t, ctx, p)
	if err := bh.WriteFile(ctx, "/tmp/in", []byte("through the engine\n"), 0o644); err != nil {
		t.Fatalf("WriteFile through %s: %v", p.EngineURI(), err)
	}
	res, err = bh.Execute(ctx, "cat /tmp/in; echo err >&2; exit 3")
	if err != nil || res.Stdout != "through the engine\n" || res.Stderr != "err\n" || res.Status != 3 {
		t.Errorf("Execute through %s: %+v, %v", p.EngineURI(), res, err)
	}
	if err := p.Checkin(ctx, brec); err != nil {
		t.Errorf("Checkin through %s: %v", p.EngineURI(), err)
	}
}

// TestEngineSSH: a Docker engine reached through a real sshd, as
// ssh://user@host:port (the remote user's `docker system dial-stdio`) and
// with the socket's path (ssh://user@host:port/path/to/socket), makes hosts
// that work as local ones do.
func TestEngineSSH(t *testing.T) {
	sock := localSocket(t, engines[0])
	h := startSSHEngineHost(t, sock)
	for _, tc := range []struct{ name, uri string }{
		{"dial-stdio", h.uri("")},
		{"socket path", h.uri(h.sock)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noSSHLeft(t, h)
			p := openRemote(t, map[string]any{"host_uri": tc.uri, "engine_ssh_config": h.config, "runtime": "docker"})
			if p.EngineURI() != tc.uri {
				t.Errorf("EngineURI() = %q, want %q", p.EngineURI(), tc.uri)
			}
			remoteLifecycle(t, p)
		})
	}
}

// TestEngineSSHPodman: the Podman service's socket reached through a
// real sshd (ssh://user@host:port/path/to/podman.sock): with the podman
// runtime the engine host's podman relays it, with docker its docker CLI.
func TestEngineSSHPodman(t *testing.T) {
	sock := localSocket(t, engines[1])
	h := startSSHEngineHost(t, sock)
	for _, runtime := range []string{"podman", "docker"} {
		t.Run(runtime, func(t *testing.T) {
			noSSHLeft(t, h)
			p := openRemote(t, map[string]any{"host_uri": h.uri(h.sock), "engine_ssh_config": h.config, "runtime": runtime})
			remoteLifecycle(t, p)
		})
	}
}

// TestEngineSSHDialErrors: a dial that fails through ssh says why, with
// ssh's (or the remote command's) own stderr; a failed Open names the
// address and leaves no ssh process behind.
func TestEngineSSHDialErrors(t *testing.T) {
	sock := localSocket(t, engines[0])
	h := startSSHEngineHost(t, sock)
	_, port, _ := net.SplitHostPort(h.srv.Addr)

	// A key the server does not know.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	strange := filepath.Join(t.TempDir(), "id_strange")
	if err := os.WriteFile(strange, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongKey := sshClientConfig(t, h.srv, strange)

	for _, tc := range []struct {
		name, uri, config string
		want              []string
	}{
		{"wrong key", h.uri(""), wrongKey, []string{"Permission denied", "ssh " + h.srv.User + "@127.0.0.1 -p " + port, "exit status 255"}},
		{"wrong user", "ssh://nosuchuser-broker@" + h.srv.Addr, h.config, []string{"Permission denied", "nosuchuser-broker@127.0.0.1"}},
		{"missing socket", h.uri("/nonexistent/engine.sock"), h.config, []string{"/nonexistent/engine.sock", "socket /nonexistent/engine.sock"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			before := sshProcesses(t, port)
			_, err := container.Open(ctx, providers.Config{Provider: container.Name, Settings: map[string]any{
				"host_uri": tc.uri, "engine_ssh_config": tc.config}, Dir: t.TempDir()})
			if err == nil {
				t.Fatalf("Open %s succeeded", tc.uri)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if strings.Contains(err.Error(), ": EOF") && !strings.Contains(err.Error(), "exit status") {
				t.Errorf("error %q reads as a bare EOF", err)
			}
			t.Logf("error: %v", err)
			if left := sshProcesses(t, port); left > before {
				t.Errorf("%d ssh processes to port %s left after the failed Open (%d before)", left, port, before)
			}
		})
	}
}

// noSSHLeft checks, once the test's other cleanups have run (hosts and
// provider closed), that it left no ssh process to h behind.
func noSSHLeft(t *testing.T, h *sshEngineHost) {
	_, port, _ := net.SplitHostPort(h.srv.Addr)
	before := sshProcesses(t, port)
	t.Cleanup(func() {
		if left := sshProcesses(t, port); left > before {
			t.Errorf("%d ssh processes to port %s left after the hosts and the provider were closed (%d before)", left, port, before)
		}
	})
}

// sshProcesses counts this process's ssh children that name port.
func sshProcesses(t *testing.T, port string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	me := strconv.Itoa(os.Getpid())
	n := 0
	for _, e := range ents {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 2 || f[1] != me {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(cmd), "\x00")
		if filepath.Base(args[0]) == "ssh" && strings.Contains(string(cmd), "\x00-p\x00"+port+"\x00") {
			n++
		}
	}
	return n
}

// tlsFiles are a CA and certificates signed by it, PEM-encoded.
type tlsFiles struct {
	caPEM           []byte
	serverCert      tls.Certificate
	certPEM, keyPEM []byte // the client's
	pool            *x509.CertPool
	caKey           *ecdsa.PrivateKey
	caCert          *x509.Certificate
	serial          int64
}

// newCA makes a CA with a server certificate for 127.0.0.1 and a client
// certificate.
func newCA(t *testing.T, name string) *tlsFiles {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	f := &tlsFiles{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), caKey: key, caCert: ca, pool: x509.NewCertPool(), serial: 1}
	f.pool.AddCert(ca)
	srvCert, srvKey := f.issue(t, "engine", x509.ExtKeyUsageServerAuth)
	f.serverCert, err = tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	f.certPEM, f.keyPEM = f.issue(t, "client", x509.ExtKeyUsageClientAuth)
	return f
}

// issue makes a certificate signed by the CA, for 127.0.0.1.
func (f *tlsFiles) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(f.serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{netip.MustParseAddr("127.0.0.1").AsSlice()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.caCert, &key.PublicKey, f.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// certDir writes a DOCKER_CERT_PATH directory: ca.pem when caPEM is not
// nil, cert.pem and key.pem when given.
func certDir(t *testing.T, caPEM, certPEM, keyPEM []byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range map[string][]byte{"ca.pem": caPEM, "cert.pem": certPEM, "key.pem": keyPEM} {
		if b == nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startTLSEngine starts a TLS proxy on 127.0.0.1 in front of the engine
// socket target, requiring client certificates signed by ca, and returns
// its tcp:// address.
func startTLSEngine(t *testing.T, ca *tlsFiles, target string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{ca.serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	serveProxy(t, ln, target)
	return "tcp://" + ln.Addr().String()
}

// TestEngineTLS: an engine behind a TLS listener that verifies client
// certificates, reached as tcp://host:port with DOCKER_TLS_VERIFY and
// DOCKER_CERT_PATH (or the settings tls_verify and tls_cert_path), makes
// hosts that work as local ones do; a wrong CA or a missing client
// certificate fails saying so.
func TestEngineTLS(t *testing.T) {
	sock := localSocket(t, engines[0])
	ca := newCA(t, "broker test CA")
	uri := startTLSEngine(t, ca, sock)

	t.Run("DOCKER_TLS_VERIFY", func(t *testing.T) {
		t.Setenv("DOCKER_TLS_VERIFY", "1")
		t.Setenv("DOCKER_CERT_PATH", certDir(t, ca.caPEM, ca.certPEM, ca.keyPEM))
		p := openRemote(t, map[string]any{"host_uri": uri})
		remoteLifecycle(t, p)
	})

	t.Run("settings", func(t *testing.T) {
		// The settings win over the environment.
		t.Setenv("DOCKER_CERT_PATH", filepath.Join(t.TempDir(), "nonexistent"))
		p := openRemote(t, map[string]any{"host_uri": uri, "tls_verify": true, "tls_cert_path": certDir(t, ca.caPEM, ca.certPEM, ca.keyPEM)})
		res, err := p.Client().Ping(t.Context(), client.PingOptions{})
		if err != nil || res.APIVersion == "" {
			t.Errorf("Ping: %+v, %v", res, err)
		}
	})

	failures := []struct {
		name string
		dir  string
		want []string
	}{
		{"wrong CA", certDir(t, newCA(t, "another CA").caPEM, ca.certPEM, ca.keyPEM), []string{"not trusted by the CA in", "ca.pem", "unknown authority"}},
		{"no client certificate", certDir(t, ca.caPEM, nil, nil), []string{"wants a client certificate", "certificate required"}},
		{"half a client certificate", certDir(t, ca.caPEM, ca.certPEM, nil), []string{"need both cert.pem and key.pem"}},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("DOCKER_TLS_VERIFY", "1")
			t.Setenv("DOCKER_CERT_PATH", tc.dir)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			_, err := container.Open(ctx, providers.Config{Provider: container.Name, Settings: map[string]any{"host_uri": uri}, Dir: t.TempDir()})
			if err == nil {
				t.Fatal("Open succeeded")
			}
			for _, want := range append(tc.want, uri) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if strings.Contains(err.Error(), string(ca.keyPEM)) {
				t.Error("the error holds the client key")
			}
			t.Logf("error: %v", err)
		})
	}

	t.Run("plain client", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err := container.Open(ctx, providers.Config{Provider: container.Name, Settings: map[string]any{"host_uri": uri}, Dir: t.TempDir()})
		if err == nil {
			t.Fatal("Open without TLS of a TLS engine succeeded")
		}
		if !strings.Contains(err.Error(), "a TLS engine?") {
			t.Errorf("error %q does not suggest TLS", err)
		}
		t.Logf("error: %v", err)
	})
}

// TestEngineURIRedacted: a password in an engine address never reaches
// an error (ssh:// refuses one: ssh runs in batch mode).
func TestEngineURIRedacted(t *testing.T) {
	for _, uri := range []string{"ssh://u:hunter2@127.0.0.1:1", "tcp://u:hunter2@127.0.0.1:1", "nope://u:hunter2@x"} {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		_, err := container.Open(ctx, providers.Config{Provider: container.Name, Settings: map[string]any{"host_uri": uri}, Dir: t.TempDir()})
		cancel()
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open %s: %v; want an error without the password", uri, err)
		}
	}
	_, err := container.Open(t.Context(), providers.Config{Provider: container.Name, Settings: map[string]any{"host_uri": "ssh://u:hunter2@127.0.0.1:1"}, Dir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "password") {
		t.Errorf("ssh:// with a password: %v; want an error saying passwords are not supported", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ssh:// with a password tried to connect: %v", err)
	}
}
