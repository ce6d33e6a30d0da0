package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/brokertest"
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/kubernetes"
	"github.com/hostbroker/broker/providers/providertest"
)

// TestConformance runs the provider contract on pods of the sshd image
// (SSH through exec) and of busybox (exec itself).
func TestConformance(t *testing.T) {
	c := needCluster(t)
	for _, image := range []string{sshdImage, busyboxImage} {
		t.Run(strings.NewReplacer("/", "_", ":", "_").Replace(image), func(t *testing.T) {
			cfg := c.config(t, nil)
			providertest.Run(t, func(t *testing.T) providers.Provider { return open(t, cfg) }, providertest.Options{
				Args:               map[string]any{kubernetes.ArgImage: image},
				BadArgs:            map[string]any{kubernetes.ArgImage: "brokertest/no-such-image:0"},
				BadArgsMention:     "no-such-image",
				Driver:             kubernetes.Driver{},
				Config:             cfg,
				BadSettings:        map[string]any{"image_pull_policy": "Sometimes"},
				BadSettingsMention: "image_pull_policy",
				Exists:             c.exists,
				Timeout:            3 * time.Minute,
			})
		})
	}
}

// checkout checks out one pod with p and registers its check-in.
func checkout(t *testing.T, p *kubernetes.Provider, args map[string]any) *inventory.Record {
	t.Helper()
	id := inventory.NewID()
	res, err := p.Checkout(t.Context(), providers.CheckoutRequest{ID: id, Args: args, Labels: map[string]string{"test": t.Name()}})
	if err != nil {
		t.Fatal(err)
	}
	rec := res.Record(id)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.Checkin(ctx, rec); err != nil {
			t.Error(err)
		}
	})
	return rec
}

// TestCheckinByAnotherInstance: a provider opened afresh (another
// process, the reaper) checks in a pod from its record alone, and from
// the id alone.
func TestCheckinByAnotherInstance(t *testing.T) {
	c := needCluster(t)
	cfg := c.config(t, nil)
	a := open(t, cfg)
	for _, full := range []bool{true, false} {
		rec := checkout(t, a, map[string]any{kubernetes.ArgImage: busyboxImage})
		b := open(t, cfg)
		give := rec
		if !full {
			give = &inventory.Record{Broker: &inventory.Meta{ID: rec.ID()}}
		}
		if err := b.Checkin(t.Context(), give); err != nil {
			t.Fatal(err)
		}
		c.noPodLeft(t, rec.ID())
	}
}

// TestSSHHost drives a pod of the sshd image through a broker, as a suite
// does: commands, SFTP, a copy between two pods, the record's SSH block.
func TestSSHHost(t *testing.T) {
	c := needCluster(t)
	b := newBroker(t, c, "")
	hosts := brokertest.Hosts(t, broker.Request{Count: 2, Args: map[string]any{kubernetes.ArgImage: sshdImage}}, brokertest.WithBroker(b))
	ctx := t.Context()
	for _, h := range hosts {
		rec := brokertest.Record(t, h, brokertest.WithBroker(b))
		if rec.Broker.SSH == nil || rec.Broker.SSH.Transport != kubernetes.TransportStream || rec.Broker.SSH.HostKey == "" {
			t.Fatalf("record's ssh block = %+v; want transport %s with a pinned host key", rec.Broker.SSH, kubernetes.TransportStream)
		}
		res, err := h.Execute(ctx, "echo out; echo err >&2; hostname; exit 3")
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != 3 || res.Stdout != "out\n"+rec.Hostname+"\n" || res.Stderr != "err\n" {
			t.Fatalf("Execute = %+v; want status 3, out and the pod's name on stdout, err on stderr", res)
		}
		if _, err := h.SFTP(ctx); err != nil {
			t.Fatalf("SFTP: %v", err)
		}
	}
	data := bytes.Repeat([]byte("pod\n"), 100000)
	if err := hosts[0].WriteFile(ctx, "/tmp/data", data, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := hosts[0].CopyTo(ctx, hosts[1], "/tmp/data", "/tmp/copied"); err != nil {
		t.Fatal(err)
	}
	got, err := hosts[1].ReadFile(ctx, "/tmp/copied")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadFile after CopyTo: %d bytes, %v; want %d bytes", len(got), err, len(data))
	}
}

// TestExecHost drives a pod without sshd through exec: stdin, env, exit
// status, files, a missing file.
func TestExecHost(t *testing.T) {
	c := needCluster(t)
	p := open(t, c.config(t, nil))
	rec := checkout(t, p, map[string]any{kubernetes.ArgImage: busyboxImage, kubernetes.ArgEnv: map[string]any{"GREETING": "hello"}})
	if rec.Broker.SSH != nil || rec.Broker.Data["transport"] != kubernetes.TransportExec {
		t.Fatalf("busybox pod: ssh %+v, data %v; want the exec transport", rec.Broker.SSH, rec.Broker.Data)
	}
	h, err := p.Connect(t.Context(), rec)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx := t.Context()
	res, err := h.Execute(ctx, `echo "$GREETING $X"; cat; echo e >&2; exit 4`, hostkit.WithStdin(strings.NewReader("in\n")), hostkit.WithEnv(map[string]string{"X": "it's"}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 4 || res.Stdout != "hello it's\nin\n" || res.Stderr != "e\n" {
		t.Fatalf("Execute = %+v", res)
	}
	if err := h.WriteFile(ctx, "/tmp/f", []byte("content"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := h.ReadFile(ctx, "/tmp/f"); err != nil || string(got) != "content" {
		t.Fatalf("ReadFile = %q, %v", got, err)
	}
	if res, _ := h.Execute(ctx, "stat -c %a /tmp/f"); strings.TrimSpace(res.Stdout) != "600" {
		t.Errorf("mode of a file written 0600: %q", res.Stdout)
	}
	if _, err := h.ReadFile(ctx, "/tmp/none"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a missing file: %v; want fs.ErrNotExist", err)
	}
	if _, err := h.SFTP(ctx); !errors.Is(err, hostkit.ErrNoSSH) {
		t.Errorf("SFTP on an exec host: %v; want ErrNoSSH", err)
	}
}

// TestPodFailures: each way a pod does not come up is a clear error, and
// no pod is left.
func TestPodFailures(t *testing.T) {
	c := needCluster(t)
	cases := []struct {
		name     string
		settings map[string]any
		args     map[string]any
		want     []string
	}{
		{"ImageMissing", nil, map[string]any{kubernetes.ArgImage: "brokertest/no-such-image:0"}, []string{"ErrImageNeverPull", "no-such-image"}},
		{"Unschedulable", map[string]any{"node_selector": map[string]any{"brokertest/no-such-node": "x"}},
			map[string]any{kubernetes.ArgImage: busyboxImage}, []string{"Unschedulable", "node affinity/selector"}},
		{"CommandEnds", nil, map[string]any{kubernetes.ArgImage: busyboxImage, kubernetes.ArgCommand: "echo bye; exit 3"}, []string{"ended", "exit code 3"}},
		{"CrashLoopBackOff", map[string]any{"restart_policy": "Always"},
			map[string]any{kubernetes.ArgImage: busyboxImage, kubernetes.ArgCommand: "exit 3"}, []string{"CrashLoopBackOff"}},
		{"BadArgument", nil, map[string]any{kubernetes.ArgImage: busyboxImage, "kubernetes_imag": "x"}, []string{`unknown argument "kubernetes_imag"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := open(t, c.config(t, tc.settings))
			id := inventory.NewID()
			_, err := p.Checkout(t.Context(), providers.CheckoutRequest{ID: id, Args: tc.args})
			errorContains(t, err, tc.want...)
			c.noPodLeft(t, id)
		})
	}
}

// TestBadConfig: no kubeconfig, a wrong context, bad values. Only the
// wrong context needs a cluster (its kubeconfig).
func TestBadConfig(t *testing.T) {
	t.Run("NoKubeconfig", func(t *testing.T) {
		t.Setenv("KUBECONFIG", "")
		t.Setenv("HOME", t.TempDir())
		t.Setenv("KUBERNETES_SERVICE_HOST", "")
		_, err := kubernetes.Open(providers.Config{Provider: kubernetes.Name, Settings: map[string]any{}, Dir: t.TempDir()})
		errorContains(t, err, "no cluster configured", "no kubeconfig", "not in a cluster")
	})
	t.Run("MissingFile", func(t *testing.T) {
		_, err := kubernetes.Open(providers.Config{Provider: kubernetes.Name, Settings: map[string]any{"kubeconfig": "/nonexistent/kubeconfig"}})
		var se *providers.SettingError
		if !errors.As(err, &se) || se.Key != "kubeconfig" {
			t.Fatalf("error %v; want a SettingError on kubeconfig", err)
		}
		errorContains(t, err, "/nonexistent/kubeconfig")
	})
	t.Run("WrongContext", func(t *testing.T) {
		c := needCluster(t)
		_, err := kubernetes.Open(c.config(t, map[string]any{"context": "nowhere"}))
		var se *providers.SettingError
		if !errors.As(err, &se) || se.Key != "context" {
			t.Fatalf("error %v; want a SettingError on context", err)
		}
		errorContains(t, err, `context "nowhere"`, c.kubeconfig, "brokertest")
	})
	t.Run("BadValues", func(t *testing.T) {
		for key, v := range map[string]any{"namespace": "Not_A_Namespace", "resources": map[string]any{"requests": map[string]any{"cpu": "lots"}},
			"timeout": "soon", "labels": []any{"x"}, "restart_policy": "Sometimes"} {
			err := kubernetes.Driver{}.CheckSettings(providers.Config{Settings: map[string]any{key: v}})
			var se *providers.SettingError
			if !errors.As(err, &se) || se.Key != key {
				t.Errorf("%s: %v: error %v; want a SettingError on %s", key, v, err, key)
			}
		}
	})
}

// TestAPIServerDownMidCheckout: the API server refuses connections while
// a pod starts (client-go retries a reset connection, not a refused one).
// The checkout fails saying so, and the pod is deleted once the server
// answers again (within the clean-up's deadline, the timeout setting).
func TestAPIServerDownMidCheckout(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the outage lasts 5 s")
	}
	c := needCluster(t)
	proxy := newCutProxy(t, c)
	p := open(t, c.config(t, map[string]any{"kubeconfig": proxy.kubeconfig, "timeout": 30}))
	id := inventory.NewID()
	// Cut the connection as soon as the pod exists, restore it 5 s later.
	go func() {
		for {
			if pods, _ := c.podsOf(context.Background(), id); len(pods) > 0 {
				proxy.cut(5 * time.Second)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	_, err := p.Checkout(t.Context(), providers.CheckoutRequest{ID: id, Args: map[string]any{kubernetes.ArgImage: sshdImage}})
	if err == nil {
		// The pod came up before the cut took effect: check it in, and
		// the test proved nothing.
		_ = p.Checkin(t.Context(), &inventory.Record{Broker: &inventory.Meta{ID: id}})
		t.Skip("the pod ran before the API server's connection was cut")
	}
	t.Log(err)
	errorContains(t, err, "kubernetes: ", "the API server does not answer")
	c.noPodLeft(t, id)
}

// cutProxy forwards TCP connections to the API server until cut: then it
// stops listening (connections are refused, which client-go does not
// retry, as it retries a connection reset) and closes every connection.
type cutProxy struct {
	kubeconfig string
	addr       string // the proxy's
	target     string // the API server's
	mu         sync.Mutex
	ln         net.Listener
	conns      []net.Conn
}

func newCutProxy(t *testing.T, c *cluster) *cutProxy {
	t.Helper()
	raw, err := os.ReadFile(c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	// The kubeconfig's server, rewritten to the proxy.
	var target string
	for _, line := range strings.Split(string(raw), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "server: https://"); ok {
			target = s
		}
	}
	if target == "" {
		t.Skip("kubeconfig has no https server line to proxy")
	}
	p := &cutProxy{target: target}
	if err := p.listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.ln != nil {
			p.ln.Close()
		}
		for _, c := range p.conns {
			c.Close()
		}
	})
	// The API server's certificate is for 127.0.0.1, as is the proxy.
	out := strings.ReplaceAll(string(raw), "server: https://"+target, "server: https://"+p.addr)
	p.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p.kubeconfig, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// listen accepts on addr and forwards each connection to the target.
func (p *cutProxy) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, up)
			p.mu.Unlock()
			go func() { io.Copy(up, in); up.Close() }()
			go func() { io.Copy(in, up); in.Close() }()
		}
	}()
	return nil
}

// cut refuses connections for d and closes those open.
func (p *cutProxy) cut(d time.Duration) {
	p.mu.Lock()
	p.ln.Close()
	p.ln = nil
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	time.AfterFunc(d, func() { _ = p.listen(p.addr) })
}

// newBroker is a broker whose settings point the Kubernetes provider at
// the cluster (namespace ns, or the kubeconfig's), in t's directory.
func newBroker(t *testing.T, c *cluster, ns string) *broker.Broker {
	t.Helper()
	dir := t.TempDir()
	settings := "Kubernetes:\n  kubeconfig: " + c.kubeconfig + "\n  image_pull_policy: Never\n  pod_wait: 90\n"
	if ns != "" {
		settings += "  namespace: " + ns + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), []byte(settings), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BROKER_DIRECTORY", dir)
	b, err := broker.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestPoolOfPods: parallel subtests share a pool of 2 pods; no more than
// 2 are ever checked out.
func TestPoolOfPods(t *testing.T) {
	c := needCluster(t)
	b := newBroker(t, c, "")
	pool := brokertest.NewPool(t, broker.Request{Args: map[string]any{kubernetes.ArgImage: busyboxImage}}, 2, brokertest.WithBroker(b))
	t.Run("holders", func(t *testing.T) {
		for i := range 8 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				h := pool.Lease(t)
				res, err := h.Execute(t.Context(), "echo $((6*7))")
				if err != nil || res.Stdout != "42\n" {
					t.Fatalf("Execute: %+v, %v", res, err)
				}
			})
		}
	})
	if checkouts, _ := pool.Stats(); checkouts != 2 {
		t.Errorf("the pool checked out %d pods for 8 holders; want 2", checkouts)
	}
}
