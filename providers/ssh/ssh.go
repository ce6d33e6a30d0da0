// Package ssh is a provider, registered as "SSH", that hands out existing
// machines from a static pool of SSH addresses, as many labs have: nothing
// is created or destroyed; a checkout leases a free address to one owner
// and check-in releases it.
//
// Import it for its side effect:
//
//	import _ "github.com/hostbroker/broker/providers/ssh"
//
// Settings (the global ssh: section gives the defaults for the
// credentials):
//
//	SSH:
//	  hosts: ["lab1.example.com", "10.0.0.7:2222"]  # required; port defaults to ssh.port, else 22
//	  username: tester        # default ssh.username, else root
//	  key_file: ~/.ssh/lab    # default ssh.key_filename
//	  password: …             # default ssh.password; never stored or logged
//	  known_hosts: [~/.ssh/known_hosts]  # default ssh.known_hosts
//	  lease_ttl: 30           # seconds a lease outlives its holder's last renewal (at least 3)
//	  lease_wait: 60          # seconds a checkout waits for a free host (0: fail at once)
//
// A request picks the provider with the argument ssh_host: "any" (or true)
// for any free host of the pool, or one of the pool's addresses.
//
// Leases are exclusive wherever they are taken from: the lab machine
// records its own lease (see remote.go: one line under /tmp/broker-ssh-leases,
// changed under flock(1), with the holder's id, owner and expiry), taken
// atomically over SSH, so that two broker directories, two users or two
// machines never hold one host at once. The holder renews it every third
// of lease_ttl; a holder that ran on the taker's machine and is gone loses
// it at once, any other when it expires. Within one broker directory the
// decision is first taken under an flock of <BROKER_DIRECTORY>/ssh/<address>.lock:
// an address is busy while its local lease file names a live owner, or
// while an inventory record holds it (a record whose owner lives, or that
// is kept, free or leased for reuse: those the host's lease does not
// protect once their holder has stopped renewing it). The chosen address
// is recorded in the intent record through Progress before the lease is
// taken, so a check-in after a crash finds it by the record's id. A
// checkout that finds every address leased waits for one, up to
// lease_wait and its context. Sync lists the leased addresses; Describe,
// the pool and its leases. The host needs sh, flock(1) and mktemp.
package ssh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/safefile"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// Name is the name the provider registers.
const Name = "SSH"

// ArgKey is the request argument that picks this provider.
const ArgKey = "ssh_host"

func init() { providers.Register(Name, Driver{}) }

// Driver opens SSH pool providers.
type Driver struct{}

// ArgKeys lists ssh_host.
func (Driver) ArgKeys() []string { return []string{ArgKey} }

// Open returns a provider for cfg.
func (Driver) Open(_ context.Context, cfg providers.Config) (providers.Provider, error) {
	return Open(cfg)
}

// Provider leases the addresses of one configured pool.
type Provider struct {
	hosts     []string // "host:port"
	port      int      // for addresses given without one
	user      string
	keyFile   string
	password  string
	known     []string
	insecure  bool
	connect   time.Duration
	command   time.Duration
	lockDir   string
	inventory string
	ttl       time.Duration // lease_ttl
	wait      time.Duration // lease_wait
	log       *slog.Logger

	mu     sync.Mutex
	closed bool
	conns  map[string]*hostkit.Host // for leases, by address
	beats  map[string]beat          // renewals, by address
	wg     sync.WaitGroup
}

// Lease defaults: see the lease_ttl and lease_wait settings.
const (
	DefaultLeaseTTL  = 30 * time.Second
	DefaultLeaseWait = time.Minute
)

// settingKeys are the keys of the SSH section (see the package
// documentation), with the aliases user and key_filename.
var settingKeys = []string{"hosts", "username", "user", "key_file", "key_filename", "password", "known_hosts", "lease_ttl", "lease_wait"}

// SettingKeys lists the keys the SSH section and its instances take.
func (Driver) SettingKeys() []string { return append([]string(nil), settingKeys...) }

// CheckSettings checks the values the settings set as Open does, without
// requiring hosts or credentials and without touching a file.
func (Driver) CheckSettings(cfg providers.Config) error {
	_, err := readSettings(cfg)
	return err
}

// readSettings reads the values cfg's settings set, over the global ssh:
// settings; it requires nothing (Open does).
func readSettings(cfg providers.Config) (*Provider, error) {
	m, g := cfg.Settings, cfg.SSH
	p := &Provider{user: g.Username, keyFile: g.KeyFilename, password: g.Password, known: g.KnownHosts, insecure: g.Insecure}
	if p.user == "" {
		p.user = "root"
	}
	port := g.Port
	if port == 0 {
		port = 22
	}
	p.port = port
	if v, key, ok := providers.Setting(m, "hosts"); ok {
		list, isList := v.([]any)
		if !isList || len(list) == 0 {
			return nil, &providers.SettingError{Key: key, Err: fmt.Errorf("want a non-empty list of addresses, got %v", v)}
		}
		for i, h := range list {
			addr, err := address(h, port)
			if err != nil {
				return nil, &providers.SettingError{Key: fmt.Sprintf("%s[%d]", key, i), Err: err}
			}
			p.hosts = append(p.hosts, addr)
		}
	}
	for _, s := range []struct {
		keys []string
		dst  *string
	}{{[]string{"username", "user"}, &p.user}, {[]string{"key_file", "key_filename"}, &p.keyFile}, {[]string{"password"}, &p.password}} {
		if v, k, ok := providers.Setting(m, s.keys...); ok {
			str, isStr := v.(string)
			if !isStr || str == "" {
				return nil, &providers.SettingError{Key: k, Err: fmt.Errorf("want a non-empty string, got %T", v)}
			}
			*s.dst = str
		}
	}
	p.keyFile = expand(p.keyFile)
	if v, k, ok := providers.Setting(m, "known_hosts"); ok {
		files, isList := v.([]any)
		p.known = nil
		for _, f := range files {
			s, _ := f.(string)
			if s == "" {
				isList = false
			}
			p.known = append(p.known, expand(s))
		}
		if !isList {
			return nil, &providers.SettingError{Key: k, Err: fmt.Errorf("want a list of file names, got %v", v)}
		}
	}
	p.connect, p.command = g.ConnectTimeout, g.CommandTimeout
	p.ttl, p.wait = DefaultLeaseTTL, DefaultLeaseWait
	if v, k, ok := providers.Setting(m, "lease_ttl"); ok {
		d, err := providers.Seconds(v)
		if err == nil && d < 3*time.Second {
			err = fmt.Errorf("%v is under 3 seconds", v)
		}
		if err != nil {
			return nil, &providers.SettingError{Key: k, Err: err}
		}
		p.ttl = d
	}
	if v, k, ok := providers.Setting(m, "lease_wait"); ok {
		d, err := providers.Seconds(v)
		if isZero(v) {
			d, err = 0, nil
		}
		if err != nil {
			return nil, &providers.SettingError{Key: k, Err: fmt.Errorf("%w (or 0 to fail at once)", err)}
		}
		p.wait = d
	}
	// Leases are decided against the broker's own inventory file.
	p.inventory = cfg.Inventory
	return p, nil
}

// Open checks cfg's settings and returns a provider. It contacts no host.
func Open(cfg providers.Config) (*Provider, error) {
	p, err := readSettings(cfg)
	if err != nil {
		return nil, err
	}
	if len(p.hosts) == 0 {
		return nil, &providers.SettingError{Key: "hosts", Err: errors.New("want a non-empty list of addresses, got none")}
	}
	if p.keyFile == "" && p.password == "" && os.Getenv("SSH_AUTH_SOCK") == "" {
		return nil, &providers.SettingError{Key: "key_file", Err: errors.New("no key_file, password or ssh agent to log in with")}
	}
	if cfg.Dir == "" {
		return nil, errors.New("ssh: no broker directory to keep leases in")
	}
	if p.inventory == "" {
		p.inventory = filepath.Join(cfg.Dir, "inventory.yaml")
	}
	if p.lockDir, err = safefile.MkdirAll(cfg.Dir, "ssh", 0o700); err != nil {
		return nil, fmt.Errorf("ssh: lease directory: %w", err)
	}
	p.log = cfg.Logger
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.conns, p.beats = map[string]*hostkit.Host{}, map[string]beat{}
	return p, nil
}

// isZero reports whether a setting's value is the number 0.
func isZero(v any) bool {
	switch x := v.(type) {
	case int:
		return x == 0
	case float64:
		return x == 0
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return err == nil && f == 0
	}
	return false
}

// expand replaces a leading ~/ with the home directory.
func expand(name string) string {
	if home, err := os.UserHomeDir(); err == nil && strings.HasPrefix(name, "~/") {
		return filepath.Join(home, name[2:])
	}
	return name
}

// address normalises a pool entry to host:port.
func address(v any, port int) (string, error) {
	s, ok := v.(string)
	if !ok || strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("want an address, got %v", v)
	}
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return net.JoinHostPort(strings.Trim(s, "[]"), strconv.Itoa(port)), nil
	}
	if n, err := strconv.Atoi(ps); err != nil || n <= 0 || n > 65535 || host == "" {
		return "", fmt.Errorf("%q is not host:port", s)
	}
	return s, nil
}

// Close stops renewing the leases this provider holds (they lapse after
// lease_ttl unless checked in) and closes its connections to the hosts.
func (p *Provider) Close() error { return p.closeRemote() }

// Checkout leases a free address of the pool (or the one ssh_host names),
// waiting for one up to lease_wait (and ctx) when all are leased.
func (p *Provider) Checkout(ctx context.Context, req providers.CheckoutRequest) (providers.CheckoutResult, error) {
	cands := p.hosts
	switch v := req.Args[ArgKey]; v {
	case nil, true, "any", "":
	default:
		addr, err := address(v, p.port)
		if err != nil || !contains(p.hosts, addr) {
			return providers.CheckoutResult{}, fmt.Errorf("ssh: %s %v is not an address of the pool (%s)", ArgKey, v, strings.Join(p.hosts, ", "))
		}
		cands = []string{addr}
	}
	start := time.Now()
	pause := 50 * time.Millisecond
	for {
		var errs []error
		busy := false
		for _, addr := range cands {
			ok, err := p.lease(ctx, addr, req)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, safefile.ErrUnsafe) {
					return providers.CheckoutResult{}, err
				}
				errs = append(errs, err) // that host may be down: try the others
				continue
			}
			if ok {
				return p.result(addr), nil
			}
			busy = true
		}
		waited := time.Since(start)
		if waited >= p.wait || !busy {
			msg := fmt.Sprintf("ssh: every address asked for is leased (%s)", strings.Join(cands, ", "))
			if !busy {
				msg = fmt.Sprintf("ssh: no address asked for could be leased (%s)", strings.Join(cands, ", "))
			} else if p.wait > 0 {
				msg += fmt.Sprintf(", still after lease_wait %v", p.wait)
			}
			return providers.CheckoutResult{}, errors.Join(append([]error{errors.New(msg)}, errs...)...)
		}
		select {
		case <-ctx.Done():
			return providers.CheckoutResult{}, fmt.Errorf("ssh: waiting for a free address of %s: %w", strings.Join(cands, ", "), ctx.Err())
		case <-time.After(min(pause, p.wait-waited)):
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// lease takes addr for req if it is free, under its lock.
func (p *Provider) lease(ctx context.Context, addr string, req providers.CheckoutRequest) (bool, error) {
	unlock, err := p.lock(ctx, addr)
	if err != nil {
		return false, err
	}
	defer unlock()
	busy, err := p.busy(ctx, addr, req.ID)
	if err != nil || busy {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("ssh: checkout: %w", err)
	}
	// Recorded in the intent record first: a crash after the lease is
	// taken leaves a record whose check-in releases it.
	if req.Progress != nil {
		req.Progress(map[string]any{"address": addr})
	}
	run := req.Labels["run"] // the owner's run id, as the broker labels hosts
	ok, holder, err := p.takeRemote(ctx, addr, req.ID, run)
	if err != nil || !ok {
		if holder != nil {
			p.log.Debug("ssh: leased on the host", "address", addr, "holder", holder.ID, "owner", holder.Owner)
		}
		return false, err
	}
	p.startRenewing(addr, req.ID, run)
	b, _ := json.Marshal(leaseFile{ID: req.ID, Owner: inventory.CurrentOwner("")})
	// Renamed over the lease: a link planted there is replaced, not
	// followed; one planted at the temporary name is refused.
	tmp := p.path(addr, ".lease.tmp")
	err = safefile.WriteFile(tmp, b, 0o600)
	if err == nil {
		err = os.Rename(tmp, p.path(addr, ".lease"))
	}
	if err != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opTimeout())
		defer cancel()
		return false, errors.Join(fmt.Errorf("ssh: write lease of %s: %w", addr, err), p.releaseRemote(actx, addr, req.ID))
	}
	return true, nil
}

// leaseFile is what <address>.lease holds.
type leaseFile struct {
	ID    string          `json:"id"`
	Owner inventory.Owner `json:"owner"`
}

func (p *Provider) path(addr, ext string) string {
	return filepath.Join(p.lockDir, strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(addr)+ext)
}

// lock takes addr's flock, waiting as long as ctx allows.
func (p *Provider) lock(ctx context.Context, addr string) (func(), error) {
	f, err := safefile.OpenFile(p.path(addr, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ssh: lock %s: %w", addr, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the flock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("ssh: lock %s: %w", addr, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("ssh: lock %s: %w", addr, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// holder returns the lease of addr, or nil.
func (p *Provider) holder(addr string) (*leaseFile, error) {
	b, err := os.ReadFile(p.path(addr, ".lease"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ssh: read lease of %s: %w", addr, err)
	}
	var l leaseFile
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("ssh: lease file %s: %w", p.path(addr, ".lease"), err)
	}
	return &l, nil
}

// busy reports whether addr is held by another than id: by a lease of a
// live owner, or by an inventory record that holds it.
func (p *Provider) busy(ctx context.Context, addr, id string) (bool, error) {
	l, err := p.holder(addr)
	if err != nil {
		return false, err
	}
	if l != nil && l.ID != id && !l.Owner.Dead() {
		return true, nil
	}
	recs, err := inventory.Open(p.inventory).Load(ctx)
	if err != nil {
		return false, fmt.Errorf("ssh: read the inventory: %w", err)
	}
	for _, r := range recs {
		if r.Broker == nil || r.Broker.ID == id || !strings.EqualFold(r.Provider, Name) {
			continue
		}
		if r.Broker.Data["address"] != addr && (l == nil || r.Broker.ID != l.ID) {
			continue
		}
		switch r.Broker.State {
		case inventory.StateKept, inventory.StateFree, inventory.StateLeased:
			return true, nil
		}
		if !r.Broker.Owner.Dead() {
			return true, nil
		}
	}
	return false, nil
}

// result describes the host of addr.
func (p *Provider) result(addr string) providers.CheckoutResult {
	host, ps, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(ps)
	return providers.CheckoutResult{
		Hostname: host,
		Name:     addr,
		SSH:      &inventory.SSH{Port: port, User: p.user, KeyFile: p.keyFile, Insecure: p.insecure},
		Data:     map[string]any{"address": addr},
	}
}

// record is the inventory record of the host of addr, leased to id.
func (p *Provider) record(addr, id string) *inventory.Record {
	return p.result(addr).Record(id)
}

// addr returns the address rec leases.
func addr(rec *inventory.Record) string {
	if rec == nil || rec.Broker == nil {
		return ""
	}
	a, _ := rec.Broker.Data["address"].(string)
	return a
}

// Connect builds the host of rec, which must still hold its lease. It does
// not dial.
func (p *Provider) Connect(ctx context.Context, rec *inventory.Record) (*hostkit.Host, error) {
	a := addr(rec)
	if a == "" {
		return nil, fmt.Errorf("ssh: connect: record %s holds no address", rec.ID())
	}
	l, err := p.holder(a)
	if err != nil {
		return nil, err
	}
	if l == nil || l.ID != rec.ID() {
		return nil, fmt.Errorf("ssh: connect: %s is not leased to %s (checked in?)", a, rec.ID())
	}
	cfg, err := p.hostConfig(rec)
	if err != nil {
		return nil, fmt.Errorf("ssh: connect %s: %w", a, err)
	}
	h := hostkit.New(rec.Hostname, cfg)
	h.Name = rec.Name
	return h, nil
}

// hostConfig is how to reach the host of rec with the pool's credentials.
func (p *Provider) hostConfig(rec *inventory.Record) (hostkit.Config, error) {
	cfg, err := providers.ConfigFromRecord(rec)
	if err != nil {
		return cfg, err
	}
	if p.keyFile != "" && !contains(cfg.KeyFiles, p.keyFile) {
		cfg.KeyFiles = append(cfg.KeyFiles, p.keyFile)
	}
	cfg.Password = p.password
	cfg.UseAgent = os.Getenv("SSH_AUTH_SOCK") != ""
	cfg.KnownHostsFiles = p.known
	cfg.InsecureIgnoreHostKey = cfg.InsecureIgnoreHostKey || p.insecure
	cfg.ConnectTimeout, cfg.CommandTimeout = p.connect, p.command
	return cfg, nil
}

// Checkin releases the lease of rec's id; the machine is left as it is. It
// works from the id alone (an intent record) and is idempotent.
func (p *Provider) Checkin(ctx context.Context, rec *inventory.Record) error {
	id := rec.ID()
	if id == "" {
		return nil
	}
	cands := p.hosts
	if a := addr(rec); a != "" && !contains(cands, a) {
		cands = append([]string{a}, cands...)
	}
	for _, a := range cands {
		if l, err := p.holder(a); err != nil || l == nil || l.ID != id {
			// The lease may have been taken on the host before the crash
			// that left no local lease: give it back if it is id's.
			if a == addr(rec) {
				p.releaseHost(ctx, a, id)
			}
			continue
		}
		if err := p.release(ctx, a, id); err != nil {
			return err
		}
	}
	return nil
}

// releaseHost gives back the host's own lease of a for id. A host that
// cannot be reached keeps it until it expires: that is logged, not an
// error of the check-in.
func (p *Provider) releaseHost(ctx context.Context, a, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.opTimeout())
	defer cancel()
	if err := p.releaseRemote(ctx, a, id); err != nil {
		p.log.Warn("ssh: lease not given back on the host; it lapses after lease_ttl", "address", a, "id", id, "ttl", p.ttl, "err", err)
	}
}

// release removes addr's lease if id still holds it.
func (p *Provider) release(ctx context.Context, a, id string) error {
	unlock, err := p.lock(ctx, a)
	if err != nil {
		return err
	}
	defer unlock()
	l, err := p.holder(a)
	if err != nil || l == nil || l.ID != id {
		return err
	}
	p.releaseHost(ctx, a, id)
	if err := os.Remove(p.path(a, ".lease")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ssh: release %s: %w", a, err)
	}
	return nil
}

// Sync lists the addresses of the pool leased on this machine, whoever
// the user: leases are per machine, not per user.
func (p *Provider) Sync(ctx context.Context, user string) ([]*inventory.Record, error) {
	var out []*inventory.Record
	for _, a := range p.hosts {
		l, err := p.holder(a)
		if err != nil {
			return nil, err
		}
		if l != nil {
			out = append(out, p.record(a, l.ID))
		}
	}
	return out, nil
}

// Describe lists the pool and which addresses are leased.
func (p *Provider) Describe(ctx context.Context, topic string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "SSH pool of %d hosts (argument %s: any, or an address):\n", len(p.hosts), ArgKey)
	for _, a := range p.hosts {
		state := "free"
		if l, err := p.holder(a); err != nil {
			return "", err
		} else if l != nil && !l.Owner.Dead() {
			state = "leased to " + l.ID
		}
		fmt.Fprintf(&b, "  %s\t%s\n", a, state)
	}
	return b.String(), nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
