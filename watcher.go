package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
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
//
// A watcher can die before its owner (killed with it by a process-group
// kill, an OOM kill): the owner's hosts would then wait for "brokertest
// cleanup --stale". So the next Broker of any process on the same directory
// reaps them (reapOrphans), in the background of New. To tell "the owner and
// its watcher are both gone" from "the watcher is still at work", each
// watcher holds an flock on <dir>/.owners/<pid>-<start>-<boot>.lock (the
// owner creates it, the watcher holds it from when it learns of the
// directory until it has reaped), and whoever reaps an owner's hosts holds
// that flock meanwhile, so no two processes reap one owner at a time. A
// holder removes the file before letting go of it, so a lock taken on a
// file no longer at its path is let go and taken again.

const (
	watchEnv      = "BROKER_WATCH_OWNER" // "pid:started" of the owner
	watchDisabled = "BROKER_NO_WATCHER"  // set to 1 to start no watcher
	watchFD       = 3
	// watchGrace is how long the watcher waits before a second pass over
	// hosts that were being created: a request the owner sent just before it
	// died may still be completing at the provider.
	watchGrace = 3 * time.Second

	// ownersDir, under a broker directory, holds the owners' lock files.
	ownersDir = ".owners"
	// reapParallel and reapTimeout bound what a new Broker's reaper does
	// in the background: check-ins at once, and its whole run.
	reapParallel = 8
	reapTimeout  = 5 * time.Minute
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

	scanning map[string]bool // inventory files a reapOrphans of this process is on
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
		// The watcher takes this file's flock when it reads the key.
		if err := createOwnerFile(ownerLockPath(b.settings.Dir, b.owner)); err != nil {
			b.logger.Warn("reaper: owner lock file (a new Broker may reap this process's hosts beside its watcher)", "err", err)
		}
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

// unwatch drops b from the brokers a signal checks in, so that a
// process making many Brokers does not keep them all (its watcher still
// checks in what b's hosts left if the process dies).
func (b *Broker) unwatch() {
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	reaper.brokers = slices.DeleteFunc(reaper.brokers, func(x *Broker) bool { return x == b })
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
	self := inventory.CurrentOwner("")
	owner := inventory.Owner{PID: pid, Started: started, BootID: self.BootID, Machine: self.Machine}
	var keys []string
	locks := map[string]*ownerLock{} // by broker directory
	sc := bufio.NewScanner(os.NewFile(watchFD, "owner"))
	for sc.Scan() { // ends when the owner dies and the pipe closes
		key := sc.Text()
		keys = append(keys, key)
		dir, _, _ := strings.Cut(key, "\t")
		if locks[dir] == nil {
			// Held until this watcher has reaped: a new Broker leaves the
			// owner's hosts to it meanwhile. Not taken (the file gone):
			// reapDir takes it if there is anything to reap.
			l := &ownerLock{path: ownerLockPath(dir, owner)}
			_, _ = l.try(false)
			locks[dir] = l
		}
	}
	code := 0
	for _, key := range keys {
		dir, file, _ := strings.Cut(key, "\t")
		if err := reapDir(dir, file, owner, locks[dir]); err != nil {
			code = 1
		}
	}
	for _, l := range locks {
		l.release()
	}
	return code
}

// reapDir checks in what owner left in dir, holding lock meanwhile (taken
// here if the watcher could not take it while the owner lived).
func reapDir(dir, file string, owner inventory.Owner, lock *ownerLock) error {
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
		// A Python broker must not wait on the lock file the owner may
		// have died holding (the kernel freed its flock, not that file).
		if _, cerr := b.store.ClearAbandonedLock(ctx); cerr != nil {
			b.logger.Warn("clear the lock file left by the dead owner", "err", cerr)
		}
		left, err = leftBy(ctx, b, owner)
	}
	if err == nil && len(left) == 0 {
		return nil
	}
	var lockErr error
	if err == nil && lock.f == nil {
		// Not taken while the owner lived: take it now (or leave the hosts
		// to the new Broker that holds it), then look again, as that
		// Broker may have checked some in meanwhile.
		var held bool
		switch held, lockErr = lock.try(true); {
		case lockErr == nil && !held:
			return nil
		case lockErr == nil:
			if left, err = leftBy(ctx, b, owner); err == nil && len(left) == 0 {
				return nil
			}
		}
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
	if lockErr != nil {
		// Reaped without the lock: check-in is idempotent.
		logger.Warn("reaper: owner lock", "err", lockErr)
	}
	logger.Info("reaper: owner died; checking in its hosts", "hosts", len(left))
	return b.checkinLeft(ctx, left, "reaper", maxParallel)
}

// leftBy returns the records of the hosts owner still holds in b's inventory.
func leftBy(ctx context.Context, b *Broker, owner inventory.Owner) ([]*inventory.Record, error) {
	recs, err := b.store.Load(ctx)
	return ownedBy(recs, owner), err
}

// checkinLeft checks in the hosts a process left, limit at a time. A host whose creation
// was asked for may still appear at the provider after the first pass
// removed its record (a create call in flight when the process died or
// was interrupted): those are checked in again, by id, after a grace
// period, as are the hosts whose check-in failed and whose record is still
// there (a provider busy with a removal the dead process started, say).
// Check-in is idempotent.
func (b *Broker) checkinLeft(ctx context.Context, left []*inventory.Record, who string, limit int) error {
	firstErr := b.checkinRecords(ctx, limit, left...)
	if firstErr != nil {
		b.logger.Error(who+": checkin", "err", firstErr)
	}
	again := creatingOnly(left)
	if firstErr != nil {
		again = append(again, stillRecorded(ctx, b.store, left, again)...)
	}
	if len(again) == 0 {
		return firstErr
	}
	select {
	case <-time.After(watchGrace):
	case <-ctx.Done():
		return errors.Join(firstErr, ctx.Err())
	}
	b.logger.Info(who+": second pass over hosts being created or not checked in", "hosts", len(again))
	if err := b.checkinRecords(ctx, limit, again...); err != nil {
		b.logger.Error(who+": checkin", "err", err)
		return errors.Join(firstErr, err)
	}
	return nil
}

// stillRecorded returns the records of left that the inventory still
// holds, as it holds them, leaving out those in skip.
func stillRecorded(ctx context.Context, store *inventory.Store, left, skip []*inventory.Record) []*inventory.Record {
	recs, err := store.Load(ctx)
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
			_ = b.checkinLeft(ctx, left, "signal", maxParallel)
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

// Orphaned reports whether rec's host was left by a process that is
// provably dead on this machine, and is not kept on purpose: neither kept
// for a person to inspect (state kept) nor kept until a time (a pool's
// hosts kept free for reuse, and hosts kept with a keep time, are checked
// in once that time has passed, by the pool or "brokertest cleanup
// --stale"). These are the hosts a new Broker's reaper checks in, and with
// the expired ones those of "brokertest cleanup --stale".
func Orphaned(rec *inventory.Record) bool {
	m := rec.Broker
	return m != nil && m.KeepUntil == nil && m.State != inventory.StateKept && m.Owner.Dead()
}

// ownerLockPath is the lock file of owner's process in the broker
// directory dir. Named by pid, start time and boot id: a process's
// identity on a machine, whatever its run ids.
func ownerLockPath(dir string, o inventory.Owner) string {
	return filepath.Join(dir, ownersDir, fmt.Sprintf("%d-%d-%s.lock", o.PID, o.Started, bootTag(o.BootID)))
}

// bootTag is a boot id as a file name part: it comes from the inventory,
// so anything but hex digits and dashes is replaced.
func bootTag(id string) string {
	if id == "" {
		return "none"
	}
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r == '-' {
			return r
		}
		return '_'
	}, id)
}

// parseOwnerFile reads an owner back from a lock file's name; the boot id
// is as bootTag made it.
func parseOwnerFile(name string) (inventory.Owner, bool) {
	base, ok := strings.CutSuffix(name, ".lock")
	parts := strings.SplitN(base, "-", 3)
	if !ok || len(parts) != 3 {
		return inventory.Owner{}, false
	}
	pid, err1 := strconv.Atoi(parts[0])
	started, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return inventory.Owner{}, false
	}
	return inventory.Owner{PID: pid, Started: started, BootID: parts[2]}, true
}

// createOwnerFile makes sure the owner lock file at path exists.
func createOwnerFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// ownerLock is an owner's lock file in one broker directory, held (f set)
// or not.
type ownerLock struct {
	path string
	f    *os.File
}

// try takes the lock without waiting, creating the file if create is set.
// It reports false, with no error, when another process holds it (or,
// without create, when the file does not exist).
func (l *ownerLock) try(create bool) (bool, error) {
	if l.f != nil {
		return true, nil
	}
	// A holder removes the file before letting go: a lock taken on a
	// file no longer at its path guards nothing, so open it again.
	for range 3 {
		flags := os.O_RDWR
		if create {
			if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
				return false, fmt.Errorf("reaper: owner lock: %w", err)
			}
			flags |= os.O_CREATE
		}
		f, err := os.OpenFile(l.path, flags, 0o600)
		if err != nil {
			if !create && errors.Is(err, fs.ErrNotExist) {
				return false, nil
			}
			return false, fmt.Errorf("reaper: owner lock: %w", err)
		}
		if err := flockNB(f); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return false, nil
			}
			return false, fmt.Errorf("reaper: owner lock %s: %w", l.path, err)
		}
		held, herr := f.Stat()
		now, nerr := os.Stat(l.path)
		if herr == nil && nerr == nil && os.SameFile(held, now) {
			l.f = f
			return true, nil
		}
		f.Close()
		if !create {
			return false, nil
		}
	}
	return false, nil // replaced again and again: others are at it
}

// release removes the lock file, then lets go of the lock.
func (l *ownerLock) release() {
	if l.f == nil {
		return
	}
	_ = os.Remove(l.path)
	_ = l.f.Close()
	l.f = nil
}

func flockNB(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EINTR {
			return err
		}
	}
}

// startReaper starts reapOrphans in the background; Close stops it.
func (b *Broker) startReaper() {
	ctx, cancel := context.WithCancel(context.Background())
	b.stopReaper = cancel
	b.reaping.Go(func() {
		defer cancel()
		b.reapOrphans(ctx)
	})
}

// reapOrphans checks in the hosts of b's inventory whose owner died while
// its watcher was already gone (see Orphaned): for each such owner whose
// lock it gets (none while the owner's watcher lives), it checks in what
// the owner still holds, reapParallel at a time, for reapTimeout at most.
// What it does not get to stays for the next Broker.
func (b *Broker) reapOrphans(ctx context.Context) {
	path := b.store.Path()
	if !startScanning(path) {
		return // another Broker of this process is on it
	}
	defer stopScanning(path)

	ctx, cancel := context.WithTimeout(ctx, reapTimeout)
	defer cancel()
	recs, err := b.store.Load(ctx)
	if err != nil {
		if ctx.Err() == nil { // not Close
			b.logger.Warn("reaper: read the inventory", "err", err)
		}
		return
	}
	owners := map[string]inventory.Owner{} // by lock file
	for _, r := range recs {
		if Orphaned(r) {
			owners[ownerLockPath(b.settings.Dir, r.Broker.Owner)] = r.Broker.Owner
		}
	}
	b.sweepOwnerFiles(owners)
	if len(owners) == 0 {
		return
	}
	start := time.Now()
	locks := map[string]*ownerLock{}
	defer func() {
		for _, l := range locks {
			l.release()
		}
	}()
	b.lockOrphanOwners(owners, locks)
	if len(locks) == 0 {
		return
	}
	// Read again under the locks: a watcher that has just finished, or
	// another reaper, may have checked hosts in since.
	if recs, err = b.store.Load(ctx); err != nil {
		if ctx.Err() == nil { // not Close
			b.logger.Warn("reaper: read the inventory", "err", err)
		}
		return
	}
	var left []*inventory.Record
	for _, r := range recs {
		if Orphaned(r) && locks[ownerLockPath(b.settings.Dir, r.Broker.Owner)] != nil {
			left = append(left, r)
		}
	}
	if len(left) == 0 {
		return
	}
	b.logger.Info("reaper: checking in hosts left by dead processes whose watcher is gone",
		"owners", len(locks), "hosts", len(left), "parallel", reapParallel, "bound", reapTimeout)
	err = b.checkinLeft(ctx, left, "reaper", reapParallel)
	b.logReaped(ctx, err, len(left), start)
}

// startScanning marks the inventory file at path as being reaped by this
// process; it reports false when it already is. stopScanning ends that.
func startScanning(path string) bool {
	reaper.mu.Lock()
	if reaper.scanning[path] {
		reaper.mu.Unlock()
		return false
	}
	if reaper.scanning == nil {
		reaper.scanning = map[string]bool{}
	}
	reaper.scanning[path] = true
	reaper.mu.Unlock()
	return true
}

// stopScanning ends a startScanning.
func stopScanning(path string) {
	reaper.mu.Lock()
	delete(reaper.scanning, path)
	reaper.mu.Unlock()
}

// lockOrphanOwners tries the lock of each owner in owners (by lock file),
// adding those it gets to locks; the others are logged and left.
func (b *Broker) lockOrphanOwners(owners map[string]inventory.Owner, locks map[string]*ownerLock) {
	for lockPath, o := range owners {
		l := &ownerLock{path: lockPath}
		held, err := l.try(true)
		switch {
		case err != nil:
			b.logger.Warn("reaper: hosts of a dead process left for later", "owner_pid", o.PID, "err", err)
		case !held:
			b.logger.Debug("reaper: the watcher of a dead process, or another reaper, holds its lock: its hosts are left to it", "owner_pid", o.PID)
		default:
			locks[lockPath] = l
		}
	}
}

// logReaped logs how reapOrphans's check-in of that many hosts, begun at
// start, ended: with err, or stopped by ctx.
func (b *Broker) logReaped(ctx context.Context, err error, hosts int, start time.Time) {
	took := time.Since(start).Round(time.Millisecond)
	switch {
	case err == nil:
		b.logger.Info("reaper: done", "hosts", hosts, "took", took)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		b.logger.Warn("reaper: time bound reached; what is left waits for the next Broker", "bound", reapTimeout, "err", err)
	case ctx.Err() != nil:
		b.logger.Info("reaper: stopped by Close; what is left waits for the next Broker", "took", took)
	default:
		b.logger.Warn("reaper: some hosts not checked in; they wait for the next Broker", "took", took, "err", err)
	}
}

// sweepOwnerFiles removes the lock files that dead owners of this boot left
// (their watcher was killed before it removed its own) and nobody holds,
// except those of owners in pending, which reapOrphans is about to take.
func (b *Broker) sweepOwnerFiles(pending map[string]inventory.Owner) {
	dir := filepath.Join(b.settings.Dir, ownersDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	self := inventory.CurrentOwner("")
	for _, e := range entries {
		o, ok := parseOwnerFile(e.Name())
		if !ok || o.BootID != bootTag(self.BootID) {
			continue // another boot's, or another machine's: not provable
		}
		path := filepath.Join(dir, e.Name())
		o.BootID, o.Machine = self.BootID, self.Machine
		if _, ok := pending[path]; ok || !o.Dead() {
			continue
		}
		l := &ownerLock{path: path}
		if held, _ := l.try(false); held {
			l.release()
		}
	}
}
