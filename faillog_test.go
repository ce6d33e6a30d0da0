package broker_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/inventory"
)

// Every failed action is written to broker.log with its error (level
// ERROR), as the Python broker does: checkout (a provider's refusal and an
// unknown provider), checkin, extend, duplicate, execute, describe, sync,
// and a pool lease that waited in vain.
func TestFailedActionsInLog(t *testing.T) {
	b := newBroker(t, "")
	ctx := t.Context()
	theSpy.reset(1)
	_, err := b.Checkout(ctx, broker.Request{Provider: "Spy", Test: "TestLogged"})
	require.Error(t, err)
	_, err = b.Checkout(ctx, broker.Request{Provider: "NoSuchProvider"})
	require.Error(t, err)
	foreign := &inventory.Record{Hostname: "vm.example.com", Name: "vm1", Provider: "NoSuchProvider"}
	require.Error(t, b.CheckinRecords(ctx, foreign))
	local := &inventory.Record{Hostname: "127.0.0.1", Name: "local-x", Provider: "Local"}
	require.Error(t, b.Extend(ctx, nil, local))
	_, err = b.Duplicate(ctx, &inventory.Record{Name: "orphan"}, 1)
	require.Error(t, err)
	_, err = b.Execute(ctx, broker.Request{})
	require.Error(t, err)
	_, err = b.Describe(ctx, "Spy", "", "")
	require.Error(t, err)
	_, err = b.Sync(ctx, "NoSuchProvider")
	require.Error(t, err)
	pool, err := b.NewPool(ctx, broker.Request{}, 1, broker.PoolOptions{})
	require.NoError(t, err)
	h, err := pool.Acquire(ctx)
	require.NoError(t, err)
	done, cancel := context.WithCancel(ctx)
	cancel()
	_, err = pool.Acquire(done)
	require.Error(t, err)
	require.NoError(t, pool.Release(ctx, h, true))
	require.NoError(t, pool.Close(ctx))

	data, err := os.ReadFile(filepath.Join(b.Dir(), "logs", "broker.log"))
	require.NoError(t, err)
	log := string(data)
	for _, want := range []string{
		`level=ERROR msg="checkout failed" pid=\d+ test=TestLogged count=1 err="broker: checkout from Spy: host 1 of 1: spy: refused checkout call 1"`,
		`level=ERROR msg="checkout failed" pid=\d+ test="" count=1 err=".*NoSuchProvider.*"`,
		`level=ERROR msg="checkin failed" pid=\d+ host="vm1 vm.example.com" err="checkin vm1 vm.example.com: .*NoSuchProvider.*"`,
		`level=ERROR msg="extend failed" pid=\d+ hosts=1 err="extend local-x 127.0.0.1: provider Local cannot extend leases"`,
		`level=ERROR msg="duplicate failed" pid=\d+ err="broker: duplicate orphan: record has no _broker_provider"`,
		`level=ERROR msg="execute failed" pid=\d+ err="broker: provider Local cannot execute actions"`,
		`level=ERROR msg="describe failed" pid=\d+ provider=Spy err="broker: provider Spy has no description"`,
		`level=ERROR msg="sync failed" pid=\d+ spec=NoSuchProvider err=".*NoSuchProvider.*"`,
		`level=ERROR msg="pool lease failed" pid=\d+ err="broker: waiting for a pool host: context canceled"`,
	} {
		assert.Regexp(t, regexp.MustCompile(want), log)
	}
}
