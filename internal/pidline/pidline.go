// Package pidline reads the pid a command wrapper tells on the first line of
// its standard error, so that a cancelled command can be killed on a host
// whose remote protocol cannot signal it (an engine's exec, sshd for root).
package pidline

import (
	"bytes"
	"io"
	"strconv"
	"sync"
	"time"
)

// Marker starts the wrapper's first line on stderr: Marker, the pid, "\n".
const Marker = "@hostbroker-exec-pid "

// Writer passes stderr through to its destination, but takes out the
// wrapper's pid line: the first line that starts with Marker, within the
// first lookFor bytes (a login shell's start-up files may write lines
// before it). It is safe for concurrent use.
type Writer struct {
	w     io.Writer
	known chan struct{} // closed when pid is set or cannot be
	mu    sync.Mutex
	pid   int
	head  []byte // a line held back: it may be the pid line
	mid   bool   // the next byte is not at a line's start
	seen  int    // bytes written so far
	done  bool   // the pid line was found, or is not looked for any more
}

// lookFor bounds how far into stderr the pid line is looked for.
const lookFor = 64 << 10

// NewWriter returns a Writer passing stderr on to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, known: make(chan struct{})}
}

func (p *Writer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return p.w.Write(b)
	}
	n := len(b)
	p.seen += n
	data := append(p.head, b...)
	p.head = nil
	var out []byte
	for len(data) > 0 && !p.done {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if !p.mid && mayBeMarker(data) && p.seen <= lookFor {
				p.head = data // wait for the rest of the line
			} else {
				out = append(out, data...)
				p.mid = true
			}
			data = nil
			break
		}
		line := data[:i+1]
		data = data[i+1:]
		if !p.mid && bytes.HasPrefix(line, []byte(Marker)) {
			if pid, err := strconv.Atoi(string(bytes.TrimSpace(line[len(Marker):]))); err == nil {
				p.pid = pid
			}
			p.stop()
			continue
		}
		out = append(out, line...)
		p.mid = false
	}
	out = append(out, data...)
	if p.seen > lookFor && !p.done {
		out = append(out, p.head...)
		p.head = nil
		p.stop()
	}
	if len(out) > 0 {
		if _, err := p.w.Write(out); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// mayBeMarker reports whether an incomplete line may be the pid line.
func mayBeMarker(b []byte) bool {
	if len(b) <= len(Marker) {
		return bytes.HasPrefix([]byte(Marker), b)
	}
	return bytes.HasPrefix(b, []byte(Marker)) && len(b) < len(Marker)+24
}

func (p *Writer) stop() {
	if !p.done {
		p.done = true
		close(p.known)
	}
}

// Flush ends the stream: a line held back is written (it was not the pid
// line), and the pid is known to be missing if it was not found.
func (p *Writer) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.head) > 0 {
		_, _ = p.w.Write(p.head)
		p.head = nil
	}
	p.stop()
}

// Known is closed once the pid is known, or known to be missing.
func (p *Writer) Known() <-chan struct{} { return p.known }

// Wait waits up to d for the pid (a command cancelled as it starts has not
// told it yet) and returns it, or 0 when it is not known.
func (p *Writer) Wait(d time.Duration) int {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.known:
	case <-timer.C:
	}
	return p.PID()
}

// PID returns the pid read, or 0.
func (p *Writer) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// KillCommand is a POSIX shell command that kills the process group led by
// pid, or pid alone when it leads none.
func KillCommand(pid int) string {
	s := strconv.Itoa(pid)
	return "kill -KILL -" + s + " 2>/dev/null || kill -KILL " + s
}
