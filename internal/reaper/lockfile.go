package reaper

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/hostbroker/broker/internal/safefile"
	"github.com/hostbroker/broker/inventory"
)

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
	if err := ownersDirOf(path); err != nil {
		return fmt.Errorf("reaper: owner lock file: %w", err)
	}
	f, err := safefile.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("reaper: owner lock file: %w", err)
	}
	return f.Close()
}

// ownersDirOf makes the owners directory that holds the lock file at path,
// refusing one that is a symbolic link or not this user's.
func ownersDirOf(path string) error {
	dir := filepath.Dir(path)
	_, err := safefile.MkdirAll(filepath.Dir(dir), filepath.Base(dir), 0o700)
	return err
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
			if err := ownersDirOf(l.path); err != nil {
				return false, fmt.Errorf("reaper: owner lock: %w", err)
			}
			flags |= os.O_CREATE
		}
		f, err := safefile.OpenFile(l.path, flags, 0o600)
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
