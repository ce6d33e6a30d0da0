package inventory_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/internal/testenv"
	"github.com/hostbroker/broker/inventory"
)

// childEnv selects the role of a child process (TestChildProcess).
const childEnv = "INVENTORY_TEST_CHILD"

// TestChildProcess is the body of the child processes the multi-process
// tests start (the test binary run again with childEnv set).
func TestChildProcess(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		t.Skip("a child process of the multi-process tests")
	}
	s := inventory.Open(os.Getenv("INVENTORY_PATH"))
	fail := func(err error) {
		fmt.Println("error", err)
		os.Exit(1)
	}
	switch mode {
	case "put": // one Put
		if err := s.Put(context.Background(), testRecord(os.Getenv("INVENTORY_NAME"))); err != nil {
			fail(err)
		}
	case "hold": // hold the inventory lock until killed
		_ = s.Update(context.Background(), func(recs []*inventory.Record) ([]*inventory.Record, error) {
			fmt.Println("held")
			time.Sleep(time.Hour)
			return recs, nil
		})
	case "pyhold": // hold the Python broker's lock until killed
		inventory.SetBeforeRename(s, func() {
			fmt.Println("held")
			time.Sleep(time.Hour)
		})
		_ = s.Put(context.Background(), testRecord("pyhold"))
	case "writer": // Put and Remove until the stop file exists; print what is kept
		name, stop := os.Getenv("INVENTORY_NAME"), os.Getenv("INVENTORY_STOP")
		for i := 0; ; i++ {
			r := testRecord(fmt.Sprintf("%s-%d", name, i))
			if err := s.Put(context.Background(), r); err != nil {
				fail(err)
			}
			if i == 0 {
				fmt.Println("started")
			}
			if i%5 != 0 {
				if err := s.Remove(context.Background(), r); err != nil {
					fail(err)
				}
			} else {
				fmt.Println("kept", r.Name)
			}
			if _, err := os.Stat(stop); err == nil {
				fmt.Println("writes", i+1)
				break
			}
		}
	default:
		fail(fmt.Errorf("unknown child role %q", mode))
	}
}

func testRecord(name string) *inventory.Record {
	return &inventory.Record{Hostname: name + ".example.test", Name: name, Broker: &inventory.Meta{ID: name}}
}

// child starts the test binary as a child process in role mode. Its
// stdout is returned as a line scanner; it is killed at the test's end.
func child(t *testing.T, mode string, env ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=" + mode}, env...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, bufio.NewScanner(out)
}

// expectLine reads lines until one starts with prefix.
func expectLine(t *testing.T, sc *bufio.Scanner, prefix string) string {
	t.Helper()
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			return sc.Text()
		}
		t.Log("child:", sc.Text())
	}
	t.Fatalf("child ended before printing %q", prefix)
	return ""
}

// waitFor waits until cond holds. The bound only keeps a broken test from
// hanging: nothing here asserts how fast anything is.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after 2 minutes", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tickets counts the tickets in line in the lock's queue.
func tickets(t *testing.T, s *inventory.Store) int {
	t.Helper()
	ents, err := os.ReadDir(inventory.QueueDir(s))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	require.NoError(t, err)
	n := 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "tmp-") {
			n++
		}
	}
	return n
}

// holdLock holds the inventory lock through s (an Update whose function
// waits) until the returned release is called; release waits for the
// Update to end.
func holdLock(t *testing.T, s *inventory.Store) (release func()) {
	t.Helper()
	held, let := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Update(context.Background(), func(recs []*inventory.Record) ([]*inventory.Record, error) {
			close(held)
			<-let
			return recs, nil
		})
	}()
	<-held
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(let)
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(release)
	return release
}

// Processes get the lock in the order they asked for it: each child is
// started once the one before is in line, and their records land in that
// order.
func TestLockFIFO(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts child processes")
	}
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	holder := inventory.Open(path)
	release := holdLock(t, holder)
	const k = 6
	var cmds []*exec.Cmd
	for i := range k {
		cmd, _ := child(t, "put", "INVENTORY_PATH="+path, fmt.Sprint("INVENTORY_NAME=child-", i))
		cmds = append(cmds, cmd)
		waitFor(t, fmt.Sprintf("child %d in line", i), func() bool { return tickets(t, holder) == i+2 })
	}
	release()
	for i, cmd := range cmds {
		require.NoError(t, cmd.Wait(), "child %d", i)
	}
	recs, err := holder.Load(context.Background())
	require.NoError(t, err)
	var got []string
	for _, r := range recs {
		got = append(got, r.Name)
	}
	var want []string
	for i := range k {
		want = append(want, fmt.Sprint("child-", i))
	}
	assert.Equal(t, want, got, "the lock was taken in arrival order")
	assert.Zero(t, tickets(t, holder), "no ticket left in line")
}

// While another process holds the lock, a waiter with a deadline returns
// an error saying what it waited for, having written nothing and leaving
// the line; a holder killed by SIGKILL does not block the next waiter,
// and its ticket is cleared.
func TestLockHolderKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts child processes")
	}
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	cmd, out := child(t, "hold", "INVENTORY_PATH="+path)
	expectLine(t, out, "held")
	s := inventory.Open(path)

	ctx, cancel := contextWithTimeout(200 * time.Millisecond)
	defer cancel()
	err := s.Put(ctx, testRecord("late"))
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "wait for lock")
	assert.Contains(t, err.Error(), path+".flock")
	waitFor(t, "the waiter that gave up to leave the line", func() bool { return tickets(t, s) == 1 })

	errc := make(chan error, 1)
	go func() {
		ctx, cancel := contextWithTimeout(5 * time.Minute)
		defer cancel()
		errc <- s.Put(ctx, testRecord("next"))
	}()
	waitFor(t, "the next waiter in line", func() bool { return tickets(t, s) == 2 })
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.NoError(t, <-errc)
	recs, err := s.Load(context.Background())
	require.NoError(t, err)
	require.Len(t, recs, 1, "the waiter that gave up wrote nothing")
	assert.Equal(t, "next", recs[0].Name)
	assert.Zero(t, tickets(t, s), "the dead holder's ticket is cleared")
}

// Twenty Puts that arrive while the lock is busy share one write, and
// each is there.
func TestGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	release := holdLock(t, inventory.Open(path))
	s := inventory.Open(path)
	const n = 20
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- s.Put(context.Background(), testRecord(fmt.Sprint("r", i))) }()
	}
	waitFor(t, "20 pending puts", func() bool { return inventory.Pending(s) == n })
	release()
	for range n {
		require.NoError(t, <-errs)
	}
	assert.EqualValues(t, 1, inventory.Writes(s), "one write for the 20 puts")
	recs, err := s.Load(context.Background())
	require.NoError(t, err)
	assert.Len(t, recs, n)
}

// In one batch, an update that fails (having changed the records it was
// given) is left out; the others, before and after it, are applied in
// arrival order, in one write.
func TestBatchFailureLeavesOthers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	s := inventory.Open(path)
	require.NoError(t, s.Put(context.Background(), testRecord("a")))
	release := holdLock(t, inventory.Open(path))
	boom := errors.New("boom")
	type result struct {
		i   int
		err error
	}
	results := make(chan result, 4)
	ops := []func() error{
		func() error { return s.Put(context.Background(), testRecord("b")) },
		func() error {
			return s.Update(context.Background(), func(recs []*inventory.Record) ([]*inventory.Record, error) {
				for _, r := range recs {
					r.Hostname = "BAD"
				}
				return nil, boom
			})
		},
		func() error {
			return s.Update(context.Background(), func(recs []*inventory.Record) ([]*inventory.Record, error) {
				for _, r := range recs {
					if r.Name == "a" {
						r.Extra = map[string]any{"seen": len(recs)}
					}
				}
				return recs, nil
			})
		},
		func() error {
			b2 := testRecord("b")
			b2.IP = "10.0.0.2"
			return s.Put(context.Background(), b2)
		},
	}
	for i, op := range ops {
		go func() { results <- result{i, op()} }()
		waitFor(t, fmt.Sprintf("op %d pending", i), func() bool { return inventory.Pending(s) == i+1 })
	}
	writes := inventory.Writes(s)
	release()
	for range ops {
		r := <-results
		if r.i == 1 {
			assert.ErrorIs(t, r.err, boom)
		} else {
			assert.NoError(t, r.err, "op %d", r.i)
		}
	}
	assert.Equal(t, writes+1, inventory.Writes(s), "one write for the batch")
	recs, err := s.Load(context.Background())
	require.NoError(t, err)
	require.Len(t, recs, 2)
	assert.Equal(t, "a.example.test", recs[0].Hostname, "the failed update changed nothing")
	assert.Equal(t, 2, recs[0].Extra["seen"], "the update after it saw the put before it")
	assert.Equal(t, "b.example.test", recs[1].Hostname)
	assert.Equal(t, "10.0.0.2", recs[1].IP, "the later put of b won")
}

// The store keeps its own copies: records a caller changes after Put, or
// keeps from an Update, do not change what is written later. A file this
// Store wrote is not parsed again; one another writer changed is.
func TestStoreKeepsItsOwnCopies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	s := inventory.Open(path)
	r := testRecord("a")
	r.Broker.Data = map[string]any{"progress": []any{"created"}}
	require.NoError(t, s.Put(context.Background(), r))
	r.Name = "changed"
	r.Broker.Data["progress"] = append(r.Broker.Data["progress"].([]any), "started")
	var kept []*inventory.Record
	require.NoError(t, s.Update(context.Background(), func(recs []*inventory.Record) ([]*inventory.Record, error) {
		kept = recs
		return append(recs, testRecord("b")), nil
	}))
	kept[0].Hostname = "changed"
	require.NoError(t, s.Put(context.Background(), testRecord("c")))
	parses := inventory.Parses(s)
	require.NoError(t, s.Remove(context.Background(), testRecord("c")))
	assert.Equal(t, parses, inventory.Parses(s), "a file this Store wrote is not parsed again")

	recs, err := s.Load(context.Background())
	require.NoError(t, err)
	require.Len(t, recs, 2)
	assert.Equal(t, "a", recs[0].Name)
	assert.Equal(t, "a.example.test", recs[0].Hostname)
	assert.Equal(t, []any{"created"}, recs[0].Broker.Data["progress"])

	// Another writer: its record is seen.
	require.NoError(t, inventory.Open(path).Put(context.Background(), testRecord("d")))
	require.NoError(t, s.Put(context.Background(), testRecord("e")))
	assert.Equal(t, parses+1, inventory.Parses(s))
	recs, err = s.Load(context.Background())
	require.NoError(t, err)
	assert.Len(t, recs, 4)
}

// Record.Clone copies deeply: nothing the copy holds changes with the
// original.
func TestRecordClone(t *testing.T) {
	until := time.Now()
	keep := until
	r := &inventory.Record{
		Hostname: "h", Args: map[string]any{"list": []any{map[string]any{"k": "v"}}, "strs": []string{"a"}},
		Facts: map[string]any{"n": 1}, Extra: map[string]any{"m": map[any]any{1: []any{2}}},
		Broker: &inventory.Meta{ID: "x", KeepUntil: &keep, SSH: &inventory.SSH{Port: 22}, Data: map[string]any{"d": []any{1}}},
	}
	c := r.Clone()
	assert.Equal(t, r, c)
	r.Args["list"].([]any)[0].(map[string]any)["k"] = "changed"
	r.Args["strs"].([]string)[0] = "changed"
	r.Extra["m"].(map[any]any)[1].([]any)[0] = 3
	r.Broker.SSH.Port = 2222
	*r.Broker.KeepUntil = until.Add(time.Hour)
	r.Broker.Data["d"].([]any)[0] = 2
	r.Broker.ID = "y"
	assert.Equal(t, "v", c.Args["list"].([]any)[0].(map[string]any)["k"])
	assert.Equal(t, "a", c.Args["strs"].([]string)[0])
	assert.Equal(t, 2, c.Extra["m"].(map[any]any)[1].([]any)[0])
	assert.Equal(t, 22, c.Broker.SSH.Port)
	assert.Equal(t, until, *c.Broker.KeepUntil)
	assert.Equal(t, 1, c.Broker.Data["d"].([]any)[0])
	assert.Equal(t, "x", c.Broker.ID)
	assert.Nil(t, (*inventory.Record)(nil).Clone())
}

// A Go process killed while holding the Python broker's lock leaves it
// marked with its pid: ClearAbandonedLock removes it (and the temp files
// killed processes leave), but never a live process's lock or the Python
// broker's.
func TestClearAbandonedLock(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts child processes")
	}
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	s := inventory.Open(path)
	lock := path + ".lock"

	cmd, out := child(t, "pyhold", "INVENTORY_PATH="+path)
	expectLine(t, out, "held")
	mark, err := os.ReadFile(lock)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(mark), fmt.Sprintf("brokertest %d ", cmd.Process.Pid)), "%q", mark)
	removed, err := s.ClearAbandonedLock(context.Background())
	require.NoError(t, err)
	assert.False(t, removed, "the holder lives")
	assert.FileExists(t, lock)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	require.NoError(t, os.WriteFile(lock+".new-123", []byte("brokertest\n"), 0o600))
	removed, err = s.ClearAbandonedLock(context.Background())
	require.NoError(t, err)
	assert.True(t, removed, "the holder is dead")
	assert.NoFileExists(t, lock)
	assert.NoFileExists(t, lock+".new-123")

	// A live mark (this process's) stays; so does the Python broker's
	// empty lock; an older version's bare mark with no Go writer about
	// goes.
	require.NoError(t, os.WriteFile(lock, []byte(inventory.OurMark()), 0o600))
	removed, err = s.ClearAbandonedLock(context.Background())
	require.NoError(t, err)
	assert.False(t, removed)
	// The same process with another start time is a later process that
	// reused the pid: the mark's owner is dead.
	f := strings.Fields(inventory.OurMark())
	started, err := strconv.ParseUint(f[2], 10, 64)
	require.NoError(t, err)
	f[2] = strconv.FormatUint(started+1, 10)
	require.NoError(t, os.WriteFile(lock, []byte(strings.Join(f, " ")+"\n"), 0o600))
	removed, err = s.ClearAbandonedLock(context.Background())
	require.NoError(t, err)
	assert.True(t, removed)

	require.NoError(t, os.WriteFile(lock, nil, 0o600))
	removed, err = s.ClearAbandonedLock(context.Background())
	require.NoError(t, err)
	assert.False(t, removed, "the Python broker's lock is left alone")
	require.NoError(t, os.WriteFile(lock, []byte("brokertest\n"), 0o600))
	removed, err = s.ClearAbandonedLock(context.Background())
	require.NoError(t, err)
	assert.True(t, removed)
}

// A Python broker that died in the middle of its in-place rewrite left a
// short list and its lock: after taking the lock over, the records of the
// last version written here that vanished are put back and named, and
// the file as found is kept. One that does not parse is refused, naming
// where the previous version is, and left as it is.
func TestTornTakeoverRestores(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "inventory.yaml")
	var logs testenv.LogBuffer
	s := inventory.Open(path, inventory.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	var five []*inventory.Record
	for i := range 5 {
		five = append(five, testRecord(fmt.Sprint("r", i)))
	}
	require.NoError(t, s.Put(context.Background(), five...))

	torn, err := inventory.Marshal(five[:3])
	require.NoError(t, err)
	dieMidRewrite := func(content []byte) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0) // in place
		require.NoError(t, err)
		_, err = f.Write(content)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		require.NoError(t, os.WriteFile(path+".lock", nil, 0o644))
		old := time.Now().Add(-time.Minute)
		require.NoError(t, os.Chtimes(path+".lock", old, old))
	}
	dieMidRewrite(torn)
	require.NoError(t, s.Put(context.Background(), testRecord("r5")))
	recs, err := s.Load(context.Background())
	require.NoError(t, err)
	var names []string
	for _, r := range recs {
		names = append(names, r.Name)
	}
	assert.ElementsMatch(t, []string{"r0", "r1", "r2", "r3", "r4", "r5"}, names)
	assert.Contains(t, logs.String(), "put back")
	assert.Contains(t, logs.String(), "r3 (r3)")
	assert.Contains(t, logs.String(), "r4 (r4)")
	copies, err := filepath.Glob(path + ".torn-*")
	require.NoError(t, err)
	require.Len(t, copies, 1)
	kept, err := os.ReadFile(copies[0])
	require.NoError(t, err)
	assert.Equal(t, string(torn), string(kept), "the file as found is kept")
	assert.NoFileExists(t, path+".lock")

	// Cut in the middle of a record: it does not parse.
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	bad := append(good[:len(good)/2:len(good)/2], "\n  - [unclosed\n"...)
	dieMidRewrite(bad)
	err = s.Put(context.Background(), testRecord("r6"))
	require.Error(t, err)
	assert.ErrorIs(t, err, inventory.ErrCorrupt)
	assert.Contains(t, err.Error(), inventory.PrevPath(s))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, string(bad), string(got), "never overwritten")
	prev, err := os.ReadFile(inventory.PrevPath(s))
	require.NoError(t, err)
	assert.Equal(t, string(good), string(prev), "the previous version is what was last written")
}

// pythonBroker is the Python broker's inventory writing as it does it:
// FileLock (open(lock, "x"); on FileExistsError sleep 1 s; give up after
// 10 s), then read the list, add a host and rewrite the file in place.
// With PyYAML, records are loaded and dumped (timestamps kept as text, as
// a round-trip loader does); without it, the host is appended as a JSON
// line. It prints "ok N waits W" (W: how many times it found the lock
// taken so far) or "timeout N" for each attempt.
const pythonBroker = `
import json, os, sys, time
path, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = path + ".lock"
try:
    import yaml
    class L(yaml.SafeLoader): pass
    class D(yaml.SafeDumper): pass
    for c in (L, D):
        c.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:timestamp"]
                                     for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
except ImportError:
    yaml = None

def acquire():
    global waits
    start = time.time()
    while True:
        try:
            open(lock, "x").close()
            return True
        except FileExistsError:
            if time.time() - start >= 10:
                return False
            waits += 1
            time.sleep(1)

waits = 0

for i in range(n):
    if not acquire():
        print("timeout", i, flush=True)
        continue
    try:
        text = open(path).read() if os.path.exists(path) else ""
        host = {"hostname": "%s-%d.example.test" % (tag, i), "name": "%s-%d" % (tag, i), "_broker_args": {}}
        if yaml:
            recs = yaml.load(text, Loader=L) or []
            recs.append(host)
            out = yaml.dump(recs, Dumper=D, default_flow_style=False, sort_keys=False)
        else:
            body = "" if text.strip() in ("", "[]") else text
            out = body + "- " + json.dumps(host) + "\n"
        with open(path, "w") as f:
            f.write(out)
    finally:
        os.remove(lock)
    print("ok", i, "waits", waits, flush=True)
    time.sleep(0.05)
`

// A Python broker beside 8 Go writer processes: every one of its attempts
// gets the lock, and nothing of either side is lost.
func TestPythonBrokerBesideGoWriters(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts child processes")
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/python3"); serr == nil {
			python, err = "/usr/bin/python3", nil
		}
	}
	testenv.Require(t, "python", err)
	dir := t.TempDir()
	path := filepath.Join(dir, "inventory.yaml")
	stop := filepath.Join(dir, "stop")
	script := filepath.Join(dir, "broker.py")
	require.NoError(t, os.WriteFile(script, []byte(pythonBroker), 0o600))

	const writers, attempts = 8, 10
	type writer struct {
		cmd *exec.Cmd
		out *bufio.Scanner
	}
	var ws []writer
	for i := range writers {
		cmd, out := child(t, "writer", "INVENTORY_PATH="+path, fmt.Sprint("INVENTORY_NAME=go", i), "INVENTORY_STOP="+stop)
		ws = append(ws, writer{cmd, out})
	}
	want := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var writes int
	for _, w := range ws {
		expectLine(t, w.out, "started")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w.out.Scan() {
				f := strings.Fields(w.out.Text())
				mu.Lock()
				switch {
				case len(f) == 2 && f[0] == "kept":
					want[f[1]] = true
				case len(f) == 2 && f[0] == "writes":
					n, _ := strconv.Atoi(f[1])
					writes += n
				}
				mu.Unlock()
			}
		}()
	}

	py := exec.Command(python, script, path, strconv.Itoa(attempts), "py")
	py.Stderr = os.Stderr
	pyOut, err := py.Output()
	require.NoError(t, os.WriteFile(stop, nil, 0o600))
	require.NoError(t, err, "%s", pyOut)
	for _, w := range ws {
		require.NoError(t, w.cmd.Wait())
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(string(pyOut)), "\n")
	ok := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "ok ") {
			ok++
		}
	}
	assert.Equal(t, attempts, ok, "every Python attempt got the lock: %q", lines)
	for i := range attempts {
		want[fmt.Sprint("py-", i)] = true
	}
	recs, err := inventory.Open(path).Load(context.Background())
	require.NoError(t, err)
	got := map[string]bool{}
	for _, r := range recs {
		got[r.Name] = true
	}
	assert.Equal(t, want, got, "the inventory holds what both sides kept, nothing else")
	t.Logf("%d Go Puts (and 4 Removes of every 5) beside %d Python writes; the Python broker: %s", writes, ok, lines[len(lines)-1])
}

// A wait for the lock over a second is logged at debug level, with how
// many were in line ahead.
func TestLongLockWaitLogged(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: waits over a second")
	}
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	release := holdLock(t, inventory.Open(path))
	var logs testenv.LogBuffer
	s := inventory.Open(path, inventory.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	errc := make(chan error, 1)
	go func() { errc <- s.Put(context.Background(), testRecord("a")) }()
	waitFor(t, "the put in line", func() bool { return tickets(t, s) == 2 })
	time.Sleep(1100 * time.Millisecond) // the wait is at least this long
	release()
	require.NoError(t, <-errc)
	assert.Contains(t, logs.String(), "level=DEBUG")
	assert.Contains(t, logs.String(), "waited for the lock")
	assert.Contains(t, logs.String(), "queue_depth=1")
}

// Files that killed processes leave (a ticket not yet in line, a temp
// inventory, a marked file for the Python lock) are removed by the next
// writer.
func TestLeftoversRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "inventory.yaml")
	s := inventory.Open(path)
	require.NoError(t, s.Put(context.Background(), testRecord("a")))
	old := time.Now().Add(-time.Minute)
	left := []string{
		filepath.Join(inventory.QueueDir(s), "tmp-0123456789abcdef"),
		filepath.Join(dir, ".inventory.yaml.tmp-123"),
		path + ".lock.new-123",
	}
	for _, f := range left {
		require.NoError(t, os.WriteFile(f, []byte("x"), 0o600))
		require.NoError(t, os.Chtimes(f, old, old))
	}
	require.NoError(t, s.Put(context.Background(), testRecord("b")))
	for _, f := range left {
		assert.NoFileExists(t, f)
	}
}
