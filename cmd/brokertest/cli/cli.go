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
// The CLI acts on hosts of providers it does not import only as far as the
// inventory goes: checking one in fails, naming the import to add.
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

commands:
  inventory [--filter F]                 list the hosts checked out (local ids first)
  cleanup [ID|HOSTNAME...] [--all] [--stale] [--filter F] [--dry-run]
                                         check hosts in and drop them from the inventory
  sync Provider[:user][::instance]       reconcile the inventory with a provider
                                         (with a user: only that user's records)

filters: 'name<test,_broker_args.image{debian,_brokertest.state!=kept'
  (< in, = equals, { starts with, } ends with; ! negates)
  or, as the Python broker, an @inv expression; "|" chains stages:
  '"test" in @inv.name | @inv._broker_args.provider != "RHV"'  '@inv[-1]'  '@inv[3:7]'
  (see docs/filters.md)
`

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
// writing to stdout and stderr, and returns its exit status. SIGINT and
// SIGTERM cancel what it is doing.
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

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var g globals
	top := flag.NewFlagSet("brokertest", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	g.register(top)
	if err := top.Parse(args); err != nil || top.NArg() == 0 {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		if err != nil {
			fmt.Fprintf(stderr, "brokertest: %v\n", err)
		}
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := top.Arg(0), top.Args()[1:]
	c := &cli{g: &g, stdout: stdout, stderr: stderr}
	var err error
	switch cmd {
	case "inventory":
		err = c.inventory(ctx, rest)
	case "cleanup":
		err = c.cleanup(ctx, rest)
	case "sync":
		err = c.sync(ctx, rest)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		err = usageError{msg: fmt.Sprintf("unknown command %q", cmd)}
	}
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "brokertest %s: %v\n", cmd, err)
		fmt.Fprint(stderr, usage)
		return exitUsage
	case errors.Is(err, errHostsFailed):
		return exitFailed
	default:
		fmt.Fprintf(stderr, "brokertest %s: %v\n", cmd, err)
		return exitUsage
	}
}

type cli struct {
	g      *globals
	stdout io.Writer
	stderr io.Writer
	b      *broker.Broker
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

func (c *cli) inventory(ctx context.Context, args []string) error {
	var filter string
	fs, err := c.flags("inventory", args, func(fs *flag.FlagSet) {
		fs.StringVar(&filter, "filter", "", "only hosts matching `F`")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{msg: fmt.Sprintf("unexpected arguments %q", fs.Args())}
	}
	f, err := parseFilter(filter)
	if err != nil {
		return err
	}
	if err := c.open(true); err != nil {
		return err
	}
	recs, err := c.b.Inventory(ctx)
	if err != nil {
		return err
	}
	if recs, err = f.ApplyErr(recs); err != nil {
		return usageError{msg: err.Error()}
	}
	if err := c.writeOutput(recordsJSON(recs)); err != nil {
		return err
	}
	if c.g.json {
		return writeJSON(c.stdout, recordsJSON(recs))
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tHOSTNAME\tPROVIDER\tSTATE\tOWNER\tTEST")
	for i, r := range recs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", i, r.Name, r.Hostname, providerLabel(r), state(r), owner(r), test(r))
	}
	return tw.Flush()
}

func (c *cli) cleanup(ctx context.Context, args []string) error {
	var all, stale, dryRun bool
	var filter string
	fs, err := c.flags("cleanup", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&all, "all", false, "every host in the inventory")
		fs.BoolVar(&stale, "stale", false, "hosts whose owner run is dead on this machine, or whose keep time has passed (never hosts kept for inspection with no keep time)")
		fs.StringVar(&filter, "filter", "", "of the selected hosts, only those matching `F`")
		fs.BoolVar(&dryRun, "dry-run", false, "say what would be checked in, change nothing")
	})
	if err != nil {
		return err
	}
	f, err := parseFilter(filter)
	if err != nil {
		return err
	}
	if fs.NArg() == 0 && !all && !stale {
		fmt.Fprintln(c.stderr, "brokertest cleanup: nothing selected: give local ids or hostnames, --all, or --stale (a filter alone selects nothing)")
		return nil
	}
	if err := c.open(false); err != nil {
		return err
	}
	recs, err := c.b.Inventory(ctx)
	if err != nil {
		return err
	}
	var selected []*inventory.Record
	if fs.NArg() > 0 || all {
		selected, err = selectRecords(recs, fs.Args(), all, f)
		if err != nil {
			return usageError{msg: err.Error()}
		}
	} else if selected, err = f.ApplyErr(recs); err != nil {
		return usageError{msg: err.Error()}
	}
	if stale {
		selected = staleOnly(selected, time.Now())
	}
	if dryRun {
		for _, r := range selected {
			fmt.Fprintf(c.stdout, "would check in %s\n", label(r))
		}
		return c.writeOutput(map[string]any{"dry_run": true, "selected": recordsJSON(selected)})
	}
	done, failed := c.checkin(ctx, selected)
	result := map[string]any{
		"checked_in": recordsJSON(done),
		"failed":     failed,
		"count":      map[string]int{"checked_in": len(done), "failed": len(failed)},
	}
	if err := c.writeOutput(result); err != nil {
		return err
	}
	if c.g.json {
		if err := writeJSON(c.stdout, result); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return errHostsFailed
	}
	return nil
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

func (c *cli) sync(ctx context.Context, args []string) error {
	fs, err := c.flags("sync", args, func(*flag.FlagSet) {})
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{msg: "want one Provider[:user][::instance]"}
	}
	if _, _, _, err := broker.ParseSyncSpec(fs.Arg(0)); err != nil {
		return usageError{msg: err.Error()}
	}
	if err := c.open(false); err != nil {
		return err
	}
	res, err := c.b.Sync(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	out := map[string]any{"provider": res.Provider, "added": recordsJSON(res.Added), "dropped": recordsJSON(res.Dropped), "kept": res.Kept}
	if err := c.writeOutput(out); err != nil {
		return err
	}
	if c.g.json {
		return writeJSON(c.stdout, out)
	}
	for _, r := range res.Added {
		fmt.Fprintf(c.stdout, "added %s\n", label(r))
	}
	for _, r := range res.Dropped {
		fmt.Fprintf(c.stdout, "dropped %s\n", label(r))
	}
	fmt.Fprintf(c.stdout, "%s: %d added, %d dropped, %d kept\n", res.Provider, len(res.Added), len(res.Dropped), res.Kept)
	return nil
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
	for _, s := range []string{r.Name, r.Hostname} {
		if s != "" {
			parts = append(parts, s)
		}
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
