package hostkit_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/leakcheck"
	"github.com/hostbroker/broker/internal/sshtest"
)

// Bounds of the stuck-peer tests: each call has a short deadline and must
// return well within a generous bound ("did not hang"), whatever the peer
// does.
const (
	stuckDeadline = 200 * time.Millisecond
	stuckBound    = 5 * time.Second
)

// stall is what a fakePeer withholds on a connection.
type stall int

const (
	answer        stall = iota // answers like sshd
	stallOpen                  // never answers channel opens
	stallRequests              // opens channels, never answers their requests (exec, subsystem)
	lateOpen                   // answers channel opens once the test closes release
	frozen                     // answers nothing at all once the handshake is done
)

// gate freezes a connection: reads and writes wait while frozen, as on a
// paused host.
type gate struct {
	mu sync.Mutex
	ch chan struct{} // open while frozen
}

func (g *gate) freeze() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
}

func (g *gate) thaw() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
}

func (g *gate) wait() {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

type gatedConn struct {
	net.Conn
	gs []*gate
}

func (c gatedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	for _, g := range c.gs {
		g.wait() // what was read is handled after the thaw
	}
	return n, err
}

func (c gatedConn) Write(p []byte) (int, error) {
	for _, g := range c.gs {
		g.wait()
	}
	return c.Conn.Write(p)
}

// fakePeer is an in-process SSH server (x/crypto/ssh) that answers like
// sshd (exec of "true", and "freeze", which freezes the server; the sftp
// subsystem over an in-memory file system; keepalives) or withholds its
// answers as a stuck host does: mode says what, per connection (0 the
// first).
type fakePeer struct {
	addr    string
	hostKey ssh.Signer
	client  ssh.Signer
	cfg     *ssh.ServerConfig
	mode    func(conn int) stall
	files   sftp.Handlers

	frozen     gate          // the whole server
	release    chan struct{} // closed: lateOpen answers
	ended      chan struct{} // a value per server connection that ended
	chanClosed chan struct{} // a value per channel the client closed

	wg    sync.WaitGroup
	mu    sync.Mutex
	ln    net.Listener
	cs    []net.Conn
	gates []*gate // of frozen connections
}

func newFakePeer(t *testing.T, mode func(conn int) stall) *fakePeer {
	t.Helper()
	p := &fakePeer{
		mode:       mode,
		files:      sftp.InMemHandler(),
		release:    make(chan struct{}),
		ended:      make(chan struct{}, 16),
		chanClosed: make(chan struct{}, 64),
	}
	var err error
	p.hostKey, err = newSigner()
	require.NoError(t, err)
	p.client, err = newSigner()
	require.NoError(t, err)
	p.cfg = &ssh.ServerConfig{NoClientAuth: true}
	p.cfg.AddHostKey(p.hostKey)
	p.ln, err = net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p.addr = p.ln.Addr().String()
	p.wg.Go(func() {
		for n := 0; ; n++ {
			c, err := p.ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.cs = append(p.cs, c)
			p.mu.Unlock()
			p.wg.Go(func() { p.serve(c, p.mode(n)) })
		}
	})
	t.Cleanup(func() {
		p.ln.Close()
		p.frozen.thaw()
		p.mu.Lock()
		for _, g := range p.gates {
			g.thaw()
		}
		for _, c := range p.cs {
			c.Close()
		}
		p.mu.Unlock()
		select {
		case <-p.release:
		default:
			close(p.release)
		}
		p.wg.Wait()
	})
	return p
}

func newSigner() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

func (p *fakePeer) config() hostkit.Config {
	return hostkit.Config{
		Addr: p.addr, User: "u", Signers: []ssh.Signer{p.client},
		HostKeys: []ssh.PublicKey{p.hostKey.PublicKey()},
	}
}

func (p *fakePeer) serve(c net.Conn, mode stall) {
	defer func() { p.ended <- struct{}{} }()
	own := &gate{}
	sc, chans, reqs, err := ssh.NewServerConn(gatedConn{c, []*gate{&p.frozen, own}}, p.cfg)
	if err != nil {
		c.Close()
		return
	}
	defer sc.Close()
	if mode == frozen {
		own.freeze() // thawed at cleanup
		p.mu.Lock()
		p.gates = append(p.gates, own)
		p.mu.Unlock()
	}
	p.wg.Go(func() { ssh.DiscardRequests(reqs) })
	for nc := range chans {
		switch mode {
		case stallOpen:
			// Never answered.
		case lateOpen:
			p.wg.Go(func() {
				<-p.release
				p.session(nc, answer)
			})
		default:
			p.wg.Go(func() { p.session(nc, mode) })
		}
	}
}

func (p *fakePeer) session(nc ssh.NewChannel, mode stall) {
	if nc.ChannelType() != "session" {
		_ = nc.Reject(ssh.UnknownChannelType, "session only")
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	for req := range reqs {
		if mode == stallRequests {
			continue // never answered
		}
		var arg struct{ S string }
		_ = ssh.Unmarshal(req.Payload, &arg)
		arg.S = strings.TrimPrefix(arg.S, hostkit.PIDLine) // Execute's pid line: see execSSH
		switch {
		case req.Type == "exec" && arg.S == "true":
			_ = req.Reply(true, nil)
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
			ch.Close()
		case req.Type == "exec" && arg.S == "freeze":
			_ = req.Reply(true, nil)
			p.frozen.freeze()
		case req.Type == "subsystem" && arg.S == "sftp":
			_ = req.Reply(true, nil)
			srv := sftp.NewRequestServer(ch, p.files)
			p.wg.Go(func() {
				_ = srv.Serve()
				srv.Close()
			})
		default:
			_ = req.Reply(false, nil)
		}
	}
	p.chanClosed <- struct{}{}
}

// stuckCall is a call that must end at its context's deadline.
type stuckCall struct {
	name string
	call func(ctx context.Context) error
}

// hostCalls are the calls of h that dial, open a session or SFTP.
func hostCalls(t *testing.T, h *hostkit.Host) []stuckCall {
	local := filepath.Join(t.TempDir(), "up")
	require.NoError(t, os.WriteFile(local, []byte("up"), 0o644))
	down := filepath.Join(t.TempDir(), "down")
	return []stuckCall{
		{"Execute", func(ctx context.Context) error { _, err := h.Execute(ctx, "true"); return err }},
		{"Shell", func(ctx context.Context) error { return h.Shell(ctx, nil, io.Discard, io.Discard) }},
		{"ReadFile", func(ctx context.Context) error { _, err := h.ReadFile(ctx, "/f"); return err }},
		{"WriteFile", func(ctx context.Context) error { return h.WriteFile(ctx, "/f", []byte("x"), 0o600) }},
		{"Upload", func(ctx context.Context) error { return h.Upload(ctx, local, "/up") }},
		{"Download", func(ctx context.Context) error { return h.Download(ctx, "/f", down) }},
		{"FS", func(ctx context.Context) error {
			fsys, err := h.FS(ctx)
			if err != nil {
				return err
			}
			_, err = fs.Stat(fsys, "f")
			return err
		}},
	}
}

// runStuck runs calls at once, each with a deadline stuckDeadline from now
// (or its own), and checks that each ends with an error wrapping
// context.DeadlineExceeded within stuckBound of its deadline, naming the
// host when host is not empty.
func runStuck(t *testing.T, host string, calls []stuckCall) {
	t.Helper()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(calls))
	for _, c := range calls {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), stuckDeadline)
			defer cancel()
			results <- result{c.name, c.call(ctx)}
		}()
	}
	bound := time.NewTimer(stuckDeadline + stuckBound)
	defer bound.Stop()
	blocked := map[string]bool{}
	for _, c := range calls {
		blocked[c.name] = true
	}
	for range calls {
		select {
		case r := <-results:
			delete(blocked, r.name)
			assert.ErrorIs(t, r.err, context.DeadlineExceeded, r.name)
			if r.err != nil && host != "" {
				assert.Contains(t, r.err.Error(), host, r.name)
			}
		case <-bound.C:
			t.Fatalf("still blocked %v after their deadline: %v", stuckBound, slices.Sorted(maps.Keys(blocked)))
		}
	}
}

// closeWithin checks that h.Close returns within stuckBound.
func closeWithin(t *testing.T, h *hostkit.Host) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- h.Close() }()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(stuckBound):
		t.Fatalf("Host.Close still blocked after %v", stuckBound)
	}
}

// TestStuckPeer: a peer that completes the handshake and then withholds its
// answers (channel opens, then the exec and subsystem requests, then
// everything once frozen mid-command) cannot hold a call past its
// deadline, nor Close; nothing is left running.
func TestStuckPeer(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode stall
	}{
		{"channel open never answered", stallOpen},
		{"requests never answered", stallRequests},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			p := newFakePeer(t, func(int) stall { return tc.mode })
			h := newHost(t, p.config())
			runStuck(t, "test-host", hostCalls(t, h))
			closeWithin(t, h)
		})
	}

	t.Run("close after freeze", func(t *testing.T) {
		leakcheck.Check(t)
		p := newFakePeer(t, func(int) stall { return answer })
		h := newHost(t, p.config())
		_, err := h.ReadFile(testCtx(t), "/missing")
		require.ErrorIs(t, err, fs.ErrNotExist)
		p.frozen.freeze()
		closeWithin(t, h)
	})

	t.Run("frozen after use", func(t *testing.T) {
		leakcheck.Check(t)
		p := newFakePeer(t, func(int) stall { return answer })
		h := newHost(t, p.config())
		ctx := testCtx(t)
		_, err := h.Execute(ctx, "true")
		require.NoError(t, err)
		require.NoError(t, h.WriteFile(ctx, "/f", []byte("content"), 0o644))
		got, err := h.ReadFile(ctx, "/f")
		require.NoError(t, err)
		require.Equal(t, "content", string(got))

		// An FS and a file opened before the freeze, whose calls then end
		// at the FS's deadline.
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		fsys, err := h.FS(fctx)
		require.NoError(t, err)
		f, err := fsys.Open("f")
		require.NoError(t, err)
		defer f.Close()

		// The server freezes once it has started the command: Execute
		// waits for the command's end.
		_, err = runOne(t, func(ctx context.Context) (hostkit.Result, error) { return h.Execute(ctx, "freeze") })
		assert.ErrorIs(t, err, context.DeadlineExceeded)

		calls := hostCalls(t, h)
		fsCalls := []stuckCall{
			{"fs.Stat", func(context.Context) error { _, err := fs.Stat(fsys, "f"); return err }},
			{"fs.Open", func(context.Context) error { _, err := fsys.Open("f"); return err }},
			{"fs.ReadDir", func(context.Context) error { _, err := fs.ReadDir(fsys, "."); return err }},
			{"fs.File.Read", func(context.Context) error { _, err := f.Read(make([]byte, 10)); return err }},
		}
		for _, c := range fsCalls {
			calls = append(calls, stuckCall{c.name, func(context.Context) error { return c.call(fctx) }})
		}
		runStuck(t, "", calls)
		closeWithin(t, h)
	})
}

// runOne runs call with a deadline stuckDeadline from now and fails the
// test if it has not returned within stuckBound of it.
func runOne[T any](t *testing.T, call func(ctx context.Context) (T, error)) (T, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stuckDeadline)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := call(ctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-time.After(stuckDeadline + stuckBound):
		t.Fatalf("call still blocked %v after its deadline", stuckBound)
		panic("unreachable")
	}
}

// TestStuckPeerConnectionClosed: a call given up on that the peer still
// leaves unanswered a while later closes the connection on its own (no
// Close), so nothing waits on a stuck peer for ever; the next call dials
// again.
func TestStuckPeerConnectionClosed(t *testing.T) {
	leakcheck.Check(t)
	p := newFakePeer(t, func(conn int) stall {
		if conn == 0 {
			return frozen
		}
		return answer
	})
	var d countingDialer
	h := newHost(t, withDial(p.config(), d.dial))
	hostkit.SetStuckAfter(h, 300*time.Millisecond)

	_, err := runOne(t, func(ctx context.Context) (hostkit.Result, error) { return h.Execute(ctx, "true") })
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// The next call waits on the stuck connection until h closes it, then
	// dials again.
	bctx, cancel := context.WithTimeout(context.Background(), stuckBound)
	defer cancel()
	res, err := h.Execute(bctx, "true")
	require.NoError(t, err, "the stuck connection is still open")
	ctx := testCtx(t)
	assert.Equal(t, 0, res.Status)
	require.NoError(t, h.WriteFile(ctx, "/f", []byte("again"), 0o644))
	got, err := h.ReadFile(ctx, "/f")
	require.NoError(t, err)
	assert.Equal(t, "again", string(got))
	assert.Equal(t, int64(2), d.n.Load(), "TCP connections dialed")
}

// TestLateOpenClosed: a channel open answered after its call gave up is
// closed when the answer arrives; the connection, which answers, is kept.
func TestLateOpenClosed(t *testing.T) {
	leakcheck.Check(t)
	p := newFakePeer(t, func(int) stall { return lateOpen })
	var d countingDialer
	h := newHost(t, withDial(p.config(), d.dial))

	_, err := runOne(t, func(ctx context.Context) (hostkit.Result, error) { return h.Execute(ctx, "true") })
	require.ErrorIs(t, err, context.DeadlineExceeded)
	close(p.release)
	select {
	case <-p.chanClosed:
	case <-time.After(stuckBound):
		t.Fatal("the session opened late was not closed")
	}

	res, err := h.Execute(testCtx(t), "true")
	require.NoError(t, err)
	assert.Equal(t, 0, res.Status)
	assert.Equal(t, int64(1), d.n.Load(), "TCP connections dialed")
	select {
	case <-p.ended:
		t.Fatal("the connection was closed")
	default:
	}
}

// TestCancelKeepsConnection: a command cancelled on a healthy connection
// leaves the other sessions on it alone, even long after the stuck bound.
func TestCancelKeepsConnection(t *testing.T) {
	srv := sshtest.Start(t)
	var d countingDialer
	h := newHost(t, withDial(srv.Config(), d.dial))
	hostkit.SetStuckAfter(h, 100*time.Millisecond)
	ctx := testCtx(t)
	run(t, h, "true")

	long := make(chan error, 1)
	go func() {
		res, err := h.Execute(ctx, "sleep 1; echo done")
		if err == nil && res.Stdout != "done\n" {
			err = io.ErrUnexpectedEOF
		}
		long <- err
	}()
	for range 3 {
		_, err := h.Execute(ctx, "sleep 5", hostkit.WithTimeout(50*time.Millisecond))
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	require.NoError(t, <-long)
	assert.Equal(t, "ok\n", run(t, h, "echo ok"))
	assert.Equal(t, int64(1), d.n.Load(), "TCP connections dialed")
}

// sshdSessions returns the sshd processes serving srv's connections: the
// sshd processes below the listening one.
func sshdSessions(t *testing.T, srv *sshtest.Server) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(srv.Dir, "sshd.pid"))
	require.NoError(t, err)
	listener, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	var out []int
	queue := []int{listener}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			comm, _ := os.ReadFile("/proc/" + strconv.Itoa(c) + "/comm")
			if strings.HasPrefix(string(comm), "sshd") {
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out
}

// TestStuckSSHD: OpenSSH's sshd stopped (SIGSTOP) after the connections
// are up, as on a paused container: calls end at their deadline, Close
// returns, and once sshd runs again (SIGCONT) the next call works over a
// new connection, the stuck one having been closed.
func TestStuckSSHD(t *testing.T) {
	leakcheck.Check(t)
	srv := sshtest.Start(t)
	var d countingDialer
	h := newHost(t, withDial(srv.Config(), d.dial))
	hostkit.SetStuckAfter(h, 300*time.Millisecond)
	h2 := newHost(t, srv.Config())
	ctx := testCtx(t)
	run(t, h, "true")
	_, err := h.ReadFile(ctx, "/etc/hostname")
	require.NoError(t, err)
	_, err = h2.ReadFile(ctx, "/etc/hostname")
	require.NoError(t, err)

	pids := sshdSessions(t, srv)
	require.NotEmpty(t, pids)
	signal := func(sig syscall.Signal) {
		for _, pid := range pids {
			_ = syscall.Kill(pid, sig)
		}
	}
	signal(syscall.SIGSTOP)
	stopped := true
	t.Cleanup(func() {
		if stopped {
			signal(syscall.SIGCONT)
		}
	})

	closeWithin(t, h2)
	runStuck(t, "test-host", []stuckCall{
		{"Execute", func(ctx context.Context) error { _, err := h.Execute(ctx, "true"); return err }},
		{"ReadFile", func(ctx context.Context) error { _, err := h.ReadFile(ctx, "/etc/hostname"); return err }},
		{"WriteFile", func(ctx context.Context) error { return h.WriteFile(ctx, "/tmp/x", nil, 0o600) }},
	})

	// h closes its stuck connection on its own: its next call dials a new
	// one, which the stopped processes do not serve.
	res, err := h.Execute(ctx, "echo back")
	require.NoError(t, err)
	assert.Equal(t, "back\n", res.Stdout)
	signal(syscall.SIGCONT)
	stopped = false
	assert.Equal(t, "again\n", run(t, h, "echo again"))
	_, err = h.ReadFile(ctx, "/etc/hostname")
	require.NoError(t, err)
	assert.Equal(t, int64(2), d.n.Load(), "TCP connections dialed")
}

// A cancelled command is killed on the host, with what it started, and its
// output so far is returned: sshd refuses signals to root's sessions, so
// the kill goes through a session of its own.
func TestCancelKillsCommand(t *testing.T) {
	srv := sshtest.Start(t)
	h := newHost(t, srv.Config())
	// Cancelled once the command runs its sleeps (not after a fixed time,
	// which a loaded machine may spend starting the shell). The output it
	// wrote before may still be on its way from sshd at that moment: then
	// what came is a prefix of it, and the test tries again.
	for attempt := 1; ; attempt++ {
		tag := fmt.Sprintf("37.%d%06d", attempt, time.Now().UnixNano()%1000000)
		ctx, cancel := context.WithCancel(testCtx(t))
		go func() {
			defer cancel()
			for ctx.Err() == nil && len(processesWith(nil, "sleep "+tag)) < 2 {
				time.Sleep(10 * time.Millisecond)
			}
		}()
		res, err := h.Execute(ctx, "echo started; echo to-stderr >&2; sleep "+tag+" & sleep "+tag+"; wait")
		cancel()
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, -1, res.Status)
		assert.Eventually(t, func() bool { return len(processesWith(t, "sleep "+tag)) == 0 }, time.Minute, 50*time.Millisecond,
			"the command and its child are killed: %v left", processesWith(t, "sleep "+tag))
		require.True(t, strings.HasPrefix("started\n", res.Stdout), "output so far: %q", res.Stdout)
		require.True(t, strings.HasPrefix("to-stderr\n", res.Stderr), "stderr so far, without the pid line: %q", res.Stderr)
		if res.Stdout == "started\n" && res.Stderr == "to-stderr\n" {
			break
		}
		require.Less(t, attempt, 5, "the output written before the cancel never came with the result")
		t.Logf("attempt %d: cancelled before its output came (%+v): again", attempt, res)
	}
	// The host stays usable, and stderr carries no pid line.
	res, err := h.Execute(testCtx(t), "echo out; echo err >&2")
	require.NoError(t, err)
	assert.Equal(t, hostkit.Result{Stdout: "out\n", Stderr: "err\n"}, res)
}

// processesWith returns the pids of processes whose command line is cmd.
// With t nil (off the test's goroutine), an unreadable /proc finds none.
func processesWith(t *testing.T, cmd string) []int {
	ents, err := os.ReadDir("/proc")
	if t != nil {
		t.Helper()
		require.NoError(t, err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ") == cmd {
			pids = append(pids, pid)
		}
	}
	return pids
}
