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

// readAhead is the connection's read buffer. x/crypto/ssh reads through a
// 4 KiB bufio.Reader, which costs two read calls per 32 KiB packet of a
// transfer; one read of up to 64 KiB serves several packets, and downloads
// went ~10% faster (hostkit BenchmarkDownload with files in memory).
const readAhead = 64 << 10

// nudgeConn is a connection that calls nudge when it has read a small
// packet and has written nothing for nudgeAfter since. It reads ahead.
type nudgeConn struct {
	net.Conn
	after time.Duration // nudgeAfter; longer in tests
	timer *time.Timer
	nudge atomic.Pointer[func()] // nil until the SSH connection is up
	busy  atomic.Bool            // a nudge is being sent

	// Read's buffer: buf[head:end] is unread; rerr came with the last
	// bytes read and is returned once they are. x/crypto/ssh reads from
	// one goroutine, so these need no lock.
	buf       []byte
	head, end int
	rerr      error
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
	if n.head == n.end {
		if n.rerr != nil {
			err := n.rerr
			n.rerr = nil
			return 0, err
		}
		if len(p) >= readAhead {
			return n.read(p) // as large as the buffer: no copy
		}
		if n.buf == nil {
			n.buf = make([]byte, readAhead)
		}
		k, err := n.read(n.buf)
		if k == 0 {
			return 0, err
		}
		n.head, n.end, n.rerr = 0, k, err
	}
	k := copy(p, n.buf[n.head:n.end])
	n.head += k
	return k, nil
}

// read reads from the connection and arms the nudge after a small read.
func (n *nudgeConn) read(p []byte) (int, error) {
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
