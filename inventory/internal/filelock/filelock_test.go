package filelock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hostbroker/broker/internal/proclive"
	"github.com/hostbroker/broker/internal/safefile"
)

// Our mark names this process; the Python broker's empty lock and foreign
// text are not ours.
func TestMark(t *testing.T) {
	owner, known, ours := ParseMark([]byte(OurMark()))
	if !known || !ours || owner.PID != proclive.Self().PID {
		t.Fatalf("ParseMark(OurMark()) = %+v, %v, %v", owner, known, ours)
	}
	if _, _, ours := ParseMark(nil); ours {
		t.Fatal("an empty lock (the Python broker's) is taken for ours")
	}
	if _, known, ours := ParseMark([]byte("brokertest\n")); known || !ours {
		t.Fatal("an older version's bare mark is not ours")
	}
}

// One holder at a time: a second Acquire waits, and gives up with ErrWait
// when its context ends; it gets the lock once the first releases.
func TestAcquireExcludes(t *testing.T) {
	file := filepath.Join(t.TempDir(), "inventory.yaml")
	h, err := Acquire(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Acquire(ctx, file); !errors.Is(err, ErrWait) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Acquire while held: %v", err)
	}
	h.Release()
	h2, err := Acquire(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	if h2.Ahead != 0 {
		t.Errorf("%d tickets ahead of a lone waiter", h2.Ahead)
	}
	h2.Release()
}

// The Python lock appears with our mark, excludes a second taker (until
// it gives up), and is gone once released; a link at its path is refused.
func TestPythonLock(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "inventory.yaml")
	l, err := TakePython(file, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(l.Path); string(b) != OurMark() {
		t.Fatalf("lock holds %q", b)
	}
	tries := 0
	giveUp := errors.New("given up")
	// Our own mark would be taken for a dead process's (the caller
	// holds the flock): a Python broker's empty lock is not.
	if err := os.WriteFile(l.Path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := TakePython(file, func() error {
		if tries++; tries > 3 {
			return giveUp
		}
		return nil
	}); !errors.Is(err, giveUp) {
		t.Fatalf("second TakePython: %v", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock left after Release: %v", err)
	}
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, PythonLockPath(file)); err != nil {
		t.Fatal(err)
	}
	if _, err := TakePython(file, func() error { return nil }); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("TakePython with a link at the lock: %v", err)
	}
}
