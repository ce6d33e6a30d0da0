package settings_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hostbroker/broker/internal/settings"
	"github.com/hostbroker/broker/providers"
	_ "github.com/hostbroker/broker/providers/ansibletower"
	_ "github.com/hostbroker/broker/providers/container"
	_ "github.com/hostbroker/broker/providers/local"
	_ "github.com/hostbroker/broker/providers/ssh"
)

// writeSettings writes a settings file into a new broker directory.
func writeSettings(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	noErr(t, os.WriteFile(filepath.Join(dir, settings.FileName), []byte(content), 0o600))
	return dir
}

// load loads content with only the given environment.
func load(t *testing.T, content string, env ...string) (*settings.Settings, error) {
	t.Helper()
	dir := writeSettings(t, content)
	return settings.Load(settings.Options{Dir: dir, Environ: append([]string{}, env...)})
}

func mustLoad(t *testing.T, content string, env ...string) *settings.Settings {
	t.Helper()
	s, err := load(t, content, env...)
	noErr(t, err)
	return s
}

func testdata(name string) string { return filepath.Join("..", "..", "testdata", "settings", name) }

func TestLoadWithoutFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not-yet")
	s, err := settings.Load(settings.Options{Dir: dir, Environ: []string{}})
	noErr(t, err)
	eq(t, dir, s.Dir)
	eq(t, filepath.Join(dir, "broker_settings.yaml"), s.File)
	empty(t, s.Data)
	empty(t, s.Sections())
	empty(t, s.Warnings())
	eq(t, settings.SSH{Port: 22, ConnectTimeout: 10 * time.Second}, s.SSH)
	_, err = os.Stat(dir)
	isTrue(t, errors.Is(err, os.ErrNotExist), "Load must not create the directory")

	inst, err := s.Instance("Local", "")
	noErr(t, err)
	eq(t, settings.Instance{Provider: "Local", Values: map[string]any{}}, inst)
	_, err = s.Instance("Local", "other")
	isErr(t, err)
	contains(t, err.Error(), `no instance "other"`)
	_, err = s.Nick("rhel7")
	isErr(t, err)
	contains(t, err.Error(), `unknown nick "rhel7" (none defined)`)
}

func TestDirAndFile(t *testing.T) {
	base := t.TempDir()
	t.Chdir(base)
	tests := []struct {
		name     string
		opts     settings.Options
		wantDir  string
		wantFile string
	}{
		{"option", settings.Options{Dir: "/opt/b", Environ: []string{"BROKER_DIRECTORY=/env/b"}}, "/opt/b", "/opt/b/broker_settings.yaml"},
		{"env", settings.Options{Environ: []string{"BROKER_DIRECTORY=/env/b", "HOME=/home/u"}}, "/env/b", "/env/b/broker_settings.yaml"},
		{"last env wins", settings.Options{Environ: []string{"BROKER_DIRECTORY=/env/a", "BROKER_DIRECTORY=/env/b"}}, "/env/b", "/env/b/broker_settings.yaml"},
		{"home", settings.Options{Environ: []string{"HOME=/home/u"}}, "/home/u/.broker", "/home/u/.broker/broker_settings.yaml"},
		{"tilde", settings.Options{Dir: "~/x", Environ: []string{"HOME=/home/u"}}, "/home/u/x", "/home/u/x/broker_settings.yaml"},
		{"relative", settings.Options{Dir: "rel", Environ: []string{}}, filepath.Join(base, "rel"), filepath.Join(base, "rel", "broker_settings.yaml")},
		{"file option", settings.Options{Dir: "/opt/b", File: "other.yaml", Environ: []string{}}, "/opt/b", filepath.Join(base, "other.yaml")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := settings.Load(tt.opts)
			noErr(t, err)
			eq(t, tt.wantDir, s.Dir)
			eq(t, tt.wantFile, s.File)
		})
	}
}

func TestPythonBrokerFileLoadsUnchanged(t *testing.T) {
	s, err := settings.Load(settings.Options{Dir: t.TempDir(), File: testdata("python_broker_settings.yaml"), Environ: []string{}})
	noErr(t, err)

	eq(t, settings.SSH{
		Username: "root", Password: "<host password>", Port: 2222,
		KeyFilename: "/home/user/.ssh/id_rsa", ConnectTimeout: 10 * time.Second,
	}, s.SSH)
	eq(t, false, s.Data["debug"])
	eq(t, "inventory.yaml", s.Data["inventory_file"])
	eq(t, []string{"AnsibleTower", "Container"}, s.Sections())

	at, err := s.Instance("ansibletower", "")
	noErr(t, err)
	eq(t, settings.Instance{Provider: "AnsibleTower", Name: "testing", Values: map[string]any{
		"base_url": "https://awx-testing.example.com/", "username": "tester", "token": "<testing token>",
		"inventory": "testing inventory", "release_workflow": "remove-vm", "extend_workflow": "extend-vm",
		"new_expire_time": "+172800", "workflow_timeout": 3600, "results_limit": 50,
	}}, at)
	prod, err := s.Instance("AnsibleTower", "production")
	noErr(t, err)
	eq(t, "production", prod.Name)
	eq(t, "https://awx.example.com/", prod.Values["base_url"])
	eq(t, "<production password>", prod.Values["password"])
	notContains(t, prod.Values, "token")

	docker, err := s.Instance("Container", "")
	noErr(t, err)
	eq(t, "docker", docker.Name)
	contains(t, docker.Values, "host_port")
	isNil(t, docker.Values["host_port"], "a plain None is null")
	isNil(t, docker.Values["network"])
	eq(t, "docker", docker.Values["runtime"], "the instance's key wins over the section's")
	eq(t, false, docker.Values["auto_map_ports"])
	remote, err := s.Instance("Container", "REMOTE")
	noErr(t, err)
	eq(t, "remote", remote.Name)
	eq(t, "podman", remote.Values["runtime"])

	nick, err := s.Nick("rhel7")
	noErr(t, err)
	eq(t, map[string]any{"workflow": "deploy-base-rhel", "rhel_version": "7.9", "notes": "Requested by broker"}, nick)
	logging, ok := s.Data["logging"].(map[string]any)
	mustTrue(t, ok, "unknown sections are kept")
	eq(t, "debug", logging["file_level"])
}

func TestOurFile(t *testing.T) {
	s, err := settings.Load(settings.Options{Dir: t.TempDir(), File: testdata("broker_settings.yaml"), Environ: []string{"HOME=/home/u"}})
	noErr(t, err)
	eq(t, settings.SSH{
		Username: "tester", Password: "<ssh password>", Port: 22,
		KeyFilename:    "/home/u/.ssh/id_ed25519",
		ConnectTimeout: 15 * time.Second, CommandTimeout: 5 * time.Minute,
		KnownHosts: []string{"/home/u/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts"},
	}, s.SSH)
	eq(t, "go", s.Data["ssh"].(map[string]any)["backend"], "unknown ssh keys are kept")
	eq(t, []string{"AnsibleTower", "Container", "Local"}, s.Sections())

	local, err := s.Instance("Local", "")
	noErr(t, err)
	eq(t, settings.Instance{Provider: "Local", Values: map[string]any{"max_hosts": 8}}, local)
	at, err := s.Instance("AnsibleTower", "")
	noErr(t, err)
	eq(t, "", at.Name)
	eq(t, "<awx token>", at.Values["token"])
	podman, err := s.Instance("Container", "podman")
	noErr(t, err)
	eq(t, map[string]any{"host": "unix:///run/podman/podman.sock", "runtime": "podman", "results_limit": 50}, podman.Values)
	def, err := s.Instance("Container", "")
	noErr(t, err)
	eq(t, "docker", def.Name)
	notContains(t, def.Values, "default")
	notContains(t, def.Values, "instances")
}

func TestSSH(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		env     []string
		want    func(*settings.SSH)
		wantErr []string
	}{
		{name: "ssh section wins over top level",
			yaml: "host_username: old\nhost_ssh_port: 2200\nhost_password: oldpw\nssh:\n  host_username: new\n  host_password: null\n",
			want: func(s *settings.SSH) { s.Username, s.Port, s.Password = "new", 2200, "oldpw" }},
		{name: "port as string", yaml: "ssh: {host_ssh_port: '2022'}", want: func(s *settings.SSH) { s.Port = 2022 }},
		{name: "numbers as strings", yaml: "ssh: {host_username: 1000, host_password: 1234}", want: func(s *settings.SSH) { s.Username, s.Password = "1000", "1234" }},
		{name: "port not a number", yaml: "ssh:\n  host_ssh_port: abc\n", wantErr: []string{":2: ssh.host_ssh_port: \"abc\" is not a port number"}},
		{name: "port zero", yaml: "host_ssh_port: 0", wantErr: []string{"host_ssh_port: 0 is not a port number"}},
		{name: "port too big", yaml: "ssh: {host_ssh_port: 70000}", wantErr: []string{"ssh.host_ssh_port: 70000 is not a port number"}},
		{name: "port fraction", yaml: "ssh: {host_ssh_port: 22.5}", wantErr: []string{"22.5 is not a port number"}},
		{name: "timeouts as numbers", yaml: "ssh: {connect_timeout: 3, command_timeout: 1.5}",
			want: func(s *settings.SSH) { s.ConnectTimeout, s.CommandTimeout = 3*time.Second, 1500*time.Millisecond }},
		{name: "timeouts as durations", yaml: "ssh: {ssh_timeout: 90s, command_timeout: '2'}",
			want: func(s *settings.SSH) { s.ConnectTimeout, s.CommandTimeout = 90*time.Second, 2*time.Second }},
		{name: "connect timeout zero keeps default", yaml: "ssh: {connect_timeout: 0}", want: func(s *settings.SSH) {}},
		{name: "bad timeout", yaml: "ssh: {command_timeout: soon}", wantErr: []string{`ssh.command_timeout: "soon" is not a duration`}},
		{name: "negative timeout", yaml: "ssh: {connect_timeout: -1}", wantErr: []string{"ssh.connect_timeout: -1 is not a duration"}},
		{name: "insecure", yaml: "ssh: {insecure_ignore_host_key: True, known_hosts: /k}",
			want: func(s *settings.SSH) { s.Insecure, s.KnownHosts = true, []string{"/k"} }},
		{name: "insecure not bool", yaml: "ssh: {insecure_ignore_host_key: maybe}", wantErr: []string{`ssh.insecure_ignore_host_key: "maybe" is not a boolean`}},
		{name: "known_hosts bad entry", yaml: "ssh: {known_hosts: [/a, {b: 1}]}", wantErr: []string{"ssh.known_hosts[1]: expected a file path, got a map"}},
		{name: "ssh not a map", yaml: "ssh: [a]", wantErr: []string{"ssh: expected a map of SSH settings, got a list"}},
		{name: "username a map", yaml: "ssh: {host_username: {a: 1}}", wantErr: []string{"ssh.host_username: expected a string, got a map"}},
		{name: "env port", yaml: "ssh: {host_ssh_port: 22}", env: []string{"BROKER_SSH__HOST_SSH_PORT=2200"}, want: func(s *settings.SSH) { s.Port = 2200 }},
		{name: "env bad port", yaml: "ssh: {host_ssh_port: 22}", env: []string{"BROKER_ssh__host_ssh_port=abc"},
			wantErr: []string{"ssh.host_ssh_port (from env BROKER_ssh__host_ssh_port): \"abc\" is not a port number"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := load(t, tt.yaml, tt.env...)
			if tt.wantErr != nil {
				isErr(t, err)
				contains(t, err.Error(), settings.FileName)
				for _, w := range tt.wantErr {
					contains(t, err.Error(), w)
				}
				return
			}
			noErr(t, err)
			want := settings.SSH{Port: 22, ConnectTimeout: 10 * time.Second}
			tt.want(&want)
			eq(t, want, s.SSH)
		})
	}
}

const listForm = `
AnsibleTower:
  base_url: https://section/
  results_limit: 50
  instances:
    - testing:
        base_url: https://testing/
        token: t-token
        default: True
    - production:
        username: prod
        password: p-pass
`

const mapForm = `
AnsibleTower:
  base_url: https://section/
  results_limit: 50
  instances:
    testing:
      base_url: https://testing/
      token: t-token
      default: True
    production:
      username: prod
      password: p-pass
`

func TestInstanceFormsAgree(t *testing.T) {
	envs := [][]string{
		nil,
		{"BROKER_AnsibleTower__instances__production__username=envuser"},
		{"BROKER_AnsibleTower__token=env-token", "BROKER_ansibletower__RESULTS_LIMIT=7"},
	}
	for _, env := range envs {
		l := mustLoad(t, listForm, env...)
		m := mustLoad(t, mapForm, env...)
		for _, name := range []string{"", "testing", "production", "Production"} {
			li, err := l.Instance("AnsibleTower", name)
			noErr(t, err)
			mi, err := m.Instance("AnsibleTower", name)
			noErr(t, err)
			eq(t, li, mi, "env %v instance %q", env, name)
		}
		_, lerr := l.Instance("AnsibleTower", "staging")
		_, merr := m.Instance("AnsibleTower", "staging")
		isErr(t, lerr)
		isErr(t, merr)
		contains(t, lerr.Error(), `no instance "staging" (instances: testing, production)`)
		contains(t, merr.Error(), `no instance "staging" (instances: testing, production)`)
	}
	s := mustLoad(t, listForm)
	prod, err := s.Instance("AnsibleTower", "production")
	noErr(t, err)
	eq(t, map[string]any{"base_url": "https://section/", "results_limit": 50, "username": "prod", "password": "p-pass"}, prod.Values)
}

func TestInstanceValidation(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		env     []string
		wantErr string // "" when Load must succeed
		def     string // the default instance when Load succeeds
		selErr  string // Instance(sec, "") fails with this instead
		warn    string // Load warns with this
	}{
		{name: "single instance without flag", yaml: "Container:\n  instances:\n    - only: {runtime: docker}\n", def: "only"},
		{name: "single instance flag false", yaml: "Container:\n  instances: {only: {default: false}}\n", def: "only"},
		// A default: that is no boolean fails Load in a section in use.
		{name: "single instance flag not bool", yaml: "Container:\n  instances: {only: {default: maybe}}\n",
			wantErr: `:2: Container.instances.only.default: "maybe" is not a boolean`},
		{name: "default as string", yaml: "Container:\n  instances: {a: {default: 'True'}, b: {}}\n", def: "a"},
		{name: "default yes", yaml: "Container:\n  instances: {a: {}, b: {default: yes}}\n", def: "b"},
		{name: "empty instance", yaml: "Container:\n  instances:\n    - a:\n    - b: {default: true}\n", def: "b"},
		{name: "empty instances", yaml: "Container:\n  instances: []\n", def: ""},
		// The Python broker takes the first instance marked default.
		{name: "two defaults", yaml: "AnsibleTower:\n  instances:\n    - testing: {default: True}\n    - production: {default: true}\n",
			def:  "testing",
			warn: "broker_settings.yaml:2: AnsibleTower.instances: 2 instances marked default: true (testing, production); using the first, testing"},
		{name: "two defaults, map form in file order", yaml: "AnsibleTower:\n  instances:\n    zeta: {default: true}\n    alpha: {default: true}\n",
			def: "zeta", warn: "(zeta, alpha); using the first, zeta"},
		// The Python broker uses the section's keys with no instance's; we
		// say so when a request needs the default, not at Load.
		{name: "no default",
			yaml:   "AnsibleTower:\n  instances:\n    testing: {}\n    production: {}\n",
			selErr: `broker_settings.yaml:2: AnsibleTower.instances: no instance marked default: true (testing, production); name one in the request (Request.Instance, or the argument "AnsibleTower") or mark one default: true`,
			warn:   "AnsibleTower.instances: no instance marked default: true (testing, production); requests for AnsibleTower must name an instance"},
		{name: "default by env makes two", yaml: listForm,
			env: []string{"BROKER_AnsibleTower__instances__production__default=true"},
			def: "testing", warn: "AnsibleTower.instances: 2 instances marked default: true (testing, production)"},
		{name: "default by env moves", yaml: listForm,
			env: []string{"BROKER_AnsibleTower__instances__production__default=true", "BROKER_AnsibleTower__instances__testing__default=false"},
			def: "production"},
		{name: "default not bool", yaml: "Container:\n  instances: {a: {default: maybe}, b: {}}\n",
			wantErr: `:2: Container.instances.a.default: "maybe" is not a boolean`},
		{name: "override_envars not bool", yaml: "Container:\n  instances: {a: {override_envars: sometimes}}\n",
			wantErr: `:2: Container.instances.a.override_envars: "sometimes" is not a boolean`},
		{name: "instances a string", yaml: "Container:\n  instances: docker\n",
			wantErr: `:2: Container.instances: expected a list of ` + "`- name: {settings}`" + ` entries or a map of ` + "`name: {settings}`" + `, got a string "docker"`},
		{name: "list entry with two keys", yaml: "Container:\n  instances:\n    - a: {}\n      b: {}\n",
			wantErr: "Container.instances[0]: each list entry must be one `name: {settings}` pair, got a map of 2 keys"},
		{name: "list entry a string", yaml: "Container:\n  instances:\n    - a\n", wantErr: "Container.instances[0]: each list entry must be one `name: {settings}` pair, got a string"},
		{name: "instance a number", yaml: "Container:\n  instances:\n    docker: 5\n", wantErr: "Container.instances.docker: expected a map of instance settings, got a number 5"},
		{name: "duplicate instance", yaml: "Container:\n  instances:\n    - a: {default: true}\n    - A: {}\n", wantErr: `instance "A" is defined twice`},
		{name: "known provider not a map", yaml: "Container: docker\n", wantErr: `:1: Container: expected a map of provider settings, got a string "docker"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := load(t, tt.yaml, tt.env...)
			if tt.wantErr != "" {
				isErr(t, err)
				contains(t, err.Error(), tt.wantErr)
				return
			}
			noErr(t, err)
			if tt.warn == "" {
				empty(t, s.Warnings())
			} else {
				mustLen(t, s.Warnings(), 1)
				contains(t, s.Warnings()[0], tt.warn)
			}
			sec := s.Sections()[0]
			inst, err := s.Instance(sec, "")
			if tt.selErr != "" {
				isErr(t, err)
				contains(t, err.Error(), tt.selErr)
				var se *settings.Error
				isTrue(t, errors.As(err, &se), "%T", err)
				return
			}
			noErr(t, err)
			eq(t, tt.def, inst.Name)
		})
	}
}

// The Python broker checks a provider's settings only when it uses the
// provider: sections of providers this program doesn't implement never
// stop Load, however their instances are written.
func TestUnusedProviderSections(t *testing.T) {
	const file = `
Foreman:
  instances:
    - foreman1: {foreman_url: https://f1/}
    - foreman2: {foreman_url: https://f2/}
Beaker:
  instances:
    a: {default: true}
    b: {default: true}
OpenStack:
  instances: cloud1
TestProvider:
  instances:
    - x: {}
      y: {}
    - x: {default: maybe}
Container:
  instances:
    docker: {default: true}
`
	s, err := load(t, file)
	noErr(t, err)
	empty(t, s.Warnings(), "unused sections get no warnings either")
	eq(t, []string{"Beaker", "Container", "Foreman", "OpenStack", "TestProvider"}, s.Sections())
	eq(t, "cloud1", s.Data["OpenStack"].(map[string]any)["instances"], "kept as written")
	inst, err := s.Instance("Container", "")
	noErr(t, err)
	eq(t, "docker", inst.Name)

	// Asked for anyway, they resolve like any section.
	f2, err := s.Instance("Foreman", "foreman2")
	noErr(t, err)
	eq(t, map[string]any{"foreman_url": "https://f2/"}, f2.Values)
	_, err = s.Instance("Foreman", "")
	isErr(t, err)
	contains(t, err.Error(), ":3: Foreman.instances: no instance marked default: true (foreman1, foreman2)")
	b, err := s.Instance("Beaker", "")
	noErr(t, err)
	eq(t, "a", b.Name)
	_, err = s.Instance("OpenStack", "")
	isErr(t, err)
	contains(t, err.Error(), `:11: OpenStack.instances: expected a list`)

	// Options.Providers says which sections are in use.
	dir := writeSettings(t, file)
	_, err = settings.Load(settings.Options{Dir: dir, Environ: []string{}, Providers: []string{"Container", "openstack"}})
	isErr(t, err)
	contains(t, err.Error(), ":11: OpenStack.instances: expected a list")
	s, err = settings.Load(settings.Options{Dir: dir, Environ: []string{}, Providers: []string{"Foreman", "Beaker"}})
	noErr(t, err)
	mustLen(t, s.Warnings(), 2)
	contains(t, s.Warnings()[0], "Foreman.instances: no instance marked default: true (foreman1, foreman2); requests for Foreman must name an instance")
	contains(t, s.Warnings()[1], "Beaker.instances: 2 instances marked default: true (a, b); using the first, a")
	s, err = settings.Load(settings.Options{Dir: dir, Environ: []string{}, Providers: []string{}})
	noErr(t, err)
	empty(t, s.Warnings())
}

// BuiltinProviders must name what the providers register.
func TestBuiltinProvidersAreTheRegistered(t *testing.T) {
	eq(t, providers.Names(), settings.BuiltinProviders)
}

func TestInstanceIsACopy(t *testing.T) {
	s := mustLoad(t, "Container:\n  ports: {ssh: 22}\n  tags: [a, b]\n  instances: {docker: {labels: {x: y}}}\n")
	first, err := s.Instance("Container", "")
	noErr(t, err)
	first.Values["ports"].(map[string]any)["ssh"] = 99
	first.Values["tags"].([]any)[0] = "changed"
	first.Values["labels"].(map[string]any)["x"] = "changed"
	first.Values["new"] = true
	again, err := s.Instance("Container", "")
	noErr(t, err)
	eq(t, map[string]any{"ports": map[string]any{"ssh": 22}, "tags": []any{"a", "b"}, "labels": map[string]any{"x": "y"}}, again.Values)

	s = mustLoad(t, "nicks:\n  n: {args: {a: [1]}}\n")
	nick, err := s.Nick("n")
	noErr(t, err)
	nick["args"].(map[string]any)["a"].([]any)[0] = 2
	nick2, err := s.Nick("N")
	noErr(t, err)
	eq(t, map[string]any{"args": map[string]any{"a": []any{1}}}, nick2)
}

func TestEnvOverrides(t *testing.T) {
	const file = `
ssh:
  Host_Username: fileuser
AnsibleTower:
  base_url: https://section/
  instances:
    - testing:
        token: file-testing-token
        default: true
    - production:
        Token: file-prod-token
    - staging:
        username: stage
Container:
  instances:
    docker: {runtime: docker, default: true}
    remote: {}
`
	tests := []struct {
		name  string
		env   []string
		check func(t *testing.T, s *settings.Settings)
	}{
		{"case-insensitive key keeps file spelling", []string{"BROKER_SSH__HOST_USERNAME=envuser"}, func(t *testing.T, s *settings.Settings) {
			eq(t, "envuser", s.SSH.Username)
			eq(t, map[string]any{"Host_Username": "envuser"}, s.Data["ssh"])
		}},
		{"new section keeps spelling, new key lower-cased", []string{"BROKER_MyCloud__Region=eu"}, func(t *testing.T, s *settings.Settings) {
			eq(t, map[string]any{"region": "eu"}, s.Data["MyCloud"])
			contains(t, s.Sections(), "MyCloud")
			inst, err := s.Instance("mycloud", "")
			noErr(t, err)
			eq(t, settings.Instance{Provider: "MyCloud", Values: map[string]any{"region": "eu"}}, inst)
		}},
		{"nested keys are created", []string{"BROKER_Local__limits__hosts=4"}, func(t *testing.T, s *settings.Settings) {
			eq(t, map[string]any{"limits": map[string]any{"hosts": 4}}, s.Data["Local"])
		}},
		{"value types", []string{
			"BROKER_V__bool=true", "BROKER_V__int=5", "BROKER_V__quoted=\"5\"", "BROKER_V__list=[\"a\", \"b\"]",
			"BROKER_V__map={a = 1}", "BROKER_V__float=1.5", "BROKER_V__octal=0123", "BROKER_V__hash=abc #1",
			"BROKER_V__colon=a: b", "BROKER_V__url=https://x:8443/p", "BROKER_V__empty=",
			"BROKER_V__dash=- a", "BROKER_V__spaces=a  b ",
			// dynaconf reads these differently from YAML (this loader's
			// reading before): they stay text, or 1.50 is a float.
			"BROKER_V__none=None", "BROKER_V__yamllist=[a, b]", "BROKER_V__yamlmap={a: 1}", "BROKER_V__upper=TRUE",
			"BROKER_V__float2=1.50",
		}, func(t *testing.T, s *settings.Settings) {
			eq(t, map[string]any{
				"bool": true, "int": 5, "quoted": "5", "list": []any{"a", "b"}, "map": map[string]any{"a": 1},
				"float": 1.5, "octal": "0123", "hash": "abc #1", "colon": "a: b", "url": "https://x:8443/p",
				"empty": "", "dash": "- a", "spaces": "a  b ",
				"none": "None", "yamllist": "[a, b]", "yamlmap": "{a: 1}", "upper": "TRUE", "float2": 1.5,
			}, s.Data["V"])
		}},
		{"section key also overrides instances' own key", []string{"BROKER_AnsibleTower__token=env-token"}, func(t *testing.T, s *settings.Settings) {
			for _, name := range []string{"testing", "production", "staging"} {
				inst, err := s.Instance("AnsibleTower", name)
				noErr(t, err)
				eq(t, "env-token", instToken(inst), name)
			}
			prod, _ := s.Instance("AnsibleTower", "production")
			notContains(t, prod.Values, "token", "the instance's spelling is kept")
		}},
		{"section key applies to instances without it", []string{"BROKER_AnsibleTower__base_url=https://env/"}, func(t *testing.T, s *settings.Settings) {
			inst, err := s.Instance("AnsibleTower", "staging")
			noErr(t, err)
			eq(t, "https://env/", inst.Values["base_url"])
		}},
		{"one instance, list form", []string{"BROKER_AnsibleTower__instances__production__token=only-prod"}, func(t *testing.T, s *settings.Settings) {
			prod, _ := s.Instance("AnsibleTower", "production")
			eq(t, "only-prod", instToken(prod))
			test, _ := s.Instance("AnsibleTower", "")
			eq(t, "file-testing-token", instToken(test))
		}},
		{"one instance, map form", []string{"BROKER_Container__INSTANCES__Remote__runtime=podman"}, func(t *testing.T, s *settings.Settings) {
			r, err := s.Instance("Container", "remote")
			noErr(t, err)
			eq(t, map[string]any{"runtime": "podman"}, r.Values)
		}},
		{"specific wins over broad whatever the order", []string{
			"BROKER_AnsibleTower__instances__testing__token=specific", "BROKER_AnsibleTower__token=broad",
		}, func(t *testing.T, s *settings.Settings) {
			test, _ := s.Instance("AnsibleTower", "testing")
			eq(t, "specific", instToken(test))
			prod, _ := s.Instance("AnsibleTower", "production")
			eq(t, "broad", instToken(prod))
		}},
		{"new instance in list form", []string{"BROKER_AnsibleTower__instances__extra__token=x"}, func(t *testing.T, s *settings.Settings) {
			inst, err := s.Instance("AnsibleTower", "extra")
			noErr(t, err)
			eq(t, "x", instToken(inst))
		}},
		{"section default is not spread to instances", []string{"BROKER_Container__default=false"}, func(t *testing.T, s *settings.Settings) {
			r, err := s.Instance("Container", "")
			noErr(t, err)
			eq(t, r.Name, "docker")
		}},
		{"later duplicate wins", []string{"BROKER_Local__a=1", "BROKER_Local__a=2"}, func(t *testing.T, s *settings.Settings) {
			eq(t, map[string]any{"a": 2}, s.Data["Local"])
		}},
		{"not overrides", []string{"BROKER_DIRECTORY=/x", "BROKER_TEST_REQUIRE=sshd", "BROKER_debug=true", "OTHER__x=1", "broker_local__x=1"}, func(t *testing.T, s *settings.Settings) {
			eq(t, []string{"AnsibleTower", "Container"}, s.Sections())
			notContains(t, s.Data, "debug")
			empty(t, s.Warnings())
		}},
		{"malformed names warn", []string{"BROKER_Local____x=1", "BROKER_Local__=1"}, func(t *testing.T, s *settings.Settings) {
			notContains(t, s.Data, "Local")
			mustLen(t, s.Warnings(), 2)
			contains(t, s.Warnings()[0], "BROKER_Local____x")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, mustLoad(t, file, tt.env...))
		})
	}
}

func instToken(inst settings.Instance) any {
	for k, v := range inst.Values {
		if strings.EqualFold(k, "token") {
			return v
		}
	}
	return nil
}

func TestEnvironDefaultsToProcess(t *testing.T) {
	dir := writeSettings(t, "Local: {a: 1}\n")
	t.Setenv("BROKER_Local__a", "2")
	s, err := settings.Load(settings.Options{Dir: dir})
	noErr(t, err)
	eq(t, map[string]any{"a": 2}, s.Data["Local"])
}

// The secret below must never appear in an error's text.
const secret = "S3cr3t-Value"

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		want []string
	}{
		{name: "syntax", yaml: "a: 1\nb: [1,\nc: 2\n", want: []string{"broker_settings.yaml:"}},
		{name: "bad indentation", yaml: "ssh:\n  host_username: a\n bad: 1\n", want: []string{"broker_settings.yaml:2: did not find expected key"}},
		{name: "top level list", yaml: "- a\n- b\n", want: []string{"broker_settings.yaml:1: the top level must be a map of settings, got a list"}},
		{name: "duplicate key", yaml: "Local: {}\nnicks: {}\nLocal: {}\n", want: []string{"broker_settings.yaml:3: Local: duplicate key (first at line 1)"}},
		{name: "nicks not a map", yaml: "nicks: [a]\n", want: []string{":1: nicks: expected a map of nicks, got a list"}},
		{name: "nick not a map", yaml: "nicks:\n  a: {x: 1}\n  rhel7: deploy\n", want: []string{`:3: nicks.rhel7: a nick must be a map of arguments, got a string "deploy"`}},
		{name: "inventory_file", yaml: "inventory_file: [a]\n", want: []string{"inventory_file: expected a file name, got a list"}},
		{name: "tagged secret", yaml: "AnsibleTower:\n  token: !!int " + secret + "\n", want: []string{":2: AnsibleTower.token: value <redacted> cannot be read as !!int"}},
		{name: "env into a secret", yaml: "ssh:\n  host_password: " + secret + "\n", env: []string{"BROKER_ssh__host_password__x=1"},
			want: []string{"ssh.host_password (from env BROKER_ssh__host_password__x): is a string <redacted>, not a map, so it has no key \"x\""}},
		{name: "env into a secret instance key", yaml: listForm, env: []string{"BROKER_AnsibleTower__instances__testing__token__x=1"},
			want: []string{"AnsibleTower.instances.testing.token (from env BROKER_AnsibleTower__instances__testing__token__x): is a string <redacted>"}},
		{name: "secret port", yaml: "ssh: {host_ssh_port: 1}\n", env: []string{"BROKER_ssh__host_ssh_port=" + secret},
			want: []string{`"` + secret + `" is not a port number`}}, // a port is no secret
		{name: "env into a list", yaml: "Local: {tags: [a, b]}\n", env: []string{"BROKER_Local__tags__x=1"},
			want: []string{`Local.tags (from env BROKER_Local__tags__x): is a list of 2 items; "x" is neither an entry name nor an index`}},
		{name: "alias bomb", yaml: aliasBomb, want: []string{"aliases expanding too much"}},
		{name: "recursive alias", yaml: "a: &a [x, *a]\n", want: []string{":1: a[1][1]: alias *a is used inside its own anchor"}},
		{name: "recursive merge", yaml: "a: &a {<<: *a}\n", want: []string{":1: a: alias *a is used inside its own anchor"}},
		{name: "too deep", yaml: strings.Repeat("[", 100) + strings.Repeat("]", 100), want: []string{"nested deeper than 64 levels"}},
		{name: "bad merge", yaml: "a: {<<: [1]}\n", want: []string{":1: a: a merge key (<<) needs a map or a list of maps, got a number"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.yaml, tt.env...)
			isErr(t, err)
			for _, w := range tt.want {
				contains(t, err.Error(), w)
			}
			var se *settings.Error
			mustTrue(t, errors.As(err, &se), "%T", err)
			isTrue(t, filepath.IsAbs(se.File) && strings.HasSuffix(se.File, settings.FileName), se.File)
			if tt.name != "secret port" {
				notContains(t, err.Error(), secret)
			}
		})
	}
}

func TestUnknownInstanceAndNick(t *testing.T) {
	s := mustLoad(t, "Local: {}\nnicks:\n  rhel7: {workflow: w}\n  debian: {}\n")
	_, err := s.Nick("fedora")
	isErr(t, err)
	contains(t, err.Error(), `broker_settings.yaml:2: nicks: unknown nick "fedora" (known: debian, rhel7)`)
	empty, err := s.Nick("debian")
	noErr(t, err)
	eq(t, map[string]any{}, empty)
	_, err = s.Instance("Local", "x")
	isErr(t, err)
	contains(t, err.Error(), `Local: no instance "x": the section has no instances`)
}

func TestReadError(t *testing.T) {
	dir := t.TempDir()
	noErr(t, os.Mkdir(filepath.Join(dir, settings.FileName), 0o700))
	_, err := settings.Load(settings.Options{Dir: dir, Environ: []string{}})
	isErr(t, err)
	contains(t, err.Error(), filepath.Join(dir, settings.FileName)+": cannot read")
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		mode os.FileMode
		want string
	}{
		{"private file", "ssh: {host_password: x}\n", 0o600, ""},
		{"readable with secrets", "AnsibleTower:\n  instances: [{t: {token: x}}]\nssh: {host_password: x}\n", 0o644, "mode 0644"},
		{"readable without secrets", "ssh: {host_password: null}\nLocal: {}\n", 0o644, ""},
		{"group readable", "host_password: x\n", 0o640, "(host_password)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, settings.FileName)
			noErr(t, os.WriteFile(file, []byte(tt.yaml), tt.mode))
			noErr(t, os.Chmod(file, tt.mode))
			s, err := settings.Load(settings.Options{Dir: dir, Environ: []string{}})
			noErr(t, err)
			if tt.want == "" {
				empty(t, s.Warnings())
				return
			}
			mustLen(t, s.Warnings(), 1)
			contains(t, s.Warnings()[0], file)
			contains(t, s.Warnings()[0], tt.want)
			notContains(t, s.Warnings()[0], ": x")
		})
	}
}

func TestYAMLFeatures(t *testing.T) {
	s := mustLoad(t, `
base: &base
  runtime: podman
  results_limit: 10
Container:
  <<: *base
  results_limit: 50
  instances:
    - a:
        <<: *base
        default: true
unknown_scalar: 1
"quoted": 'None'
`)
	inst, err := s.Instance("Container", "")
	noErr(t, err)
	eq(t, map[string]any{"runtime": "podman", "results_limit": 10}, inst.Values)
	eq(t, 1, s.Data["unknown_scalar"])
	eq(t, "None", s.Data["quoted"], "only a plain None is null")
	eq(t, []string{"Container", "base"}, s.Sections())
}

// aliasBomb would expand to 10^9 values.
const aliasBomb = `
a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]
`

func TestConcurrentReads(t *testing.T) {
	s := mustLoad(t, listForm+"nicks:\n  n: {a: [1]}\n")
	done := make(chan error)
	for range 8 {
		go func() {
			for range 50 {
				inst, err := s.Instance("AnsibleTower", "")
				if err != nil {
					done <- err
					return
				}
				inst.Values["token"] = "changed"
				if _, err := s.Nick("n"); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		noErr(t, <-done)
	}
	inst, err := s.Instance("AnsibleTower", "")
	noErr(t, err)
	eq(t, inst.Values["token"], "t-token")
}
