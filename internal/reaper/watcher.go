package reaper

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
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

	"github.com/hostbroker/broker/internal/onregister"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// watchTimeout bounds the watcher's check-in of one broker directory.
const watchTimeout = 10 * time.Minute

// link is this process's link to its watcher: one per process, since the
// watcher watches the process, not a Broker.
var link struct {
	mu   sync.Mutex
	pipe *os.File        // write end; kept referenced so it is never closed
	err  error           // starting the watcher failed: not tried again
	sent map[string]bool // "dir\tfile" keys written to the pipe
}

// Watch makes sure this process's watcher runs and knows the broker
// directory dir (read with the settings file file, "" for the default), so
// that it checks in what owner (this process) still holds there when the
// process dies. The first call starts the watcher. Errors are logged to
// logger, not returned: the hosts are still checked in at cleanup, by the
// sweep of a later Broker and by "brokertest cleanup --stale". It does
// nothing when the environment disables the reaper (Disabled).
func Watch(owner inventory.Owner, dir, file string, logger *slog.Logger) {
	if Disabled() {
		return
	}
	link.mu.Lock()
	defer link.mu.Unlock()
	key := dir + "\t" + file
	if link.sent[key] {
		return
	}
	if link.pipe == nil && link.err == nil {
		link.pipe, link.err = spawn(owner)
		if link.err != nil {
			logger.Warn("reaper: no watcher: hosts of this process will not be checked in if it is killed", "err", link.err)
		}
	}
	if link.pipe == nil {
		return
	}
	// The watcher takes this file's flock when it reads the key.
	if err := createOwnerFile(ownerLockPath(dir, owner)); err != nil {
		logger.Warn("reaper: a new Broker's sweep may reap this process's hosts beside its watcher", "err", err)
	}
	if _, err := fmt.Fprintln(link.pipe, key); err != nil {
		logger.Warn("reaper: write to the watcher's pipe", "err", err)
		return
	}
	if link.sent == nil {
		link.sent = map[string]bool{}
	}
	link.sent[key] = true
}

// spawn starts the watcher of owner: this executable re-run with WatchEnv
// and ProvidersEnv set and the read end of a pipe as fd 3. It returns the
// write end.
func spawn(owner inventory.Owner) (*os.File, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("reaper: find this executable to re-run as the watcher: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("reaper: watcher pipe: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("%s=%d:%d", WatchEnv, owner.PID, owner.Started),
		ProvidersEnv+"="+strings.Join(providers.Names(), ","))
	cmd.ExtraFiles = []*os.File{r} // fd 3 (watchFD)
	// Its own session: a signal to the owner's process group spares it; and
	// no inherited stdout, or "go test" would wait for it to exit.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("reaper: start the watcher %s: %w", exe, err)
	}
	go cmd.Wait() // reap the child if it ends first
	return w, nil
}

// Watcher is how the watcher process reaches a broker directory: package
// broker fills it in, as opening a directory needs a *broker.Broker.
type Watcher struct {
	// Open opens the inventory of the broker directory dir, read with the
	// settings file file ("" for the default), logging to logger; done
	// closes what it opened.
	Open func(dir, file string, logger *slog.Logger) (t Target, done func(), err error)
	// Log opens the broker log of dir.
	Log func(dir string) (*slog.Logger, io.Closer, error)
}

// RunIfWatcher makes this process its owner's watcher when WatchEnv is set:
// as soon as every provider the owner had registered (ProvidersEnv) is
// registered here too, it runs the watcher and exits. Otherwise it returns
// at once.
//
// Package broker calls it from its init, which runs before the inits of the
// providers the program imports (broker does not import them, and their
// import paths sort after its own): the watcher then runs from the Register
// call of the last of them, in its init, before main. As database/sql
// drivers, providers register in init.
func RunIfWatcher(w Watcher) {
	spec := os.Getenv(WatchEnv)
	if spec == "" {
		return
	}
	var want []string
	for n := range strings.SplitSeq(os.Getenv(ProvidersEnv), ",") {
		if n != "" {
			want = append(want, n)
		}
	}
	run := func(names []string) {
		for _, n := range want {
			if !slices.Contains(names, n) {
				return
			}
		}
		onregister.Set(nil)
		os.Exit(w.run(spec))
	}
	onregister.Set(run)
	run(providers.Names())
}

// run is the watcher process: it waits for the owner to die, then checks
// in what the owner left in each broker directory it used.
func (w Watcher) run(spec string) int {
	pidText, startedText, _ := strings.Cut(spec, ":")
	pid, err1 := strconv.Atoi(pidText)
	started, err2 := strconv.ParseUint(startedText, 10, 64)
	if err1 != nil || err2 != nil {
		fmt.Fprintf(os.Stderr, "reaper watcher: bad %s=%q\n", WatchEnv, spec)
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
			// Held until this watcher has reaped: a new Broker's sweep
			// leaves the owner's hosts to it meanwhile. Not taken (the
			// file gone): reapDir takes it if there is anything to reap.
			l := &ownerLock{path: ownerLockPath(dir, owner)}
			_, _ = l.try(false)
			locks[dir] = l
		}
	}
	code := 0
	for _, key := range keys {
		dir, file, _ := strings.Cut(key, "\t")
		if err := w.reapDir(dir, file, owner, locks[dir]); err != nil {
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
func (w Watcher) reapDir(dir, file string, owner inventory.Owner, lock *ownerLock) error {
	if _, err := os.Stat(dir); err != nil {
		return nil // a temporary broker directory already removed
	}
	ctx, cancel := context.WithTimeout(context.Background(), watchTimeout)
	defer cancel()
	// Nothing is written to dir (not even the log) unless the owner left
	// hosts: after a normal exit the directory may be being removed.
	var left []*inventory.Record
	quiet, quietDone, err := w.Open(dir, file, slog.New(slog.DiscardHandler))
	if err == nil {
		defer quietDone()
		// A Python broker must not wait on the lock file the owner may
		// have died holding (the kernel freed its flock, not that file).
		_, _ = quiet.Store.ClearAbandonedLock(ctx)
		left, err = Left(ctx, quiet.Store, owner)
	}
	if err == nil && len(left) == 0 {
		return nil
	}
	var lockErr error
	if err == nil && lock.f == nil {
		// Not taken while the owner lived: take it now (or leave the hosts
		// to the sweep that holds it), then look again, as that sweep may
		// have checked some in meanwhile.
		var held bool
		switch held, lockErr = lock.try(true); {
		case lockErr == nil && !held:
			return nil
		case lockErr == nil:
			if left, err = Left(ctx, quiet.Store, owner); err == nil && len(left) == 0 {
				return nil
			}
		}
	}
	logger, closer, lerr := w.Log(dir)
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	defer closer.Close()
	logger = logger.With("reaper_for", owner.PID)
	var (
		t    Target
		done func()
	)
	if err == nil {
		// Again, logging to the broker log this time.
		t, done, err = w.Open(dir, file, logger)
	}
	if err != nil {
		logger.Error("reaper watcher: open inventory", "err", err)
		return err
	}
	defer done()
	if lockErr != nil {
		// Reaped without the lock: check-in is idempotent.
		logger.Warn("reaper watcher: owner lock", "err", lockErr)
	}
	logger.Info("reaper watcher: owner died; checking in its hosts", "hosts", len(left))
	return CheckinLeft(ctx, t, left, "reaper watcher", checkinParallel)
}
