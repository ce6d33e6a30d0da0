package brokertest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/brokertest"
	"github.com/hostbroker/broker/inventory"
)

// A kept host's known_hosts file is not written through a symbolic link
// planted at the broker directory's kept/: the log says why it is missing.
func TestKeptKnownHostsRefusesSymlink(t *testing.T) {
	b := newTestBroker(t)
	elsewhere := t.TempDir()
	require.NoError(t, os.Symlink(elsewhere, filepath.Join(b.Dir(), "kept")))
	all, recs := keepFailedHost(t, b)
	assert.Contains(t, all, "known_hosts not written: "+filepath.Join(b.Dir(), "kept")+": is a symbolic link")
	assert.NotContains(t, all, "UserKnownHostsFile=")
	entries, _ := os.ReadDir(elsewhere)
	assert.Empty(t, entries, "nothing written through the link")
	require.NoError(t, b.CheckinRecords(t.Context(), recs...))
}

// keepFailedHost runs a test that checks a host out with
// WithKeepOnFailure and fails; it returns what the test logged and the
// inventory's records, the kept host's.
func keepFailedHost(t *testing.T, b *broker.Broker) (logs string, recs []*inventory.Record) {
	t.Helper()
	r := newRecorder(t)
	var lines []string
	r.logf = func(s string) { lines = append(lines, s) }
	r.run(func(tb testing.TB) {
		brokertest.Host(tb, broker.Request{}, brokertest.WithBroker(b), brokertest.WithKeepOnFailure())
		tb.Errorf("fails")
	})
	recs, err := b.Inventory(t.Context())
	require.NoError(t, err)
	require.Len(t, recs, 1, "the failed test's host is kept")
	return strings.Join(lines, "\n"), recs
}
