package invload

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// PairsRun is one run of case 1 by one build.
type PairsRun struct {
	Build    string
	Procs    int
	Round    int
	Wall     float64   // s, from go to the last exit
	Checkout []float64 // s, every checkout that returned
	Checkin  []float64 // s, every check-in that returned
	Failed   int       // operations that returned an error
	Missing  int       // operations never done (a child killed or dead)
	Errors   []string  // the first few errors
	Killed   int       // children killed at the timeout
	Left     int       // records in the inventory at the end (-1: unreadable)
	LockLeft bool      // the Python broker's lock file left at the end
}

// pairs is case 1: processes × checkout+check-in pairs on the Local
// provider, one broker directory, CPUs loaded by busy loops.
func (d *driver) pairs(ctx context.Context) error {
	stop, err := spinners(d.sizes.BusyLoops)
	if err != nil {
		return err
	}
	defer stop()
	for r := range d.sizes.PairRounds {
		for k, procs := range d.sizes.Procs {
			for _, b := range d.order(r, k) {
				run, err := d.pairsRun(ctx, b, procs, r)
				if err != nil {
					return err
				}
				d.res.Pairs = append(d.res.Pairs, run)
				all := append(append([]float64(nil), run.Checkout...), run.Checkin...)
				d.Log.Printf("checkout: %-28s %2d procs: median %.3f s, p99 %.3f s, max %.3f s, failed %d, missing %d, left %d, wall %.0f s",
					b.Label, procs, median(all), p99(all), maxOf(all), run.Failed, run.Missing, run.Left, run.Wall)
			}
		}
	}
	return nil
}

func (d *driver) pairsRun(ctx context.Context, b Build, procs, round int) (PairsRun, error) {
	run := PairsRun{Build: b.Label, Procs: procs, Round: round}
	dir, err := os.MkdirTemp(d.tmp, "pairs-")
	if err != nil {
		return run, err
	}
	defer os.RemoveAll(dir)
	argv := make([][]string, procs)
	for i := range argv {
		argv[i] = []string{"pairs", "-dir", dir, "-n", strconv.Itoa(d.sizes.Pairs)}
	}
	g, err := startReleased(ctx, b.Bin, argv)
	if err != nil {
		return run, err
	}
	wall, killed, errs := g.wait(d.sizes.PairTimeout)
	run.Wall, run.Killed = wall.Seconds(), killed
	run.Errors = firstN(errs, 3)
	done := 0
	for _, ops := range g.ops() {
		for _, o := range ops {
			done++
			switch {
			case o.Err != "":
				run.Failed++
				if len(run.Errors) < 5 {
					run.Errors = append(run.Errors, fmt.Sprintf("%s after %.1f s: %s", o.Op, o.Secs, o.Err))
				}
			case o.Op == "checkout":
				run.Checkout = append(run.Checkout, o.Secs)
			default:
				run.Checkin = append(run.Checkin, o.Secs)
			}
		}
	}
	// A failed checkout has no check-in after it: count the pairs.
	run.Missing = max(0, procs*d.sizes.Pairs*2-done-countFailedCheckouts(g.ops()))
	if left := waitGone(b.Bin, time.Minute); left > 0 {
		d.Log.Printf("checkout: %d processes of %s still run a minute after the children", left, b.Label)
	}
	inv := filepath.Join(dir, "inventory.yaml")
	hosts, err := list(ctx, b.Bin, inv)
	if err != nil {
		run.Left = -1
		run.Errors = append(run.Errors, "listing the inventory: "+err.Error())
	} else {
		run.Left = len(hosts)
	}
	if _, err := os.Stat(inv + ".lock"); err == nil {
		run.LockLeft = true
	}
	return run, nil
}

func countFailedCheckouts(all [][]op) int {
	n := 0
	for _, ops := range all {
		for _, o := range ops {
			if o.Op == "checkout" && o.Err != "" {
				n++
			}
		}
	}
	return n
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// WritesRun is one run of case 2 by one build.
type WritesRun struct {
	Build  string
	Round  int
	Wall   float64 // s
	Acked  int     // puts that returned nil
	Failed int
	Killed int // writers killed at the timeout
	Lost   int // acknowledged records missing at the end (-1: unreadable)
	Errors []string
}

// Rate is acknowledged writes per second.
func (w WritesRun) Rate() float64 {
	if w.Wall == 0 {
		return 0
	}
	return float64(w.Acked) / w.Wall
}

// writes is case 2: writers × distinct Puts into one inventory, then every
// acknowledged record must be there.
func (d *driver) writes(ctx context.Context) error {
	for r := range d.sizes.WriteRounds {
		for _, b := range d.order(r, 0) {
			run, err := d.writesRun(ctx, b, r)
			if err != nil {
				return err
			}
			d.res.Writes = append(d.res.Writes, run)
			d.Log.Printf("writes: %-28s %.1f writes/s, acked %d, failed %d, lost %d", b.Label, run.Rate(), run.Acked, run.Failed, run.Lost)
		}
	}
	return nil
}

func (d *driver) writesRun(ctx context.Context, b Build, round int) (WritesRun, error) {
	run := WritesRun{Build: b.Label, Round: round}
	dir, err := os.MkdirTemp(d.tmp, "writes-")
	if err != nil {
		return run, err
	}
	defer os.RemoveAll(dir)
	inv := filepath.Join(dir, "inventory.yaml")
	argv := make([][]string, d.sizes.Writers)
	for i := range argv {
		argv[i] = []string{"writer", "-path", inv, "-n", strconv.Itoa(d.sizes.Writes), "-prefix", fmt.Sprintf("w%d", i)}
	}
	g, err := startReleased(ctx, b.Bin, argv)
	if err != nil {
		return run, err
	}
	wall, killed, errs := g.wait(d.sizes.WriteTimeout)
	run.Wall, run.Killed = wall.Seconds(), killed
	run.Errors = firstN(errs, 3)
	want := map[string]bool{}
	for _, ops := range g.ops() {
		for _, o := range ops {
			if o.Err != "" {
				run.Failed++
				run.Errors = appendMax(run.Errors, 5, o.Op+": "+o.Err)
				continue
			}
			run.Acked++
			want[o.Host] = true
		}
	}
	run.Lost = lost(ctx, b.Bin, inv, want, nil, &run.Errors)
	return run, nil
}

func appendMax(s []string, n int, v string) []string {
	if len(s) < n {
		s = append(s, v)
	}
	return s
}

// lost lists the inventory at path with bin and counts the hosts of want
// missing from it and those of gone present in it; -1 if it is unreadable.
func lost(ctx context.Context, bin, path string, want, gone map[string]bool, errs *[]string) int {
	hosts, err := list(ctx, bin, path)
	if err != nil {
		*errs = append(*errs, "listing the inventory: "+err.Error())
		return -1
	}
	have := map[string]bool{}
	for _, h := range hosts {
		have[h] = true
	}
	n := 0
	for h := range want {
		if !have[h] {
			n++
		}
	}
	for h := range gone {
		if have[h] {
			n++
		}
	}
	return n
}

// LoadRun is one child's loads of case 3 by one build.
type LoadRun struct {
	Build  string
	Filter int       // index in loadFilters
	MS     []float64 // per load + filter
	Errors []string
}

// loads is case 3: fresh loads of a large inventory, each filtered.
func (d *driver) loads(ctx context.Context) error {
	dir := filepath.Join(d.tmp, "big")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	files := map[string]string{}
	for _, kind := range []string{fileIssue, fileRealistic} {
		files[kind] = filepath.Join(dir, kind+".yaml")
		if err := writeFile(kind, files[kind], d.sizes.Records); err != nil {
			return err
		}
		if st, err := os.Stat(files[kind]); err == nil {
			d.res.FileMB = append(d.res.FileMB, float64(st.Size())/1e6)
		}
	}
	for r := range d.sizes.LoadRounds {
		for k, f := range loadFilters {
			for _, b := range d.order(r, k) {
				run := LoadRun{Build: b.Label, Filter: k}
				ops, err := runOne(ctx, b.Bin, d.sizes.ChildTimeout, "load", "-path", files[f.File], "-filter", f.Filter, "-n", strconv.Itoa(d.sizes.LoadOps))
				if err != nil {
					run.Errors = append(run.Errors, err.Error())
				}
				want := f.want(d.sizes.Records)
				for _, o := range ops {
					switch {
					case o.Err != "":
						run.Errors = appendMax(run.Errors, 5, o.Err)
					case o.N != want:
						run.Errors = appendMax(run.Errors, 5, fmt.Sprintf("the filter matched %d records, want %d", o.N, want))
					default:
						run.MS = append(run.MS, o.Secs*1000)
					}
				}
				d.res.Loads = append(d.res.Loads, run)
				d.Log.Printf("load: %-28s filter %d: median %.1f ms over %d, errors %d", b.Label, k, median(run.MS), len(run.MS), len(run.Errors))
			}
		}
	}
	return nil
}

// PythonRun is one run of case 4 by one build.
type PythonRun struct {
	Build      string
	Round      int
	Mode       string // how the Python side edits YAML: pyyaml or text
	Attempts   int
	Succeeded  int
	Waits      []float64 // s to take the lock, every attempt
	GoWrites   int       // acknowledged Go writes meanwhile
	GoWall     float64   // s the Go writers ran
	GoFailed   int
	LostGo     int
	LostPython int
	Errors     []string
}

// python is case 4: the Python broker's lock protocol beside Go writers.
func (d *driver) python(ctx context.Context) error {
	py, err := exec.LookPath("python3")
	if err != nil {
		d.res.Skipped = append(d.res.Skipped, "Python broker beside Go writers: no python3")
		return nil
	}
	script := filepath.Join(d.tmp, "pybroker.py")
	if err := os.WriteFile(script, pyBroker, 0o644); err != nil {
		return err
	}
	for r := range d.sizes.PyRounds {
		for _, b := range d.order(r, 0) {
			run, err := d.pythonRun(ctx, b, r, py, script)
			if err != nil {
				return err
			}
			d.res.Python = append(d.res.Python, run)
			d.Log.Printf("python: %-28s %d of %d Python attempts succeeded (max wait %.1f s); Go writes %d (%.0f/s); lost Go %d, Python %d",
				b.Label, run.Succeeded, run.Attempts, maxOf(run.Waits), run.GoWrites, float64(run.GoWrites)/max(run.GoWall, 1e-9), run.LostGo, run.LostPython)
		}
	}
	return nil
}

func (d *driver) pythonRun(ctx context.Context, b Build, round int, py, script string) (PythonRun, error) {
	run := PythonRun{Build: b.Label, Round: round}
	dir, err := os.MkdirTemp(d.tmp, "python-")
	if err != nil {
		return run, err
	}
	defer os.RemoveAll(dir)
	inv := filepath.Join(dir, "inventory.yaml")
	argv := make([][]string, d.sizes.PyWriters)
	for i := range argv {
		argv[i] = []string{"writer", "-path", inv, "-n", "0", "-hold", "4", "-prefix", fmt.Sprintf("g%d", i)}
	}
	g, err := startReleased(ctx, b.Bin, argv)
	if err != nil {
		return run, err
	}
	// Let the Go writers get going before the Python broker arrives.
	time.Sleep(time.Second)
	pctx, cancel := context.WithTimeout(ctx, time.Duration(d.sizes.PyAttempts)*15*time.Second+30*time.Second)
	cmd := exec.CommandContext(pctx, py, script, "--inventory", inv, "--attempts", strconv.Itoa(d.sizes.PyAttempts), "--prefix", "py")
	out, perr := cmd.Output()
	cancel()
	g.stop()
	wall, _, errs := g.wait(time.Minute)
	run.GoWall = wall.Seconds()
	run.Errors = firstN(errs, 3)
	if perr != nil {
		run.Errors = append(run.Errors, fmt.Sprintf("python: %v", perr))
	}
	pyWant := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		var a struct {
			OK         bool
			Mode, Host string
			Wait       float64
			Err        string
		}
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			run.Errors = append(run.Errors, fmt.Sprintf("python printed %q", line))
			continue
		}
		run.Attempts++
		run.Mode = a.Mode
		run.Waits = append(run.Waits, a.Wait)
		if a.OK {
			run.Succeeded++
			pyWant[a.Host] = true
		} else {
			run.Errors = appendMax(run.Errors, 6, "python: "+a.Err)
		}
	}
	// What the Go writers acknowledged: each host's last acknowledged
	// operation says whether it must be there. A host with a failed
	// operation is in doubt and not counted either way.
	last := map[string]string{}
	doubt := map[string]bool{}
	for _, ops := range g.ops() {
		for _, o := range ops {
			if o.Err != "" {
				run.GoFailed++
				doubt[o.Host] = true
				run.Errors = appendMax(run.Errors, 6, o.Op+": "+o.Err)
				continue
			}
			run.GoWrites++
			last[o.Host] = o.Op
		}
	}
	want, gone := map[string]bool{}, map[string]bool{}
	for h, o := range last {
		switch {
		case doubt[h]:
		case o == "put":
			want[h] = true
		default:
			gone[h] = true
		}
	}
	run.LostGo = lost(ctx, b.Bin, inv, want, gone, &run.Errors)
	run.LostPython = lost(ctx, b.Bin, inv, pyWant, nil, &run.Errors)
	return run, nil
}
