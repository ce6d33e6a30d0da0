package container

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// closedConn is a net.Conn that records Close.
type closedConn struct {
	net.Conn
	closed chan struct{}
}

func newClosedConn() *closedConn {
	a, b := net.Pipe()
	b.Close()
	return &closedConn{Conn: a, closed: make(chan struct{})}
}

func (c *closedConn) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	return c.Conn.Close()
}

func (c *closedConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func TestHandovers(t *testing.T) {
	var h handovers
	c := newClosedConn()
	h.put("a", "127.0.0.1:22", c)
	if got := h.take("a", "127.0.0.1:2222"); got != nil {
		t.Fatal("taken for another address")
	}
	if got := h.take("b", ""); got != nil {
		t.Fatal("taken for another id")
	}
	if got := h.take("a", "127.0.0.1:22"); got != c {
		t.Fatalf("take = %v, want the kept conn", got)
	}
	if got := h.take("a", ""); got != nil {
		t.Fatal("taken twice")
	}
	if c.isClosed() {
		t.Fatal("a taken conn was closed")
	}

	// Replaced, dropped, expired, closed with the provider: all closed.
	first, second := newClosedConn(), newClosedConn()
	h.put("a", "x", first)
	h.put("a", "x", second)
	if !first.isClosed() {
		t.Error("a replaced conn was left open")
	}
	h.drop("a")
	if !second.isClosed() {
		t.Error("drop left the conn open")
	}
	h.ttl = 10 * time.Millisecond
	expiring := newClosedConn()
	h.put("e", "x", expiring)
	select {
	case <-expiring.closed:
	case <-time.After(10 * time.Second):
		t.Error("an untaken conn outlived its TTL")
	}
	if h.take("e", "") != nil {
		t.Error("an expired conn was still kept")
	}
	h.ttl = time.Hour
	kept := newClosedConn()
	h.put("k", "x", kept)
	h.closeAll()
	if !kept.isClosed() || h.take("k", "") != nil {
		t.Error("closeAll left a conn")
	}
}

// TestDialerTakesOnce: the dialer returns the kept connection once, then
// dials.
func TestDialerTakesOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var h handovers
	kept := newClosedConn()
	addr := ln.Addr().String()
	h.put("a", addr, kept)
	dial := h.dialer("a")
	ctx := context.Background()
	c1, err := dial(ctx, "tcp", addr)
	if err != nil || c1 != net.Conn(kept) {
		t.Fatalf("first dial: %v, %v; want the kept conn", c1, err)
	}
	c2, err := dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if c2 == net.Conn(kept) {
		t.Fatal("second dial returned the kept conn again")
	}
}

func TestReplayConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() { _, _ = b.Write([]byte("rest")); b.Close() }()
	c := &replayConn{Conn: a, r: io.MultiReader(strings.NewReader("SSH-2.0-x\r\n"), a)}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "SSH-2.0-x\r\nrest" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// TestWaitBannerEndsDuringAliveCheck: when the wait for sshd ends while the
// engine is being asked whether the container runs (a slow engine on a
// loaded machine), the error is the wait's end, naming ssh_wait, not the
// engine call cut short.
func TestWaitBannerEndsDuringAliveCheck(t *testing.T) {
	// A port that accepts and never speaks: no banner ever.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	slowEngine := func(ctx context.Context) error {
		<-ctx.Done() // answers only when the wait has ended
		return ctx.Err()
	}
	_, err = waitBanner(context.Background(), l.Addr().String(), 400*time.Millisecond, slowEngine)
	if err == nil || !strings.Contains(err.Error(), "no SSH banner within") {
		t.Errorf("error %v; want the end of ssh_wait", err)
	}
}
