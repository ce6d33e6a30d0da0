package container

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// frame is one frame of the engine's stream framing.
func frame(kind byte, payload string) []byte {
	b := make([]byte, 8, 8+len(payload))
	b[0] = kind
	binary.BigEndian.PutUint32(b[4:], uint32(len(payload)))
	return append(b, payload...)
}

// pipeStream is a streamConn over one end of a net.Pipe; the other end is
// the engine's.
func pipeStream(t *testing.T) (*streamConn, net.Conn) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return newStreamConn(a, bufio.NewReader(a), "0123456789abcdef"), b
}

// TestStreamConnDemux: stdout comes out whole whatever the engine's frames
// and write sizes; stderr and the engine's errors are kept, not returned;
// the end of the stream is io.EOF between frames and
// io.ErrUnexpectedEOF inside one.
func TestStreamConnDemux(t *testing.T) {
	for _, chunk := range []int{1, 3, 8, 9, 1000} {
		sc, eng := pipeStream(t)
		var wire []byte
		wire = append(wire, frame(frameStdout, "SSH-2.0-x\r\n")...)
		wire = append(wire, frame(frameStderr, "log line\n")...)
		wire = append(wire, frame(frameStdout, "")...)
		wire = append(wire, frame(frameStdout, strings.Repeat("d", 5000))...)
		wire = append(wire, frame(frameSyserr, "engine says no")...)
		wire = append(wire, frame(frameStdout, "end")...)
		go func() {
			for i := 0; i < len(wire); i += chunk {
				if _, err := eng.Write(wire[i:min(i+chunk, len(wire))]); err != nil {
					return
				}
			}
			eng.Close()
		}()
		got, err := io.ReadAll(sc)
		if err != nil {
			t.Fatalf("chunk %d: %v", chunk, err)
		}
		if want := "SSH-2.0-x\r\n" + strings.Repeat("d", 5000) + "end"; string(got) != want {
			t.Errorf("chunk %d: stdout %d bytes %.20q…, want %d bytes", chunk, len(got), got, len(want))
		}
		if s := sc.Stderr(); s != "log line\nengine says no" {
			t.Errorf("chunk %d: stderr %q", chunk, s)
		}
	}

	sc, eng := pipeStream(t)
	go func() {
		eng.Write(frame(frameStdout, "abc")[:9]) // header and 1 of 3 bytes
		eng.Close()
	}()
	if got, err := io.ReadAll(sc); !errors.Is(err, io.ErrUnexpectedEOF) || string(got) != "a" {
		t.Errorf("stream cut inside a frame: %q, %v; want \"a\" and io.ErrUnexpectedEOF", got, err)
	}

	sc, eng = pipeStream(t)
	go func() {
		eng.Write([]byte("SSH-2.0-OpenSSH\r\n")) // a TTY's raw stream
		eng.Close()
	}()
	if _, err := io.ReadAll(sc); err == nil || !strings.Contains(err.Error(), "framing") {
		t.Errorf("unframed stream: %v; want an error saying it is not the engine's framing", err)
	}
}

// TestStreamConnDeadline: a read deadline cuts a read anywhere (inside a
// header, inside a payload) without losing the stream's place: the next
// read goes on where it stopped.
func TestStreamConnDeadline(t *testing.T) {
	sc, eng := pipeStream(t)
	f := frame(frameStdout, "hello")
	buf := make([]byte, 16)
	for _, cut := range []int{3, 10} { // inside the header, inside the payload
		go eng.Write(f[:cut])
		want := ""
		if cut > 8 {
			want = string(f[8:cut])
			n, err := sc.Read(buf)
			if err != nil || string(buf[:n]) != want {
				t.Fatalf("cut %d: read %q, %v; want %q", cut, buf[:n], err, want)
			}
		}
		_ = sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := sc.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("cut %d: read past the deadline: %v; want os.ErrDeadlineExceeded", cut, err)
		}
		_ = sc.SetReadDeadline(time.Time{})
		go eng.Write(f[cut:])
		var got bytes.Buffer
		for got.Len() < len("hello")-len(want) {
			n, err := sc.Read(buf)
			if err != nil {
				t.Fatalf("cut %d: read after the deadline: %v", cut, err)
			}
			got.Write(buf[:n])
		}
		if want+got.String() != "hello" {
			t.Errorf("cut %d: %q then %q, want hello", cut, want, got.String())
		}
	}
}

// TestStreamConnClose: Close half-closes first (the process's stdin ends),
// closes, and is idempotent; writes reach the engine as they are.
func TestStreamConnClose(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	hw := &halfConn{Conn: a}
	sc := newStreamConn(hw, bufio.NewReader(hw), "c")
	go func() { sc.Write([]byte("raw")) }()
	got := make([]byte, 3)
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "raw" {
		t.Fatalf("write: %q, %v", got, err)
	}
	sc.Close()
	sc.Close()
	if hw.halfClosed != 1 || hw.closed != 1 {
		t.Errorf("CloseWrite %d times, Close %d times; want once each", hw.halfClosed, hw.closed)
	}
}

type halfConn struct {
	net.Conn
	halfClosed, closed int
}

func (c *halfConn) CloseWrite() error { c.halfClosed++; return nil }
func (c *halfConn) Close() error      { c.closed++; return c.Conn.Close() }
