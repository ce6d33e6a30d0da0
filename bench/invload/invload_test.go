package invload

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hostbroker/broker/inventory"
)

// TestMain makes the test binary a child as well, so that the harness's
// process groups can be run here on it.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == ChildArg {
		os.Exit(Child(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// Children still running at the timeout are all killed, promptly.
func TestGroupWaitKillsAtTimeout(t *testing.T) {
	g, err := startGroup(t.Context(), os.Args[0], [][]string{{"spin"}, {"spin"}, {"spin"}})
	if err != nil {
		t.Fatal(err)
	}
	g.start = time.Now()
	start := time.Now()
	_, killed, errs := g.wait(300 * time.Millisecond)
	if killed != 3 || len(errs) != 3 {
		t.Errorf("killed %d, errors %v; want all 3", killed, errs)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("wait took %s", d)
	}
}

// Writers released together report every write, and the file holds each.
func TestWritersGroup(t *testing.T) {
	inv := filepath.Join(t.TempDir(), "inventory.yaml")
	var argv [][]string
	for i := range 3 {
		argv = append(argv, []string{"writer", "-path", inv, "-n", "5", "-prefix", "w" + string(rune('a'+i))})
	}
	g, err := startGroup(t.Context(), os.Args[0], argv)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.release(time.Minute); err != nil {
		g.kill()
		t.Fatal(err)
	}
	if _, killed, errs := g.wait(time.Minute); killed != 0 || len(errs) != 0 {
		t.Fatalf("killed %d, errors %v", killed, errs)
	}
	want := map[string]bool{}
	for _, ops := range g.ops() {
		for _, o := range ops {
			if o.Op != "put" || o.Err != "" {
				t.Fatalf("op %+v", o)
			}
			want[o.Host] = true
		}
	}
	if len(want) != 15 {
		t.Fatalf("%d distinct puts, want 15", len(want))
	}
	var errs []string
	if n := lost(t.Context(), os.Args[0], inv, want, nil, &errs); n != 0 {
		t.Errorf("lost %d %v", n, errs)
	}
	delete(want, "not-there")
	want["not-there"] = true
	if n := lost(t.Context(), os.Args[0], inv, want, nil, &errs); n != 1 {
		t.Errorf("a missing record counted as %d lost", n)
	}
}

func TestQuantile(t *testing.T) {
	var v []float64
	for i := 100; i >= 1; i-- {
		v = append(v, float64(i))
	}
	if got := p99(v); got != 99 {
		t.Errorf("p99 of 1..100 = %v, want 99", got)
	}
	if got := median(v); got != 50.5 {
		t.Errorf("median of 1..100 = %v, want 50.5", got)
	}
	if got := p99([]float64{3}); got != 3 {
		t.Errorf("p99 of one value = %v", got)
	}
	if got := p99(nil); got != 0 {
		t.Errorf("p99 of none = %v", got)
	}
	if v[0] != 100 {
		t.Error("quantile sorted its argument")
	}
}

func TestReplaceSection(t *testing.T) {
	doc := "# B\n\nbefore\n" + BeginMarker + "\nold\n" + EndMarker + "\nafter\n"
	got, err := ReplaceSection(doc, "new\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := "# B\n\nbefore\n" + BeginMarker + "\nnew\n" + EndMarker + "\nafter\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	got, err = ReplaceSection("# B", "new\n")
	if err != nil || !strings.HasSuffix(got, BeginMarker+"\nnew\n"+EndMarker+"\n") || !strings.HasPrefix(got, "# B\n") {
		t.Errorf("appended: %q, %v", got, err)
	}
	if _, err := ReplaceSection(EndMarker+BeginMarker, "x"); err == nil {
		t.Error("markers out of order were accepted")
	}
}

// The generated files parse with the inventory package and each filter
// matches what the driver expects of it.
func TestFilesMatchFilters(t *testing.T) {
	const n = 1200
	dir := t.TempDir()
	for _, f := range loadFilters {
		path := filepath.Join(dir, f.File+".yaml")
		if _, err := os.Stat(path); err != nil {
			if err := writeFile(f.File, path, n); err != nil {
				t.Fatal(err)
			}
		}
		recs, err := loadFile(path)
		if err != nil {
			t.Fatalf("%s: %v", f.File, err)
		}
		if len(recs) != n {
			t.Fatalf("%s: %d records, want %d", f.File, len(recs), n)
		}
		got, err := applyFilter(f.Filter, recs)
		if err != nil {
			t.Fatal(err)
		}
		if want := f.want(n); got != want || want == 0 {
			t.Errorf("%s: %s matched %d, want %d (> 0)", f.File, f.Filter, got, want)
		}
	}
}

func TestMarkdownVerdicts(t *testing.T) {
	fast := make([]float64, 100)
	for i := range fast {
		fast[i] = 0.05
	}
	slow := append([]float64{4}, fast[1:]...)
	r := &Results{
		Sizes:  Sizes{Procs: []int{16}, Pairs: 30, PairRounds: 1, BusyLoops: 2},
		Builds: []Build{{Label: "baseline x"}, {Label: "current y"}},
		Pairs: []PairsRun{
			{Build: "baseline x", Procs: 16, Checkout: slow, Checkin: slow, Failed: 1, Errors: []string{"checkin after 60.0 s: wait for lock: context deadline exceeded"}},
			{Build: "current y", Procs: 16, Checkout: fast, Checkin: fast},
		},
	}
	md := r.Markdown("cmd")
	base, cur := line(md, "| baseline x |"), line(md, "| current y |")
	if !strings.Contains(base, "**missed** (slowest, failures)") {
		t.Errorf("baseline row: %s", base)
	}
	if !strings.Contains(cur, "**met**") || !strings.Contains(cur, "| 200 |") {
		t.Errorf("current row: %s", cur)
	}
	if !strings.Contains(md, "context deadline exceeded") {
		t.Error("the baseline's error is not shown")
	}
}

func line(s, prefix string) string {
	for l := range strings.Lines(s) {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// The Python side keeps to the Python broker's lock: it waits while the
// lock file exists, takes it, and leaves a file the Go side reads with
// every record in it.
func TestPythonBrokerProtocol(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "pybroker.py")
	if err := os.WriteFile(script, pyBroker, 0o644); err != nil {
		t.Fatal(err)
	}
	inv := filepath.Join(dir, "inventory.yaml")
	goRec := WriterRecord("go-1")
	if err := put(inventory.Open(inv), goRec); err != nil {
		t.Fatal(err)
	}
	lock := inv + ".lock"
	if err := os.WriteFile(lock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(1500 * time.Millisecond)
		os.Remove(lock)
	}()
	out, err := exec.Command(py, script, "--inventory", inv, "--attempts", "2", "--gap", "0").Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var waits []float64
	for l := range strings.Lines(string(out)) {
		var a struct {
			OK   bool
			Wait float64
			Err  string
		}
		if err := json.Unmarshal([]byte(l), &a); err != nil || !a.OK {
			t.Fatalf("attempt %q: %v", l, err)
		}
		waits = append(waits, a.Wait)
	}
	if len(waits) != 2 || waits[0] < 1 {
		t.Errorf("waits %v: the first attempt should have waited for the lock file", waits)
	}
	if _, err := os.Stat(lock); err == nil {
		t.Error("the lock file was left")
	}
	recs, err := loadFile(inv)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range recs {
		names = append(names, r.Hostname)
	}
	if strings.Join(names, " ") != "go-1.example.test py-0.example.test py-1.example.test" {
		t.Errorf("records %v", names)
	}
	if recs[0].ID() != goRec.ID() || recs[0].Broker.SSH.Port != 32768 || recs[0].Broker.CheckedOut.IsZero() {
		t.Errorf("the Go record came back changed: %+v", recs[0].Broker)
	}
}
