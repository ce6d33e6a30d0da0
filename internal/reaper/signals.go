package reaper

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hostbroker/broker/inventory"
)

// SignalTimeout bounds the signal check-in: then the signal ends the
// process all the same, and the watcher checks in what is left.
const SignalTimeout = 2 * time.Minute

// signals is the process's SIGINT/SIGTERM handler and what it checks in.
var signals struct {
	mu   sync.Mutex
	next int
	regs map[int]signalReg
	ch   chan os.Signal // the handler's, while installed
	stop chan struct{}  // closed to remove the handler; nil when none is installed
}

type signalReg struct {
	t     Target
	owner inventory.Owner
}

// CheckinOnSignal makes a SIGINT or SIGTERM check in what owner (this
// process) holds in t's inventory, SignalTimeout at most, before the signal
// ends the process: the handler then restores the signals' default action
// (for every signal.Notify of the process) and raises the signal again, so
// the process ends as the signal says (killed by SIGINT, or SIGTERM).
//
// The handler is installed (signal.Notify) with the first registration and
// removed (signal.Stop) with the last: while nothing is registered, the
// signals do what they would do without this package. Registrations on one
// inventory file check it in once. remove undoes this registration; it may
// be called more than once.
func CheckinOnSignal(t Target, owner inventory.Owner) (remove func()) {
	signals.mu.Lock()
	defer signals.mu.Unlock()
	id := signals.next
	signals.next++
	if signals.regs == nil {
		signals.regs = map[int]signalReg{}
	}
	signals.regs[id] = signalReg{t, owner}
	if signals.stop == nil {
		signals.ch = make(chan os.Signal, 1)
		signals.stop = make(chan struct{})
		signal.Notify(signals.ch, syscall.SIGINT, syscall.SIGTERM)
		go handle(signals.ch, signals.stop)
	}
	var once sync.Once
	return func() { once.Do(func() { unregister(id) }) }
}

// SignalHandled reports whether the signal handler is installed.
func SignalHandled() bool {
	signals.mu.Lock()
	defer signals.mu.Unlock()
	return signals.stop != nil
}

func unregister(id int) {
	signals.mu.Lock()
	defer signals.mu.Unlock()
	delete(signals.regs, id)
	if len(signals.regs) == 0 && signals.stop != nil {
		signal.Stop(signals.ch)
		close(signals.stop)
		signals.ch, signals.stop = nil, nil
	}
}

// handle waits for a signal on ch, or for stop (ch no longer notified).
func handle(ch chan os.Signal, stop chan struct{}) {
	select {
	case sig := <-ch:
		checkinOnSignal(sig)
	case <-stop:
		select {
		case sig := <-ch: // arrived as the last registration went
			raise(sig)
		default:
		}
	}
}

// terminating is closed when a signal check-in begins: the process is
// ending.
var (
	terminating     = make(chan struct{})
	terminatingOnce sync.Once
)

// checkingOut counts the checkouts under way in this process.
var checkingOut atomic.Int64

// CheckingOut tells the signal check-in that a checkout is under way until
// done is called: a signal then looks for the hosts it records a second
// time, once it has stopped.
func CheckingOut() (done func()) {
	checkingOut.Add(1)
	var once sync.Once
	return func() { once.Do(func() { checkingOut.Add(-1) }) }
}

// onTerminate holds what OnTerminate registered.
var onTerminate struct {
	sync.Mutex
	next  int
	funcs map[int]func()
}

// OnTerminate calls f when a SIGINT or SIGTERM check-in begins, unless
// remove is called first.
func OnTerminate(f func()) (remove func()) {
	onTerminate.Lock()
	defer onTerminate.Unlock()
	select {
	case <-terminating:
		go f()
		return func() {}
	default:
	}
	if onTerminate.funcs == nil {
		onTerminate.funcs = map[int]func(){}
	}
	id := onTerminate.next
	onTerminate.next++
	onTerminate.funcs[id] = f
	return func() {
		onTerminate.Lock()
		delete(onTerminate.funcs, id)
		onTerminate.Unlock()
	}
}

// Terminating is closed once a SIGINT or SIGTERM check-in has begun: the
// process ends when it is done. Checkouts under way stop (a host made now
// would outlive the process), and return to no caller: a test that saw its
// checkout fail would end the process before the check-in is done.
func Terminating() <-chan struct{} { return terminating }

// checkinOnSignal checks in the hosts of every registration, then raises
// sig again.
func checkinOnSignal(sig os.Signal) {
	busy := checkingOut.Load() > 0
	onTerminate.Lock()
	terminatingOnce.Do(func() { close(terminating) })
	funcs := onTerminate.funcs
	onTerminate.funcs = nil
	onTerminate.Unlock()
	for _, f := range funcs {
		f()
	}
	signals.mu.Lock()
	byStore := map[string]signalReg{}
	for _, r := range signals.regs {
		byStore[r.t.Store.Path()] = r
	}
	signals.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), SignalTimeout)
	var wg sync.WaitGroup
	for _, r := range byStore {
		wg.Go(func() {
			left, err := Left(ctx, r.t.Store, r.owner)
			if err != nil {
				r.t.Logger.Warn("signal: read the inventory", "signal", sig.String(), "err", err)
				return
			}
			if len(left) == 0 {
				if !busy {
					return
				}
				// A checkout under way may record a host yet: look once
				// more, once its cancellation has had its effect.
				select {
				case <-time.After(Grace):
				case <-ctx.Done():
				}
				if left, err = Left(ctx, r.t.Store, r.owner); err != nil || len(left) == 0 {
					return
				}
			}
			r.t.Logger.Info("signal: checking in this process's hosts", "signal", sig.String(), "hosts", len(left))
			_ = CheckinLeft(ctx, r.t, left, "signal", checkinParallel)
			// Checkouts under way when the signal came wrote records
			// since (or removed them, cancelled): what is left now.
			if !busy {
				return
			}
			if again, err := Left(ctx, r.t.Store, r.owner); err == nil && len(again) > 0 {
				r.t.Logger.Info("signal: checking in hosts recorded meanwhile", "signal", sig.String(), "hosts", len(again))
				_ = CheckinLeft(ctx, r.t, again, "signal", checkinParallel)
			}
		})
	}
	wg.Wait()
	cancel()
	raise(sig)
}

// raise restores sig's default action and sends it to this process, which
// it ends.
func raise(sig os.Signal) {
	signal.Reset(syscall.SIGINT, syscall.SIGTERM)
	p, _ := os.FindProcess(os.Getpid())
	_ = p.Signal(sig)
	time.Sleep(time.Second) // the signal ends the process
	os.Exit(128 + int(sig.(syscall.Signal)))
}
