package inventory

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/hostbroker/broker/internal/safefile"
	"github.com/hostbroker/broker/inventory/internal/filelock"
)

// The locks (inventory/internal/filelock), as the store uses them.
type (
	lockHeld   = filelock.Held
	pythonLock = filelock.Python
)

func (s *Store) queueDir() string       { return filelock.QueueDir(s.path) }
func (s *Store) flockPath() string      { return filelock.FlockPath(s.path) }
func (s *Store) pythonLockPath() string { return filelock.PythonLockPath(s.path) }
func (s *Store) removeLeftovers()       { filelock.RemoveLeftovers(s.path) }

func (s *Store) acquire(ctx context.Context) (*lockHeld, error) {
	return filelock.Acquire(ctx, s.path)
}

func (s *Store) takePythonLock(alive func() error) (*pythonLock, error) {
	return filelock.TakePython(s.path, alive)
}

// ClearAbandonedLock removes the Python broker's lock file when a process
// of this library left it: its mark names a process that is dead (or it
// is an older version's mark and no process of ours holds the inventory
// lock). The reaper's watcher calls it when its owner dies, so that a
// Python broker is not kept waiting for the next Go writer. It also
// removes the temporary files that killed processes leave beside the
// lock. It reports whether it removed the lock; a lock of a live process,
// or of the Python broker, is left alone. ctx bounds its wait for the
// inventory lock (and so does clearAbandonedWait).
func (s *Store) ClearAbandonedLock(ctx context.Context) (bool, error) {
	path := filelock.PythonLockPath(s.path)
	data, err := safefile.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("inventory: read %s: %w", path, err)
	}
	owner, known, ours := filelock.ParseMark(data)
	if !ours || known && !owner.Dead() {
		return false, nil
	}
	// A Go process takes and removes the lock only with the flock held:
	// holding it, the lock cannot change under us. A live holder would
	// have removed a dead process's lock itself, so this wait is short.
	ctx, cancel := context.WithTimeout(ctx, clearAbandonedWait)
	defer cancel()
	h, err := filelock.Acquire(ctx, s.path)
	if err != nil {
		return false, err
	}
	defer h.Release()
	filelock.RemoveLeftovers(s.path)
	data, err = safefile.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("inventory: read %s: %w", path, err)
	}
	// With the flock held, any mark is a dead process's.
	if _, _, ours := filelock.ParseMark(data); !ours {
		return false, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("inventory: remove abandoned lock %s: %w", path, err)
	}
	s.log().Info("inventory: removed the Python broker's lock left by a dead process", "lock", path, "mark", strings.TrimSpace(string(data)))
	return true, nil
}

// clearAbandonedWait bounds ClearAbandonedLock's wait for the flock.
const clearAbandonedWait = 10 * time.Second
