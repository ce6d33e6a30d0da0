package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/hostbroker/broker/internal/leakcheck"
	"github.com/hostbroker/broker/inventory"
)

const pythonInventory = "../testdata/inventory/python_broker_inventory.yaml"

func TestLoadPythonBrokerInventory(t *testing.T) {
	recs, err := inventory.Open(pythonInventory).Load(context.Background())
	require.NoError(t, err)
	require.Len(t, recs, 3)
	r := recs[0]
	assert.Equal(t, "dhcp-1-2.example.com", r.Hostname)
	assert.Equal(t, "jake-rhel8-abc", r.Name)
	assert.Equal(t, "10.0.0.5", r.IP)
	assert.Equal(t, "AnsibleTower", r.Provider)
	assert.Equal(t, "testing", r.Instance)
	assert.Equal(t, "deploy-rhel-8.6", r.Args["template"])
	assert.Equal(t, "jake-inventory", r.Extra["tower_inventory"])
	assert.Nil(t, r.Broker)
	assert.Equal(t, "Container", recs[1].Provider)
}

// Every key of a foreign file survives a rewrite: the store loses nothing.
func TestRoundTripKeepsForeignKeys(t *testing.T) {
	data, err := os.ReadFile(pythonInventory)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	require.NoError(t, os.WriteFile(path, data, 0o600))

	s := inventory.Open(path)
	require.NoError(t, s.Put(context.Background(), &inventory.Record{Hostname: "new.example.com", Name: "new", Broker: &inventory.Meta{ID: inventory.NewID()}}))

	var before, after []map[string]any
	require.NoError(t, yaml.Unmarshal(data, &before))
	out, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(out, &after))
	require.Len(t, after, 4)
	assert.Equal(t, before, after[:3])
	assert.Equal(t, "new", after[3]["name"])
}

// Keys the Python broker writes empty or null come back as they were, and
// every record has _broker_args: the Python broker's inventory listing
// reads host["_broker_args"] and fails on a host without it.
func TestRoundTripKeepsEmptyAndNull(t *testing.T) {
	foreign := `- hostname: tower-1.example.com
  name: null
  _broker_provider: AnsibleTower
  _broker_args: {}
  _broker_facts: {}
  type: host
- hostname: tower-2.example.com
  _broker_provider: AnsibleTower
  _broker_args: {template: deploy-rhel}
`
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	require.NoError(t, os.WriteFile(path, []byte(foreign), 0o600))
	s := inventory.Open(path)
	names := []string{"8.6", "null", "yes", "two\nlines", "plain"}
	for _, n := range names {
		require.NoError(t, s.Put(context.Background(), &inventory.Record{Hostname: "127.0.0.1", Name: n, Provider: "Local", Broker: &inventory.Meta{ID: inventory.NewID()}}))
	}

	out, err := os.ReadFile(path)
	require.NoError(t, err)
	var before, after []map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(foreign), &before))
	require.NoError(t, yaml.Unmarshal(out, &after))
	require.Len(t, after, 2+len(names), "%s", out)
	assert.Equal(t, before, after[:2])
	assert.Contains(t, after[0], "name", "name: null is kept")
	for i, n := range names {
		rec := after[2+i]
		assert.Equal(t, n, rec["name"], "a name is written back as the same string")
		assert.Equal(t, map[string]any{}, rec["_broker_args"], "every record has _broker_args")
		assert.NotContains(t, rec, "_broker_facts", "no facts, no key")
	}

	// Loading and rewriting changes nothing more.
	require.NoError(t, s.Update(context.Background(), func(recs []*inventory.Record) ([]*inventory.Record, error) { return recs, nil }))
	again, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, string(out), string(again))
}

func TestPutRemoveMatching(t *testing.T) {
	s := inventory.Open(filepath.Join(t.TempDir(), "d", "inventory.yaml"))
	a := &inventory.Record{Hostname: "a", Broker: &inventory.Meta{ID: "aaa"}}
	b := &inventory.Record{Hostname: "b", Name: "b"}
	empty := &inventory.Record{Hostname: "", Name: "x"}
	require.NoError(t, s.Put(context.Background(), a, b, empty))

	// Replacing by id.
	a2 := &inventory.Record{Hostname: "a2", Broker: &inventory.Meta{ID: "aaa", State: inventory.StateReady}}
	require.NoError(t, s.Put(context.Background(), a2))
	recs, err := s.Load(context.Background())
	require.NoError(t, err)
	require.Len(t, recs, 3)
	assert.Equal(t, "a2", recs[0].Hostname)

	// A record with an empty hostname never matches another one with an
	// empty hostname (the Python broker's bug removed unrelated hosts).
	require.NoError(t, s.Remove(context.Background(), &inventory.Record{Hostname: "", Name: "x"}))
	recs, err = s.Load(context.Background())
	require.NoError(t, err)
	assert.Len(t, recs, 3)

	// Same name but another hostname is another host.
	require.NoError(t, s.Remove(context.Background(), &inventory.Record{Hostname: "c", Name: "b"}))
	recs, _ = s.Load(context.Background())
	assert.Len(t, recs, 3)

	require.NoError(t, s.Remove(context.Background(), &inventory.Record{Hostname: "b", Name: "b"}, a))
	recs, _ = s.Load(context.Background())
	require.Len(t, recs, 1)
	assert.Equal(t, "x", recs[0].Name)
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "broker")
	path := filepath.Join(dir, "inventory.yaml")
	require.NoError(t, inventory.Open(path).Put(context.Background(), &inventory.Record{Hostname: "h", Broker: &inventory.Meta{ID: "1"}}))
	s := inventory.Open(path)
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600, path + ".flock": 0o600, inventory.QueueDir(s): 0o700, inventory.PrevPath(s): 0o600} {
		st, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, want, st.Mode().Perm(), p)
	}
	// No temp file is left behind, nor the Python broker's lock file, nor
	// a ticket in the lock's queue.
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, ents, 4)
	assert.NoFileExists(t, path+".lock")
	tickets, err := os.ReadDir(inventory.QueueDir(s))
	require.NoError(t, err)
	assert.Empty(t, tickets)
}

// takePythonLock takes the lock as the Python broker's FileLock does: it
// creates <path>.lock exclusively (empty); removing it releases it.
func takePythonLock(path string) error {
	for {
		f, err := os.OpenFile(path+".lock", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			return f.Close()
		}
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}

func pythonHolds(t *testing.T, path string) (release func()) {
	t.Helper()
	require.NoError(t, takePythonLock(path))
	return func() { require.NoError(t, os.Remove(path+".lock")) }
}

// While the Python broker holds its lock, no update writes; once it lets
// go, the update goes through.
func TestPythonBrokerLockIsHonoured(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	s := inventory.Open(path)
	release := pythonHolds(t, path)

	ctx, cancel := contextWithTimeout(100 * time.Millisecond)
	defer cancel()
	err := s.Update(ctx, func(recs []*inventory.Record) ([]*inventory.Record, error) {
		return append(recs, &inventory.Record{Hostname: "early"}), nil
	})
	require.Error(t, err)
	assert.Contains(t, err.Error(), path+".lock")
	assert.Contains(t, err.Error(), "Python broker")
	assert.NoFileExists(t, path, "nothing was written while the Python broker held its lock")

	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		released <- time.Now()
		release()
	}()
	require.NoError(t, s.Put(context.Background(), &inventory.Record{Hostname: "late", Broker: &inventory.Meta{ID: "1"}}))
	assert.WithinDuration(t, time.Now(), <-released, time.Second)
	recs, err := s.Load(context.Background())
	require.NoError(t, err)
	require.Len(t, recs, 1)
	assert.NoFileExists(t, path+".lock", "the lock is released")

	// While held (only around the rename), our lock file carries the
	// mark naming this process from the first moment, and taking it
	// leaves no other file behind.
	var mark []byte
	inventory.SetBeforeRename(s, func() { mark, _ = os.ReadFile(path + ".lock") })
	require.NoError(t, s.Put(context.Background(), &inventory.Record{Hostname: "later", Broker: &inventory.Meta{ID: "2"}}))
	inventory.SetBeforeRename(s, nil)
	assert.Equal(t, inventory.OurMark(), string(mark))
	assert.Regexp(t, fmt.Sprintf(`^brokertest %d [0-9]+ \S+ \S+\n$`, os.Getpid()), string(mark))
	ents, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"inventory.yaml", "inventory.yaml.flock", ".inventory.yaml.queue", ".inventory.yaml.prev"}, names)
}

// A lock file left behind is taken over: one with our mark at once (its
// writer died), an empty one once it is older than the Python broker would
// ever hold it, unless a process flocks it (an earlier version of ours).
func TestLeftLockFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	s := inventory.Open(path)
	n := 0
	put := func(ctx context.Context) error {
		n++
		return s.Put(ctx, &inventory.Record{Hostname: fmt.Sprint("h", n), Broker: &inventory.Meta{ID: fmt.Sprint(n)}})
	}
	brief := func() (context.Context, context.CancelFunc) { return contextWithTimeout(100 * time.Millisecond) }

	require.NoError(t, os.WriteFile(path+".lock", []byte("brokertest\n"), 0o600))
	ctx, cancel := brief()
	defer cancel()
	require.NoError(t, put(ctx), "our own left lock is taken over")
	assert.NoFileExists(t, path+".lock")

	require.NoError(t, os.WriteFile(path+".lock", nil, 0o600))
	ctx, cancel = brief()
	defer cancel()
	require.Error(t, put(ctx), "a fresh empty lock is the Python broker's: wait")
	old := time.Now().Add(-time.Minute)
	require.NoError(t, os.Chtimes(path+".lock", old, old))

	f, err := os.Open(path + ".lock")
	require.NoError(t, err)
	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_EX))
	ctx, cancel = brief()
	defer cancel()
	require.Error(t, put(ctx), "an old lock that a process flocks is held")
	require.NoError(t, f.Close())

	ctx, cancel = brief()
	defer cancel()
	require.NoError(t, put(ctx), "an old empty lock nobody holds is left: taken over")
	assert.NoFileExists(t, path+".lock")
}

// The Python broker and this library write one inventory at the same time:
// the Python side as it does (under its lock: read, unlink, rewrite in
// place). Every record of both sides is there at the end, and no read of
// ours saw a torn file.
func TestConcurrentWithPythonBrokerLosesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	s := inventory.Open(path)
	const each = 40
	done := make(chan error, 1)
	go func() {
		for i := range each {
			if err := takePythonLock(path); err != nil {
				done <- err
				return
			}
			data, err := os.ReadFile(path)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				done <- err
				return
			}
			var recs []map[string]any
			if err := yaml.Unmarshal(data, &recs); err != nil {
				done <- err
				return
			}
			recs = append(recs, map[string]any{"hostname": fmt.Sprintf("py-%d", i), "_broker_args": map[string]any{}})
			out, _ := yaml.Marshal(recs)
			os.Remove(path)
			if err := os.WriteFile(path, out[:len(out)/2], 0o600); err != nil {
				done <- err
				return
			}
			time.Sleep(time.Millisecond) // a reader here sees a torn file
			if err := os.WriteFile(path, out, 0o600); err != nil {
				done <- err
				return
			}
			if err := os.Remove(path + ".lock"); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	require.NoError(t, s.Put(context.Background(), &inventory.Record{Hostname: "go-first", Broker: &inventory.Meta{ID: "first"}}))
	// A reader all along: the file always has a record from here on.
	stop := make(chan struct{})
	var reads, bad int
	var readErr error
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			recs, err := s.Load(context.Background())
			reads++
			if err != nil || len(recs) == 0 {
				bad++
				readErr = err
			}
		}
	}()
	for i := range each {
		require.NoError(t, s.Put(context.Background(), &inventory.Record{Hostname: fmt.Sprintf("go-%d", i), Broker: &inventory.Meta{ID: fmt.Sprint(i)}}))
	}
	require.NoError(t, <-done)
	close(stop)
	<-readerDone
	assert.Zero(t, bad, "of %d reads while the Python broker rewrote, %d saw no file or a torn one (last error: %v)", reads, bad, readErr)
	recs, err := s.Load(context.Background())
	require.NoError(t, err)
	got := map[string]bool{}
	for _, r := range recs {
		got[r.Hostname] = true
	}
	for i := range each {
		assert.True(t, got[fmt.Sprintf("go-%d", i)], "go-%d lost", i)
		assert.True(t, got[fmt.Sprintf("py-%d", i)], "py-%d lost", i)
	}
	assert.Len(t, recs, 2*each+1)
}

func TestCorruptFileIsNeverOverwritten(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	bad := "- hostname: a\n  name: b\n- hostname: [unclosed\n"
	require.NoError(t, os.WriteFile(path, []byte(bad), 0o600))
	s := inventory.Open(path)
	_, err := s.Load(context.Background())
	require.Error(t, err)
	assert.True(t, errors.Is(err, inventory.ErrCorrupt))
	assert.Contains(t, err.Error(), path)
	assert.Regexp(t, `line [23]:`, err.Error()) // yaml.v3 reports the flow start or its line

	err = s.Put(context.Background(), &inventory.Record{Hostname: "c"})
	require.Error(t, err)
	got, _ := os.ReadFile(path)
	assert.Equal(t, bad, string(got))
}

func TestEmptyInventories(t *testing.T) {
	for _, content := range []string{"", "\n", "[]\n", "null\n", "# nothing\n"} {
		recs, err := inventory.Parse("x.yaml", []byte(content))
		assert.NoError(t, err, "%q", content)
		assert.Empty(t, recs)
	}
	_, err := inventory.Parse("x.yaml", []byte("- hostname: a\n-\n"))
	assert.ErrorContains(t, err, "entry 1 is empty")
	_, err = inventory.Parse("x.yaml", []byte("hostname: a\n"))
	assert.ErrorIs(t, err, inventory.ErrCorrupt)
}

// Writers in many goroutines (each Update takes the file lock with its own
// descriptor, as separate processes do) lose no write.
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	s := inventory.Open(filepath.Join(t.TempDir(), "inventory.yaml"))
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r := &inventory.Record{Hostname: fmt.Sprintf("w%d-%d", w, i), Broker: &inventory.Meta{ID: fmt.Sprintf("%d-%d", w, i)}}
				if err := s.Put(context.Background(), r); err != nil {
					t.Error(err)
					return
				}
				if i%2 == 1 {
					if err := s.Remove(context.Background(), r); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	recs, err := s.Load(context.Background())
	require.NoError(t, err)
	assert.Len(t, recs, writers*((each+1)/2))
}

func TestUpdateErrorWritesNothing(t *testing.T) {
	s := inventory.Open(filepath.Join(t.TempDir(), "inventory.yaml"))
	require.NoError(t, s.Put(context.Background(), &inventory.Record{Hostname: "a"}))
	boom := errors.New("boom")
	err := s.Update(context.Background(), func(recs []*inventory.Record) ([]*inventory.Record, error) { return nil, boom })
	assert.ErrorIs(t, err, boom)
	recs, _ := s.Load(context.Background())
	assert.Len(t, recs, 1)
}

func TestUpdateLockDeadline(t *testing.T) {
	s := inventory.Open(filepath.Join(t.TempDir(), "inventory.yaml"))
	held := make(chan struct{})
	release := make(chan struct{})
	holderDone := make(chan struct{})
	go func() {
		defer close(holderDone)
		_ = s.Update(context.Background(), func(recs []*inventory.Record) ([]*inventory.Record, error) {
			close(held)
			<-release
			return recs, nil
		})
	}()
	<-held
	ctx, cancel := contextWithTimeout(50 * time.Millisecond)
	defer cancel()
	err := s.Update(ctx, func(recs []*inventory.Record) ([]*inventory.Record, error) { return recs, nil })
	close(release)
	// The holder still writes the inventory: let it finish before
	// t.TempDir's removal.
	<-holderDone
	require.Error(t, err)
	assert.Contains(t, err.Error(), "wait for lock")
}

func TestOwner(t *testing.T) {
	me := inventory.CurrentOwner("run1")
	assert.False(t, me.Dead(), "this process is alive")
	assert.NotZero(t, me.Started)
	assert.True(t, me.Local())

	gone := me
	gone.Started++ // the pid reused by another process
	assert.True(t, gone.Dead())

	otherBoot := me
	otherBoot.BootID = "another-boot"
	assert.True(t, otherBoot.Dead())

	elsewhere := me
	elsewhere.Machine = "some-other-machine"
	elsewhere.Started++
	assert.False(t, elsewhere.Dead(), "hosts of other machines are never judged stale")
	assert.False(t, inventory.Owner{}.Dead())

	assert.Len(t, inventory.NewID(), 12)
	assert.Len(t, inventory.NewRunID(), 16)
	assert.NotEqual(t, inventory.NewID(), inventory.NewID())
}

func TestMapHasEveryKey(t *testing.T) {
	recs, err := inventory.Open(pythonInventory).Load(context.Background())
	require.NoError(t, err)
	m := recs[0].Map()
	for _, k := range []string{"hostname", "name", "ip", "_broker_provider", "_broker_provider_instance", "_broker_args", "_broker_facts", "tower_inventory", "reported_devices", "type"} {
		assert.Contains(t, m, k)
	}
	now := time.Now().UTC().Truncate(time.Second)
	r := &inventory.Record{Hostname: "h", Broker: &inventory.Meta{ID: "x", CheckedOut: now, SSH: &inventory.SSH{Port: 2222}}}
	bm := r.Map()["_brokertest"].(map[string]any)
	assert.Equal(t, "x", bm["id"])
	assert.Equal(t, 2222, bm["ssh"].(map[string]any)["port"])
}
