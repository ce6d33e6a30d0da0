// Package cli is the brokertest command: it lists the inventory, checks
// hosts in (by id, hostname, filter, or because their owner run died) and
// reconciles the inventory with what a provider says exists.
//
// The command in cmd/brokertest is a thin main over [Main] that
// blank-imports this module's providers. To build a brokertest CLI that
// knows other providers (Kubernetes, say, from its own module), blank-import
// them in your own main and call Main:
//
//	package main
//
//	import (
//		"os"
//
//		"github.com/hostbroker/broker/cmd/brokertest/cli"
//		_ "github.com/hostbroker/broker/providers/container"
//		_ "example.com/yourprovider"
//	)
//
//	func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
//
// The CLI acts on hosts of providers it does not link only as far as the
// inventory goes: checking one in fails, naming the provider and those
// registered (for a provider of this module, the import to add).
//
// "brokertest -h" lists the commands, the global flags (--json on every
// command) and the exit-code table (0 done or nothing to do, 1 failed,
// 2 usage); "brokertest COMMAND -h" says what a command selects, its flags
// and examples. The --json output follows the JSON Schemas in this
// package's testdata/schema.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/inventory/filter"
)

const usage = `usage: brokertest [--json] [--output-file F] [-v] COMMAND [ARGS]

Cleans up after test runs that checked hosts out with broker.

commands:
  inventory   list the hosts in the inventory, with their local ids
  cleanup     check hosts in and drop them from the inventory
  sync        reconcile the inventory with what a provider has

"brokertest COMMAND -h" (or "brokertest help COMMAND") says what a command
selects, its flags and an example.

global flags (before or after the command):
  --json            print the result as JSON on stdout; an error too, as
                    {"error": "...", "exit": N}
  --output-file F   also write the result as JSON to F (replaced)
  -v                log what the broker does to stderr
` + exitStatus

// exitStatus is the one exit-code table of every command.
const exitStatus = `
exit status (every command):
  0  done, or nothing to do (the last line, or --json's "summary", says so)
  1  failed: a host could not be checked in (each is named, with its error),
     or the inventory or a provider could not be read
  2  usage: an unknown command or flag, a bad argument or filter, a host
     that is not in the inventory, cleanup with nothing selected, a
     provider or instance that is not there, or settings the broker refuses
`

const filterHelp = `
filters: 'name<test,_broker_args.image{debian,_brokertest.state!=kept'
  (< in, = equals, { starts with, } ends with; ! negates)
  or, as the Python broker, an @inv expression; "|" chains stages:
  '"test" in @inv.name | @inv._broker_args.provider != "RHV"'  '@inv[-1]'  '@inv[3:7]'
  (see docs/filters.md)
`

// command is one verb of the CLI: its help and what it does.
type command struct {
	name     string
	synopsis string // the usage line's arguments
	about    string // what it selects and does
	flags    func(fs *flag.FlagSet, o *cmdFlags)
	examples string
	run      func(c *cli, ctx context.Context, fs *flag.FlagSet, o *cmdFlags) error
}

// cmdFlags are the flags of the commands (each defines its own).
type cmdFlags struct {
	filter             string
	all, stale, dryRun bool
}

var commands = []*command{
	{
		name:     "inventory",
		synopsis: "[--filter F]",
		about: `Lists the hosts in the inventory ($BROKER_DIRECTORY/inventory.yaml), one
a line, with their local id: a host's position in this (filtered) list,
which cleanup takes. It only reads: it works on a broker directory it
cannot write. With --json: a list of the records as the inventory holds them.`,
		flags: func(fs *flag.FlagSet, o *cmdFlags) {
			fs.StringVar(&o.filter, "filter", "", "only the hosts matching `F`")
		},
		examples: `  brokertest inventory
  brokertest --json inventory --filter '_brokertest.state=kept'`,
		run: (*cli).inventory,
	},
	{
		name:     "cleanup",
		synopsis: "[ID|NAME|HOSTNAME...] [--all] [--stale] [--filter F] [--dry-run]",
		about: `Checks hosts in through their provider and drops them from the inventory.
It acts on the hosts named (a local id as inventory prints it, a
_brokertest id, a name or a hostname; each must be in the inventory), or
--all, or --stale; --filter narrows any of these (a filter alone selects
nothing). With nothing selected it is a usage error (exit 2); a selection
that turns out empty (nothing stale, say) is done, and says so (exit 0).
A host that fails to check in stays in the inventory, named on stderr with
its error (exit 1).`,
		flags: func(fs *flag.FlagSet, o *cmdFlags) {
			fs.BoolVar(&o.all, "all", false, "every host in the inventory")
			fs.BoolVar(&o.stale, "stale", false, "the hosts left by runs that died: those whose owner process on this machine is gone,\nand kept hosts whose keep time has passed (never a host kept for inspection with\nno keep time: only a person checks it in, by naming it)")
			fs.StringVar(&o.filter, "filter", "", "of the selected hosts, only those matching `F`")
			fs.BoolVar(&o.dryRun, "dry-run", false, "say what would be checked in, change nothing")
		},
		examples: `  brokertest cleanup --stale                  # after a killed run
  brokertest cleanup 0 vm1.example.com        # by local id and by hostname
  brokertest cleanup --all --filter '_brokertest.test{TestDeploy' --dry-run`,
		run: (*cli).cleanup,
	},
	{
		name:     "sync",
		synopsis: "Provider[:user][::instance]",
		about: `Reconciles the inventory with what a provider instance says exists, as the
Python broker's "broker sync": hosts it has that the inventory lacks are
added, records of hosts it no longer has are dropped. With a user, only
that user's records are replaced. The provider must be one this program
imports.`,
		flags: func(*flag.FlagSet, *cmdFlags) {},
		examples: `  brokertest sync Container
  brokertest --json sync AnsibleTower:jdoe::production`,
		run: (*cli).sync,
	},
}

func findCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func commandNames() string {
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	return strings.Join(names, ", ")
}

// help is a command's own help: usage, what it selects, flags, examples.
func (cmd *command) help() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: brokertest [GLOBAL FLAGS] %s %s\n\n%s\n\nflags:\n", cmd.name, cmd.synopsis, cmd.about)
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	cmd.flags(fs, &cmdFlags{})
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		b.WriteString("  none but the global ones\n")
	} else {
		fs.SetOutput(&b)
		fs.PrintDefaults()
	}
	b.WriteString("  --json, --output-file F, -v: the global flags (brokertest -h)\n")
	if cmd.name != "sync" {
		b.WriteString(filterHelp)
	}
	fmt.Fprintf(&b, "\nexamples:\n%s\n", cmd.examples)
	b.WriteString(exitStatus)
	return b.String()
}

// exit codes
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	parallelism = 16
)

// globals are the flags every command takes.
type globals struct {
	json       bool
	outputFile string
	verbose    bool
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.BoolVar(&g.json, "json", g.json, "print JSON on stdout")
	fs.StringVar(&g.outputFile, "output-file", g.outputFile, "also write the result as JSON to `file` (replaced)")
	fs.BoolVar(&g.verbose, "v", g.verbose, "log to stderr")
}

// Main runs the brokertest command with args (without the program's name),
// writing to stdout and stderr, and returns its exit status (0 done or
// nothing to do, 1 failed, 2 usage; "brokertest -h" has the table).
// SIGINT and SIGTERM cancel what it is doing.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, stdout, stderr)
}

// usageError is bad usage: exit 2.
type usageError struct {
	msg string
	err error // flag.ErrHelp for -h
}

func (e usageError) Error() string { return e.msg }

// Unwrap returns the flag package's error, if any.
func (e usageError) Unwrap() error { return e.err }

// failedError is a command that could not finish: exit 1.
type failedError struct{ err error }

func (e failedError) Error() string { return e.err.Error() }
func (e failedError) Unwrap() error { return e.err }

// wantsJSON says whether args ask for JSON, for an error met before the
// flags are parsed (or while they are).
func wantsJSON(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-json", "--json", "-json=true", "--json=true":
			return true
		}
	}
	return false
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var g globals
	top := flag.NewFlagSet("brokertest", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	g.register(top)
	fail := func(prefix string, err error, hint string, code int) int {
		fmt.Fprintf(stderr, "%s: %v\n", prefix, err)
		if hint != "" {
			fmt.Fprintln(stderr, hint)
		}
		if g.json || wantsJSON(args) {
			_ = writeJSON(stdout, map[string]any{"error": err.Error(), "exit": code})
		}
		return code
	}
	err := top.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return exitOK
	case err != nil:
		return fail("brokertest", err, `run "brokertest -h" for the usage`, exitUsage)
	case top.NArg() == 0:
		if g.json {
			return fail("brokertest", errors.New("no command given; commands: "+commandNames()), `run "brokertest -h" for the usage`, exitUsage)
		}
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	name, rest := top.Arg(0), top.Args()[1:]
	if name == "help" {
		switch {
		case len(rest) == 0:
			fmt.Fprint(stdout, usage)
			return exitOK
		case len(rest) == 1 && findCommand(rest[0]) != nil:
			fmt.Fprint(stdout, findCommand(rest[0]).help())
			return exitOK
		}
		return fail("brokertest help", fmt.Errorf("no command %q; commands: %s", strings.Join(rest, " "), commandNames()), "", exitUsage)
	}
	cmd := findCommand(name)
	if cmd == nil {
		return fail("brokertest", fmt.Errorf("unknown command %q; commands: %s", name, commandNames()), `run "brokertest -h" for the usage`, exitUsage)
	}
	c := &cli{g: &g, stdout: stdout, stderr: stderr}
	defer c.close()
	var o cmdFlags
	fs, err := c.flags(name, rest, func(fs *flag.FlagSet) { cmd.flags(fs, &o) })
	if err == nil {
		err = cmd.run(c, ctx, fs, &o)
	}
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, cmd.help())
		return exitOK
	case errors.Is(err, errHostsFailed):
		return exitFailed // each host is named already; the result says the rest
	case errors.As(err, &ue):
		return fail("brokertest "+name, err, fmt.Sprintf("run \"brokertest %s -h\" for its usage", name), exitUsage)
	case errors.As(err, new(failedError)):
		return fail("brokertest "+name, err, "", exitFailed)
	default: // the broker refused to start: its settings
		return fail("brokertest "+name, err, "", exitUsage)
	}
}

type cli struct {
	g      *globals
	stdout io.Writer
	stderr io.Writer
	b      *broker.Broker
}

func (c *cli) close() {
	if c.b != nil {
		c.b.Close()
	}
}

var errHostsFailed = errors.New("some hosts failed")

// flags parses a command's flags; globals may also follow the command.
func (c *cli) flags(name string, args []string, define func(fs *flag.FlagSet)) (*flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.g.register(fs)
	define(fs)
	// Interleaved flags and positional arguments: parse until all are seen.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err.Error(), err}
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	_ = fs.Parse(positional) // leaves them as fs.Args()
	return fs, nil
}

// open makes the Broker of the command. A command that only reads
// (readOnly) writes no log into the broker directory, so that it works on
// one it cannot write. The settings' warnings go to stderr.
func (c *cli) open(readOnly bool) error {
	// No background reaper: cleanup --stale does its work in the
	// foreground, and the other commands end before it would.
	opts := []broker.Option{broker.WithReaper(false)}
	switch {
	case c.g.verbose:
		opts = append(opts, broker.WithLogger(slog.New(slog.NewTextHandler(c.stderr, nil))))
	case readOnly:
		opts = append(opts, broker.WithLogger(slog.New(slog.DiscardHandler)))
	}
	b, err := broker.New(opts...)
	if err != nil {
		return err
	}
	if !c.g.verbose { // verbose: New logged them to stderr already
		for _, w := range b.Warnings() {
			fmt.Fprintf(c.stderr, "brokertest: warning: %s\n", w)
		}
	}
	c.b = b
	return nil
}

func parseFilter(s string) (filter.Filter, error) {
	f, err := filter.Parse(s)
	if err != nil {
		return f, usageError{msg: err.Error()}
	}
	return f, nil
}

// load reads the inventory; a failure to read it is the command failing.
func (c *cli) load(ctx context.Context) ([]*inventory.Record, error) {
	recs, err := c.b.Inventory(ctx)
	if err != nil {
		return nil, failedError{err}
	}
	return recs, nil
}

func (c *cli) inventory(ctx context.Context, fs *flag.FlagSet, o *cmdFlags) error {
	if fs.NArg() > 0 {
		return usageError{msg: fmt.Sprintf("unexpected arguments %q (inventory takes only --filter)", fs.Args())}
	}
	f, err := parseFilter(o.filter)
	if err != nil {
		return err
	}
	if err := c.open(true); err != nil {
		return err
	}
	all, err := c.load(ctx)
	if err != nil {
		return err
	}
	recs, err := f.ApplyErr(all)
	if err != nil {
		return usageError{msg: err.Error()}
	}
	if err := c.writeOutput(recordsJSON(recs)); err != nil {
		return err
	}
	if c.g.json {
		return writeJSON(c.stdout, recordsJSON(recs))
	}
	switch {
	case len(all) == 0:
		fmt.Fprintf(c.stdout, "no hosts in the inventory (%s)\n", c.b.Store().Path())
		return nil
	case len(recs) == 0:
		fmt.Fprintf(c.stdout, "no host matches filter '%s' (of %d in the inventory)\n", o.filter, len(all))
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tHOSTNAME\tPROVIDER\tSTATE\tOWNER\tTEST")
	for i, r := range recs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", i, r.Name, r.Hostname, providerLabel(r), state(r), owner(r), test(r))
	}
	return tw.Flush()
}

// cleanupResult is cleanup's result (--json, --output-file).
type cleanupResult struct {
	DryRun    bool             `json:"dry_run"`
	Selected  []map[string]any `json:"selected"`
	CheckedIn []map[string]any `json:"checked_in"`
	Failed    []failure        `json:"failed"`
	Count     map[string]int   `json:"count"`
	Summary   string           `json:"summary"`
}

func (c *cli) cleanup(ctx context.Context, fs *flag.FlagSet, o *cmdFlags) error {
	f, err := parseFilter(o.filter)
	if err != nil {
		return err
	}
	if fs.NArg() == 0 && !o.all && !o.stale {
		return usageError{msg: "nothing selected: name hosts (local ids, ids, names or hostnames), or give --all or --stale; a filter alone selects nothing"}
	}
	if err := c.open(false); err != nil {
		return err
	}
	recs, err := c.load(ctx)
	if err != nil {
		return err
	}
	var selected []*inventory.Record
	if fs.NArg() > 0 || o.all {
		selected, err = selectRecords(recs, fs.Args(), o.all, f)
		if err != nil {
			return usageError{msg: err.Error()}
		}
	} else if selected, err = f.ApplyErr(recs); err != nil {
		return usageError{msg: err.Error()}
	}
	if o.stale {
		selected = staleOnly(selected, time.Now())
	}
	res := cleanupResult{DryRun: o.dryRun, Selected: recordsJSON(selected), CheckedIn: []map[string]any{}, Failed: []failure{}}
	var failed bool
	switch {
	case len(selected) == 0:
		res.Summary = "nothing to check in: " + whyNothing(recs, fs.NArg() > 0, o, f)
	case o.dryRun:
		if !c.g.json {
			for _, r := range selected {
				fmt.Fprintf(c.stdout, "would check in %s\n", label(r))
			}
		}
		res.Summary = fmt.Sprintf("would check in %s (dry run: nothing changed)", hosts(len(selected)))
	default:
		done, fails := c.checkin(ctx, selected)
		res.CheckedIn, res.Failed = recordsJSON(done), fails
		res.Summary = "checked in " + hosts(len(done))
		if len(fails) > 0 {
			res.Summary += fmt.Sprintf("; %d failed and stay in the inventory", len(fails))
			failed = true
		}
	}
	res.Count = map[string]int{"selected": len(selected), "checked_in": len(res.CheckedIn), "failed": len(res.Failed)}
	if err := c.result(res, res.Summary); err != nil {
		return err
	}
	if failed {
		return errHostsFailed
	}
	return nil
}

// whyNothing says why a cleanup selection came out empty.
func whyNothing(recs []*inventory.Record, named bool, o *cmdFlags, f filter.Filter) string {
	switch {
	case len(recs) == 0:
		return "the inventory is empty"
	case o.stale && named:
		return "none of the hosts named is stale"
	case o.stale && !f.Empty():
		return fmt.Sprintf("no host matching filter '%s' is stale (of %d in the inventory)", f.String(), len(recs))
	case o.stale:
		return fmt.Sprintf("no host is stale: every owner run is alive or on another machine, and no keep time has passed (%d in the inventory)", len(recs))
	default:
		return fmt.Sprintf("no host matches filter '%s' (of %d in the inventory)", f.String(), len(recs))
	}
}

func hosts(n int) string {
	if n == 1 {
		return "1 host"
	}
	return fmt.Sprintf("%d hosts", n)
}

// result ends a command: v to --output-file, and on stdout either v as
// JSON or the one-line summary.
func (c *cli) result(v any, summary string) error {
	if err := c.writeOutput(v); err != nil {
		return err
	}
	if c.g.json {
		return writeJSON(c.stdout, v)
	}
	_, err := fmt.Fprintln(c.stdout, summary)
	return err
}

// failure is a host that failed to check in, in cleanup's result.
type failure struct {
	Host  map[string]any `json:"host"`
	Error string         `json:"error"`
}

// staleOnly keeps the records whose owner is provably dead, and kept hosts
// whose keep time has passed. A host kept for inspection with no keep time
// outlives its owner on purpose: only a person checks it in, by naming it.
func staleOnly(recs []*inventory.Record, now time.Time) []*inventory.Record {
	var out []*inventory.Record
	for _, r := range recs {
		if r.Broker == nil {
			continue
		}
		expired := r.Broker.KeepUntil != nil && now.After(*r.Broker.KeepUntil)
		if expired || broker.Orphaned(r) {
			out = append(out, r)
		}
	}
	return out
}

// checkin checks recs in concurrently, with progress on a terminal; it
// returns the records checked in and the failures (printed too), in recs'
// order.
func (c *cli) checkin(ctx context.Context, recs []*inventory.Record) ([]*inventory.Record, []failure) {
	var (
		mu   sync.Mutex
		done atomic.Int32
		errs = make([]error, len(recs))
	)
	progress := len(recs) > 3 && isTerminal(c.stderr)
	var g errgroup.Group
	g.SetLimit(parallelism)
	for i, r := range recs {
		g.Go(func() error {
			err := c.b.CheckinRecords(ctx, r)
			mu.Lock()
			defer mu.Unlock()
			n := done.Add(1)
			errs[i] = err
			if err != nil {
				fmt.Fprintf(c.stderr, "failed: %s: %v\n", label(r), err)
			} else if !c.g.json {
				fmt.Fprintf(c.stdout, "checked in %s\n", label(r))
			}
			if progress {
				fmt.Fprintf(c.stderr, "\r%d/%d", n, len(recs))
			}
			return nil
		})
	}
	_ = g.Wait()
	if progress {
		fmt.Fprintln(c.stderr)
	}
	var ok []*inventory.Record
	failed := []failure{}
	for i, r := range recs {
		if errs[i] != nil {
			failed = append(failed, failure{Host: r.Map(), Error: errs[i].Error()})
		} else {
			ok = append(ok, r)
		}
	}
	return ok, failed
}

// syncResult is sync's result (--json, --output-file).
type syncResult struct {
	Provider string           `json:"provider"`
	Added    []map[string]any `json:"added"`
	Dropped  []map[string]any `json:"dropped"`
	Kept     int              `json:"kept"`
	Summary  string           `json:"summary"`
}

func (c *cli) sync(ctx context.Context, fs *flag.FlagSet, _ *cmdFlags) error {
	if fs.NArg() != 1 {
		return usageError{msg: fmt.Sprintf("want one Provider[:user][::instance], got %d arguments", fs.NArg())}
	}
	if _, _, _, err := broker.ParseSyncSpec(fs.Arg(0)); err != nil {
		return usageError{msg: err.Error()}
	}
	if err := c.open(false); err != nil {
		return err
	}
	res, err := c.b.Sync(ctx, fs.Arg(0))
	switch {
	case err != nil && res.Provider == "": // no such provider or instance
		return usageError{msg: err.Error()}
	case err != nil:
		return failedError{err}
	}
	out := syncResult{Provider: res.Provider, Added: recordsJSON(res.Added), Dropped: recordsJSON(res.Dropped), Kept: res.Kept}
	if len(res.Added) == 0 && len(res.Dropped) == 0 {
		out.Summary = fmt.Sprintf("%s: nothing to change (%d records match what it has)", res.Provider, res.Kept)
	} else {
		out.Summary = fmt.Sprintf("%s: %d added, %d dropped, %d kept", res.Provider, len(res.Added), len(res.Dropped), res.Kept)
	}
	if !c.g.json {
		for _, r := range res.Added {
			fmt.Fprintf(c.stdout, "added %s\n", label(r))
		}
		for _, r := range res.Dropped {
			fmt.Fprintf(c.stdout, "dropped %s\n", label(r))
		}
	}
	return c.result(out, out.Summary)
}

// writeOutput replaces --output-file with v as JSON.
func (c *cli) writeOutput(v any) error {
	if c.g.outputFile == "" {
		return nil
	}
	f, err := os.OpenFile(c.g.outputFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("output file: %w", err)
	}
	if err := writeJSON(f, v); err != nil {
		f.Close()
		return fmt.Errorf("output file %s: %w", c.g.outputFile, err)
	}
	return f.Close()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // filters hold < and >; JSON readers need no escaping

	return enc.Encode(v)
}

func recordsJSON(recs []*inventory.Record) []map[string]any {
	out := make([]map[string]any, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.Map())
	}
	return out
}

func label(r *inventory.Record) string {
	var parts []string
	if r.Name != "" {
		parts = append(parts, r.Name)
	}
	if r.Hostname != "" && r.Hostname != r.Name {
		parts = append(parts, r.Hostname)
	}
	if id := r.ID(); id != "" {
		parts = append(parts, "(id "+id+")")
	}
	if len(parts) == 0 {
		return "(unnamed host)"
	}
	return strings.Join(parts, " ")
}

func providerLabel(r *inventory.Record) string {
	if r.Instance != "" {
		return r.Provider + "::" + r.Instance
	}
	return r.Provider
}

func state(r *inventory.Record) string {
	if r.Broker == nil {
		return "-"
	}
	s := r.Broker.State
	if r.Broker.Owner.Dead() {
		s += " (owner dead)"
	}
	return s
}

func owner(r *inventory.Record) string {
	if r.Broker == nil {
		return "-"
	}
	return fmt.Sprintf("%s pid %d", r.Broker.Owner.Machine, r.Broker.Owner.PID)
}

func test(r *inventory.Record) string {
	if r.Broker == nil || r.Broker.Test == "" {
		return "-"
	}
	return r.Broker.Test
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
