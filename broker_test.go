package broker_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// spy is a provider for broker-level tests: it hands out real Local hosts,
// records what it was asked, and fails the checkouts it is told to.
type spy struct {
	local providers.Provider
	store *inventory.Store

	mu        sync.Mutex
	args      []map[string]any
	checkins  []string
	sawIntent []bool
	calls     atomic.Int32
	failCalls map[int32]bool
	synced    []*inventory.Record
	closes    atomic.Int32
}

type spyDriver struct{ s *spy }

func (d spyDriver) ArgKeys() []string { return []string{"spy_image"} }
func (d spyDriver) Open(ctx context.Context, cfg providers.Config) (providers.Provider, error) {
	if v, k, ok := providers.Setting(cfg.Settings, "flavor"); ok && v != "plain" {
		return nil, fmt.Errorf("spy: %w", &providers.SettingError{Key: k, Err: fmt.Errorf("%q is not a flavor", v)})
	}
	ld, _, err := providers.Lookup("Local")
	if err != nil {
		return nil, err
	}
	lp, err := ld.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	d.s.local = lp
	d.s.store = inventory.Open(filepath.Join(cfg.Dir, "inventory.yaml"))
	return d.s, nil
}

var theSpy = &spy{}

// Close counts its calls and leaves the Local provider's servers running:
// the spy is shared by the brokers of this test binary, and each test checks
// its hosts in.
func (s *spy) Close() error { s.closes.Add(1); return nil }

func init() { providers.Register("Spy", spyDriver{theSpy}) }

// reset readies the spy for one test; failing lists which calls (1-based) fail.
func (s *spy) reset(failing ...int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.args, s.checkins, s.sawIntent, s.synced = nil, nil, nil, nil
	s.calls.Store(0)
	s.failCalls = map[int32]bool{}
	for _, f := range failing {
		s.failCalls[f] = true
	}
}

func (s *spy) Checkout(ctx context.Context, req providers.CheckoutRequest) (providers.CheckoutResult, error) {
	n := s.calls.Add(1)
	recs, err := s.store.Load(context.Background())
	if err != nil {
		return providers.CheckoutResult{}, err
	}
	intent := false
	for _, r := range recs {
		if r.ID() == req.ID && r.Broker.State == inventory.StateCreating {
			intent = true
		}
	}
	s.mu.Lock()
	s.args = append(s.args, req.Args)
	s.sawIntent = append(s.sawIntent, intent)
	fail := s.failCalls[n]
	s.mu.Unlock()
	if fail {
		return providers.CheckoutResult{}, fmt.Errorf("spy: refused checkout call %d", n)
	}
	// Local refuses arguments it does not take: pass on its own.
	local := map[string]any{}
	for _, k := range []string{"env", "authorized_keys", "local"} {
		if v, ok := req.Args[k]; ok {
			local[k] = v
		}
	}
	all := req.Args
	req.Args = local
	res, err := s.local.Checkout(ctx, req)
	if err == nil {
		res.Args = all // the spy's record holds what it was asked
	}
	return res, err
}

func (s *spy) Connect(ctx context.Context, rec *inventory.Record) (*hostkit.Host, error) {
	return s.local.Connect(ctx, rec)
}

func (s *spy) Checkin(ctx context.Context, rec *inventory.Record) error {
	s.mu.Lock()
	s.checkins = append(s.checkins, rec.ID())
	s.mu.Unlock()
	return s.local.Checkin(ctx, rec)
}

func (s *spy) Sync(ctx context.Context, user string) ([]*inventory.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced, nil
}

func newBroker(t *testing.T, settingsYAML string) *broker.Broker {
	t.Helper()
	dir := t.TempDir()
	if settingsYAML != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), []byte(settingsYAML), 0o600))
	}
	b, err := broker.New(broker.WithDirectory(dir), broker.WithSettingsEnv([]string{}))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

func TestCheckoutCountOnLocal(t *testing.T) {
	ctx := t.Context()
	b := newBroker(t, "")
	hosts, err := b.Checkout(ctx, broker.Request{Count: 4, Test: t.Name()})
	require.NoError(t, err)
	require.Len(t, hosts, 4)

	recs, err := b.Inventory(ctx)
	require.NoError(t, err)
	require.Len(t, recs, 4)
	names := map[string]bool{}
	for i, rec := range recs {
		assert.Equal(t, "Local", rec.Provider)
		assert.Equal(t, inventory.StateReady, rec.Broker.State)
		assert.Equal(t, b.Owner(), rec.Broker.Owner)
		assert.Equal(t, t.Name(), rec.Broker.Test)
		names[rec.Name] = true
		res, err := hosts[i].Execute(ctx, "echo $HOME")
		require.NoError(t, err)
		assert.Equal(t, 0, res.Status)
	}
	assert.Len(t, names, 4, "four distinct hosts")

	require.NoError(t, b.Checkin(ctx, hosts...))
	recs, err = b.Inventory(ctx)
	require.NoError(t, err)
	assert.Empty(t, recs)
	entries, _ := os.ReadDir(filepath.Join(b.Dir(), "local"))
	assert.Empty(t, entries, "check-in removes the Local hosts' directories")
}

func TestPartialFailureChecksInTheRest(t *testing.T) {
	ctx := t.Context()
	theSpy.reset(2, 4)
	b := newBroker(t, "")
	_, err := b.Checkout(ctx, broker.Request{Provider: "Spy", Count: 5})
	require.Error(t, err)
	msg := err.Error()
	assert.Equal(t, 2, strings.Count(msg, "spy: refused checkout call"), "every failure is named: %s", msg)
	assert.Contains(t, msg, "of 5")

	recs, err := b.Inventory(ctx)
	require.NoError(t, err)
	assert.Empty(t, recs, "nothing left in the inventory")
	entries, _ := os.ReadDir(filepath.Join(b.Dir(), "local"))
	assert.Empty(t, entries, "the three hosts that succeeded were checked in")
	theSpy.mu.Lock()
	defer theSpy.mu.Unlock()
	assert.Len(t, theSpy.checkins, 5, "3 successes checked in, 2 failures cleaned up by id")
}

func TestIntentRecordedBeforeProviderIsAsked(t *testing.T) {
	theSpy.reset()
	b := newBroker(t, "")
	hosts, err := b.Checkout(t.Context(), broker.Request{Provider: "Spy", Count: 3})
	require.NoError(t, err)
	t.Cleanup(func() { b.Checkin(context.Background(), hosts...) })
	theSpy.mu.Lock()
	defer theSpy.mu.Unlock()
	assert.Equal(t, []bool{true, true, true}, theSpy.sawIntent)
}

const spySettings = `
Spy:
  instances:
    - alpha: {zone: a}
    - beta: {zone: b, default: true}
nicks:
  small:
    spy_image: "debian:12"
    size: small
    nested: {a: 1, b: 2}
`

func TestRequestMerging(t *testing.T) {
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args.yaml")
	require.NoError(t, os.WriteFile(argsFile, []byte("size: medium\nnested: {b: 3}\nfrom_file: true\n"), 0o600))
	extra := filepath.Join(dir, "extra.json")
	require.NoError(t, os.WriteFile(extra, []byte(`{"packages": ["vim", "git"]}`), 0o600))

	theSpy.reset()
	b := newBroker(t, spySettings)
	hosts, err := b.Checkout(t.Context(), broker.Request{
		Nick:     "small",
		ArgsFile: argsFile,
		Args:     map[string]any{"extra": extra, "size": "large"},
	})
	require.NoError(t, err)
	t.Cleanup(func() { b.Checkin(context.Background(), hosts...) })

	rec := b.Record(hosts[0])
	assert.Equal(t, "Spy", rec.Provider, "inferred from the nick's spy_image")
	assert.Equal(t, "beta", rec.Instance, "the default instance")
	theSpy.mu.Lock()
	got := theSpy.args[0]
	theSpy.mu.Unlock()
	assert.Equal(t, "large", got["size"], "Args win over the args file and the nick")
	assert.Equal(t, true, got["from_file"])
	assert.Equal(t, map[string]any{"a": 1, "b": 3}, got["nested"], "nested maps merge")
	assert.Equal(t, map[string]any{"packages": []any{"vim", "git"}}, got["extra"], "a file-valued argument becomes the file's contents")
}

func TestInstanceChoice(t *testing.T) {
	theSpy.reset()
	b := newBroker(t, spySettings)
	hosts, err := b.Checkout(t.Context(), broker.Request{Args: map[string]any{"spy_image": "x", "Spy": "alpha"}})
	require.NoError(t, err)
	t.Cleanup(func() { b.Checkin(context.Background(), hosts...) })
	assert.Equal(t, "alpha", b.Record(hosts[0]).Instance, "an argument named after the provider picks the instance")
	theSpy.mu.Lock()
	_, leaked := theSpy.args[0]["Spy"]
	theSpy.mu.Unlock()
	assert.False(t, leaked, "the instance argument is not passed on")

	_, err = b.Checkout(t.Context(), broker.Request{Provider: "Spy", Instance: "gamma"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "gamma")
}

func TestBadRequests(t *testing.T) {
	b := newBroker(t, spySettings)
	ctx := t.Context()
	_, err := b.Checkout(ctx, broker.Request{Nick: "huge"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "huge")

	_, err = b.Checkout(ctx, broker.Request{Provider: "Nope"})
	require.ErrorIs(t, err, providers.ErrUnknown)
	assert.Contains(t, err.Error(), "Local", "lists the registered providers")

	bad := filepath.Join(t.TempDir(), "args.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("- just\n- a list\n"), 0o600))
	_, err = b.Checkout(ctx, broker.Request{ArgsFile: bad})
	require.Error(t, err)
	assert.Contains(t, err.Error(), bad)

	_, err = b.Checkout(ctx, broker.Request{ArgsFile: filepath.Join(t.TempDir(), "missing.json")})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing.json")
}

func TestSyncReconciles(t *testing.T) {
	ctx := t.Context()
	theSpy.reset()
	b := newBroker(t, spySettings)
	hosts, err := b.Checkout(ctx, broker.Request{Provider: "Spy", Instance: "beta", Count: 2})
	require.NoError(t, err)
	t.Cleanup(func() { b.Checkin(context.Background(), hosts...) })
	other, err := b.Checkout(ctx, broker.Request{}) // Local: sync of Spy must not touch it
	require.NoError(t, err)
	t.Cleanup(func() { b.Checkin(context.Background(), other...) })

	// The provider reports the first host and one the inventory lacks.
	theSpy.mu.Lock()
	theSpy.synced = []*inventory.Record{
		{Hostname: b.Record(hosts[0]).Hostname, Name: b.Record(hosts[0]).Name, Broker: &inventory.Meta{ID: b.Record(hosts[0]).ID()}},
		{Hostname: "found.example.com", Name: "found"},
	}
	theSpy.mu.Unlock()

	res, err := b.Sync(ctx, "Spy::beta") // no user: every record of the instance
	require.NoError(t, err)
	assert.Equal(t, "Spy::beta", res.Provider)
	assert.Equal(t, 1, res.Kept)
	require.Len(t, res.Added, 1)
	assert.Equal(t, "found", res.Added[0].Name)
	require.Len(t, res.Dropped, 1)
	assert.Equal(t, b.Record(hosts[1]).ID(), res.Dropped[0].ID())

	recs, err := b.Inventory(ctx)
	require.NoError(t, err)
	var names []string
	for _, r := range recs {
		names = append(names, r.Name)
	}
	assert.ElementsMatch(t, []string{b.Record(hosts[0]).Name, b.Record(other[0]).Name, "found"}, names)

	_, _, _, err = broker.ParseSyncSpec("::x")
	assert.Error(t, err)
}

func TestParseSyncSpec(t *testing.T) {
	for spec, want := range map[string][3]string{
		"AnsibleTower":              {"AnsibleTower", "", ""},
		"AnsibleTower:jake":         {"AnsibleTower", "jake", ""},
		"Container::docker":         {"Container", "", "docker"},
		"Container:jake::remote":    {"Container", "jake", "remote"},
		"AnsibleTower:@ll::testing": {"AnsibleTower", "@ll", "testing"},
	} {
		p, u, i, err := broker.ParseSyncSpec(spec)
		require.NoError(t, err, spec)
		assert.Equal(t, want, [3]string{p, u, i}, spec)
	}
	for _, bad := range []string{"", ":user", "Container::"} {
		_, _, _, err := broker.ParseSyncSpec(bad)
		assert.Error(t, err, bad)
	}
}

func TestDuplicate(t *testing.T) {
	theSpy.reset()
	b := newBroker(t, spySettings)
	ctx := t.Context()
	hosts, err := b.Checkout(ctx, broker.Request{Provider: "Spy", Args: map[string]any{"flavour": "x"}})
	require.NoError(t, err)
	dups, err := b.Duplicate(ctx, b.Record(hosts[0]), 2)
	require.NoError(t, err)
	t.Cleanup(func() { b.Checkin(context.Background(), append(hosts, dups...)...) })
	require.Len(t, dups, 2)
	for _, d := range dups {
		assert.Equal(t, "Spy", b.Record(d).Provider)
		assert.Equal(t, "x", b.Record(d).Args["flavour"])
	}
}

func TestUnsupportedAbilitiesAreClear(t *testing.T) {
	b := newBroker(t, "")
	ctx := t.Context()
	_, err := b.Execute(ctx, broker.Request{Provider: "Spy"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot execute")
	err = b.Extend(ctx, nil, &inventory.Record{Provider: "Spy", Name: "h1", Hostname: "h1"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "h1")
	assert.False(t, errors.Is(err, providers.ErrUnknown))
}

// A stuck holder of the inventory lock (another process, stopped) does not
// hang a checkout past its context: the error says what it waited for, and
// nothing was asked of the provider.
func TestCheckoutLockWaitFollowsContext(t *testing.T) {
	b := newBroker(t, "")
	lock, err := os.OpenFile(b.Store().Path()+".flock", os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	defer lock.Close()
	require.NoError(t, syscall.Flock(int(lock.Fd()), syscall.LOCK_EX))

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := b.Checkout(ctx, broker.Request{})
		done <- err
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "wait for lock")
	case <-time.After(10 * time.Second):
		t.Fatal("checkout still waits for the inventory lock 10 s after its context ended")
	}
	require.NoError(t, syscall.Flock(int(lock.Fd()), syscall.LOCK_UN))
	recs, err := b.Inventory(t.Context())
	require.NoError(t, err)
	assert.Empty(t, recs)
	entries, _ := os.ReadDir(filepath.Join(b.Dir(), "local"))
	assert.Empty(t, entries, "no Local host was made")
}

// A provider's complaint about a setting names where it was set: the file
// and line, or the environment variable.
func TestProviderSettingErrorNamesWhere(t *testing.T) {
	settingsYAML := "Spy:\n  instances:\n    - one:\n        default: true\n        flavor: sour\n"
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), []byte(settingsYAML), 0o600))
	req := broker.Request{Args: map[string]any{"spy_image": "x"}}
	for _, tc := range []struct {
		env  []string
		want []string
	}{
		{nil, []string{"broker_settings.yaml:5: Spy.instances", "flavor", `"sour" is not a flavor`}},
		{[]string{"BROKER_Spy__instances__one__flavor=bitter"}, []string{"(from env BROKER_Spy__instances__one__flavor)", `"bitter" is not a flavor`}},
	} {
		b, err := broker.New(broker.WithDirectory(dir), broker.WithSettingsEnv(tc.env), broker.WithReaper(false))
		require.NoError(t, err)
		_, err = b.Checkout(t.Context(), req)
		require.Error(t, err)
		for _, w := range tc.want {
			assert.Contains(t, err.Error(), w)
		}
		var se *providers.SettingError
		assert.ErrorAs(t, err, &se, "the provider's error is still there to inspect")
		require.NoError(t, b.Close())
	}
}

// An argument that picks no provider (misspelt, or another tool's name)
// does not run the request on this machine: the error names the arguments
// that pick each provider.
func TestUnknownArgumentsDoNotRunLocally(t *testing.T) {
	b := newBroker(t, "")
	for _, args := range []map[string]any{
		{"image": "brokertest/busybox:1"},
		{"container_hots": "brokertest/busybox:1"},
	} {
		hosts, err := b.Checkout(t.Context(), broker.Request{Args: args})
		require.Error(t, err, "%v", args)
		assert.Empty(t, hosts)
		for _, want := range []string{"unknown argument", "container_host or container_app (Container)", "workflow or job_template (AnsibleTower)"} {
			assert.Contains(t, err.Error(), want)
		}
	}
	recs, err := b.Inventory(t.Context())
	require.NoError(t, err)
	assert.Empty(t, recs)
}

// The Broker, not the provider, keeps each host's record: Record gives a
// copy; a host of another Broker has none here and its check-in fails
// naming it; Close closes each provider instance the Broker opened, once.
func TestBrokerKeepsRecords(t *testing.T) {
	theSpy.reset()
	ctx := t.Context()
	b := newBroker(t, spySettings)
	hosts, err := b.Checkout(ctx, broker.Request{Provider: "Spy", Instance: "alpha", Count: 2})
	require.NoError(t, err)
	t.Cleanup(func() { b.Checkin(context.Background(), hosts...) })
	rec := b.Record(hosts[0])
	require.NotNil(t, rec)
	assert.Equal(t, "Spy", rec.Provider)
	assert.Equal(t, "alpha", rec.Instance)
	assert.Equal(t, inventory.StateReady, rec.Broker.State)
	assert.NotEqual(t, rec.ID(), b.Record(hosts[1]).ID())
	rec.Name = "changed"
	assert.NotEqual(t, "changed", b.Record(hosts[0]).Name, "Record gives a copy")

	other := newBroker(t, "")
	assert.Nil(t, other.Record(hosts[0]))
	err = other.Checkin(ctx, hosts[0])
	require.Error(t, err)
	assert.Contains(t, err.Error(), hosts[0].Hostname)

	// A host rebuilt with Connect has its record too.
	h, err := b.Connect(ctx, b.Record(hosts[1]))
	require.NoError(t, err)
	assert.Equal(t, b.Record(hosts[1]).ID(), b.Record(h).ID())
	h.Close()

	before := theSpy.closes.Load()
	require.NoError(t, b.Close())
	assert.Equal(t, before+1, theSpy.closes.Load(), "Close closes the one Spy instance opened")
	// Check-in after Close opens the provider again.
	require.NoError(t, b.Checkin(ctx, hosts...))
	recs, err := b.Inventory(ctx)
	require.NoError(t, err)
	assert.Empty(t, recs)
}
