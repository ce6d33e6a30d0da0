package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hostbroker/broker/inventory"
)

// The reaper: when a process first checks out a host it starts one detached
// watcher, the same executable re-run with watchEnv set. The watcher holds the
// read end of a pipe whose write end only the owner holds; the owner sends it
// each broker directory it uses. When the owner dies however it dies
// (SIGKILL, a -timeout panic skipping every t.Cleanup, os.Exit), the pipe
// closes and the watcher checks in every host the dead process still owns,
// then exits. After a normal exit it finds nothing to do.
//
// The handoff needs an init in a package every broker user imports: this one.

const (
	watchEnv      = "BROKER_WATCH_OWNER" // "pid:started" of the owner
	watchDisabled = "BROKER_NO_WATCHER"  // set to 1 to start no watcher
	watchFD       = 3
	// watchGrace is how long the watcher waits before a second pass over
	// hosts that were being created: a request the owner sent just before it
	// died may still be completing at the provider.
	watchGrace = 3 * time.Second
)

func init() {
	if spec := os.Getenv(watchEnv); spec != "" {
		runWatcherWhenRegistered(spec)
	}
}

// reaper is this process's link to its watcher and its signal handler: one
// per process, because both watch the process, not a Broker.
var reaper struct {
	mu      sync.Mutex
	pipe    *os.File        // write end; kept referenced so it is never closed
	dirs    map[string]bool // broker directories sent to the watcher
	brokers []*Broker       // brokers to clean up on SIGINT/SIGTERM
	signals bool
	err     error
}

// watch makes sure this process's watcher knows b's directory and that a
// SIGINT or SIGTERM checks b's hosts in. Errors starting the watcher are
// logged, not returned: the hosts are still checked in at cleanup and by
// "brokertest cleanup --stale".
func (b *Broker) watch() {
	if !b.watcher {
		return
	}
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	key := b.settings.Dir + "\t" + b.settings.File
	if reaper.dirs[key] {
		return
	}
	if reaper.pipe == nil && reaper.err == nil && os.Getenv(watchDisabled) == "" {
		reaper.pipe, reaper.err = startWatcher(b.owner)
		if reaper.err != nil {
			b.logger.Warn("no reaper: hosts of this process will not be checked in if it is killed", "err", reaper.err)
		}
	}
	if reaper.pipe != nil {
		if _, err := fmt.Fprintln(reaper.pipe, key); err != nil {
			b.logger.Warn("reaper pipe", "err", err)
		}
	}
	if reaper.dirs == nil {
		reaper.dirs = map[string]bool{}
	}
	reaper.dirs[key] = true
	reaper.brokers = append(reaper.brokers, b)
	if !reaper.signals {
		reaper.signals = true
		go handleSignals()
	}
}

func startWatcher(owner inventory.Owner) (*os.File, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("reaper: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("reaper: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%d", watchEnv, owner.PID, owner.Started), watchProvidersEnv())
	cmd.ExtraFiles = []*os.File{r} // fd 3
	// Its own session: a signal to the owner's process group spares it; and
	// no inherited stdout, or "go test" would wait for it to exit.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("reaper: start %s: %w", exe, err)
	}
	go cmd.Wait() // reap the child if it ends first
	return w, nil
}

// runWatcher is the watcher process: it waits for the owner to die, then
// checks in what the owner left in each broker directory it used.
func runWatcher(spec string) int {
	pidText, startedText, _ := strings.Cut(spec, ":")
	pid, err1 := strconv.Atoi(pidText)
	started, err2 := strconv.ParseUint(startedText, 10, 64)
	if err1 != nil || err2 != nil {
		fmt.Fprintf(os.Stderr, "broker watcher: bad %s=%q\n", watchEnv, spec)
		return 2
	}
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	var keys []string
	sc := bufio.NewScanner(os.NewFile(watchFD, "owner"))
	for sc.Scan() { // ends when the owner dies and the pipe closes
		keys = append(keys, sc.Text())
	}
	self := inventory.CurrentOwner("")
	owner := inventory.Owner{PID: pid, Started: started, BootID: self.BootID, Machine: self.Machine}
	code := 0
	for _, key := range keys {
		dir, file, _ := strings.Cut(key, "\t")
		if err := reapDir(dir, file, owner); err != nil {
			code = 1
		}
	}
	return code
}

func reapDir(dir, file string, owner inventory.Owner) error {
	if _, err := os.Stat(dir); err != nil {
		return nil // a temporary broker directory already removed
	}
	// Nothing is written to dir (not even the log) unless the owner left
	// hosts: after a normal exit the directory may be being removed.
	b, err := New(WithDirectory(dir), WithSettingsFile(file), WithLogger(slog.New(slog.DiscardHandler)), withoutWatcher())
	var left []*inventory.Record
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err == nil {
		var recs []*inventory.Record
		recs, err = b.Inventory(ctx)
		left = ownedBy(recs, owner)
	}
	if err == nil && len(left) == 0 {
		return nil
	}
	logger, closer, lerr := openLog(dir)
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	defer closer.Close()
	logger = logger.With("reaper_for", owner.PID)
	if err != nil {
		logger.Error("reaper: open inventory", "err", err)
		return err
	}
	b.logger = logger
	logger.Info("reaper: owner died; checking in its hosts", "hosts", len(left))
	return b.checkinLeft(ctx, left, "reaper")
}

// checkinLeft checks in the hosts a process left. A host whose creation
// was asked for may still appear at the provider after the first pass
// removed its record (a create call in flight when the process died or
// was interrupted): those are checked in again, by id, after a grace
// period, as are the hosts whose check-in failed and whose record is still
// there (a provider busy with a removal the dead process started, say).
// Check-in is idempotent.
func (b *Broker) checkinLeft(ctx context.Context, left []*inventory.Record, who string) error {
	firstErr := b.CheckinRecords(ctx, left...)
	if firstErr != nil {
		b.logger.Error(who+": checkin", "err", firstErr)
	}
	again := creatingOnly(left)
	if firstErr != nil {
		again = append(again, stillRecorded(b.store, left, again)...)
	}
	if len(again) == 0 {
		return firstErr
	}
	time.Sleep(watchGrace)
	b.logger.Info(who+": second pass over hosts being created or not checked in", "hosts", len(again))
	if err := b.CheckinRecords(ctx, again...); err != nil {
		b.logger.Error(who+": checkin", "err", err)
		return errors.Join(firstErr, err)
	}
	return nil
}

// stillRecorded returns the records of left that the inventory still
// holds, as it holds them, leaving out those in skip.
func stillRecorded(store *inventory.Store, left, skip []*inventory.Record) []*inventory.Record {
	recs, err := store.Load()
	if err != nil {
		return nil
	}
	var out []*inventory.Record
	for _, r := range recs {
		if slices.ContainsFunc(left, func(l *inventory.Record) bool { return inventory.Same(l, r) }) &&
			!slices.ContainsFunc(skip, func(s *inventory.Record) bool { return inventory.Same(s, r) }) {
			out = append(out, r)
		}
	}
	return out
}

// ownedBy returns the records of hosts the owner process holds; hosts kept
// on purpose (for reuse or inspection) are left alone.
func ownedBy(recs []*inventory.Record, owner inventory.Owner) []*inventory.Record {
	var out []*inventory.Record
	for _, r := range recs {
		if r.Broker == nil {
			continue
		}
		o := r.Broker.Owner
		if o.PID != owner.PID || o.Started != owner.Started || o.BootID != owner.BootID || o.Machine != owner.Machine {
			continue
		}
		switch r.Broker.State {
		case inventory.StateFree, inventory.StateKept:
			continue
		}
		out = append(out, r)
	}
	return out
}

func creatingOnly(recs []*inventory.Record) []*inventory.Record {
	var out []*inventory.Record
	for _, r := range recs {
		if r.Broker.State == inventory.StateCreating {
			out = append(out, r)
		}
	}
	return out
}

// handleSignals checks in this process's hosts on SIGINT or SIGTERM, then
// lets the signal do what it would have done.
func handleSignals() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	sig := <-ch
	reaper.mu.Lock()
	brokers := append([]*Broker(nil), reaper.brokers...)
	reaper.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var wg sync.WaitGroup
	for _, b := range brokers {
		wg.Go(func() {
			recs, err := b.Inventory(ctx)
			if err != nil {
				return
			}
			left := ownedBy(recs, b.owner)
			if len(left) == 0 {
				return
			}
			b.logger.Info("signal: checking in this process's hosts", "signal", sig.String(), "hosts", len(left))
			_ = b.checkinLeft(ctx, left, "signal")
		})
	}
	wg.Wait()
	cancel()
	signal.Reset(syscall.SIGINT, syscall.SIGTERM)
	p, _ := os.FindProcess(os.Getpid())
	_ = p.Signal(sig)
	time.Sleep(time.Second) // the signal ends the process
	os.Exit(128 + int(sig.(syscall.Signal)))
}
