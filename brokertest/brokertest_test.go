package brokertest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/brokertest"
	"github.com/hostbroker/broker/hostkit"
)

// mainChild, set in the environment, makes this test binary a child of
// TestMainOptions: its default Broker has no signal handling and no reaper.
const mainChild = "BROKERTEST_MAIN_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(mainChild) != "" {
		brokertest.Main(m, broker.WithSignalHandling(false), broker.WithReaper(false))
	}
	dir, err := os.MkdirTemp("", "brokertest-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("BROKER_DIRECTORY", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestMainOptions: Main gives the default Broker its options. A child whose
// TestMain is Main(m, WithSignalHandling(false), WithReaper(false)) checks a
// host out and gets SIGTERM: it dies of it at once, the host still in the
// inventory (with the default options the handler would have checked it in).
func TestMainOptions(t *testing.T) {
	if os.Getenv(mainChild) != "" {
		brokertest.Host(t, broker.Request{})
		fmt.Println("ready")
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		time.Sleep(time.Minute)
		t.Fatal("SIGTERM did not end the process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMainOptions$", "-test.v")
	cmd.Env = append(os.Environ(), mainChild+"=1", "BROKER_DIRECTORY="+dir)
	out, _ := cmd.CombinedOutput()
	require.Contains(t, string(out), "ready", "the child checked a host out")
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	require.True(t, ws.Signaled(), "the child dies of SIGTERM: %v\n%s", cmd.ProcessState, out)
	assert.Equal(t, syscall.SIGTERM, ws.Signal())

	b, err := broker.New(broker.WithDirectory(dir), broker.WithReaper(false))
	require.NoError(t, err)
	defer b.Close()
	recs, err := b.Inventory(t.Context())
	require.NoError(t, err)
	require.Len(t, recs, 1, "nothing checked the child's host in")
	assert.Equal(t, "TestMainOptions", recs[0].Broker.Test)
	require.NoError(t, b.CheckinRecords(t.Context(), recs...))
}

func TestHostOnEmbeddedDefault(t *testing.T) {
	h := brokertest.Host(t, broker.Request{})
	res, err := h.Execute(t.Context(), "echo out; echo err >&2; exit 7")
	require.NoError(t, err)
	assert.Equal(t, hostkit.Result{Status: 7, Stdout: "out\n", Stderr: "err\n"}, res)
	rec := brokertest.Record(t, h)
	assert.Equal(t, "Local", rec.Provider)
	assert.Equal(t, t.Name(), rec.Broker.Test)
}

// recorder is a testing.TB that records failures and cleanups, so tests can
// watch brokertest fail a test without failing themselves.
type recorder struct {
	testing.TB
	ctx      context.Context
	mu       sync.Mutex
	cleanups []func()
	errors   []string
	fatal    bool
	logf     func(string)
}

func (r *recorder) Helper()                  {}
func (r *recorder) Name() string             { return "Recorder" }
func (r *recorder) Context() context.Context { return r.ctx }
func (r *recorder) Cleanup(f func())         { r.mu.Lock(); r.cleanups = append(r.cleanups, f); r.mu.Unlock() }
func (r *recorder) Logf(format string, args ...any) {
	if r.logf != nil {
		r.logf(fmt.Sprintf(format, args...))
	}
}
func (r *recorder) Failed() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.errors) > 0 }
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.fatal = true
	runtime.Goexit()
}

// run calls f as a test body would run, then the cleanups, last first.
func (r *recorder) run(f func(tb testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func newRecorder(t *testing.T) *recorder {
	return &recorder{TB: t, ctx: t.Context()}
}

// events is the order of hooks seen by the custom host types below.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(s string) { e.mu.Lock(); e.list = append(e.list, s); e.mu.Unlock() }

var seen events

type webHost struct {
	*hostkit.Host
}

func (w *webHost) Setup(ctx context.Context) error {
	seen.add("setup")
	if _, err := w.Execute(ctx, "echo ready > marker"); err != nil {
		return err
	}
	return nil
}

func (w *webHost) Teardown(ctx context.Context) error {
	res, err := w.Execute(ctx, "cat marker")
	if err != nil {
		return err
	}
	seen.add("teardown:" + strings.TrimSpace(res.Stdout))
	return nil
}

type brokenHost struct{ *hostkit.Host }

func (brokenHost) Setup(ctx context.Context) error { return errors.New("disk on fire") }

func TestHostAsRunsSetupAndTeardown(t *testing.T) {
	seen = events{}
	r := newRecorder(t)
	var dir string
	r.run(func(tb testing.TB) {
		h := brokertest.HostAs[webHost](tb, broker.Request{})
		data, err := h.ReadFile(tb.Context(), "marker")
		require.NoError(t, err)
		assert.Equal(t, "ready\n", string(data), "Setup ran before HostAs returned")
		dir = brokertest.Record(tb, h.Host).Broker.Data["dir"].(string)
	})
	assert.Empty(t, r.errors)
	assert.Equal(t, []string{"setup", "teardown:ready"}, seen.list, "Teardown runs before check-in, while the host still answers")
	_, err := os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "host checked in after the test")
}

func TestFailingSetupFailsTestAndChecksIn(t *testing.T) {
	b, err := broker.New(broker.WithDirectory(t.TempDir()))
	require.NoError(t, err)
	defer b.Close()
	r := newRecorder(t)
	returned := false
	r.run(func(tb testing.TB) {
		brokertest.HostAs[brokenHost](tb, broker.Request{}, brokertest.WithBroker(b))
		returned = true
	})
	assert.False(t, returned, "HostAs must stop the test when Setup fails")
	require.True(t, r.fatal)
	assert.Contains(t, strings.Join(r.errors, "\n"), "disk on fire")
	recs, err := b.Inventory(t.Context())
	require.NoError(t, err)
	assert.Empty(t, recs, "the host was still checked in")
	entries, _ := os.ReadDir(filepath.Join(b.Dir(), "local"))
	assert.Empty(t, entries)
}

type notAHost struct{ Name string }

func TestHostAsRejectsTypesWithoutHost(t *testing.T) {
	r := newRecorder(t)
	r.run(func(tb testing.TB) { brokertest.HostAs[notAHost](tb, broker.Request{}) })
	require.True(t, r.fatal)
	assert.Contains(t, strings.Join(r.errors, "\n"), "does not embed *hostkit.Host")
}

func TestHostsCount(t *testing.T) {
	hosts := brokertest.Hosts(t, broker.Request{Count: 3})
	require.Len(t, hosts, 3)
	var g sync.WaitGroup
	for i, h := range hosts {
		g.Go(func() {
			res, err := h.Execute(t.Context(), fmt.Sprintf("echo %d", i))
			assert.NoError(t, err)
			assert.Equal(t, fmt.Sprintf("%d\n", i), res.Stdout)
		})
	}
	g.Wait()
}

func TestCheckoutFailureFailsTest(t *testing.T) {
	r := newRecorder(t)
	r.run(func(tb testing.TB) { brokertest.Host(tb, broker.Request{Provider: "NoSuchProvider"}) })
	require.True(t, r.fatal)
	assert.Contains(t, strings.Join(r.errors, "\n"), "NoSuchProvider")
}

// TestHostAsChecksTypeFirst: a host type that embeds no *hostkit.Host fails
// before anything is checked out: no record, no host.
func TestHostAsChecksTypeFirst(t *testing.T) {
	b, err := broker.New(broker.WithDirectory(t.TempDir()))
	require.NoError(t, err)
	defer b.Close()
	r := newRecorder(t)
	var logs []string
	r.logf = func(s string) { logs = append(logs, s) }
	r.run(func(tb testing.TB) { brokertest.HostAs[notAHost](tb, broker.Request{}, brokertest.WithBroker(b)) })
	require.True(t, r.fatal)
	assert.Contains(t, strings.Join(r.errors, "\n"), "does not embed *hostkit.Host")
	assert.NotContains(t, strings.Join(logs, "\n"), "checked out")
	assert.NoFileExists(t, filepath.Join(b.Dir(), "inventory.yaml"), "no record was written")
	assert.NoDirExists(t, filepath.Join(b.Dir(), "local"), "no host was made")
}

// TestLocalHostIsThisMachine: a Local host is this machine, as the current
// user; its Hostname is what hostname prints there (the Python broker's
// idiom `hostname in host.execute("hostname").stdout` holds), and each
// host starts in a directory of its own under the broker directory, which
// is also its HOME.
func TestLocalHostIsThisMachine(t *testing.T) {
	h := brokertest.Host(t, broker.Request{})
	res, err := h.Execute(t.Context(), `hostname; pwd -P; echo "$HOME"; id -u`)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	require.Len(t, lines, 4, res.Stdout)
	assert.Contains(t, lines[0], h.Hostname, "Hostname is what hostname prints")
	rec := brokertest.Record(t, h)
	assert.Equal(t, h.Hostname, rec.Hostname)
	assert.Equal(t, "127.0.0.1", rec.IP, "the address is in IP (and the ssh block)")
	own, err := filepath.EvalSymlinks(filepath.Join(os.Getenv("BROKER_DIRECTORY"), "local", rec.ID()))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(own, "home"), lines[1], "commands start in the host's own directory")
	assert.Equal(t, filepath.Join(filepath.Join(os.Getenv("BROKER_DIRECTORY"), "local", rec.ID()), "home"), lines[2], "HOME is that directory")
	assert.Equal(t, fmt.Sprint(os.Getuid()), lines[3], "commands run as the current user")
}
