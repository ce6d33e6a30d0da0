package brokertest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/brokertest"
	"github.com/hostbroker/broker/hostkit"
)

// neverClean is a pool host type whose Reset always fails.
type neverClean struct{ *hostkit.Host }

func (neverClean) Reset(context.Context) error { return errors.New("disk still full") }

// logLines collects the lines a recorder logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(s string) { l.mu.Lock(); l.lines = append(l.lines, s); l.mu.Unlock() }

func (l *logLines) all() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// A lease and its release are lines in the leasing test's log, with the
// host and how it is reached; a host whose Reset fails says so there, and
// in broker.log, and the lease that gets its replacement says what it
// replaces; the pool's summary at close counts it.
func TestPoolLogsLeasesAndFailedReset(t *testing.T) {
	b := newTestBroker(t)
	var poolLog, firstLog, secondLog logLines
	var pool *brokertest.PoolAs[neverClean]
	var first, second string
	rp := newRecorder(t)
	rp.logf = poolLog.add
	rp.run(func(tb testing.TB) {
		pool = brokertest.NewPoolAs[neverClean](tb, broker.Request{}, 1, brokertest.WithBroker(b))
		r1 := newRecorder(t)
		r1.logf = firstLog.add
		r1.run(func(tb testing.TB) { first = b.Record(pool.Lease(tb).Host).Name })
		assert.Empty(t, r1.errors, "a failed Reset is the pool's business, not the test's")
		r2 := newRecorder(t)
		r2.logf = secondLog.add
		r2.run(func(tb testing.TB) { second = b.Record(pool.Lease(tb).Host).Name })
	})
	require.NotEqual(t, first, second, "the host whose Reset failed was replaced")

	assert.Regexp(t, `^brokertest: leased `+regexp.QuoteMeta(first)+` \([^,]+, Local, id \S+\), new; SSH to \S+@127\.0\.0\.1:\d+\n`, firstLog.all())
	assert.Contains(t, firstLog.all(), "\nbrokertest: released "+first+" (")
	assert.Contains(t, firstLog.all(), "; its Reset failed, so it was checked in and the pool replaces it: disk still full")
	assert.Regexp(t, `^brokertest: leased `+regexp.QuoteMeta(second)+` \([^,]+, Local, id \S+\), new, replacing `+regexp.QuoteMeta(first)+` \([^,]+, Local, id \S+\) \(its Reset failed\); SSH to `, secondLog.all())
	assert.Equal(t, 2, len(strings.Split(firstLog.all(), "\n")), "one line each for the lease and the release:\n%s", firstLog.all())

	assert.Equal(t, broker.PoolStats{Checkouts: 2, Leases: 2, ResetFailed: 2}, pool.Summary())
	assert.Contains(t, poolLog.all(), "brokertest: pool closed: leases: 2; hosts checked out: 2, reused from earlier runs: 0; failed Reset: 2; replaced after an unhealthy lease: 0, kept for inspection: 0")

	log, err := os.ReadFile(filepath.Join(b.Dir(), "logs", "broker.log"))
	require.NoError(t, err)
	assert.Regexp(t, `level=WARN msg="pool: reset failed; checking the host in and replacing it" pid=\d+ host="`+regexp.QuoteMeta(first)+` [^"]*" err="disk still full"`, string(log))
	assert.Contains(t, string(log), `msg="pool: closed; some hosts failed their Reset" pid=`)
}

// A failed test's host: the release line says it is replaced, and the
// next lease says what it replaces.
func TestPoolLogsFailedLeaseReplacement(t *testing.T) {
	b := newTestBroker(t)
	pool := brokertest.NewPool(t, broker.Request{}, 1, brokertest.WithBroker(b))
	var log1, log2 logLines
	var first string
	r1 := newRecorder(t)
	r1.logf = log1.add
	r1.run(func(tb testing.TB) {
		first = b.Record(pool.Lease(tb)).Name
		tb.Errorf("fails")
	})
	assert.Contains(t, log1.all(), "brokertest: released "+first+" (")
	assert.Contains(t, log1.all(), "; checked in, since this test failed, and the pool replaces it")
	r2 := newRecorder(t)
	r2.logf = log2.add
	r2.run(func(tb testing.TB) { pool.Lease(tb) })
	assert.Contains(t, log2.all(), ", new, replacing "+first+" (")
	assert.Contains(t, log2.all(), "(its test failed); SSH to ")
	assert.Equal(t, broker.PoolStats{Checkouts: 2, Leases: 2, Unhealthy: 1}, pool.Summary())
}

// WithReuseFailed: a host whose Reset failed goes to the next lease as it
// is, and the log says so rather than a replacement.
func TestPoolLogsFailedResetReused(t *testing.T) {
	b := newTestBroker(t)
	var log1, log2 logLines
	var pool *brokertest.PoolAs[neverClean]
	var first, second string
	rp := newRecorder(t)
	rp.run(func(tb testing.TB) {
		pool = brokertest.NewPoolAs[neverClean](tb, broker.Request{}, 1, brokertest.WithBroker(b), brokertest.WithReuseFailed())
		r1 := newRecorder(t)
		r1.logf = log1.add
		r1.run(func(tb testing.TB) { first = b.Record(pool.Lease(tb).Host).Name })
		r2 := newRecorder(t)
		r2.logf = log2.add
		r2.run(func(tb testing.TB) { second = b.Record(pool.Lease(tb).Host).Name })
	})
	assert.Equal(t, first, second)
	assert.Contains(t, log1.all(), "; its Reset failed, and it goes to the next lease as it is (WithReuseFailed): disk still full")
	assert.NotContains(t, log2.all(), "replacing")
	assert.Equal(t, broker.PoolStats{Checkouts: 1, Leases: 2, ResetFailed: 2}, pool.Summary())
	log, err := os.ReadFile(filepath.Join(b.Dir(), "logs", "broker.log"))
	require.NoError(t, err)
	assert.Contains(t, string(log), `msg="pool: reset failed; handing the host on as it is (ReuseFailed)"`)
}

// Log lines about a test's hosts are attributed to the test's own file and
// line (where it called Host, NewPool or Lease), not to brokertest's: the
// test binary runs a child test with -test.v, and each line's file:line
// prefix is checked against the marked lines of this file.
func TestLogAttributedToTheTest(t *testing.T) {
	if os.Getenv("BROKERTEST_ATTRIBUTION_CHILD") != "" {
		t.Setenv("BROKER_DIRECTORY", t.TempDir())
		brokertest.Host(t, broker.Request{})               // MARK:host
		pool := brokertest.NewPool(t, broker.Request{}, 1) // MARK:pool
		t.Run("sub", func(t *testing.T) {
			pool.Lease(t) // MARK:lease
		})
		return
	}
	if testing.Short() {
		t.Skip("runs the test binary again")
	}
	src, err := os.ReadFile("poollog_test.go")
	require.NoError(t, err)
	mark := map[string]int{}
	markRE := regexp.MustCompile(`// MARK:(\w+)$`)
	for i, line := range strings.Split(string(src), "\n") {
		if m := markRE.FindStringSubmatch(line); m != nil {
			mark[m[1]] = i + 1
		}
	}
	require.Len(t, mark, 3)
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^TestLogAttributedToTheTest$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "BROKERTEST_ATTRIBUTION_CHILD=1", "BROKER_NO_REAPER=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, want := range []struct {
		mark, line string
	}{
		{"host", "brokertest: checked out "},
		{"host", "brokertest: checked in "},
		{"lease", "brokertest: leased "},
		{"lease", "brokertest: released "},
		{"pool", "brokertest: pool closed: "},
	} {
		prefix := "poollog_test.go:" + strconv.Itoa(mark[want.mark]) + ": " + want.line
		assert.Contains(t, string(out), prefix, "a line attributed to the %s call", want.mark)
	}
	assert.NotContains(t, string(out), "brokertest.go:")
	assert.NotContains(t, string(out), "pool.go:")
}
