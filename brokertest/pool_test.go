package brokertest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/brokertest"
	"github.com/hostbroker/broker/hostkit"
)

func newTestBroker(t *testing.T) *broker.Broker {
	t.Helper()
	b, err := broker.New(broker.WithDirectory(t.TempDir()))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

// TestPoolExclusive: 64 parallel subtests share a pool of 4; no host is ever
// held by two subtests, each lease sees only its own marker file, and the
// pool checks out exactly 4 hosts.
func TestPoolExclusive(t *testing.T) {
	b := newTestBroker(t)
	var pool *brokertest.Pool
	holders := sync.Map{} // host -> *atomic.Int32
	t.Run("group", func(t *testing.T) {
		// Eager: "go test" runs only GOMAXPROCS subtests at once by default,
		// which a lazy pool would serve with fewer hosts.
		pool = brokertest.NewPool(t, broker.Request{}, 4, brokertest.WithBroker(b), brokertest.WithEager())
		for i := range 64 {
			t.Run(fmt.Sprintf("sub%02d", i), func(t *testing.T) {
				t.Parallel()
				h := pool.Lease(t)
				n, _ := holders.LoadOrStore(h, new(atomic.Int32))
				if got := n.(*atomic.Int32).Add(1); got != 1 {
					t.Errorf("host %s held by %d subtests at once", h.Hostname, got)
				}
				defer n.(*atomic.Int32).Add(-1)
				res, err := h.Execute(t.Context(), fmt.Sprintf("echo %s > lease && sleep 0.02 && cat lease", t.Name()))
				require.NoError(t, err)
				assert.Equal(t, t.Name()+"\n", res.Stdout, "another lease wrote the marker")
			})
		}
	})
	checkouts, reused := pool.Stats()
	assert.Equal(t, 4, checkouts, "exactly 4 checkouts")
	assert.Zero(t, reused)
	recs, err := b.Inventory(t.Context())
	require.NoError(t, err)
	assert.Empty(t, recs, "pool checked everything in when the test ended")
}

// TestPoolReplacesFailedHost: a host whose lease ended in a failed subtest is
// checked in and the next lease gets a new one.
func TestPoolReplacesFailedHost(t *testing.T) {
	b := newTestBroker(t)
	pool := brokertest.NewPool(t, broker.Request{}, 1, brokertest.WithBroker(b))

	r := newRecorder(t)
	var first string
	r.run(func(tb testing.TB) {
		h := pool.Lease(tb)
		first = b.Record(h).ID()
		tb.Errorf("this subtest fails")
	})
	h := pool.Lease(t)
	assert.NotEqual(t, first, b.Record(h).ID(), "the failed subtest's host was replaced")
	checkouts, _ := pool.Stats()
	assert.Equal(t, 2, checkouts)
	recs, err := b.Inventory(t.Context())
	require.NoError(t, err)
	require.Len(t, recs, 1, "the failed host was checked in")
	assert.Equal(t, b.Record(h).ID(), recs[0].ID())
}

func TestPoolReuseFailed(t *testing.T) {
	b := newTestBroker(t)
	pool := brokertest.NewPool(t, broker.Request{}, 1, brokertest.WithBroker(b), brokertest.WithReuseFailed())
	r := newRecorder(t)
	var first string
	r.run(func(tb testing.TB) {
		first = b.Record(pool.Lease(tb)).ID()
		tb.Errorf("fails")
	})
	assert.Equal(t, first, b.Record(pool.Lease(t)).ID())
}

func TestPoolLeaseWaitHonoursContext(t *testing.T) {
	b := newTestBroker(t)
	p, err := b.NewPool(t.Context(), broker.Request{}, 1, broker.PoolOptions{})
	require.NoError(t, err)
	defer p.Close(context.Background())
	h, err := p.Acquire(t.Context())
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err = p.Acquire(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// A waiter gets the host as soon as it is released.
	got := make(chan *hostkit.Host)
	go func() {
		h2, err := p.Acquire(t.Context())
		assert.NoError(t, err)
		got <- h2
	}()
	require.NoError(t, p.Release(t.Context(), h, true))
	assert.Same(t, h, <-got)
}

type resettable struct {
	*hostkit.Host
}

var resets, setups, teardowns atomic.Int32

func (r *resettable) Setup(ctx context.Context) error { setups.Add(1); return nil }
func (r *resettable) Reset(ctx context.Context) error {
	resets.Add(1)
	res, err := r.Execute(ctx, "test -e dirty")
	if err != nil {
		return err
	}
	if res.Status == 0 {
		return errors.New("host is dirty")
	}
	return nil
}
func (r *resettable) Teardown(ctx context.Context) error { teardowns.Add(1); return nil }

func TestPoolAsHooks(t *testing.T) {
	setups.Store(0)
	resets.Store(0)
	teardowns.Store(0)
	b := newTestBroker(t)
	t.Run("group", func(t *testing.T) {
		pool := brokertest.NewPoolAs[resettable](t, broker.Request{}, 1, brokertest.WithBroker(b))
		var firstID string
		t.Run("clean", func(t *testing.T) {
			h := pool.Lease(t)
			firstID = b.Record(h.Host).ID()
		})
		t.Run("dirties", func(t *testing.T) {
			h := pool.Lease(t)
			assert.Equal(t, firstID, b.Record(h.Host).ID(), "a clean host is reused")
			_, err := h.Execute(t.Context(), "touch dirty")
			require.NoError(t, err)
		})
		t.Run("replaced", func(t *testing.T) {
			h := pool.Lease(t)
			assert.NotEqual(t, firstID, b.Record(h.Host).ID(), "a host whose Reset failed is replaced")
		})
	})
	assert.Equal(t, int32(2), setups.Load())
	assert.Equal(t, int32(3), resets.Load())
	assert.Equal(t, int32(2), teardowns.Load())
}

// TestPoolKeepReuse: a pool with Keep leaves its hosts free in the
// inventory; two later pools (other owners) racing for them lease each free
// host exactly once.
func TestPoolKeepReuse(t *testing.T) {
	dir := t.TempDir()
	newB := func() *broker.Broker {
		b, err := broker.New(broker.WithDirectory(dir))
		require.NoError(t, err)
		t.Cleanup(func() { b.Close() })
		return b
	}
	ctx := t.Context()
	first := newB()
	p, err := first.NewPool(ctx, broker.Request{}, 4, broker.PoolOptions{Eager: true, ReuseFor: time.Minute})
	require.NoError(t, err)
	require.NoError(t, p.Close(ctx))
	recs, err := first.Inventory(ctx)
	require.NoError(t, err)
	require.Len(t, recs, 4)
	for _, r := range recs {
		assert.Equal(t, "free", r.Broker.State)
		require.NotNil(t, r.Broker.KeepUntil)
	}

	var mu sync.Mutex
	leased := map[string]int{}
	var wg sync.WaitGroup
	// Both pools hold their hosts at once before either gives them back:
	// a host released and marked free early could be leased again by the
	// other pool, rightly.
	var holding sync.WaitGroup
	holding.Add(2)
	allHeld := make(chan struct{})
	go func() { holding.Wait(); close(allHeld) }()
	for range 2 {
		wg.Go(func() {
			held := sync.OnceFunc(holding.Done)
			defer held()
			b := newB()
			p, err := b.NewPool(ctx, broker.Request{}, 4, broker.PoolOptions{ReuseFor: time.Minute})
			if !assert.NoError(t, err) {
				return
			}
			var hosts []*hostkit.Host
			for range 2 {
				h, err := p.Acquire(ctx)
				if !assert.NoError(t, err) {
					return
				}
				hosts = append(hosts, h)
				mu.Lock()
				leased[b.Record(h).ID()]++
				mu.Unlock()
			}
			_, reused := p.Stats()
			assert.Equal(t, 2, reused)
			held()
			select {
			case <-allHeld:
			case <-time.After(time.Minute):
				t.Error("the other pool never held its hosts")
			}
			for _, h := range hosts {
				assert.NoError(t, p.Release(ctx, h, true))
			}
			assert.NoError(t, p.Close(ctx))
		})
	}
	wg.Wait()
	assert.Len(t, leased, 4, "each free host leased")
	for id, n := range leased {
		assert.Equal(t, 1, n, "host %s leased %d times", id, n)
	}
	// Clean up what the last pools kept.
	recs, err = first.Inventory(ctx)
	require.NoError(t, err)
	require.NoError(t, first.CheckinRecords(ctx, recs...))
}

func TestKeepOnFailureLogsSSHCommand(t *testing.T) {
	b := newTestBroker(t)
	all, recs := keepFailedHost(t, b)
	assert.Equal(t, "kept", recs[0].Broker.State)
	assert.Contains(t, all, fmt.Sprintf("-p %d", recs[0].Broker.SSH.Port))
	assert.Contains(t, all, "ssh ")
	kh := b.KeptKnownHosts(recs[0].ID())
	assert.Contains(t, all, "UserKnownHostsFile="+kh)
	assert.FileExists(t, kh)
	require.NoError(t, b.CheckinRecords(t.Context(), recs...))
	assert.NoFileExists(t, kh, "check-in removes the kept host's known_hosts file")
}

// TestPoolKeepsFailedLease: with WithKeepOnFailure, or -brokertest.keep, a
// pool keeps the host of a failed lease for inspection (state kept, the
// log saying how to reach it) and leases a new one next; a lease that
// passed hands its host on as before.
func TestPoolKeepsFailedLease(t *testing.T) {
	for _, how := range []string{"option", "flag"} {
		t.Run(how, func(t *testing.T) {
			b := newTestBroker(t)
			opts := []brokertest.PoolOption{brokertest.WithBroker(b)}
			if how == "option" {
				opts = append(opts, brokertest.WithKeepOnFailure())
			} else {
				*brokertest.KeepFlag = true
				t.Cleanup(func() { *brokertest.KeepFlag = false })
			}
			pool := brokertest.NewPoolAs[resettable](t, broker.Request{}, 1, opts...)
			teardowns.Store(0)

			var passed string
			newRecorder(t).run(func(tb testing.TB) { passed = b.Record(pool.Lease(tb).Host).ID() })
			r := newRecorder(t)
			var logs []string
			r.logf = func(s string) { logs = append(logs, s) }
			var failed string
			r.run(func(tb testing.TB) {
				failed = b.Record(pool.Lease(tb).Host).ID()
				tb.Errorf("fails")
			})
			assert.Equal(t, passed, failed, "a passing lease hands its host on")
			assert.Equal(t, []string{"fails"}, r.errors, "keeping raised no error")
			assert.Equal(t, int32(1), teardowns.Load(), "Teardown ran before the host left the pool")

			next := b.Record(pool.Lease(t).Host).ID()
			assert.NotEqual(t, failed, next, "the kept host is not leased again")
			recs, err := b.Inventory(t.Context())
			require.NoError(t, err)
			states := map[string]string{}
			for _, rec := range recs {
				states[rec.ID()] = rec.Broker.State
			}
			assert.Equal(t, map[string]string{failed: "kept", next: "ready"}, states)
			assert.Contains(t, strings.Join(logs, "\n"), "for inspection: ssh -p ")
			checkouts, _ := pool.Stats()
			assert.Equal(t, 2, checkouts)
			t.Cleanup(func() {
				for _, rec := range recs {
					if rec.ID() == failed {
						assert.NoError(t, b.CheckinRecords(context.Background(), rec))
					}
				}
			})
		})
	}
}

// TestOptionKinds: every Option is a PoolOption; the pool-only options are
// not Options, so Host and Hosts do not compile with them.
func TestOptionKinds(t *testing.T) {
	var _ []brokertest.PoolOption = []brokertest.PoolOption{
		brokertest.WithBroker(nil), brokertest.WithCheckinTimeout(time.Second), brokertest.WithKeepOnFailure(),
		brokertest.WithEager(), brokertest.WithReuseFor(time.Minute), brokertest.WithReuseFailed(),
	}
	for name, o := range map[string]brokertest.PoolOption{
		"WithEager": brokertest.WithEager(), "WithReuseFor": brokertest.WithReuseFor(time.Minute), "WithReuseFailed": brokertest.WithReuseFailed(),
	} {
		_, ok := o.(brokertest.Option)
		assert.False(t, ok, "%s is an Option: Host would take it and ignore it", name)
	}
}
