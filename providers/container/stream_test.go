package container_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/container"
)

// sshdProcs lists the sshd processes of the engine stream in the container
// of rec (every sshd but the image's daemon, which runs with -D, and its
// entry script), read through the engine so that none is started to look.
func sshdProcs(t *testing.T, ctx context.Context, p *container.Provider, rec *inventory.Record) string {
	t.Helper()
	// "[s]shd": the pattern is not itself a match in this command's line.
	res, err := p.EngineTransport(rec).Execute(ctx, `for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' <"$f"; echo; done 2>/dev/null | grep '[s]shd' | grep -v -e ' -D' -e brokertest-sshd || true`, hostkit.ExecOptions{})
	if err != nil {
		t.Fatalf("listing processes: %v", err)
	}
	return strings.TrimSpace(res.Stdout)
}

// TestStreamHost: a host reached through the engine's exec stream does
// what an SSH host does (commands, SFTP, a pty shell, CopyTo between two
// connections); closing it leaves no `sshd -i` in the container; and the
// record, round-tripped through the inventory's YAML, connects again from
// another provider instance on the same engine.
func TestStreamHost(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage}, nil)
		if s := rec.Broker.SSH; s == nil || s.Transport != container.TransportStream || !strings.Contains(s.ProxyCommand, " -i") {
			t.Fatalf("SSH block %+v: want transport %s and a proxy command", s, container.TransportStream)
		}
		h := connect(t, ctx, p, rec)
		res, err := h.Execute(ctx, "cat; echo err >&2", hostkit.WithStdin(strings.NewReader("in\n")))
		if err != nil || res != (hostkit.Result{Stdout: "in\n", Stderr: "err\n"}) {
			t.Fatalf("Execute with stdin: %+v, %v", res, err)
		}
		// Big enough to need several SFTP packets and stream frames.
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		if err := h.WriteFile(ctx, "/tmp/big", big, 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := h.ReadFile(ctx, "/tmp/big"); err != nil || !bytes.Equal(got, big) {
			t.Fatalf("ReadFile /tmp/big: %d bytes, %v; want %d bytes back", len(got), err, len(big))
		}
		var out bytes.Buffer
		if err := h.Shell(ctx, strings.NewReader("echo pty-$((6*7)); tty\nexit\n"), &out, io.Discard); err != nil {
			t.Fatalf("Shell: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "pty-42") || !strings.Contains(out.String(), "/dev/pts/") {
			t.Errorf("Shell output %q: want pty-42 and a /dev/pts terminal", out.String())
		}
		// A second host of the same record: its own exec stream.
		h2 := connect(t, ctx, p, rec)
		if err := h.CopyTo(ctx, h2, "/tmp/big", "/tmp/big-copy"); err != nil {
			t.Fatal(err)
		}
		if res, err := h2.Execute(ctx, "cmp /tmp/big /tmp/big-copy && echo same"); err != nil || res.Stdout != "same\n" {
			t.Fatalf("after CopyTo: %+v, %v", res, err)
		}
		if procs := sshdProcs(t, ctx, p, rec); procs == "" {
			t.Fatal("no sshd process seen while two hosts are connected: the check sees nothing")
		}
		h.Close()
		h2.Close()
		var left string
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if left = sshdProcs(t, ctx, p, rec); left == "" {
				break
			}
		}
		if left != "" {
			t.Fatalf("sshd processes left after the hosts were closed:\n%s", left)
		}

		// From the record alone, through the inventory's YAML, on another
		// provider instance (another process's).
		data, err := inventory.Marshal([]*inventory.Record{rec})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"transport: engine-stream", "proxy_command: "} {
			if !strings.Contains(string(data), want) {
				t.Errorf("inventory YAML lacks %q:\n%s", want, data)
			}
		}
		back, err := inventory.Parse("inventory.yaml", data)
		if err != nil || len(back) != 1 {
			t.Fatalf("Parse: %v, %d records", err, len(back))
		}
		if *back[0].Broker.SSH != *rec.Broker.SSH {
			t.Errorf("SSH block after the YAML round trip: %+v, want %+v", back[0].Broker.SSH, rec.Broker.SSH)
		}
		p2 := open(t, e, nil)
		h3 := connect(t, ctx, p2, back[0])
		if res, err := h3.Execute(ctx, "hostname"); err != nil || strings.TrimSpace(res.Stdout) != rec.Hostname {
			t.Fatalf("host from the round-tripped record: %+v, %v", res, err)
		}
		if h3.String() != rec.Hostname+" via "+container.TransportStream {
			t.Errorf("String() = %q", h3.String())
		}
	})
}

// TestStreamPortAsked: ports "22" publishes port 22 for a user who wants
// it; the host is still reached through the engine, and the SSH block also
// gives the published address, where the image's sshd daemon answers.
func TestStreamPortAsked(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage, "ports": "22"}, nil)
		s := rec.Broker.SSH
		addr, err := container.MappedPort(rec, "22")
		if err != nil || s == nil || s.Transport != container.TransportStream || s.Host != "127.0.0.1" || s.Port == 0 || addr != net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) {
			t.Fatalf("SSH block %+v, MappedPort(22) %q, %v: want the stream transport and the published address", s, addr, err)
		}
		if res, err := connect(t, ctx, p, rec).Execute(ctx, "echo hi"); err != nil || res.Stdout != "hi\n" {
			t.Fatalf("Execute: %+v, %v", res, err)
		}
		// The published address reaches the daemon, with the same host key.
		cfg, err := providers.ConfigFromRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		cfg.ConnectRetries = 20 // the daemon may still be starting
		tcp := hostkit.New("tcp", cfg)
		defer tcp.Close()
		if res, err := tcp.Execute(ctx, "echo tcp"); err != nil || res.Stdout != "tcp\n" {
			t.Fatalf("Execute through %s: %+v, %v", addr, res, err)
		}
	})
}

// TestStreamWithoutDaemon: the stream needs no sshd daemon: an sshd image
// whose command replaced it is an SSH host all the same.
func TestStreamWithoutDaemon(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage, "command": "sleep 3600"}, nil)
		if res, err := connect(t, ctx, p, rec).Execute(ctx, "echo hi"); err != nil || res.Stdout != "hi\n" {
			t.Fatalf("Execute: %+v, %v", res, err)
		}
	})
}

// TestStreamNoSSHD: an image without sshd asked to be an SSH host by
// default (ports names 22) is driven through the engine; asked by the
// argument ssh, it is an error saying there is no sshd.
func TestStreamNoSSHD(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": busyboxImage, "command": "sleep 3600", "ports": "22"}, nil)
		if rec.Broker.SSH != nil || rec.Broker.Data["transport"] != container.TransportExec {
			t.Fatalf("busybox host: SSH block %+v, data %v; want none and transport %s", rec.Broker.SSH, rec.Broker.Data, container.TransportExec)
		}
		h := connect(t, ctx, p, rec)
		if res, err := h.Execute(ctx, "echo hi"); err != nil || res.Stdout != "hi\n" {
			t.Fatalf("Execute: %+v, %v", res, err)
		}
		if h.String() != rec.Hostname+" via "+container.TransportExec {
			t.Errorf("String() = %q", h.String())
		}
		id := inventory.NewID()
		_, err := p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"container_host": busyboxImage, "command": "sleep 3600", "ssh": true}})
		if err == nil || !strings.Contains(err.Error(), "no sshd") {
			t.Errorf("Checkout of busybox with ssh true: %v; want an error saying it has no sshd", err)
		}
		if left, lerr := containersWithID(ctx, p, id); lerr != nil || len(left) != 0 {
			t.Errorf("containers left after a failed checkout: %v, %v", left, lerr)
		}
	})
}

// fakeSSHD is an sshd that refuses inetd mode and is the real one
// otherwise: found first on PATH, it stands for an image whose sshd
// cannot serve the engine's stream.
const fakeSSHD = `#!/bin/sh
case " $* " in *" -i "*) echo "fake sshd: no inetd mode here" >&2; exit 1 ;; esac
exec /usr/sbin/sshd "$@"
`

// TestStreamFallsBackToTCP: when the image's sshd cannot run in inetd
// mode, the container is run again with port 22 published and reached
// through its daemon (TransportTCP), the reason logged; with port 22
// already published (ports "22"), the same container is. A command that
// replaced the daemon then fails naming the likely cause.
func TestStreamFallsBackToTCP(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "sshd"), []byte(fakeSSHD), 0o755); err != nil {
			t.Fatal(err)
		}
		logs := &syncWriter{w: &bytes.Buffer{}}
		p := open(t, e, map[string]any{"ssh_wait": 5})
		p.SetLogger(slog.New(slog.NewTextHandler(logs, nil)))
		ctx := testCtx(t)
		args := func(extra map[string]any) map[string]any {
			a := map[string]any{"container_host": sshdImage, "volumes": dir + ":/opt/fake:ro",
				"env": map[string]any{"PATH": "/opt/fake:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
			for k, v := range extra {
				a[k] = v
			}
			return a
		}
		for _, extra := range []map[string]any{nil, {"ports": "22"}} {
			rec := checkout(t, ctx, p, args(extra), nil)
			s := rec.Broker.SSH
			if s == nil || s.Transport != container.TransportTCP || s.Port == 0 || rec.Broker.Data["transport"] != container.TransportTCP {
				t.Fatalf("%v: SSH block %+v, data %v; want transport %s on a published port", extra, s, rec.Broker.Data, container.TransportTCP)
			}
			h := connect(t, ctx, p, rec)
			if res, err := h.Execute(ctx, "echo hi"); err != nil || res.Stdout != "hi\n" {
				t.Fatalf("%v: Execute: %+v, %v", extra, res, err)
			}
			if h.String() != rec.Hostname+" via "+container.TransportTCP {
				t.Errorf("String() = %q", h.String())
			}
			if ids, err := containersWithID(ctx, p, rec.ID()); err != nil || len(ids) != 1 {
				t.Errorf("%v: containers of the host: %v, %v; want one", extra, ids, err)
			}
		}
		if !strings.Contains(logs.String(), "no inetd mode here") {
			t.Errorf("the log does not give sshd's reason:\n%s", logs.String())
		}
		id := inventory.NewID()
		_, err := p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: args(map[string]any{"command": "sleep 100"})})
		for _, want := range []string{"no SSH banner", "may have replaced", `"ssh": false`} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("sshd that cannot run -i, daemon replaced by the command: %v; want an error saying %q", err, want)
			}
		}
		if left, lerr := containersWithID(ctx, p, id); lerr != nil || len(left) != 0 {
			t.Errorf("containers left after a failed checkout: %v, %v", left, lerr)
		}
		// A container that exits while its daemon is awaited fails at once,
		// not at the end of ssh_wait (no duration asserted: the tests run
		// on loaded machines too).
		p = open(t, e, map[string]any{"ssh_wait": 60})
		id = inventory.NewID()
		_, err = p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: args(map[string]any{"command": "sleep 2"})})
		if err == nil || !strings.Contains(err.Error(), "not running") || strings.Contains(err.Error(), "within") {
			t.Errorf("sshd that cannot run -i, container exiting: %v; want an error saying it is not running", err)
		}
		if left, lerr := containersWithID(ctx, p, id); lerr != nil || len(left) != 0 {
			t.Errorf("containers left after a failed checkout: %v, %v", left, lerr)
		}
	})
}

// TestStreamHostKeyPinned: the host key is pinned from the checkout's
// exec: a key changed in the container afterwards is refused.
func TestStreamHostKeyPinned(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage}, nil)
		res, err := p.EngineTransport(rec).Execute(ctx, "rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key", hostkit.ExecOptions{})
		if err != nil || res.Status != 0 {
			t.Fatalf("changing the host key: %+v, %v", res, err)
		}
		// The checkout's connection (made with the old key) is not used:
		// a host from another provider instance dials anew.
		h := connect(t, ctx, open(t, e, nil), rec)
		_, err = h.Execute(ctx, "true")
		var hke *hostkit.HostKeyError
		if !errors.As(err, &hke) {
			t.Fatalf("Execute after the host key changed: %v; want a *hostkit.HostKeyError", err)
		}
	})
}

// TestStreamProviderCloseEndsHandover: the checkout's exec stream, kept
// for the host's first dial, ends when the provider closes: no `sshd -i`
// is left in the container.
func TestStreamProviderCloseEndsHandover(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage}, nil)
		// The checkout's stream, kept for the host's first dial, is an
		// sshd -i until it is taken or dropped.
		if procs := sshdProcs(t, ctx, p, rec); procs == "" {
			t.Fatal("no sshd -i for the kept connection")
		}
		p.Close() // drops the kept connection
		q := open(t, e, nil)
		var left string
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if left = sshdProcs(t, ctx, q, rec); left == "" {
				break
			}
		}
		if left != "" {
			t.Fatalf("sshd processes left after the provider closed:\n%s", left)
		}
		ins, err := q.Client().ContainerInspect(ctx, rec.Broker.Data["container_id"].(string), client.ContainerInspectOptions{})
		if err != nil || ins.Container.State == nil || !ins.Container.State.Running {
			t.Fatalf("container after the provider closed: %v", err)
		}
	})
}

// syncWriter serializes writes to w and reads of it.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}
