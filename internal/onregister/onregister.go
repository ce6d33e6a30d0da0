// Package onregister tells the reaper (internal/reaper) when a provider
// registers.
//
// The reaper's watcher is the executable re-run; it starts in the broker
// package's init, which runs before the inits of the providers that the
// program imports (Container, AnsibleTower…: their import paths sort after
// the broker package's, and it does not import them). The watcher waits,
// through this hook, for the providers its owner had registered, so that it
// can check their hosts in.
package onregister

import "sync"

var (
	mu   sync.Mutex
	hook func(names []string)
)

// Set makes Registered call f; nil removes the hook.
func Set(f func(names []string)) {
	mu.Lock()
	defer mu.Unlock()
	hook = f
}

// Registered is called by providers.Register, outside its lock, with the
// names registered so far.
func Registered(names []string) {
	mu.Lock()
	f := hook
	mu.Unlock()
	if f != nil {
		f(names)
	}
}
