// Package local is the embedded default provider, "Local": a Local host is
// this machine, as the current user (root in most CI jobs). Each host is an
// SSH server started inside the test process, on 127.0.0.1 at a random port,
// with its own host key, its own client key and its own directory as HOME
// and working directory; commands run through /bin/sh -c, unconfined: a
// test that runs "rm -rf ~/x" on a Local host runs it here, with HOME the
// host's directory, and "rm -rf /x" is the machine's /x. Use a container
// (providers/container) for a host of its own.
//
// A Local host's Hostname (the record's hostname) is this machine's name,
// what hostname prints there (os.Hostname), so the Python broker's idiom
// `hostname in host.execute("hostname").stdout` holds; its IP and the SSH
// address are 127.0.0.1. Hosts are told apart by their name, local-<id>,
// and their id.
//
// A request with no arguments and no settings gets a Local host, so tests
// that need "a host" run anywhere, with no daemon, container or VM:
//
//	h := brokertest.Host(t, broker.Request{})
//
// Each host lives in <dir>/<id>/ (dir defaults to <BROKER_DIRECTORY>/local):
// home/ is its HOME and the working directory its commands (and SFTP's
// relative paths) start in, client_key the private key that opens it,
// host.json what another process needs to judge it (owner pid). Check-in
// removes the directory (as does the reaper's or "brokertest cleanup"'s
// check-in of a host whose process died, and Sync of a stale one).
//
// Sessions serve exec, shell (on a real pseudo-terminal when the client asks
// for one), the sftp subsystem (relative paths from HOME), env requests and
// signals (sent to the command's process group); a command killed by a
// signal reports exit-signal, as sshd does.
//
// Every command runs in a process group of its own, with the variable
// BROKER_LOCAL_HOST=<id> in its environment. A command still running when
// its session closes early (the client disconnects, the context ends) is
// killed with its group. Background processes of finished commands live on,
// as on a real host, until check-in, which kills every process group of the
// host and every process carrying its marker, then removes its directory.
//
// The server of a host lives only as long as the process that checked it
// out. Checking in, from another process, a host whose owner is still alive
// removes its directory and kills its processes; the owner's server then
// refuses every new connection and session, and stops. If the owner dies
// without checking in (SIGKILL), the leaders of its running commands die
// with it (parent-death signal); what they left behind is killed when the
// reaper checks the host in, or when Sync, in any process, finds the host
// stale. Only a process that both left its group and cleared its
// environment can escape.
//
// Settings (all optional): shell (default /bin/sh), dir (default
// <BROKER_DIRECTORY>/local). The global ssh: settings are ignored: Local
// hosts make their own keys and run as the current user.
//
// Arguments: local (true, "" or a map of options; unknown options are
// ignored), env (a map: variables set for every command of the host),
// authorized_keys (public keys in authorized_keys form, a string of lines or
// a list, accepted besides the host's own client key: a stand-in VM that
// takes the user's key, as awxtest hands out). Any other argument, except
// other tools' marks (names starting with "_"), is an error naming the
// arguments that pick the other providers: Local is where a request that
// picks none goes, so a misspelt container_host must not run on this
// machine.
package local

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/safefile"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// Name is the name the provider is registered under.
const Name = "Local"

func init() { providers.Register(Name, Driver{}) }

// Driver opens Local providers. It is registered as "Local".
type Driver struct{}

// ArgKeys returns the argument that selects Local: "local".
func (Driver) ArgKeys() []string { return []string{"local"} }

// Open returns a Local provider. Settings: shell (default /bin/sh) and dir
// (default <cfg.Dir>/local). cfg.SSH is ignored.
func (Driver) Open(ctx context.Context, cfg providers.Config) (providers.Provider, error) {
	return Open(cfg)
}

// SettingKeys lists the keys of the Local section: shell and dir.
func (Driver) SettingKeys() []string { return []string{"shell", "dir"} }

// CheckSettings checks that shell and dir, when set, are non-empty
// strings (Open also checks that shell exists).
func (Driver) CheckSettings(cfg providers.Config) error {
	_, _, err := readSettings(cfg)
	return err
}

// readSettings reads the shell and dir settings ("" when unset).
func readSettings(cfg providers.Config) (shell, dir string, err error) {
	for _, s := range []struct {
		key, want string
		dst       *string
	}{{"shell", "a path", &shell}, {"dir", "a directory", &dir}} {
		v, k, ok := providers.Setting(cfg.Settings, s.key)
		if !ok {
			continue
		}
		str, isStr := v.(string)
		if !isStr || str == "" {
			return "", "", fmt.Errorf("local: %w", &providers.SettingError{Key: k, Err: fmt.Errorf("want %s, got %s", s.want, describeValue(v))})
		}
		*s.dst = str
	}
	return shell, dir, nil
}

// describeValue names a setting's value in an error: its text for a
// string, else its kind.
func describeValue(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("a %T", v)
}

// Open returns a Local provider for cfg; see Driver.Open.
func Open(cfg providers.Config) (*Provider, error) {
	p := &Provider{shell: "/bin/sh", log: cfg.Logger, servers: map[string]*server{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	shell, dir, err := readSettings(cfg)
	if err != nil {
		return nil, err
	}
	if shell != "" {
		if _, err := os.Stat(shell); err != nil {
			return nil, fmt.Errorf("local: %w", &providers.SettingError{Key: "shell", Err: err})
		}
		p.shell = shell
	}
	if dir != "" {
		p.base = dir
	} else {
		if cfg.Dir == "" {
			return nil, errors.New("local: no directory for hosts: set the broker directory or the dir setting")
		}
		p.base = filepath.Join(cfg.Dir, "local")
		p.brokerDir = cfg.Dir
	}
	base, err := filepath.Abs(p.base)
	if err != nil {
		return nil, fmt.Errorf("local: setting dir %q: %w", p.base, err)
	}
	p.base = base
	p.owner = inventory.CurrentOwner("")
	p.user = currentUser()
	p.env = baseEnv()
	return p, nil
}

// Provider makes Local hosts: SSH servers in this process. It is safe for
// concurrent use.
type Provider struct {
	shell     string
	base      string // holds one directory per host
	brokerDir string // the broker directory base is the local/ of, if it is
	log       *slog.Logger
	owner     inventory.Owner // this process, to tell live hosts of other processes from dead ones
	user      string
	env       []string

	mu      sync.Mutex
	servers map[string]*server // id → server of hosts this process serves
}

// Dir returns the directory that holds the provider's hosts.
func (p *Provider) Dir() string { return p.base }

// hostFile is the file in a host's directory that tells other processes
// whose host it is (Sync, check-in by the reaper).
const hostFile = "host.json"

type hostInfo struct {
	Owner  inventory.Owner   `json:"owner"`
	Record *inventory.Record `json:"record"`
}

// Checkout starts a host: its directory, keys and SSH server.
func (p *Provider) Checkout(ctx context.Context, req providers.CheckoutRequest) (providers.CheckoutResult, error) {
	rec, err := p.checkout(ctx, req)
	if err != nil {
		return providers.CheckoutResult{}, err
	}
	return providers.ResultOf(rec), nil
}

// makeBase makes the directory of the hosts. The default one, local/ in
// the broker directory, must not be a symbolic link or another user's;
// one the dir setting names is the user's choice.
func (p *Provider) makeBase() error {
	if p.brokerDir == "" {
		return os.MkdirAll(p.base, 0o700)
	}
	_, err := safefile.MkdirAll(p.brokerDir, filepath.Base(p.base), 0o700)
	return err
}

// checkout is Checkout; the record it returns is also the host file's.
func (p *Provider) checkout(ctx context.Context, req providers.CheckoutRequest) (rec *inventory.Record, err error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("local: checkout: %w", err)
	}
	if err := validID(req.ID); err != nil {
		return nil, err
	}
	args, err := parseArgs(req.Args)
	if err != nil {
		return nil, err
	}
	if err := p.makeBase(); err != nil {
		return nil, fmt.Errorf("local: create %s: %w", p.base, err)
	}
	dir := filepath.Join(p.base, req.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local: create host directory: %w", err)
	}
	var ln net.Listener
	defer func() {
		if err != nil {
			if ln != nil {
				ln.Close()
			}
			_ = os.RemoveAll(dir)
		}
	}()
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		return nil, fmt.Errorf("local: create %s: %w", home, err)
	}
	hostKey, clientKey, keyFile, err := newKeys(dir, req.ID)
	if err != nil {
		return nil, err
	}
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("local: listen on 127.0.0.1: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port

	rec = &inventory.Record{
		Hostname: machineName(),
		IP:       "127.0.0.1",
		Name:     "local-" + req.ID,
		Args:     maps.Clone(req.Args),
		Broker: &inventory.Meta{
			ID: req.ID,
			SSH: &inventory.SSH{
				Host:    "127.0.0.1",
				Port:    port,
				User:    p.user,
				HostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey.PublicKey()))),
				KeyFile: keyFile,
			},
			Data: map[string]any{"dir": dir, "pid": p.owner.PID, "started": p.owner.Started},
		},
	}
	info, err := json.Marshal(hostInfo{Owner: p.owner, Record: rec})
	if err != nil {
		return nil, fmt.Errorf("local: encode %s: %w", hostFile, err)
	}
	if err := safefile.WriteFile(filepath.Join(dir, hostFile), info, 0o600); err != nil {
		return nil, fmt.Errorf("local: write %s: %w", filepath.Join(dir, hostFile), err)
	}

	env := slices.Clone(p.env)
	env = append(env, "HOME="+home, "PWD="+home)
	for _, k := range slices.Sorted(maps.Keys(args.env)) {
		env = append(env, k+"="+args.env[k])
	}
	p.startServer(serverOptions{
		id: req.ID, dir: dir, home: home, shell: p.shell, env: env,
		hostKey: hostKey, clientKeys: append([]ssh.PublicKey{clientKey}, args.authorizedKeys...), ln: ln, log: p.log,
	})
	p.log.Debug("local: host started", "host", rec.Name, "port", port, "dir", dir)
	return rec, nil
}

// newKeys makes a host's keys: its SSH host key, and a client key whose
// private half is written to dir/client_key for the tests (and people) that
// connect.
func newKeys(dir, id string) (hostKey ssh.Signer, clientKey ssh.PublicKey, keyFile string, err error) {
	hostKey, err = newSigner()
	if err != nil {
		return nil, nil, "", fmt.Errorf("local: host key: %w", err)
	}
	clientPub, clientPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, "", fmt.Errorf("local: client key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(clientPriv, "brokertest-local-"+id)
	if err != nil {
		return nil, nil, "", fmt.Errorf("local: client key: %w", err)
	}
	keyFile = filepath.Join(dir, "client_key")
	if err := safefile.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, nil, "", fmt.Errorf("local: write %s: %w", keyFile, err)
	}
	clientKey, err = ssh.NewPublicKey(clientPub)
	if err != nil {
		return nil, nil, "", fmt.Errorf("local: client key: %w", err)
	}
	return hostKey, clientKey, keyFile, nil
}

// startServer starts a host's SSH server, known to p while it runs.
func (p *Provider) startServer(opts serverOptions) {
	srv := newServer(opts)
	srv.onStop = func() {
		p.mu.Lock()
		if p.servers[opts.id] == srv {
			delete(p.servers, opts.id)
		}
		p.mu.Unlock()
		served.CompareAndDelete(opts.dir, p)
	}
	p.mu.Lock()
	p.servers[opts.id] = srv
	p.mu.Unlock()
	served.Store(opts.dir, p)
	srv.start()
}

// served maps the directory of each Local host this process serves to the
// provider serving it, so that a check-in through another provider of the
// process (another Broker on the same broker directory) stops the server
// too, rather than leaving it serving until its provider closes.
var served sync.Map // host directory → *Provider

// takeServer removes the server of host id from p's and returns it, or nil.
func (p *Provider) takeServer(id string) *server {
	p.mu.Lock()
	defer p.mu.Unlock()
	srv := p.servers[id]
	delete(p.servers, id)
	return srv
}

// Connect returns a host that reaches the server of rec over SSH with the
// host's own client key, pinning its host key.
func (p *Provider) Connect(ctx context.Context, rec *inventory.Record) (*hostkit.Host, error) {
	if rec == nil || rec.Broker == nil || rec.Broker.SSH == nil {
		return nil, errors.New("local: connect: the record has no ssh block (_brokertest.ssh)")
	}
	cfg, err := providers.ConfigFromRecord(rec)
	if err != nil {
		return nil, fmt.Errorf("local: connect %s: %w", rec.Name, err)
	}
	// The server listens before Checkout returns and never restarts: a
	// refused connection means the host is gone, so retrying only delays.
	cfg.ConnectRetries = -1
	h := hostkit.New(rec.Hostname, cfg)
	h.Name = rec.Name
	return h, nil
}

// Checkin stops the host's server (if this process runs it), kills all its
// processes and removes its directory. A host already gone is not an error;
// the record needs only its id (or its name, local-<id>).
func (p *Provider) Checkin(ctx context.Context, rec *inventory.Record) error {
	if rec == nil {
		return errors.New("local: checkin: nil record")
	}
	id := rec.ID()
	if id == "" {
		id, _ = strings.CutPrefix(rec.Name, "local-")
	}
	if id == "" {
		return errors.New("local: checkin: the record has no id (_brokertest.id) nor a local-<id> name")
	}
	if err := validID(id); err != nil {
		return fmt.Errorf("local: checkin %s: %w", rec.Name, err)
	}
	if p.brokerDir != "" {
		// Removing through a link at local/ would remove elsewhere.
		if err := safefile.CheckDir(p.base); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("local: checkin %s: %w", rec.Name, err)
		}
	}
	// The host file goes first: Sync then no longer reports the host.
	_ = os.Remove(filepath.Join(p.base, id, hostFile))
	srv := p.takeServer(id)
	if other, ok := served.Load(filepath.Join(p.base, id)); srv == nil && ok && other != p {
		srv = other.(*Provider).takeServer(id)
	}
	if srv != nil {
		srv.close()
	} else {
		// Served by another process, alive or dead, or never: its
		// processes still carry the marker.
		killMarked(id)
	}
	dir := filepath.Join(p.base, id)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("local: checkin %s: remove %s: %w", rec.Name, dir, err)
	}
	return nil
}

// Sync lists the hosts in the provider's directory that a live process
// serves: this one's, and those of other live processes. Directories of
// processes that died are stale: they are removed and not listed. Local
// hosts belong to the current OS user: another user has none.
func (p *Provider) Sync(ctx context.Context, user string) ([]*inventory.Record, error) {
	if user != "" && user != p.user {
		return nil, nil
	}
	ents, err := os.ReadDir(p.base)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("local: sync: %w", err)
	}
	var recs []*inventory.Record
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("local: sync: %w", err)
		}
		if !e.IsDir() || validID(e.Name()) != nil {
			continue
		}
		dir := filepath.Join(p.base, e.Name())
		b, err := os.ReadFile(filepath.Join(dir, hostFile))
		if err != nil {
			continue // being created (or not ours)
		}
		var info hostInfo
		if err := json.Unmarshal(b, &info); err != nil || info.Record == nil || info.Record.ID() != e.Name() {
			p.log.Warn("local: sync: unreadable host file", "file", filepath.Join(dir, hostFile), "err", err)
			continue
		}
		// A host of this process is live while its host file exists (it is
		// written last at checkout, removed first at check-in), whether this
		// Provider or another one in the process serves it.
		if info.Owner.PID != p.owner.PID && info.Owner.Dead() {
			killMarked(e.Name())
			if err := os.RemoveAll(dir); err != nil {
				p.log.Warn("local: sync: remove stale host", "dir", dir, "err", err)
			}
			continue
		}
		recs = append(recs, info.Record)
	}
	return recs, nil
}

// Describe explains the provider's arguments and settings.
func (p *Provider) Describe(ctx context.Context, topic string) (string, error) {
	return `Local: this machine, as the current user. Each host is an SSH server in the
test process, on 127.0.0.1, running commands with ` + p.shell + ` -c in its own directory
(also HOME) under ` + p.base + `; its hostname is this machine's.
Arguments:
  local: true | "" | {…}   select this provider (options are ignored)
  env:   {NAME: value}     environment of every command on the host
  authorized_keys: "ssh-ed25519 AAAA…" | [...]   more keys that may log in
Settings (Local: section):
  shell: ` + p.shell + `
  dir:   ` + p.base + `
Hosts live as long as the process that checked them out.`, nil
}

// Close stops every server of this process, as check-in would, and removes
// their directories.
func (p *Provider) Close() error {
	p.mu.Lock()
	ids := slices.Collect(maps.Keys(p.servers))
	p.mu.Unlock()
	var errs []error
	for _, id := range ids {
		errs = append(errs, p.Checkin(context.Background(), &inventory.Record{Name: "local-" + id, Broker: &inventory.Meta{ID: id}}))
	}
	return errors.Join(errs...)
}

// hostArgs are the arguments Local understands.
type hostArgs struct {
	env            map[string]string
	authorizedKeys []ssh.PublicKey
}

// argNames are the arguments Local takes.
var argNames = []string{"authorized_keys", "env", "local"}

func parseArgs(args map[string]any) (hostArgs, error) {
	var a hostArgs
	// Local is where a request goes when no argument picks a provider: an
	// argument meant for another one (misspelt, or under another tool's
	// name, such as "image") must not run the request on this machine.
	for _, k := range slices.Sorted(maps.Keys(args)) {
		if !slices.Contains(argNames, k) && !strings.HasPrefix(k, "_") {
			return a, fmt.Errorf("local: unknown argument %q: a request with no argument that picks a provider runs on this machine (Local), which takes %s; arguments that pick a provider: %s",
				k, strings.Join(argNames, ", "), strings.Join(providers.Selectors(), "; "))
		}
	}
	switch v := args["local"].(type) {
	case nil, map[string]any, map[any]any:
	case bool:
		if !v {
			return a, errors.New(`local: argument local: false does not select Local (want true, "" or a map of options)`)
		}
	case string:
		if v != "" && v != "true" {
			return a, fmt.Errorf(`local: argument local: %q (want true, "" or a map of options)`, v)
		}
	default:
		return a, fmt.Errorf(`local: argument local: a %T (want true, "" or a map of options)`, v)
	}
	keys, err := parseAuthorizedKeys(args["authorized_keys"])
	if err != nil {
		return a, err
	}
	a.authorizedKeys = keys
	a.env, err = parseEnv(args["env"])
	return a, err
}

// parseEnv reads the env argument: a map of NAME: value, or the Container
// provider's list of "NAME=value" items; nil when unset. Errors never
// quote a value: it may be a secret.
func parseEnv(env any) (map[string]string, error) {
	if env == nil {
		return nil, nil
	}
	m := map[string]any{}
	switch e := env.(type) {
	case map[string]any:
		m = e
	case map[string]string:
		for k, v := range e {
			m[k] = v
		}
	case map[any]any:
		for k, v := range e {
			m[fmt.Sprint(k)] = v
		}
	case []any, []string:
		var items []any
		if l, ok := e.([]string); ok {
			for _, it := range l {
				items = append(items, it)
			}
		} else {
			items = e.([]any)
		}
		for i, it := range items {
			s, ok := it.(string)
			name, value, found := strings.Cut(s, "=")
			if !ok || !found {
				return nil, fmt.Errorf("local: argument env: item %d is not NAME=value", i)
			}
			m[name] = value
		}
	default:
		return nil, fmt.Errorf("local: argument env: want a map of NAME: value or a list of NAME=value, got a %T", env)
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if !validEnvName(k) {
			return nil, fmt.Errorf("local: argument env: bad variable name %q", k)
		}
		switch v := v.(type) {
		case nil:
			out[k] = ""
		case string, bool, int, int64, uint64, float64:
			out[k] = fmt.Sprint(v)
		default:
			return nil, fmt.Errorf("local: argument env.%s: want a scalar, got %T", k, v)
		}
	}
	return out, nil
}

// parseAuthorizedKeys reads the authorized_keys argument: one string of
// lines, or a list of strings.
func parseAuthorizedKeys(v any) ([]ssh.PublicKey, error) {
	var lines []string
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		lines = strings.Split(v, "\n")
	case []string:
		lines = v
	case []any:
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("local: argument authorized_keys[%d]: want a string, got %T", i, e)
			}
			lines = append(lines, s)
		}
	default:
		return nil, fmt.Errorf("local: argument authorized_keys: want a string or a list of strings, got %T", v)
	}
	var keys []ssh.PublicKey
	for i, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("local: argument authorized_keys, line %d: %w", i+1, err)
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// validID accepts the ids the broker makes (hex) and other plain names, and
// refuses anything that would leave the provider's directory.
func validID(id string) error {
	if id == "" || len(id) > 64 || id[0] == '.' {
		return fmt.Errorf("local: bad host id %q", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("local: bad host id %q", id)
		}
	}
	return nil
}

func newSigner() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// machineName is this machine's name, as hostname prints it: the
// Hostname of every Local host ("localhost" when the kernel will not say).
func machineName() string {
	if name, err := os.Hostname(); err == nil && name != "" {
		return name
	}
	return "localhost"
}

// currentUser is the name commands run as (informative: the server accepts
// any user name with the host's key).
func currentUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return strconv.Itoa(os.Getuid())
}

// baseEnv is this process's environment without what would mislead a
// command of a host: SSH_* of our own session, HOME and working directory.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "SSH_") || name == "HOME" || name == "PWD" || name == "OLDPWD" || name == markerVar {
			continue
		}
		env = append(env, kv)
	}
	return env
}
