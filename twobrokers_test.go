package broker_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/inventory"
)

// TestTwoBrokersOneDirectory: two Brokers of one process share a broker
// directory (reaper, signal check-in and all). Four goroutines check hosts
// out through one and in through the other, or the same, interleaved: no
// record is lost or left, every host checked in is gone (its SSH server
// closed, whichever Broker started it), each Broker's Record knows only
// its own hosts; once both are closed, a new Broker finds nothing to reap.
func TestTwoBrokersOneDirectory(t *testing.T) {
	dir := t.TempDir()
	open := func() *broker.Broker {
		b, err := broker.New(broker.WithDirectory(dir), broker.WithSettingsEnv([]string{}))
		require.NoError(t, err)
		return b
	}
	bs := []*broker.Broker{open(), open()}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	const workers, rounds = 4, 8
	var mu sync.Mutex
	held := map[string]bool{} // record ids checked out and not yet in
	var addrs []string        // SSH addresses of hosts checked in
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				out, in := bs[(w+r)%2], bs[(w+r/2)%2]
				hosts, err := out.Checkout(ctx, broker.Request{Count: 2, Test: fmt.Sprintf("w%d-r%d", w, r)})
				if !assert.NoError(t, err) {
					return
				}
				var recs []*inventory.Record
				for _, h := range hosts {
					res, err := h.Execute(ctx, "echo hi")
					assert.NoError(t, err)
					assert.Equal(t, "hi\n", res.Stdout)
					rec := out.Record(h)
					require.NotNil(t, rec, "the Broker that checked a host out knows its record")
					if in != out {
						assert.Nil(t, in.Record(h), "the other Broker does not claim it")
					}
					recs = append(recs, rec)
				}
				mu.Lock()
				for _, rec := range recs {
					held[rec.ID()] = true
				}
				mu.Unlock()
				inv, err := in.Inventory(ctx)
				assert.NoError(t, err)
				ids := map[string]bool{}
				for _, r := range inv {
					ids[r.ID()] = true
				}
				for _, rec := range recs {
					assert.True(t, ids[rec.ID()], "record %s of a held host not in the inventory", rec.ID())
				}
				if in == out {
					assert.NoError(t, in.Checkin(ctx, hosts...))
				} else {
					assert.NoError(t, in.CheckinRecords(ctx, recs...))
				}
				mu.Lock()
				for _, rec := range recs {
					delete(held, rec.ID())
					addrs = append(addrs, net.JoinHostPort(rec.Broker.SSH.Host, fmt.Sprint(rec.Broker.SSH.Port)))
				}
				mu.Unlock()
				for _, h := range hosts {
					h.Close()
				}
			}
		})
	}
	wg.Wait()
	inv, err := bs[0].Inventory(ctx)
	require.NoError(t, err)
	assert.Empty(t, inv, "records left")
	assert.Empty(t, held)
	assert.Zero(t, localDirs(dir)(), "Local host directories left")
	serving := 0
	for _, a := range addrs {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			serving++
		}
	}
	assert.Zero(t, serving, "of %d hosts checked in, %d still serve SSH", len(addrs), serving)

	require.NoError(t, bs[0].Close())
	// The other lives on: it checks out and in after its twin's Close.
	hosts, err := bs[1].Checkout(ctx, broker.Request{})
	require.NoError(t, err)
	_, err = hosts[0].Execute(ctx, "true")
	require.NoError(t, err)
	require.NoError(t, bs[1].Checkin(ctx, hosts...))
	require.NoError(t, bs[1].Close())

	// A new Broker's sweep finds no orphan of this process.
	b := open2(t, dir)
	inv, err = b.Inventory(ctx)
	require.NoError(t, err)
	assert.Empty(t, inv)
}

func open2(t *testing.T, dir string) *broker.Broker {
	b, err := broker.New(broker.WithDirectory(dir), broker.WithSettingsEnv([]string{}))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}
