package ssh

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/internal/proclive"
	"github.com/hostbroker/broker/internal/sshtest"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/providertest"
)

// lab starts n sshd servers sharing one client key and returns a
// configuration whose pool lists them, with a known_hosts file for them.
func lab(t *testing.T, n int) (providers.Config, []*sshtest.Server) {
	t.Helper()
	var servers []*sshtest.Server
	var hosts []any
	var known strings.Builder
	for range n {
		s := sshtest.Start(t)
		servers = append(servers, s)
		hosts = append(hosts, s.Addr)
		host, port, _ := strings.Cut(s.Addr, ":")
		fmt.Fprintf(&known, "[%s]:%s %s\n", host, port, s.HostKeyLine)
	}
	dir := t.TempDir()
	knownFile := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(knownFile, []byte(known.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// Each server has its own client key: authorise the first's on all.
	key := xssh.MarshalAuthorizedKey(servers[0].Signer.PublicKey())
	for _, s := range servers[1:] {
		if err := appendAuthorized(s, key); err != nil {
			t.Fatal(err)
		}
	}
	return providers.Config{
		Provider: Name,
		Instance: "lab",
		// Tests that wait for a host set lease_wait themselves.
		Settings: map[string]any{"hosts": hosts, "known_hosts": []any{knownFile}, "lease_wait": 0},
		SSH:      providers.SSHSettings{Username: servers[0].User, KeyFilename: servers[0].KeyFile, ConnectTimeout: 10 * time.Second},
		Dir:      dir,
		Logger:   slog.New(slog.DiscardHandler),
	}, servers
}

func appendAuthorized(s *sshtest.Server, key []byte) error {
	f, err := os.OpenFile(filepath.Join(s.Dir, "authorized_keys"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(key)
	return errors.Join(err, f.Close())
}

func open(t testing.TB, cfg providers.Config) *Provider {
	t.Helper()
	p, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformance(t *testing.T) {
	cfg, _ := lab(t, 3)
	// Offered after the key, which logs in: the suite checks that it
	// reaches no record, progress data or description.
	cfg.SSH.Password = "pw-" + inventory.NewID()
	var last *Provider
	providertest.Run(t, func(t *testing.T) providers.Provider {
		last = open(t, cfg)
		return last
	}, providertest.Options{
		Args:               map[string]any{ArgKey: "any"},
		BadArgs:            map[string]any{ArgKey: "192.0.2.1:22"},
		BadArgsMention:     "192.0.2.1:22",
		Count:              3,
		Driver:             Driver{},
		Config:             cfg,
		BadSettings:        map[string]any{"hosts": []any{"127.0.0.1:notaport"}},
		BadSettingsMention: "hosts[0]",
		Secrets:            []string{cfg.SSH.Password},
		Exists: func(_ context.Context, rec *inventory.Record) (bool, error) {
			for _, a := range last.hosts {
				if l, err := last.holder(a); err != nil || (l != nil && l.ID == rec.ID()) {
					return l != nil, err
				}
			}
			return false, nil
		},
	})
}

// checkout leases a host for id with args.
func checkout(p *Provider, id string, args map[string]any) (*inventory.Record, error) {
	res, err := p.Checkout(context.Background(), providers.CheckoutRequest{ID: id, Args: args})
	if err != nil {
		return nil, err
	}
	return res.Record(id), nil
}

// Two providers on the same directory (as two processes would be) never
// lease one address twice, and a released address is leased again.
func TestExclusive(t *testing.T) {
	cfg, servers := lab(t, 2)
	ps := []*Provider{open(t, cfg), open(t, cfg)}
	var mu sync.Mutex
	got := map[string]string{}
	var wg sync.WaitGroup
	fails := 0
	for i := range 8 {
		wg.Go(func() {
			id := inventory.NewID()
			rec, err := checkout(ps[i%2], id, map[string]any{ArgKey: true})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if !strings.Contains(err.Error(), "leased") {
					t.Errorf("checkout: %v", err)
				}
				fails++
				return
			}
			if other, dup := got[rec.Name]; dup {
				t.Errorf("%s leased to %s and %s", rec.Name, other, id)
			}
			got[rec.Name] = id
		})
	}
	wg.Wait()
	if len(got) != 2 || fails != 6 {
		t.Fatalf("leased %v with %d refusals; want both addresses once and 6 refusals", got, fails)
	}
	// A specific address, once released, is leased again.
	a := servers[1].Addr
	if _, err := checkout(ps[0], inventory.NewID(), map[string]any{ArgKey: a}); err == nil {
		t.Fatalf("%s leased twice", a)
	}
	if err := ps[1].Checkin(context.Background(), &inventory.Record{Broker: &inventory.Meta{ID: got[a]}}); err != nil {
		t.Fatal(err)
	}
	if rec, err := checkout(ps[0], inventory.NewID(), map[string]any{ArgKey: a}); err != nil || rec.Name != a {
		t.Fatalf("checkout of released %s: %v, %v", a, rec, err)
	}
}

// A lease whose owner died is taken over, unless an inventory record keeps
// the host; a record of a live owner holds an address with no lease file.
func TestInventoryHolds(t *testing.T) {
	cfg, servers := lab(t, 1)
	// Not the default name: leases follow the broker's inventory file.
	cfg.Inventory = filepath.Join(cfg.Dir, "elsewhere.yaml")
	p := open(t, cfg)
	a := servers[0].Addr
	dead := deadOwner(t)
	b, _ := json.Marshal(leaseFile{ID: "deadbeef0001", Owner: dead})
	if err := os.WriteFile(p.path(a, ".lease"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	store := inventory.Open(cfg.Inventory)
	kept := &inventory.Record{Hostname: "127.0.0.1", Name: a, Provider: Name,
		Broker: &inventory.Meta{ID: "deadbeef0001", State: inventory.StateKept, Owner: dead}}
	if err := store.Put(context.Background(), kept); err != nil {
		t.Fatal(err)
	}
	if _, err := checkout(p, inventory.NewID(), nil); err == nil {
		t.Fatal("a kept host was leased")
	}
	kept.Broker.State = inventory.StateReady // stale now: its owner is dead
	if err := store.Put(context.Background(), kept); err != nil {
		t.Fatal(err)
	}
	rec, err := checkout(p, inventory.NewID(), nil)
	if err != nil {
		t.Fatalf("a dead owner's lease was not taken over: %v", err)
	}
	// The stale record's check-in (the reaper's) leaves the new lease.
	if err := p.Checkin(context.Background(), kept); err != nil {
		t.Fatal(err)
	}
	if l, _ := p.holder(a); l == nil || l.ID != rec.ID() {
		t.Fatalf("lease after the stale check-in: %+v, want %s", l, rec.ID())
	}
	if err := p.Checkin(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	// An intent record of a live owner holds the address.
	live := &inventory.Record{Provider: Name, Broker: &inventory.Meta{ID: "0123456789ab", State: inventory.StateCreating,
		Owner: inventory.CurrentOwner("r"), Data: map[string]any{"address": a}}}
	if err := store.Put(context.Background(), live); err != nil {
		t.Fatal(err)
	}
	if _, err := checkout(p, inventory.NewID(), nil); err == nil {
		t.Fatal("an address held by a live owner's intent record was leased")
	}
}

// deadOwner is the owner of a process that has exited.
func deadOwner(t *testing.T) inventory.Owner {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o := inventory.CurrentOwner("dead")
	o.PID = cmd.Process.Pid
	o.Started, _ = proclive.Start(o.PID)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !o.Dead() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return o
}

func TestOpenSettings(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		settings map[string]any
		want     string
	}{
		{map[string]any{}, "hosts"},
		{map[string]any{"hosts": "a"}, "hosts"},
		{map[string]any{"hosts": []any{"a", 5}}, "hosts[1]"},
		{map[string]any{"hosts": []any{"a"}, "username": 3}, "username"},
		{map[string]any{"hosts": []any{"a"}, "known_hosts": "f"}, "known_hosts"},
	} {
		_, err := Open(providers.Config{Settings: c.settings, Dir: dir, SSH: providers.SSHSettings{KeyFilename: "k"}})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%v): %v, want an error naming %s", c.settings, err, c.want)
		}
	}
	p, err := Open(providers.Config{Settings: map[string]any{"hosts": []any{"lab1", "[::1]:2200"}}, Dir: dir,
		SSH: providers.SSHSettings{KeyFilename: "k", Port: 2022, Password: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"lab1:2022", "[::1]:2200"}; fmt.Sprint(p.hosts) != fmt.Sprint(want) {
		t.Errorf("hosts %v, want %v", p.hosts, want)
	}
	rec := p.record(p.hosts[0], "id1")
	b, _ := inventory.Marshal([]*inventory.Record{rec})
	if strings.Contains(string(b), "s3cret") {
		t.Errorf("the record holds the password: %s", b)
	}
}

// Three processes ask a pool of two for a host at once: two get distinct
// addresses and one is refused while they live; once they have exited,
// their leases (owners dead) are taken over.
func TestProcesses(t *testing.T) {
	cfg, _ := lab(t, 2)
	var hosts []string
	for _, h := range cfg.Settings["hosts"].([]any) {
		hosts = append(hosts, h.(string))
	}
	lines := make(chan string, 3)
	var stdins []io.Closer
	var cmds []*exec.Cmd
	for range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLeaseChild$")
		cmd.Env = append(os.Environ(), "SSHLEASE_DIR="+cfg.Dir, "SSHLEASE_HOSTS="+strings.Join(hosts, ","),
			"SSHLEASE_KNOWN="+cfg.Settings["known_hosts"].([]any)[0].(string), "SSHLEASE_USER="+cfg.SSH.Username, "SSHLEASE_KEY="+cfg.SSH.KeyFilename)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stdins, cmds = append(stdins, stdin), append(cmds, cmd)
		go func() {
			line := "no report"
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if l, ok := strings.CutPrefix(sc.Text(), "LEASE "); ok && line == "no report" {
					line = l
					lines <- line
				}
			}
			if line == "no report" {
				lines <- line
			}
		}()
	}
	wait := func() {
		for i := range cmds {
			stdins[i].Close()
			cmds[i].Wait()
		}
	}
	t.Cleanup(wait)
	leased, refused := map[string]bool{}, 0
	for range 3 {
		switch line := <-lines; {
		case strings.HasPrefix(line, "refused ") && strings.Contains(line, "leased"):
			refused++
		case strings.HasPrefix(line, "leased "):
			addr := strings.TrimPrefix(line, "leased ")
			if leased[addr] {
				t.Errorf("%s leased to two processes", addr)
			}
			leased[addr] = true
		default:
			t.Errorf("child: %s", line)
		}
	}
	if len(leased) != 2 || refused != 1 {
		t.Fatalf("leased %v, %d refused; want both addresses and one refusal", leased, refused)
	}
	wait()
	p := open(t, cfg)
	for range 2 {
		if _, err := checkout(p, inventory.NewID(), nil); err != nil {
			t.Fatalf("the leases of exited processes were not taken over: %v", err)
		}
	}
}

// TestLeaseChild is TestProcesses's child: it leases a host of the pool,
// reports, and holds the lease until its stdin closes.
func TestLeaseChild(t *testing.T) {
	dir := os.Getenv("SSHLEASE_DIR")
	if dir == "" {
		t.Skip("the child process of TestProcesses")
	}
	var hosts []any
	for _, h := range strings.Split(os.Getenv("SSHLEASE_HOSTS"), ",") {
		hosts = append(hosts, h)
	}
	p := open(t, providers.Config{Settings: map[string]any{"hosts": hosts, "lease_wait": 0, "known_hosts": []any{os.Getenv("SSHLEASE_KNOWN")}},
		Dir: dir, SSH: providers.SSHSettings{Username: os.Getenv("SSHLEASE_USER"), KeyFilename: os.Getenv("SSHLEASE_KEY")}})
	rec, err := checkout(p, inventory.NewID(), nil)
	if err != nil {
		fmt.Println("LEASE refused", err)
	} else {
		fmt.Println("LEASE leased", rec.Name)
	}
	io.Copy(io.Discard, os.Stdin)
}

// Settings are checked at load without requiring the pool or credentials:
// a wrong value is a SettingError naming the key.
func TestCheckSettings(t *testing.T) {
	var d Driver
	var _ providers.SettingsChecker = d
	if err := d.CheckSettings(providers.Config{Settings: map[string]any{}}); err != nil {
		t.Fatalf("an empty section is no error at load: %v", err)
	}
	for key, v := range map[string]any{"hosts": "lab1", "username": 5, "known_hosts": "x"} {
		err := d.CheckSettings(providers.Config{Settings: map[string]any{key: v}})
		var se *providers.SettingError
		if !errors.As(err, &se) || se.Key != key {
			t.Errorf("%s: %v: got %v, want a SettingError for %s", key, v, err, key)
		}
	}
	if _, err := Open(providers.Config{Dir: t.TempDir(), Settings: map[string]any{"password": "x"}}); err == nil || !strings.Contains(err.Error(), "hosts") {
		t.Errorf("Open without hosts: %v", err)
	}
}
