package container

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hostbroker/broker/hostkit"
)

// handoverTTL bounds how long a connection that proved sshd up waits for
// the host's first dial. Connect follows Checkout at once in a broker; a
// record connected later dials anew.
const handoverTTL = 10 * time.Second

// handovers keeps, per host id, the connection on which Checkout read
// sshd's banner, so the host's first SSH connection is that one: a second
// connection would cost sshd another fork and re-exec (~15 ms of a
// container's first command).
type handovers struct {
	ttl   time.Duration // handoverTTL when 0
	mu    sync.Mutex
	conns map[string]*handover
}

type handover struct {
	conn  net.Conn
	addr  string
	timer *time.Timer
}

// put keeps conn, read up to its banner, for host id's first dial of addr.
func (h *handovers) put(id, addr string, conn net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns == nil {
		h.conns = map[string]*handover{}
	}
	if old := h.conns[id]; old != nil {
		old.timer.Stop()
		old.conn.Close()
	}
	ho := &handover{conn: conn, addr: addr}
	ttl := h.ttl
	if ttl == 0 {
		ttl = handoverTTL
	}
	ho.timer = time.AfterFunc(ttl, func() {
		if c := h.take(id, ""); c != nil {
			c.Close()
		}
	})
	h.conns[id] = ho
}

// take removes and returns the connection kept for id, if it was made to
// addr ("" matches any).
func (h *handovers) take(id, addr string) net.Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	ho := h.conns[id]
	if ho == nil || (addr != "" && ho.addr != addr) {
		return nil
	}
	delete(h.conns, id)
	ho.timer.Stop()
	return ho.conn
}

// drop closes the connection kept for id, if any.
func (h *handovers) drop(id string) {
	if c := h.take(id, ""); c != nil {
		c.Close()
	}
}

// closeAll closes every kept connection.
func (h *handovers) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, ho := range h.conns {
		ho.timer.Stop()
		ho.conn.Close()
		delete(h.conns, id)
	}
}

// dialer is host id's dialer: the kept connection first, then new ones.
func (h *handovers) dialer(id string) hostkit.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if c := h.take(id, addr); c != nil {
			return c, nil
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// replayConn is a connection whose first reads return what a banner check
// already read from it, so an SSH client sees the whole stream.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }
