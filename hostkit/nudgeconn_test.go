package hostkit

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNudgeConn: a small read followed by silence nudges once; a small
// read answered by a write, a bulk read, or a read before start do not.
func TestNudgeConn(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	nc := newNudgeConn(client)
	nc.after = 100 * time.Millisecond // room for the test's own steps, even under -race
	defer nc.Close()
	var nudges atomic.Int32
	nudged := make(chan struct{}, 8)

	// feed makes the peer send n bytes and reads them through nc.
	feed := func(n int) {
		t.Helper()
		go func() { _, _ = server.Write(make([]byte, n)) }()
		_, err := io.ReadFull(nc, make([]byte, n))
		require.NoError(t, err)
	}
	// quiet waits well past the nudge delay and checks no nudge came.
	quiet := func(msg string) {
		t.Helper()
		select {
		case <-nudged:
			t.Fatalf("unexpected nudge: %s", msg)
		case <-time.After(5 * nc.after):
		}
	}
	go func() { _, _ = io.Copy(io.Discard, server) }()

	feed(64)
	quiet("before start")

	nc.start(func() { nudges.Add(1); nudged <- struct{}{} })
	waitNudge := func(msg string) {
		t.Helper()
		select {
		case <-nudged:
		case <-time.After(10 * time.Second):
			t.Fatalf("no nudge %s", msg)
		}
	}
	waitNudge("after start")
	feed(64)
	waitNudge("after a small read and silence")
	require.EqualValues(t, 2, nudges.Load())
	quiet("a second nudge for the same read")

	feed(64)
	_, err := nc.Write([]byte("reply"))
	require.NoError(t, err)
	quiet("after a write answered the read")

	feed(nudgeBelow)
	quiet("after a bulk read")

	go func() { _, _ = server.Write(make([]byte, 64)) }()
	_, err = nc.Read(make([]byte, 64)) // arms the timer
	require.NoError(t, err)
	require.NoError(t, nc.Close())
	quiet("after close")
	require.EqualValues(t, 2, nudges.Load())
}

// countingConn counts the reads that reach the connection.
type countingConn struct {
	net.Conn
	reads atomic.Int32
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}

// TestNudgeConnReadAhead: small reads are served from one read of the
// connection; every byte arrives once and in order, reads as large as the
// buffer go straight through, and the end of the stream follows the last
// byte.
func TestNudgeConnReadAhead(t *testing.T) {
	client, server := net.Pipe()
	cc := &countingConn{Conn: client}
	nc := newNudgeConn(cc)
	defer nc.Close()

	chunks := [][]byte{make([]byte, 10), make([]byte, 3*readAhead), make([]byte, 5)}
	var want []byte
	for i, c := range chunks {
		for j := range c {
			c[j] = byte(i*31 + j)
		}
		want = append(want, c...)
	}
	go func() {
		for _, c := range chunks {
			_, _ = server.Write(c)
		}
		server.Close()
	}()

	// Ten 1-byte reads of the first 10-byte write: one read of the pipe.
	var got []byte
	one := make([]byte, 1)
	for range 10 {
		k, err := nc.Read(one)
		require.NoError(t, err)
		got = append(got, one[:k]...)
	}
	require.EqualValues(t, 1, cc.reads.Load(), "ten small reads should take one read of the connection")

	// A read larger than the buffer goes straight through, then small ones.
	big := make([]byte, 2*readAhead)
	k, err := io.ReadFull(nc, big)
	require.NoError(t, err)
	require.EqualValues(t, 2, cc.reads.Load(), "a read larger than the buffer should be one read of the connection")
	got = append(got, big[:k]...)
	rest, err := io.ReadAll(io.LimitReader(nc, 1<<30))
	require.NoError(t, err)
	got = append(got, rest...)
	require.Equal(t, want, got)

	k, err = nc.Read(one)
	require.Zero(t, k)
	require.ErrorIs(t, err, io.EOF)
}
