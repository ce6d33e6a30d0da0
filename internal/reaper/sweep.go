package reaper

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hostbroker/broker/inventory"
)

// scanning holds the inventory files a Sweep of this process is on.
var scanning struct {
	mu    sync.Mutex
	paths map[string]bool
}

// Sweep checks in the hosts of t's inventory whose owner died while its
// watcher was already gone (see Orphaned): for each such owner whose lock
// it gets (none while the owner's watcher lives), it checks in what the
// owner still holds, SweepParallel at a time, for SweepTimeout at most. What
// it does not get to stays for the next Broker. A Sweep on an inventory
// another Sweep of this process is on returns at once. It also removes the
// lock files of dead owners that nobody holds.
//
// An owner's lock held by another process is looked at again, less and
// less often, until SweepTimeout: its holder may be a watcher that is
// checking the hosts in (they then leave the inventory), or one that is
// dying (killed: the kernel lets go of its lock only once its files are
// closed, a little after it is gone from view), whose hosts would
// otherwise wait for the next Broker.
func Sweep(ctx context.Context, t Target) {
	path := t.Store.Path()
	if !startScanning(path) {
		return
	}
	defer stopScanning(path)

	ctx, cancel := context.WithTimeout(ctx, SweepTimeout)
	defer cancel()
	for delay := sweepRetry; ; delay = min(2*delay, maxSweepRetry) {
		if held := sweepOnce(ctx, t); held == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// sweepRetry and maxSweepRetry are the first and the longest wait before
// Sweep looks again at dead owners whose lock another process held.
const (
	sweepRetry    = 250 * time.Millisecond
	maxSweepRetry = 10 * time.Second
)

// sweepOnce is one pass of Sweep. It returns how many dead owners with
// hosts left it could not take the lock of (another process held it).
func sweepOnce(ctx context.Context, t Target) (held int) {
	recs, err := t.Store.Load(ctx)
	if err != nil {
		if ctx.Err() == nil { // not Close
			t.Logger.Warn("reaper sweep: read the inventory", "err", err)
		}
		return 0
	}
	owners := map[string]inventory.Owner{} // by lock file
	for _, r := range recs {
		if Orphaned(r) {
			owners[ownerLockPath(t.Dir, r.Broker.Owner)] = r.Broker.Owner
		}
	}
	sweepOwnerFiles(t.Dir, owners)
	if len(owners) == 0 {
		return 0
	}
	start := time.Now()
	locks := map[string]*ownerLock{}
	defer func() {
		for _, l := range locks {
			l.release()
		}
	}()
	held = lockOrphanOwners(t, owners, locks)
	if len(locks) == 0 {
		return held
	}
	// Read again under the locks: a watcher that has just finished, or
	// another sweep, may have checked hosts in since.
	if recs, err = t.Store.Load(ctx); err != nil {
		if ctx.Err() == nil { // not Close
			t.Logger.Warn("reaper sweep: read the inventory", "err", err)
		}
		return 0
	}
	var left []*inventory.Record
	for _, r := range recs {
		if Orphaned(r) && locks[ownerLockPath(t.Dir, r.Broker.Owner)] != nil {
			left = append(left, r)
		}
	}
	if len(left) == 0 {
		return held
	}
	t.Logger.Info("reaper sweep: checking in hosts left by dead processes whose watcher is gone",
		"owners", len(locks), "hosts", len(left), "parallel", SweepParallel, "bound", SweepTimeout)
	err = CheckinLeft(ctx, t, left, "reaper sweep", SweepParallel)
	logSwept(ctx, t, err, len(left), start)
	return held
}

// startScanning marks the inventory file at path as being swept by this
// process; it reports false when it already is. stopScanning ends that.
func startScanning(path string) bool {
	scanning.mu.Lock()
	defer scanning.mu.Unlock()
	if scanning.paths[path] {
		return false
	}
	if scanning.paths == nil {
		scanning.paths = map[string]bool{}
	}
	scanning.paths[path] = true
	return true
}

// stopScanning ends a startScanning.
func stopScanning(path string) {
	scanning.mu.Lock()
	delete(scanning.paths, path)
	scanning.mu.Unlock()
}

// lockOrphanOwners tries the lock of each owner in owners (by lock file),
// adding those it gets to locks; the others are logged and left. It
// returns how many locks another process held.
func lockOrphanOwners(t Target, owners map[string]inventory.Owner, locks map[string]*ownerLock) (held int) {
	for lockPath, o := range owners {
		l := &ownerLock{path: lockPath}
		got, err := l.try(true)
		switch {
		case err != nil:
			t.Logger.Warn("reaper sweep: hosts of a dead process left for later", "owner_pid", o.PID, "err", err)
		case !got:
			held++
			t.Logger.Debug("reaper sweep: the watcher of a dead process, or another sweep, holds its lock: its hosts are left to it", "owner_pid", o.PID)
		default:
			locks[lockPath] = l
		}
	}
	return held
}

// logSwept logs how the sweep's check-in of that many hosts, begun at
// start, ended: with err, or stopped by ctx.
func logSwept(ctx context.Context, t Target, err error, hosts int, start time.Time) {
	took := time.Since(start).Round(time.Millisecond)
	switch {
	case err == nil:
		t.Logger.Info("reaper sweep: done", "hosts", hosts, "took", took)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		t.Logger.Warn("reaper sweep: time bound reached; what is left waits for the next Broker", "bound", SweepTimeout, "err", err)
	case ctx.Err() != nil:
		t.Logger.Info("reaper sweep: stopped by Close; what is left waits for the next Broker", "took", took)
	default:
		t.Logger.Warn("reaper sweep: some hosts not checked in; they wait for the next Broker", "took", took, "err", err)
	}
}

// sweepOwnerFiles removes the lock files in the broker directory dir that
// dead owners of this boot left (their watcher was killed before it removed
// its own) and nobody holds, except those of owners in pending, which the
// sweep is about to take.
func sweepOwnerFiles(dir string, pending map[string]inventory.Owner) {
	dir = filepath.Join(dir, ownersDir)
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
