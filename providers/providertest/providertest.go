// Package providertest checks a provider against the whole contract every
// provider must keep, in the manner of testing/fstest and testing/slogtest.
// A provider that passes works with the broker; nothing the broker relies on
// is left unchecked here.
//
// Run runs each check as a subtest, with a fresh provider from open:
//
//	func TestConformance(t *testing.T) {
//		cfg := providers.Config{Provider: "Mine", Settings: …, Dir: t.TempDir(), Logger: slog.Default()}
//		providertest.Run(t, func(t *testing.T) providers.Provider {
//			p, err := driver.Open(t.Context(), cfg)
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { p.Close() })
//			return p
//		}, providertest.Options{Args: map[string]any{"image": "x"}, Driver: driver, Config: cfg})
//	}
//
// Check runs the same checks outside a test and returns every failure,
// joined, as fstest.TestFS does.
//
// The contract checked:
//
//   - Driver: Open succeeds with good settings and fails, with an error
//     naming the setting, with bad ones; ArgKeys are non-empty and distinct;
//     a providers.SettingsChecker lists every key of the good settings and
//     its CheckSettings accepts them.
//   - Checkout gives a record with a name and a hostname whose host runs
//     commands (status, stdout and stderr apart); the record alone, after a YAML
//     round trip through an inventory file, rebuilds the host.
//   - Checkin removes the host (Options.Exists, and the host no longer runs
//     commands through the provider), is idempotent, and accepts a record of
//     a host that never existed.
//   - The crash contract: Checkin works from the intent record alone (the
//     _brokertest id, provider, instance, args and whatever Progress
//     recorded), which is what a crash between the broker's intent write and
//     the provider's answer leaves; so does a checkout cancelled part-way or
//     started with a cancelled context: after Checkin of its intent record
//     nothing is findable by its id.
//   - Progress is given only plain data (strings, numbers, booleans, lists
//     and string-keyed maps of them), never after Checkout returned, and no
//     record holds a secret (Options.Secrets).
//   - Count hosts check out concurrently and are distinct; one host takes
//     concurrent commands; refused arguments give an error naming them.
//   - Optional interfaces, when implemented: Extender extends a live host;
//     Syncer lists a checked-out host (by id, or name and hostname) and no
//     longer does after check-in; Describer gives a non-empty overview.
package providertest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// Options describe how to exercise a provider.
type Options struct {
	// Args are the checkout arguments of a host that works.
	Args map[string]any
	// BadArgs are arguments the provider must refuse with an error (e.g. an
	// image that does not exist). Nil skips that check.
	BadArgs map[string]any
	// BadArgsMention is a text the refusal must contain (e.g. the bad image's
	// name). Empty: the error need only be non-empty.
	BadArgsMention string
	// Count is how many hosts the concurrency check checks out at once
	// (default 3).
	Count int
	// Exists reports whether the provider still holds the host of rec; used
	// to prove check-in removed it. rec may hold only what an intent record
	// holds (the id, provider, instance, args, progress data). Nil: check-in
	// is proved by the host no longer answering, and by Sync for a Syncer.
	Exists func(ctx context.Context, rec *inventory.Record) (bool, error)
	// Driver, when set, is checked: Open with Config succeeds, Open with
	// BadSettings merged over Config.Settings fails, ArgKeys are sound, and
	// a SettingsChecker takes Config.Settings.
	Driver providers.Driver
	// Config is what Driver is opened with. Its Provider and Instance also
	// name the provider in the intent records the crash checks build.
	Config providers.Config
	// BadSettings, merged over Config.Settings, are settings Open must
	// refuse (e.g. {"port": "x"}). Nil skips that part of the Driver check.
	BadSettings map[string]any
	// BadSettingsMention is a text Open's refusal must contain (e.g. the
	// key). Empty: the error need only be non-empty.
	BadSettingsMention string
	// ExtendArgs are the arguments given to Extend (Extender only).
	ExtendArgs map[string]any
	// CancelAfter is how long after its start a checkout is cancelled in the
	// cancellation check (default 100ms).
	CancelAfter time.Duration
	// Secrets are texts (passwords, tokens) that no record and no progress
	// data may contain.
	Secrets []string
	// Timeout bounds each check (default 2 min).
	Timeout time.Duration
}

func (o *Options) defaults() {
	if o.Count == 0 {
		o.Count = 3
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.CancelAfter == 0 {
		o.CancelAfter = 100 * time.Millisecond
	}
}

// check is one part of the contract, run on a fresh provider.
type check struct {
	name string
	run  func(s *suite, ctx context.Context) error
}

var checks = []check{
	{"Driver", (*suite).driver},
	{"CheckoutReachable", (*suite).checkoutReachable},
	{"RecordRebuildsHost", (*suite).recordRebuilds},
	{"CheckinRemovesAndIsIdempotent", (*suite).checkinRemoves},
	{"CheckinFromIntentRecord", (*suite).checkinFromIntent},
	{"CancelledCheckout", (*suite).cancelledCheckout},
	{"CountConcurrent", (*suite).countConcurrent},
	{"ConcurrentCommands", (*suite).concurrentCommands},
	{"ClearErrors", (*suite).clearErrors},
	{"Extender", (*suite).extender},
	{"Syncer", (*suite).syncer},
	{"Describer", (*suite).describer},
}

// errSkip is returned by a check that does not apply to the provider.
var errSkip = errors.New("not applicable")

// Run runs the conformance checks as subtests of t, each on a fresh
// provider from open. open should register the provider's Close with
// t.Cleanup.
func Run(t *testing.T, open func(*testing.T) providers.Provider, opts Options) {
	opts.defaults()
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), opts.Timeout)
			defer cancel()
			s := &suite{o: opts}
			if c.name != "Driver" {
				if s.p = open(t); s.p == nil {
					t.Fatal("open returned a nil provider")
				}
			}
			switch err := c.run(s, ctx); {
			case errors.Is(err, errSkip):
				t.Skip(err)
			case err != nil:
				t.Error(err)
			}
		})
	}
}

// Check runs the conformance checks, each on a fresh provider from open
// (closed afterwards), and returns every failure
// joined, each naming its check; nil when the provider keeps the contract.
func Check(ctx context.Context, open func() (providers.Provider, error), opts Options) error {
	opts.defaults()
	var errs []error
	for _, c := range checks {
		errs = append(errs, runCheck(ctx, c, open, opts))
	}
	return errors.Join(errs...)
}

func runCheck(ctx context.Context, c check, open func() (providers.Provider, error), opts Options) error {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	s := &suite{o: opts}
	if c.name != "Driver" {
		p, err := open()
		if err != nil {
			return fmt.Errorf("%s: open: %w", c.name, err)
		}
		if p == nil {
			return fmt.Errorf("%s: open returned a nil provider", c.name)
		}
		defer p.Close()
		s.p = p
	}
	if err := c.run(s, ctx); err != nil && !errors.Is(err, errSkip) {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	return nil
}

type suite struct {
	p providers.Provider
	o Options
}

// afterwards is a context for clean-up that outlives a cancelled ctx.
func (s *suite) afterwards() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.o.Timeout)
}

// attempt is one checkout: its intent record, as the broker writes it
// before asking the provider, and what the provider answered.
type attempt struct {
	intent *inventory.Record
	rec    *inventory.Record
	mu     sync.Mutex
	errs   []error // misuse of Progress
	done   bool
}

// progress records data in the intent record as the broker does, and
// notes data that is not plain or holds a secret, and calls after return.
func (a *attempt) progress(secrets []string) func(map[string]any) {
	return func(data map[string]any) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.done {
			a.errs = append(a.errs, fmt.Errorf("provider called Progress after Checkout returned (data %v)", keys(data)))
			return
		}
		if err := plain(data); err != nil {
			a.errs = append(a.errs, fmt.Errorf("provider gave Progress data that is not plain: %w", err))
			return
		}
		if err := noSecrets("Progress data", data, secrets); err != nil {
			a.errs = append(a.errs, err)
		}
		if a.intent.Broker.Data == nil {
			a.intent.Broker.Data = map[string]any{}
		}
		maps.Copy(a.intent.Broker.Data, data)
	}
}

// misuse returns what Progress was wrongly given so far.
func (a *attempt) misuse() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return errors.Join(a.errs...)
}

// try asks the provider for a host with args. The record it returns has
// the broker's fields filled in; the error is the provider's.
func (s *suite) try(ctx context.Context, args map[string]any, label string) (*attempt, error) {
	a := &attempt{intent: &inventory.Record{
		Provider: s.o.Config.Provider, Instance: s.o.Config.Instance, Args: clone(args),
		Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateCreating, CheckedOut: time.Now().UTC().Truncate(time.Second)},
	}}
	res, err := s.p.Checkout(ctx, providers.CheckoutRequest{
		ID:       a.intent.Broker.ID,
		Args:     clone(args),
		Labels:   map[string]string{"run": "providertest", "test": label},
		Progress: a.progress(s.o.Secrets),
	})
	a.mu.Lock()
	a.done = true
	a.mu.Unlock()
	if err != nil {
		return a, err
	}
	// The record as the broker stores it.
	meta := *a.intent.Broker
	meta.SSH, meta.Data = res.SSH, res.Data
	meta.State = inventory.StateReady
	rec := res.Record(meta.ID)
	rec.Provider, rec.Instance, rec.Broker = a.intent.Provider, a.intent.Instance, &meta
	if rec.Args == nil {
		rec.Args = clone(args)
	}
	a.rec = rec
	return a, nil
}

// checkout checks a host out, checks that its record is complete, and
// returns it with a function that checks it in (for defer; its error joins
// *errp).
func (s *suite) checkout(ctx context.Context, label string) (*inventory.Record, func(errp *error), error) {
	a, err := s.try(ctx, s.o.Args, label)
	if err != nil {
		// Clean up as the broker does after a failed checkout.
		actx, cancel := s.afterwards()
		defer cancel()
		return nil, nil, errors.Join(fmt.Errorf("provider's Checkout: %w", err), a.misuse(), s.p.Checkin(actx, a.intent))
	}
	rec := a.rec
	checkin := func(errp *error) {
		actx, cancel := s.afterwards()
		defer cancel()
		if err := s.p.Checkin(actx, rec); err != nil {
			*errp = errors.Join(*errp, fmt.Errorf("provider's Checkin at the end: %w", err))
		}
	}
	var errs []error
	errs = append(errs, a.misuse())
	if rec.Hostname == "" {
		errs = append(errs, errors.New("provider's Checkout: record has no hostname"))
	}
	if rec.Name == "" {
		errs = append(errs, errors.New("provider's Checkout: record has no name"))
	}
	if rec.Broker.Data != nil {
		if err := plain(rec.Broker.Data); err != nil {
			errs = append(errs, fmt.Errorf("provider's Checkout: record's data is not plain: %w", err))
		}
	}
	if b, err := inventory.Marshal([]*inventory.Record{rec}); err != nil {
		errs = append(errs, fmt.Errorf("provider's Checkout: record does not encode: %w", err))
	} else {
		errs = append(errs, noSecrets("the record", string(b), s.o.Secrets))
	}
	if err := errors.Join(errs...); err != nil {
		checkin(&err)
		return nil, nil, err
	}
	return rec, checkin, nil
}

// echo runs a command on the host of rec and checks its result. (The
// broker, not the provider, keeps the host's record.)
func (s *suite) echo(ctx context.Context, rec *inventory.Record, word string) error {
	h, err := s.p.Connect(ctx, rec)
	if err != nil {
		return fmt.Errorf("provider's Connect: %w", err)
	}
	defer h.Close()
	res, err := h.Execute(ctx, "echo "+word+"; echo err-"+word+" >&2; exit 3")
	if err != nil {
		return fmt.Errorf("provider's Execute: %w", err)
	}
	if res.Status != 3 || res.Stdout != word+"\n" || res.Stderr != "err-"+word+"\n" {
		return fmt.Errorf("provider's Execute: got %+v, want Status 3, Stdout %q, Stderr %q", res, word+"\n", "err-"+word+"\n")
	}
	return nil
}

func (s *suite) driver(ctx context.Context) error {
	d := s.o.Driver
	if d == nil {
		return fmt.Errorf("%w: Options.Driver not set", errSkip)
	}
	var errs []error
	ks := d.ArgKeys()
	if len(ks) == 0 {
		errs = append(errs, errors.New("ArgKeys is empty: no argument picks the provider"))
	}
	for i, k := range ks {
		if strings.TrimSpace(k) == "" {
			errs = append(errs, fmt.Errorf("ArgKeys[%d] is blank", i))
		}
		if slices.Index(ks, k) != i {
			errs = append(errs, fmt.Errorf("ArgKeys lists %q twice", k))
		}
	}
	if sc, ok := d.(providers.SettingsChecker); ok {
		keys := sc.SettingKeys()
		for k := range s.o.Config.Settings {
			if !slices.ContainsFunc(keys, func(x string) bool { return strings.EqualFold(x, k) }) {
				errs = append(errs, fmt.Errorf("SettingKeys %v does not list %q, a key of the good settings", keys, k))
			}
		}
		if err := sc.CheckSettings(s.o.Config); err != nil {
			errs = append(errs, fmt.Errorf("driver's CheckSettings with good settings: %w", err))
		}
	}
	p, err := d.Open(ctx, s.o.Config)
	if err != nil {
		errs = append(errs, fmt.Errorf("driver's Open with good settings: %w", err))
	} else if p == nil {
		errs = append(errs, errors.New("driver's Open returned a nil provider and no error"))
	} else if err := p.Close(); err != nil {
		errs = append(errs, fmt.Errorf("provider's Close: %w", err))
	}
	if s.o.BadSettings != nil {
		cfg := s.o.Config
		cfg.Settings = clone(cfg.Settings)
		maps.Copy(cfg.Settings, s.o.BadSettings)
		p, err := d.Open(ctx, cfg)
		switch {
		case err == nil:
			p.Close()
			errs = append(errs, fmt.Errorf("driver's Open with bad settings %v succeeded", s.o.BadSettings))
		case err.Error() == "":
			errs = append(errs, errors.New("driver's Open with bad settings: empty error text"))
		case s.o.BadSettingsMention != "" && !strings.Contains(err.Error(), s.o.BadSettingsMention):
			errs = append(errs, fmt.Errorf("driver's Open with bad settings: error %q does not mention %q", err, s.o.BadSettingsMention))
		}
	}
	return errors.Join(errs...)
}

func (s *suite) checkoutReachable(ctx context.Context) (err error) {
	rec, checkin, err := s.checkout(ctx, "CheckoutReachable")
	if err != nil {
		return err
	}
	defer checkin(&err)
	return s.echo(ctx, rec, "reachable")
}

func (s *suite) recordRebuilds(ctx context.Context) (err error) {
	rec, checkin, err := s.checkout(ctx, "RecordRebuildsHost")
	if err != nil {
		return err
	}
	defer checkin(&err)
	b, err := inventory.Marshal([]*inventory.Record{rec})
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	recs, err := inventory.Parse(filepath.Join("providertest", "inventory.yaml"), b)
	if err != nil || len(recs) != 1 {
		return fmt.Errorf("decode record back: %d records, %v", len(recs), err)
	}
	if err := s.echo(ctx, recs[0], "rebuilt"); err != nil {
		return fmt.Errorf("host from the reloaded record: %w", err)
	}
	return nil
}

// gone checks that the provider no longer holds the host of rec (as far as
// Exists and Sync can tell) and, when full is set, that rec no longer gives
// a host that runs commands.
func (s *suite) gone(ctx context.Context, rec *inventory.Record, full bool) error {
	if s.o.Exists != nil {
		ok, err := s.o.Exists(ctx, rec)
		if err != nil {
			return fmt.Errorf("options' Exists: %w", err)
		}
		if ok {
			return fmt.Errorf("host %s (id %s) still exists after Checkin", rec.Name, rec.ID())
		}
	}
	if sy, ok := s.p.(providers.Syncer); ok {
		recs, err := sy.Sync(ctx, "")
		if err != nil {
			return fmt.Errorf("provider's Sync: %w", err)
		}
		if slices.ContainsFunc(recs, func(r *inventory.Record) bool { return listed(r, rec) }) {
			return fmt.Errorf("provider's Sync still lists host %s (id %s) after Checkin", rec.Name, rec.ID())
		}
	}
	if !full {
		return nil
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if h, err := s.p.Connect(short, rec); err == nil {
		defer h.Close()
		if res, err := h.Execute(short, "true"); err == nil {
			return fmt.Errorf("host %s still runs commands after Checkin: %+v", rec.Name, res)
		}
	}
	return nil
}

func (s *suite) checkinRemoves(ctx context.Context) (err error) {
	rec, checkin, err := s.checkout(ctx, "CheckinRemovesAndIsIdempotent")
	if err != nil {
		return err
	}
	h, err := s.p.Connect(ctx, rec)
	if err != nil {
		checkin(&err)
		return fmt.Errorf("provider's Connect: %w", err)
	}
	if _, err := h.Execute(ctx, "true"); err != nil {
		h.Close()
		checkin(&err)
		return fmt.Errorf("provider's Execute before Checkin: %w", err)
	}
	h.Close()
	if err := s.p.Checkin(ctx, rec); err != nil {
		return fmt.Errorf("provider's Checkin: %w", err)
	}
	if err := s.p.Checkin(ctx, rec); err != nil {
		return fmt.Errorf("second Checkin of the same host: %w (must be idempotent)", err)
	}
	return s.gone(ctx, rec, true)
}

func (s *suite) checkinFromIntent(ctx context.Context) error {
	a, err := s.try(ctx, s.o.Args, "CheckinFromIntentRecord")
	if err != nil {
		actx, cancel := s.afterwards()
		defer cancel()
		return errors.Join(fmt.Errorf("provider's Checkout: %w", err), s.p.Checkin(actx, a.intent))
	}
	// The broker crashed before writing the provider's answer: only the
	// intent record is left, and the reaper checks that in.
	if err := s.p.Checkin(ctx, a.intent); err != nil {
		actx, cancel := s.afterwards()
		defer cancel()
		return errors.Join(fmt.Errorf("provider's Checkin of the intent record (what a crash leaves): %w", err), s.p.Checkin(actx, a.rec))
	}
	if err := s.gone(ctx, a.rec, true); err != nil {
		actx, cancel := s.afterwards()
		defer cancel()
		return errors.Join(fmt.Errorf("after Checkin of the intent record alone: %w", err), s.p.Checkin(actx, a.rec))
	}
	return a.misuse()
}

func (s *suite) cancelledCheckout(ctx context.Context) error {
	var errs []error
	for _, after := range []time.Duration{0, s.o.CancelAfter} {
		cctx, cancel := context.WithCancel(ctx)
		if after == 0 {
			cancel()
		} else {
			time.AfterFunc(after, cancel)
		}
		a, err := s.try(cctx, s.o.Args, "CancelledCheckout")
		cancel()
		what := fmt.Sprintf("checkout cancelled after %v", after)
		if after == 0 {
			what = "checkout with a cancelled context"
			if err == nil {
				errs = append(errs, errors.New("provider's Checkout with a cancelled context succeeded (want the context's error)"))
			}
		}
		errs = append(errs, a.misuse())
		rec := a.intent
		if err == nil {
			rec = a.rec // it finished first: the broker checks in the full record
		}
		actx, acancel := s.afterwards()
		if err := s.p.Checkin(actx, rec); err != nil {
			errs = append(errs, fmt.Errorf("%s: Checkin of its record: %w", what, err))
		} else if err := s.gone(actx, a.intent, false); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
		acancel()
	}
	return errors.Join(errs...)
}

func (s *suite) countConcurrent(ctx context.Context) error {
	recs := make([]*inventory.Record, s.o.Count)
	checkins := make([]func(*error), s.o.Count)
	g, gctx := errgroup.WithContext(ctx)
	for i := range recs {
		g.Go(func() error {
			rec, checkin, err := s.checkout(gctx, fmt.Sprintf("CountConcurrent-%d", i))
			if err != nil {
				return fmt.Errorf("checkout %d: %w", i, err)
			}
			recs[i], checkins[i] = rec, checkin
			return s.echo(gctx, rec, fmt.Sprintf("host%d", i))
		})
	}
	err := g.Wait()
	for _, checkin := range checkins {
		if checkin != nil {
			checkin(&err)
		}
	}
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, rec := range recs {
		key := rec.Name + "/" + rec.Hostname + "/" + fmt.Sprint(sshPort(rec))
		if seen[key] {
			err = errors.Join(err, fmt.Errorf("two concurrent checkouts gave the same host %s", key))
		}
		seen[key] = true
	}
	return err
}

func sshPort(rec *inventory.Record) int {
	if rec.Broker == nil || rec.Broker.SSH == nil {
		return 0
	}
	return rec.Broker.SSH.Port
}

func (s *suite) concurrentCommands(ctx context.Context) (err error) {
	rec, checkin, err := s.checkout(ctx, "ConcurrentCommands")
	if err != nil {
		return err
	}
	defer checkin(&err)
	h, err := s.p.Connect(ctx, rec)
	if err != nil {
		return fmt.Errorf("provider's Connect: %w", err)
	}
	defer h.Close()
	var g errgroup.Group
	for i := range 8 {
		g.Go(func() error {
			want := fmt.Sprintf("cmd%d", i)
			res, err := h.Execute(ctx, "echo "+want)
			if err != nil {
				return fmt.Errorf("execute %d: %w", i, err)
			}
			if res.Stdout != want+"\n" || res.Status != 0 {
				return fmt.Errorf("execute %d: got %+v, want stdout %q", i, res, want+"\n")
			}
			return nil
		})
	}
	return g.Wait()
}

func (s *suite) clearErrors(ctx context.Context) error {
	var errs []error
	// Checking in a host that never existed is not an error.
	ghost := &inventory.Record{
		Hostname: "ghost.invalid",
		Name:     "providertest-ghost-" + inventory.NewID(),
		Provider: s.o.Config.Provider, Instance: s.o.Config.Instance,
		Broker: &inventory.Meta{ID: inventory.NewID(), Data: map[string]any{}},
	}
	if err := s.p.Checkin(ctx, ghost); err != nil {
		errs = append(errs, fmt.Errorf("provider's Checkin of a host that does not exist: %w (want nil: check-in is idempotent)", err))
	}
	if s.o.BadArgs == nil {
		return errors.Join(errs...)
	}
	a, err := s.try(ctx, s.o.BadArgs, "ClearErrors")
	actx, cancel := s.afterwards()
	defer cancel()
	switch {
	case err == nil:
		errs = append(errs, fmt.Errorf("provider's Checkout with bad args %v succeeded", s.o.BadArgs), s.p.Checkin(actx, a.rec))
	case err.Error() == "":
		errs = append(errs, errors.New("provider's Checkout with bad args: empty error text"))
	case s.o.BadArgsMention != "" && !strings.Contains(err.Error(), s.o.BadArgsMention):
		errs = append(errs, fmt.Errorf("provider's Checkout with bad args: error %q does not mention %q", err, s.o.BadArgsMention))
	}
	if err != nil {
		errs = append(errs, s.p.Checkin(actx, a.intent))
	}
	return errors.Join(errs...)
}

func (s *suite) extender(ctx context.Context) (err error) {
	x, ok := s.p.(providers.Extender)
	if !ok {
		return fmt.Errorf("%w: the provider is no Extender", errSkip)
	}
	rec, checkin, err := s.checkout(ctx, "Extender")
	if err != nil {
		return err
	}
	defer checkin(&err)
	if err := x.Extend(ctx, rec, clone(s.o.ExtendArgs)); err != nil {
		return fmt.Errorf("provider's Extend of a live host: %w", err)
	}
	if err := s.echo(ctx, rec, "extended"); err != nil {
		return fmt.Errorf("after Extend: %w", err)
	}
	return nil
}

func (s *suite) syncer(ctx context.Context) error {
	sy, ok := s.p.(providers.Syncer)
	if !ok {
		return fmt.Errorf("%w: the provider is no Syncer", errSkip)
	}
	rec, checkin, err := s.checkout(ctx, "Syncer")
	if err != nil {
		return err
	}
	recs, err := sy.Sync(ctx, "")
	if err != nil {
		checkin(&err)
		return fmt.Errorf("provider's Sync: %w", err)
	}
	if !slices.ContainsFunc(recs, func(r *inventory.Record) bool { return listed(r, rec) }) {
		err := fmt.Errorf("provider's Sync does not list the checked-out host %s (id %s) among %d records", rec.Name, rec.ID(), len(recs))
		checkin(&err)
		return err
	}
	if err := s.p.Checkin(ctx, rec); err != nil {
		return fmt.Errorf("provider's Checkin: %w", err)
	}
	recs, err = sy.Sync(ctx, "")
	if err != nil {
		return fmt.Errorf("provider's Sync after Checkin: %w", err)
	}
	if slices.ContainsFunc(recs, func(r *inventory.Record) bool { return listed(r, rec) }) {
		return fmt.Errorf("provider's Sync still lists host %s (id %s) after Checkin", rec.Name, rec.ID())
	}
	return nil
}

// listed reports whether r, a record Sync gave, is the host of rec: by id
// when r has one, else by name and hostname (a provider may not know ids).
func listed(r, rec *inventory.Record) bool {
	if r.ID() != "" {
		return r.ID() == rec.ID()
	}
	return r.Hostname != "" && r.Hostname == rec.Hostname && r.Name == rec.Name
}

func (s *suite) describer(ctx context.Context) error {
	d, ok := s.p.(providers.Describer)
	if !ok {
		return fmt.Errorf("%w: the provider is no Describer", errSkip)
	}
	text, err := d.Describe(ctx, "")
	if err != nil {
		return fmt.Errorf("provider's Describe overview: %w", err)
	}
	if strings.TrimSpace(text) == "" {
		return errors.New("provider's Describe overview is empty")
	}
	return noSecrets("Describe overview", text, s.o.Secrets)
}

// plain reports the first value in v that is not plain data (what an
// inventory file holds as it is: no pointers, structs, funcs or channels).
func plain(v any) error {
	return plainValue(reflect.ValueOf(v), "")
}

func plainValue(v reflect.Value, path string) error {
	if !v.IsValid() {
		return nil
	}
	switch v.Kind() {
	case reflect.Bool, reflect.String, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return nil
	case reflect.Interface:
		return plainValue(v.Elem(), path)
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if err := plainValue(v.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return fmt.Errorf("%s: map keyed by %s, want string keys", orTop(path), v.Type().Key())
		}
		for _, k := range v.MapKeys() {
			if err := plainValue(v.MapIndex(k), path+"."+k.String()); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%s: a %s, want strings, numbers, booleans, lists or maps", orTop(path), v.Type())
}

func orTop(path string) string {
	if path == "" {
		return "the value"
	}
	return strings.TrimPrefix(path, ".")
}

// noSecrets returns an error when v's text holds one of secrets; the
// error shows only a secret's first characters.
func noSecrets(what string, v any, secrets []string) error {
	text := fmt.Sprint(v)
	for _, sec := range secrets {
		if sec != "" && strings.Contains(text, sec) {
			return fmt.Errorf("%s holds a secret (%.3s…)", what, sec)
		}
	}
	return nil
}

func keys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

func clone(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	maps.Copy(out, m)
	return out
}
