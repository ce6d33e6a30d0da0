package reaper

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
