// Package container is the Container provider: hosts are containers run by a
// Docker Engine, or by Podman through its Docker-compatible API socket.
//
// A checkout runs the image named by the container_host argument. When the
// image exposes port 22 (an sshd image such as brokertest/debian-sshd:12),
// the host is reached over SSH through the engine's own exec stream
// (TransportStream): each SSH connection is an exec of the image's
// `sshd -i` (inetd mode) whose attached stdin and stdout carry it, as an
// OpenSSH ProxyCommand would. Nothing is published and no sshd daemon is
// waited for: one exec at checkout installs a per-host ed25519 client key
// (generated under <BROKER_DIRECTORY>/container/<id>/client_key), reads
// sshd's host key, which is pinned (the channel is the engine itself), and
// becomes the host's first connection. SSH works with no configuration, is
// verified, and works the same with an engine on another machine. Port 22
// is published (on 127.0.0.1 only, as every port) only when the ports
// argument names it; the record's SSH block then also gives that address,
// for other tools. An image whose sshd cannot run in inetd mode is run
// again with port 22 published and reached through its sshd daemon
// (TransportTCP). Images without sshd are driven through the engine itself
// (exec and archive API), as a hostkit.Transport (TransportExec). The
// transport is in the record (the SSH block's transport, the data's
// "transport") and in the host's String ("<hostname> via engine-stream").
// An exec stream ends as soon as its container stops (the engine's wait on
// the container, beside it), failing the calls on it at once; a later dial
// of a container that is not running fails, not retried, with
// hostkit.ErrHostGone. Files written through the engine go to a temporary
// beside the destination, renamed over it by an exec of mv once complete.
//
// Settings (the Container: section or one of its instances):
//
//	host_uri (or host)  engine address: unix:///path, /path, tcp://h:p (TLS as
//	                    below), https://h:p, ssh://[user@]h[:port][/socket]
//	                    (docs/settings.md says what ssh runs on the engine host).
//	                    The Python broker's bare host name h is
//	                    ssh://host_username@h[:host_port], with
//	                    /run/podman/podman.sock for the podman runtime.
//	                    Unset: DOCKER_HOST, CONTAINER_HOST,
//	                    $XDG_RUNTIME_DIR/podman/podman.sock, /run/podman/podman.sock,
//	                    /var/run/docker.sock; the first that answers a ping.
//	tls, tls_verify,    TLS to a tcp:// engine, as the docker CLI's DOCKER_TLS,
//	tls_cert_path       DOCKER_TLS_VERIFY and DOCKER_CERT_PATH (ca.pem, cert.pem,
//	                    key.pem), which they override
//	engine_ssh_config   ssh_config file for ssh:// engines (ssh -F; default the
//	                    user's ~/.ssh/config)
//	runtime             docker | podman (recorded; podman sockets tried first)
//	network             network to attach containers to
//	name_prefix         container name prefix (default: the local user name)
//	auto_map_ports      publish every port the image exposes, besides the ports
//	                    argument, on free loopback ports (default true); not
//	                    port 22 of a host reached over SSH, which only the
//	                    ports argument publishes
//	host_username       SSH user inside the containers (default root)
//	host_password       SSH password, added by Connect when given (secret)
//	timeout             seconds allowed to each engine call (default 60)
//	ssh_wait            seconds to wait for sshd's banner after start (default 60):
//	                    sshd -i's through the engine, or the daemon's on port 22
//	host_port           the Python broker's SSH port of a bare host name (above)
//	results_limit       the Python broker's; accepted and ignored
//	pull_policy         when an image is pulled: missing (the default: when
//	                    the engine lacks it), always, never; the request's
//	                    pull_policy argument overrides it
//	pull_timeout        seconds one pull may take (default 600)
//	registries          credentials per registry, over the user's files:
//	                    {host[:port]: {username, password or token}} (secret)
//
// Images are pulled by the engine (a remote one from where it runs), with
// the registry's credentials from the registries setting, else the user's
// Docker config.json (auths, credsStore, credHelpers: the
// docker-credential-* programs) or Podman's auth.json. Concurrent calls
// share one pull per image, processes too (a lock file per image under
// <BROKER_DIRECTORY>/container/pulls); a pull lasting over two seconds
// reports its progress every two seconds to the broker's log and to
// providers.Reporter of the call's context (brokertest: the test's log).
//
// Values are checked when the settings load (Driver.CheckSettings): a wrong
// type or an unknown runtime fails broker.New; other keys get a warning.
//
// Every container gets the labels LabelPrefix+"id", "user", "version",
// "instance", "args" (the checkout arguments as JSON) and each label of the
// checkout request under LabelPrefix, and SSH hosts "transport"; check-in
// and sync find containers by them, so a record holding only the broker id
// is enough to remove its host.
// A request labelled with its owner's run (the broker's are) also gets the
// checking-out process's "pid", "started" and "boot_id" (and "machine"
// when missing): Sync fills a recovered record's owner from them, so
// `brokertest cleanup --stale` can judge it.
package container

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sync/singleflight"

	settingsfile "github.com/hostbroker/broker/internal/settings"
	"github.com/hostbroker/broker/providers"
)

// Name is the provider's registered name.
const Name = "Container"

// Labels set on every container. LabelPrefix is followed by the key.
const (
	LabelPrefix   = "io.hostbroker."
	LabelID       = LabelPrefix + "id"       // the inventory id (CheckoutRequest.ID)
	LabelUser     = LabelPrefix + "user"     // who checked it out
	LabelVersion  = LabelPrefix + "version"  // broker version that made it
	LabelInstance = LabelPrefix + "instance" // provider instance name
	LabelArgs     = LabelPrefix + "args"     // checkout arguments, JSON
	LabelOneShot  = LabelPrefix + "oneshot"  // "true" on Execute's containers
	// LabelTransport is how Checkout meant to reach the host over SSH
	// (TransportStream or TransportTCP; absent without SSH), for Sync.
	LabelTransport = LabelPrefix + "transport"

	// The owner of the host, as the broker labels its requests (run,
	// machine, test) and as Checkout completes them from this process
	// (pid, start time, boot id: see inventory.Owner), so that Sync can
	// rebuild a record whose owner's death is provable.
	LabelRun     = LabelPrefix + "run"
	LabelMachine = LabelPrefix + "machine"
	LabelTest    = LabelPrefix + "test"
	LabelPID     = LabelPrefix + "pid"
	LabelStarted = LabelPrefix + "started"
	LabelBootID  = LabelPrefix + "boot_id"
)

func init() { providers.Register(Name, Driver{}) }

// Driver opens Container providers.
type Driver struct{}

// ArgKeys are the request arguments that select this provider.
func (Driver) ArgKeys() []string { return []string{"container_host", "container_app"} }

// settingKeys are the keys of the Container section (see the package
// documentation): those parseSettings reads, and the Python broker's
// results_limit, accepted and ignored. TestSettingKeysListsWhatIsRead
// keeps it in step with parseSettings.
var settingKeys = []string{
	"host_uri", "host", "runtime", "network", "name_prefix", "auto_map_ports",
	"host_username", "host_password", "timeout", "ssh_wait",
	"engine_ssh_config", "tls", "tls_verify", "tls_cert_path", "host_port",
	"results_limit", "pull_policy", "pull_timeout", "registries",
}

// SettingKeys lists the keys the Container section and its instances take.
func (Driver) SettingKeys() []string { return slices.Clone(settingKeys) }

// CheckSettings checks the settings' values as Open does, without
// reaching the engine: a wrong type or an unknown runtime fails when the
// settings load.
func (Driver) CheckSettings(cfg providers.Config) error {
	_, err := parseSettings(cfg)
	return err
}

// Open connects to the instance's engine (see the package documentation for
// the settings) and checks that it answers.
func (Driver) Open(ctx context.Context, cfg providers.Config) (providers.Provider, error) {
	return Open(ctx, cfg)
}

// Provider makes containers on one engine. It is safe for concurrent use.
type Provider struct {
	cfg      providers.Config
	log      *slog.Logger
	eng      *engine
	settings settings
	// handovers: connections that proved sshd up, kept for the hosts'
	// first dial.
	handovers handovers
	// streams counts the exec streams opened (the checkout's and each
	// dial's), for tests.
	streams atomic.Int64
	// pulls shares one pull per image among the calls that want it;
	// flights holds each pull's progress (engine+image → *pullFlight).
	pulls   singleflight.Group
	flights sync.Map
}

type settings struct {
	hostURI      string
	runtime      string
	network      string
	namePrefix   string
	autoMapPorts bool
	username     string
	password     string // secret
	callTimeout  time.Duration
	sshWait      time.Duration
	dir          string // where client keys live

	// How to reach the engine (see engineOptions).
	engineSSHConfig string
	tls, tlsVerify  *bool // nil: unset
	tlsCertPath     string

	// Pulls (pull.go, auth.go).
	pullPolicy  string
	pullTimeout time.Duration
	registries  map[string]registryCred // registry host → credentials (secret)
}

// Open returns a Provider for cfg, connected to its engine.
func Open(ctx context.Context, cfg providers.Config) (_ *Provider, err error) {
	defer func() { err = readable(err, "") }()
	s, err := parseSettings(cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	eng, err := connect(ctx, s, log)
	if err != nil {
		return nil, err
	}
	log.Debug("container: engine", "uri", eng.uri, "api", eng.cli.ClientVersion(), "instance", cfg.Instance)
	return &Provider{cfg: cfg, log: log, eng: eng, settings: s}, nil
}

// Close releases the engine connection and the SSH connections no host
// has taken.
func (p *Provider) Close() error {
	p.handovers.closeAll()
	return p.eng.cli.Close()
}

// EngineURI is the address of the engine the provider uses.
func (p *Provider) EngineURI() string { return p.eng.uri }

// Client is the engine client, for tests and tools that need the raw API.
func (p *Provider) Client() *client.Client { return p.eng.cli }

func stringSetting(m map[string]any, keys ...string) (string, error) {
	v, k, ok := providers.Setting(m, keys...)
	if !ok {
		return "", nil
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case int, int64, float64, bool:
		return fmt.Sprint(v), nil
	}
	return "", settingError(k, fmt.Errorf("want a string, got %s", settingsfile.TypeName(v)))
}

// settingError is a complaint about setting key, which the broker locates
// in the settings file or the environment.
func settingError(key string, err error) error {
	return fmt.Errorf("container: %w", &providers.SettingError{Key: key, Err: err})
}

func boolSetting(m map[string]any, def bool, keys ...string) (bool, error) {
	v, k, ok := providers.Setting(m, keys...)
	if !ok {
		return def, nil
	}
	b, err := parseBool(v)
	if err != nil {
		return def, settingError(k, err)
	}
	return b, nil
}

func secondsSetting(m map[string]any, def time.Duration, keys ...string) (time.Duration, error) {
	v, k, ok := providers.Setting(m, keys...)
	if !ok {
		return def, nil
	}
	d, err := providers.Seconds(v)
	if err != nil {
		return def, settingError(k, err)
	}
	return d, nil
}

func parseSettings(cfg providers.Config) (settings, error) {
	m := cfg.Settings
	var s settings
	var err error
	if s.hostURI, err = stringSetting(m, "host_uri", "host"); err != nil {
		return s, err
	}
	// The Python broker's default host is "localhost": the local engine.
	if s.hostURI == "localhost" {
		s.hostURI = ""
	}
	if s.runtime, err = stringSetting(m, "runtime"); err != nil {
		return s, err
	}
	s.runtime = strings.ToLower(s.runtime)
	switch s.runtime {
	case "", "docker", "podman":
	default:
		_, k, _ := providers.Setting(m, "runtime")
		return s, settingError(k, fmt.Errorf("%q is not docker or podman", s.runtime))
	}
	if s.network, err = stringSetting(m, "network"); err != nil {
		return s, err
	}
	if s.namePrefix, err = stringSetting(m, "name_prefix"); err != nil {
		return s, err
	}
	if s.namePrefix == "" {
		s.namePrefix = localUser()
	}
	s.namePrefix = sanitizeName(s.namePrefix)
	if s.autoMapPorts, err = boolSetting(m, true, "auto_map_ports"); err != nil {
		return s, err
	}
	if s.username, err = stringSetting(m, "host_username"); err != nil {
		return s, err
	}
	if s.password, err = stringSetting(m, "host_password"); err != nil {
		return s, err
	}
	if s.callTimeout, err = secondsSetting(m, 60*time.Second, "timeout"); err != nil {
		return s, err
	}
	if s.sshWait, err = secondsSetting(m, 60*time.Second, "ssh_wait"); err != nil {
		return s, err
	}
	if s.engineSSHConfig, err = stringSetting(m, "engine_ssh_config"); err != nil {
		return s, err
	}
	if s.tls, err = optionalBool(m, "tls"); err != nil {
		return s, err
	}
	if s.tlsVerify, err = optionalBool(m, "tls_verify"); err != nil {
		return s, err
	}
	if s.tlsCertPath, err = stringSetting(m, "tls_cert_path"); err != nil {
		return s, err
	}
	s.engineSSHConfig, s.tlsCertPath = expandHome(s.engineSSHConfig), expandHome(s.tlsCertPath)
	if err = pullSettings(m, &s); err != nil {
		return s, err
	}
	if err = registrySettings(m, &s); err != nil {
		return s, err
	}
	if s.hostURI, err = pythonHost(m, s); err != nil {
		return s, err
	}
	s.dir = cfg.Dir
	if s.dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			s.dir = filepath.Join(home, ".broker")
		} else {
			s.dir = filepath.Join(os.TempDir(), "broker-"+strconv.Itoa(os.Getuid()))
		}
	}
	return s, nil
}

// expandHome expands a path's leading ~/ (a settings file's paths are
// written so).
func expandHome(p string) string {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return p
	}
	return filepath.Join(home, strings.TrimPrefix(p, "~"))
}

// optionalBool reads a boolean setting that may be unset (nil).
func optionalBool(m map[string]any, key string) (*bool, error) {
	v, k, ok := providers.Setting(m, key)
	if !ok {
		return nil, nil
	}
	b, err := parseBool(v)
	if err != nil {
		return nil, settingError(k, err)
	}
	return &b, nil
}

// pythonHost turns the Python broker's host setting, a bare host name
// (not localhost, not an address), into the engine address it reaches:
// ssh://host_username@host[:host_port] for Docker (the remote user's
// `docker system dial-stdio`), with /run/podman/podman.sock for Podman.
// host_username defaults to root there, as in the Python broker.
func pythonHost(m map[string]any, s settings) (string, error) {
	h := s.hostURI
	if h == "" || strings.Contains(h, "://") || strings.HasPrefix(h, "/") {
		return h, nil
	}
	u := &url.URL{Scheme: "ssh", Host: h, User: url.User(cmp.Or(s.username, "root"))}
	if v, k, ok := providers.Setting(m, "host_port"); ok {
		port, err := strconv.Atoi(strings.TrimSpace(fmt.Sprint(v)))
		if err != nil || port < 1 || port > 65535 {
			return "", settingError(k, fmt.Errorf("%v is not a port number", v))
		}
		u.Host = net.JoinHostPort(h, strconv.Itoa(port))
	}
	if s.runtime == "podman" {
		u.Path = podmanRootSocket
	}
	return u.String(), nil
}

func localUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "broker"
}

var badNameChars = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// sanitizeName makes s usable in a container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*).
func sanitizeName(s string) string {
	s = badNameChars.ReplaceAllString(s, "_")
	s = strings.TrimLeft(s, "_.-")
	if s == "" {
		return "broker"
	}
	return s
}

// callCtx bounds one engine call by the timeout setting.
func (p *Provider) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, p.settings.callTimeout)
}
