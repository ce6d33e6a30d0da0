// Package leakcheck fails a test that leaves goroutines behind, in the
// manner of go.uber.org/goleak without the dependency: Check, called at a
// test's start, compares the goroutines alive at the test's end (after a
// grace period for those winding down) with those alive at its start.
package leakcheck

import (
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// Grace is how long Check waits for goroutines to finish before it reports
// them.
const Grace = 5 * time.Second

// TB is the part of testing.TB that Check uses.
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
}

var _ TB = testing.TB(nil)

// Check records the goroutines running now and, at tb's cleanup (registered
// now, so it runs after cleanups registered later, such as check-ins),
// reports every goroutine started since that is still running after Grace.
func Check(tb TB) {
	tb.Helper()
	before := map[string]bool{}
	for _, g := range goroutines() {
		before[g.id] = true
	}
	tb.Cleanup(func() {
		var left []goroutine
		deadline := time.Now().Add(Grace)
		for {
			left = left[:0]
			for _, g := range goroutines() {
				if !before[g.id] && !ignored(g) {
					left = append(left, g)
				}
			}
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(left) > 0 {
			var b strings.Builder
			for _, g := range left {
				b.WriteString("\n\n" + g.stack)
			}
			tb.Errorf("leakcheck: %d goroutine(s) left running:%s", len(left), b.String())
		}
	})
}

type goroutine struct {
	id    string // "goroutine 42"
	top   string // the function it runs
	stack string
}

// goroutines lists every goroutine but the caller's.
func goroutines() []goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []goroutine
	for i, block := range strings.Split(string(buf), "\n\n") {
		if i == 0 {
			continue // this goroutine
		}
		header, rest, _ := strings.Cut(block, "\n")
		id, _, _ := strings.Cut(header, " [")
		top, _, _ := strings.Cut(rest, "(")
		out = append(out, goroutine{id: id, top: top, stack: block})
	}
	return out
}

// ignored says whether g belongs to the runtime or the test framework.
func ignored(g goroutine) bool {
	return slices.ContainsFunc([]string{
		"testing.", "runtime.", "os/signal.", "created by testing.",
	}, func(p string) bool { return strings.HasPrefix(g.top, p) }) ||
		strings.Contains(g.stack, "testing.(*T).Run") || strings.Contains(g.stack, "testing.tRunner")
}
