package filelock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hostbroker/broker/internal/proclive"
	"github.com/hostbroker/broker/internal/safefile"
)

// The Python broker's lock is <resolved path>.lock, created exclusively
// and removed on release (its FileLock: open(lock, "x"); on
// FileExistsError it sleeps 1 s and gives up after 10 s). The Python
// broker rewrites the inventory in place while holding it.
//
// This library takes it only around the rename that publishes a write:
// the records are read, changed, encoded, written to a temp file and
// fsynced under our own flock alone; then the Python lock is taken, the
// file checked to be what we read (if the Python broker wrote meanwhile,
// it is read again and the batch applied again: its functions can be run
// again), the temp file renamed over it and the lock removed. So the
// Python broker waits for a stat, a read and a rename at most, not for a
// parse or an fsync, and its attempts once a second nearly always find
// the lock free; a Go writer killed while holding it leaves a marked lock
// file that any Go writer (which holds the flock, so it knows no other Go
// process is using it) or the dead process's watcher (ClearAbandonedLock)
// removes.

// pythonLockMark begins what this library writes into the Python broker's
// lock file; the Python broker creates it empty. The full mark names the
// process: "brokertest <pid> <start ticks> <boot id> <machine>\n". Older
// versions wrote the bare oldPythonLockMark.
const (
	pythonLockMark    = "brokertest"
	oldPythonLockMark = "brokertest\n"
)

// staleLockAge is when an empty lock file is taken to be left by a Python
// broker that died holding it: the Python broker holds its lock for one read
// or write and gives up waiting for it after 10 s.
const staleLockAge = 30 * time.Second

// OurMark is this process's mark.
func OurMark() string {
	o := proclive.Self()
	boot := o.BootID
	if boot == "" {
		boot = "-"
	}
	return fmt.Sprintf("%s %d %d %s %s\n", pythonLockMark, o.PID, o.Started, boot, o.Machine)
}

// ParseMark tells whether a lock file's content is a mark of this library
// and, for a full mark, whose.
func ParseMark(data []byte) (owner proclive.Process, known, ours bool) {
	s := string(data)
	if s == oldPythonLockMark {
		return proclive.Process{}, false, true
	}
	if !strings.HasPrefix(s, pythonLockMark+" ") || !strings.HasSuffix(s, "\n") {
		return proclive.Process{}, false, false
	}
	f := strings.SplitN(strings.TrimSuffix(s, "\n"), " ", 5)
	if len(f) != 5 {
		return proclive.Process{}, false, true
	}
	pid, err1 := strconv.Atoi(f[1])
	started, err2 := strconv.ParseUint(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		return proclive.Process{}, false, true
	}
	o := proclive.Process{PID: pid, Started: started, BootID: f[3], Machine: f[4]}
	if o.BootID == "-" {
		o.BootID = ""
	}
	return o, true, true
}

// PythonLockPath is where the Python broker puts its lock: beside the
// inventory file's resolved path.
func PythonLockPath(file string) string {
	path := file
	if d, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		path = filepath.Join(d, filepath.Base(path))
	}
	if r, err := filepath.EvalSymlinks(path); err == nil {
		path = r
	}
	return path + ".lock"
}

// PythonLockError says which lock a wait was for.
func PythonLockError(path string, err error) error {
	return fmt.Errorf("inventory: take the Python broker's lock %s (if no broker is running, it was left by one that crashed: remove it): %w", path, err)
}

// Python is the Python broker's lock, held.
type Python struct {
	Path     string
	Taken    time.Time
	TookOver bool // a stale empty lock (a Python broker that died) was removed
}

// TakePython takes the Python broker's lock, waiting while another
// holds it until alive reports that nobody waits any more. Called with the
// flock held: a lock file carrying our mark is then from a process of ours
// that died, and is removed at once. An empty one older than staleLockAge
// is removed too (its Python broker died, perhaps in the middle of a
// rewrite: tookOver says so), unless a process flocks it (an earlier
// version of this library locked that file).
func TakePython(file string, alive func() error) (*Python, error) {
	path := PythonLockPath(file)
	mark, err := prepareMark(path)
	if err != nil {
		return nil, PythonLockError(path, err)
	}
	defer os.Remove(mark)
	l := &Python{Path: path}
	wait := 500 * time.Microsecond
	for {
		err := linkMarked(mark, path)
		if err == nil {
			l.Taken = time.Now()
			return l, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, PythonLockError(path, err)
		}
		stale, python, err := staleLock(path)
		if err != nil {
			return nil, PythonLockError(path, err)
		}
		if stale {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, PythonLockError(path, err)
			}
			l.TookOver = l.TookOver || python
			continue
		}
		if err := alive(); err != nil {
			return nil, PythonLockError(path, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// Release removes the lock file.
func (l *Python) Release() error {
	if err := os.Remove(l.Path); err != nil {
		return fmt.Errorf("inventory: release the Python broker's lock %s: %w", l.Path, err)
	}
	return nil
}

// prepareMark writes our mark into a new file beside the lock, from which
// linkMarked makes the lock: so the lock appears with its mark, and a
// process killed while taking it never leaves an empty one, which would
// read as a Python broker's for staleLockAge.
func prepareMark(lockPath string) (string, error) {
	tmp, err := safefile.CreateTemp(filepath.Dir(lockPath), filepath.Base(lockPath)+".new-*")
	if err != nil {
		return "", err
	}
	_, err = tmp.WriteString(OurMark())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return tmp.Name(), nil
}

// linkMarked creates the lock at path from the marked file, or fails with
// fs.ErrExist. Without hard links it is created and then written.
func linkMarked(mark, path string) error {
	err := os.Link(mark, path)
	var le *os.LinkError
	if err == nil || errors.Is(err, fs.ErrExist) || !errors.As(err, &le) ||
		!errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.ENOTSUP) && !errors.Is(err, syscall.EOPNOTSUPP) {
		return err
	}
	f, err := safefile.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(OurMark())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// staleLock reports whether the lock file at path was left by a dead
// holder (see takePythonLock), and whether that holder was a Python broker.
// A lock that is a symbolic link or not a regular file of this user is an
// error: neither tool made it, and it is not read, waited on or removed.
func staleLock(path string) (stale, python bool, err error) {
	f, err := safefile.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, safefile.ErrUnsafe) {
		return false, false, err
	}
	if err != nil {
		return false, false, nil // gone, or not ours to judge
	}
	defer f.Close()
	buf := make([]byte, 512)
	n, _ := f.Read(buf)
	if _, _, ours := ParseMark(buf[:n]); ours {
		return true, false, nil
	}
	st, err := f.Stat()
	if err != nil || n > 0 || time.Since(st.ModTime()) < staleLockAge {
		return false, false, nil
	}
	return flockRetry(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) == nil, true, nil
}

// RemoveLeftovers removes the temporary files of writers killed mid-way
// (temp inventories, marked files for the Python lock). Only the flock
// holder makes them, so the caller, holding it, knows any it finds are
// dead.
func RemoveLeftovers(file string) {
	pats := []string{
		filepath.Join(filepath.Dir(file), "."+filepath.Base(file)+".tmp-*"),
		PythonLockPath(file) + ".new-*",
	}
	for _, p := range pats {
		left, _ := filepath.Glob(p)
		for _, f := range left {
			os.Remove(f)
		}
	}
}

// The Go writers' share of the Python lock is capped: each holder records
// in the flock file when it released the Python lock and how long it held
// it, and the next holder lets as long pass before taking it. Under
// saturation Go then holds it at most half the time (in practice far less:
// a hold is a stat, a read and a rename), so a Python broker trying once a
// second finds it free.
const maxPythonGap = 50 * time.Millisecond

// PythonGap returns how long to wait before taking the Python lock.
func (h *Held) PythonGap() time.Duration {
	flockFD := h.mainFD
	var buf [16]byte
	n, err := syscall.Pread(flockFD, buf[:], 0)
	if err != nil || n < len(buf) {
		return 0
	}
	released := int64(binary.LittleEndian.Uint64(buf[:8]))
	held := time.Duration(binary.LittleEndian.Uint64(buf[8:]))
	until := time.Unix(0, released).Add(min(held, maxPythonGap))
	return min(time.Until(until), maxPythonGap)
}

// NotePythonHold records a release of the Python lock for PythonGap.
func (h *Held) NotePythonHold(released time.Time, held time.Duration) {
	flockFD := h.mainFD
	var buf [16]byte
	binary.LittleEndian.PutUint64(buf[:8], uint64(released.UnixNano()))
	binary.LittleEndian.PutUint64(buf[8:], uint64(held))
	_, _ = syscall.Pwrite(flockFD, buf[:], 0)
}
