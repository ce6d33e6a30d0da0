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

// Pool shares up to size hosts among the parallel subtests of a test.
type Pool struct {
	p    *broker.Pool
	b    *broker.Broker
	opts options
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
		ctx, cancel := context.WithTimeout(context.Background(), o.checkinTimeout)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("brokertest: closing pool: %v", err)
		}
	})
	return &Pool{p: p, b: b, opts: o.options}
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
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.opts.checkinTimeout)
		defer cancel()
		if t.Failed() && p.opts.keepsOnFailure() {
			if err := p.p.Keep(ctx, h); err != nil {
				t.Errorf("brokertest: keeping the pool host of a failed test: %v", err)
				return
			}
			logKept(t, p.b, []*hostkit.Host{h})
			return
		}
		if err := p.p.Release(ctx, h, !t.Failed()); err != nil {
			t.Errorf("brokertest: %v", err)
		}
	})
	return h
}

// Stats reports how many hosts the pool checked out and how many it reused
// from earlier runs.
func (p *Pool) Stats() (checkouts, reused int) { return p.p.Stats() }

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
		if r, ok := any(pa.get(h)).(Resetter); ok {
			return r.Reset(ctx)
		}
		return nil
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
