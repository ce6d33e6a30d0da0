// Package filelock is the inventory's locks between processes: the fair
// queue over an flock of <file>.flock that Go writers take (queue.go), and
// the Python broker's <file>.lock, created exclusively, which they take
// only around the rename that publishes a write (python.go). Every file is
// opened without following symbolic links (internal/safefile).
package filelock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hostbroker/broker/internal/safefile"
)

// The inventory's lock between processes is an flock of <path>.flock: the
// kernel gives it to one holder at a time and drops it when the holder
// dies, so a crash never blocks the next process. flock alone is unfair
// (measured: 39–52% of contended acquisitions went back to the process
// that had just released it; with the old deadline polling, 93%), so
// waiters first queue in arrival order, CLH style, in a directory beside
// the file:
//
//   - A waiter creates its ticket under a temporary name, flocks it
//     LOCK_EX and renames it to a name that sorts by arrival. So a visible
//     ticket is locked by a live owner, or its owner is dead (the kernel
//     dropped the lock), which LOCK_SH|LOCK_NB tells apart; whoever finds a
//     dead ticket removes it.
//   - It waits for its nearest live predecessor only: a blocking LOCK_SH
//     on that ticket returns when the owner releases it (or dies). A
//     deadline ends the wait at once; the blocked flock ends when the
//     predecessor lets go, and its descriptor is closed then.
//   - With no live ticket ahead, it takes the flock. The queue only
//     orders: mutual exclusion is still the kernel's flock, so a process
//     that does not queue (an older version of this library) is excluded
//     all the same, only not ordered.
//   - Release: unlock the flock, remove the ticket, close it. The
//     successor wakes with the flock already free.
//
// A process that re-enters after a release takes a new ticket behind
// everyone already waiting, which is what makes the order fair.

// ticketTemp prefixes a ticket not yet in line.
const ticketTemp = "tmp-"

// deadTempAge is how old an unlocked temporary ticket must be to be taken
// for one left by a process killed between creating and naming it: a live
// one is locked microseconds after it is created.
const deadTempAge = 10 * time.Second

// QueueDir is the queue's directory, hidden beside the inventory file.
func QueueDir(file string) string {
	return filepath.Join(filepath.Dir(file), "."+filepath.Base(file)+".queue")
}

// FlockPath is the file whose flock excludes writers.
func FlockPath(file string) string { return file + ".flock" }

// Held is the inventory lock, held.
type Held struct {
	mainFD   int // flocked LOCK_EX
	ticketFD int
	ticket   string // path of our ticket
	// Ahead is how many tickets were ahead of ours on arrival.
	Ahead int
}

// Release lets the next waiter in: the flock first, so that the successor,
// woken by the ticket's close, finds it free.
func (h *Held) Release() {
	_ = flockRetry(h.mainFD, syscall.LOCK_UN)
	syscall.Close(h.mainFD)
	_ = os.Remove(h.ticket)
	syscall.Close(h.ticketFD)
}

// ErrWait marks the failure of a wait for the lock because its context
// ended.
var ErrWait = errors.New("wait for lock")

// Acquire takes the lock of the inventory file in arrival order,
// creating the directory (0700) and lock file (0600) as needed. When ctx
// ends first it returns an error wrapping ErrWait and ctx.Err().
func Acquire(ctx context.Context, file string) (*Held, error) {
	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("inventory: create directory %s: %w", dir, err)
	}
	qdir := QueueDir(file)
	if err := os.Mkdir(qdir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("inventory: create lock queue %s: %w", qdir, err)
	}
	if err := checkQueueDir(qdir); err != nil {
		return nil, fmt.Errorf("inventory: lock queue: %w", err)
	}
	lockPath := FlockPath(file)
	mainFD, err := openRetry(lockPath, syscall.O_RDWR|syscall.O_CREAT, 0o600)
	if err != nil {
		return nil, fmt.Errorf("inventory: open lock %s: %w", lockPath, err)
	}
	ticketFD, ticket, err := newTicket(qdir)
	if err != nil {
		syscall.Close(mainFD)
		return nil, fmt.Errorf("inventory: queue for lock %s: %w", lockPath, err)
	}
	h := &Held{mainFD: mainFD, ticketFD: ticketFD, ticket: ticket, Ahead: -1}
	giveUp := func(err error) (*Held, error) {
		_ = os.Remove(ticket)
		syscall.Close(ticketFD)
		return nil, fmt.Errorf("inventory: lock %s: %w", lockPath, err)
	}
	for {
		pred, ahead, err := livePredecessor(qdir, filepath.Base(ticket))
		if err != nil {
			syscall.Close(mainFD)
			return giveUp(err)
		}
		if h.Ahead < 0 {
			h.Ahead = ahead
		}
		if pred < 0 {
			break
		}
		// The predecessor's owner releases, gives up or dies: look again.
		if err := flockContext(ctx, pred, syscall.LOCK_SH); err != nil {
			syscall.Close(mainFD)
			return giveUp(err)
		}
		syscall.Close(pred)
	}
	if err := flockContext(ctx, mainFD, syscall.LOCK_EX); err != nil {
		return giveUp(err)
	}
	return h, nil
}

// newTicket puts a ticket in line in qdir and returns it, flocked LOCK_EX.
// Its name is a number (zero-padded, so names sort as numbers): the time,
// or one more than the last ticket in line when the clock is behind it,
// then the pid and a random part.
func newTicket(qdir string) (fd int, path string, err error) {
	for attempt := 0; ; attempt++ {
		tmp := filepath.Join(qdir, ticketTemp+randomHex(8))
		fd, err = openRetry(tmp, syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL, 0o600)
		if err != nil {
			return -1, "", err
		}
		if err = flockRetry(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			syscall.Close(fd)
			os.Remove(tmp)
			return -1, "", err
		}
		seq := time.Now().UnixNano()
		if ents, err := os.ReadDir(qdir); err == nil {
			for i := len(ents) - 1; i >= 0; i-- {
				if n, ok := ticketSeq(ents[i].Name()); ok {
					seq = max(seq, n+1)
					break
				}
			}
		}
		path = filepath.Join(qdir, fmt.Sprintf("%020d-%d-%s", seq, os.Getpid(), randomHex(4)))
		err = os.Rename(tmp, path)
		if err == nil {
			return fd, path, nil
		}
		syscall.Close(fd)
		os.Remove(tmp)
		// Only a cleaner that took our temporary ticket for a dead one's
		// removes it, which takes an unlikely stall: try once more.
		if !errors.Is(err, fs.ErrNotExist) || attempt > 0 {
			return -1, "", err
		}
	}
}

// ticketSeq returns a ticket name's sequence number.
func ticketSeq(name string) (int64, bool) {
	num, _, ok := strings.Cut(name, "-")
	if !ok || strings.HasPrefix(name, ticketTemp) {
		return 0, false
	}
	n, err := strconv.ParseInt(num, 10, 64)
	return n, err == nil
}

// livePredecessor returns the nearest ticket ahead of mine whose owner
// lives, opened (not locked), or -1 when none is; and how many tickets
// were ahead. Dead tickets it passes are removed, and so are temporary
// tickets left by processes killed before they named theirs.
func livePredecessor(qdir, mine string) (fd, ahead int, err error) {
	ents, err := os.ReadDir(qdir) // sorted by name, so by arrival
	if err != nil {
		return -1, 0, err
	}
	var before []string
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, ticketTemp):
			removeDeadTemp(filepath.Join(qdir, name), e)
		case name < mine:
			before = append(before, name)
		}
	}
	for i := len(before) - 1; i >= 0; i-- {
		p := filepath.Join(qdir, before[i])
		fd, err := openRetry(p, syscall.O_RDONLY, 0)
		if errors.Is(err, safefile.ErrUnsafe) {
			return -1, 0, err
		}
		if err != nil {
			continue // released meanwhile
		}
		switch err := flockRetry(fd, syscall.LOCK_SH|syscall.LOCK_NB); err {
		case syscall.EWOULDBLOCK:
			return fd, len(before), nil
		case nil:
			// Unlocked while visible: its owner died (or has just let
			// go and removed it already).
			_ = os.Remove(p)
		}
		syscall.Close(fd)
	}
	return -1, len(before), nil
}

// removeDeadTemp removes a temporary ticket that is old and unlocked.
func removeDeadTemp(path string, e fs.DirEntry) {
	info, err := e.Info()
	if err != nil || time.Since(info.ModTime()) < deadTempAge {
		return
	}
	fd, err := openRetry(path, syscall.O_RDONLY, 0)
	if err != nil {
		return
	}
	if flockRetry(fd, syscall.LOCK_SH|syscall.LOCK_NB) == nil {
		_ = os.Remove(path)
	}
	syscall.Close(fd)
}

// flockContext flocks fd, giving up when ctx ends. The flock is tried
// without blocking first; then it blocks in a goroutine, since a flock
// cannot be interrupted. When ctx ends first, that goroutine owns fd from
// then on: it closes it when the flock returns (releasing whatever it got),
// so a caller that gave up must not use or close fd. On any other error
// the caller still owns fd.
func flockContext(ctx context.Context, fd, how int) error {
	err := flockRetry(fd, how|syscall.LOCK_NB)
	if err != syscall.EWOULDBLOCK {
		return err
	}
	if ctx.Done() == nil {
		return flockRetry(fd, how)
	}
	done := make(chan error, 1)
	go func() { done <- flockRetry(fd, how) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		go func() {
			<-done
			syscall.Close(fd)
		}()
		return fmt.Errorf("%w: %w", ErrWait, ctx.Err())
	}
}

func flockRetry(fd, how int) error {
	for {
		err := syscall.Flock(fd, how)
		if err != syscall.EINTR {
			return err
		}
	}
}

// The file is opened as safefile.OpenFile opens it: a symbolic link is
// not followed (a link planted at the lock's path must not make a write
// land in its target), and anything but a regular file of this user is
// refused with an error naming it.
func openRetry(path string, mode int, perm uint32) (int, error) {
	f, err := safefile.OpenFile(path, mode, fs.FileMode(perm))
	if err != nil {
		return -1, err
	}
	defer f.Close()
	// The descriptor outlives f: a duplicate, close-on-exec (under
	// ForkLock, so that no child started meanwhile inherits it).
	syscall.ForkLock.RLock()
	fd, err := syscall.Dup(int(f.Fd()))
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return -1, &os.PathError{Op: "dup", Path: path, Err: err}
	}
	return fd, nil
}

// checkQueueDir refuses a queue directory that is a symbolic link (which
// would put tickets, and their removal, elsewhere), not a directory, or
// another user's.
func checkQueueDir(qdir string) error {
	fi, err := os.Lstat(qdir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: is not a directory (a %s); refusing to use it (remove it): %w", qdir, fi.Mode().Type(), safefile.ErrUnsafe)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s: owned by uid %d, not by this user (uid %d); refusing to use it: %w", qdir, st.Uid, os.Geteuid(), safefile.ErrUnsafe)
	}
	return nil
}

// randomHex returns n random bytes in hex, for unique names.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("inventory: crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b)
}
