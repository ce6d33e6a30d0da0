package container_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/testenv"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/container"
	"github.com/hostbroker/broker/providers/container/internal/podmantest"
	"github.com/hostbroker/broker/providers/providertest"
)

const (
	sshdImage    = "brokertest/debian-sshd:12"
	busyboxImage = "brokertest/busybox:1"
	missingImage = "brokertest/does-not-exist:0"
)

var testImages = []string{sshdImage, busyboxImage}

// podman is started once, on first use, and stopped by TestMain.
var podman struct {
	once sync.Once
	svc  *podmantest.Service
	err  error
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "checkout" {
		os.Exit(childCheckout())
	}
	code := m.Run()
	if podman.svc != nil {
		podman.svc.Stop()
	}
	os.Exit(code)
}

// engine is one container engine the suite runs against.
type engine struct {
	name string // also the testenv part: "docker" or "podman"
	uri  func(t testing.TB) string
}

var engines = []engine{
	{"docker", func(t testing.TB) string {
		if h := os.Getenv("DOCKER_HOST"); h != "" {
			return h
		}
		return "unix:///var/run/docker.sock"
	}},
	{"podman", func(t testing.TB) string {
		podman.once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			podman.svc, podman.err = podmantest.Start(ctx, testImages...)
		})
		testenv.Require(t, "podman", podman.err)
		return podman.svc.URI
	}},
}

// forEngine runs f as a subtest per engine.
func forEngine(t *testing.T, f func(t *testing.T, e engine)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) { f(t, e) })
	}
}

// open opens a provider on e with extra settings, skipping when the engine
// or the test images are missing.
func open(t testing.TB, e engine, settings map[string]any) *container.Provider {
	t.Helper()
	s := map[string]any{"host_uri": e.uri(t), "runtime": e.name, "name_prefix": "brokertest"}
	for k, v := range settings {
		s[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := container.Open(ctx, providers.Config{
		Provider: container.Name,
		Instance: "test-" + e.name,
		Settings: s,
		Dir:      t.TempDir(),
	})
	testenv.Require(t, e.name, err)
	t.Cleanup(func() { p.Close() })
	for _, img := range testImages {
		_, err := p.Client().ImageInspect(ctx, img)
		testenv.Require(t, e.name, errorf(err, "image %s missing (run scripts/build-test-images.sh): %w", img, err))
	}
	return p
}

func errorf(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format, a...)
}

// containersWithID lists the containers (any state) labelled with id.
func containersWithID(ctx context.Context, p *container.Provider, id string) ([]string, error) {
	res, err := p.Client().ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", container.LabelID+"="+id)})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range res.Items {
		if c.Labels[container.LabelID] == id {
			out = append(out, c.ID)
		}
	}
	return out, nil
}

// connect builds the host of rec, closed at cleanup.
func connect(t *testing.T, ctx context.Context, p *container.Provider, rec *inventory.Record) *hostkit.Host {
	t.Helper()
	h, err := p.Connect(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// checkout checks a host out and checks it in at cleanup.
func checkout(t *testing.T, ctx context.Context, p *container.Provider, args map[string]any, labels map[string]string) *inventory.Record {
	t.Helper()
	id := inventory.NewID()
	res, err := p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: args, Labels: labels})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// By id alone: also removes what a failed checkout may have left.
		if err := p.Checkin(ctx, &inventory.Record{Broker: &inventory.Meta{ID: id}}); err != nil {
			t.Errorf("cleanup checkin %s: %v", id, err)
		}
	})
	if err != nil {
		t.Fatalf("Checkout %v: %v", args, err)
	}
	return res.Record(id)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	// The fake sshd refuses inetd mode: the image's hosts are reached over
	// TCP, port 22 published, the transport the stream falls back to.
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "sshd"), []byte(fakeSSHD), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := map[string]map[string]any{
		"tcp-fallback": {"container_host": sshdImage, "volumes": fake + ":/opt/fake:ro",
			"env": map[string]any{"PATH": "/opt/fake:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
	}
	for _, img := range testImages {
		cases[strings.NewReplacer("/", "_", ":", "_").Replace(img)] = map[string]any{"container_host": img}
	}
	forEngine(t, func(t *testing.T, e engine) {
		open(t, e, nil) // skips when the engine or the images are missing
		cfg := providers.Config{
			Provider: container.Name,
			Instance: "test-" + e.name,
			Settings: map[string]any{"host_uri": e.uri(t), "runtime": e.name, "name_prefix": "brokertest"},
			Dir:      t.TempDir(),
		}
		for _, name := range slices.Sorted(maps.Keys(cases)) {
			t.Run(name, func(t *testing.T) {
				var last *container.Provider
				providertest.Run(t, func(t *testing.T) providers.Provider {
					last = open(t, e, nil)
					return last
				}, providertest.Options{
					Args:               cases[name],
					BadArgs:            map[string]any{"container_host": missingImage, "pull_policy": "never"},
					BadArgsMention:     missingImage,
					Count:              5,
					Driver:             container.Driver{},
					Config:             cfg,
					BadSettings:        map[string]any{"runtime": "no-such-runtime"},
					BadSettingsMention: "runtime",
					Exists: func(ctx context.Context, rec *inventory.Record) (bool, error) {
						ids, err := containersWithID(ctx, last, rec.ID())
						return len(ids) > 0, err
					},
				})
			})
		}
	})
}

// TestSSHHost checks an sshd image end to end with the default settings:
// the record (SSH through the engine's exec stream, nothing published),
// verified SSH with the generated key, SFTP, a changed host key refused,
// and check-in leaving nothing.
func TestSSHHost(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage},
			map[string]string{"run": "r1", "test": t.Name()})
		s := rec.Broker.SSH
		if s == nil || s.Transport != container.TransportStream || s.Host != "" || s.Port != 0 || s.User != "root" || !strings.HasPrefix(s.HostKey, "ssh-ed25519 ") {
			t.Fatalf("SSH block: %+v, want the engine stream, no address, root and a pinned ed25519 host key", s)
		}
		if rec.Broker.Data["transport"] != container.TransportStream || rec.Broker.Data["sshd"] != "/usr/sbin/sshd" {
			t.Errorf("data: %v, want transport %s and sshd /usr/sbin/sshd", rec.Broker.Data, container.TransportStream)
		}
		fi, err := os.Stat(s.KeyFile)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("client key %s: %v, mode %v; want 0600", s.KeyFile, err, fi)
		}
		if rec.Broker.ID == "" || rec.Broker.Data["container_id"] == "" || rec.Name == "" || rec.Hostname == "" {
			t.Fatalf("record incomplete: %+v / %+v", rec, rec.Broker)
		}
		if !strings.HasPrefix(rec.Name, "brokertest_") {
			t.Errorf("name %q lacks the name_prefix", rec.Name)
		}
		ins, err := p.Client().ContainerInspect(ctx, rec.Broker.Data["container_id"].(string), client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		labels := ins.Container.Config.Labels
		for k, want := range map[string]string{
			container.LabelID: rec.Broker.ID, container.LabelPrefix + "run": "r1",
			container.LabelInstance: "test-" + e.name,
		} {
			if labels[k] != want {
				t.Errorf("label %s = %q, want %q", k, labels[k], want)
			}
		}
		if !strings.Contains(labels[container.LabelArgs], sshdImage) {
			t.Errorf("args label %q lacks the image", labels[container.LabelArgs])
		}
		// Nothing is published: port 22 is not for broker's own use.
		for port, bs := range ins.Container.HostConfig.PortBindings {
			if len(bs) != 0 {
				t.Errorf("port %s bound to %v, want no binding", port, bs)
			}
		}
		for port, bs := range ins.Container.NetworkSettings.Ports {
			if len(bs) != 0 {
				t.Errorf("port %s published on %v, want nothing published", port, bs)
			}
		}
		if ins.Container.Config.Hostname != rec.Hostname {
			t.Errorf("hostname %q, want the container's %q", rec.Hostname, ins.Container.Config.Hostname)
		}

		h, err := p.Connect(ctx, rec)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if want := rec.Hostname + " via " + container.TransportStream; h.String() != want {
			t.Errorf("host String() = %q, want %q", h.String(), want)
		}
		res, err := h.Execute(ctx, "echo out-$(id -un); echo err >&2; exit 7")
		if err != nil {
			t.Fatal(err)
		}
		if want := (hostkit.Result{Status: 7, Stdout: "out-root\n", Stderr: "err\n"}); res != want {
			t.Fatalf("Execute: %+v, want %+v", res, want)
		}
		data := []byte("hello over sftp\n")
		if err := h.WriteFile(ctx, "/tmp/sftp-file", data, 0o640); err != nil {
			t.Fatal(err)
		}
		got, err := h.ReadFile(ctx, "/tmp/sftp-file")
		if err != nil || string(got) != string(data) {
			t.Fatalf("ReadFile: %q, %v; want %q", got, err, data)
		}
		res, err = h.Execute(ctx, "stat -c %a /tmp/sftp-file")
		if err != nil || strings.TrimSpace(res.Stdout) != "640" {
			t.Fatalf("mode of written file: %+v, %v; want 640", res, err)
		}
		// A wrong host key is refused: the pin is real.
		bad := *rec
		badSSH := *rec.Broker.SSH
		badSSH.HostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILiAInTitgZH7t1qK9Mn1IHIjYeB1MUiJYZNXruBEIyg"
		badMeta := *rec.Broker
		badMeta.SSH = &badSSH
		bad.Broker = &badMeta
		hb, err := p.Connect(ctx, &bad)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hb.Execute(ctx, "true"); err == nil {
			t.Errorf("Execute with a wrong pinned host key succeeded")
		}
		hb.Close()
		h.Close()

		if err := p.Checkin(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if ids, err := containersWithID(ctx, p, rec.Broker.ID); err != nil || len(ids) != 0 {
			t.Fatalf("containers left after checkin: %v, %v", ids, err)
		}
		if _, err := os.Stat(filepath.Dir(s.KeyFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("key dir left after checkin: %v", err)
		}
	})
}

// TestKeyAppended: the client key is appended to an authorized_keys the
// image already has, even one whose last line lacks its newline, and the
// line there is kept whole.
func TestKeyAppended(t *testing.T) {
	const theirs = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBdOrtwJr3mUyvTEhEQkH0BdrNLZSe1FaA3bDYzQ0KM3 someone@elsewhere"
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		// The image's own entry, after writing a key without a newline.
		cmd := []any{"/bin/sh", "-c", "mkdir -p /root/.ssh && printf '%s' '" + theirs + "' >>/root/.ssh/authorized_keys && exec /usr/local/sbin/brokertest-sshd"}
		rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage, "command": cmd}, nil)
		res, err := connect(t, ctx, p, rec).Execute(ctx, "cat /root/.ssh/authorized_keys")
		if err != nil || res.Status != 0 {
			t.Fatalf("login with the installed key: %+v, %v", res, err)
		}
		if !slices.Contains(strings.Split(res.Stdout, "\n"), theirs) {
			t.Errorf("authorized_keys lost the image's line whole:\n%s", res.Stdout)
		}
	})
}

// TestFirstConnectionIsTheBannerOne: the exec stream on which Checkout
// installed the key and saw sshd's banner is the one the host's first
// command runs on: one exec stream in all.
func TestFirstConnectionIsTheBannerOne(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage}, nil)
		res, err := connect(t, ctx, p, rec).Execute(ctx, "echo hi")
		if err != nil || res.Stdout != "hi\n" {
			t.Fatalf("Execute: %+v, %v", res, err)
		}
		if n := p.Streams(); n != 1 {
			t.Errorf("%d exec streams opened, want 1 (the checkout's, handed to the host)", n)
		}
	})
}

// TestEngineTransport checks a host without sshd: exec (status, output,
// env, stdin) and files through the archive API.
func TestEngineTransport(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": busyboxImage, "command": []any{"sleep", "3600"}}, nil)
		if rec.Broker.SSH != nil {
			t.Fatalf("busybox host has an SSH block: %+v", rec.Broker.SSH)
		}
		h, err := p.Connect(ctx, rec)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		res, err := h.Execute(ctx, "echo \"$GREETING\"; cat; echo oops >&2; exit 5",
			hostkit.WithEnv(map[string]string{"GREETING": "hi there"}), hostkit.WithStdin(strings.NewReader("from stdin\n")))
		if err != nil {
			t.Fatal(err)
		}
		if want := (hostkit.Result{Status: 5, Stdout: "hi there\nfrom stdin\n", Stderr: "oops\n"}); res != want {
			t.Fatalf("Execute: %+v, want %+v", res, want)
		}
		big := []byte(strings.Repeat("0123456789abcdef", 1<<14)) // 256 KiB
		if err := h.WriteFile(ctx, "/tmp/big", big, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := h.ReadFile(ctx, "/tmp/big")
		if err != nil || string(got) != string(big) {
			t.Fatalf("ReadFile /tmp/big: %d bytes, %v; want %d bytes back", len(got), err, len(big))
		}
		res, err = h.Execute(ctx, "stat -c %a /tmp/big; md5sum < /tmp/big")
		if err != nil || !strings.HasPrefix(res.Stdout, "600\n") {
			t.Fatalf("stat written file: %+v, %v", res, err)
		}
		// Reading through a symbolic link (busybox applets are links).
		if got, err := h.ReadFile(ctx, "/bin/sh"); err != nil || len(got) < 100000 {
			t.Fatalf("ReadFile /bin/sh (symlink to busybox): %d bytes, %v", len(got), err)
		}
		if _, err := h.ReadFile(ctx, "/no/such/file"); err == nil {
			t.Fatal("ReadFile of a missing file succeeded")
		}
		if _, err := h.ReadFile(ctx, "/tmp"); err == nil {
			t.Fatal("ReadFile of a directory succeeded")
		}
		// A record holding only the id rebuilds the host (container found by label).
		h2, err := p.Connect(ctx, &inventory.Record{Hostname: rec.Hostname, Broker: &inventory.Meta{ID: rec.Broker.ID}})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := h2.Execute(ctx, "cat /tmp/big | wc -c"); err != nil || strings.TrimSpace(res.Stdout) != fmt.Sprint(len(big)) {
			t.Fatalf("host from id-only record: %+v, %v", res, err)
		}
		h2.Close()
		if err := p.Checkin(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if ids, err := containersWithID(ctx, p, rec.Broker.ID); err != nil || len(ids) != 0 {
			t.Fatalf("containers left after checkin: %v, %v", ids, err)
		}
		if _, err := h.Execute(ctx, "true"); err == nil {
			t.Fatal("Execute after checkin succeeded")
		}
	})
}

func TestCountConcurrent(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		const n = 5
		ids := make([]string, n)
		recs := make([]*inventory.Record, n)
		for i := range ids {
			ids[i] = inventory.NewID()
		}
		t.Cleanup(func() {
			for _, id := range ids {
				_ = p.Checkin(context.Background(), &inventory.Record{Broker: &inventory.Meta{ID: id}})
			}
		})
		var g errgroup.Group
		for i := range n {
			g.Go(func() error {
				made, err := p.Checkout(ctx, providers.CheckoutRequest{ID: ids[i], Args: map[string]any{"container_host": sshdImage}})
				if err != nil {
					return err
				}
				rec := made.Record(ids[i])
				recs[i] = rec
				h, err := p.Connect(ctx, rec)
				if err != nil {
					return err
				}
				defer h.Close()
				res, err := h.Execute(ctx, "hostname")
				if err != nil {
					return err
				}
				if strings.TrimSpace(res.Stdout) != rec.Hostname {
					return fmt.Errorf("host %d: hostname %q, record says %q", i, res.Stdout, rec.Hostname)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		cids := map[string]bool{}
		for _, rec := range recs {
			cid := rec.Broker.Data["container_id"].(string)
			if cids[cid] {
				t.Errorf("container %s given twice", cid)
			}
			cids[cid] = true
		}
		var cg errgroup.Group
		for _, rec := range recs {
			cg.Go(func() error { return p.Checkin(ctx, rec) })
		}
		if err := cg.Wait(); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if left, err := containersWithID(ctx, p, id); err != nil || len(left) != 0 {
				t.Errorf("host %s left after checkin: %v, %v", id, left, err)
			}
		}
	})
}

func TestBadImage(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		id := inventory.NewID()
		// Not pulled: no test reaches out of the machine.
		_, err := p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"container_host": missingImage, "pull_policy": "never"}})
		if err == nil {
			t.Fatal("Checkout of a missing image succeeded")
		}
		if n := strings.Count(err.Error(), missingImage); n != 1 {
			t.Errorf("error %q names the image %s %d times, want once", err, missingImage, n)
		}
		if left, lerr := containersWithID(ctx, p, id); lerr != nil || len(left) != 0 {
			t.Errorf("containers left after a failed checkout: %v, %v", left, lerr)
		}
		// An image whose command exits at once: the error says so, and
		// nothing is left behind.
		_, err = p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"container_host": sshdImage, "command": "exit 3"}})
		if err == nil {
			t.Fatal("Checkout of a container that exits succeeded")
		}
		if !strings.Contains(err.Error(), "exit code 3") {
			t.Errorf("error %q does not say the container exited with code 3", err)
		}
		if left, lerr := containersWithID(ctx, p, id); lerr != nil || len(left) != 0 {
			t.Errorf("containers left after a failed checkout: %v, %v", left, lerr)
		}
		if _, err := p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"container_app": busyboxImage}}); err == nil || !strings.Contains(err.Error(), "container_host") {
			t.Errorf("Checkout without container_host: %v, want an error naming container_host", err)
		}
	})
}

func TestMissingEngine(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nonexistent.sock")
	_, err := container.Open(t.Context(), providers.Config{
		Provider: container.Name,
		Settings: map[string]any{"host_uri": "unix://" + sock},
		Dir:      t.TempDir(),
	})
	if err == nil {
		t.Fatal("Open with a nonexistent socket succeeded")
	}
	if !strings.Contains(err.Error(), sock) || !strings.Contains(err.Error(), "tried") {
		t.Errorf("error %q does not say what was tried (%s)", err, sock)
	}
	// With no settings, every default address is named.
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	t.Setenv("CONTAINER_HOST", "unix://"+sock+"2")
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	var logged bytes.Buffer
	p, err := container.Open(t.Context(), providers.Config{Provider: container.Name, Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		for _, want := range []string{"DOCKER_HOST", "CONTAINER_HOST", "podman.sock"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
	} else {
		// /var/run/docker.sock answered, which is right too; but the user
		// asked for DOCKER_HOST, so that it did not answer is said.
		p.Close()
		if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), sock) {
			t.Errorf("no warning naming the DOCKER_HOST that did not answer; log:\n%s", logged.String())
		}
	}
	_, err = container.Open(t.Context(), providers.Config{Settings: map[string]any{"runtime": "lxc"}})
	if err == nil || !strings.Contains(err.Error(), "lxc") {
		t.Errorf("bad runtime setting: %v, want an error naming it", err)
	}
}

func TestCheckinByIDOnly(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": busyboxImage, "command": "sleep 3600"}, nil)
		intent := &inventory.Record{Name: rec.Name, Broker: &inventory.Meta{ID: rec.Broker.ID}}
		for i := range 2 {
			if err := p.Checkin(ctx, intent); err != nil {
				t.Fatalf("Checkin %d from an id-only record: %v", i, err)
			}
		}
		if left, err := containersWithID(ctx, p, rec.Broker.ID); err != nil || len(left) != 0 {
			t.Fatalf("left after checkin: %v, %v", left, err)
		}
		// A foreign record (no broker id) is found by its name.
		rec2 := checkout(t, ctx, p, map[string]any{"container_host": busyboxImage, "command": "sleep 3600"}, nil)
		if err := p.Checkin(ctx, &inventory.Record{Hostname: rec2.Hostname, Name: rec2.Name}); err != nil {
			t.Fatal(err)
		}
		if left, err := containersWithID(ctx, p, rec2.Broker.ID); err != nil || len(left) != 0 {
			t.Fatalf("left after checkin by name: %v, %v", left, err)
		}
	})
}

func TestSync(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		user := "synctest-" + inventory.NewID()
		labels := map[string]string{"user": user}
		a := checkout(t, ctx, p, map[string]any{"container_host": sshdImage}, labels)
		b := checkout(t, ctx, p, map[string]any{"container_host": busyboxImage, "command": "sleep 3600"}, labels)
		_ = checkout(t, ctx, p, map[string]any{"container_host": busyboxImage, "command": "sleep 3600"}, map[string]string{"user": user + "-other"})
		recs, err := p.Sync(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*inventory.Record{}
		for _, r := range recs {
			got[r.ID()] = r
		}
		if len(recs) != 2 || got[a.ID()] == nil || got[b.ID()] == nil {
			t.Fatalf("Sync(%s) = %d records %v, want exactly %s and %s", user, len(recs), reflect.ValueOf(got).MapKeys(), a.ID(), b.ID())
		}
		sa := got[a.ID()]
		if sa.Name != a.Name || sa.Hostname != a.Hostname || sa.Broker.SSH == nil || *sa.Broker.SSH != *a.Broker.SSH {
			t.Errorf("synced record %+v %+v differs from checkout's %+v %+v", sa, sa.Broker.SSH, a, a.Broker.SSH)
		}
		if sa.Args["container_host"] != sshdImage {
			t.Errorf("synced args %v lack the image", sa.Args)
		}
		h, err := p.Connect(ctx, sa)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if res, err := h.Execute(ctx, "true"); err != nil || res.Status != 0 {
			t.Fatalf("host from synced record: %+v, %v", res, err)
		}
	})
}

func TestExecuteOneShot(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		before := oneShots(t, ctx, p)
		out, err := p.Execute(ctx, map[string]any{
			"container_app": busyboxImage,
			"command":       "echo \"$A\"; echo err >&2; exit 4",
			"env":           map[string]any{"A": "value of A"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := (hostkit.Result{Status: 4, Stdout: "value of A\n", Stderr: "err\n"}); out != want {
			t.Fatalf("Execute = %#v, want %#v", out, want)
		}
		if after := oneShots(t, ctx, p); after != before {
			t.Errorf("one-shot containers: %d before, %d after (not removed)", before, after)
		}
		if _, err := p.Execute(ctx, map[string]any{"container_app": missingImage, "pull_policy": "never"}); err == nil || !strings.Contains(err.Error(), missingImage) {
			t.Errorf("Execute of a missing image: %v, want an error naming it", err)
		}
		// Output beyond what the engine's log keeps (Docker rotates it at
		// 10 MB here) arrives whole: Execute attaches before the start.
		out, err = p.Execute(ctx, map[string]any{"container_app": busyboxImage, "command": "seq 1 3000000; echo done >&2"})
		if err != nil {
			t.Fatal(err)
		}
		res := out.(hostkit.Result)
		if n := len(res.Stdout); n != 22888896 || !strings.HasPrefix(res.Stdout, "1\n2\n") || !strings.HasSuffix(res.Stdout, "\n3000000\n") || res.Stderr != "done\n" {
			t.Errorf("Execute of seq 1 3000000: %d bytes of stdout (want 22888896), starting %.10q, stderr %q", n, res.Stdout, res.Stderr)
		}
	})
}

func oneShots(t *testing.T, ctx context.Context, p *container.Provider) int {
	res, err := p.Client().ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", container.LabelOneShot+"=true")})
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Items)
}

func TestDescribe(t *testing.T) {
	p := open(t, engines[0], nil)
	out, err := p.Describe(t.Context(), "")
	if err != nil || !strings.Contains(out, sshdImage) || !strings.Contains(out, busyboxImage) {
		t.Fatalf("Describe: %q, %v; want the test images listed", out, err)
	}
	out, err = p.Describe(t.Context(), sshdImage)
	if err != nil || !strings.Contains(out, "22/tcp") || !strings.Contains(out, "ssh: true") {
		t.Fatalf("Describe %s: %q, %v", sshdImage, out, err)
	}
}

func TestRegistered(t *testing.T) {
	d, name, err := providers.Lookup("container")
	if err != nil || name != container.Name {
		t.Fatalf("Lookup: %q, %v", name, err)
	}
	if got := d.ArgKeys(); !reflect.DeepEqual(got, []string{"container_host", "container_app"}) {
		t.Errorf("ArgKeys = %v", got)
	}
	if p, err := providers.Infer(map[string]any{"container_host": "x"}); err != nil || p != container.Name {
		t.Errorf("Infer(container_host) = %q, %v", p, err)
	}
}

// MappedPort gives the loopback address a port is published on: reaching
// sshd through it (port 22, published because ports names it) gives
// sshd's banner.
func TestMappedPort(t *testing.T) {
	forEngine(t, func(t *testing.T, e engine) {
		p := open(t, e, nil)
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": sshdImage, "ports": "22 8080 53/udp"}, nil)
		h, err := p.Connect(ctx, rec)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		for _, port := range []string{"22", "22/tcp", "8080", "53/udp"} {
			addr, err := container.MappedPort(rec, port)
			if err != nil || !strings.HasPrefix(addr, "127.0.0.1:") {
				t.Errorf("MappedPort(%s) = %q, %v; want an address on 127.0.0.1", port, addr, err)
			}
		}
		addr, _ := container.MappedPort(rec, "22")
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		banner := make([]byte, 4)
		if _, err := io.ReadFull(conn, banner); err != nil || string(banner) != "SSH-" {
			t.Errorf("through %s: %q, %v; want sshd's banner", addr, banner, err)
		}
		_, err = container.MappedPort(rec, "9999")
		if err == nil || !strings.Contains(err.Error(), "22/tcp, 53/udp, 8080/tcp") {
			t.Errorf("MappedPort(9999): %v; want an error listing the published ports", err)
		}
	})
}
