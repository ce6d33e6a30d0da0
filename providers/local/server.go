package local

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// markerVar is set in the environment of every command of a host, to its
// id, so that check-in can find the host's processes wherever they went.
const markerVar = "BROKER_LOCAL_HOST"

// handshakeTimeout bounds a client's SSH handshake, so that a silent peer
// cannot hold a goroutine.
const handshakeTimeout = 30 * time.Second

// server is the SSH server of one Local host. It runs in this process and
// serves until close.
type server struct {
	id    string
	dir   string // the host's directory; its removal stops the server
	home  string
	shell string
	env   []string // base environment of every command
	cfg   *ssh.ServerConfig
	ln    net.Listener
	log   *slog.Logger

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	groups map[int]struct{} // process groups started and maybe still alive
	ran    bool             // a command was started: its processes may be anywhere
	wg     sync.WaitGroup   // every goroutine of the server
	onStop func()           // called once when the server stops by itself
}

// serverOptions are what a server is made of.
type serverOptions struct {
	id, dir, home, shell string
	env                  []string
	hostKey              ssh.Signer
	clientKeys           []ssh.PublicKey // keys that may log in
	ln                   net.Listener
	log                  *slog.Logger
}

func newServer(o serverOptions) *server {
	wanted := make([][]byte, len(o.clientKeys))
	for i, k := range o.clientKeys {
		wanted[i] = k.Marshal()
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			got := key.Marshal()
			for _, want := range wanted {
				if bytes.Equal(got, want) {
					return nil, nil
				}
			}
			return nil, errors.New("unknown public key")
		},
		ServerVersion: "SSH-2.0-brokertest-local",
	}
	cfg.AddHostKey(o.hostKey)
	return &server{
		id: o.id, dir: o.dir, home: o.home, shell: o.shell, env: o.env,
		cfg: cfg, ln: o.ln, log: o.log,
		conns:  map[net.Conn]struct{}{},
		groups: map[int]struct{}{},
	}
}

// start serves connections until close.
func (s *server) start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return // listener closed
			}
			if !s.alive() {
				c.Close()
				go s.stopSelf()
				return
			}
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				c.Close()
				return
			}
			s.conns[c] = struct{}{}
			s.wg.Add(1)
			s.mu.Unlock()
			go func() {
				defer s.wg.Done()
				s.serveConn(c)
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
		}
	}()
}

// alive reports whether the host's directory still exists: a host checked
// in by another process (its directory removed) stops serving.
func (s *server) alive() bool {
	_, err := os.Stat(s.dir)
	return err == nil
}

// stopSelf stops a server whose host was checked in elsewhere.
func (s *server) stopSelf() {
	s.close()
	if s.onStop != nil {
		s.onStop()
	}
}

// close stops the server: no new connections, every connection closed,
// every process of the host killed; it returns when all goroutines ended.
// It may be called more than once.
func (s *server) close() {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	groups := make([]int, 0, len(s.groups))
	for g := range s.groups {
		groups = append(groups, g)
	}
	s.groups = map[int]struct{}{}
	ran := s.ran
	s.mu.Unlock()
	if !already {
		s.ln.Close()
	}
	for _, g := range groups {
		_ = syscall.Kill(-g, syscall.SIGKILL)
	}
	if ran {
		killMarked(s.id) // those that left their group (setsid daemons)
	}
	s.wg.Wait()
}

// go runs f as a goroutine of the server, or not at all once it is closed.
func (s *server) goroutine(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *server) serveConn(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	conn, chans, reqs, err := ssh.NewServerConn(c, s.cfg)
	if err != nil {
		s.log.Debug("local: ssh handshake failed", "host", s.id, "err", err)
		return
	}
	_ = c.SetDeadline(time.Time{})
	defer conn.Close()
	s.goroutine(func() { ssh.DiscardRequests(reqs) })
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only session channels are served")
			continue
		}
		if !s.alive() {
			_ = nc.Reject(ssh.ConnectionFailed, "host checked in")
			go s.stopSelf()
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		sess := &session{srv: s, ch: ch, abort: make(chan struct{})}
		s.goroutine(func() { sess.serve(creqs) })
	}
}

// dropGroup forgets a process group that has no member left.
func (s *server) dropGroup(pgid int) {
	if syscall.Kill(-pgid, 0) != syscall.ESRCH {
		return // background members remain: killed at check-in
	}
	s.mu.Lock()
	delete(s.groups, pgid)
	s.mu.Unlock()
}

// session is one "session" channel: one command, shell or subsystem.
type session struct {
	srv   *server
	ch    ssh.Channel
	env   []string
	pty   *ptyRequest
	abort chan struct{} // closed when the channel is gone
	// afterReply, set by the request that started the command, runs once
	// that request is answered (only the serve goroutine touches it).
	afterReply func()

	mu      sync.Mutex
	started bool
	proc    *os.Process
	exited  bool
	master  *os.File // pty master, when a pty was requested
	tty     string   // the name of its slave, the command's terminal
}

type ptyRequest struct {
	Term       string
	Cols, Rows uint32
	W, H       uint32
	Modes      string
}

// serve handles the channel's requests until the client closes it or the
// connection ends, then kills the command if it still runs.
func (ss *session) serve(reqs <-chan *ssh.Request) {
	for req := range reqs {
		ok := ss.handle(req)
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
		if f := ss.afterReply; f != nil {
			ss.afterReply = nil
			f()
		}
	}
	close(ss.abort)
	ss.mu.Lock()
	if ss.proc != nil && !ss.exited {
		// Closed early: the client went away while the command ran.
		_ = syscall.Kill(-ss.proc.Pid, syscall.SIGKILL)
	}
	ss.mu.Unlock()
	_ = ss.ch.Close()
}

func (ss *session) handle(req *ssh.Request) bool {
	switch req.Type {
	case "env":
		var kv struct{ Name, Value string }
		if ssh.Unmarshal(req.Payload, &kv) != nil || !validEnvName(kv.Name) {
			return false
		}
		ss.mu.Lock()
		ss.env = append(ss.env, kv.Name+"="+kv.Value)
		ss.mu.Unlock()
		return true
	case "pty-req":
		var p ptyRequest
		if ssh.Unmarshal(req.Payload, &p) != nil {
			return false
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.started {
			return false
		}
		ss.pty = &p
		return true
	case "window-change":
		var w struct{ Cols, Rows, W, H uint32 }
		if ssh.Unmarshal(req.Payload, &w) != nil {
			return false
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.master == nil {
			return false
		}
		return resizeTerminal(ss.tty, w.Cols, w.Rows) == nil
	case "exec":
		var c struct{ Command string }
		if ssh.Unmarshal(req.Payload, &c) != nil {
			return false
		}
		return ss.start(exec.Command(ss.srv.shell, "-c", c.Command))
	case "shell":
		return ss.start(exec.Command(ss.srv.shell))
	case "subsystem":
		var sub struct{ Name string }
		if ssh.Unmarshal(req.Payload, &sub) != nil || sub.Name != "sftp" {
			return false
		}
		return ss.startSFTP()
	case "signal":
		var sig struct{ Signal string }
		if ssh.Unmarshal(req.Payload, &sig) != nil {
			return false
		}
		n, ok := signals[ssh.Signal(sig.Signal)]
		if !ok {
			return false
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.proc == nil || ss.exited {
			return false
		}
		return syscall.Kill(-ss.proc.Pid, n) == nil
	}
	return false
}

// claim marks the session as started; only one command per session.
func (ss *session) claim() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.started {
		return false
	}
	ss.started = true
	return true
}

func (ss *session) environ() []string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	env := make([]string, 0, len(ss.srv.env)+len(ss.env)+2)
	env = append(env, ss.srv.env...)
	if ss.pty != nil && ss.pty.Term != "" {
		env = append(env, "TERM="+ss.pty.Term)
	}
	env = append(env, ss.env...)
	// Last, so that no client can drop it: check-in finds processes by it.
	return append(env, markerVar+"="+ss.srv.id)
}

// start runs cmd for the session: in its own process group, with pipes or
// with a pty when one was requested.
func (ss *session) start(cmd *exec.Cmd) bool {
	if !ss.claim() {
		return false
	}
	cmd.Dir = ss.srv.home
	cmd.Env = ss.environ()
	std, ok := ss.openStdio(cmd)
	if !ok {
		return false
	}

	// Register the group under the server's lock, so that a check-in either
	// sees it or prevents the start.
	ss.srv.mu.Lock()
	if ss.srv.closed {
		ss.srv.mu.Unlock()
		std.close()
		return false
	}
	err := cmd.Start()
	if err == nil {
		ss.srv.groups[cmd.Process.Pid] = struct{}{}
		ss.srv.ran = true
	}
	ss.srv.mu.Unlock()
	for _, f := range std.child {
		f.Close()
	}
	if err != nil {
		ss.srv.log.Debug("local: start command", "host", ss.srv.id, "err", err)
		std.close()
		return false
	}
	ss.mu.Lock()
	ss.proc = cmd.Process
	if ss.pty != nil {
		ss.master, ss.tty = std.outputs[0], std.tty
	}
	ss.mu.Unlock()

	// The channel must stay open until the request is answered: a quick
	// command would otherwise report and close before the reply, and the
	// client would see EOF instead of its result.
	ss.afterReply = func() {
		ss.srv.goroutine(func() {
			_, _ = io.Copy(std.stdin, ss.ch)
			if ss.pty == nil {
				std.stdin.Close() // EOF to the command; a pty master is closed below
			}
		})
		var copies sync.WaitGroup
		for i, f := range std.outputs {
			w := io.Writer(ss.ch)
			if i == 1 {
				w = ss.ch.Stderr()
			}
			copies.Go(func() { _, _ = io.Copy(w, f) })
		}
		ss.srv.goroutine(func() { ss.wait(cmd, std.outputs, &copies) })
	}
	return true
}

// stdio is a command's standard files: the ends it is given, and the ends
// the session keeps.
type stdio struct {
	child   []*os.File // the command's ends, closed once it started
	outputs []*os.File // read by copy goroutines: stdout and stderr, or a pty master
	stdin   *os.File   // written from the channel
	tty     string     // the pty slave's name, with a pty
}

// close closes every end, the command's included.
func (std *stdio) close() {
	for _, f := range append(append(std.child, std.outputs...), std.stdin) {
		if f != nil {
			f.Close()
		}
	}
}

// openStdio sets cmd's standard files and process attributes: a pty (the
// command leads a session whose terminal it is) when the client asked for
// one, else three pipes (the command leads a process group).
func (ss *session) openStdio(cmd *exec.Cmd) (*stdio, bool) {
	if ss.pty != nil {
		master, slave, err := openPTY()
		if err != nil {
			ss.srv.log.Debug("local: pty", "host", ss.srv.id, "err", err)
			return nil, false
		}
		_ = setWinsize(slave, ss.pty.Cols, ss.pty.Rows)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = ttyAttr()
		return &stdio{child: []*os.File{slave}, outputs: []*os.File{master}, stdin: master, tty: slave.Name()}, true
	}
	var ends [6]*os.File // read and write ends of stdin, stdout and stderr
	for i := 0; i < len(ends); i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			for _, f := range ends[:i] {
				f.Close()
			}
			return nil, false
		}
		ends[i], ends[i+1] = r, w
	}
	inR, inW, outR, outW, errR, errW := ends[0], ends[1], ends[2], ends[3], ends[4], ends[5]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = groupAttr()
	return &stdio{child: []*os.File{inR, outW, errW}, outputs: []*os.File{outR, errR}, stdin: inW}, true
}

// wait waits for the command and its output, then reports its exit status
// and closes the channel.
func (ss *session) wait(cmd *exec.Cmd, outputs []*os.File, copies *sync.WaitGroup) {
	err := cmd.Wait()
	ss.mu.Lock()
	ss.exited = true
	ss.mu.Unlock()
	done := make(chan struct{})
	go func() { copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-ss.abort:
		// The client is gone: stop reading output nobody will get.
	}
	for _, f := range outputs {
		f.Close()
	}
	<-done
	ss.srv.dropGroup(cmd.Process.Pid)

	var ee *exec.ExitError
	st := cmd.ProcessState
	switch {
	case st != nil:
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			_, _ = ss.ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
				Signal     string
				CoreDumped bool
				Error      string
				Lang       string
			}{signalName(ws.Signal()), ws.CoreDump(), "", ""}))
		} else {
			_, _ = ss.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(st.ExitCode())}))
		}
	case errors.As(err, &ee):
		_, _ = ss.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(ee.ExitCode())}))
	}
	_ = ss.ch.CloseWrite()
	_ = ss.ch.Close()
}

// startSFTP serves the sftp subsystem on the channel, relative paths from
// the host's home.
func (ss *session) startSFTP() bool {
	if !ss.claim() {
		return false
	}
	srv, err := sftp.NewServer(ss.ch, sftp.WithServerWorkingDirectory(ss.srv.home))
	if err != nil {
		return false
	}
	ss.afterReply = func() { ss.srv.goroutine(func() { ss.serveSFTP(srv) }) }
	return true
}

func (ss *session) serveSFTP(srv *sftp.Server) {
	err := srv.Serve()
	status := uint32(0)
	if err != nil && !errors.Is(err, io.EOF) {
		status = 1
	}
	_ = srv.Close()
	_, _ = ss.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	_ = ss.ch.Close()
}

func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c == '=' || c == 0 {
			return false
		}
	}
	return true
}

// signals maps SSH signal names (RFC 4254 section 6.10) to this system's.
var signals = map[ssh.Signal]syscall.Signal{
	ssh.SIGABRT: syscall.SIGABRT,
	ssh.SIGALRM: syscall.SIGALRM,
	ssh.SIGFPE:  syscall.SIGFPE,
	ssh.SIGHUP:  syscall.SIGHUP,
	ssh.SIGILL:  syscall.SIGILL,
	ssh.SIGINT:  syscall.SIGINT,
	ssh.SIGKILL: syscall.SIGKILL,
	ssh.SIGPIPE: syscall.SIGPIPE,
	ssh.SIGQUIT: syscall.SIGQUIT,
	ssh.SIGSEGV: syscall.SIGSEGV,
	ssh.SIGTERM: syscall.SIGTERM,
	ssh.SIGUSR1: syscall.SIGUSR1,
	ssh.SIGUSR2: syscall.SIGUSR2,
}

// signalName is the SSH name of sig ("TERM"), or its number as text.
func signalName(sig syscall.Signal) string {
	for name, s := range signals {
		if s == sig {
			return string(name)
		}
	}
	return fmt.Sprint(int(sig))
}
