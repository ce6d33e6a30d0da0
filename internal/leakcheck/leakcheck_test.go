package leakcheck_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hostbroker/broker/internal/leakcheck"
)

// fakeTB records what Check reports.
type fakeTB struct {
	cleanups []func()
	errors   []string
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Errorf(format string, a ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, a...))
}
func (f *fakeTB) end() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func leakyWorker(stop chan struct{}) { <-stop }

func TestCatchesALeak(t *testing.T) {
	tb := &fakeTB{}
	leakcheck.Check(tb)
	stop := make(chan struct{})
	go leakyWorker(stop)
	start := time.Now()
	tb.end()
	close(stop)
	if len(tb.errors) != 1 || !strings.Contains(tb.errors[0], "leakyWorker") {
		t.Fatalf("leak not reported with its stack: %q", tb.errors)
	}
	if time.Since(start) < leakcheck.Grace {
		t.Fatal("reported before the grace period")
	}
}

func TestWaitsForGoroutinesWindingDown(t *testing.T) {
	tb := &fakeTB{}
	leakcheck.Check(tb)
	go time.Sleep(200 * time.Millisecond)
	tb.end()
	if len(tb.errors) != 0 {
		t.Fatalf("a goroutine that ended within the grace period was reported: %q", tb.errors)
	}
}

func TestOlderGoroutinesAreNotReported(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	go leakyWorker(stop)
	tb := &fakeTB{}
	leakcheck.Check(tb)
	tb.end()
	if len(tb.errors) != 0 {
		t.Fatalf("a goroutine from before Check was reported: %q", tb.errors)
	}
}
