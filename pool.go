package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
)

// PoolOptions configure a Pool.
type PoolOptions struct {
	// Eager checks out all hosts at once (concurrently) when the pool is
	// made, instead of one by one as leases need them.
	Eager bool
	// ReuseFor, when positive, leaves the pool's hosts for reuse at Close
	// instead of checking them in: they are marked free in the inventory
	// until now+ReuseFor, and a later pool with the same request (in this
	// process or another) leases them instead of checking out new hosts.
	ReuseFor time.Duration
	// ReuseFailed hands a host whose lease ended unhealthy to the next
	// holder instead of checking it in and replacing it.
	ReuseFailed bool
	// Prepare runs once on each new host (e.g. a custom type's Setup);
	// a host it fails on is checked in and the error returned.
	Prepare func(ctx context.Context, h *hostkit.Host) error
	// Reset runs when a lease ends healthy; a host it fails on is replaced.
	Reset func(ctx context.Context, h *hostkit.Host) error
	// Teardown runs before a host leaves the pool: checked in, left for
	// reuse (ReuseFor) or kept for inspection (Pool.Keep).
	Teardown func(ctx context.Context, h *hostkit.Host) error
}

// Pool shares up to size hosts among concurrent users: Acquire gives a host
// to one holder at a time and Release takes it back. It is safe for
// concurrent use.
type Pool struct {
	b    *Broker
	req  Request
	size int
	opts PoolOptions
	key  string

	mu        sync.Mutex
	free      []*hostkit.Host
	leased    map[*hostkit.Host]bool
	count     int           // hosts held or being checked out
	changed   chan struct{} // closed and replaced on every change
	closed    bool
	checkouts int
	reused    int
	stats     PoolStats // besides checkouts and reused
}

// PoolStats counts what a pool did, for its summary at Close.
type PoolStats struct {
	Checkouts   int // hosts checked out anew
	Reused      int // hosts leased from earlier runs (ReuseFor)
	Leases      int // leases given (Acquire calls that returned a host)
	ResetFailed int // hosts whose PoolOptions.Reset failed: replaced (with ReuseFailed, handed on as they are)
	Unhealthy   int // hosts replaced because their lease ended unhealthy
	Kept        int // hosts kept for inspection (Keep) and replaced
}

// String is the summary in one line, as the pool logs it at Close.
func (s PoolStats) String() string {
	return fmt.Sprintf("leases: %d; hosts checked out: %d, reused from earlier runs: %d; failed Reset: %d; replaced after an unhealthy lease: %d, kept for inspection: %d",
		s.Leases, s.Checkouts, s.Reused, s.ResetFailed, s.Unhealthy, s.Kept)
}

// NewPool makes a pool of up to size hosts of req (Count is ignored).
func (b *Broker) NewPool(ctx context.Context, req Request, size int, opts PoolOptions) (*Pool, error) {
	if size < 1 {
		return nil, fmt.Errorf("broker: pool size %d: want at least 1", size)
	}
	plan, err := b.resolve(req)
	if err != nil {
		return nil, err
	}
	req.Count = 1
	p := &Pool{b: b, req: req, size: size, opts: opts, key: requestKey(plan), leased: map[*hostkit.Host]bool{}, changed: make(chan struct{})}
	if opts.Eager {
		hosts, err := p.obtain(ctx, size)
		if err != nil {
			return nil, err
		}
		p.count = len(hosts)
		p.free = hosts
	}
	return p, nil
}

// requestKey identifies equal requests across processes, for reuse.
func requestKey(pl plan) string {
	data, _ := json.Marshal([]any{pl.provider, pl.instance, pl.args}) // map keys are sorted
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// Stats says how many hosts the pool checked out anew and how many it
// leased from earlier runs.
func (p *Pool) Stats() (checkouts, reused int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.checkouts, p.reused
}

// Summary counts what the pool did so far: leases, checkouts, and the hosts
// it replaced and why.
func (p *Pool) Summary() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Checkouts, s.Reused = p.checkouts, p.reused
	return s
}

// signal wakes waiters; p.mu must be held.
func (p *Pool) signal() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// ErrPoolClosed is returned by Acquire on a closed pool.
var ErrPoolClosed = errors.New("broker: pool closed")

// Acquire returns a host that no one else holds, checking one out when the
// pool has fewer than size, else waiting until one is released or ctx ends.
func (p *Pool) Acquire(ctx context.Context) (*hostkit.Host, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		if n := len(p.free); n > 0 {
			h := p.free[n-1]
			p.free = p.free[:n-1]
			p.leased[h] = true
			p.stats.Leases++
			p.mu.Unlock()
			return h, nil
		}
		if p.count < p.size {
			p.count++
			p.mu.Unlock()
			hosts, err := p.obtain(ctx, 1)
			p.mu.Lock()
			if err != nil {
				p.count--
				p.signal()
				p.mu.Unlock()
				return nil, err
			}
			p.leased[hosts[0]] = true
			p.stats.Leases++
			p.mu.Unlock()
			return hosts[0], nil
		}
		wait := p.changed
		p.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			err := fmt.Errorf("broker: waiting for a pool host: %w", context.Cause(ctx))
			p.b.logFailure("pool lease", &err)
			return nil, err
		}
	}
}

// obtain gets n hosts: free ones left by earlier runs first (with
// ReuseFor), then new checkouts; each is prepared.
func (p *Pool) obtain(ctx context.Context, n int) ([]*hostkit.Host, error) {
	var hosts []*hostkit.Host
	if p.opts.ReuseFor > 0 {
		reused, err := p.b.leaseReusable(ctx, p.key, n)
		if err != nil {
			return nil, err
		}
		hosts = append(hosts, reused...)
		p.mu.Lock()
		p.reused += len(reused)
		p.mu.Unlock()
	}
	if need := n - len(hosts); need > 0 {
		req := p.req
		req.Count = need
		fresh, err := p.b.Checkout(ctx, req)
		if err != nil {
			_ = p.b.Checkin(context.WithoutCancel(ctx), hosts...)
			return nil, err
		}
		if p.opts.ReuseFor > 0 {
			if err := p.b.setRequestKey(fresh, p.key); err != nil {
				_ = p.b.Checkin(context.WithoutCancel(ctx), append(hosts, fresh...)...)
				return nil, err
			}
		}
		p.mu.Lock()
		p.checkouts += len(fresh)
		p.mu.Unlock()
		hosts = append(hosts, fresh...)
	}
	if p.opts.Prepare != nil {
		for _, h := range hosts {
			if err := p.opts.Prepare(ctx, h); err != nil {
				_ = p.b.Checkin(context.WithoutCancel(ctx), hosts...)
				err = fmt.Errorf("broker: prepare pool host %s: %w", h.Hostname, err)
				p.b.logFailure("pool prepare", &err)
				return nil, err
			}
		}
	}
	return hosts, nil
}

// Release ends the lease of h. A healthy host is reset (PoolOptions.Reset)
// and handed to the next holder; an unhealthy one, or one whose reset fails,
// is checked in and replaced on demand, unless ReuseFailed.
func (p *Pool) Release(ctx context.Context, h *hostkit.Host, healthy bool) error {
	if err := p.unlease(h, "release of"); err != nil {
		return err
	}

	// A failed reset is the pool's business, not the holder's: the host is
	// replaced, the reason logged and counted (Summary).
	if healthy && p.opts.Reset != nil {
		if err := p.opts.Reset(ctx, h); err != nil {
			if p.opts.ReuseFailed {
				p.b.logger.Warn("pool: reset failed; handing the host on as it is (ReuseFailed)", "host", p.label(h), "err", err)
			} else {
				p.b.logger.Warn("pool: reset failed; checking the host in and replacing it", "host", p.label(h), "err", err)
			}
			p.mu.Lock()
			p.stats.ResetFailed++
			p.mu.Unlock()
			healthy = false
		}
	} else if !healthy && !p.opts.ReuseFailed {
		p.b.logger.Info("pool: lease ended unhealthy; checking the host in and replacing it", "host", p.label(h))
		p.mu.Lock()
		p.stats.Unhealthy++
		p.mu.Unlock()
	}
	if !healthy && !p.opts.ReuseFailed {
		err := p.retire(ctx, h)
		p.left()
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return p.retire(ctx, h)
	}
	p.free = append(p.free, h)
	p.signal()
	return nil
}

// Keep ends the lease of h and takes it out of the pool, kept for a person
// to inspect (Broker.Keep, with no end) instead of checked in or handed to
// the next holder; the pool checks out another when a lease needs one.
// Teardown runs first, as for any host that leaves the pool.
// "brokertest cleanup" checks kept hosts in.
func (p *Pool) Keep(ctx context.Context, h *hostkit.Host) error {
	if err := p.unlease(h, "keep"); err != nil {
		return err
	}
	var err error
	if p.opts.Teardown != nil {
		if terr := p.opts.Teardown(ctx, h); terr != nil {
			err = fmt.Errorf("teardown of %s: %w", h.Hostname, terr)
		}
	}
	err = errors.Join(err, p.b.Keep([]*hostkit.Host{h}, time.Time{}))
	p.mu.Lock()
	p.stats.Kept++
	p.mu.Unlock()
	p.left()
	return err
}

// unlease ends the lease of h; op names the call in the error for a host
// this pool did not lease.
func (p *Pool) unlease(h *hostkit.Host, op string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.leased[h] {
		return fmt.Errorf("broker: %s %s: not leased from this pool", op, h.Hostname)
	}
	delete(p.leased, h)
	return nil
}

// left accounts for a host that has left the pool (checked in or kept):
// a lease may then check out another.
func (p *Pool) left() {
	p.mu.Lock()
	p.count--
	p.signal()
	p.mu.Unlock()
}

func (p *Pool) retire(ctx context.Context, h *hostkit.Host) error {
	var err error
	if p.opts.Teardown != nil {
		err = p.opts.Teardown(ctx, h)
	}
	return errors.Join(err, p.b.Checkin(ctx, h))
}

// Close checks in (or, with ReuseFor, marks free for later runs) every
// idle host. Hosts still leased are checked in when released.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	free := p.free
	p.free = nil
	p.signal()
	p.mu.Unlock()
	if s := p.Summary(); s.ResetFailed > 0 {
		p.b.logger.Warn("pool: closed; some hosts failed their Reset", "summary", s.String())
	} else {
		p.b.logger.Info("pool: closed", "summary", s.String())
	}
	var errs []error
	if p.opts.Teardown != nil {
		for _, h := range free {
			if err := p.opts.Teardown(ctx, h); err != nil {
				errs = append(errs, fmt.Errorf("teardown of %s: %w", h.Hostname, err))
			}
		}
	}
	if p.opts.ReuseFor > 0 {
		errs = append(errs, p.b.markFree(free, time.Now().Add(p.opts.ReuseFor)))
	} else {
		errs = append(errs, p.b.Checkin(ctx, free...))
	}
	return errors.Join(errs...)
}

// leaseReusable atomically takes up to n free hosts with the request key from
// the inventory, making this Broker their owner; expired free hosts it sees
// are checked in.
func (b *Broker) leaseReusable(ctx context.Context, key string, n int) ([]*hostkit.Host, error) {
	var taken, expired []*inventory.Record
	now := time.Now()
	err := b.store.Update(ctx, func(recs []*inventory.Record) ([]*inventory.Record, error) {
		taken, expired = nil, nil
		for _, r := range recs {
			m := r.Broker
			if m == nil || m.State != inventory.StateFree {
				continue
			}
			if m.KeepUntil != nil && now.After(*m.KeepUntil) {
				m.State = inventory.StateRemoving
				expired = append(expired, r)
				continue
			}
			if m.RequestKey == key && len(taken) < n {
				m.State = inventory.StateLeased
				m.Owner = b.owner
				m.KeepUntil = nil
				taken = append(taken, r)
			}
		}
		return recs, nil
	})
	if err != nil {
		return nil, err
	}
	if len(expired) > 0 {
		if err := b.CheckinRecords(ctx, expired...); err != nil {
			b.logger.Warn("checking in reusable hosts whose time is up", "err", err)
		}
	}
	if len(taken) > 0 {
		b.watch()
	}
	var hosts []*hostkit.Host
	for _, r := range taken {
		h, err := b.Connect(ctx, r)
		if err == nil {
			_, err = h.Execute(ctx, "true") // still there?
		}
		if err != nil {
			b.logger.Warn("reusable host unusable; checking it in", "host", hostLabel(r), "err", err)
			_ = b.CheckinRecords(context.WithoutCancel(ctx), r)
			continue
		}
		hosts = append(hosts, h)
	}
	return hosts, nil
}

func (b *Broker) setRequestKey(hosts []*hostkit.Host, key string) error {
	return b.updateRecords(hosts, func(m *inventory.Meta) { m.RequestKey = key })
}

func (b *Broker) markFree(hosts []*hostkit.Host, until time.Time) error {
	for _, h := range hosts {
		_ = h.Close()
	}
	until = until.UTC().Truncate(time.Second)
	return b.updateRecords(hosts, func(m *inventory.Meta) {
		m.State = inventory.StateFree
		m.KeepUntil = &until
	})
}

// Keep marks hosts kept (not to be checked in by their owner's death or a
// pool) until the given time, or indefinitely when until is zero, for a
// person to inspect; "brokertest cleanup" removes them later.
func (b *Broker) Keep(hosts []*hostkit.Host, until time.Time) (err error) {
	defer b.logFailure("keep", &err, "hosts", len(hosts))
	for _, h := range hosts {
		_ = h.Close()
	}
	return b.updateRecords(hosts, func(m *inventory.Meta) {
		m.State = inventory.StateKept
		if !until.IsZero() {
			u := until.UTC().Truncate(time.Second)
			m.KeepUntil = &u
		}
	})
}

// updateRecords applies fn to the stored records of hosts (and to the
// Broker's own copies) under the inventory lock.
func (b *Broker) updateRecords(hosts []*hostkit.Host, fn func(*inventory.Meta)) error {
	if len(hosts) == 0 {
		return nil
	}
	return b.store.Update(context.Background(), func(recs []*inventory.Record) ([]*inventory.Record, error) {
		// Taken once the inventory's lock is held, not while waiting for it.
		b.recMu.Lock()
		defer b.recMu.Unlock()
		for _, h := range hosts {
			hr := b.recordLocked(h)
			if hr == nil || hr.Broker == nil {
				continue
			}
			fn(hr.Broker)
			for _, r := range recs {
				if inventory.Same(r, hr) && r.Broker != nil {
					fn(r.Broker)
				}
			}
		}
		return recs, nil
	})
}

// label names h in the log as its record does.
func (p *Pool) label(h *hostkit.Host) string {
	if rec := p.b.Record(h); rec != nil {
		return hostLabel(rec)
	}
	return h.Hostname
}
