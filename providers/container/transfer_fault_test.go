package container_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers/container"
)

// Generous bounds for a loaded 2-core machine; the figures measured are in
// RELIABILITY.md.
const (
	// failWithin: a transfer to a container killed under it fails, and a
	// later call on the host too, within this.
	failWithin = 30 * time.Second
	// pauseDeadline is the deadline of a transfer to a container paused
	// under it.
	pauseDeadline = 4 * time.Second
)

// transferHost is one way of reaching a container host in these tests.
type transferHost struct {
	name string
	args map[string]any
	// size is that of the file uploaded before a kill: big enough to be
	// still under way when the kill comes. Docker holds a kill until a
	// copy through its archive API ends: at ~70 MB/s, a quarter of a
	// gigabyte.
	size int64
}

var transferHosts = []transferHost{
	{container.TransportStream, map[string]any{"container_host": sshdImage}, 1 << 30},
	{container.TransportExec, map[string]any{"container_host": busyboxImage, "command": []any{"sleep", "3600"}}, 256 << 20},
}

// sparseFile makes a local file of size bytes that takes no room.
func sparseFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// The file each test replaces, and its content before.
const xferDir, xferDst, xferOld = "/tmp/xfer", "/tmp/xfer/dst", "the good old content\n"

// transferCase is a host checked out for a transfer test, xferDst on it
// holding xferOld.
type transferCase struct {
	ctx context.Context
	p   *container.Provider
	th  transferHost
	rec *inventory.Record
	h   *hostkit.Host
	cid string // its container's id
}

// forTransferHost runs f as a subtest per engine and way of reaching a
// host in hosts, on a host checked out for it.
func forTransferHost(t *testing.T, hosts []transferHost, f func(t *testing.T, c *transferCase)) {
	forEngine(t, func(t *testing.T, e engine) {
		for _, th := range hosts {
			t.Run(th.name, func(t *testing.T) {
				c := &transferCase{ctx: testCtx(t), p: open(t, e, nil), th: th}
				c.rec = checkout(t, c.ctx, c.p, th.args, nil)
				c.h = connect(t, c.ctx, c.p, c.rec)
				if c.h.Via != th.name {
					t.Fatalf("host reached via %q, want %q", c.h.Via, th.name)
				}
				if res, err := c.h.Execute(c.ctx, "mkdir -p "+xferDir); err != nil || res.Status != 0 {
					t.Fatalf("mkdir: %+v, %v", res, err)
				}
				if err := c.h.WriteFile(c.ctx, xferDst, []byte(xferOld), 0o640); err != nil {
					t.Fatal(err)
				}
				ids, err := containersWithID(c.ctx, c.p, c.rec.ID())
				if err != nil || len(ids) != 1 {
					t.Fatalf("container of %s: %v, %v", c.rec.ID(), ids, err)
				}
				c.cid = ids[0]
				f(t, c)
			})
		}
	})
}

// startUpload uploads a sparse file of size bytes to dst under ctx, and returns once
// 8 MiB of it have been read (the source's offset in this process: the
// engine may answer no other call on the container while it takes an
// upload through its archive API), with the channel that gets the
// upload's result.
func startUpload(t *testing.T, ctx context.Context, h *hostkit.Host, dst string, size int64) <-chan error {
	t.Helper()
	src := sparseFile(t, size)
	done := make(chan error, 1)
	go func() { done <- h.Upload(ctx, src, dst) }()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(2 * time.Millisecond) {
		if readOffset(src) >= 8<<20 {
			return done
		}
		select {
		case err := <-done:
			t.Fatalf("the upload ended before it was under way: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the upload never got going")
		}
	}
}

// readOffset is the offset of this process's open file of path, or -1.
func readOffset(path string) int64 {
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err != nil || l != path {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + fd.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "pos:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				return n
			}
		}
	}
	return -1
}

// recovered checks that the host works again (a command; over SFTP, an
// SFTP client again, which removes what a lost connection left) and,
// through the engine, that xferDir holds xferDst alone: with its old
// content after a failed upload, or the whole upload (uploaded bytes)
// after one that succeeded (the engine may finish a copy through its
// archive API before it kills the container): no half file, and no
// temporary left beside it. A temporary may be removed aside: it is
// waited for.
func recovered(t *testing.T, c *transferCase, uploaded int64) {
	t.Helper()
	if res, err := c.h.Execute(c.ctx, "echo back"); err != nil || res.Stdout != "back\n" {
		t.Fatalf("Execute after the fault: %+v, %v", res, err)
	}
	if c.th.name == container.TransportStream {
		if _, err := c.h.SFTP(c.ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := filepath.Base(xferDst) + "\n" + strconv.Itoa(len(xferOld)) + "\n" + xferOld
	if uploaded > 0 {
		want = filepath.Base(xferDst) + "\n" + strconv.FormatInt(uploaded, 10) + "\n" + strings.Repeat("\x00", 64)
	}
	look := c.p.EngineTransport(c.rec)
	var res hostkit.Result
	var err error
	for deadline := time.Now().Add(failWithin); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		res, err = look.Execute(c.ctx, "ls -A "+xferDir+"; wc -c <"+xferDst+"; head -c 64 "+xferDst, hostkit.ExecOptions{})
		if err == nil && res.Stdout == want {
			return
		}
	}
	t.Errorf("%s after the interrupted transfer: %q, %v; want %q", xferDir, res.Stdout, err, want)
}

// TestTransferContainerKilled: a container killed in the middle of an
// Upload (through the engine's exec stream to `sshd -i`, or the engine's
// archive API): the upload fails well before its deadline, so does the
// next call on the host, saying the container is not running; once the
// container runs again the host reconnects, the destination holds its
// old content and no temporary is left.
func TestTransferContainerKilled(t *testing.T) {
	forTransferHost(t, transferHosts, func(t *testing.T, c *transferCase) {
		ctx, p, h := c.ctx, c.p, c.h
		uctx, cancel := context.WithTimeout(ctx, 150*time.Second)
		defer cancel()
		done := startUpload(t, uctx, h, xferDst, c.th.size)
		if _, err := p.Client().ContainerKill(ctx, c.cid, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		var uploadErr error
		select {
		case uploadErr = <-done:
			t.Logf("Upload returned %v after the kill: %v", time.Since(killed), uploadErr)
			if uploadErr == nil && c.th.name == container.TransportStream {
				t.Fatal("the upload succeeded on a killed container")
			}
		case <-time.After(failWithin):
			t.Fatalf("Upload still running %v after its container was killed", failWithin)
		}

		// The next call fails at once, saying why.
		ectx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		start := time.Now()
		_, err := h.Execute(ectx, "true")
		t.Logf("Execute on the killed container: %v after: %v", time.Since(start), err)
		if err == nil || ectx.Err() != nil || time.Since(start) > failWithin/2 {
			t.Fatalf("Execute on the killed container: %v after %v; want an error well before its deadline", err, time.Since(start))
		}
		if !strings.Contains(err.Error(), "not running") {
			t.Errorf("Execute's error %q does not say the container is not running", err)
		}

		// Once it runs again, the host reconnects.
		if _, err := p.Client().ContainerStart(ctx, c.cid, client.ContainerStartOptions{}); err != nil {
			t.Fatal(err)
		}
		var uploaded int64 // 0: the old content stays
		if uploadErr == nil {
			uploaded = c.th.size
		}
		recovered(t, c, uploaded)
	})
}

// TestTransferContainerPaused: a container paused in the middle of an
// Upload, past the upload's deadline: the upload returns its deadline's
// error at about its deadline; once the container runs again, the
// destination holds its old content and no temporary is left.
func TestTransferContainerPaused(t *testing.T) {
	forTransferHost(t, transferHosts, func(t *testing.T, c *transferCase) {
		ctx, p := c.ctx, c.p
		uctx, cancel := context.WithTimeout(ctx, pauseDeadline)
		defer cancel()
		start := time.Now()
		// A gigabyte: the copy is cut by the deadline, or (engine-exec)
		// ends and its rename finds the container paused.
		done := startUpload(t, uctx, c.h, xferDst, 1<<30)
		if _, err := p.Client().ContainerPause(ctx, c.cid, client.ContainerPauseOptions{}); err != nil {
			t.Fatal(err)
		}
		paused := true
		unpause := func() {
			if paused {
				paused = false
				if _, err := p.Client().ContainerUnpause(context.WithoutCancel(ctx), c.cid, client.ContainerUnpauseOptions{}); err != nil {
					t.Error(err)
				}
			}
		}
		defer unpause()
		select {
		case err := <-done:
			t.Logf("Upload returned %v after it started (deadline %v): %v", time.Since(start), pauseDeadline, err)
			if !errors.Is(err, context.DeadlineExceeded) && (err == nil || c.th.name == container.TransportStream) {
				t.Fatalf("Upload to a paused container: %v, want its deadline's error", err)
			}
		case <-time.After(pauseDeadline + failWithin):
			t.Fatalf("Upload still running %v after its deadline", failWithin)
		}
		unpause()
		recovered(t, c, 0)
	})
}

// TestTransferStreamSSHDKilled: the `sshd -i` of an exec stream killed in
// the middle of an Upload (the exec ends, the container runs on): the
// upload fails well before its deadline, the next call reconnects, the
// destination holds its old content and no temporary is left.
func TestTransferStreamSSHDKilled(t *testing.T) {
	forTransferHost(t, transferHosts[:1], func(t *testing.T, c *transferCase) {
		uctx, cancel := context.WithTimeout(c.ctx, 150*time.Second)
		defer cancel()
		done := startUpload(t, uctx, c.h, xferDst, c.th.size)
		// Every sshd of the stream (not the image's daemon, -D).
		kill := `for f in /proc/[0-9]*/cmdline; do c=$(tr '\0' ' ' <"$f" 2>/dev/null); case "$c" in *sshd*-D*|*brokertest-sshd*) ;; *sshd*) p=${f#/proc/}; kill -9 "${p%/cmdline}" && echo "$c";; esac; done`
		res, err := c.p.EngineTransport(c.rec).Execute(c.ctx, kill, hostkit.ExecOptions{})
		if err != nil || strings.TrimSpace(res.Stdout) == "" {
			t.Fatalf("killing the stream's sshd: %+v, %v", res, err)
		}
		killed := time.Now()
		select {
		case err := <-done:
			t.Logf("Upload returned %v after sshd was killed (%q): %v", time.Since(killed), res.Stdout, err)
			if err == nil {
				t.Fatal("the upload succeeded with its sshd killed")
			}
		case <-time.After(failWithin):
			t.Fatalf("Upload still running %v after its sshd was killed", failWithin)
		}
		recovered(t, c, 0)
	})
}
