package inventory

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// ErrCorrupt is returned (wrapped) when the inventory file cannot be parsed.
// The file is then never written: a person must look at it.
var ErrCorrupt = errors.New("inventory file is corrupt")

// Store is an inventory file shared by every process of a user. Writers
// serialise on an flock of a sibling lock file (a crashed holder's lock is
// released by the kernel, so it never blocks the next one) and replace the
// file atomically (temp file, fsync, rename, fsync of the directory): a
// reader sees the old or the new list, never a torn one.
type Store struct {
	path string
}

// Open returns the store for the inventory file at path. Nothing is read or
// created until the first call.
func Open(path string) *Store { return &Store{path: path} }

// Path returns the inventory file's path.
func (s *Store) Path() string { return s.path }

// Load returns the records; none when the file does not exist. It takes no
// lock, since this library replaces the file atomically; but the Python
// broker rewrites it in place under its lock, so a file missing, empty or
// corrupt while that lock is held is read again once it is released.
func (s *Store) Load() ([]*Record, error) {
	recs, err := s.load()
	if err == nil && len(recs) > 0 {
		return recs, nil
	}
	py := s.pythonLockPath()
	data, rerr := os.ReadFile(py)
	if errors.Is(rerr, fs.ErrNotExist) && err == nil {
		return recs, nil // an empty inventory, or none yet
	}
	if rerr == nil && string(data) != pythonLockMark {
		ctx, cancel := context.WithTimeout(context.Background(), pythonLockWait)
		defer cancel()
		_ = poll(ctx, func() (bool, error) {
			_, err := os.Stat(py)
			return errors.Is(err, fs.ErrNotExist), nil
		})
	}
	// Read again even when no lock is seen: it may have been released
	// between the first read and the look.
	return s.load()
}

// pythonLockWait bounds how long Load waits for the Python broker to finish
// rewriting the file: as long as the Python broker waits for its lock.
const pythonLockWait = 10 * time.Second

func (s *Store) load() ([]*Record, error) {
	data, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inventory: read %s: %w", s.path, err)
	}
	return Parse(s.path, data)
}

// Update runs fn on the records under the exclusive lock and writes back the
// records it returns, atomically. When fn returns an error nothing is
// written. A corrupt file is never overwritten.
func (s *Store) Update(fn func([]*Record) ([]*Record, error)) error {
	return s.UpdateContext(context.Background(), fn)
}

// UpdateContext is Update with a deadline on waiting for the lock.
func (s *Store) UpdateContext(ctx context.Context, fn func([]*Record) ([]*Record, error)) error {
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	recs, err := s.Load()
	if err != nil {
		return err
	}
	out, err := fn(recs)
	if err != nil {
		return err
	}
	return s.write(out)
}

// Put adds each record, or replaces the record Same as it.
func (s *Store) Put(recs ...*Record) error {
	return s.PutContext(context.Background(), recs...)
}

// PutContext is Put with a deadline on waiting for the lock.
func (s *Store) PutContext(ctx context.Context, recs ...*Record) error {
	return s.UpdateContext(ctx, func(have []*Record) ([]*Record, error) {
		for _, r := range recs {
			replaced := false
			for i, h := range have {
				if Same(h, r) {
					have[i] = r
					replaced = true
					break
				}
			}
			if !replaced {
				have = append(have, r)
			}
		}
		return have, nil
	})
}

// Remove drops every record Same as any of recs.
func (s *Store) Remove(recs ...*Record) error {
	return s.RemoveContext(context.Background(), recs...)
}

// RemoveContext is Remove with a deadline on waiting for the lock.
func (s *Store) RemoveContext(ctx context.Context, recs ...*Record) error {
	return s.UpdateContext(ctx, func(have []*Record) ([]*Record, error) {
		out := have[:0]
	next:
		for _, h := range have {
			for _, r := range recs {
				if Same(h, r) {
					continue next
				}
			}
			out = append(out, h)
		}
		return out, nil
	})
}

// lock takes the inventory's two locks, creating the directory (0700) as
// needed. First an flock of <path>.flock (0600): it orders this library's
// processes, and the kernel drops it when a holder dies, so a crash never
// blocks the next one. Then the Python broker's lock (see pythonLock), so
// that the two tools never write the file at the same time.
func (s *Store) lock(ctx context.Context) (unlock func(), err error) {
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("inventory: create directory %s: %w", dir, err)
	}
	lockPath := s.path + ".flock"
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("inventory: open lock %s: %w", lockPath, err)
	}
	fd := int(f.Fd())
	if _, hasDeadline := ctx.Deadline(); !hasDeadline && ctx.Done() == nil {
		err = flockRetry(fd, syscall.LOCK_EX)
	} else {
		// flock cannot be interrupted by a context: poll a non-blocking
		// attempt, backing off up to 20ms.
		err = poll(ctx, func() (bool, error) {
			err := flockRetry(fd, syscall.LOCK_EX|syscall.LOCK_NB)
			if err == syscall.EWOULDBLOCK {
				return false, nil
			}
			return true, err
		})
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("inventory: lock %s: %w", lockPath, err)
	}
	release := func() {
		_ = syscall.Flock(fd, syscall.LOCK_UN)
		f.Close()
	}
	py, err := s.pythonLock(ctx)
	if err != nil {
		release()
		return nil, err
	}
	return func() {
		os.Remove(py)
		release()
	}, nil
}

// pythonLockMark is what this library writes into the Python broker's lock
// file; the Python broker creates it empty.
const pythonLockMark = "brokertest\n"

// staleLockAge is when an empty lock file is taken to be left by a Python
// broker that died holding it: the Python broker holds its lock for one read
// or write and gives up waiting for it after 10 s.
const staleLockAge = 30 * time.Second

// pythonLock takes the Python broker's lock: <resolved path>.lock, created
// exclusively and removed on release (its FileLock), waiting while another
// holds it. Called with the flock held, so a lock file carrying our mark
// is from a process of ours that died: it is removed at once. An empty one
// older than staleLockAge is removed too, unless a process flocks it (an
// earlier version of this library locked that file). It returns the lock
// file's path.
func (s *Store) pythonLock(ctx context.Context) (string, error) {
	path := s.pythonLockPath()
	err := poll(ctx, func() (bool, error) {
		err := createMarked(path)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return true, err
		}
		if staleLock(path) {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return true, err
			}
		}
		return false, nil
	})
	if err != nil {
		return "", fmt.Errorf("inventory: take the Python broker's lock %s (if no broker is running, it was left by one that crashed: remove it): %w", path, err)
	}
	return path, nil
}

// createMarked creates the lock file at path holding pythonLockMark, or
// fails with fs.ErrExist. The file appears with its mark (a hard link to a
// file written first), so a process killed while taking the lock never
// leaves an empty one, which would read as a Python broker's for
// staleLockAge. Without hard links, it is created and then written.
func createMarked(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	_, err = tmp.WriteString(pythonLockMark)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	os.Remove(tmp.Name())
	var le *os.LinkError
	if err == nil || errors.Is(err, fs.ErrExist) || !errors.As(err, &le) {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(pythonLockMark)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// pythonLockPath is where the Python broker puts its lock: beside the
// inventory file's resolved path.
func (s *Store) pythonLockPath() string {
	path := s.path
	if d, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		path = filepath.Join(d, filepath.Base(path))
	}
	if r, err := filepath.EvalSymlinks(path); err == nil {
		path = r
	}
	return path + ".lock"
}

// staleLock reports whether the lock file at path was left by a dead
// holder (see pythonLock).
func staleLock(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false // gone, or not ours to judge
	}
	defer f.Close()
	buf := make([]byte, len(pythonLockMark)+1)
	n, _ := f.Read(buf)
	if string(buf[:n]) == pythonLockMark {
		return true
	}
	st, err := f.Stat()
	if err != nil || n > 0 || time.Since(st.ModTime()) < staleLockAge {
		return false
	}
	return flockRetry(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) == nil
}

// poll calls try until it reports done, waiting between calls (0.5 ms,
// doubling up to 20 ms) and giving up when ctx ends.
func poll(ctx context.Context, try func() (done bool, err error)) error {
	wait := 500 * time.Microsecond
	for {
		done, err := try()
		if done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for lock: %w", ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
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

// write replaces the file atomically; on any failure the old file stays.
func (s *Store) write(recs []*Record) error {
	data, err := Marshal(recs)
	if err != nil {
		return err
	}
	dir := filepath.Dir(s.path)
	pattern := "." + filepath.Base(s.path) + ".tmp-*"
	// Only the lock holder writes temp files: any left are from a writer
	// that was killed mid-write.
	if left, _ := filepath.Glob(filepath.Join(dir, pattern)); len(left) > 0 {
		for _, f := range left {
			os.Remove(f)
		}
	}
	tmp, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return fmt.Errorf("inventory: write %s: %w", s.path, err)
	}
	tmpName := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(tmpName)
		return fmt.Errorf("inventory: write %s: %w", s.path, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("inventory: write %s: %w", s.path, err)
	}
	if err := os.Rename(tmpName, s.path); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("inventory: replace %s: %w", s.path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // durability of the rename; the data is already safe
		d.Close()
	}
	return nil
}

// Select chooses records as the CLI does: every record with all, else those
// named by ids. An id is a local id (a position in the filtered list, as
// the inventory command prints), a _brokertest id, a name or a hostname.
// The filter narrows first; it never widens the selection. An id that
// matches nothing is an error naming it, and so is a filter that fails on a
// record (ApplyErr): a selection to check in is never a guess.
func Select(recs []*Record, ids []string, all bool, f Filter) ([]*Record, error) {
	filtered, err := f.ApplyErr(recs)
	if err != nil {
		return nil, err
	}
	if all {
		return filtered, nil
	}
	var out []*Record
	seen := map[*Record]bool{}
	add := func(r *Record) {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for _, id := range ids {
		if n, err := strconv.Atoi(id); err == nil {
			if n < 0 || n >= len(filtered) {
				return nil, fmt.Errorf("inventory: local id %d out of range (0..%d)", n, len(filtered)-1)
			}
			add(filtered[n])
			continue
		}
		found := false
		for _, r := range filtered {
			if id != "" && (r.ID() == id || r.Name == id || r.Hostname == id) {
				add(r)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("inventory: no host %q in the inventory%s", id, f.describe())
		}
	}
	return out, nil
}
