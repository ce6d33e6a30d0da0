package inventory_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/hostbroker/broker/internal/leakcheck"
	"github.com/hostbroker/broker/inventory"
)

const pythonInventory = "../testdata/inventory/python_broker_inventory.yaml"

func TestLoadPythonBrokerInventory(t *testing.T) {
	recs, err := inventory.Open(pythonInventory).Load()
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
	require.NoError(t, s.Put(&inventory.Record{Hostname: "new.example.com", Name: "new", Broker: &inventory.Meta{ID: inventory.NewID()}}))

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
		require.NoError(t, s.Put(&inventory.Record{Hostname: "127.0.0.1", Name: n, Provider: "Local", Broker: &inventory.Meta{ID: inventory.NewID()}}))
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
	require.NoError(t, s.Update(func(recs []*inventory.Record) ([]*inventory.Record, error) { return recs, nil }))
	again, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, string(out), string(again))
}

func TestPutRemoveMatching(t *testing.T) {
	s := inventory.Open(filepath.Join(t.TempDir(), "d", "inventory.yaml"))
	a := &inventory.Record{Hostname: "a", Broker: &inventory.Meta{ID: "aaa"}}
	b := &inventory.Record{Hostname: "b", Name: "b"}
	empty := &inventory.Record{Hostname: "", Name: "x"}
	require.NoError(t, s.Put(a, b, empty))

	// Replacing by id.
	a2 := &inventory.Record{Hostname: "a2", Broker: &inventory.Meta{ID: "aaa", State: inventory.StateReady}}
	require.NoError(t, s.Put(a2))
	recs, err := s.Load()
	require.NoError(t, err)
	require.Len(t, recs, 3)
	assert.Equal(t, "a2", recs[0].Hostname)

	// A record with an empty hostname never matches another one with an
	// empty hostname (the Python broker's bug removed unrelated hosts).
	require.NoError(t, s.Remove(&inventory.Record{Hostname: "", Name: "x"}))
	recs, err = s.Load()
	require.NoError(t, err)
	assert.Len(t, recs, 3)

	// Same name but another hostname is another host.
	require.NoError(t, s.Remove(&inventory.Record{Hostname: "c", Name: "b"}))
	recs, _ = s.Load()
	assert.Len(t, recs, 3)

	require.NoError(t, s.Remove(&inventory.Record{Hostname: "b", Name: "b"}, a))
	recs, _ = s.Load()
	require.Len(t, recs, 1)
	assert.Equal(t, "x", recs[0].Name)
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "broker")
	path := filepath.Join(dir, "inventory.yaml")
	require.NoError(t, inventory.Open(path).Put(&inventory.Record{Hostname: "h", Broker: &inventory.Meta{ID: "1"}}))
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600, path + ".lock": 0o600} {
		st, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, want, st.Mode().Perm(), p)
	}
	// No temp file is left behind.
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, ents, 2)
}

func TestCorruptFileIsNeverOverwritten(t *testing.T) {
	leakcheck.Check(t)
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	bad := "- hostname: a\n  name: b\n- hostname: [unclosed\n"
	require.NoError(t, os.WriteFile(path, []byte(bad), 0o600))
	s := inventory.Open(path)
	_, err := s.Load()
	require.Error(t, err)
	assert.True(t, errors.Is(err, inventory.ErrCorrupt))
	assert.Contains(t, err.Error(), path)
	assert.Regexp(t, `line [23]:`, err.Error()) // yaml.v3 reports the flow start or its line

	err = s.Put(&inventory.Record{Hostname: "c"})
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
				if err := s.Put(r); err != nil {
					t.Error(err)
					return
				}
				if i%2 == 1 {
					if err := s.Remove(r); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	recs, err := s.Load()
	require.NoError(t, err)
	assert.Len(t, recs, writers*((each+1)/2))
}

func TestUpdateErrorWritesNothing(t *testing.T) {
	s := inventory.Open(filepath.Join(t.TempDir(), "inventory.yaml"))
	require.NoError(t, s.Put(&inventory.Record{Hostname: "a"}))
	boom := errors.New("boom")
	err := s.Update(func(recs []*inventory.Record) ([]*inventory.Record, error) { return nil, boom })
	assert.ErrorIs(t, err, boom)
	recs, _ := s.Load()
	assert.Len(t, recs, 1)
}

func TestUpdateContextLockDeadline(t *testing.T) {
	s := inventory.Open(filepath.Join(t.TempDir(), "inventory.yaml"))
	held := make(chan struct{})
	release := make(chan struct{})
	holderDone := make(chan struct{})
	go func() {
		defer close(holderDone)
		_ = s.Update(func(recs []*inventory.Record) ([]*inventory.Record, error) {
			close(held)
			<-release
			return recs, nil
		})
	}()
	<-held
	ctx, cancel := contextWithTimeout(50 * time.Millisecond)
	defer cancel()
	err := s.UpdateContext(ctx, func(recs []*inventory.Record) ([]*inventory.Record, error) { return recs, nil })
	close(release)
	// The holder still writes the inventory: let it finish before
	// t.TempDir's removal.
	<-holderDone
	require.Error(t, err)
	assert.Contains(t, err.Error(), "wait for lock")
}

func TestFilter(t *testing.T) {
	recs, err := inventory.Open(pythonInventory).Load()
	require.NoError(t, err)
	names := func(rs []*inventory.Record) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Name)
		}
		return strings.Join(out, " ")
	}
	cases := []struct{ filter, want string }{
		{"", "jake-rhel8-abc jake_4f3e2d1c sat-6.14"},
		{"hostname<example", "jake-rhel8-abc sat-6.14"},
		{"name<jake", "jake-rhel8-abc jake_4f3e2d1c"},
		{"name!<jake", "sat-6.14"},
		{"_broker_args.template{deploy-sat", "sat-6.14"},
		{"_broker_args.template!{deploy-sat", "jake-rhel8-abc jake_4f3e2d1c"},
		{"name}abc", "jake-rhel8-abc"},
		{"name!}abc", "jake_4f3e2d1c sat-6.14"},
		{"name<jake,_broker_args.provider!=RHEV", "jake_4f3e2d1c"},
		// A missing property: positive false, negated true.
		{"release=6.14", "sat-6.14"},
		{"release!=6.14", "jake-rhel8-abc jake_4f3e2d1c"},
		// Values compare as text: the float 8.6 and the string '8.6'.
		{"os_distribution_version=8.6", "jake-rhel8-abc"},
		{"_broker_facts.os_distribution_version=8.6", "jake-rhel8-abc"},
		// Members of lists, keys of maps, nested.
		{"_broker_args.tags<capsule", "sat-6.14"},
		{"_broker_args.tags<caps", ""},
		{"reported_devices.nics<eth1", "jake-rhel8-abc"},
		{"reported_devices<nics", "jake-rhel8-abc"},
		{"_broker_provider=Container", "jake_4f3e2d1c"},
		{"_broker_provider_instance{prod", "sat-6.14"},
		// A path through a scalar is missing.
		{"name.x=1", ""},
		{"name.x!=1", "jake-rhel8-abc jake_4f3e2d1c sat-6.14"},
	}
	for _, c := range cases {
		f, err := inventory.ParseFilter(c.filter)
		require.NoError(t, err, c.filter)
		assert.Equal(t, c.want, names(f.Apply(recs)), "filter %q", c.filter)
	}
}

func TestFilterOnBrokerBlock(t *testing.T) {
	recs := []*inventory.Record{
		{Hostname: "a", Broker: &inventory.Meta{ID: "1", State: inventory.StateReady, Test: "TestA/sub", Owner: inventory.Owner{PID: 42}}},
		{Hostname: "b", Broker: &inventory.Meta{ID: "2", State: inventory.StateKept}},
	}
	for filter, want := range map[string]int{
		"_brokertest.state=kept":   1,
		"_brokertest.test{TestA":   1,
		"_brokertest.owner.pid=42": 1,
		"_brokertest.id!=1":        1,
	} {
		f, err := inventory.ParseFilter(filter)
		require.NoError(t, err)
		assert.Len(t, f.Apply(recs), want, filter)
	}
}

func TestFilterErrors(t *testing.T) {
	for filter, mention := range map[string]string{
		"hostname":          `"hostname" has no condition`,
		"name<a,hostname":   `"hostname" has no condition`,
		"=x":                `"=x" has an empty property`,
		"!=x":               `"!=x" has an empty property`,
		"_broker_args..a=b": `empty part`,
	} {
		_, err := inventory.ParseFilter(filter)
		require.Error(t, err, filter)
		assert.Contains(t, err.Error(), mention, filter)
	}
}

func TestSelect(t *testing.T) {
	recs, err := inventory.Open(pythonInventory).Load()
	require.NoError(t, err)
	none, _ := inventory.ParseFilter("")
	sat, _ := inventory.ParseFilter("name{sat")

	got, err := inventory.Select(recs, nil, true, none)
	require.NoError(t, err)
	assert.Len(t, got, 3)

	// The filter never widens: --all with a filter is the filtered list.
	got, err = inventory.Select(recs, nil, true, sat)
	require.NoError(t, err)
	require.Len(t, got, 1)

	// Local ids index the filtered list.
	got, err = inventory.Select(recs, []string{"0"}, false, sat)
	require.NoError(t, err)
	assert.Equal(t, "sat-6.14", got[0].Name)

	got, err = inventory.Select(recs, []string{"dhcp-1-2.example.com", "jake_4f3e2d1c", "1"}, false, none)
	require.NoError(t, err)
	assert.Len(t, got, 2, "duplicates are selected once")

	_, err = inventory.Select(recs, []string{"3"}, false, none)
	assert.ErrorContains(t, err, "local id 3 out of range")
	_, err = inventory.Select(recs, []string{"nope"}, false, sat)
	assert.ErrorContains(t, err, `no host "nope"`)
	assert.ErrorContains(t, err, `name{sat`)
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
	recs, err := inventory.Open(pythonInventory).Load()
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

// TestMarshalSameAsOneDocument: Marshal encodes record by record for speed;
// the bytes must be those of one YAML sequence, as Python broker writes.
func TestMarshalSameAsOneDocument(t *testing.T) {
	recs, err := inventory.Open(pythonInventory).Load()
	require.NoError(t, err)
	require.NotEmpty(t, recs)
	recs = append(recs, &inventory.Record{Hostname: "multi.example.com", Args: map[string]any{"text": "a\nb: c\n", "list": []any{1, "two"}}, Broker: &inventory.Meta{ID: "x", State: inventory.StateReady}})
	var one bytes.Buffer
	enc := yaml.NewEncoder(&one)
	enc.SetIndent(2)
	require.NoError(t, enc.Encode(recs))
	require.NoError(t, enc.Close())
	got, err := inventory.Marshal(recs)
	require.NoError(t, err)
	assert.Equal(t, one.String(), string(got))
}
