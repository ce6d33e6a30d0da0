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
// Hosts are checked out with the process's default Broker (settings from
// BROKER_DIRECTORY) unless WithBroker names another.
package brokertest

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
)

// Option configures Host, Hosts, HostAs and NewPool.
type Option func(*options)

type options struct {
	broker         *broker.Broker
	checkinTimeout time.Duration
	keepOnFailure  bool
	pool           broker.PoolOptions
}

// WithBroker checks hosts out with b instead of the default Broker.
func WithBroker(b *broker.Broker) Option { return func(o *options) { o.broker = b } }

// WithCheckinTimeout bounds the check-in at the test's end (default 5 min).
func WithCheckinTimeout(d time.Duration) Option { return func(o *options) { o.checkinTimeout = d } }

func collect(opts []Option) options {
	o := options{checkinTimeout: 5 * time.Minute}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

var (
	defaultOnce   sync.Once
	defaultBroker *broker.Broker
	defaultErr    error
)

// Default returns the process's shared Broker, made on first use with
// broker.New() (settings from BROKER_DIRECTORY), as http.DefaultClient is
// shared.
func Default() (*broker.Broker, error) {
	defaultOnce.Do(func() { defaultBroker, defaultErr = broker.New() })
	return defaultBroker, defaultErr
}

func (o *options) brokerFor(t testing.TB) *broker.Broker {
	t.Helper()
	if o.broker != nil {
		return o.broker
	}
	b, err := Default()
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	return b
}

// Host checks out one host for t and checks it in when t and its subtests
// end. It fails t (t.Fatal) when the checkout fails.
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
	hosts, err := b.Checkout(t.Context(), req)
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = hostName(b, h)
	}
	t.Cleanup(func() {
		if t.Failed() && o.keepsOnFailure() {
			keep(t, b, hosts)
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
	for _, name := range names {
		t.Logf("brokertest: checked out %s", name)
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
// *hostkit.Host. When *T has Setup(ctx) error (Setupper) it runs after
// checkout, and a failing Setup fails t, the host still being checked in.
// When *T has Teardown(ctx) error (Teardowner) it runs before check-in.
func HostAs[T any](t testing.TB, req broker.Request, opts ...Option) *T {
	t.Helper()
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

// wrap makes a *T whose embedded *hostkit.Host is h.
func wrap[T any](h *hostkit.Host) (*T, error) {
	v := new(T)
	rv := reflect.ValueOf(v).Elem()
	if rv.Kind() != reflect.Struct {
		return nil, fmt.Errorf("host type %s is not a struct embedding *hostkit.Host", rv.Type())
	}
	for i := range rv.NumField() {
		f := rv.Type().Field(i)
		if f.Anonymous && f.Type == hostPtrType {
			rv.Field(i).Set(reflect.ValueOf(h))
			return v, nil
		}
	}
	return nil, fmt.Errorf("host type %s does not embed *hostkit.Host", rv.Type())
}

func setup(ctx context.Context, v any) error {
	if s, ok := v.(Setupper); ok {
		return s.Setup(ctx)
	}
	return nil
}
