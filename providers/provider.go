// Package providers defines what a provider of hosts implements and holds the
// registry of providers, in the manner of database/sql/driver.
//
// A provider makes and removes hosts (local SSH servers, containers, VMs). It
// is registered once under its name; the broker opens one Provider per
// configured instance. Optional abilities are separate small interfaces
// (Extender, Executor, Syncer, Describer) found by type assertion.
package providers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/onregister"
	"github.com/hostbroker/broker/inventory"
)

// Driver opens providers of one kind.
type Driver interface {
	// Open returns a Provider for one configured instance.
	Open(ctx context.Context, cfg Config) (Provider, error)
	// ArgKeys lists request argument keys that identify this provider
	// (e.g. "container_host"), used to infer the provider of a request.
	ArgKeys() []string
}

// SettingsChecker is a Driver that knows its settings, so that a mistake in
// them shows when they load (broker.New), not at the first checkout: New
// warns of each key of the provider's section and instances that
// SettingKeys does not list, naming the closest listed one, and fails when
// CheckSettings refuses the settings of an instance, saying where the key
// was set. Optional: the sections of other drivers are only read by Open.
type SettingsChecker interface {
	// SettingKeys lists every key the provider's section and its
	// instances may hold (matched ignoring case): those Open reads, and
	// those of the Python broker's files it accepts and ignores; not
	// instances, default or override_envars, which every section may hold.
	SettingKeys() []string
	// CheckSettings checks the values cfg.Settings sets (type, range,
	// one of a set) as Open would, and reports a bad one as a
	// *SettingError naming the key. It neither requires keys (a section
	// the program never uses need not be complete) nor reaches out (no
	// network, no files).
	CheckSettings(cfg Config) error
}

// Config is what a provider instance is opened with.
type Config struct {
	Provider string         // registered name, e.g. "Container"
	Instance string         // instance name from settings; "" when none are configured
	Settings map[string]any // the provider section merged with the instance's keys
	SSH      SSHSettings    // the global ssh: settings
	Dir      string         // BROKER_DIRECTORY, for files the provider keeps (keys, work dirs)
	// Inventory is the inventory file the broker records hosts in, for
	// providers that lease from a shared pool and must see every lease.
	Inventory string
	Logger    *slog.Logger // never nil
}

// SSHSettings are the global ssh: settings, used by providers whose hosts
// take the user's credentials (VMs). Providers that generate credentials
// (Local, Container) may ignore them.
type SSHSettings struct {
	Username       string
	Password       string // secret: never logged or stored
	Port           int
	KeyFilename    string        // a leading ~/ already expanded by the settings loader
	ConnectTimeout time.Duration // each dial+handshake attempt; 0: hostkit's default
	CommandTimeout time.Duration // default bound on a command; 0: none
	Insecure       bool          // accept any host key (explicit setting only)
	KnownHosts     []string
}

// CheckoutRequest asks a provider for one host.
type CheckoutRequest struct {
	// ID is the inventory id the broker already recorded (intent first); the
	// provider should make the host findable by it (name, label).
	ID string
	// Args are the request's arguments after nick and file merging.
	Args map[string]any
	// Labels describe the owner (run id, user, version); providers that can
	// attach metadata to hosts should.
	Labels map[string]string
	// Progress, when not nil, records data in the host's inventory record
	// while the checkout is still under way (e.g. the id of a launched job),
	// so that a check-in after a crash or a cancelled checkout can find what
	// was made. Values must be plain data and never secrets.
	Progress func(data map[string]any)
}

// CheckoutResult is what a checkout made: the provider's part of the host's
// inventory record. The broker adds the rest (id, owner, state, provider
// and instance names) and stores it; Connect, Checkin and the optional
// interfaces get the stored record back. Everything here is plain data and
// never a secret.
type CheckoutResult struct {
	Hostname string         // the host's address or DNS name (required)
	Name     string         // its name at the provider, e.g. a container's (required)
	IP       string         // its IP address, when the provider knows it apart from Hostname
	Args     map[string]any // the arguments as the provider completed them; nil keeps the request's
	Facts    map[string]any // what the provider learnt of the host (the record's _broker_facts)
	Extra    map[string]any // other top-level keys of the record, as the Python broker writes them
	SSH      *inventory.SSH // how to reach the host over SSH; nil for hosts driven otherwise
	Data     map[string]any // what the provider needs later (Connect, Checkin, Sync) to find the host
}

// ResultOf returns the provider's part of rec, for providers that describe
// their hosts as inventory records (as Sync does).
func ResultOf(rec *inventory.Record) CheckoutResult {
	r := CheckoutResult{Hostname: rec.Hostname, Name: rec.Name, IP: rec.IP, Args: rec.Args, Facts: rec.Facts, Extra: rec.Extra}
	if rec.Broker != nil {
		r.SSH, r.Data = rec.Broker.SSH, rec.Broker.Data
	}
	return r
}

// Record returns the inventory record of r's host with the broker's id, as
// Connect and Checkin get it back less the fields only the broker knows
// (state, owner, provider and instance names): the broker starts from it,
// and tests that drive a provider without a broker use it.
func (r CheckoutResult) Record(id string) *inventory.Record {
	return &inventory.Record{
		Hostname: r.Hostname, Name: r.Name, IP: r.IP, Args: r.Args, Facts: r.Facts, Extra: r.Extra,
		Broker: &inventory.Meta{ID: id, SSH: r.SSH, Data: r.Data},
	}
}

// Provider makes and removes hosts for one configured instance.
type Provider interface {
	// Checkout creates one host and says what it made. The host must be
	// findable by req.ID (for Checkin from a record holding only the id)
	// from the moment it exists.
	Checkout(ctx context.Context, req CheckoutRequest) (CheckoutResult, error)
	// Connect builds a usable host from a record (as stored: after a YAML
	// round trip), adding credentials from settings. It does not dial; the
	// host connects on first use. The broker keeps which record is the
	// host's (Broker.Record).
	Connect(ctx context.Context, rec *inventory.Record) (*hostkit.Host, error)
	// Checkin removes the host. A host that is already gone is not an error.
	Checkin(ctx context.Context, rec *inventory.Record) error
	// Close releases what the instance holds for itself (connections,
	// clients). Broker.Close calls it once, after which the broker opens a
	// new instance if it needs one. Hosts stay checked out, except hosts
	// that live only as long as their provider (Local's servers, which
	// Close stops as check-in would).
	Close() error
}

// Extender is a provider that can extend a host's lease.
type Extender interface {
	Extend(ctx context.Context, rec *inventory.Record, args map[string]any) error
}

// Executor is a provider that runs actions that create no host (the
// Python broker's "broker execute"). The result is provider-specific (output, artifacts).
type Executor interface {
	Execute(ctx context.Context, args map[string]any) (any, error)
}

// Syncer is a provider that can list the hosts it holds for a user, to
// reconcile the inventory. An empty user means the instance's own user.
type Syncer interface {
	Sync(ctx context.Context, user string) ([]*inventory.Record, error)
}

// Describer is a provider that can describe what it offers (its arguments,
// templates, images). An empty topic gives the overview.
type Describer interface {
	Describe(ctx context.Context, topic string) (string, error)
}

// ErrUnknown is returned (wrapped) for a provider name nobody registered.
var ErrUnknown = errors.New("unknown provider")

var (
	mu      sync.RWMutex
	drivers = map[string]Driver{}
)

// Register makes a provider available under name. It panics if the name is
// taken or d is nil, as database/sql.Register does. Call it from an init
// function: the reaper's watcher, the program re-run, waits for the
// providers of its owner to register before main.
func Register(name string, d Driver) {
	onregister.Registered(register(name, d))
}

// register adds d and returns the names registered.
func register(name string, d Driver) []string {
	mu.Lock()
	defer mu.Unlock()
	if d == nil {
		panic("providers: Register driver is nil")
	}
	if _, dup := drivers[strings.ToLower(name)]; dup {
		panic("providers: Register called twice for " + name)
	}
	checkBuiltin(name, d)
	drivers[strings.ToLower(name)] = namedDriver{name, d}
	return namesLocked()
}

type namedDriver struct {
	name string
	Driver
}

// Lookup returns the driver registered under name (case-insensitive) and
// its registered spelling. For a provider of this module that the program
// does not import, the error (ErrNotImported) names the import to add.
func Lookup(name string) (Driver, string, error) {
	mu.RLock()
	defer mu.RUnlock()
	d, ok := drivers[strings.ToLower(name)]
	if !ok {
		if b, ok := unimportedNamedLocked(name); ok {
			return nil, "", &notImportedError{b: b}
		}
		return nil, "", fmt.Errorf("%w %q (registered: %s)", ErrUnknown, name, strings.Join(namesLocked(), ", "))
	}
	nd := d.(namedDriver)
	return nd.Driver, nd.name, nil
}

// Names lists the registered providers, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	return namesLocked()
}

func namesLocked() []string {
	var names []string
	for _, d := range drivers {
		names = append(names, d.(namedDriver).name)
	}
	sort.Strings(names)
	return names
}

// Selectors describes, for each registered provider that has some, the
// arguments that pick it, e.g. "container_host or container_app (Container)",
// sorted by provider name; then those of this module's providers that the
// program does not import, with the import they need.
func Selectors() []string {
	mu.RLock()
	defer mu.RUnlock()
	var out []string
	for _, name := range namesLocked() {
		nd := drivers[strings.ToLower(name)].(namedDriver)
		if keys := nd.ArgKeys(); len(keys) > 0 {
			out = append(out, strings.Join(keys, " or ")+" ("+name+")")
		}
	}
	for _, b := range unimportedLocked() {
		out = append(out, fmt.Sprintf("%s (%s, not imported: import _ %q)", strings.Join(b.argKeys, " or "), b.name, b.path))
	}
	return out
}

// Infer returns the provider whose ArgKeys include one of args' keys, or ""
// when none claims them. More than one claimant is an error naming them.
// An argument of one of this module's providers that the program does not
// import is an error (ErrNotImported) naming the import to add.
func Infer(args map[string]any) (string, error) {
	mu.RLock()
	defer mu.RUnlock()
	var found []string
	for _, d := range drivers {
		nd := d.(namedDriver)
		if k := claimed(args, nd.ArgKeys()); k != "" {
			found = append(found, nd.name)
		}
	}
	var missing *notImportedError
	for _, b := range unimportedLocked() {
		if k := claimed(args, b.argKeys); k != "" {
			found = append(found, b.name)
			missing = &notImportedError{b: b, why: fmt.Sprintf("argument %q", k)}
		}
	}
	sort.Strings(found)
	switch {
	case len(found) == 0:
		return "", nil
	case len(found) == 1 && missing != nil:
		return "", missing
	case len(found) == 1:
		return found[0], nil
	}
	return "", fmt.Errorf("providers: arguments claimed by several providers (%s); set Request.Provider", strings.Join(found, ", "))
}

// claimed returns the first of keys that args has, or "".
func claimed(args map[string]any, keys []string) string {
	for _, k := range keys {
		if _, ok := args[k]; ok {
			return k
		}
	}
	return ""
}
