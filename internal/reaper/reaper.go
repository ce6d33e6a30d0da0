// Package reaper checks in the hosts that a process which checked them out
// can no longer check in. It is the machinery behind broker.WithReaper and
// broker.WithSignalHandling; package broker holds only the glue that needs a
// *broker.Broker (the init that runs the watcher, the check-in calls).
//
// Names, used the same way in code, docs, environment variables and logs:
//
//   - The reaper is the whole mechanism: the watcher and the sweep.
//     broker.WithReaper(false), or BROKER_NO_REAPER=1 in the environment,
//     turns both off. Its log lines start with "reaper".
//   - The watcher is the reaper's process: the same executable re-run, once
//     per process, at its first checkout, with BROKER_REAPER_WATCH=<pid>:<start>
//     naming its owner. It holds the read end of a pipe whose write end only
//     the owner holds; the owner writes each broker directory it uses. When
//     the owner dies, however it dies (SIGKILL, a -timeout panic that skips
//     every t.Cleanup, os.Exit), the pipe closes and the watcher checks in
//     what the owner still holds there, then exits. After a normal exit it
//     finds nothing to do. Re-running the executable needs no set-up (no
//     sidecar binary, no daemon); its cost is measured in BENCHMARKS.md.
//   - The sweep is the next run's part: a watcher can die before its owner
//     (killed with it by a process-group kill, an OOM kill), so each new
//     Broker checks in, in the background, the hosts of dead owners whose
//     watcher is gone too (Sweep). Owner lock files under
//     <broker dir>/.owners/ tell the two cases apart: the watcher holds an
//     flock on its owner's file until it has reaped, and whoever reaps an
//     owner's hosts holds that flock meanwhile, so no two processes reap one
//     owner at a time.
//
// The signal check-in is not part of the reaper: on SIGINT or SIGTERM the
// process checks its own hosts in, then lets the signal end it
// (CheckinOnSignal). Without it, the signal ends the process at once and
// its watcher checks the hosts in afterwards.
package reaper

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/hostbroker/broker/inventory"
)

// Environment variables.
const (
	// WatchEnv, set in a watcher's environment by its owner, is
	// "<pid>:<start time>" of the owner process.
	WatchEnv = "BROKER_REAPER_WATCH"
	// ProvidersEnv, set in a watcher's environment by its owner, names the
	// providers the owner had registered (comma-separated): the watcher
	// waits for them before it reaps.
	ProvidersEnv = "BROKER_REAPER_PROVIDERS"
	// DisableEnv set to a non-empty value turns the reaper off, as
	// broker.WithReaper(false) does.
	DisableEnv = "BROKER_NO_REAPER"
	// oldDisableEnv is DisableEnv's name before the reaper had one name;
	// still honoured, as turning it off must not silently stop working.
	oldDisableEnv = "BROKER_NO_WATCHER"
)

const (
	// Grace is how long a check-in waits before a second pass over hosts
	// that were being created: a create call in flight when their process
	// died, or when a checkout was cut short, may still complete at the
	// provider.
	Grace = 3 * time.Second
	// SweepParallel and SweepTimeout bound what the sweep does in the
	// background of a new Broker: check-ins at once, and its whole run.
	SweepParallel = 8
	SweepTimeout  = 5 * time.Minute
	// checkinParallel bounds the check-ins at once of the watcher and of the
	// signal check-in, as Broker.Checkin's.
	checkinParallel = 32
	// ownersDir, under a broker directory, holds the owners' lock files.
	ownersDir = ".owners"
	// watchFD is the watcher's end of its owner's pipe.
	watchFD = 3
)

// Disabled reports whether the environment turns the reaper off
// (DisableEnv, or its old name BROKER_NO_WATCHER).
func Disabled() bool {
	return os.Getenv(DisableEnv) != "" || os.Getenv(oldDisableEnv) != ""
}

// Target is one inventory the reaper checks hosts in from, as a Broker on
// it lets the reaper do so.
type Target struct {
	Dir    string           // the broker directory: owner lock files live under it
	Store  *inventory.Store // its inventory
	Logger *slog.Logger
	// Checkin checks in the hosts of recs, limit at a time, and removes
	// their records; the joined error names every failure. A host already
	// gone is no failure.
	Checkin func(ctx context.Context, limit int, recs ...*inventory.Record) error
}
