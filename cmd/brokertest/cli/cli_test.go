package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/internal/proclive"
	"github.com/hostbroker/broker/inventory"
)

// cliEnv gives each test its own broker directory and a broker on it.
func cliEnv(t *testing.T) (*broker.Broker, *inventory.Store) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("BROKER_DIRECTORY", dir)
	t.Setenv("BROKER_NO_REAPER", "1")
	b, err := broker.New(broker.WithReaper(false))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b, b.Store()
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// deadOwner is an owner on this machine whose process has exited.
func deadOwner(t *testing.T) inventory.Owner {
	t.Helper()
	cmd := exec.Command("/bin/true")
	require.NoError(t, cmd.Start())
	o := inventory.CurrentOwner("deadrun")
	o.PID = cmd.Process.Pid
	o.Started, _ = proclive.Start(o.PID)
	require.NoError(t, cmd.Wait())
	require.True(t, o.Dead())
	return o
}

func TestInventoryAndCleanup(t *testing.T) {
	b, store := cliEnv(t)
	ctx := context.Background()
	hosts, err := b.Checkout(ctx, broker.Request{Count: 3, Test: "TestCLI"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Checkin(context.Background(), hosts...) })

	code, out, _ := runCLI(t, "inventory")
	require.Equal(t, 0, code)
	assert.Equal(t, 4, strings.Count(out, "\n"), out) // header + 3
	assert.Contains(t, out, "TestCLI")

	code, out, _ = runCLI(t, "--json", "inventory", "--filter", "_brokertest.test=TestCLI")
	require.Equal(t, 0, code)
	var list []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &list))
	assert.Len(t, list, 3)
	assert.Equal(t, "Local", list[0]["_broker_provider"])

	// The Python broker's @inv expressions select as they do there.
	code, out, _ = runCLI(t, "--json", "inventory", "--filter", `@inv._broker_provider == "Local" | @inv[-2:]`)
	require.Equal(t, 0, code)
	require.NoError(t, json.Unmarshal([]byte(out), &list))
	assert.Len(t, list, 2)
	code, out, _ = runCLI(t, "cleanup", "--all", "--dry-run", "--filter", `@inv._broker_provider != "Local"`)
	require.Equal(t, 0, code)
	assert.Equal(t, "nothing to check in: no host matches filter '@inv._broker_provider != \"Local\"' (of 3 in the inventory)\n", out)
	// A filter that fails on a host (Python would raise) selects nothing
	// to check in: the command refuses.
	code, out, stderr := runCLI(t, "cleanup", "--all", "--dry-run", "--filter", `@inv.hostname < 3`)
	assert.Equal(t, 2, code)
	assert.Empty(t, out)
	assert.Contains(t, stderr, "@inv.hostname < 3")

	// A dry run changes nothing.
	code, out, _ = runCLI(t, "cleanup", "--all", "--dry-run")
	require.Equal(t, 0, code)
	assert.Equal(t, 3, strings.Count(out, "would check in local"), out)
	assert.True(t, strings.HasSuffix(out, "\nwould check in 3 hosts (dry run: nothing changed)\n"), out)
	recs, _ := store.Load(context.Background())
	assert.Len(t, recs, 3)

	// By local id (the position shown by "inventory"), then by hostname/name.
	first := recs[0]
	code, out, stderr = runCLI(t, "cleanup", "0")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "checked in "+first.Name)
	recs, _ = store.Load(context.Background())
	require.Len(t, recs, 2)

	outFile := filepath.Join(t.TempDir(), "out.json")
	code, _, stderr = runCLI(t, "--output-file", outFile, "cleanup", recs[1].Name)
	require.Equal(t, 0, code, stderr)
	data, err := os.ReadFile(outFile)
	require.NoError(t, err)
	var res map[string]any
	require.NoError(t, json.Unmarshal(data, &res))
	assert.EqualValues(t, map[string]any{"selected": 1.0, "checked_in": 1.0, "failed": 0.0}, res["count"])
	require.Len(t, res["checked_in"], 1)
	assert.Equal(t, recs[1].Name, res["checked_in"].([]any)[0].(map[string]any)["name"])

	code, _, _ = runCLI(t, "cleanup", "--all")
	require.Equal(t, 0, code)
	recs, _ = store.Load(context.Background())
	assert.Empty(t, recs)
}

func TestCleanupStaleAndFailures(t *testing.T) {
	b, store := cliEnv(t)
	dead := deadOwner(t)
	live := inventory.CurrentOwner("liverun")
	staleRec := &inventory.Record{Hostname: "127.0.0.1", Name: "local-stale", Provider: "Local",
		Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateReady, Owner: dead}}
	liveRec := &inventory.Record{Hostname: "127.0.0.1", Name: "local-live", Provider: "Local",
		Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateReady, Owner: live}}
	foreign := &inventory.Record{Hostname: "vm.example.com", Name: "vm1", Provider: "NoSuchProvider"}
	// Kept for inspection by a run now dead: with no keep time it stays
	// until a person names it; with one that has passed it is stale.
	past := time.Now().Add(-time.Minute).Truncate(time.Second)
	keptRec := &inventory.Record{Hostname: "127.0.0.1", Name: "local-kept", Provider: "Local",
		Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateKept, Owner: dead}}
	expiredRec := &inventory.Record{Hostname: "127.0.0.1", Name: "local-kept-expired", Provider: "Local",
		Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateKept, Owner: dead, KeepUntil: &past}}
	require.NoError(t, store.Put(context.Background(), staleRec, liveRec, foreign, keptRec, expiredRec))

	code, out, stderr := runCLI(t, "cleanup", "--stale")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "local-stale")
	assert.Contains(t, out, "local-kept-expired")
	assert.NotContains(t, out, "local-live")
	assert.NotContains(t, out, "local-kept ")
	recs, _ := store.Load(context.Background())
	require.Len(t, recs, 3)
	assert.Equal(t, "local-kept", recs[2].Name)
	code, _, stderr = runCLI(t, "cleanup", "local-kept")
	require.Equal(t, 0, code, stderr)
	recs, _ = store.Load(context.Background())
	require.Len(t, recs, 2)

	// A host that fails to check in stays and is named; exit status 1.
	code, _, stderr = runCLI(t, "cleanup", "vm.example.com")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "vm1")
	assert.Contains(t, stderr, "NoSuchProvider")
	recs, _ = store.Load(context.Background())
	assert.Len(t, recs, 2)
	_ = b
}

func TestUsageErrors(t *testing.T) {
	cliEnv(t)
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"inventory", "--filter", "hostname"},
		{"cleanup", "nosuchhost"},
		{"sync"},
		{"sync", "Local:::"},
	} {
		code, _, stderr := runCLI(t, args...)
		assert.Equal(t, 2, code, "%q: %s", args, stderr)
		assert.NotEmpty(t, stderr, "%q", args)
	}
	// A filter alone selects nothing: the command was not told what to do.
	code, _, stderr := runCLI(t, "cleanup", "--filter", "name<x")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "nothing selected")
}

func TestSyncLocal(t *testing.T) {
	b, store := cliEnv(t)
	hosts, err := b.Checkout(context.Background(), broker.Request{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Checkin(context.Background(), hosts...) })
	code, out, stderr := runCLI(t, "--json", "sync", "Local")
	require.Equal(t, 0, code, stderr)
	var res map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	assert.Equal(t, "Local", res["provider"])
	recs, _ := store.Load(context.Background())
	assert.Len(t, recs, 1, "the live host stays")
}
