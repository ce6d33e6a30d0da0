// Package providertest checks a provider against the contract every provider
// must keep, in the manner of testing/fstest.TestFS and testing/slogtest:
//
//	func TestConformance(t *testing.T) {
//		p := openMyProvider(t)
//		providertest.Run(t, p, providertest.Options{Args: map[string]any{"image": "x"}})
//	}
//
// It checks that a checkout gives a reachable host, that the record alone
// rebuilds it (after a YAML round trip through an inventory file), that
// check-in removes it and is idempotent, that Count hosts can be checked out
// concurrently, that one host takes concurrent commands, and that errors are
// clear.
package providertest

import (
	"context"
	"fmt"
	"path/filepath"
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
	// to prove check-in removed it. Nil: check-in is proved by the host no
	// longer answering.
	Exists func(ctx context.Context, rec *inventory.Record) (bool, error)
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
}

// Run runs the conformance checks as subtests of t.
func Run(t *testing.T, p providers.Provider, opts Options) {
	opts.defaults()
	s := &suite{p: p, o: opts}
	t.Run("CheckoutReachable", s.checkoutReachable)
	t.Run("RecordRebuildsHost", s.recordRebuilds)
	t.Run("CheckinRemovesAndIsIdempotent", s.checkinRemoves)
	t.Run("CountConcurrent", s.countConcurrent)
	t.Run("ConcurrentCommands", s.concurrentCommands)
	t.Run("ClearErrors", s.clearErrors)
}

type suite struct {
	p providers.Provider
	o Options
}

func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), s.o.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// checkout checks a host out and registers its check-in.
func (s *suite) checkout(t *testing.T, ctx context.Context) *inventory.Record {
	t.Helper()
	id := inventory.NewID()
	rec, err := s.p.Checkout(ctx, providers.CheckoutRequest{
		ID:     id,
		Args:   clone(s.o.Args),
		Labels: map[string]string{"run": "providertest", "test": t.Name()},
	})
	if err != nil {
		t.Fatalf("Checkout: %v", err)
	}
	if rec == nil {
		t.Fatal("Checkout returned a nil record and no error")
	}
	if rec.Broker == nil {
		rec.Broker = &inventory.Meta{}
	}
	rec.Broker.ID = id
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.o.Timeout)
		defer cancel()
		if err := s.p.Checkin(ctx, rec); err != nil {
			t.Errorf("Checkin at cleanup: %v", err)
		}
	})
	if rec.Hostname == "" {
		t.Errorf("Checkout: record has no hostname")
	}
	if rec.Name == "" {
		t.Errorf("Checkout: record has no name")
	}
	return rec
}

// echo runs a command on the host of rec and checks its result.
func (s *suite) echo(ctx context.Context, rec *inventory.Record, word string) error {
	h, err := s.p.Connect(ctx, rec)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer h.Close()
	res, err := h.Execute(ctx, "echo "+word+"; echo err-"+word+" >&2; exit 3")
	if err != nil {
		return fmt.Errorf("execute: %w", err)
	}
	if res.Status != 3 || res.Stdout != word+"\n" || res.Stderr != "err-"+word+"\n" {
		return fmt.Errorf("execute: got %+v, want Status 3, Stdout %q, Stderr %q", res, word+"\n", "err-"+word+"\n")
	}
	return nil
}

func (s *suite) checkoutReachable(t *testing.T) {
	ctx := s.ctx(t)
	rec := s.checkout(t, ctx)
	if err := s.echo(ctx, rec, "reachable"); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) recordRebuilds(t *testing.T) {
	ctx := s.ctx(t)
	rec := s.checkout(t, ctx)
	store := inventory.Open(filepath.Join(t.TempDir(), "inventory.yaml"))
	if err := store.Put(rec); err != nil {
		t.Fatalf("store record: %v", err)
	}
	recs, err := store.Load()
	if err != nil || len(recs) != 1 {
		t.Fatalf("load record back: %d records, %v", len(recs), err)
	}
	if err := s.echo(ctx, recs[0], "rebuilt"); err != nil {
		t.Fatalf("host from the reloaded record: %v", err)
	}
}

func (s *suite) checkinRemoves(t *testing.T) {
	ctx := s.ctx(t)
	rec := s.checkout(t, ctx)
	h, err := s.p.Connect(ctx, rec)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if _, err := h.Execute(ctx, "true"); err != nil {
		t.Fatalf("Execute before checkin: %v", err)
	}
	h.Close()
	if err := s.p.Checkin(ctx, rec); err != nil {
		t.Fatalf("Checkin: %v", err)
	}
	if err := s.p.Checkin(ctx, rec); err != nil {
		t.Fatalf("second Checkin of the same host: %v (must be idempotent)", err)
	}
	if s.o.Exists != nil {
		ok, err := s.o.Exists(ctx, rec)
		if err != nil {
			t.Fatalf("Exists: %v", err)
		}
		if ok {
			t.Fatalf("host %s still exists after Checkin", rec.Name)
		}
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if h, err := s.p.Connect(short, rec); err == nil {
		defer h.Close()
		if res, err := h.Execute(short, "true"); err == nil {
			t.Fatalf("host %s still runs commands after Checkin: %+v", rec.Name, res)
		}
	}
}

func (s *suite) countConcurrent(t *testing.T) {
	ctx := s.ctx(t)
	recs := make([]*inventory.Record, s.o.Count)
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	for i := range recs {
		g.Go(func() error {
			id := inventory.NewID()
			rec, err := s.p.Checkout(gctx, providers.CheckoutRequest{ID: id, Args: clone(s.o.Args)})
			if err != nil {
				return fmt.Errorf("checkout %d: %w", i, err)
			}
			if rec.Broker == nil {
				rec.Broker = &inventory.Meta{}
			}
			rec.Broker.ID = id
			mu.Lock()
			recs[i] = rec
			mu.Unlock()
			return s.echo(gctx, rec, fmt.Sprintf("host%d", i))
		})
	}
	err := g.Wait()
	var checkinErrs []string
	for _, rec := range recs {
		if rec != nil {
			if cerr := s.p.Checkin(context.WithoutCancel(ctx), rec); cerr != nil {
				checkinErrs = append(checkinErrs, cerr.Error())
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(checkinErrs) > 0 {
		t.Fatalf("Checkin: %s", strings.Join(checkinErrs, "; "))
	}
	seen := map[string]bool{}
	for _, rec := range recs {
		key := rec.Name + "/" + rec.Hostname + "/" + fmt.Sprint(sshPort(rec))
		if seen[key] {
			t.Errorf("two concurrent checkouts gave the same host %s", key)
		}
		seen[key] = true
	}
}

func sshPort(rec *inventory.Record) int {
	if rec.Broker == nil || rec.Broker.SSH == nil {
		return 0
	}
	return rec.Broker.SSH.Port
}

func (s *suite) concurrentCommands(t *testing.T) {
	ctx := s.ctx(t)
	rec := s.checkout(t, ctx)
	h, err := s.p.Connect(ctx, rec)
	if err != nil {
		t.Fatalf("Connect: %v", err)
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
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) clearErrors(t *testing.T) {
	ctx := s.ctx(t)
	// Checking in a host that never existed is not an error.
	ghost := &inventory.Record{
		Hostname: "ghost.invalid",
		Name:     "providertest-ghost-" + inventory.NewID(),
		Broker:   &inventory.Meta{ID: inventory.NewID(), Data: map[string]any{}},
	}
	if err := s.p.Checkin(ctx, ghost); err != nil {
		t.Errorf("Checkin of a host that does not exist: %v (want nil: check-in is idempotent)", err)
	}
	if s.o.BadArgs == nil {
		return
	}
	rec, err := s.p.Checkout(ctx, providers.CheckoutRequest{ID: inventory.NewID(), Args: clone(s.o.BadArgs)})
	if err == nil {
		_ = s.p.Checkin(context.WithoutCancel(ctx), rec)
		t.Fatalf("Checkout with bad args %v succeeded", s.o.BadArgs)
	}
	if err.Error() == "" {
		t.Fatal("Checkout with bad args: empty error text")
	}
	if s.o.BadArgsMention != "" && !strings.Contains(err.Error(), s.o.BadArgsMention) {
		t.Errorf("Checkout with bad args: error %q does not mention %q", err, s.o.BadArgsMention)
	}
}

func clone(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
