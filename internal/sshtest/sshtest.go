// Package sshtest starts a real OpenSSH sshd on 127.0.0.1 for tests, like
// net/http/httptest: its own config, host key, client key and authorized
// keys file in a temporary directory.
//
// Running as root, sshd logs users in as a dedicated user "brokertest"
// (created when missing, shell /bin/sh); otherwise as the current user.
package sshtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/testenv"
)

// SSHD is the sshd binary used.
const SSHD = "/usr/sbin/sshd"

// TestUser is the user logged in as when running as root.
const TestUser = "brokertest"

// Options configure a Server.
type Options struct {
	// Password enables password authentication with a random password set
	// for the user (root only: New fails otherwise).
	Password bool
	// Config holds extra sshd_config lines.
	Config []string
}

// Option sets one of Options.
type Option func(*Options)

// WithPassword enables password authentication (see Options.Password).
func WithPassword() Option { return func(o *Options) { o.Password = true } }

// WithConfig adds sshd_config lines.
func WithConfig(lines ...string) Option {
	return func(o *Options) { o.Config = append(o.Config, lines...) }
}

// Server is a running sshd.
type Server struct {
	Addr        string        // "127.0.0.1:port"
	User        string        // user to log in as
	KeyFile     string        // client private key (OpenSSH format, unencrypted)
	Signer      ssh.Signer    // the same client key
	HostKey     ssh.PublicKey // sshd's host key
	HostKeyLine string        // HostKey in authorized_keys form
	Password    string        // User's password, when enabled
	Dir         string        // the server's directory

	cfgPath string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Available reports why sshd cannot be started here, or nil.
func Available() error {
	if _, err := os.Stat(SSHD); err != nil {
		return fmt.Errorf("sshtest: %w (install openssh-server)", err)
	}
	return nil
}

// Start starts a server for tb and stops it (and removes its files) at tb's
// cleanup. It skips tb when sshd is missing (fails under
// BROKER_TEST_REQUIRE=sshd), and skips tests asking for a password when not
// running as root.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	testenv.Require(tb, "sshd", Available())
	var o Options
	for _, opt := range opts {
		opt(&o)
	}
	if o.Password && os.Geteuid() != 0 {
		tb.Skip("sshtest: password authentication needs root (chpasswd)")
	}
	dir, err := os.MkdirTemp("", "sshtest-")
	if err != nil {
		tb.Fatalf("sshtest: %v", err)
	}
	s, err := New(dir, o)
	if err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("sshtest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("sshtest: %v", err)
		}
		os.RemoveAll(dir)
	})
	return s
}

// New starts a server keeping its files in dir (which it makes readable by
// the test user: sshd reads the authorized keys file as that user, so dir's
// parents must be searchable by it). Close stops it; removing dir is the
// caller's job.
func New(dir string, opts Options) (*Server, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, cfgPath: filepath.Join(dir, "sshd_config"), logPath: filepath.Join(dir, "sshd.log")}

	s.User, err = testUser()
	if err != nil {
		return nil, err
	}
	if opts.Password {
		if os.Geteuid() != 0 {
			return nil, errors.New("sshtest: password authentication needs root")
		}
		if s.Password, err = setPassword(s.User); err != nil {
			return nil, err
		}
	}

	// Host key.
	hostPriv, hostPub, err := writeKey(filepath.Join(dir, "ssh_host_ed25519_key"))
	if err != nil {
		return nil, err
	}
	_ = hostPriv
	s.HostKey = hostPub
	s.HostKeyLine = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostPub)))

	// Client key and authorized_keys.
	s.KeyFile = filepath.Join(dir, "id_ed25519")
	s.Signer, _, err = writeKey(s.KeyFile)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(s.Signer.PublicKey()), 0o644); err != nil {
		return nil, err
	}

	if os.Geteuid() == 0 {
		// sshd refuses to start as root without its privilege separation
		// directory (normally made by systemd).
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return nil, fmt.Errorf("sshtest: %w", err)
		}
	}

	// A free port can be taken between finding and binding it: try again.
	var last error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := s.writeConfig(port, opts); err != nil {
			return nil, err
		}
		if last = s.start(); last == nil {
			return s, nil
		}
	}
	return nil, last
}

func (s *Server) writeConfig(port int, opts Options) error {
	yesno := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	lines := []string{
		"Port " + strconv.Itoa(port),
		"ListenAddress 127.0.0.1",
		"HostKey " + filepath.Join(s.Dir, "ssh_host_ed25519_key"),
		"PidFile " + filepath.Join(s.Dir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(s.Dir, "authorized_keys"),
		"AllowUsers " + s.User,
		"StrictModes no",
		"UsePAM no",
		"UseDNS no",
		"PubkeyAuthentication yes",
		"PasswordAuthentication " + yesno(opts.Password),
		"KbdInteractiveAuthentication no",
		"PermitRootLogin no",
		"PrintMotd no",
		"PrintLastLog no",
		"Subsystem sftp internal-sftp",
		"LogLevel INFO",
	}
	lines = append(lines, opts.Config...)
	return os.WriteFile(s.cfgPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

// start runs sshd and waits (bounded) until it answers with its banner.
func (s *Server) start() error {
	logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(SSHD, "-D", "-e", "-f", s.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so a test's ^C does not hit sshd before cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("sshtest: start %s: %w", SSHD, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("sshtest: sshd exited at start: %s", s.logTail())
		default:
		}
		if banner(s.Addr) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("sshtest: sshd not answering on %s after 15s: %s", s.Addr, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// banner checks that addr speaks SSH.
func banner(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-") {
		return fmt.Errorf("not ssh: %q", line)
	}
	return nil
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Log returns what sshd wrote so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// Config returns a hostkit.Config for this server: its address, user,
// client key file and pinned host key.
func (s *Server) Config() hostkit.Config {
	return hostkit.Config{
		Addr:     s.Addr,
		User:     s.User,
		KeyFiles: []string{s.KeyFile},
		HostKeys: []ssh.PublicKey{s.HostKey},
	}
}

// Kill kills sshd and every process under it (sessions included) with
// SIGKILL, as a crash would. Restart starts it again.
func (s *Server) Kill() error {
	return s.stop(syscall.SIGKILL)
}

// Stop stops sshd and every process under it. Restart starts it again.
func (s *Server) Stop() error {
	return s.stop(syscall.SIGTERM)
}

// Close stops the server; it is idempotent.
func (s *Server) Close() error { return s.Stop() }

func (s *Server) stop(sig syscall.Signal) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	// List the tree before signalling: processes orphaned by sshd's death
	// are no longer found under it.
	tree := descendants(cmd.Process.Pid)
	// Processes a session left behind (cmd &) are orphans, no longer under
	// sshd; they still carry the session's SSH_CONNECTION.
	_, port, _ := net.SplitHostPort(s.Addr)
	maps.Copy(tree, sessionProcs(" 127.0.0.1 "+port))
	select {
	case <-done:
	default:
		_ = cmd.Process.Signal(sig)
	}
	tree.signal(sig)
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		_ = cmd.Process.Kill()
		<-done
	}
	tree.signal(syscall.SIGKILL)
	return nil
}

// Restart starts sshd again on the same port with the same keys, after
// Kill or Stop (it stops a running one first).
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	var last error
	// The port is ours (SO_REUSEADDR) but may take a moment to free.
	for range 10 {
		if last = s.start(); last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return last
}

// procs maps pids to their start times, so a signal never hits a process
// that reused a pid.
type procs map[int]string

func (p procs) signal(sig syscall.Signal) {
	for pid, started := range p {
		if _, st, ok := procStat(pid); ok && st == started {
			_ = syscall.Kill(pid, sig)
		}
	}
}

// procStat returns a process's parent pid and start time.
func procStat(pid int) (ppid int, started string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", false
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state, ppid, …, starttime (field 22 overall).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, "", false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, "", false
	}
	ppid, _ = strconv.Atoi(f[1])
	return ppid, f[19], true
}

// sessionProcs returns the processes whose SSH_CONNECTION ends with
// suffix (" serverIP serverPort").
func sessionProcs(suffix string) procs {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := procs{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, []byte("SSH_CONNECTION=")); ok && bytes.HasSuffix(v, []byte(suffix)) {
				if _, st, ok := procStat(pid); ok {
					out[pid] = st
				}
				break
			}
		}
	}
	return out
}

// descendants returns every process below root.
func descendants(root int) procs {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	start := map[int]string{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, st, ok := procStat(pid)
		if !ok {
			continue
		}
		children[ppid] = append(children[ppid], pid)
		start[pid] = st
	}
	out := procs{}
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out[c] = start[c]
			queue = append(queue, c)
		}
	}
	return out
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("sshtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeKey generates an ed25519 key, writes its private half to path in
// OpenSSH format (mode 0600) and returns it.
func writeKey(path string) (ssh.Signer, ssh.PublicKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, nil, fmt.Errorf("sshtest: write key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return signer, signer.PublicKey(), nil
}

var userOnce struct {
	sync.Mutex
	name string
}

// testUser returns the user sshd logs in as, creating TestUser when root.
func testUser() (string, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return "", fmt.Errorf("sshtest: current user: %w", err)
		}
		return u.Username, nil
	}
	userOnce.Lock()
	defer userOnce.Unlock()
	if userOnce.name != "" {
		return userOnce.name, nil
	}
	if _, err := user.Lookup(TestUser); err != nil {
		out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", TestUser).CombinedOutput()
		if err != nil {
			// Another process may have created it meanwhile.
			if _, lerr := user.Lookup(TestUser); lerr != nil {
				return "", fmt.Errorf("sshtest: useradd %s: %v: %s", TestUser, err, bytes.TrimSpace(out))
			}
		}
	}
	// sshd without PAM refuses locked accounts ("!" password, useradd's
	// default); "*" allows key logins but no password. Only replace a lock.
	if locked, err := passwordLocked(TestUser); err == nil && locked {
		if out, err := exec.Command("usermod", "-p", "*", TestUser).CombinedOutput(); err != nil {
			return "", fmt.Errorf("sshtest: usermod %s: %v: %s", TestUser, err, bytes.TrimSpace(out))
		}
	}
	userOnce.name = TestUser
	return TestUser, nil
}

func passwordLocked(name string) (bool, error) {
	b, err := os.ReadFile("/etc/shadow")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) > 1 && f[0] == name {
			return strings.HasPrefix(f[1], "!"), nil
		}
	}
	return false, fmt.Errorf("user %s not in /etc/shadow", name)
}

var password struct {
	sync.Mutex
	value string
}

// setPassword gives name a random password, once per process (servers in
// one test binary share it; a concurrent test binary may replace it).
func setPassword(name string) (string, error) {
	password.Lock()
	defer password.Unlock()
	if password.value != "" {
		return password.value, nil
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	pw := hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chpasswd")
	cmd.Stdin = strings.NewReader(name + ":" + pw + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		// Never show the password.
		return "", fmt.Errorf("sshtest: chpasswd for %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	password.value = pw
	return pw, nil
}
