// Package brokertest gives tests real hosts: Host checks one out through a
// provider, registers its check-in with t.Cleanup and returns it ready to
// drive over SSH.
//
//	func TestDeploy(t *testing.T) {
//		h := brokertest.Host(t, broker.Request{})  // the embedded Local provider
//		res, err := h.Execute(t.Context(), "uname -s")
//		...
//	}
//
// broker.Request{} is a Local host: this machine, as the current user (root
// in most CI jobs). Its commands run here, unconfined, starting in a
// directory of the host's own under the broker directory (also its HOME),
// removed at check-in. For a host of its own, ask for a container:
//
//	import _ "github.com/hostbroker/broker/providers/container"
//
//	h := brokertest.Host(t, broker.Request{Args: map[string]any{"container_host": "brokertest/debian-sshd:12"}})
//
// brokertest/debian-sshd:12 is this project's test image (bash
// scripts/build-test-images.sh builds it); any image with sshd will do, and
// a host of an image without sshd is driven through the engine instead.
//
// Hosts are checked out with the default Broker for the test's environment
// (settings from BROKER_DIRECTORY, which a test may set with t.Setenv; see
// Default) unless WithBroker names another.
//
// # Options
//
// An Option (WithBroker, WithCheckinTimeout, WithKeepOnFailure) applies to
// Host, Hosts, HostAs, Record, NewPool and NewPoolAs alike. A PoolOption
// (WithEager, WithReuseFor, WithReuseFailed) says how a pool shares its
// hosts, and only NewPool and NewPoolAs take it: Host does not compile with
// one.
//
// "Keep" means one thing here: keep a failed test's hosts for a person to
// inspect (WithKeepOnFailure, or -brokertest.keep for every test, pools'
// leases included), instead of checking them in; "brokertest cleanup"
// checks them in later. Sharing hosts with later runs is "reuse"
// (WithReuseFor).
//
// # Signals and crashes
//
// The default Brokers are made with broker.New's defaults, so the first
// checkout of a test binary does two things for the whole process:
//
//   - It starts the reaper's watcher, the test binary re-run (it runs no
//     test), which checks in what the binary still holds if it dies without
//     running its cleanups: go test's -timeout panic, SIGKILL, os.Exit.
//   - It installs a handler for SIGINT and SIGTERM (signal.Notify). On
//     Ctrl-C, or a SIGTERM from CI, the handler checks in the hosts this
//     test binary holds (not those kept on purpose), for two minutes at
//     most, then restores the signals' default action and raises the signal
//     again: the binary ends as the signal says, the tests and cleanups
//     still to come not run, as without the handler.
//
// To choose otherwise, give the default Brokers their options from TestMain
// with Main, e.g. for a test binary that handles these signals itself:
//
//	func TestMain(m *testing.M) {
//		// Ctrl-C ends the binary at once; the watcher checks in afterwards.
//		brokertest.Main(m, broker.WithSignalHandling(false))
//	}
//
// See package broker's documentation (Crashes, Signals) for the details.
package brokertest

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// Option configures Host, Hosts, HostAs, Record, NewPool and NewPoolAs,
// and applies to each of them. Every Option is also a PoolOption.
type Option interface {
	PoolOption
	applyHost(*options)
}

// PoolOption configures NewPool and NewPoolAs: an Option, or one of the
// options that say how a pool shares its hosts (WithEager, WithReuseFor,
// WithReuseFailed), which Host and Hosts do not take.
type PoolOption interface {
	applyPool(*poolOptions)
}

type options struct {
	broker         *broker.Broker
	checkinTimeout time.Duration
	keepOnFailure  bool
}

type poolOptions struct {
	options
	pool broker.PoolOptions
}

// hostOption is an Option.
type hostOption func(*options)

func (f hostOption) applyHost(o *options)     { f(o) }
func (f hostOption) applyPool(o *poolOptions) { f(&o.options) }

// poolOnly is a PoolOption that is no Option.
type poolOnly func(*broker.PoolOptions)

func (f poolOnly) applyPool(o *poolOptions) { f(&o.pool) }

// WithBroker checks hosts out with b instead of the default Broker.
func WithBroker(b *broker.Broker) Option { return hostOption(func(o *options) { o.broker = b }) }

// WithCheckinTimeout bounds the check-in at the test's end (default 5 min),
// and a pool's at its end.
func WithCheckinTimeout(d time.Duration) Option {
	return hostOption(func(o *options) { o.checkinTimeout = d })
}

const defaultCheckinTimeout = 5 * time.Minute

func collect(opts []Option) options {
	o := options{checkinTimeout: defaultCheckinTimeout}
	for _, opt := range opts {
		opt.applyHost(&o)
	}
	return o
}

func collectPool(opts []PoolOption) poolOptions {
	o := poolOptions{options: options{checkinTimeout: defaultCheckinTimeout}}
	for _, opt := range opts {
		opt.applyPool(&o)
	}
	return o
}

// The default Brokers, one per environment (see Default).
var defaults = struct {
	mu   sync.Mutex
	m    map[string]*shared
	made bool            // a default Broker was made (Main comes too late)
	opts []broker.Option // Main's options for broker.New
}{m: map[string]*shared{}}

// shared is a default Broker and the tests using it.
type shared struct {
	b     *broker.Broker
	bound bool // made in a test's own environment: closed after its last user
	users int  // tests that use it, while bound
}

// processEnv is the environment key of the process as it started, or as
// TestMain set it before Main: before any test's t.Setenv. It is read and
// written under defaults.mu.
var processEnv = envKey()

// envVars are the variables besides BROKER_* that a Broker reads when it
// is made: HOME for ~/.broker, the engine addresses of the Container
// provider.
var envVars = []string{"HOME", "DOCKER_HOST", "CONTAINER_HOST", "XDG_RUNTIME_DIR"}

// envKey names the environment a Broker is made from: BROKER_DIRECTORY
// made absolute (a test may also t.Chdir), every other BROKER_* variable
// (settings overrides, BROKER_NO_REAPER) and envVars.
func envKey() string {
	dir := os.Getenv("BROKER_DIRECTORY")
	if dir != "" {
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
	}
	parts := []string{"BROKER_DIRECTORY=" + dir}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name != "BROKER_DIRECTORY" && (strings.HasPrefix(name, "BROKER_") || slices.Contains(envVars, name)) {
			parts = append(parts, kv)
		}
	}
	slices.Sort(parts[1:])
	return strings.Join(parts, "\x00")
}

// Default returns the default Broker for the current environment, made on
// first use with broker.New (and the options given to Main): settings from
// BROKER_DIRECTORY's broker_settings.yaml (~/.broker when unset) and
// BROKER_* overrides, read when it is made. Host, Hosts, HostAs, NewPool and
// Record use it unless WithBroker names another.
//
// There is one default Broker per environment: BROKER_DIRECTORY (made
// absolute), the other BROKER_* variables, HOME, DOCKER_HOST,
// CONTAINER_HOST and XDG_RUNTIME_DIR. The one for the process's own
// environment (as the process started, or as TestMain set it before Main)
// is shared by every test, as http.DefaultClient is, until the process
// ends (Main closes it). A test that sets its own, as Go tests isolate
// themselves (t.Setenv("BROKER_DIRECTORY", t.TempDir())), gets a Broker on
// its directory and settings; that Broker is closed when the last test
// that used it through Host, Hosts, HostAs, NewPool or Record ends, after
// their check-ins, so nothing (log, inventory, host directories) is
// written into a directory its test has removed. A later use in the same
// environment makes a new one. Default itself does not hold a test's
// Broker open: call it from the test that uses it. Without Main, a
// BROKER_DIRECTORY set in TestMain is a test's own environment: each test
// then gets a Broker of its own.
func Default() (*broker.Broker, error) {
	return acquire(nil)
}

// acquire returns the default Broker for the current environment. With t
// it counts t as a user of a Broker made for a test's own environment
// and closes that Broker in t's cleanup when t is its last user; register
// nothing that uses it with t.Cleanup before calling acquire (cleanups run
// last first). The warnings of a new Broker's settings go to t's log.
func acquire(t testing.TB) (*broker.Broker, error) {
	key := envKey()
	defaults.mu.Lock()
	defer defaults.mu.Unlock()
	s := defaults.m[key]
	if s == nil {
		defaults.made = true
		b, err := broker.New(defaults.opts...)
		if err != nil {
			return nil, err
		}
		s = &shared{b: b, bound: key != processEnv}
		defaults.m[key] = s
		if t != nil {
			for _, w := range b.Warnings() {
				t.Logf("brokertest: %s", w)
			}
		}
	}
	if t != nil && s.bound {
		s.users++
		t.Cleanup(func() { release(t, key, s) })
	}
	return s.b, nil
}

// release ends t's use of s, closing it after its last user.
func release(t testing.TB, key string, s *shared) {
	defaults.mu.Lock()
	s.users--
	last := s.users == 0
	if last && defaults.m[key] == s {
		delete(defaults.m, key)
	}
	defaults.mu.Unlock()
	if last {
		if err := s.b.Close(); err != nil {
			t.Errorf("brokertest: closing the Broker of %s: %v", s.b.Dir(), err)
		}
	}
}

// Main runs the tests of m, from TestMain, with the default Brokers
// (Default) made with opts: broker.WithSignalHandling(false),
// broker.WithReaper(false), broker.WithLogger… The environment as TestMain
// leaves it (BROKER_DIRECTORY set with os.Setenv, say) is the process's:
// its default Broker is shared by all tests. Once the tests have run Main
// closes the default Brokers still open (their hosts are checked in by
// then, or kept), then exits with the tests' status (1 if they passed but
// a Close failed).
//
//	func TestMain(m *testing.M) {
//		brokertest.Main(m, broker.WithSignalHandling(false))
//	}
//
// No default Broker must have been made before Main (by a package
// variable's initialiser, say): Main then exits with status 2, since opts
// would not apply.
func Main(m *testing.M, opts ...broker.Option) {
	defaults.mu.Lock()
	if defaults.made {
		defaults.mu.Unlock()
		fmt.Fprintln(os.Stderr, "brokertest.Main: the default Broker was made before Main; its options would not apply")
		os.Exit(2)
	}
	defaults.opts = opts
	processEnv = envKey()
	defaults.mu.Unlock()
	code := m.Run()
	defaults.mu.Lock()
	var open []*broker.Broker
	for _, key := range slices.Sorted(maps.Keys(defaults.m)) {
		open = append(open, defaults.m[key].b)
	}
	clear(defaults.m)
	defaults.mu.Unlock()
	for _, b := range open {
		if err := b.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "brokertest.Main: closing the default Broker of %s: %v\n", b.Dir(), err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// brokerFor returns the Broker for t: WithBroker's, else the default one
// (see acquire: call it before registering cleanups that use it).
func (o *options) brokerFor(t testing.TB) *broker.Broker {
	t.Helper()
	if o.broker != nil {
		return o.broker
	}
	b, err := acquire(t)
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	return b
}

// Host checks out one host for t and checks it in when t and its subtests
// end. It fails t (t.Fatal) when the checkout fails. broker.Request{} is a
// Local host: this machine, as the current user (see the package
// documentation).
func Host(t testing.TB, req broker.Request, opts ...Option) *hostkit.Host {
	t.Helper()
	req.Count = 1
	return Hosts(t, req, opts...)[0]
}

// Hosts checks out req.Count hosts concurrently for t (one when 0) and
// checks them in when t ends. When any checkout fails, the others are checked
// in and t fails with every error.
func Hosts(t testing.TB, req broker.Request, opts ...Option) []*hostkit.Host {
	t.Helper()
	o := collect(opts)
	b := o.brokerFor(t)
	if req.Test == "" {
		req.Test = t.Name()
	}
	// Long work (an image pull) reports its progress in the test's log.
	ctx := providers.WithReporter(t.Context(), func(line string) { t.Log(line) })
	hosts, err := b.Checkout(ctx, req)
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = hostName(b, h)
	}
	t.Cleanup(func() {
		t.Helper() // lines at the test's Host or Hosts call
		if t.Failed() && o.keepsOnFailure() {
			if err := b.Keep(hosts, time.Time{}); err != nil {
				t.Errorf("brokertest: keeping hosts of a failed test: %v", err)
				return
			}
			logKept(t, b, hosts)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), o.checkinTimeout)
		defer cancel()
		if err := b.Checkin(ctx, hosts...); err != nil {
			t.Errorf("brokertest: %v", err)
			return
		}
		for _, name := range names {
			t.Logf("brokertest: checked in %s", name)
		}
	})
	for i, name := range names {
		t.Logf("brokertest: checked out %s; %s", name, reach(b, hosts[i]))
	}
	return hosts
}

// Record returns a copy of the inventory record of h, a host checked out
// for a test that has not ended, from the default Broker or the one
// WithBroker names. It fails t (t.Fatal) for a host that Broker does not
// hold.
func Record(t testing.TB, h *hostkit.Host, opts ...Option) *inventory.Record {
	t.Helper()
	o := collect(opts)
	rec := o.brokerFor(t).Record(h)
	if rec == nil {
		t.Fatalf("brokertest: %s is no host of this Broker (checked in, or checked out with another: pass WithBroker)", h)
	}
	return rec
}

func hostName(b *broker.Broker, h *hostkit.Host) string {
	rec := b.Record(h)
	if rec == nil {
		return h.Hostname
	}
	return fmt.Sprintf("%s (%s, %s, id %s)", rec.Name, rec.Hostname, rec.Provider, rec.ID())
}

// Setupper is a host type (a struct embedding *hostkit.Host) that prepares
// itself after check-out: HostAs and pools of NewPoolAs call Setup.
type Setupper interface {
	Setup(ctx context.Context) error
}

// Teardowner is a host type that cleans up before check-in.
type Teardowner interface {
	Teardown(ctx context.Context) error
}

// Resetter is a host type that can be made clean for the next lease of a
// pool (NewPoolAs).
type Resetter interface {
	Reset(ctx context.Context) error
}

// HostAs checks out one host as a custom host type T, a struct embedding
// *hostkit.Host; a T that is not fails t before anything is checked out. When *T has Setup(ctx) error (Setupper) it runs after
// checkout, and a failing Setup fails t, the host still being checked in.
// When *T has Teardown(ctx) error (Teardowner) it runs before check-in.
func HostAs[T any](t testing.TB, req broker.Request, opts ...Option) *T {
	t.Helper()
	if err := checkHostType[T](); err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	o := collect(opts)
	h := Host(t, req, opts...)
	name := hostName(o.brokerFor(t), h)
	v, err := wrap[T](h)
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	if err := setup(t.Context(), v); err != nil {
		t.Fatalf("brokertest: setup of %s: %v", name, err)
	}
	if td, ok := any(v).(Teardowner); ok {
		// Cleanups run last-in first-out: this runs before the check-in.
		t.Cleanup(func() {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), o.checkinTimeout)
			defer cancel()
			if err := td.Teardown(ctx); err != nil {
				t.Errorf("brokertest: teardown of %s: %v", name, err)
			}
		})
	}
	return v
}

var hostPtrType = reflect.TypeFor[*hostkit.Host]()

// hostField returns the index of the embedded *hostkit.Host of T.
func hostField[T any]() (int, error) {
	rt := reflect.TypeFor[T]()
	if rt.Kind() != reflect.Struct {
		return 0, fmt.Errorf("host type %s is not a struct embedding *hostkit.Host", rt)
	}
	for i := range rt.NumField() {
		if f := rt.Field(i); f.Anonymous && f.Type == hostPtrType {
			return i, nil
		}
	}
	return 0, fmt.Errorf("host type %s does not embed *hostkit.Host", rt)
}

// checkHostType reports whether T can be a host type, before any host
// is checked out for it.
func checkHostType[T any]() error {
	_, err := hostField[T]()
	return err
}

// wrap makes a *T whose embedded *hostkit.Host is h.
func wrap[T any](h *hostkit.Host) (*T, error) {
	i, err := hostField[T]()
	if err != nil {
		return nil, err
	}
	v := new(T)
	reflect.ValueOf(v).Elem().Field(i).Set(reflect.ValueOf(h))
	return v, nil
}

func setup(ctx context.Context, v any) error {
	if s, ok := v.(Setupper); ok {
		return s.Setup(ctx)
	}
	return nil
}
