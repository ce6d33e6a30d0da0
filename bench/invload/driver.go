package invload

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// MainPackage is the driver's package, relative to the bench module: what
// is built twice.
const MainPackage = "./cmd/invbench"

//go:embed pybroker.py
var pyBroker []byte

// Options say what Run measures and where the code comes from.
type Options struct {
	BenchDir string // the bench module (its go.mod replaces broker with ../)
	Base     string // the baseline commit
	BaseDir  string // where its worktree is (made with git worktree add if missing)
	// Current, when set, is a broker tree to build as "current" instead of
	// the bench module's own ../.
	Current string
	Cases   []string // checkout, writes, load, python
	Quick   bool
	Log     *log.Logger
}

// Sizes are the figures of one run: full or quick.
type Sizes struct {
	Procs        []int // case 1: processes
	Pairs        int   // case 1: checkout+check-in pairs per process
	PairRounds   int   // case 1: runs per size per build
	PairTimeout  time.Duration
	Writers      int // case 2
	Writes       int // case 2: per writer
	WriteRounds  int
	WriteTimeout time.Duration
	Records      int // case 3
	LoadOps      int // case 3: loads per child, per filter
	LoadRounds   int
	PyWriters    int // case 4: Go writers
	PyAttempts   int // case 4: Python attempts per run
	PyRounds     int
	BusyLoops    int // during case 1
	ChildTimeout time.Duration
}

// FullSizes are the figures.
var FullSizes = Sizes{
	Procs: []int{16, 32}, Pairs: 30, PairRounds: 1, PairTimeout: 8 * time.Minute,
	Writers: 8, Writes: 200, WriteRounds: 1, WriteTimeout: 10 * time.Minute,
	Records: 10000, LoadOps: 5, LoadRounds: 3,
	PyWriters: 8, PyAttempts: 8, PyRounds: 1,
	BusyLoops: 2, ChildTimeout: 5 * time.Minute,
}

// QuickSizes are a smoke run of every case.
var QuickSizes = Sizes{
	Procs: []int{4, 8}, Pairs: 5, PairRounds: 1, PairTimeout: 3 * time.Minute,
	Writers: 4, Writes: 25, WriteRounds: 1, WriteTimeout: 2 * time.Minute,
	Records: 10000, LoadOps: 2, LoadRounds: 1,
	PyWriters: 4, PyAttempts: 3, PyRounds: 1,
	BusyLoops: 2, ChildTimeout: 2 * time.Minute,
}

// Build is one build of the program.
type Build struct {
	Label string // "baseline 69f4458", "current 1a2b3c4"
	Tree  string // the broker tree it was built against
	Bin   string `json:"-"`
	// SameAsBase says the tree's broker code (all but bench/) is the
	// baseline's: then the two builds differ in nothing measured.
	SameAsBase bool `json:",omitempty"`
}

// Results is everything one run measured.
type Results struct {
	Machine   []string
	LoadStart string // /proc/loadavg before and after
	LoadEnd   string
	Sizes     Sizes
	Builds    []Build
	Elapsed   time.Duration
	Pairs     []PairsRun
	Writes    []WritesRun
	Loads     []LoadRun
	Python    []PythonRun
	FileMB    []float64 // case 3's files: issue, realistic
	Skipped   []string  // cases not run, with why
}

type driver struct {
	Options
	sizes Sizes
	tmp   string
	res   *Results
}

// Run builds the program against the baseline and the current tree and runs
// the cases, the two builds taking turns. A case that fails functionally
// (timeouts, lost records) is recorded, not fatal; only a failure to build
// or to run the harness itself is returned.
func Run(ctx context.Context, o Options) (*Results, error) {
	if o.Log == nil {
		o.Log = log.New(os.Stderr, "", log.LstdFlags)
	}
	d := &driver{Options: o, sizes: FullSizes, res: &Results{}}
	if o.Quick {
		d.sizes = QuickSizes
	}
	d.res.Sizes = d.sizes
	start := time.Now()
	var err error
	if d.tmp, err = os.MkdirTemp("", "invbench-"); err != nil {
		return nil, err
	}
	defer os.RemoveAll(d.tmp)
	if err := d.build(ctx); err != nil {
		return nil, err
	}
	d.res.Machine = describeMachine()
	d.res.LoadStart = loadavg()
	defer func() {
		d.res.LoadEnd = loadavg()
		d.res.Elapsed = time.Since(start)
	}()
	for _, c := range o.Cases {
		t0 := time.Now()
		var err error
		switch c {
		case "checkout":
			err = d.pairs(ctx)
		case "writes":
			err = d.writes(ctx)
		case "load":
			err = d.loads(ctx)
		case "python":
			err = d.python(ctx)
		default:
			err = fmt.Errorf("unknown case %q (checkout, writes, load, python)", c)
		}
		if err != nil {
			return d.res, fmt.Errorf("%s: %w", c, err)
		}
		d.Log.Printf("%s: done in %s", c, time.Since(t0).Round(time.Second))
	}
	return d.res, nil
}

// order is who goes first in round r of size k: the builds alternate, so
// that a drift in the machine's load hits both alike.
func (d *driver) order(r, k int) []Build {
	b := d.res.Builds
	if (r+k)%2 == 1 {
		return []Build{b[1], b[0]}
	}
	return []Build{b[0], b[1]}
}

// BaseTag is the build tag of the baseline's build: it selects the
// baseline's form of the API that changed since (api_base.go).
const BaseTag = "invbase"

var replaceLine = regexp.MustCompile(`(?m)^replace github\.com/hostbroker/broker => .*$`)

// build makes the baseline worktree if needed and builds the program twice.
func (d *driver) build(ctx context.Context) error {
	bench, err := filepath.Abs(d.BenchDir)
	if err != nil {
		return err
	}
	repo := filepath.Dir(bench)
	base, err := d.baseTree(ctx, repo)
	if err != nil {
		return err
	}
	cur := repo
	if d.Current != "" {
		if cur, err = filepath.Abs(d.Current); err != nil {
			return err
		}
	}
	for _, b := range []struct{ name, tree string }{{"baseline", base}, {"current", cur}} {
		bin := filepath.Join(d.tmp, "invbench-"+b.name)
		args := []string{"build", "-o", bin}
		if b.name == "baseline" {
			args = append(args, "-tags", BaseTag)
		}
		if b.tree != repo {
			mod, err := d.modfile(bench, b.name, b.tree)
			if err != nil {
				return err
			}
			args = append(args, "-modfile", mod, "-mod=mod")
		}
		cmd := exec.CommandContext(ctx, "go", append(args, MainPackage)...)
		cmd.Dir = bench
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build against %s: %w\n%s", b.tree, err, out)
		}
		label := b.name + " " + describeTree(ctx, b.tree)
		build := Build{Label: label, Tree: b.tree, Bin: bin}
		if b.tree != base {
			build.SameAsBase = sameCode(ctx, b.tree, d.Base)
		}
		d.res.Builds = append(d.res.Builds, build)
		d.Log.Printf("built %s (%s)", label, b.tree)
	}
	return nil
}

// baseTree returns the baseline's worktree, adding it when missing.
func (d *driver) baseTree(ctx context.Context, repo string) (string, error) {
	want, err := git(ctx, repo, "rev-parse", "--verify", d.Base+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("baseline %s: %w", d.Base, err)
	}
	dir, err := filepath.Abs(d.BaseDir)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(dir); err == nil {
		got, err := git(ctx, dir, "rev-parse", "HEAD")
		if err != nil || got != want {
			return "", fmt.Errorf("%s exists but is not a checkout of %s (HEAD %q): remove it or pass another -base-dir", dir, d.Base, got)
		}
		if st, _ := git(ctx, dir, "status", "--porcelain", "--untracked-files=no"); st != "" {
			return "", fmt.Errorf("%s has changes: the baseline must be %s as committed", dir, d.Base)
		}
		return dir, nil
	}
	if _, err := git(ctx, repo, "worktree", "add", "--detach", dir, want); err != nil {
		return "", err
	}
	d.Log.Printf("added worktree %s at %s", dir, d.Base)
	return dir, nil
}

// modfile writes a copy of the bench module's go.mod (and go.sum) whose
// broker is the tree at tree.
func (d *driver) modfile(bench, name, tree string) (string, error) {
	mod, err := os.ReadFile(filepath.Join(bench, "go.mod"))
	if err != nil {
		return "", err
	}
	if !replaceLine.Match(mod) {
		return "", errors.New("bench/go.mod has no replace line for github.com/hostbroker/broker")
	}
	mod = replaceLine.ReplaceAll(mod, []byte("replace github.com/hostbroker/broker => "+tree))
	path := filepath.Join(d.tmp, "go."+name+".mod")
	if err := os.WriteFile(path, mod, 0o644); err != nil {
		return "", err
	}
	sum, err := os.ReadFile(filepath.Join(bench, "go.sum"))
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(strings.TrimSuffix(path, ".mod")+".sum", sum, 0o644)
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// describeTree names a tree's commit, marking uncommitted changes outside
// bench/ (which holds only this program) and documentation.
func describeTree(ctx context.Context, tree string) string {
	rev, err := git(ctx, tree, "rev-parse", "--short", "HEAD")
	if err != nil {
		return filepath.Base(tree)
	}
	if st, _ := git(ctx, tree, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench", ":!*.md"); st != "" {
		rev += " with uncommitted changes"
	}
	return rev
}

// sameCode reports whether the work tree at tree holds the broker code of
// commit base, bench/ and documentation aside.
func sameCode(ctx context.Context, tree, base string) bool {
	_, err := git(ctx, tree, "diff", "--quiet", base, "--", ".", ":!bench", ":!*.md")
	return err == nil
}

// ReadJSON reads results written by WriteJSON, to render them again.
func ReadJSON(path string) (*Results, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// WriteJSON writes the results, raw samples included, for a later look.
func (r *Results) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
