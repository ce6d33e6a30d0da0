// Package broker checks hosts out from providers (local SSH servers,
// containers, VMs), records them in a local inventory and checks them back in:
// one interface over services that provision hosts, in the manner of
// [the Python broker], whose settings and inventory files it shares. Tests
// use it through package brokertest.
//
// The embedded Local provider is always there, and a Request that names no
// provider and no argument that picks one gets a Local host: this machine,
// as the current user (root in most CI jobs), reached over SSH on
// 127.0.0.1. Its commands run here, unconfined, starting in a directory of
// the host's own under the broker directory (also its HOME), removed at
// check-in; "rm -rf /x" on a Local host removes this machine's /x. Its
// Hostname is this machine's name, as hostname prints it. For a host of
// its own, use a container (the Container provider, below).
//
// The others register
// themselves when imported, as database/sql drivers do, so that a program
// links only the providers it uses:
//
//	import _ "github.com/hostbroker/broker/providers/container"
//	import _ "github.com/hostbroker/broker/providers/ansibletower"
//
// A request that needs one of them in a program that does not import it
// fails with an error naming the import (providers.ErrNotImported); their
// settings sections load all the same.
//
// # Crashes: the reaper
//
// A test process can die without running its cleanups (SIGKILL, go test's
// -timeout, os.Exit). So that its hosts are not left behind, broker has a
// reaper, in two parts. The watcher: the first checkout of a process starts
// this same executable again, detached, with BROKER_REAPER_WATCH set (an
// init of this package makes that process the watcher before main runs);
// it waits for the process to end and checks in what it still holds. The
// sweep: New checks in, in the background, the hosts of dead processes
// whose watcher died too. WithReaper(false), or BROKER_NO_REAPER=1 in the
// environment, turns the reaper off; hosts left behind then wait for
// "brokertest cleanup --stale". What the watcher costs (time at the first
// checkout, memory) is measured in BENCHMARKS.md.
//
// # Signals
//
// By default the first checkout also installs a handler for SIGINT and
// SIGTERM (signal.Notify), for the whole process. When one of them arrives,
// the handler checks in the hosts this process holds with every Broker not
// yet closed (hosts kept on purpose stay), for two minutes at most, then
// restores the signals' default action and raises the signal again: the
// process ends as that signal says, its other cleanups (deferred calls,
// t.Cleanup) not run, as without the handler. A Ctrl-C in "go test" thus
// returns once the hosts are checked in. Close removes the Broker from the
// handler, and the handler goes with the last Broker that had one.
//
// WithSignalHandling(false) installs no handler for a Broker: the signal
// then ends the process at once (Go's default) and the watcher checks the
// hosts in afterwards, in the background. A program with its own handler
// for these signals should use it and call Checkin or Close itself; tests
// using package brokertest pass it to brokertest.Main from TestMain.
//
// A Broker is safe for concurrent use.
//
// [the Python broker]: https://github.com/SatelliteQE/broker
package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"weak"

	"golang.org/x/sync/errgroup"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/plain"
	"github.com/hostbroker/broker/internal/reaper"
	"github.com/hostbroker/broker/internal/safefile"
	"github.com/hostbroker/broker/internal/settings"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"

	// Only the embedded Local provider: as database/sql imports no driver,
	// users import the others (import _ ".../providers/container").
	_ "github.com/hostbroker/broker/providers/local"
)

// Version is this module's version, recorded on hosts (container labels).
const Version = "0.1.0"

// DefaultProvider is used when nothing in a request names or implies one.
const DefaultProvider = "Local"

// maxParallel bounds concurrent provider calls of one Checkout or Checkin.
const maxParallel = 32

// Request says what to check out. The zero Request gets one host of the
// embedded Local provider: this machine, as the current user (root in most
// CI jobs); its commands run here, in a directory of the host's own under
// the broker directory (see the package documentation). Args that pick a
// provider ("container_host": an image, for a container of its own;
// "workflow" for a VM of AnsibleTower) or Provider choose another.
type Request struct {
	Nick     string // a nick from settings; its arguments lie under Args
	Provider string // "Local", "Container", "AnsibleTower", "SSH"; "" = inferred from Args, else Local
	Instance string // provider instance; "" = its default
	Count    int    // 0 or 1 means one host; negative is an error

	// Args are the provider's arguments, merged over the nick's and
	// ArgsFile's. A string value naming an existing .json, .yaml or .yml
	// file is replaced by the file's decoded contents, as the Python
	// broker's --extra does: {"vars": "extra.yaml"} passes the map the file
	// holds.
	Args     map[string]any
	ArgsFile string // JSON or YAML file; its top-level keys become Args (the nick's lie under, Args over)

	// Test names who asked (a test's name); it is recorded in the inventory.
	Test string
}

// Broker checks hosts out and in, keeping the inventory.
type Broker struct {
	settings *settings.Settings
	store    *inventory.Store
	logger   *slog.Logger
	owner    inventory.Owner
	logFile  io.Closer
	reaper   bool // WithReaper: the watcher at the first checkout, the sweep in New
	signals  bool // WithSignalHandling

	sigMu    sync.Mutex
	unsignal func() // removes b from the signal check-in; nil when not in it

	mu     sync.Mutex
	opened map[string]providers.Provider // by "Provider::instance"

	// records holds the inventory record of each host this Broker checked
	// out or connected: the host→record relation that Checkin, Keep and the
	// pools need (hostkit knows nothing of records). Weak keys: an entry
	// goes when its host is garbage, so a long-lived Broker holds no
	// record of hosts its users dropped, and a host checked in keeps its
	// record (a second Checkin is as harmless as before).
	recMu   sync.Mutex
	records map[weak.Pointer[hostkit.Host]]*inventory.Record

	late sync.WaitGroup // second looks after cut-short checkouts (lookAgain)

	stopSweep context.CancelFunc // nil when New started no sweep
	sweeping  sync.WaitGroup
}

type config struct {
	settings  settings.Options
	logger    *slog.Logger
	runID     string
	noReaper  bool
	noSignals bool
}

// Option configures New.
type Option func(*config)

// WithDirectory sets the broker directory (settings, inventory, logs),
// overriding BROKER_DIRECTORY.
func WithDirectory(dir string) Option {
	return func(c *config) {
		c.settings.Dir, c.settings.DirFrom = dir, fmt.Sprintf("broker.WithDirectory(%q)", dir)
	}
}

// WithSettingsFile reads settings from path instead of
// <directory>/broker_settings.yaml.
func WithSettingsFile(path string) Option {
	return func(c *config) {
		c.settings.File, c.settings.FileFrom = path, fmt.Sprintf("broker.WithSettingsFile(%q)", path)
	}
}

// WithSettingsEnv makes New read the BROKER_* settings overrides from env
// ("KEY=value" entries) instead of the process environment. It is not the
// environment of commands run on hosts (hostkit.WithEnv).
func WithSettingsEnv(env []string) Option { return func(c *config) { c.settings.Environ = env } }

// WithLogger sends the broker's log to l instead of <directory>/logs/broker.log.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithRunID sets the owner run id recorded on every host this Broker checks
// out; by default each Broker gets a new one.
func WithRunID(id string) Option { return func(c *config) { c.runID = id } }

// WithReaper(false) turns the reaper off (see the package documentation):
// no watcher starts at the first checkout, and New starts no sweep. Hosts
// of a process killed before its check-ins ran are then left for
// "brokertest cleanup --stale" (or a later Broker with a reaper). By default
// the first checkout starts one detached watcher per process, which checks
// in what the process still holds when it dies, and New starts a background
// check-in of the hosts whose owner died when its watcher was already gone
// (see Orphaned; at most 8 check-ins at a time, for 5 minutes at most,
// logged; Close stops it). The environment variable BROKER_NO_REAPER=1 (or
// its old name BROKER_NO_WATCHER=1) turns the reaper off for every Broker.
// It does not change signal handling: see WithSignalHandling.
func WithReaper(enabled bool) Option { return func(c *config) { c.noReaper = !enabled } }

// WithSignalHandling(false) makes this Broker install no SIGINT/SIGTERM
// handler and its hosts no part of another Broker's: a signal then ends the
// process at once (Go's default, unless the program handles it), and the
// watcher, unless WithReaper(false), checks the hosts in afterwards. By
// default the first checkout installs a process-wide handler that checks in
// this process's hosts before the signal ends the process (see the package
// documentation, Signals).
func WithSignalHandling(enabled bool) Option { return func(c *config) { c.noSignals = !enabled } }

// New loads settings and opens the inventory. With no settings file it works
// on the embedded Local provider.
func New(opts ...Option) (*Broker, error) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.settings.Providers == nil {
		// Check the sections of every registered provider at load,
		// third-party ones included.
		c.settings.Providers = providers.Names()
	}
	checkers := settingsCheckers(c.settings.Providers)
	if c.settings.Keys == nil {
		c.settings.Keys = map[string][]string{}
		for name, sc := range checkers {
			c.settings.Keys[name] = sc.SettingKeys()
		}
	}
	s, err := settings.Load(c.settings)
	if err != nil {
		return nil, err
	}
	if err := checkSettings(s, checkers); err != nil {
		return nil, err
	}
	b := &Broker{
		settings: s,
		opened:   map[string]providers.Provider{},
		records:  map[weak.Pointer[hostkit.Host]]*inventory.Record{},
		reaper:   !c.noReaper,
		signals:  !c.noSignals,
	}
	if c.runID == "" {
		c.runID = inventory.NewRunID()
	}
	b.owner = inventory.CurrentOwner(c.runID)
	b.logger = c.logger
	if b.logger == nil {
		b.logger, b.logFile, err = openLog(s.Dir)
		if err != nil {
			return nil, fmt.Errorf("broker: %s: %w", s.DirFrom, err)
		}
	}
	b.store = inventory.Open(filepath.Join(s.Dir, inventoryFile(s)), inventory.WithLogger(b.logger))
	for _, w := range s.Warnings() {
		b.logger.Warn(w)
	}
	if b.reaper && !reaper.Disabled() {
		b.startSweep()
	}
	return b, nil
}

// settingsCheckers returns the drivers of names that check their settings
// (providers.SettingsChecker), by registered name.
func settingsCheckers(names []string) map[string]providers.SettingsChecker {
	out := map[string]providers.SettingsChecker{}
	for _, name := range names {
		d, regName, err := providers.Lookup(name)
		if err != nil {
			continue
		}
		if sc, ok := d.(providers.SettingsChecker); ok {
			out[regName] = sc
		}
	}
	return out
}

// checkSettings has each provider that can check the settings of its
// instances do so, at load: a wrong value fails New, located in the file
// or the environment, rather than the first checkout.
func checkSettings(s *settings.Settings, checkers map[string]providers.SettingsChecker) error {
	for _, name := range slices.Sorted(maps.Keys(checkers)) {
		insts, err := s.Instances(name)
		if err != nil {
			return err
		}
		for _, inst := range insts {
			err := checkers[name].CheckSettings(providers.Config{
				Provider: name,
				Instance: inst.Name,
				Settings: inst.Values,
				SSH:      sshSettings(s.SSH),
				Dir:      s.Dir,
				Logger:   slog.New(slog.DiscardHandler),
			})
			if err == nil {
				continue
			}
			if se, ok := errors.AsType[*providers.SettingError](err); ok {
				located := s.ErrorAt(inst.Provider, inst.Name, se.Key, se.Err.Error())
				located.Err = err
				err = located
			}
			return fmt.Errorf("broker: settings of %s: %w", describe(name, inst.Name), err)
		}
	}
	return nil
}

// inventoryFile honours the Python broker's inventory_file setting.
func inventoryFile(s *settings.Settings) string {
	if name, ok := s.Data["inventory_file"].(string); ok && name != "" {
		return name
	}
	return "inventory.yaml"
}

func openLog(dir string) (*slog.Logger, io.Closer, error) {
	logDir, err := safefile.MkdirAll(dir, "logs", 0o700)
	if err != nil {
		return nil, nil, fmt.Errorf("log directory: %w", err)
	}
	f, err := safefile.OpenFile(filepath.Join(logDir, "broker.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("log file: %w", err)
	}
	return slog.New(slog.NewTextHandler(f, nil)).With("pid", os.Getpid()), f, nil
}

// Close stops the reaper's sweep New started (it cancels it and waits for
// it to return: what it had not checked in yet stays for the next Broker),
// removes this Broker from the signal check-in (with the handler, if it was
// the last Broker in it), waits for the second looks after checkouts cut
// short (a few seconds at most), closes the providers it opened
// (providers.Provider's Close: Local's servers stop) and releases the log
// file. Other hosts stay checked out: after Close a SIGINT or SIGTERM no
// longer checks them in, but the process's watcher still does when the
// process ends without checking them in.
func (b *Broker) Close() error {
	b.unwatch()
	if b.stopSweep != nil {
		b.stopSweep()
	}
	b.sweeping.Wait()
	b.late.Wait()
	errs := []error{b.closeProviders()}
	if b.logFile != nil {
		errs = append(errs, b.logFile.Close())
	}
	return errors.Join(errs...)
}

// closeProviders closes every provider instance opened so far. A later
// check-in (a test's cleanup after a deferred Close) opens a new one.
func (b *Broker) closeProviders() error {
	b.mu.Lock()
	opened := b.opened
	b.opened = map[string]providers.Provider{}
	b.mu.Unlock()
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(opened)) {
		if err := opened[key].Close(); err != nil {
			errs = append(errs, fmt.Errorf("broker: close provider %s: %w", key, err))
		}
	}
	return errors.Join(errs...)
}

// Warnings returns the problems New found in the settings that did not
// stop it (unknown keys, with the closest known one; a settings file with
// secrets others can read; ignored overrides), each naming the file and
// line or the variable. New also logs them.
func (b *Broker) Warnings() []string { return b.settings.Warnings() }

// Dir returns the broker directory.
func (b *Broker) Dir() string { return b.settings.Dir }

// Owner returns the owner recorded on the hosts this Broker checks out.
func (b *Broker) Owner() inventory.Owner { return b.owner }

// Store returns the inventory store.
func (b *Broker) Store() *inventory.Store { return b.store }

// Logger returns the broker's logger.
func (b *Broker) Logger() *slog.Logger { return b.logger }

// Inventory returns the records of the inventory.
func (b *Broker) Inventory(ctx context.Context) ([]*inventory.Record, error) {
	return b.store.Load(ctx)
}

// provider opens (once) the provider instance named.
func (b *Broker) provider(ctx context.Context, name, instance string) (providers.Provider, string, string, error) {
	d, regName, err := providers.Lookup(name)
	if err != nil {
		return nil, "", "", fmt.Errorf("broker: %w", err)
	}
	inst, err := b.settings.Instance(regName, instance)
	if err != nil {
		return nil, "", "", fmt.Errorf("broker: %w", err)
	}
	key := regName + "::" + inst.Name
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.opened[key]; ok {
		return p, regName, inst.Name, nil
	}
	p, err := d.Open(ctx, providers.Config{
		Provider:  regName,
		Instance:  inst.Name,
		Settings:  inst.Values,
		SSH:       sshSettings(b.settings.SSH),
		Dir:       b.settings.Dir,
		Inventory: b.store.Path(),
		Logger:    b.logger.With("provider", regName, "instance", inst.Name),
	})
	if err != nil {
		if se, ok := errors.AsType[*providers.SettingError](err); ok {
			// Say where the setting is, in the file or the environment.
			located := b.settings.ErrorAt(inst.Provider, inst.Name, se.Key, se.Err.Error())
			located.Err = err
			err = located
		}
		return nil, "", "", fmt.Errorf("broker: open provider %s: %w", describe(regName, inst.Name), err)
	}
	b.opened[key] = p
	return p, regName, inst.Name, nil
}

func sshSettings(s settings.SSH) providers.SSHSettings {
	return providers.SSHSettings{
		Username:       s.Username,
		Password:       s.Password,
		Port:           s.Port,
		KeyFilename:    s.KeyFilename,
		ConnectTimeout: s.ConnectTimeout,
		CommandTimeout: s.CommandTimeout,
		Insecure:       s.Insecure,
		KnownHosts:     s.KnownHosts,
	}
}

func describe(provider, instance string) string {
	if instance == "" {
		return provider
	}
	return provider + "::" + instance
}

// Checkout checks out req.Count hosts (one when 0) concurrently. Each host is
// recorded in the inventory before the provider is asked for it, so a crash
// never leaves a host nobody knows of. If any checkout fails, the hosts that
// succeeded are checked in again and the error names every distinct
// failure once, with the hosts it struck. When ctx ends first, Checkout
// returns within cutShortReturn of it: what was started is undone in the
// background (Close waits for that).
func (b *Broker) Checkout(ctx context.Context, req Request) (_ []*hostkit.Host, err error) {
	defer b.logFailure("checkout", &err, "test", req.Test, "count", max(req.Count, 1))
	if req.Count < 0 {
		return nil, fmt.Errorf("broker: checkout: Request.Count %d: want 0 or 1 for one host, or more", req.Count)
	}
	plan, err := b.resolve(req)
	if err != nil {
		return nil, err
	}
	p, provName, instName, err := b.provider(ctx, plan.provider, plan.instance)
	if err != nil {
		return nil, err
	}
	// A SIGINT or SIGTERM check-in stops the checkout, which then never
	// returns: the process ends once the check-in is done.
	defer reaper.CheckingOut()()
	defer stopForSignal()
	ctx, stop := stopOnSignal(ctx)
	defer stop()
	n := max(req.Count, 1)
	hosts := make([]*hostkit.Host, n)
	errs := make([]error, n) // each host's outcome, cleanup included
	// Each host's failure as soon as it is known, before its cleanup.
	var mu sync.Mutex
	failures := make([]error, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var g errgroup.Group
		g.SetLimit(maxParallel)
		for i := range n {
			g.Go(func() error {
				failed := func(err error) {
					mu.Lock()
					failures[i] = cmp.Or(failures[i], err)
					mu.Unlock()
				}
				hosts[i], errs[i] = b.checkoutOne(ctx, p, provName, instName, plan.args, req.Test, failed)
				if errs[i] != nil {
					failed(errs[i])
				}
				return nil
			})
		}
		_ = g.Wait()
	}()
	finished := true
	select {
	case <-done:
	case <-ctx.Done():
		select {
		case <-done:
		case <-time.After(cutShortReturn):
			finished = false
		}
	}
	if finished && !slices.ContainsFunc(errs, func(err error) bool { return err != nil }) {
		return hosts, nil
	}
	mu.Lock()
	summary := slices.Clone(failures)
	mu.Unlock()
	if finished {
		summary = errs
		if ctx.Err() == nil {
			// Not cut short: the hosts that succeeded are checked in before
			// the error is returned, as the caller expects.
			var err error
			if cerr := b.Checkin(context.WithoutCancel(ctx), nonNil(hosts)...); cerr != nil {
				err = fmt.Errorf("checking in the hosts that succeeded: %w", cerr)
			}
			return nil, fmt.Errorf("broker: checkout from %s: %w", describe(provName, instName), joinCheckoutErrors(summary, err))
		}
	}
	for i, err := range summary {
		if err == nil && finished {
			summary[i] = fmt.Errorf("checked out as the context ended; checked in again in the background: %w", context.Cause(ctx))
		} else if err == nil {
			summary[i] = fmt.Errorf("still checking out when the context ended; undone in the background: %w", context.Cause(ctx))
		}
	}
	// Cut short: what was made is checked in in the background, once each
	// host's checkout has ended (its own cleanup included).
	b.late.Go(func() {
		<-done
		for i, err := range errs {
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				b.logger.Warn("checkout cut short", "host", i+1, "of", n, "err", err)
			}
		}
		actx, cancel := afterwards(ctx)
		defer cancel()
		if err := b.Checkin(actx, nonNil(hosts)...); err != nil {
			b.logger.Warn("checking in the hosts of a checkout cut short", "err", err)
		}
	})
	err = joinCheckoutErrors(summary, nil)
	if ce, ok := err.(*checkoutErrors); ok && !errors.Is(err, context.Cause(ctx)) {
		ce.errs = append(ce.errs, context.Cause(ctx)) // errors.Is(err, context.DeadlineExceeded) holds
	}
	return nil, fmt.Errorf("broker: checkout from %s: %w", describe(provName, instName), err)
}

// stopOnSignal is ctx, cancelled too if a signal check-in begins before
// stop is called. stop does not cancel it: what a provider started with it
// for a host it made may outlive the checkout, as it would with the
// caller's; it ends with the caller's.
func stopOnSignal(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	context.AfterFunc(parent, cancel)
	return ctx, reaper.OnTerminate(cancel)
}

// stopForSignal, once a signal check-in has begun, waits for the end of
// the process it brings.
func stopForSignal() {
	select {
	case <-reaper.Terminating():
		select {}
	default:
	}
}

// cutShortReturn is how long a Checkout whose context has ended waits for
// its hosts' checkouts to say why they failed before it returns.
const cutShortReturn = 500 * time.Millisecond

// checkoutOne checks out one host; failed hears of a provider's failure
// before the cleanup after it.
func (b *Broker) checkoutOne(ctx context.Context, p providers.Provider, provName, instName string, args map[string]any, test string, failed func(error)) (*hostkit.Host, error) {
	meta := &inventory.Meta{
		ID:         inventory.NewID(),
		State:      inventory.StateCreating,
		Owner:      b.owner,
		Test:       test,
		User:       currentUser(),
		CheckedOut: time.Now().UTC().Truncate(time.Second),
	}
	intent := &inventory.Record{Provider: provName, Instance: instName, Args: args, Broker: meta}
	b.watch()
	if err := b.store.Put(ctx, intent); err != nil {
		return nil, err
	}
	progress := func(data map[string]any) {
		if meta.Data == nil {
			meta.Data = map[string]any{}
		}
		maps.Copy(meta.Data, data)
		if err := b.store.Put(ctx, intent); err != nil {
			b.logger.Warn("record checkout progress", "id", meta.ID, "err", err)
		}
	}
	res, err := p.Checkout(ctx, providers.CheckoutRequest{ID: meta.ID, Args: cloneMap(args), Labels: b.labels(test), Progress: progress})
	if err != nil {
		failed(err)
		actx, cancel := afterwards(ctx)
		defer cancel()
		// The provider may have made part of a host; it finds it by id.
		if cerr := p.Checkin(actx, intent); cerr != nil {
			b.logger.Warn("clean up after failed checkout", "id", meta.ID, "err", cerr)
			return nil, errors.Join(err, fmt.Errorf("cleaning up %s: %w (left in the inventory for brokertest cleanup)", meta.ID, cerr))
		}
		if cutShort(ctx, err) {
			b.lookAgain(intent)
			return nil, err
		}
		if rerr := b.store.Remove(actx, intent); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		return nil, err
	}
	meta.SSH, meta.Data = res.SSH, res.Data
	meta.State = inventory.StateReady
	rec := res.Record(meta.ID)
	rec.Provider, rec.Instance, rec.Broker = provName, instName, meta
	if rec.Args == nil {
		rec.Args = args
	}
	if err := b.store.Put(ctx, rec); err != nil {
		actx, cancel := afterwards(ctx)
		defer cancel()
		if cerr := p.Checkin(actx, rec); cerr != nil {
			return nil, errors.Join(err, fmt.Errorf("checking in %s: %w (left in the inventory for brokertest cleanup)", meta.ID, cerr))
		}
		return nil, errors.Join(err, b.store.Remove(actx, rec))
	}
	h, err := p.Connect(ctx, rec)
	if err != nil {
		err = fmt.Errorf("connect %s: %w", rec.Name, err)
		if cerr := b.checkinRecord(context.WithoutCancel(ctx), rec); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	b.attach(h, rec)
	b.logger.Info("checked out", "id", meta.ID, "name", rec.Name, "hostname", rec.Hostname, "provider", describe(provName, instName), "test", test)
	return h, nil
}

// attach makes rec the record of h for as long as h lives.
func (b *Broker) attach(h *hostkit.Host, rec *inventory.Record) {
	wp := weak.Make(h)
	b.recMu.Lock()
	_, had := b.records[wp]
	b.records[wp] = rec
	b.recMu.Unlock()
	if !had {
		runtime.AddCleanup(h, b.forget, wp)
	}
}

// forget drops the record of a host that is garbage.
func (b *Broker) forget(wp weak.Pointer[hostkit.Host]) {
	b.recMu.Lock()
	defer b.recMu.Unlock()
	delete(b.records, wp)
}

// recordLocked returns the Broker's own record of h, or nil.
func (b *Broker) recordLocked(h *hostkit.Host) *inventory.Record {
	return b.records[weak.Make(h)]
}

// Record returns a copy of the inventory record of h, a host this Broker
// checked out (or rebuilt with Connect); nil for any other host. The copy
// is the record as of the call: Keep and the pools change the Broker's
// own. After check-in it is the record the host had.
func (b *Broker) Record(h *hostkit.Host) *inventory.Record {
	if h == nil {
		return nil
	}
	b.recMu.Lock()
	defer b.recMu.Unlock()
	if rec := b.recordLocked(h); rec != nil {
		return rec.Clone()
	}
	return nil
}

// KeptKnownHosts is the known_hosts file written for the host id when it
// is kept for inspection, so that a person's ssh checks its key. Check-in
// removes it.
func (b *Broker) KeptKnownHosts(id string) string {
	return filepath.Join(b.settings.Dir, "kept", id+".known_hosts")
}

// lockWait bounds the inventory lock waits that the caller's context does
// not: the bookkeeping once a provider has acted, which the caller's
// deadline must not cut short, nor a stuck lock holder hang.
const lockWait = time.Minute

// afterwards is the context for what follows a provider's action: not
// cancelled with ctx, but bounded.
func afterwards(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), lockWait)
}

// cutShort reports whether a checkout failed because a deadline or a
// cancellation cut it short, so that a create call the provider gave up
// on may still complete at the other end.
func cutShort(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// lookAgain checks in, after a grace period, what a cut-short checkout may
// still have made: the provider looked for it by id at once, but a create
// call in flight can complete after that look. The record stays (state
// creating) until then, so if this process ends first its watcher, or
// brokertest cleanup --stale, makes the same second look.
func (b *Broker) lookAgain(rec *inventory.Record) {
	b.late.Go(func() {
		time.Sleep(reaper.Grace)
		ctx, cancel := context.WithTimeout(context.Background(), lockWait)
		defer cancel()
		// On failure the record stays, for brokertest cleanup.
		if err := b.checkinRecord(ctx, rec); err != nil {
			b.logger.Warn("second look after a checkout cut short", "id", rec.ID(), "err", err)
		}
	})
}

func (b *Broker) labels(test string) map[string]string {
	l := map[string]string{
		"run":     b.owner.Run,
		"user":    currentUser(),
		"version": Version,
		"machine": b.owner.Machine,
	}
	if test != "" {
		l["test"] = test
	}
	return l
}

// Connect rebuilds a host from its inventory record; the Broker keeps rec
// as the host's record (Record, Checkin, Keep).
func (b *Broker) Connect(ctx context.Context, rec *inventory.Record) (*hostkit.Host, error) {
	p, _, _, err := b.provider(ctx, providerOf(rec), rec.Instance)
	if err != nil {
		return nil, err
	}
	h, err := p.Connect(ctx, rec)
	if err != nil {
		return nil, err
	}
	b.attach(h, rec)
	return h, nil
}

func providerOf(rec *inventory.Record) string {
	if rec.Provider != "" {
		return rec.Provider
	}
	return DefaultProvider
}

// Checkin checks hosts in concurrently and drops them from the inventory.
// Each must be a host this Broker checked out (or rebuilt with Connect). A
// host that fails to check in stays in the inventory; the error names it.
func (b *Broker) Checkin(ctx context.Context, hosts ...*hostkit.Host) error {
	recs := make([]*inventory.Record, 0, len(hosts))
	for _, h := range hosts {
		if h == nil {
			continue
		}
		_ = h.Close()
		b.recMu.Lock()
		rec := b.recordLocked(h)
		b.recMu.Unlock()
		if rec == nil {
			return fmt.Errorf("broker: checkin %s: host has no inventory record (not a host of this Broker)", h.Hostname)
		}
		recs = append(recs, rec)
	}
	return b.CheckinRecords(ctx, recs...)
}

// CheckinRecords checks in the hosts of inventory records concurrently (the
// CLI's cleanup). Each failure is named in the joined error.
func (b *Broker) CheckinRecords(ctx context.Context, recs ...*inventory.Record) error {
	return b.checkinRecords(ctx, maxParallel, recs...)
}

// checkinRecords is CheckinRecords, limit at a time.
func (b *Broker) checkinRecords(ctx context.Context, limit int, recs ...*inventory.Record) error {
	errs := make([]error, len(recs))
	var g errgroup.Group
	g.SetLimit(limit)
	for i, rec := range recs {
		g.Go(func() error {
			errs[i] = b.checkinRecord(ctx, rec)
			return nil
		})
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

func (b *Broker) checkinRecord(ctx context.Context, rec *inventory.Record) (err error) {
	defer b.logFailure("checkin", &err, "host", hostLabel(rec))
	p, provName, instName, err := b.provider(ctx, providerOf(rec), rec.Instance)
	if err != nil {
		return fmt.Errorf("checkin %s: %w", hostLabel(rec), err)
	}
	if err := p.Checkin(ctx, rec); err != nil {
		return fmt.Errorf("checkin %s from %s: %w", hostLabel(rec), describe(provName, instName), err)
	}
	actx, cancel := afterwards(ctx)
	defer cancel()
	if err := b.store.Remove(actx, rec); err != nil {
		return fmt.Errorf("checkin %s: %w", hostLabel(rec), err)
	}
	if id := rec.ID(); id != "" {
		_ = os.Remove(b.KeptKnownHosts(id))
	}
	b.logger.Info("checked in", "host", hostLabel(rec))
	return nil
}

func hostLabel(rec *inventory.Record) string {
	var parts []string
	for _, s := range []string{rec.Name, rec.Hostname, rec.ID()} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return "(unnamed host)"
	}
	return strings.Join(parts, " ")
}

// Extend extends the leases of the hosts of recs concurrently, for providers
// that can (Extender). args are passed to the provider (e.g. new_expire_time).
func (b *Broker) Extend(ctx context.Context, args map[string]any, recs ...*inventory.Record) (err error) {
	defer b.logFailure("extend", &err, "hosts", len(recs))
	errs := make([]error, len(recs))
	var g errgroup.Group
	g.SetLimit(maxParallel)
	for i, rec := range recs {
		g.Go(func() error {
			p, provName, _, err := b.provider(ctx, providerOf(rec), rec.Instance)
			if err != nil {
				errs[i] = err
				return nil
			}
			ext, ok := p.(providers.Extender)
			if !ok {
				errs[i] = fmt.Errorf("extend %s: provider %s cannot extend leases", hostLabel(rec), provName)
				return nil
			}
			if err := ext.Extend(ctx, rec, cloneMap(args)); err != nil {
				errs[i] = fmt.Errorf("extend %s: %w", hostLabel(rec), err)
			}
			return nil
		})
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

// Duplicate checks out count new hosts (one when 0) with the same provider,
// instance and arguments as rec — the Python broker's "broker duplicate".
func (b *Broker) Duplicate(ctx context.Context, rec *inventory.Record, count int) ([]*hostkit.Host, error) {
	if rec.Provider == "" {
		err := fmt.Errorf("broker: duplicate %s: record has no _broker_provider", hostLabel(rec))
		b.logFailure("duplicate", &err) // a failed Checkout logs itself
		return nil, err
	}
	return b.Checkout(ctx, Request{Provider: rec.Provider, Instance: rec.Instance, Args: cloneMap(rec.Args), Count: count})
}

// Execute runs a provider action that creates no host (the Python broker's "broker
// execute"), e.g. a workflow or a one-shot container, and returns its result.
func (b *Broker) Execute(ctx context.Context, req Request) (_ any, err error) {
	defer b.logFailure("execute", &err)
	plan, err := b.resolve(req)
	if err != nil {
		return nil, err
	}
	p, provName, instName, err := b.provider(ctx, plan.provider, plan.instance)
	if err != nil {
		return nil, err
	}
	ex, ok := p.(providers.Executor)
	if !ok {
		return nil, fmt.Errorf("broker: provider %s cannot execute actions", provName)
	}
	out, err := ex.Execute(ctx, plan.args)
	if err != nil {
		return nil, fmt.Errorf("broker: execute on %s: %w", describe(provName, instName), err)
	}
	return out, nil
}

// Describe returns a provider's description of what it offers (its
// arguments, templates, images): the Python broker's "broker providers".
func (b *Broker) Describe(ctx context.Context, provider, instance, topic string) (_ string, err error) {
	defer b.logFailure("describe", &err, "provider", provider)
	p, provName, _, err := b.provider(ctx, provider, instance)
	if err != nil {
		return "", err
	}
	d, ok := p.(providers.Describer)
	if !ok {
		return "", fmt.Errorf("broker: provider %s has no description", provName)
	}
	return d.Describe(ctx, topic)
}

// logFailure writes a failed action to the log (broker.log) with its
// error, as the Python broker does; *errp nil is a success, logged (or
// not) by the action itself.
func (b *Broker) logFailure(action string, errp *error, attrs ...any) {
	if *errp != nil {
		b.logger.Error(action+" failed", append(attrs, "err", *errp)...)
	}
}

// cloneMap returns a deep copy of m that callers may change; an empty
// map for nil.
func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return plain.CopyMap(m)
}
