package invload

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is one started child process.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr bytes.Buffer
	ready  chan struct{} // closed on its "ready" line
	done   chan struct{} // closed when its stdout ends and it was waited for
	err    error         // its exit, once done

	mu  sync.Mutex
	ops []op
	bad []string // lines that were neither "ready" nor an op
}

// group is children started together and released at once.
type group struct {
	kids  []*child
	start time.Time // when they were told to go
}

// startGroup starts one child of bin per argument list. Each dies with the
// driver (Pdeathsig), and is killed when ctx ends.
func startGroup(ctx context.Context, bin string, argv [][]string) (*group, error) {
	g := &group{}
	for _, args := range argv {
		c := &child{ready: make(chan struct{}), done: make(chan struct{})}
		c.cmd = exec.CommandContext(ctx, bin, append([]string{ChildArg}, args...)...)
		c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		c.cmd.Stderr = &c.stderr
		c.cmd.WaitDelay = 5 * time.Second
		var err error
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			g.kill()
			return nil, err
		}
		stdout, err := c.cmd.StdoutPipe()
		if err != nil {
			g.kill()
			return nil, err
		}
		if err := c.cmd.Start(); err != nil {
			g.kill()
			return nil, fmt.Errorf("start %s: %w", bin, err)
		}
		g.kids = append(g.kids, c)
		go c.read(stdout)
	}
	return g, nil
}

// startReleased starts a group (startGroup) and lets it go once every
// child is ready; a group that does not get ready within a minute is
// killed.
func startReleased(ctx context.Context, bin string, argv [][]string) (*group, error) {
	g, err := startGroup(ctx, bin, argv)
	if err != nil {
		return nil, err
	}
	if err := g.release(time.Minute); err != nil {
		g.kill()
		return nil, err
	}
	return g, nil
}

func (c *child) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	isReady := false
	for sc.Scan() {
		line := sc.Bytes()
		if !isReady && string(line) == "ready" {
			isReady = true
			close(c.ready)
			continue
		}
		var o op
		c.mu.Lock()
		if err := json.Unmarshal(line, &o); err != nil {
			c.bad = append(c.bad, string(line))
		} else {
			c.ops = append(c.ops, o)
		}
		c.mu.Unlock()
	}
	c.err = c.cmd.Wait()
	close(c.done)
}

// release waits up to timeout for every child to be ready and tells them
// to go.
func (g *group) release(timeout time.Duration) error {
	// A context's Done, unlike time.After, stays closed for every child.
	deadline, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for i, c := range g.kids {
		select {
		case <-c.ready:
		case <-c.done:
			return fmt.Errorf("child %d ended before it was ready: %v: %s", i, c.err, strings.TrimSpace(c.stderr.String()))
		case <-deadline.Done():
			return fmt.Errorf("child %d not ready after %s", i, timeout)
		}
	}
	g.start = time.Now()
	for _, c := range g.kids {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			return err
		}
	}
	return nil
}

// stop asks children that run until told to stop (writers with -n 0) to.
func (g *group) stop() {
	for _, c := range g.kids {
		_, _ = io.WriteString(c.stdin, "stop\n")
	}
}

// wait waits for every child, killing all that still run after timeout.
// It returns the time from release to the last exit, how many children had
// to be killed, and the errors of those that failed.
func (g *group) wait(timeout time.Duration) (wall time.Duration, killed int, errs []string) {
	deadline, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, c := range g.kids {
		select {
		case <-c.done:
		case <-deadline.Done():
		}
	}
	wall = time.Since(g.start)
	for i, c := range g.kids {
		select {
		case <-c.done:
		default:
			killed++
			_ = c.cmd.Process.Kill()
			<-c.done
		}
		c.stdin.Close()
		if c.err != nil {
			errs = append(errs, fmt.Sprintf("child %d: %v: %s", i, c.err, lastLine(c.stderr.String())))
		}
	}
	return wall, killed, errs
}

// kill ends every child at once (on a failure to start the group).
func (g *group) kill() {
	for _, c := range g.kids {
		_ = c.cmd.Process.Kill()
	}
	for _, c := range g.kids {
		<-c.done
	}
}

func (g *group) ops() [][]op {
	out := make([][]op, len(g.kids))
	for i, c := range g.kids {
		c.mu.Lock()
		out[i] = append([]op(nil), c.ops...)
		c.mu.Unlock()
	}
	return out
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// runOne runs one child to the end and returns its ops.
func runOne(ctx context.Context, bin string, timeout time.Duration, args ...string) ([]op, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{ChildArg}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), args[0], err, lastLine(stderr.String()))
	}
	var ops []op
	for line := range strings.Lines(string(out)) {
		var o op
		if err := json.Unmarshal([]byte(line), &o); err != nil {
			return nil, fmt.Errorf("%s %s: bad line %q", filepath.Base(bin), args[0], line)
		}
		ops = append(ops, o)
	}
	return ops, nil
}

// list returns every hostname in the inventory at path, read by bin.
func list(ctx context.Context, bin, path string) ([]string, error) {
	ops, err := runOne(ctx, bin, 2*time.Minute, "list", "-path", path)
	if err != nil {
		return nil, err
	}
	if len(ops) != 1 {
		return nil, fmt.Errorf("list %s: %d answers", path, len(ops))
	}
	return ops[0].Hosts, nil
}

// waitGone waits up to timeout until no process runs the executable bin:
// the reaper watchers that the children of case 1 start outlive them
// briefly, and must not run into the next measurement.
func waitGone(bin string, timeout time.Duration) (left int) {
	want, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return 0
	}
	for deadline := time.Now().Add(timeout); ; {
		left = 0
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == want {
				left++
			}
		}
		if left == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// spinners keeps n CPUs busy with children of the driver's own executable
// until the returned function is called.
func spinners(n int) (stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	for range n {
		c := exec.Command(self, ChildArg, "spin")
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			stop()
			return nil, fmt.Errorf("start busy loop: %w", err)
		}
		cmds = append(cmds, c)
	}
	return stop, nil
}
