package broker

import (
	"context"
	"log/slog"

	"github.com/hostbroker/broker/internal/reaper"
	"github.com/hostbroker/broker/inventory"
)

// The reaper (watcher and sweep) and the signal check-in live in
// internal/reaper, whose package documentation names their parts. This
// file is the glue that needs a *Broker, which internal/reaper cannot
// import (package broker imports it):
//   - the init that makes this process a watcher (it must run in a package
//     every broker user links: this one), and the Broker the watcher opens
//     on each directory its owner used;
//   - a Broker's inventory and check-in as a reaper.Target.

func init() {
	reaper.RunIfWatcher(reaper.Watcher{Open: openForWatcher, Log: openLog})
}

// openForWatcher opens, in the watcher, the broker directory dir its owner
// used.
func openForWatcher(dir, file string, logger *slog.Logger) (reaper.Target, func(), error) {
	b, err := New(WithDirectory(dir), WithSettingsFile(file), WithLogger(logger), WithReaper(false), WithSignalHandling(false))
	if err != nil {
		return reaper.Target{}, nil, err
	}
	return b.reaperTarget(), func() { _ = b.Close() }, nil
}

// reaperTarget is what the reaper and the signal check-in need of b.
func (b *Broker) reaperTarget() reaper.Target {
	return reaper.Target{Dir: b.settings.Dir, Store: b.store, Logger: b.logger, Checkin: b.checkinRecords}
}

// watch, at a checkout, makes sure this process's watcher knows b's
// directory (WithReaper) and that a SIGINT or SIGTERM checks b's hosts in
// (WithSignalHandling).
func (b *Broker) watch() {
	if b.reaper {
		reaper.Watch(b.owner, b.settings.Dir, b.settings.File, b.logger)
	}
	if b.signals {
		b.sigMu.Lock()
		if b.unsignal == nil {
			b.unsignal = reaper.CheckinOnSignal(b.reaperTarget(), b.owner)
		}
		b.sigMu.Unlock()
	}
}

// unwatch, at Close, drops b from what a signal checks in (the handler
// goes with the last Broker that had one), so that a process making many
// Brokers does not keep them all. The watcher still checks in what b's
// hosts left if the process dies.
func (b *Broker) unwatch() {
	b.sigMu.Lock()
	defer b.sigMu.Unlock()
	if b.unsignal != nil {
		b.unsignal()
		b.unsignal = nil
	}
}

// startSweep starts the reaper's sweep in the background; Close stops it.
func (b *Broker) startSweep() {
	ctx, cancel := context.WithCancel(context.Background())
	b.stopSweep = cancel
	b.sweeping.Go(func() {
		defer cancel()
		reaper.Sweep(ctx, b.reaperTarget())
	})
}

// Orphaned reports whether rec's host was left by a process that is
// provably dead on this machine, and is not kept on purpose: neither kept
// for a person to inspect (state kept) nor kept until a time (a pool's
// hosts kept free for reuse, and hosts kept with a keep time, are checked
// in once that time has passed, by the pool or "brokertest cleanup
// --stale"). These are the hosts the reaper's sweep checks in, and with
// the expired ones those of "brokertest cleanup --stale".
func Orphaned(rec *inventory.Record) bool { return reaper.Orphaned(rec) }
