package brokertest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/brokertest"
	"github.com/hostbroker/broker/hostkit"
)

// ownDirectory gives t a broker directory of its own, through the
// environment as a Go test isolates itself, with a settings file defining
// the nick "nick" (a Local host).
func ownDirectory(t *testing.T, nick string) string {
	t.Helper()
	dir := t.TempDir()
	settings := fmt.Sprintf("nicks:\n  %s: {local: true}\n", nick)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), []byte(settings), 0o600))
	t.Setenv("BROKER_DIRECTORY", dir)
	return dir
}

// checkedOutIn checks that h's record and its Local directory are in dir.
func checkedOutIn(t *testing.T, h *hostkit.Host, dir string) {
	t.Helper()
	rec := brokertest.Record(t, h)
	assert.True(t, strings.HasPrefix(rec.Broker.Data["dir"].(string), dir+string(filepath.Separator)),
		"host directory %s is under the test's broker directory %s", rec.Broker.Data["dir"], dir)
	inv, err := os.ReadFile(filepath.Join(dir, "inventory.yaml"))
	require.NoError(t, err, "the host is recorded in the test's own inventory")
	assert.Contains(t, string(inv), rec.ID())
}

// TestDefaultFollowsTheTestsEnvironment: two tests in one process, each
// with its own BROKER_DIRECTORY (t.Setenv) and settings: each gets its own
// settings and inventory, and nothing is written into the first test's
// directory once that test has ended.
func TestDefaultFollowsTheTestsEnvironment(t *testing.T) {
	var first string
	t.Run("first", func(t *testing.T) {
		first = ownDirectory(t, "one")
		h := brokertest.Host(t, broker.Request{Nick: "one"})
		checkedOutIn(t, h, first)
		assert.FileExists(t, filepath.Join(first, "logs", "broker.log"), "the log is in the test's directory")
	})
	require.NoDirExists(t, first, "t.TempDir removed the first test's directory")
	t.Run("second", func(t *testing.T) {
		dir := ownDirectory(t, "two")
		h := brokertest.Host(t, broker.Request{Nick: "two"})
		checkedOutIn(t, h, dir)
		res, err := h.Execute(t.Context(), "true")
		require.NoError(t, err)
		assert.Zero(t, res.Status)
		assert.NoDirExists(t, first, "nothing re-creates the first test's directory")
	})
	t.Run("third", func(t *testing.T) {
		dir := t.TempDir()
		t.Setenv("BROKER_DIRECTORY", dir)
		h := brokertest.Host(t, broker.Request{}) // no nick: once recorded in the first test's directory
		checkedOutIn(t, h, dir)
		assert.NoDirExists(t, first, "nothing re-creates the first test's directory")
	})
	assert.NoDirExists(t, first, "nothing re-creates the first test's directory")
}

// TestDefaultParallelSubtests: parallel subtests under a parent that set
// its own directory share it; then a second parent with another
// directory; neither directory is written to once its test has ended.
func TestDefaultParallelSubtests(t *testing.T) {
	var dirs []string
	for _, group := range []string{"a", "b"} {
		t.Run(group, func(t *testing.T) {
			dir := ownDirectory(t, "nick"+group)
			dirs = append(dirs, dir)
			for i := range 4 {
				t.Run(fmt.Sprint(i), func(t *testing.T) {
					t.Parallel()
					h := brokertest.Host(t, broker.Request{Nick: "nick" + group})
					checkedOutIn(t, h, dir)
					res, err := h.Execute(t.Context(), "echo ok")
					require.NoError(t, err)
					assert.Equal(t, "ok\n", res.Stdout)
				})
			}
		})
	}
	for _, dir := range dirs {
		assert.NoDirExists(t, dir, "nothing re-creates a finished test's directory")
	}
}
