package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/inventory"
)

// Each command has its own help: its usage line, what it selects, its
// flags, an example, and the exit-code table; on stdout, exit 0.
func TestCommandHelp(t *testing.T) {
	cliEnv(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"inventory", "--help"}, []string{"usage: brokertest [GLOBAL FLAGS] inventory [--filter F]", "local id", "-filter F", "filters:", "examples:\n  brokertest inventory"}},
		{[]string{"help", "inventory"}, []string{"usage: brokertest [GLOBAL FLAGS] inventory"}},
		{[]string{"cleanup", "-h"}, []string{"usage: brokertest [GLOBAL FLAGS] cleanup", "-stale", "owner process on this machine is gone", "keep time has passed", "-dry-run", "a filter alone selects", "brokertest cleanup --stale"}},
		{[]string{"--json", "sync", "-h"}, []string{"usage: brokertest [GLOBAL FLAGS] sync Provider[:user][::instance]", "none but the global ones", "brokertest sync Container"}},
		{[]string{"-h"}, []string{"commands:\n  inventory", "brokertest COMMAND -h", "--output-file F"}},
	} {
		code, out, stderr := runCLI(t, tc.args...)
		assert.Equal(t, 0, code, "%q", tc.args)
		assert.Empty(t, stderr, "%q", tc.args)
		for _, w := range append(tc.want, "exit status (every command):\n  0  done, or nothing to do") {
			assert.Contains(t, out, w, "%q", tc.args)
		}
		if tc.args[0] != "-h" {
			assert.NotContains(t, out, "commands:", "%q: a command's help, not the global one", tc.args)
		}
	}
	// Only its own flags: inventory's help does not offer cleanup's.
	_, out, _ := runCLI(t, "inventory", "-h")
	assert.NotContains(t, out, "-stale")
}

// A specific error is one line, then one line saying where the usage is,
// not the whole usage burying it.
func TestErrorIsOneLine(t *testing.T) {
	cliEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cleanup", "nosuchhost"}, `brokertest cleanup: no host "nosuchhost" in the inventory` + "\n" + `run "brokertest cleanup -h" for its usage` + "\n"},
		{[]string{"inventory", "--filter", "hostname"}, "brokertest inventory: "},
		{[]string{"cleanup", "--nosuchflag"}, "brokertest cleanup: flag provided but not defined: -nosuchflag\n"},
		{[]string{"cleanup", "--filter", "name<x"}, "brokertest cleanup: nothing selected: name hosts"},
		{[]string{"frobnicate"}, `brokertest: unknown command "frobnicate"; commands: inventory, cleanup, sync` + "\n"},
		{[]string{"sync"}, "brokertest sync: want one Provider[:user][::instance], got 0 arguments\n"},
		{[]string{"sync", "NoSuchProvider"}, "brokertest sync: "},
	} {
		code, out, stderr := runCLI(t, tc.args...)
		assert.Equal(t, 2, code, "%q: %s", tc.args, stderr)
		assert.Empty(t, out, "%q", tc.args)
		assert.Contains(t, stderr, tc.want, "%q", tc.args)
		assert.Equal(t, 2, strings.Count(stderr, "\n"), "%q: the error and one hint:\n%s", tc.args, stderr)
		assert.NotContains(t, stderr, "commands:\n", "%q", tc.args)
	}
	// No command at all: the usage is the answer.
	code, _, stderr := runCLI(t)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "commands:\n")
}

// When nothing happens, one line on stdout says so, and the exit status is
// 0; --json's summary says the same.
func TestNothingToDoSaysSo(t *testing.T) {
	b, store := cliEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inventory"}, "no hosts in the inventory (" + store.Path() + ")\n"},
		{[]string{"cleanup", "--stale"}, "nothing to check in: the inventory is empty\n"},
		{[]string{"cleanup", "--all", "--dry-run"}, "nothing to check in: the inventory is empty\n"},
	} {
		code, out, stderr := runCLI(t, tc.args...)
		assert.Equal(t, 0, code, "%q: %s", tc.args, stderr)
		assert.Equal(t, tc.want, out, "%q", tc.args)
		assert.Empty(t, stderr, "%q", tc.args)
	}

	hosts, err := b.Checkout(context.Background(), broker.Request{Test: "TestNothing"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Checkin(context.Background(), hosts...) })
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inventory", "--filter", "name<nosuch"}, "no host matches filter 'name<nosuch' (of 1 in the inventory)\n"},
		{[]string{"cleanup", "--stale"}, "nothing to check in: no host is stale: every owner run is alive or on another machine, and no keep time has passed (1 in the inventory)\n"},
		{[]string{"cleanup", "--stale", "--dry-run", "--filter", "_brokertest.test=TestNothing"}, "nothing to check in: no host matching filter '_brokertest.test=TestNothing' is stale (of 1 in the inventory)\n"},
		{[]string{"cleanup", "--stale", "0"}, "nothing to check in: none of the hosts named is stale\n"},
		{[]string{"cleanup", "--all", "--filter", "name<nosuch"}, "nothing to check in: no host matches filter 'name<nosuch' (of 1 in the inventory)\n"},
		{[]string{"sync", "Local"}, "Local: nothing to change (1 records match what it has)\n"},
	} {
		code, out, stderr := runCLI(t, tc.args...)
		assert.Equal(t, 0, code, "%q: %s", tc.args, stderr)
		assert.Equal(t, tc.want, out, "%q", tc.args)
		assert.Empty(t, stderr, "%q", tc.args)

		code, out, _ = runCLI(t, append([]string{"--json"}, tc.args...)...)
		assert.Equal(t, 0, code, "%q", tc.args)
		if tc.args[0] != "inventory" {
			var res struct{ Summary string }
			require.NoError(t, json.Unmarshal([]byte(out), &res), "%q", tc.args)
			assert.Equal(t, strings.TrimSuffix(tc.want, "\n"), res.Summary, "%q", tc.args)
		} else {
			assert.Equal(t, "[]\n", out)
		}
	}
	recs, err := store.Load(t.Context())
	require.NoError(t, err)
	assert.Len(t, recs, 1, "nothing was checked in")
}

// Every command's --json output, and an error's, is what the schemas in
// testdata/schema say; nothing else reaches stdout.
func TestJSONOutputMatchesSchema(t *testing.T) {
	b, store := cliEnv(t)
	schemas := newSchemaChecker(t)
	hosts, err := b.Checkout(context.Background(), broker.Request{Count: 2, Test: "TestJSON"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Checkin(context.Background(), hosts...) })
	foreign := &inventory.Record{Hostname: "vm.example.com", Name: "vm1", Provider: "NoSuchProvider"}
	require.NoError(t, store.Put(t.Context(), foreign))

	for _, tc := range []struct {
		args   []string
		schema string
		code   int
		want   string
	}{
		{[]string{"inventory"}, "inventory.json", 0, `"TestJSON"`},
		{[]string{"inventory", "--filter", "name<nosuch"}, "inventory.json", 0, "[]"},
		{[]string{"cleanup", "--all", "--dry-run"}, "cleanup.json", 0, `"would check in 3 hosts (dry run: nothing changed)"`},
		{[]string{"cleanup", "--stale"}, "cleanup.json", 0, `"nothing to check in: `},
		{[]string{"sync", "Local"}, "sync.json", 0, `"provider": "Local"`},
		{[]string{"cleanup", "nosuchhost"}, "error.json", 2, `"exit": 2`},
		{[]string{"cleanup", "--bogus"}, "error.json", 2, `flag provided but not defined`},
		{[]string{"bogus"}, "error.json", 2, `unknown command`},
		{nil, "error.json", 2, `no command given`},
		{[]string{"cleanup", "vm1"}, "cleanup.json", 1, `NoSuchProvider`},
		{[]string{"cleanup", "--all"}, "cleanup.json", 1, `"checked in 2 hosts; 1 failed and stay in the inventory"`},
	} {
		code, out, stderr := runCLI(t, append([]string{"--json"}, tc.args...)...)
		assert.Equal(t, tc.code, code, "%q: %s", tc.args, stderr)
		assert.Contains(t, out, tc.want, "%q", tc.args)
		assert.NoError(t, schemas.check(tc.schema, []byte(out)), "%q: %s", tc.args, out)
	}
}
