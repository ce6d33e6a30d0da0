package container_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/container"
)

// busyboxHost checks out a busybox host (no sshd: the engine path).
func busyboxHost(t *testing.T, ctx context.Context, p *container.Provider) (*inventory.Record, *hostkit.Host) {
	t.Helper()
	rec := checkout(t, ctx, p, map[string]any{"container_host": busyboxImage, "command": []any{"sleep", "3600"}}, nil)
	if rec.Broker.SSH != nil {
		t.Fatalf("busybox host has an SSH block: %+v", rec.Broker.SSH)
	}
	return rec, connect(t, ctx, p, rec)
}

// TestEngineNotExist: missing paths on an engine host give fs.ErrNotExist,
// as over SFTP; a missing container does not.
func TestEngineNotExist(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec, h := busyboxHost(t, ctx, p)
		_, err := h.ReadFile(ctx, "/nonexist")
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ReadFile /nonexist: %v; want fs.ErrNotExist", err)
		}
		if err != nil && !strings.Contains(err.Error(), "/nonexist") {
			t.Errorf("ReadFile /nonexist: %q does not name the path", err)
		}
		err = h.Download(ctx, "/nonexist", filepath.Join(t.TempDir(), "x"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Download /nonexist: %v; want fs.ErrNotExist", err)
		}
		err = h.WriteFile(ctx, "/nodir/file", []byte("x"), 0o644)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("WriteFile /nodir/file: %v; want fs.ErrNotExist", err)
		}
		// A path that exists still reads.
		if err := h.WriteFile(ctx, "/tmp/there", []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := h.ReadFile(ctx, "/tmp/there"); err != nil {
			t.Fatal(err)
		}
		// The engine's 404 for a missing container is no missing file.
		if err := p.Checkin(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if _, err := h.ReadFile(ctx, "/tmp/there"); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ReadFile after checkin: %v; want an error that is not fs.ErrNotExist", err)
		}
	})
}

// TestEngineFileMode: a file read through the archive API carries its
// permission bits (Stat on the reader, which hostkit's Download uses).
func TestEngineFileMode(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec, h := busyboxHost(t, ctx, p)
		if err := h.WriteFile(ctx, "/tmp/script", []byte("#!/bin/sh\n"), 0o750); err != nil {
			t.Fatal(err)
		}
		if res, err := h.Execute(ctx, "ln -s script /tmp/link && chmod 0750 /tmp/script && stat -c %a /tmp/script"); err != nil || res.Stdout != "750\n" {
			t.Fatalf("remote mode: %+v, %v", res, err)
		}
		tr := p.EngineTransport(rec)
		for _, path := range []string{"/tmp/script", "/tmp/link"} {
			rc, err := tr.Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			st, ok := rc.(interface{ Stat() (fs.FileInfo, error) })
			if !ok {
				rc.Close()
				t.Fatalf("Open(%s) = %T, which has no Stat", path, rc)
			}
			fi, err := st.Stat()
			rc.Close()
			if err != nil || fi.Mode().Perm() != 0o750 || !fi.Mode().IsRegular() || fi.Size() != int64(len("#!/bin/sh\n")) {
				t.Errorf("Stat of %s: %v, %v; want a regular 0750 file of 10 bytes", path, fi.Mode(), err)
			}
		}
		// Download keeps the mode, as over SSH.
		local := filepath.Join(t.TempDir(), "script")
		if err := h.Download(ctx, "/tmp/script", local); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(local); err != nil || fi.Mode().Perm() != 0o750 {
			t.Errorf("downloaded file: %v, %v; want mode 0750", fi, err)
		}
	})
}

// psSleeps lists the live processes running sleep with an argument from
// 30 to 39 (the commands these tests start; the host's own is sleep 3600).
func psSleeps(t *testing.T, ctx context.Context, h *hostkit.Host) string {
	t.Helper()
	res, err := h.Execute(ctx, `ps -o args | grep '^sleep 3[0-9]$' || true`)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(res.Stdout)
}

// TestEngineExecCancel: a command that times out or is cancelled is
// killed inside the container with its children, and the output it gave
// is kept.
func TestEngineExecCancel(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		_, h := busyboxHost(t, ctx, p)
		start := time.Now()
		res, err := h.Execute(ctx, "echo before; echo err >&2; sleep 31 & sleep 32 | cat; wait", hostkit.WithTimeout(time.Second))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Execute with a 1s timeout: %+v, %v; want context.DeadlineExceeded", res, err)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Errorf("timed-out Execute took %v", el)
		}
		if res.Status != -1 || res.Stdout != "before\n" || res.Stderr != "err\n" {
			t.Errorf("timed-out Execute: %+v; want Status -1 and the output so far", res)
		}
		waitNoSleeps(t, ctx, h)

		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(500*time.Millisecond, cancel)
		if _, err := h.Execute(cctx, "sleep 33"); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Execute: %v; want context.Canceled", err)
		}
		waitNoSleeps(t, ctx, h)

		// A command that ends in time is not touched; its stderr is whole.
		res, err = h.Execute(ctx, "echo a >&2; echo b", hostkit.WithTimeout(time.Minute))
		if err != nil || res != (hostkit.Result{Stdout: "b\n", Stderr: "a\n"}) {
			t.Errorf("Execute: %+v, %v", res, err)
		}
		// A signal death reads as the shell reports it (the package doc).
		res, err = h.Execute(ctx, "kill -9 $$")
		if err != nil || res.Status != 128+9 {
			t.Errorf("kill -9 $$: %+v, %v; want Status 137 and no error", res, err)
		}
	})
}

func waitNoSleeps(t *testing.T, ctx context.Context, h *hostkit.Host) {
	t.Helper()
	var left string
	for range 30 {
		if left = psSleeps(t, ctx, h); left == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("processes left in the container after the command was cancelled:\n%s", left)
}

const childEnv = "BROKER_TEST_CONTAINER_CHILD"

// childCheckout is the owner process of TestSyncOwner: it checks a host
// out, prints its id and exits without checking it in.
func childCheckout() int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := container.Open(ctx, providers.Config{
		Provider: container.Name,
		Instance: os.Getenv(childEnv + "_INSTANCE"),
		Settings: map[string]any{"host_uri": os.Getenv(childEnv + "_URI"), "name_prefix": "brokertest"},
		Dir:      os.Getenv(childEnv + "_DIR"),
	})
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	defer p.Close()
	host, _ := os.Hostname()
	id := inventory.NewID()
	_, err = p.Checkout(ctx, providers.CheckoutRequest{ID: id,
		Args:   map[string]any{"container_host": busyboxImage, "command": "sleep 3600"},
		Labels: map[string]string{"run": "deadrun", "user": os.Getenv(childEnv + "_USER"), "machine": host, "test": "TestChild"}})
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	os.Stdout.WriteString(id + "\n")
	return 0
}

// TestSyncOwner: a host missing from the inventory comes back from Sync
// with its owner (run, machine, test, pid, start time, boot id: state
// ready), judged dead exactly when its owner process is.
func TestSyncOwner(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		user := "syncowner-" + inventory.NewID()
		host, _ := os.Hostname()
		run := inventory.NewRunID()
		live := checkout(t, ctx, p, map[string]any{"container_host": busyboxImage, "command": "sleep 3600"},
			map[string]string{"run": run, "user": user, "machine": host, "test": t.Name()})

		// The owner of the second host is a process that has exited.
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=checkout", childEnv+"_URI="+e.uri(t), childEnv+"_INSTANCE=test-"+e.name,
			childEnv+"_DIR="+t.TempDir(), childEnv+"_USER="+user)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		deadID := strings.TrimSpace(string(out))
		if deadID != "" {
			t.Cleanup(func() {
				_ = p.Checkin(context.Background(), &inventory.Record{Broker: &inventory.Meta{ID: deadID}})
			})
		}
		if err != nil || deadID == "" {
			t.Fatalf("child checkout: %v, %q\n%s", err, out, stderr.String())
		}
		childPID := cmd.Process.Pid

		recs, err := p.Sync(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*inventory.Record{}
		for _, r := range recs {
			got[r.ID()] = r
		}
		l, d := got[live.ID()], got[deadID]
		if len(recs) != 2 || l == nil || d == nil {
			t.Fatalf("Sync(%s): %d records, want %s and %s", user, len(recs), live.ID(), deadID)
		}
		me := inventory.CurrentOwner(run)
		if l.Broker.State != inventory.StateReady || l.Broker.Test != t.Name() || l.Broker.Owner != me {
			t.Errorf("synced record: state %q, test %q, owner %+v; want ready, %s, %+v", l.Broker.State, l.Broker.Test, l.Broker.Owner, t.Name(), me)
		}
		if l.Broker.Owner.Dead() {
			t.Errorf("the live owner %+v is judged dead", l.Broker.Owner)
		}
		o := d.Broker.Owner
		if d.Broker.State != inventory.StateReady || d.Broker.Test != "TestChild" || o.Run != "deadrun" || o.PID != childPID ||
			o.Machine != host || o.Started == 0 || o.BootID != me.BootID {
			t.Errorf("synced record of the exited owner: state %q, test %q, owner %+v; want ready, TestChild, run deadrun, pid %d", d.Broker.State, d.Broker.Test, o, childPID)
		}
		if !o.Dead() {
			t.Errorf("the exited owner %+v is not judged dead", o)
		}
	})
}

// TestReadableEngineAddress: an engine error quotes a unix socket engine
// by its path, not as net/http's escaped URL.
func TestReadableEngineAddress(t *testing.T) {
	dir, err := os.MkdirTemp("", "eng") // short: a socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "engine.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// An engine that answers the ping, then drops every other request.
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/_ping") {
			w.Header().Set("Api-Version", "1.44")
			w.Write([]byte("OK"))
			return
		}
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p, err := container.Open(t.Context(), providers.Config{Provider: container.Name, Settings: map[string]any{"host_uri": "unix://" + sock}, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = p.Checkout(t.Context(), providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"container_host": busyboxImage}})
	if err == nil {
		t.Fatal("Checkout on an engine that drops requests succeeded")
	}
	if strings.Contains(err.Error(), "%2F") || !strings.Contains(err.Error(), "unix://"+sock) {
		t.Errorf("error %q does not name the engine unix://%s readably", err, sock)
	}
}

// TestSSHExecCancel: over SSH too, a command that times out is killed in
// the container with its children (sshd refuses signals to root's
// sessions), and its output so far is kept.
func TestSSHExecCancel(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage}, nil)
		h := connect(t, ctx, p, rec)
		res, err := h.Execute(ctx, "echo before; echo err >&2; sleep 31 & sleep 32 | cat; wait", hostkit.WithTimeout(time.Second))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Execute with a 1s timeout: %+v, %v; want context.DeadlineExceeded", res, err)
		}
		if res.Status != -1 || res.Stdout != "before\n" || res.Stderr != "err\n" {
			t.Errorf("timed-out Execute: %+v; want Status -1 and the output so far", res)
		}
		var left string
		for range 30 {
			r, err := h.Execute(ctx, `for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' <"$f"; echo; done 2>/dev/null | grep '^sleep 3[0-9] $' || true`)
			if err != nil {
				t.Fatal(err)
			}
			if left = strings.TrimSpace(r.Stdout); left == "" {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("processes left in the container after the command timed out:\n%s", left)
	})
}

// TestSSHEnv: the env argument reaches commands run over SSH, as it reaches
// the engine's exec (sshd's sessions do not inherit the container's
// environment); WithEnv's values win.
func TestSSHEnv(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage, "env": map[string]string{"A_MAP": "one two", "Q": `it's "q"`}}, nil)
		h := connect(t, ctx, p, rec)
		res, err := h.Execute(ctx, `printf '%s|%s' "$A_MAP" "$Q"`)
		if err != nil || res.Stdout != `one two|it's "q"` {
			t.Errorf("env over SSH: %+v, %v", res, err)
		}
		res, err = h.Execute(ctx, `printf '%s' "$A_MAP"`, hostkit.WithEnv(map[string]string{"A_MAP": "mine"}))
		if err != nil || res.Stdout != "mine" {
			t.Errorf("WithEnv over the env argument: %+v, %v", res, err)
		}
	})
}

// TestPortsWithAutoMap: with auto_map_ports (the default), the ports the
// image exposes are published besides those ports names, as the Python
// broker does.
func TestPortsWithAutoMap(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage, "ssh": false, "ports": "8080"}, nil)
		for _, port := range []string{"8080", "22"} {
			if _, err := container.MappedPort(rec, port); err != nil {
				t.Errorf("MappedPort(%s): %v", port, err)
			}
		}
		rec = checkout(t, ctx, p, map[string]any{"container_host": sshdImage, "ssh": false, "ports": "8080", "auto_map_ports": false}, nil)
		if _, err := container.MappedPort(rec, "22"); err == nil {
			t.Error("auto_map_ports: false published the exposed port 22")
		}
	})
}

// TestLabelsArgument: the labels argument labels the container; it cannot
// change broker's own labels.
func TestLabelsArgument(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": busyboxImage, "command": []any{"sleep", "3600"},
			"labels": map[string]any{"team": "qa", container.LabelID: "spoofed"}}, nil)
		ins, err := p.Client().ContainerInspect(ctx, rec.Broker.Data["container_id"].(string), client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := ins.Container.Config.Labels
		if got["team"] != "qa" || got[container.LabelID] != rec.ID() {
			t.Errorf("labels %v: want team=qa and broker's own id label %s", got, rec.ID())
		}
	})
}

// TestExitedHost: a host whose command ended at once fails its commands
// with an error that says so, with the exit code and the last output.
func TestExitedHost(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		id := inventory.NewID()
		t.Cleanup(func() { p.Checkin(context.WithoutCancel(ctx), &inventory.Record{Broker: &inventory.Meta{ID: id}}) })
		res, err := p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"container_host": busyboxImage, "command": "echo bye; sleep 0.3; exit 3"}})
		if err == nil { // it had not exited yet: its commands fail
			h := connect(t, ctx, p, res.Record(id))
			for range 50 {
				if _, err = h.Execute(ctx, "true"); err != nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		if err == nil {
			t.Fatal("Execute on a container whose command exited succeeded")
		}
		for _, want := range []string{"exit code 3", `"bye"`, "keeps running"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %s", err, want)
			}
		}
	})
}

// TestConcurrentCheckin: check-ins of one host at once (a dying process's
// own and its signal handler's or reaper's) all succeed: the engine's 409
// "removal already in progress" is waited out, not taken for a failure.
func TestConcurrentCheckin(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		for range 3 {
			rec, _ := busyboxHost(t, ctx, p)
			errs := make(chan error, 3)
			for range 3 {
				go func() { errs <- p.Checkin(ctx, rec) }()
			}
			for range 3 {
				if err := <-errs; err != nil {
					t.Errorf("concurrent check-in: %v", err)
				}
			}
			if ids, err := containersWithID(ctx, p, rec.ID()); err != nil || len(ids) != 0 {
				t.Errorf("after the check-ins: containers %v, %v", ids, err)
			}
		}
	})
}
