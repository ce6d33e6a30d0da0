package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/proclive"
	"github.com/hostbroker/broker/internal/testenv"
	"github.com/hostbroker/broker/inventory"
)

// Child processes of these tests are this test binary re-run with
// childRole set; TestChild dispatches on it.
const childRole = "BROKER_TEST_CHILD"

func TestChild(t *testing.T) {
	role := os.Getenv(childRole)
	if role == "" {
		t.Skip("helper process for other tests")
	}
	switch role {
	case "writer":
		childWriter(t)
	case "churn":
		childChurn(t)
	case "hold":
		childHold(t)
	case "lease":
		childLease(t)
	case "signal":
		childSignal(t)
	case "first":
		childFirst(t)
	default:
		t.Fatalf("unknown role %q", role)
	}
}

// child starts this test binary in a role.
func child(t testing.TB, role string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestChild$", "-test.v"}, args...)...)
	cmd.Env = append(os.Environ(), append([]string{childRole + "=" + role}, env...)...)
	return cmd
}

// childWriter appends records forever, printing each id once its write
// returned.
func childWriter(t *testing.T) {
	store := inventory.Open(os.Getenv("INVENTORY"))
	out := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		rec := &inventory.Record{Hostname: fmt.Sprintf("h%d.example.com", i), Name: fmt.Sprintf("h%d", i), Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateReady}}
		if err := store.Update(context.Background(), func(recs []*inventory.Record) ([]*inventory.Record, error) {
			if len(recs) > 50 { // keep the file small: drop the oldest
				recs = recs[1:]
			}
			return append(recs, rec), nil
		}); err != nil {
			fmt.Println("error", err)
			os.Exit(3)
		}
		fmt.Fprintln(out, "committed", rec.ID())
		out.Flush()
	}
}

// TestCrashConsistency SIGKILLs an inventory writer at random points 200
// times: the file always parses and the last finished write is never lost.
func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	store := inventory.Open(path)
	for i := range 200 {
		cmd := child(t, "writer", []string{"INVENTORY=" + path})
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		var (
			mu   sync.Mutex
			last string
		)
		done := make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if id, ok := strings.CutPrefix(sc.Text(), "committed "); ok {
					mu.Lock()
					last = id
					mu.Unlock()
				}
			}
		}()
		time.Sleep(time.Duration(5+rand.IntN(60)) * time.Millisecond)
		require.NoError(t, cmd.Process.Kill())
		<-done
		_ = cmd.Wait()
		recs, err := store.Load(context.Background())
		require.NoError(t, err, "round %d: the inventory must always parse", i)
		mu.Lock()
		if last != "" {
			found := false
			for _, r := range recs {
				found = found || r.ID() == last
			}
			assert.True(t, found, "round %d: finished write %s lost", i, last)
		}
		mu.Unlock()
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*.tmp*"))
	assert.LessOrEqual(t, len(matches), 1, "temp files of killed writers are removed by the next writer")
}

// childChurn checks out 50 Local hosts in batches and checks in every
// other one, then prints the ids it kept and exits without checking them in.
func childChurn(t *testing.T) {
	b, err := broker.New(broker.WithReaper(false))
	require.NoError(t, err)
	ctx := context.Background()
	var kept []string
	for range 10 {
		hosts, err := b.Checkout(ctx, broker.Request{Count: 5})
		require.NoError(t, err)
		for i, h := range hosts {
			if i%2 == 0 {
				require.NoError(t, b.Checkin(ctx, h))
			} else {
				kept = append(kept, b.Record(h).ID())
			}
		}
	}
	fmt.Println("kept", strings.Join(kept, " "))
}

// TestConcurrentProcesses: 8 processes check 50 Local hosts each out and
// 3 of every 5 in, against one inventory; at the end the inventory holds
// exactly the hosts they say they kept.
func TestConcurrentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	truth := map[string]bool{}
	for _, id := range childIDs(t, 8, "churn", "kept", "BROKER_DIRECTORY="+dir) {
		truth[id] = true
	}
	recs, err := inventory.Open(filepath.Join(dir, "inventory.yaml")).Load(context.Background())
	require.NoError(t, err)
	got := map[string]bool{}
	for _, r := range recs {
		got[r.ID()] = true
	}
	assert.Len(t, truth, 8*20, "each keeps 2 of every 5")
	assert.Equal(t, truth, got, "the inventory equals what the processes did")
}

// childHold checks out hosts and waits to be killed or timed out.
func childHold(t *testing.T) {
	b, err := broker.New(broker.WithRunID(os.Getenv("RUN_ID")))
	require.NoError(t, err)
	n, _ := strconv.Atoi(os.Getenv("COUNT"))
	req := broker.Request{Count: n}
	if img := os.Getenv("IMAGE"); img != "" {
		req.Args = map[string]any{"container_host": img}
	}
	if wf := os.Getenv("WORKFLOW"); wf != "" {
		req.Args = map[string]any{"workflow": wf}
	}
	hosts, err := b.Checkout(context.Background(), req)
	require.NoError(t, err)
	t.Cleanup(func() { b.Checkin(context.Background(), hosts...) })
	fmt.Println("ready", len(hosts))
	if d, err := time.ParseDuration(os.Getenv("DIE_INTO_CHECKIN")); err == nil {
		// Die with the check-ins under way: the engine goes on removing
		// what they asked for, and the reaper finds those removals in
		// progress.
		go b.Checkin(context.Background(), hosts...)
		time.Sleep(d)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	time.Sleep(time.Hour)
}

// startHolder starts a child that checks out count hosts and waits.
func startHolder(t *testing.T, dir, runID, image string, count int, args ...string) (*exec.Cmd, *bufio.Scanner) {
	cmd, sc, out := tryHolder(t, dir, runID, image, count, args...)
	if cmd == nil {
		t.Fatalf("child ended before its hosts were ready:\n%s", out)
	}
	return cmd, sc
}

// tryHolder is startHolder, but a child that ends before its hosts are
// ready is no failure: it returns a nil command and the child's output.
func tryHolder(t *testing.T, dir, runID, image string, count int, args ...string) (*exec.Cmd, *bufio.Scanner, string) {
	cmd := child(t, "hold", []string{"BROKER_DIRECTORY=" + dir, "RUN_ID=" + runID, "IMAGE=" + image, fmt.Sprint("COUNT=", count)}, args...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = cmd.Stdout
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		// The watcher may still be logging into dir after the hosts are
		// gone; let it finish before t.TempDir removes dir.
		waitWatcherGone(t, cmd.Process.Pid)
	})
	sc := bufio.NewScanner(stdout)
	var out strings.Builder
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "ready") {
			return cmd, sc, out.String()
		}
		out.WriteString(sc.Text() + "\n")
	}
	_ = cmd.Wait()
	return nil, nil, out.String()
}

// startTimingOut starts a child that checks out count hosts and that its
// -test.timeout ends once they are ready. A loaded machine may take longer
// than timeout to check them out: then, once what that child had is
// reaped, it tries again with twice the timeout. It returns the child that
// got ready and its run id; left(runID) counts the hosts of a run.
func startTimingOut(t *testing.T, dir, image string, count int, timeout time.Duration, left func(runID string) func() int) (*exec.Cmd, string) {
	t.Helper()
	for {
		runID := inventory.NewRunID()
		if image != "" {
			t.Cleanup(func() { removeContainersOfRun(runID) })
		}
		cmd, _, out := tryHolder(t, dir, runID, image, count, "-test.timeout="+timeout.String())
		if cmd != nil {
			return cmd, runID
		}
		if !strings.Contains(out, "panic: test timed out") || timeout >= 8*time.Minute {
			t.Fatalf("child ended before its hosts were ready:\n%s", out)
		}
		// What it had checked out is reaped all the same.
		waitEmpty(t, dir, runID, left(runID))
		t.Logf("the child's -test.timeout=%v ran out before its %d hosts were ready: again with %v", timeout, count, 2*timeout)
		timeout *= 2
	}
}

// waitBound bounds the waits of these tests for what a process does: it
// is generous, since the tests must pass on a busy machine; a wait that
// passes returns as soon as it can.
const waitBound = 2 * time.Minute

// waitWatcherGone waits up to waitBound for the reaper watcher of the
// process pid to exit.
func waitWatcherGone(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for findWatcher(pid) != 0 {
		if time.Now().After(deadline) {
			t.Errorf("the watcher of process %d still runs after %v", pid, waitBound)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitExited waits up to waitBound for process pid to have exited (gone,
// or a zombie): only then has it closed its files and let go of its locks.
// Its environment, which findWatcher reads, goes a little earlier.
func waitExited(t testing.TB, pid int) {
	t.Helper()
	started, err := proclive.Start(pid)
	if err != nil {
		return // gone
	}
	p := proclive.Self()
	p.PID, p.Started = pid, started
	deadline := time.Now().Add(waitBound)
	for !p.Dead() {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs %v after SIGKILL", pid, waitBound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitEmpty waits up to waitBound for the inventory of dir to hold no host of
// runID and for gone() to report no leftovers.
func waitEmpty(t *testing.T, dir, runID string, leftovers func() int) {
	t.Helper()
	store := inventory.Open(filepath.Join(dir, "inventory.yaml"))
	start := time.Now()
	deadline := start.Add(waitBound)
	for {
		recs, err := store.Load(context.Background())
		require.NoError(t, err)
		n := 0
		for _, r := range recs {
			if r.Broker != nil && r.Broker.Owner.Run == runID {
				n++
			}
		}
		left := leftovers()
		if n == 0 && left == 0 {
			t.Logf("run %s: nothing left after %v", runID, time.Since(start).Round(10*time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d inventory records and %d hosts of run %s remain\n%s", waitBound, n, left, runID, reaperState(dir))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// reaperState says, for a failure's message, who holds the owner lock
// files of the broker directory dir and what this process's reaper
// goroutines are doing.
func reaperState(dir string) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(dir, ".owners", "*.lock"))
	for _, f := range files {
		fmt.Fprintf(&b, "owner lock %s:", filepath.Base(f))
		holders, _ := flockHolders(f)
		for _, pid := range holders {
			cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
			fmt.Fprintf(&b, " held by pid %s (%q)", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
		b.WriteString("\n")
	}
	buf := make([]byte, 1<<20)
	for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "reaper.") {
			b.WriteString(g + "\n\n")
		}
	}
	return b.String()
}

func localDirs(dir string) func() int {
	return func() int {
		entries, _ := os.ReadDir(filepath.Join(dir, "local"))
		return len(entries)
	}
}

// TestReaperLocal kills a holder of Local hosts three ways; each time the
// watcher (or the signal handler) checks its hosts in with no command.
func TestReaperLocal(t *testing.T) {
	for _, how := range []string{"SIGKILL", "timeout", "SIGINT"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			runID := inventory.NewRunID()
			var cmd *exec.Cmd
			if how == "timeout" {
				cmd, runID = startTimingOut(t, dir, "", 5, 3*time.Second, func(string) func() int { return localDirs(dir) })
			} else {
				cmd, _ = startHolder(t, dir, runID, "", 5)
			}
			switch how {
			case "SIGKILL":
				require.NoError(t, cmd.Process.Kill())
			case "SIGINT":
				require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
			}
			_ = cmd.Wait()
			waitEmpty(t, dir, runID, localDirs(dir))
		})
	}
}

// containersOfRun counts the containers labelled with runID, through the
// docker CLI so that the check does not share code with the provider.
func containersOfRun(t *testing.T, runID string) func() int {
	return func() int {
		out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=io.hostbroker.run="+runID).Output()
		require.NoError(t, err)
		return len(strings.Fields(string(out)))
	}
}

// TestReaperContainer: a child holding 20 containers is killed three ways;
// soon no container of its run is left and the inventory is empty,
// with no command run by hand.
func TestReaperContainer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	requireImage(t, sshdImage)
	for _, how := range []string{"SIGKILL", "timeout", "SIGINT"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			var cmd *exec.Cmd
			var runID string
			if how == "timeout" {
				// Its timeout may run out at any time now: the count of
				// its containers is no longer stable.
				cmd, runID = startTimingOut(t, dir, sshdImage, 20, time.Minute, func(runID string) func() int { return containersOfRun(t, runID) })
			} else {
				runID = inventory.NewRunID()
				t.Cleanup(func() { removeContainersOfRun(runID) })
				cmd, _ = startHolder(t, dir, runID, sshdImage, 20)
				require.Equal(t, 20, containersOfRun(t, runID)(), "the child holds 20 containers")
			}
			left := containersOfRun(t, runID)
			switch how {
			case "SIGKILL":
				require.NoError(t, cmd.Process.Kill())
			case "SIGINT":
				require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
			}
			_ = cmd.Wait()
			waitEmpty(t, dir, runID, left)
		})
	}
}

// TestReaperDuringCheckin: the holder dies while its own check-ins are
// under way; the reaper finds those removals in progress at the engine and
// still leaves no container and no record.
func TestReaperDuringCheckin(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	requireImage(t, sshdImage)
	for _, after := range []string{"30ms", "150ms"} {
		t.Run(after, func(t *testing.T) {
			dir := t.TempDir()
			runID := inventory.NewRunID()
			left := containersOfRun(t, runID)
			t.Cleanup(func() { removeContainersOfRun(runID) })
			cmd := child(t, "hold", []string{"BROKER_DIRECTORY=" + dir, "RUN_ID=" + runID, "IMAGE=" + sshdImage, "COUNT=8", "DIE_INTO_CHECKIN=" + after})
			out, _ := cmd.CombinedOutput() // it kills itself
			require.Contains(t, string(out), "ready 8", "the child checked its hosts out")
			waitEmpty(t, dir, runID, left)
			waitWatcherGone(t, cmd.Process.Pid)
		})
	}
}

// TestReaperMidCheckout: the holder is SIGKILLed or interrupted while its
// checkouts are under way (intent records written, containers half made or
// not yet asked for): the watcher, or the signal handler, still leaves
// nothing behind, also once the create calls in flight have completed.
func TestReaperMidCheckout(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	requireImage(t, sshdImage)
	for _, tc := range []struct {
		name  string
		sig   syscall.Signal
		count int
		// after the first intent record rather than the first container:
		// every create call is then still in flight.
		early bool
	}{
		{"SIGKILL", syscall.SIGKILL, 20, false},
		{"SIGINT", syscall.SIGINT, 8, false},
		{"SIGINT_before_any_container", syscall.SIGINT, 8, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			runID := inventory.NewRunID()
			left := containersOfRun(t, runID)
			t.Cleanup(func() { removeContainersOfRun(runID) })
			cmd := child(t, "hold", []string{"BROKER_DIRECTORY=" + dir, "RUN_ID=" + runID, "IMAGE=" + sshdImage, fmt.Sprint("COUNT=", tc.count)})
			require.NoError(t, cmd.Start())
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				waitWatcherGone(t, cmd.Process.Pid)
			})
			store := inventory.Open(filepath.Join(dir, "inventory.yaml"))
			waitCheckoutStarted(t, store, left, tc.early, nil)
			recs, err := store.Load(context.Background())
			require.NoError(t, err)
			creating := 0
			for _, r := range recs {
				if r.Broker.State == inventory.StateCreating {
					creating++
				}
			}
			require.NoError(t, cmd.Process.Signal(tc.sig))
			_ = cmd.Wait()
			t.Logf("%v with %d records, %d of them still being created, %d containers", tc.sig, len(recs), creating, left())
			waitEmpty(t, dir, runID, left)
			// Nothing appears later either: the process and its watcher
			// are gone, and with them any second look.
			waitWatcherGone(t, cmd.Process.Pid)
			assert.Zero(t, left(), "containers made after the hosts were checked in")
		})
	}
}

// childSignal checks out COUNT Local hosts with no reaper (only a signal
// handler could check them in), signal handling as SIGNALS says ("on",
// "off", or "closed": on, but the Broker closed before the signal), prints
// "ready" and waits for a signal.
func childSignal(t *testing.T) {
	mode := os.Getenv("SIGNALS")
	b, err := broker.New(broker.WithRunID(os.Getenv("RUN_ID")), broker.WithReaper(false), broker.WithSignalHandling(mode != "off"))
	require.NoError(t, err)
	n, _ := strconv.Atoi(os.Getenv("COUNT"))
	_, err = b.Checkout(context.Background(), broker.Request{Count: n})
	require.NoError(t, err)
	if mode == "closed" {
		require.NoError(t, b.Close())
	}
	fmt.Println("ready")
	time.Sleep(time.Hour)
}

// TestSignalHandling: a process holding hosts gets SIGTERM. With signal
// handling (the default) its hosts are checked in before it dies, and it
// dies of the signal; with WithSignalHandling(false), or once its Broker is
// closed, it dies of the signal at once, its hosts still recorded (the
// child has no reaper, so nothing else checks them in), until a new
// Broker's sweep checks them in.
func TestSignalHandling(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	for _, mode := range []string{"on", "off", "closed"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			runID := inventory.NewRunID()
			cmd := child(t, "signal", []string{"BROKER_DIRECTORY=" + dir, "RUN_ID=" + runID, "SIGNALS=" + mode, "COUNT=3"})
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			ready, eof := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(eof)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if sc.Text() == "ready" {
						close(ready)
					}
				}
			}()
			select {
			case <-ready:
			case <-eof:
				_ = cmd.Wait()
				t.Fatalf("the child ended before its hosts were ready:\n%s", stderr.String())
			}
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			<-eof
			_ = cmd.Wait()
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			require.True(t, ws.Signaled(), "the child ends as SIGTERM says: %v", cmd.ProcessState)
			assert.Equal(t, syscall.SIGTERM, ws.Signal())

			recs, err := inventory.Open(filepath.Join(dir, "inventory.yaml")).Load(t.Context())
			require.NoError(t, err)
			if mode == "on" {
				assert.Empty(t, recs, "the handler checked the hosts in before the process ended")
				assert.Zero(t, localDirs(dir)())
				logs, err := os.ReadFile(filepath.Join(dir, "logs", "broker.log"))
				require.NoError(t, err)
				assert.Regexp(t, `"signal: checking in this process's hosts" .*signal=terminated hosts=3`, string(logs))
				return
			}
			assert.Len(t, recs, 3, "no handler: the hosts are left as they were")
			b, err := broker.New(broker.WithDirectory(dir), broker.WithLogger(slog.New(slog.DiscardHandler)))
			require.NoError(t, err)
			t.Cleanup(func() { b.Close() })
			waitEmpty(t, dir, runID, localDirs(dir))
		})
	}
}

// TestCleanupStaleAfterWatcherKilled: the owner and its watcher are both
// SIGKILLed; "brokertest cleanup --stale" then checks every host in.
func TestCleanupStaleAfterWatcherKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	cli := buildCLI(t)
	for _, c := range orphanCases(t) {
		t.Run(c.name, func(t *testing.T) {
			if c.image != "" {
				requireImage(t, c.image)
			}
			dir := t.TempDir()
			runID := inventory.NewRunID()
			t.Cleanup(func() { removeContainersOfRun(runID) })
			orphanHosts(t, dir, runID, c.image, 5)
			left := c.left(dir, runID)

			cleanup := exec.Command(cli, "cleanup", "--stale")
			cleanup.Env = append(os.Environ(), "BROKER_DIRECTORY="+dir)
			out, err := cleanup.CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Equal(t, 5+1, strings.Count(string(out), "checked in"), "a line per host and the summary: %s", out)
			assert.Contains(t, string(out), "\nchecked in 5 hosts\n")
			waitEmpty(t, dir, runID, left)
		})
	}
}

// orphanCase is a provider whose hosts the reaper tests leave behind:
// left counts what remains of a run's hosts.
type orphanCase struct {
	name, image string
	left        func(dir, runID string) func() int
}

// orphanCases are the providers the reaper tests run against.
func orphanCases(t *testing.T) []orphanCase {
	return []orphanCase{
		{"Local", "", func(dir, _ string) func() int { return localDirs(dir) }},
		{"Container", sshdImage, func(_, runID string) func() int { return containersOfRun(t, runID) }},
	}
}

// orphanHosts starts a child that checks out count hosts, SIGKILLs its
// watcher, then the child, and checks that nothing reaped them. It returns
// the child's pid.
func orphanHosts(t *testing.T, dir, runID, image string, count int) int {
	t.Helper()
	cmd, _ := startHolder(t, dir, runID, image, count)
	watcher := watcherOf(t, cmd.Process.Pid)
	require.NoError(t, syscall.Kill(watcher, syscall.SIGKILL))
	waitExited(t, watcher)
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	recs, err := inventory.Open(filepath.Join(dir, "inventory.yaml")).Load(context.Background())
	require.NoError(t, err)
	require.Len(t, recs, count, "with its watcher dead, nothing reaped the run")
	return cmd.Process.Pid
}

// TestReaperNextRun: a child's watcher is SIGKILLed, then the child; a new
// Broker on the same directory (the next run) checks every host of the
// child in, in the background, with no command run by hand, and removes the
// child's lock file.
func TestReaperNextRun(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	for _, c := range orphanCases(t) {
		t.Run(c.name, func(t *testing.T) {
			if c.image != "" {
				requireImage(t, c.image)
			}
			dir := t.TempDir()
			runID := inventory.NewRunID()
			t.Cleanup(func() { removeContainersOfRun(runID) })
			pid := orphanHosts(t, dir, runID, c.image, 10)
			left := c.left(dir, runID)
			require.Equal(t, 10, left(), "the child's hosts outlive it")

			b, logs := newDebugBroker(t, dir)
			waitEmpty(t, dir, runID, left)
			waitLog(t, logs, "reaper sweep: done")
			require.NoError(t, b.Close())
			assert.Contains(t, logs.String(), "hosts=10")
			assert.Empty(t, ownerFiles(t, dir), "the dead owner's lock file is removed")
			t.Logf("child %d: %d hosts reaped by the next Broker", pid, 10)
		})
	}
}

// TestReaperNextRunSparesLiveWatcher: the child dies while its watcher
// lives (stopped, so that it has not reaped yet): a new Broker leaves the
// child's hosts to the watcher, which checks them in once it goes on.
func TestReaperNextRunSparesLiveWatcher(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	runID := inventory.NewRunID()
	cmd, _ := startHolder(t, dir, runID, "", 5)
	watcher := watcherOf(t, cmd.Process.Pid)
	files := ownerFiles(t, dir)
	require.Len(t, files, 1, "the child's lock file")
	deadline := time.Now().Add(waitBound)
	for !flockedBy(t, files[0], watcher) {
		require.True(t, time.Now().Before(deadline), "the watcher never took its lock")
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, syscall.Kill(watcher, syscall.SIGSTOP))
	t.Cleanup(func() { _ = syscall.Kill(watcher, syscall.SIGCONT) })
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()

	b, logs := newDebugBroker(t, dir)
	waitLog(t, logs, fmt.Sprintf(`its hosts are left to it" owner_pid=%d`, cmd.Process.Pid))
	require.NoError(t, b.Close())
	recs, err := inventory.Open(filepath.Join(dir, "inventory.yaml")).Load(context.Background())
	require.NoError(t, err)
	assert.Len(t, recs, 5, "the new Broker took none of the watcher's hosts")
	assert.Equal(t, 5, localDirs(dir)())
	assert.NotContains(t, logs.String(), "checked in")

	require.NoError(t, syscall.Kill(watcher, syscall.SIGCONT))
	waitEmpty(t, dir, runID, localDirs(dir))
}

// TestCloseStopsReaper: Close returns only once the background reaper has
// stopped (it no longer holds an owner's lock nor runs); what it did not
// check in, the next Broker does.
func TestCloseStopsReaper(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	runID := inventory.NewRunID()
	orphanHosts(t, dir, runID, "", 5)
	b, err := broker.New(broker.WithDirectory(dir), broker.WithLogger(slog.New(slog.DiscardHandler)))
	require.NoError(t, err)
	require.NoError(t, b.Close())
	for _, f := range ownerFiles(t, dir) {
		assert.False(t, flockedBy(t, f, os.Getpid()), "%s still locked by this process after Close", f)
	}
	buf := make([]byte, 1<<20)
	assert.False(t, strings.Contains(string(buf[:runtime.Stack(buf, true)]), "reaper.Sweep"), "a sweep still runs after Close")

	newDebugBroker(t, dir)
	waitEmpty(t, dir, runID, localDirs(dir))
}

// newDebugBroker opens a Broker on dir that logs, at debug level, into the
// buffer it returns; the log is printed if the test fails, and the Broker
// is closed at cleanup.
func newDebugBroker(t *testing.T, dir string) (*broker.Broker, *testenv.LogBuffer) {
	t.Helper()
	logs := &testenv.LogBuffer{}
	b, err := broker.New(broker.WithDirectory(dir), broker.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	require.NoError(t, err)
	t.Cleanup(func() {
		b.Close()
		if t.Failed() {
			t.Logf("the Broker's log:\n%s", logs.String())
		}
	})
	return b, logs
}

// waitLog waits up to waitBound for logs to hold want.
func waitLog(t *testing.T, logs *testenv.LogBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v, no %q in the log:\n%s", waitBound, want, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ownerFiles lists the owners' lock files of the broker directory dir.
func ownerFiles(t testing.TB, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, ".owners", "*.lock"))
	require.NoError(t, err)
	return files
}

// flockedBy reports whether process pid holds an flock on path, as
// /proc/locks says (without taking the lock, which would disturb it).
func flockedBy(t testing.TB, path string, pid int) bool {
	t.Helper()
	holders, err := flockHolders(path)
	require.NoError(t, err)
	return slices.Contains(holders, strconv.Itoa(pid))
}

// flockHolders returns the pids that /proc/locks says hold an flock on
// path (none when path is gone).
func flockHolders(path string) ([]string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nil, nil
	}
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil, err
	}
	var pids []string
	for line := range strings.Lines(string(data)) {
		// "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"
		f := strings.Fields(line)
		if len(f) >= 6 && f[1] == "FLOCK" && strings.HasSuffix(f[5], fmt.Sprintf(":%d", st.Ino)) {
			pids = append(pids, f[4])
		}
	}
	return pids, nil
}

// findWatcher returns the pid of the watcher process of owner pid, found
// by its environment, or 0.
func findWatcher(pid int) int {
	want := []byte(fmt.Sprintf("%s=%d:", "BROKER_REAPER_WATCH", pid))
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && bytes.Contains(env, want) {
			return p
		}
	}
	return 0
}

// watcherOf waits up to waitBound for the watcher process of owner pid.
func watcherOf(t testing.TB, pid int) int {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for time.Now().Before(deadline) {
		if p := findWatcher(pid); p != 0 {
			return p
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no watcher for pid %d", pid)
	return 0
}

// buildCLI builds cmd/brokertest once per test binary run.
var buildCLI = func() func(t *testing.T) string {
	var (
		once sync.Once
		path string
		err  error
		out  []byte
	)
	return func(t *testing.T) string {
		once.Do(func() {
			dir, derr := os.MkdirTemp("", "brokertest-cli-")
			if derr != nil {
				err = derr
				return
			}
			path = filepath.Join(dir, "brokertest")
			out, err = exec.Command("go", "build", "-o", path, "./cmd/brokertest").CombinedOutput()
		})
		require.NoError(t, err, "build cmd/brokertest: %s", out)
		return path
	}
}()

func removeContainersOfRun(runID string) {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=io.hostbroker.run="+runID).Output()
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		_ = exec.Command("docker", append([]string{"rm", "-fv"}, ids...)...).Run()
	}
}

// childLease holds 4 hosts of a keeping pool at once, prints their ids, and
// gives them back (kept free for the next run).
func childLease(t *testing.T) {
	b, err := broker.New(broker.WithReaper(false))
	require.NoError(t, err)
	ctx := context.Background()
	p, err := b.NewPool(ctx, broker.Request{}, 4, broker.PoolOptions{ReuseFor: time.Minute})
	require.NoError(t, err)
	var hosts []*hostkit.Host
	for range 4 {
		h, err := p.Acquire(ctx)
		require.NoError(t, err)
		res, err := h.Execute(ctx, "echo ok")
		require.NoError(t, err)
		require.Equal(t, "ok\n", res.Stdout)
		hosts = append(hosts, h)
	}
	var ids []string
	for _, h := range hosts {
		ids = append(ids, b.Record(h).ID())
	}
	fmt.Println("leased", strings.Join(ids, " "))
	// Hold them until the sibling has had its chance, so that no host
	// can be leased twice by turns.
	time.Sleep(500 * time.Millisecond)
	for _, h := range hosts {
		require.NoError(t, p.Release(ctx, h, true))
	}
	require.NoError(t, p.Close(ctx))
}

// TestPoolReuseAcrossProcesses: this process keeps 4 Local hosts free (it
// goes on serving them); two other processes, started at once, each lease 4
// hosts from a keeping pool. Each kept host is leased by exactly one of them;
// the rest are fresh checkouts.
func TestPoolReuseAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	ctx := context.Background()
	b, err := broker.New(broker.WithDirectory(dir), broker.WithReaper(false))
	require.NoError(t, err)
	defer b.Close()
	p, err := b.NewPool(ctx, broker.Request{}, 4, broker.PoolOptions{Eager: true, ReuseFor: time.Minute})
	require.NoError(t, err)
	require.NoError(t, p.Close(ctx))
	kept := map[string]bool{}
	recs, err := b.Inventory(ctx)
	require.NoError(t, err)
	for _, r := range recs {
		require.Equal(t, inventory.StateFree, r.Broker.State)
		kept[r.ID()] = true
	}
	require.Len(t, kept, 4)
	t.Cleanup(func() {
		recs, _ := b.Inventory(context.Background())
		_ = b.CheckinRecords(context.Background(), recs...)
	})

	leases := map[string]int{}
	for _, id := range childIDs(t, 2, "lease", "leased", "BROKER_DIRECTORY="+dir) {
		leases[id]++
	}
	reused := 0
	for id, n := range leases {
		assert.Equal(t, 1, n, "host %s leased by %d processes", id, n)
		if kept[id] {
			reused++
		}
	}
	assert.Len(t, leases, 8, "two processes, 4 hosts each")
	assert.Equal(t, 4, reused, "each kept host is leased once")
}

// childIDs runs n children in role at once and returns the ids they print
// on lines "<prefix> id id …", all together.
func childIDs(t *testing.T, n int, role, prefix string, env ...string) []string {
	var (
		mu  sync.Mutex
		ids []string
		wg  sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			out, err := child(t, role, env).CombinedOutput()
			if !assert.NoError(t, err, "%s", out) {
				return
			}
			for line := range strings.Lines(string(out)) {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix+" "); ok {
					mu.Lock()
					ids = append(ids, strings.Fields(rest)...)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return ids
}
