package broker

import (
	"os"
	"slices"
	"strings"

	"github.com/hostbroker/broker/internal/onregister"
	"github.com/hostbroker/broker/providers"
)

// watchProviders names, for the watcher, the providers its owner had
// registered (comma-separated).
const watchProviders = "BROKER_WATCH_PROVIDERS"

// watchProvidersEnv is the watcher's watchProviders variable: the providers
// registered now, in the owner.
func watchProvidersEnv() string {
	return watchProviders + "=" + strings.Join(providers.Names(), ",")
}

// runWatcherWhenRegistered runs the watcher, then exits, as soon as every
// provider its owner had registered is registered in this process too.
//
// This package's init starts the watcher, and runs before the inits of the
// providers the program imports (it does not import them, and their import
// paths sort after its own): then the watcher runs from the Register call
// of the last of them, in its init, before main. As database/sql drivers,
// providers register in init.
func runWatcherWhenRegistered(spec string) {
	var want []string
	for n := range strings.SplitSeq(os.Getenv(watchProviders), ",") {
		if n != "" {
			want = append(want, n)
		}
	}
	run := func(names []string) {
		for _, n := range want {
			if !slices.Contains(names, n) {
				return
			}
		}
		onregister.Set(nil)
		os.Exit(runWatcher(spec))
	}
	onregister.Set(run)
	run(providers.Names())
}
