package inventory

import "github.com/hostbroker/broker/inventory/internal/filelock"

// Writes returns how many times s replaced the inventory file.
func Writes(s *Store) int64 { return s.writes.Load() }

// Parses returns how many times s parsed the inventory file while holding
// the lock.
func Parses(s *Store) int64 { return s.parses.Load() }

// Pending returns how many updates wait for s's next batch.
func Pending(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// SetBeforeRename sets a function s calls while it holds the Python
// broker's lock, just before it renames a new file into place.
func SetBeforeRename(s *Store, f func()) { s.beforeRename = f }

// QueueDir is the directory of s's lock queue.
func QueueDir(s *Store) string { return s.queueDir() }

// PrevPath is where s keeps the previous version it wrote.
func PrevPath(s *Store) string { return s.prevPath() }

// OurMark is the mark this process writes into the Python broker's lock.
func OurMark() string { return filelock.OurMark() }
