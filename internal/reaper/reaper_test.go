package reaper

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/internal/proclive"
	"github.com/hostbroker/broker/inventory"
)

func TestOwnerFileNameRoundTrip(t *testing.T) {
	o := inventory.Owner{PID: 4242, Started: 987654, BootID: "0a1b-2c3d"}
	path := ownerLockPath("/d", o)
	assert.Equal(t, "/d/.owners/4242-987654-0a1b-2c3d.lock", path)
	got, ok := parseOwnerFile(filepath.Base(path))
	require.True(t, ok)
	assert.Equal(t, o, got)

	// A boot id from the inventory cannot make a path of the file name.
	assert.Equal(t, "/d/.owners/1-2-_______.lock", ownerLockPath("/d", inventory.Owner{PID: 1, Started: 2, BootID: "../../x"}))
	assert.Equal(t, "/d/.owners/1-2-none.lock", ownerLockPath("/d", inventory.Owner{PID: 1, Started: 2}))
	for _, bad := range []string{"x.lock", "1-2.lock", "a-2-b.lock", "0-2-b.lock", "1-2-b"} {
		_, ok := parseOwnerFile(bad)
		assert.False(t, ok, bad)
	}
}

func TestOwnedBy(t *testing.T) {
	me := inventory.Owner{PID: 10, Started: 20, BootID: "b", Machine: "m", Run: "r1"}
	other := me
	other.PID = 11
	sameProcessOtherRun := me
	sameProcessOtherRun.Run = "r2"
	rec := func(name, state string, o inventory.Owner) *inventory.Record {
		return &inventory.Record{Name: name, Broker: &inventory.Meta{ID: name, State: state, Owner: o}}
	}
	recs := []*inventory.Record{
		rec("ready", inventory.StateReady, me),
		rec("creating", inventory.StateCreating, me),
		rec("leased", inventory.StateLeased, me),
		rec("run2", inventory.StateReady, sameProcessOtherRun),
		rec("free", inventory.StateFree, me),
		rec("kept", inventory.StateKept, me),
		rec("other", inventory.StateReady, other),
		{Name: "python"}, // a Python broker's record: no _brokertest block
	}
	var names []string
	for _, r := range OwnedBy(recs, me) {
		names = append(names, r.Name)
	}
	assert.Equal(t, []string{"ready", "creating", "leased", "run2"}, names)
	assert.Equal(t, []string{"creating"}, func() (n []string) {
		for _, r := range creatingOnly(OwnedBy(recs, me)) {
			n = append(n, r.Name)
		}
		return n
	}())
}

// TestSignalHandlerComesAndGoes: the handler is installed with the first
// registration and removed with the last; removing twice is harmless.
func TestSignalHandlerComesAndGoes(t *testing.T) {
	require.False(t, SignalHandled(), "no handler before any registration")
	tg := Target{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}
	tg.Store = inventory.Open(filepath.Join(tg.Dir, "inventory.yaml"))
	owner := inventory.CurrentOwner("run")
	first := CheckinOnSignal(tg, owner)
	second := CheckinOnSignal(tg, owner)
	assert.True(t, SignalHandled())
	first()
	first()
	assert.True(t, SignalHandled(), "one registration is left")
	second()
	assert.False(t, SignalHandled(), "the last registration removed the handler")
	third := CheckinOnSignal(tg, owner)
	assert.True(t, SignalHandled(), "installed again")
	third()
	assert.False(t, SignalHandled())
}

// TestSweepRetriesHeldLock: a dead owner's lock is held by another process
// when the sweep first looks (a killed watcher lets go of it only once its
// files are closed); the sweep looks again and checks the hosts in once it
// is free, without waiting for the next Broker.
func TestSweepRetriesHeldLock(t *testing.T) {
	dead := exec.Command("true")
	require.NoError(t, dead.Start())
	started, err := proclive.Start(dead.Process.Pid)
	require.NoError(t, err)
	require.NoError(t, dead.Wait())
	self := inventory.CurrentOwner("run")
	owner := inventory.Owner{Run: "run", PID: dead.Process.Pid, Started: started, BootID: self.BootID, Machine: self.Machine}
	require.True(t, owner.Dead())

	tg := Target{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}
	tg.Store = inventory.Open(filepath.Join(tg.Dir, "inventory.yaml"))
	var recs []*inventory.Record
	for i := range 3 {
		recs = append(recs, &inventory.Record{Name: fmt.Sprint("h", i), Broker: &inventory.Meta{ID: fmt.Sprint("id", i), State: inventory.StateReady, Owner: owner}})
	}
	ctx := context.Background()
	require.NoError(t, tg.Store.Update(ctx, func([]*inventory.Record) ([]*inventory.Record, error) { return recs, nil }))
	var checkedIn atomic.Int32
	tg.Checkin = func(ctx context.Context, limit int, recs ...*inventory.Record) error {
		checkedIn.Add(int32(len(recs)))
		return tg.Store.Update(ctx, func([]*inventory.Record) ([]*inventory.Record, error) { return nil, nil })
	}

	// The "dying watcher": another open file description holding the flock
	// (flock locks belong to it, so this process's sweep cannot take it).
	lockPath := ownerLockPath(tg.Dir, owner)
	require.NoError(t, createOwnerFile(lockPath))
	holder, err := os.OpenFile(lockPath, os.O_RDWR, 0)
	require.NoError(t, err)
	require.NoError(t, flockNB(holder))

	done := make(chan struct{})
	go func() {
		defer close(done)
		Sweep(ctx, tg)
	}()
	time.Sleep(2 * sweepRetry) // the sweep has found the lock held at least once
	assert.Zero(t, checkedIn.Load(), "nothing checked in while the lock is held")
	require.NoError(t, holder.Close()) // the watcher is gone
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the sweep did not end after the lock was let go")
	}
	assert.EqualValues(t, 3, checkedIn.Load(), "the hosts were checked in once the lock was free")
	left, err := tg.Store.Load(ctx)
	require.NoError(t, err)
	assert.Empty(t, left)
}
