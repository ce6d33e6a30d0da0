package cli

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/inventory"
)

// -h and --help print the usage on stdout and succeed, for the command and
// for each verb.
func TestHelpExitsZero(t *testing.T) {
	cliEnv(t)
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"inventory", "-h"}, {"cleanup", "--help"}, {"sync", "-h"}} {
		code, out, stderr := runCLI(t, args...)
		assert.Equal(t, 0, code, "%q: %s", args, stderr)
		assert.Contains(t, out, "usage: brokertest", "%q", args)
		assert.Empty(t, stderr, "%q", args)
	}
}

// cleanup's result (--output-file, --json) names the hosts it checked in
// and those that failed, with the error, besides the counts.
func TestCleanupOutputListsHosts(t *testing.T) {
	b, store := cliEnv(t)
	hosts, err := b.Checkout(context.Background(), broker.Request{Count: 2})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Checkin(context.Background(), hosts...) })
	foreign := &inventory.Record{Hostname: "vm.example.com", Name: "vm1", Provider: "NoSuchProvider"}
	require.NoError(t, store.Put(t.Context(), foreign))

	outFile := filepath.Join(t.TempDir(), "out.json")
	code, stdout, _ := runCLI(t, "--json", "--output-file", outFile, "cleanup", "--all")
	assert.Equal(t, 1, code, "one host failed")
	data, err := os.ReadFile(outFile)
	require.NoError(t, err)
	assert.JSONEq(t, string(data), stdout, "--json prints what --output-file holds")
	var res struct {
		CheckedIn []map[string]any `json:"checked_in"`
		Failed    []struct {
			Host  map[string]any `json:"host"`
			Error string         `json:"error"`
		} `json:"failed"`
		Count map[string]int `json:"count"`
	}
	require.NoError(t, json.Unmarshal(data, &res))
	var names []any
	for _, r := range res.CheckedIn {
		names = append(names, r["name"])
	}
	assert.ElementsMatch(t, []any{b.Record(hosts[0]).Name, b.Record(hosts[1]).Name}, names)
	require.Len(t, res.Failed, 1)
	assert.Equal(t, "vm1", res.Failed[0].Host["name"])
	assert.Contains(t, res.Failed[0].Error, "NoSuchProvider")
	assert.Equal(t, map[string]int{"selected": 3, "checked_in": 2, "failed": 1}, res.Count)
}

// Warnings about the settings (a misspelt key) reach stderr.
func TestSettingsWarningsOnStderr(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), []byte("Container:\n  host_url: unix:///x\n"), 0o600))
	t.Setenv("BROKER_DIRECTORY", dir)
	t.Setenv("BROKER_NO_WATCHER", "1")
	code, _, stderr := runCLI(t, "inventory")
	assert.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "broker_settings.yaml:2: Container.host_url: unknown key, ignored (did you mean host_uri?)")
}

// inventory only reads: it works on a broker directory it cannot write
// (no log there). Root ignores permissions, so as root the check runs in a
// child process as the unprivileged user nobody.
func TestInventoryOnReadOnlyDirectory(t *testing.T) {
	if dir := os.Getenv("BROKERTEST_READONLY_DIR"); dir != "" {
		// The child: run inventory and report.
		code, out, stderr := runCLI(t, "--json", "inventory")
		if code != 0 {
			t.Fatalf("inventory on a read-only directory: exit %d: %s", code, stderr)
		}
		os.Stdout.WriteString("CHILD-OUTPUT " + strconv.Quote(out) + "\n")
		return
	}
	b, store := cliEnv(t)
	require.NoError(t, store.Put(t.Context(), &inventory.Record{Hostname: "vm.example.com", Name: "vm1", Provider: "Local",
		Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateReady}}))
	dir := b.Dir()
	require.NoError(t, b.Close())
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "logs")))
	require.NoError(t, os.Chmod(filepath.Join(dir, "inventory.yaml"), 0o644))
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if strings.HasPrefix(d, os.TempDir()) && d != os.TempDir() {
			require.NoError(t, os.Chmod(d, 0o755))
		}
	}
	require.NoError(t, os.Chmod(dir, 0o555))
	t.Cleanup(func() { os.Chmod(dir, 0o755) })

	if os.Getuid() != 0 {
		code, out, stderr := runCLI(t, "--json", "inventory")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, out, "vm1")
		assert.NoDirExists(t, filepath.Join(dir, "logs"))
		return
	}
	// As root: the test binary, copied where nobody can run it, as nobody.
	exe, err := os.Executable()
	require.NoError(t, err)
	binDir := t.TempDir()
	require.NoError(t, os.Chmod(binDir, 0o755))
	bin := filepath.Join(binDir, "cli.test")
	data, err := os.ReadFile(exe)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, data, 0o755))
	cmd := exec.CommandContext(t.Context(), bin, "-test.run=^TestInventoryOnReadOnlyDirectory$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BROKERTEST_READONLY_DIR="+dir, "BROKER_DIRECTORY="+dir, "HOME="+dir, "BROKER_NO_WATCHER=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "child as nobody: %s", out)
	assert.Contains(t, string(out), "CHILD-OUTPUT")
	assert.Contains(t, string(out), "vm1")
	assert.NoDirExists(t, filepath.Join(dir, "logs"))
}
