package hostkit

import (
	"net"
	"sync/atomic"
	"time"
)

// Why nudge: OpenSSH's sshd leaves Nagle's algorithm on for sessions
// without a pty, so when it writes two small packets in a row (during a
// login: the hostkeys announcement, then the session's replies) the second
// waits until the first is acknowledged. With nothing to send, the peer
// delays that ACK by up to 40 ms; the peer is our kernel, or, for a
// container's published port, the engine's proxy, which no socket option of
// ours reaches. A packet of ours carries the ACK through either, so a
// connection that stays silent after a small read sends a keepalive that
// wants no reply. The first command on a new connection to a container
// took ~40 ms less.
const (
	nudgeAfter = time.Millisecond // silence after a small read before nudging
	nudgeBelow = 1024             // reads this long or longer are bulk data: no nudge
)

// nudgeConn is a connection that calls nudge when it has read a small
// packet and has written nothing for nudgeAfter since.
type nudgeConn struct {
	net.Conn
	after time.Duration // nudgeAfter; longer in tests
	timer *time.Timer
	nudge atomic.Pointer[func()] // nil until the SSH connection is up
	busy  atomic.Bool            // a nudge is being sent
}

func newNudgeConn(c net.Conn) *nudgeConn {
	n := &nudgeConn{Conn: c, after: nudgeAfter}
	n.timer = time.AfterFunc(time.Hour, n.fire)
	n.timer.Stop()
	return n
}

// start arms the connection with the function that sends a nudge, and
// nudges soon unless we write: the handshake's last packets, or a request
// the server sent right after them, may have been read before start.
func (n *nudgeConn) start(nudge func()) {
	n.nudge.Store(&nudge)
	n.timer.Reset(n.after)
}

func (n *nudgeConn) Read(p []byte) (int, error) {
	k, err := n.Conn.Read(p)
	if k > 0 && k < nudgeBelow && n.nudge.Load() != nil {
		n.timer.Reset(n.after)
	}
	return k, err
}

func (n *nudgeConn) Write(p []byte) (int, error) {
	n.timer.Stop() // our packet carries the ACK
	return n.Conn.Write(p)
}

func (n *nudgeConn) Close() error {
	n.nudge.Store(nil)
	n.timer.Stop()
	return n.Conn.Close()
}

func (n *nudgeConn) fire() {
	f := n.nudge.Load()
	if f == nil || !n.busy.CompareAndSwap(false, true) {
		return
	}
	defer n.busy.Store(false)
	(*f)()
}
