package ssh

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// childEnv passes a lab's configuration to a child process of the test
// binary (TestRemoteLeaseChild), which gets a broker directory of its own.
func childEnv(cfg providers.Config, role string, extra ...string) []string {
	var hosts []string
	for _, h := range cfg.Settings["hosts"].([]any) {
		hosts = append(hosts, h.(string))
	}
	return append(append(os.Environ(), "SSHLEASE_ROLE="+role,
		"SSHLEASE_HOSTS="+strings.Join(hosts, ","),
		"SSHLEASE_KNOWN="+cfg.Settings["known_hosts"].([]any)[0].(string),
		"SSHLEASE_USER="+cfg.SSH.Username, "SSHLEASE_KEY="+cfg.SSH.KeyFilename), extra...)
}

// childProvider opens the provider a child process uses: the lab's, in a
// broker directory of its own.
func childProvider(t *testing.T, settings map[string]any) *Provider {
	var hosts []any
	for _, h := range strings.Split(os.Getenv("SSHLEASE_HOSTS"), ",") {
		hosts = append(hosts, h)
	}
	settings["hosts"] = hosts
	settings["known_hosts"] = []any{os.Getenv("SSHLEASE_KNOWN")}
	p := open(t, providers.Config{Provider: Name, Settings: settings, Dir: t.TempDir(),
		SSH: providers.SSHSettings{Username: os.Getenv("SSHLEASE_USER"), KeyFilename: os.Getenv("SSHLEASE_KEY"), ConnectTimeout: 30 * time.Second}})
	t.Cleanup(func() { p.Close() })
	return p
}

// TestRemoteLeaseChild is the child process of the tests below, by
// SSHLEASE_ROLE: "loop" leases and returns a host SSHLEASE_ROUNDS times,
// proving on the host itself that no one else holds it meanwhile; "hold"
// leases a host, says so, and holds it until killed.
func TestRemoteLeaseChild(t *testing.T) {
	switch os.Getenv("SSHLEASE_ROLE") {
	case "loop":
		childLoop(t)
	case "hold":
		p := childProvider(t, map[string]any{"lease_wait": 0})
		rec, err := checkout(p, inventory.NewID(), nil)
		if err != nil {
			fmt.Println("LEASE refused", err)
			return
		}
		fmt.Println("LEASE leased", rec.Name)
		time.Sleep(time.Hour)
	default:
		t.Skip("a child process of TestTwoDirectoriesNoDoubleLease and TestHolderDeathFreesLease")
	}
}

// childLoop leases a host and, on the host, makes a marker directory that
// must not exist (a second holder would have it), then removes it and
// checks the host in; it prints a line per round.
func childLoop(t *testing.T) {
	p := childProvider(t, map[string]any{"lease_wait": 120})
	rounds, _ := strconv.Atoi(os.Getenv("SSHLEASE_ROUNDS"))
	marker := os.Getenv("SSHLEASE_MARKER")
	ctx := context.Background()
	for i := range rounds {
		rec, err := checkout(p, inventory.NewID(), nil)
		if err != nil {
			fmt.Println("ROUND error", err)
			return
		}
		h, err := p.Connect(ctx, rec)
		if err != nil {
			fmt.Println("ROUND error", err)
			return
		}
		// The host's own sshd port names the marker, as it does the lease.
		m := marker + "-" + strings.ReplaceAll(rec.Name, ":", "_")
		res, err := h.Execute(ctx, "mkdir "+m+" && sleep 0.0$(( $$ % 5 )) && rmdir "+m)
		h.Close()
		switch {
		case err != nil:
			fmt.Println("ROUND error", err)
			return
		case res.Status != 0:
			fmt.Printf("ROUND double %s %d: %s\n", rec.Name, i, strings.TrimSpace(res.Stderr))
		default:
			fmt.Println("ROUND ok", rec.Name)
		}
		if err := p.Checkin(ctx, rec); err != nil {
			fmt.Println("ROUND error", err)
			return
		}
	}
}

// Six processes, each with its own broker directory (as the README's
// per-test BROKER_DIRECTORY makes them), lease and return the two hosts
// of one pool 27 times each, waiting for a free one: each proves on the
// host that no one else holds it while it does. 162 leases, none double.
// Before the host recorded the lease, every process leased both at once.
func TestTwoDirectoriesNoDoubleLease(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 162 leases by 6 processes")
	}
	cfg, _ := lab(t, 2)
	const procs, rounds = 6, 27
	marker := filepath.Join("/tmp", "broker-lease-test-"+inventory.NewID())
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, doubles := 0, 0
	per := map[string]int{}
	start := time.Now()
	for range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRemoteLeaseChild$", "-test.timeout=10m")
		cmd.Env = childEnv(cfg, "loop", "SSHLEASE_ROUNDS="+strconv.Itoa(rounds), "SSHLEASE_MARKER="+marker)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				line, found := strings.CutPrefix(sc.Text(), "ROUND ")
				if !found {
					continue
				}
				mu.Lock()
				switch kind, rest, _ := strings.Cut(line, " "); kind {
				case "ok":
					ok++
					per[rest]++
				case "double":
					doubles++
					t.Errorf("leased twice: %s", rest)
				default:
					t.Errorf("child: %s", line)
				}
				mu.Unlock()
			}
			cmd.Wait()
		})
	}
	wg.Wait()
	t.Logf("%d leases by %d processes in %v, %d double; per host %v", ok, procs, time.Since(start).Round(time.Millisecond), doubles, per)
	if ok != procs*rounds || doubles != 0 {
		t.Fatalf("%d leases, %d double; want %d, 0", ok, doubles, procs*rounds)
	}
}

// A process of another broker directory holds the only host: a checkout
// is refused (lease_wait 0) or waits; once the holder is killed (SIGKILL:
// no check-in, its renewals stop), the waiting checkout gets the host at
// once, since the holder ran on this machine, long before its lease
// (lease_ttl 60 s) would expire.
func TestHolderDeathFreesLease(t *testing.T) {
	cfg, _ := lab(t, 1)
	cmd := exec.Command(os.Args[0], "-test.run=^TestRemoteLeaseChild$")
	cmd.Env = childEnv(cfg, "hold")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	line := "no report"
	for sc.Scan() {
		if l, found := strings.CutPrefix(sc.Text(), "LEASE "); found {
			line = l
			break
		}
	}
	if !strings.HasPrefix(line, "leased ") {
		t.Fatalf("child: %s", line)
	}

	cfg.Dir = t.TempDir()
	cfg.Settings["lease_ttl"] = 60
	if _, err := checkout(open(t, cfg), inventory.NewID(), nil); err == nil || !strings.Contains(err.Error(), "leased") {
		t.Fatalf("checkout from another directory while the child holds the host: %v, want a refusal", err)
	}
	cfg.Settings["lease_wait"] = 120
	p := open(t, cfg)
	t.Cleanup(func() { p.Close() })
	type result struct {
		rec *inventory.Record
		err error
		at  time.Time
	}
	got := make(chan result, 1)
	go func() {
		rec, err := checkout(p, inventory.NewID(), nil)
		got <- result{rec, err, time.Now()}
	}()
	select {
	case r := <-got:
		t.Fatalf("leased while the holder lives: %v, %v", r.rec, r.err)
	case <-time.After(time.Second):
	}
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil {
		t.Fatalf("checkout after the holder's death: %v", r.err)
	}
	after := r.at.Sub(killed)
	t.Logf("leased %v after the holder's SIGKILL (lease_ttl 60 s)", after.Round(time.Millisecond))
	// Not the expiry: well before it, however loaded the machine.
	if after > 30*time.Second {
		t.Fatalf("leased %v after the holder's death: the expiry, not the death, freed it", after)
	}
	if err := p.Checkin(context.Background(), r.rec); err != nil {
		t.Fatal(err)
	}
}

// plantLease writes the host's lease of addr as a holder on another
// machine would have it, expiring in ttl.
func plantLease(t *testing.T, p *Provider, addr, id string, ttl time.Duration) {
	t.Helper()
	a, err := p.remoteOp(t.Context(), addr, "show", "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(addr, ":")
	owner, _ := json.Marshal(inventory.Owner{Run: "r", PID: 1, Started: 1, BootID: "elsewhere", Machine: "lab-runner-elsewhere"})
	line := fmt.Sprintf("%s %d %s\n", id, a.Now+int64(ttl/time.Second), owner)
	// The test's sshd runs on this machine: its /tmp is ours.
	if err := os.WriteFile(filepath.Join(leaseDir, port+".lease"), []byte(line), 0o666); err != nil {
		t.Fatal(err)
	}
}

// A lease held from another machine is respected until it expires, then
// taken; one its holder renews outlives its lease_ttl.
func TestLeaseExpiryAndRenewal(t *testing.T) {
	cfg, servers := lab(t, 1)
	addr := servers[0].Addr
	cfg.Settings["lease_wait"] = 60
	p := open(t, cfg)
	t.Cleanup(func() { p.Close() })
	plantLease(t, p, addr, "0123456789ab", 4*time.Second)
	start := time.Now()
	rec, err := checkout(p, inventory.NewID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	waited := time.Since(start)
	t.Logf("a lease of another machine expiring in 4 s was taken after %v", waited.Round(time.Millisecond))
	// The host's clock counts whole seconds, read just before the lease
	// was planted: not before about 3 s.
	if waited < 2500*time.Millisecond {
		t.Fatalf("took another machine's lease after %v, before it expired", waited)
	}
	if err := p.Checkin(context.Background(), rec); err != nil {
		t.Fatal(err)
	}

	// Renewed: a holder with lease_ttl 6 s (a renewal every 2 s, which a
	// loaded machine can make late) keeps the host for 8 s and more.
	cfg.Settings["lease_ttl"] = 6
	holder := open(t, cfg)
	t.Cleanup(func() { holder.Close() })
	rec, err = checkout(holder, inventory.NewID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	other := cfg
	other.Dir = t.TempDir()
	other.Settings = map[string]any{}
	for k, v := range cfg.Settings {
		other.Settings[k] = v
	}
	other.Settings["lease_wait"] = 10
	q := open(t, other)
	t.Cleanup(func() { q.Close() })
	if got, err := checkout(q, inventory.NewID(), nil); err == nil {
		t.Fatalf("leased %s while its holder renews the lease", got.Name)
	}
	// Checked in: free at once.
	if err := holder.Checkin(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	other.Settings["lease_wait"] = 0
	q2 := open(t, other)
	t.Cleanup(func() { q2.Close() })
	if _, err := checkout(q2, inventory.NewID(), nil); err != nil {
		t.Fatalf("checkout after the check-in: %v", err)
	}
}

// A checkout that finds the pool exhausted waits for a host: it gets one
// checked in meanwhile; it gives up after lease_wait, or when its context
// ends, saying so.
func TestCheckoutWaitsForFreeHost(t *testing.T) {
	cfg, _ := lab(t, 1)
	holder := open(t, cfg)
	t.Cleanup(func() { holder.Close() })
	rec, err := checkout(holder, inventory.NewID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = t.TempDir()
	cfg.Settings["lease_wait"] = 1
	p := open(t, cfg)
	t.Cleanup(func() { p.Close() })
	start := time.Now()
	_, err = checkout(p, inventory.NewID(), nil)
	if err == nil || !strings.Contains(err.Error(), "lease_wait 1s") || time.Since(start) < time.Second {
		t.Fatalf("checkout of an exhausted pool with lease_wait 1: %v after %v; want a refusal naming lease_wait after 1 s", err, time.Since(start))
	}

	cfg.Settings["lease_wait"] = 300
	p = open(t, cfg)
	t.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := p.Checkout(ctx, providers.CheckoutRequest{ID: inventory.NewID()}); err == nil || ctx.Err() == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("checkout whose context ends while it waits: %v", err)
	}

	got := make(chan error, 1)
	go func() {
		rec, err := checkout(p, inventory.NewID(), nil)
		if err == nil {
			err = p.Checkin(context.Background(), rec)
		}
		got <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := holder.Checkin(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiting checkout: %v", err)
	}
}

// lease_ttl and lease_wait are checked at load: a SettingError naming the
// key; lease_wait 0 is allowed (fail at once).
func TestLeaseSettings(t *testing.T) {
	var d Driver
	for key, v := range map[string]any{"lease_ttl": 1, "lease_wait": "soon"} {
		err := d.CheckSettings(providers.Config{Settings: map[string]any{key: v}})
		se, ok := err.(*providers.SettingError)
		if !ok || se.Key != key {
			t.Errorf("%s: %v: got %v, want a SettingError for %s", key, v, err, key)
		}
	}
	p, err := readSettings(providers.Config{Settings: map[string]any{"lease_ttl": "45", "lease_wait": 0}})
	if err != nil || p.ttl != 45*time.Second || p.wait != 0 {
		t.Fatalf("lease_ttl 45, lease_wait 0: %+v, %v", p, err)
	}
	p, _ = readSettings(providers.Config{Settings: map[string]any{}})
	if p.ttl != DefaultLeaseTTL || p.wait != DefaultLeaseWait {
		t.Fatalf("defaults: ttl %v, wait %v", p.ttl, p.wait)
	}
}
