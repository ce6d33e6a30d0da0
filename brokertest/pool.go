package brokertest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/hostkit"
)

// WithEager makes NewPool check out all its hosts at once, concurrently.
func WithEager() PoolOption { return poolOnly(func(p *broker.PoolOptions) { p.Eager = true }) }

// WithReuseFor makes a pool leave its hosts, at its end, free for reuse for
// d instead of checking them in: a later pool with the same request, in
// this test binary or another, leases them instead of checking out new
// hosts (broker.PoolOptions.ReuseFor).
func WithReuseFor(d time.Duration) PoolOption {
	return poolOnly(func(p *broker.PoolOptions) { p.ReuseFor = d })
}

// WithReuseFailed makes a pool hand a host whose lease ended in a failed
// subtest to the next lease, instead of checking it in and replacing it
// (broker.PoolOptions.ReuseFailed). WithKeepOnFailure, or -brokertest.keep,
// wins: the host is then kept for inspection.
func WithReuseFailed() PoolOption {
	return poolOnly(func(p *broker.PoolOptions) { p.ReuseFailed = true })
}

// Pool shares up to size hosts among the parallel subtests of a test. Each
// lease and release is a line in the leasing test's log (the host and how
// it is reached), and so is a host's replacement and why; the pool's test
// logs a summary when the pool closes (broker.PoolStats).
type Pool struct {
	p           *broker.Pool
	b           *broker.Broker
	opts        options
	size        int
	reuseFailed bool

	mu        sync.Mutex
	seen      map[*hostkit.Host]bool
	retired   []string // hosts that left the pool, why, not yet replaced
	resetErrs map[*hostkit.Host]error
}

// NewPool makes a pool of up to size hosts of req for t's subtests. Hosts are
// checked out as leases need them (all at once WithEager) and checked in when
// t and all its subtests end (or left for later runs WithReuseFor). It takes
// every Option, and the PoolOptions.
func NewPool(t testing.TB, req broker.Request, size int, opts ...PoolOption) *Pool {
	t.Helper()
	return newPool(t, req, size, collectPool(opts))
}

func newPool(t testing.TB, req broker.Request, size int, o poolOptions) *Pool {
	t.Helper()
	b := o.brokerFor(t)
	if req.Test == "" {
		req.Test = t.Name()
	}
	p, err := b.NewPool(t.Context(), req, size, o.pool)
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	t.Cleanup(func() {
		t.Helper() // lines at the test's NewPool call
		ctx, cancel := context.WithTimeout(context.Background(), o.checkinTimeout)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("brokertest: closing pool: %v", err)
		}
		t.Logf("brokertest: pool closed: %s", p.Summary())
	})
	return &Pool{p: p, b: b, opts: o.options, size: size, reuseFailed: o.pool.ReuseFailed,
		seen: map[*hostkit.Host]bool{}, resetErrs: map[*hostkit.Host]error{}}
}

// origin says where a leased host comes from: the pool's hosts, a new one,
// or the replacement of one that left.
func (p *Pool) origin(h *hostkit.Host) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen[h] {
		return ""
	}
	p.seen[h] = true
	if len(p.seen) > p.size && len(p.retired) > 0 {
		why := p.retired[0]
		p.retired = p.retired[1:]
		return ", new, replacing " + why
	}
	return ", new"
}

// retire notes that a host left the pool, for the lease that replaces it.
func (p *Pool) retire(name, why string) {
	p.mu.Lock()
	p.retired = append(p.retired, name+" ("+why+")")
	p.mu.Unlock()
}

// takeResetErr returns (and forgets) the error of h's last Reset.
func (p *Pool) takeResetErr(h *hostkit.Host) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.resetErrs[h]
	delete(p.resetErrs, h)
	return err
}

// Lease gives a host to t alone, waiting (as long as t's context lives) until
// one is free, and takes it back when t ends. A host whose test failed is
// checked in and replaced (WithReuseFailed: handed to the next lease), or,
// WithKeepOnFailure or -brokertest.keep, kept for inspection and replaced.
func (p *Pool) Lease(t testing.TB) *hostkit.Host {
	t.Helper()
	h, err := p.p.Acquire(t.Context())
	if err != nil {
		t.Fatalf("brokertest: lease: %v", err)
	}
	name := hostName(p.b, h)
	t.Logf("brokertest: leased %s%s; %s", name, p.origin(h), reach(p.b, h))
	t.Cleanup(func() {
		t.Helper() // lines at the test's Lease call
		ctx, cancel := context.WithTimeout(context.Background(), p.opts.checkinTimeout)
		defer cancel()
		if t.Failed() && p.opts.keepsOnFailure() {
			if err := p.p.Keep(ctx, h); err != nil {
				t.Errorf("brokertest: keeping the pool host of a failed test: %v", err)
				return
			}
			logKept(t, p.b, []*hostkit.Host{h})
			p.retire(name, "kept for inspection")
			return
		}
		err := p.p.Release(ctx, h, !t.Failed())
		resetErr := p.takeResetErr(h)
		switch {
		case err != nil:
			t.Errorf("brokertest: %v", err)
		case resetErr != nil && p.reuseFailed:
			t.Logf("brokertest: released %s; its Reset failed, and it goes to the next lease as it is (WithReuseFailed): %v", name, resetErr)
		case resetErr != nil:
			t.Logf("brokertest: released %s; its Reset failed, so it was checked in and the pool replaces it: %v", name, resetErr)
			p.retire(name, "its Reset failed")
		case t.Failed() && !p.reuseFailed:
			t.Logf("brokertest: released %s; checked in, since this test failed, and the pool replaces it", name)
			p.retire(name, "its test failed")
		default:
			t.Logf("brokertest: released %s", name)
		}
	})
	return h
}

// Stats reports how many hosts the pool checked out and how many it reused
// from earlier runs.
func (p *Pool) Stats() (checkouts, reused int) { return p.p.Stats() }

// Summary counts what the pool did so far: leases, checkouts, and the hosts
// it replaced and why (a failed Reset, a failed test, kept for inspection).
func (p *Pool) Summary() broker.PoolStats { return p.p.Summary() }

// PoolAs is a pool of custom host types T (structs embedding *hostkit.Host).
// Setup runs once per host, Reset (Resetter) after every healthy
// lease, Teardown before check-in.
type PoolAs[T any] struct {
	*Pool
	mu    sync.Mutex
	typed map[*hostkit.Host]*T
}

// NewPoolAs makes a pool of custom host types, like NewPool; a T that is
// no struct embedding *hostkit.Host fails t before anything is checked out.
func NewPoolAs[T any](t testing.TB, req broker.Request, size int, opts ...PoolOption) *PoolAs[T] {
	t.Helper()
	if err := checkHostType[T](); err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	pa := &PoolAs[T]{typed: map[*hostkit.Host]*T{}}
	o := collectPool(opts)
	o.pool.Prepare = func(ctx context.Context, h *hostkit.Host) error {
		v, err := wrap[T](h)
		if err != nil {
			return err
		}
		if err := setup(ctx, v); err != nil {
			return err
		}
		pa.mu.Lock()
		pa.typed[h] = v
		pa.mu.Unlock()
		return nil
	}
	o.pool.Reset = func(ctx context.Context, h *hostkit.Host) error {
		r, ok := any(pa.get(h)).(Resetter)
		if !ok {
			return nil
		}
		err := r.Reset(ctx)
		if err != nil { // for the lease's log line (Lease's cleanup)
			pa.Pool.mu.Lock()
			pa.Pool.resetErrs[h] = err
			pa.Pool.mu.Unlock()
		}
		return err
	}
	o.pool.Teardown = func(ctx context.Context, h *hostkit.Host) error {
		v := pa.get(h)
		pa.mu.Lock()
		delete(pa.typed, h)
		pa.mu.Unlock()
		if td, ok := any(v).(Teardowner); ok {
			return td.Teardown(ctx)
		}
		return nil
	}
	pa.Pool = newPool(t, req, size, o)
	return pa
}

func (pa *PoolAs[T]) get(h *hostkit.Host) *T {
	pa.mu.Lock()
	defer pa.mu.Unlock()
	return pa.typed[h]
}

// Lease gives a host to t alone, as Pool.Lease does.
func (pa *PoolAs[T]) Lease(t testing.TB) *T {
	t.Helper()
	return pa.get(pa.Pool.Lease(t))
}
