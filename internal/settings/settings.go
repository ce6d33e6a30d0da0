// Package settings loads broker_settings.yaml from BROKER_DIRECTORY, applies
// BROKER_<Section>__<key> environment overrides and resolves provider
// instances and nicks. The format is the Python broker's, so its users'
// files load unchanged.
//
// The file holds (every part optional):
//
//	ssh:                          # ours and the newer Python broker's
//	  host_username: root
//	  host_password: secret
//	  host_ssh_port: 22           # default 22
//	  host_ssh_key_filename: ~/.ssh/id_ed25519
//	  connect_timeout: 10         # seconds or "10s"; aliases ssh_timeout and the
//	                              # Python broker's host_connection_timeout; default 10s
//	  command_timeout: 0          # seconds or "5m"; 0 (default) means none
//	  insecure_ignore_host_key: false
//	  known_hosts: [~/.ssh/known_hosts]
//	host_username: root           # the older Python broker's top-level keys;
//	host_ssh_port: 22             # a key under ssh: wins over its top-level twin
//	AnsibleTower:                 # a provider section: any top-level map
//	  base_url: https://tower.example.com/
//	  instances:                  # a list of one-key maps or a map
//	    - testing: {token: x, default: true}
//	    - production: {base_url: https://tower2.example.com/, override_envars: true}
//	nicks:
//	  rhel7: {workflow: deploy-base-rhel}
//
// An instance's keys replace the section's keys of the same name (a shallow
// merge). A request naming no instance gets the only one, else the first
// (in file order) marked default: true, as in the Python broker; with
// several and none marked that request is an error (the Python broker would
// use the section's keys alone). Load checks only the sections of the
// providers in use (Options.Providers, BuiltinProviders by default): their
// shape and that default: is a boolean (how many instances say it is a
// warning at most). Other sections (the Python broker's Foreman, Beaker…)
// are kept unchecked and silent. Keys are matched ignoring case and
// unknown keys are kept in Data; those of the sections whose keys are
// known (Options.Keys, ssh:) and top-level keys close to a known name
// (Contianer, nick) get a warning naming the closest known key. Duplicate keys
// in one map are an error. A plain (unquoted) None reads as null: PyYAML,
// and so the Python broker, reads the text "None", but its example files
// wrote None to mean "unset", which is what null does here.
//
// Environment overrides BROKER_<Section>__<key>[__<subkey>…]=value set a
// key (creating it when absent). Values are read as dynaconf reads them
// (parseEnvValue): @int/@float/@bool/@str/@json/@none converters, else a
// TOML value ("true", "5", "0x1F", "1.50", `"x"`, `["a", "b"]`, "{a = 1}"),
// else the text as written ("None", "[a, b]", "abc"); a password or token
// key keeps its text unless a converter is given.
// BROKER_<Section>__instances__<name>__<key> sets one instance's key,
// whichever form instances: has. A section-level override
// BROKER_<Section>__<key> sets the section's key and also the same key of
// every instance that sets its own (env wins over the file, as in the
// Python broker), except in instances marked override_envars: true, whose
// own keys win. A more specific override wins over a broader one.
// Variables without "__" (BROKER_DIRECTORY…) are not overrides.
package settings

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// FileName is the settings file's name inside the broker directory.
const FileName = "broker_settings.yaml"

// MaxFileSize bounds a settings file: a larger one is refused before it is
// read whole, let alone parsed (a 50 MB file cost 3 s and 848 MB to parse
// before failing). Real ones are a few kilobytes.
const MaxFileSize = 1 << 20

// ErrTooLarge is wrapped by the error for a settings file over MaxFileSize.
var ErrTooLarge = errors.New("settings file too large")

// Defaults for SSH settings the file leaves out.
const (
	DefaultPort           = 22
	DefaultConnectTimeout = 10 * time.Second
)

// Settings is a loaded, validated settings tree. It is safe for concurrent
// use as long as nobody changes Data.
type Settings struct {
	Dir  string         // BROKER_DIRECTORY (default ~/.broker), absolute
	File string         // the settings file path; it may not exist
	Data map[string]any // the whole tree after env overrides; unknown keys kept
	SSH  SSH            // from the top-level ssh: section (or the Python broker's top-level host_* keys)

	// DirFrom says where Dir came from, for errors about it:
	// "BROKER_DIRECTORY=/x" (as set), the option that named it
	// (`broker.WithDirectory("/x")`), or "~/.broker (the default: no
	// BROKER_DIRECTORY)".
	DirFrom string

	meta     *meta
	warnings []string
}

// SSH holds the global SSH settings.
type SSH struct {
	Username       string
	Password       string // secret
	Port           int    // 1-65535; DefaultPort when unset
	KeyFilename    string // a leading ~/ is expanded
	ConnectTimeout time.Duration
	CommandTimeout time.Duration // 0: none
	Insecure       bool          // ssh.insecure_ignore_host_key
	KnownHosts     []string      // ssh.known_hosts: file paths, leading ~/ expanded
}

// Options control Load.
type Options struct {
	Dir     string   // overrides BROKER_DIRECTORY
	File    string   // overrides Dir/broker_settings.yaml; relative to the working directory
	Environ []string // environment to read (os.Environ() when nil)
	// DirFrom and FileFrom name what gave Dir and File, in errors about
	// them (`broker.WithDirectory("/x")`); by default "the directory
	// option …" and "the settings file option …".
	DirFrom, FileFrom string
	// Providers names the provider sections to check at Load (shape of
	// the section and its instances): the providers this program
	// implements. Nil means BuiltinProviders. Other sections are kept
	// unchecked; Instance checks whichever section it is asked for.
	Providers []string
	// Keys lists, by provider name, the keys the section of a provider in
	// use and its instances may hold (besides instances:, default: and
	// override_envars:), matched ignoring case. Any other key gets a
	// warning naming the closest known one. A provider with no entry has
	// its keys unchecked. The ssh: section and the top level are always
	// checked.
	Keys map[string][]string
}

// Instance is one provider instance's merged settings.
type Instance struct {
	Provider string         // the section name as written in the file (e.g. "AnsibleTower")
	Name     string         // instance name; "" when the section has no instances
	Values   map[string]any // section keys overlaid by the instance's keys; no "instances" key
}

// Load reads and validates the settings. No settings file is fine: the
// result is empty settings with the SSH defaults. Load creates nothing.
func Load(opts Options) (*Settings, error) {
	environ := opts.Environ
	if environ == nil {
		environ = os.Environ()
	}
	home := func() (string, error) {
		if h := getenv(environ, "HOME"); h != "" {
			return h, nil
		}
		return os.UserHomeDir()
	}
	dir, dirFrom := opts.Dir, opts.DirFrom
	switch {
	case dir != "" && dirFrom == "":
		dirFrom = "the directory option " + strconv.Quote(dir)
	case dir == "":
		dir = getenv(environ, "BROKER_DIRECTORY")
		dirFrom = "BROKER_DIRECTORY=" + dir
	}
	if dir == "" {
		h, err := home()
		if err != nil {
			return nil, fmt.Errorf("settings: no BROKER_DIRECTORY and no home directory for ~/.broker: %w", err)
		}
		dir = filepath.Join(h, ".broker")
		dirFrom = "~/.broker (the default: no BROKER_DIRECTORY)"
	}
	dir, err := absPath(dir, home)
	if err != nil {
		return nil, fmt.Errorf("settings: %s: %w", dirFrom, err)
	}
	file, fileFrom := opts.File, dirFrom
	if file == "" {
		file = filepath.Join(dir, FileName)
	} else if fileFrom = opts.FileFrom; fileFrom == "" {
		fileFrom = "the settings file option " + strconv.Quote(file)
	}
	file, err = absPath(file, home)
	if err != nil {
		return nil, fmt.Errorf("settings: %s: %w", fileFrom, err)
	}

	m := &meta{file: file, lines: map[string]int{}, origin: map[string]string{}}
	s := &Settings{Dir: dir, DirFrom: dirFrom, File: file, Data: map[string]any{}, meta: m}
	raw, err := readBounded(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case errors.Is(err, ErrTooLarge):
		return nil, &Error{From: fileFrom, File: file, Msg: err.Error(), Err: err}
	case err != nil:
		return nil, &Error{From: fileFrom, File: file, Msg: "cannot read: " + errText(err), Err: err}
	default:
		if s.Data, err = parseFile(m, raw); err != nil {
			return nil, err
		}
		if fi, err := os.Stat(file); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if secrets := secretPaths(s.Data, ""); len(secrets) > 0 {
				s.warnings = append(s.warnings, fmt.Sprintf(
					"settings: %s has mode %04o, so group or others can read its secrets (%s); chmod 600 it",
					file, fi.Mode().Perm(), strings.Join(secrets, ", ")))
			}
		}
	}

	ovs, warns, err := m.overrides(environ)
	if err != nil {
		return nil, err
	}
	s.warnings = append(s.warnings, warns...)
	flags := instanceFlags(ovs)
	for _, o := range ovs {
		if err := m.apply(s.Data, o, flags); err != nil {
			return nil, err
		}
	}

	if s.SSH, err = m.parseSSH(s.Data, home); err != nil {
		return nil, err
	}
	used := opts.Providers
	if used == nil {
		used = BuiltinProviders
	}
	if err := s.validate(used); err != nil {
		return nil, err
	}
	s.checkKeys(used, opts.Keys)
	return s, nil
}

// readBounded reads file, refusing one over MaxFileSize from its size
// before reading, and from what it reads when it has no size (a pipe) or
// grows meanwhile.
func readBounded(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tooLarge := func(size string) error {
		return fmt.Errorf("%s, over the limit of %d bytes for a settings file; not read: %w", size, MaxFileSize, ErrTooLarge)
	}
	if fi, err := f.Stat(); err == nil && fi.Size() > MaxFileSize {
		return nil, tooLarge(fmt.Sprintf("is %d bytes", fi.Size()))
	}
	raw, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxFileSize {
		return nil, tooLarge(fmt.Sprintf("has more than %d bytes", MaxFileSize))
	}
	return raw, nil
}

// errText is err's text without the file name *PathError repeats.
func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// getenv returns the last value of name in environ, like the os package.
func getenv(environ []string, name string) string {
	v := ""
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val
		}
	}
	return v
}

// absPath expands a leading ~/ and makes p absolute.
func absPath(p string, home func() (string, error)) (string, error) {
	p, err := expandHome(p, home)
	if err != nil {
		return p, err
	}
	return filepath.Abs(p)
}

func expandHome(p string, home func() (string, error)) (string, error) {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p, nil
	}
	h, err := home()
	if err != nil {
		return p, err
	}
	return filepath.Join(h, strings.TrimPrefix(p, "~")), nil
}

// secretPaths lists the key paths holding a non-empty secret.
func secretPaths(v any, path string) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for _, k := range sortedKeys(x) {
			p := joinPath(path, k)
			if secretKey(k) && x[k] != nil && x[k] != "" {
				out = append(out, p)
				continue
			}
			out = append(out, secretPaths(x[k], p)...)
		}
	case []any:
		for i, e := range x {
			out = append(out, secretPaths(e, fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return out
}

// parseSSH reads the ssh: section, falling back to the older top-level
// host_* keys for each key the section leaves unset.
func (m *meta) parseSSH(data map[string]any, home func() (string, error)) (SSH, error) {
	out := SSH{Port: DefaultPort, ConnectTimeout: DefaultConnectTimeout}
	r := sshKeys{m: m, data: data, secName: "ssh"}
	if k, ok := findKey(data, "ssh"); ok {
		r.secName = k
		switch x := data[k].(type) {
		case nil:
		case map[string]any:
			r.sec = x
		default:
			return out, m.errAt(k, k, "expected a map of SSH settings, got %s", got(k, x))
		}
	}
	var err error
	if out.Username, err = r.str(true, "host_username"); err != nil {
		return out, err
	}
	if out.Password, err = r.str(true, "host_password"); err != nil {
		return out, err
	}
	if out.KeyFilename, err = r.str(true, "host_ssh_key_filename"); err != nil {
		return out, err
	}
	if out.KeyFilename, err = expandHome(out.KeyFilename, home); err != nil {
		return out, fmt.Errorf("settings: ssh host_ssh_key_filename: %w", err)
	}
	if v, p, ok := r.get(true, "host_ssh_port"); ok {
		port, ok := toPort(v)
		if !ok {
			return out, m.errAt(p, p, "%s is not a port number (1-65535)", show(p, v))
		}
		out.Port = port
	}
	if err := r.timeouts(&out); err != nil {
		return out, err
	}
	if v, p, ok := r.get(false, "insecure_ignore_host_key"); ok {
		b, ok := toBool(v)
		if !ok {
			return out, m.errAt(p, p, "%s is not a boolean", show(p, v))
		}
		out.Insecure = b
	}
	out.KnownHosts, err = r.knownHosts(home)
	return out, err
}

// sshKeys reads the SSH settings: the ssh: section (sec, named secName as
// written), and for some keys the top level of the file (data).
type sshKeys struct {
	m       *meta
	data    map[string]any
	sec     map[string]any
	secName string
}

// get finds the first set key: under ssh: first, then at the top level
// when top is true. It returns its value and its path.
func (r sshKeys) get(top bool, names ...string) (any, string, bool) {
	for _, n := range names {
		if k, ok := findKey(r.sec, n); ok && r.sec[k] != nil {
			return r.sec[k], joinPath(r.secName, k), true
		}
	}
	if top {
		for _, n := range names {
			if k, ok := findKey(r.data, n); ok && r.data[k] != nil {
				return r.data[k], k, true
			}
		}
	}
	return nil, "", false
}

// str reads a string (a number or a boolean as its text); "" when unset.
func (r sshKeys) str(top bool, name string) (string, error) {
	v, p, ok := r.get(top, name)
	if !ok {
		return "", nil
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(x), nil
	}
	return "", r.m.errAt(p, p, "expected a string, got %s", TypeName(v))
}

// timeouts reads the connect and command timeouts into out.
//
// connect_timeout and ssh_timeout are ours; host_connection_timeout is the
// Python broker's (under ssh:, or at the top level in its older files).
// Python's default is 60 s; ours (DefaultConnectTimeout) bounds each
// connection attempt's TCP dial and SSH handshake, and attempts are
// retried.
func (r sshKeys) timeouts(out *SSH) error {
	v, p, ok := r.get(false, "connect_timeout", "ssh_timeout", "host_connection_timeout")
	if !ok {
		v, p, ok = r.get(true, "host_connection_timeout")
	}
	if ok {
		d, ok := toDuration(v)
		if !ok {
			return r.m.errAt(p, p, "%s is not a duration of 0 or more (seconds, or a Go duration like \"90s\")", show(p, v))
		}
		if d > 0 {
			out.ConnectTimeout = d
		}
	}
	if v, p, ok := r.get(false, "command_timeout"); ok {
		d, ok := toDuration(v)
		if !ok {
			return r.m.errAt(p, p, "%s is not a duration of 0 or more (seconds, or a Go duration like \"90s\")", show(p, v))
		}
		out.CommandTimeout = d
	}
	return nil
}

// knownHosts reads known_hosts: a file path or a list of them, with a
// leading ~/ expanded.
func (r sshKeys) knownHosts(home func() (string, error)) ([]string, error) {
	v, p, ok := r.get(false, "known_hosts")
	if !ok {
		return nil, nil
	}
	var list []any
	switch x := v.(type) {
	case string:
		list = []any{x}
	case []any:
		list = x
	default:
		return nil, r.m.errAt(p, p, "expected a list of file paths, got %s", got(p, v))
	}
	var out []string
	for i, e := range list {
		f, ok := e.(string)
		if !ok || f == "" {
			ip := fmt.Sprintf("%s[%d]", p, i)
			return nil, r.m.errAt(ip, ip, "expected a file path, got %s", got(ip, e))
		}
		f, err := expandHome(f, home)
		if err != nil {
			return nil, fmt.Errorf("settings: ssh known_hosts %q: %w", f, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// toPort reads a TCP port from a number or a numeric string.
func toPort(v any) (int, bool) {
	var n int64
	switch x := v.(type) {
	case int:
		n = int64(x)
	case int64:
		n = x
	case float64:
		if x != math.Trunc(x) || x < 1 || x > 65535 {
			return 0, false
		}
		n = int64(x)
	case string:
		i, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			return 0, false
		}
		n = i
	default:
		return 0, false
	}
	if n < 1 || n > 65535 {
		return 0, false
	}
	return int(n), true
}

// toDuration reads a number of seconds (int, float or numeric string) or a
// Go duration string; negative values are refused.
func toDuration(v any) (time.Duration, bool) {
	var secs float64
	switch x := v.(type) {
	case int:
		secs = float64(x)
	case int64:
		secs = float64(x)
	case uint64:
		secs = float64(x)
	case float64:
		secs = x
	case string:
		s := strings.TrimSpace(x)
		if d, err := time.ParseDuration(s); err == nil {
			return d, d >= 0
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, false
		}
		secs = f
	default:
		return 0, false
	}
	if math.IsNaN(secs) || secs < 0 || secs > float64(math.MaxInt64)/float64(time.Second) {
		return 0, false
	}
	return time.Duration(secs * float64(time.Second)), true
}

// validate checks what Load can check beyond ssh: the sections of the
// providers in use and their instances, nicks and inventory_file. Sections
// of other providers are left alone, as the Python broker checks a
// provider's settings only when it uses the provider: a section this
// program never reads must not stop it. A default: that is not a boolean
// is an error; how many instances say default: true is a warning at most
// (see defaultIndex).
func (s *Settings) validate(used []string) error {
	m := s.meta
	for _, name := range used {
		k, ok := findKey(s.Data, name)
		if !ok {
			continue
		}
		sec, err := m.parseSection(k, s.Data[k])
		if err != nil {
			return err
		}
		if sec.badDef != nil {
			return sec.badDef
		}
		if w := m.warning(sec); w != "" {
			s.warnings = append(s.warnings, w)
		}
	}
	if _, err := s.nicks(); err != nil {
		return err
	}
	for _, nick := range s.nickNames() {
		if _, err := s.Nick(nick); err != nil {
			return err
		}
	}
	if v, ok := s.Data["inventory_file"]; ok && v != nil {
		if f, ok := v.(string); !ok || f == "" {
			return m.errAt("inventory_file", "inventory_file", "expected a file name, got %s", got("inventory_file", v))
		}
	}
	return nil
}

// Sections returns the provider section names as written: the top-level
// keys whose value is a map, other than ssh, nicks and logging.
func (s *Settings) Sections() []string {
	var out []string
	for k, v := range s.Data {
		if _, ok := v.(map[string]any); ok && isProviderName(k) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// Warnings returns problems that did not stop Load: a settings file with
// secrets that group or others can read, ignored override variables, keys
// nobody reads (with the closest known key), how default: is marked.
func (s *Settings) Warnings() []string {
	return append([]string(nil), s.warnings...)
}

// Instance returns the named instance of provider (section name matched
// case-insensitively); name "" picks the default instance: the only one,
// else the first marked default: true (an error names the instances when
// none is). An unknown name is an error (the Python broker falls back to
// the default instead). A provider with no section gives an Instance with
// empty Values (asking it for a named instance is an error). Values is a
// copy the caller may change.
func (s *Settings) Instance(provider, name string) (Instance, error) {
	k, ok := findKey(s.Data, provider)
	if !ok {
		if name != "" {
			return Instance{}, s.meta.errAt("", provider, "no instance %q: the settings have no %s section", name, provider)
		}
		return Instance{Provider: provider, Values: map[string]any{}}, nil
	}
	sec, err := s.meta.parseSection(k, s.Data[k])
	if err != nil {
		return Instance{}, err
	}
	var idx int
	if name == "" {
		if idx, err = s.meta.defaultIndex(sec); err != nil {
			return Instance{}, err
		}
	} else {
		idx = -1
		for i, in := range sec.instances {
			if in.name == name {
				idx = i
			}
		}
		if idx < 0 {
			for i, in := range sec.instances {
				if strings.EqualFold(in.name, name) {
					idx = i
				}
			}
		}
		if idx < 0 {
			if len(sec.instances) == 0 {
				return Instance{}, s.meta.errAt(k, k, "no instance %q: the section has no instances", name)
			}
			names := make([]string, len(sec.instances))
			for i, in := range sec.instances {
				names[i] = in.name
			}
			return Instance{}, s.meta.errAt(joinPath(k, "instances"), joinPath(k, "instances"), "no instance %q (instances: %s)", name, strings.Join(names, ", "))
		}
	}
	inst := Instance{Provider: k, Values: sec.merged(idx)}
	if idx >= 0 {
		inst.Name = sec.instances[idx].name
	}
	return inst, nil
}

// nicks returns the nicks: map (nil when absent).
func (s *Settings) nicks() (map[string]any, error) {
	k, ok := findKey(s.Data, "nicks")
	if !ok {
		return nil, nil
	}
	switch x := s.Data[k].(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return x, nil
	default:
		return nil, s.meta.errAt(k, k, "expected a map of nicks, got %s", got(k, x))
	}
}

func (s *Settings) nickNames() []string {
	n, _ := s.nicks()
	return sortedKeys(n)
}

// Nick returns a copy of the arguments of a nick from the nicks: section
// (name matched exactly, else ignoring case).
func (s *Settings) Nick(name string) (map[string]any, error) {
	nicks, err := s.nicks()
	if err != nil {
		return nil, err
	}
	k, ok := findKey(nicks, name)
	if !ok {
		known := "none defined"
		if len(nicks) > 0 {
			known = "known: " + strings.Join(sortedKeys(nicks), ", ")
		}
		return nil, s.meta.errAt("nicks", "nicks", "unknown nick %q (%s)", name, known)
	}
	nk, _ := findKey(s.Data, "nicks")
	p := joinPath(nk, k)
	switch x := nicks[k].(type) {
	case nil:
		return map[string]any{}, nil
	case map[string]any:
		return deepCopy(x).(map[string]any), nil
	default:
		return nil, s.meta.errAt(p, p, "a nick must be a map of arguments, got %s", got(p, x))
	}
}

// ErrorAt is an Error about key of a provider instance's settings (its
// Values), found after Load, by the provider: it names the file and line
// where the key is set, or the environment variable that set it, with the
// key path as a person would look it up.
func (s *Settings) ErrorAt(provider, instance, key, msg string) *Error {
	k, ok := findKey(s.Data, provider)
	if !ok {
		return s.meta.errAt("", joinPath(provider, key), "%s", msg)
	}
	if sec, err := s.meta.parseSection(k, s.Data[k]); err == nil {
		for _, in := range sec.instances {
			if !strings.EqualFold(in.name, instance) {
				continue
			}
			if ik, ok := findKey(in.m, key); ok {
				return s.meta.errAt(joinPath(in.raw, ik), joinPath(in.shown, ik), "%s", msg)
			}
		}
	}
	if sm, ok := s.Data[k].(map[string]any); ok {
		if sk, ok := findKey(sm, key); ok {
			return s.meta.errAt(joinPath(k, sk), joinPath(k, sk), "%s", msg)
		}
	}
	return s.meta.errAt("", joinPath(k, key), "%s", msg)
}
