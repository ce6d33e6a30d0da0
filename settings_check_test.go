package broker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// newIn makes a Broker on a new directory holding settingsYAML, with only
// env for overrides.
func newIn(t *testing.T, settingsYAML string, env ...string) (*broker.Broker, string, error) {
	t.Helper()
	dir := t.TempDir()
	if settingsYAML != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), []byte(settingsYAML), 0o600))
	}
	b, err := broker.New(broker.WithDirectory(dir), broker.WithSettingsEnv(env), broker.WithReaper(false))
	if err == nil {
		t.Cleanup(func() { b.Close() })
	}
	return b, dir, err
}

// A value of the wrong type, or an unknown runtime, in the section of a
// provider the program imports fails New (the load), naming the file, line,
// key and value, not the first checkout.
func TestSettingsValuesCheckedAtLoad(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		env  []string
		want []string
	}{
		{"wrong type", "Container:\n  timeout: abc\n", nil,
			[]string{"broker_settings.yaml:2: Container.timeout", `"abc"`}},
		{"unknown runtime in an instance", "Container:\n  instances:\n    docker: {runtime: dockr, default: true}\n", nil,
			[]string{"broker_settings.yaml:3: Container.instances.docker.runtime", `"dockr" is not docker or podman`}},
		{"unknown runtime from the environment", "", []string{"BROKER_Container__runtime=rkt"},
			[]string{"Container.runtime (from env BROKER_Container__runtime)", `"rkt"`}},
		{"AnsibleTower seconds", "AnsibleTower:\n  base_url: https://awx.example.com/\n  workflow_timeout: soon\n", nil,
			[]string{"broker_settings.yaml:3: AnsibleTower.workflow_timeout", `"soon"`}},
		{"default not a boolean", "Container:\n  instances:\n    a: {default: yes please}\n    b: {}\n", nil,
			[]string{"broker_settings.yaml:3: Container.instances.a.default", `"yes please" is not a boolean`}},
		{"Local shell", "Local:\n  shell: [/bin/sh]\n", nil,
			[]string{"broker_settings.yaml:2: Local.shell"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := newIn(t, tc.yaml, tc.env...)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// What is missing is not checked at load: a section the program never
// uses need not be complete (an AnsibleTower section without credentials).
func TestIncompleteSectionsLoad(t *testing.T) {
	_, _, err := newIn(t, "AnsibleTower:\n  base_url: https://awx.example.com/\nContainer:\n  runtime: podman\n")
	require.NoError(t, err)
}

// Misspelt keys of the sections broker implements are not silently
// dropped: a warning names the file, line and the closest known key, in
// the log and from Warnings. Sections of providers broker does not
// implement stay silent.
func TestSettingsWarnOfUnknownKeys(t *testing.T) {
	b, dir, err := newIn(t, `Contianer:
  host_uri: unix:///run/podman/podman.sock
Container:
  host_url: unix:///var/run/docker.sock
  instances:
    - podman: {runtime: podman, defualt: true}
ssh:
  host_usrname: root
nick:
  debian: {container_host: "brokertest/debian-sshd:12"}
Beaker:
  hub_url: https://beaker.example.com/
  anything: goes
Foreman: {foreman_url: https://foreman.example.com/}
`, "BROKER_Container__ssh_wiat=30")
	require.NoError(t, err)
	warnings := strings.Join(b.Warnings(), "\n")
	for _, want := range []string{
		"broker_settings.yaml:1: Contianer: unknown top-level key (did you mean Container?)",
		"broker_settings.yaml:4: Container.host_url: unknown key, ignored (did you mean host_uri?)",
		"broker_settings.yaml:6: Container.instances.podman.defualt: unknown key, ignored (did you mean default?)",
		"broker_settings.yaml:8: ssh.host_usrname: unknown key, ignored (did you mean host_username?)",
		"broker_settings.yaml:9: nick: unknown top-level key (did you mean nicks?)",
		"Container.ssh_wiat (from env BROKER_Container__ssh_wiat): unknown key, ignored (did you mean ssh_wait?)",
	} {
		assert.Contains(t, warnings, want)
	}
	assert.Len(t, b.Warnings(), 6, "nothing about Beaker or Foreman: %s", warnings)
	log, err := os.ReadFile(filepath.Join(dir, "logs", "broker.log"))
	require.NoError(t, err)
	assert.Contains(t, string(log), "did you mean host_uri?")
}

// A settings file as the Python broker's users write it (keys of its
// newer versions, sections of providers broker does not implement) loads
// without a warning.
func TestPythonBrokerSettingsLoadQuietly(t *testing.T) {
	b, _, err := newIn(t, `_version: 0.7.0
less_colors: true
logging: {console_level: info, file_level: debug}
inventory_fields: {Host: hostname | name, Provider: _broker_provider}
inventory_list_vars: hostname | name
thread_limit: null
host_username: root
host_password: secret
host_ssh_port: 22
ssh:
  backend: hussh
  host_username: root
  host_ipv6: false
  host_ipv4_fallback: true
AnsibleTower:
  base_url: https://awx.example.com/
  username: someone
  token: abc
  release_workflow: remove-vm
  workflow_timeout: 3600
  results_limit: 50
Container:
  instances:
    local:
      host_username: root
      host_port: null
      runtime: docker
      network: null
      default: true
    remote:
      host: engine.example.com
      host_password: secret
  runtime: podman
  name_prefix: me
  results_limit: 50
  auto_map_ports: false
Foreman:
  instances:
    one: {foreman_url: https://foreman.example.com/, default: true}
Beaker:
  hub_url: null
SCENARIO_IMPORT:
  git_hosts: []
nicks:
  rhel: {workflow: deploy-rhel}
`)
	require.NoError(t, err)
	assert.Empty(t, b.Warnings())
}

// Each provider of this module says which keys its settings take, and
// checks them without opening an instance.
func TestBuiltinProvidersCheckSettings(t *testing.T) {
	for _, name := range []string{"Local", "Container", "AnsibleTower"} {
		d, _, err := providers.Lookup(name)
		require.NoError(t, err)
		c, ok := d.(providers.SettingsChecker)
		require.True(t, ok, "%s implements providers.SettingsChecker", name)
		assert.NotEmpty(t, c.SettingKeys(), name)
		var se *providers.SettingError
		err = c.CheckSettings(providers.Config{Provider: name, Settings: map[string]any{c.SettingKeys()[0]: map[string]any{}}})
		if assert.Error(t, err, name) {
			assert.True(t, errors.As(err, &se), "%s: %T %v", name, err, err)
		}
	}
}

// A negative Count is an error naming Count, and checks nothing out.
func TestNegativeCountIsAnError(t *testing.T) {
	b := newBroker(t, "")
	hosts, err := b.Checkout(t.Context(), broker.Request{Count: -1})
	require.Error(t, err)
	assert.Empty(t, hosts)
	assert.Contains(t, err.Error(), "Count -1")
	recs, err := b.Inventory(t.Context())
	require.NoError(t, err)
	assert.Empty(t, recs)
}

// "sync Provider:user" replaces only that user's records: the hosts this
// user checked out, and those of other users, stay.
func TestSyncForAnotherUserReplacesOnlyTheirs(t *testing.T) {
	ctx := t.Context()
	theSpy.reset()
	b := newBroker(t, spySettings)
	mine, err := b.Checkout(ctx, broker.Request{Provider: "Spy", Instance: "beta", Count: 2})
	require.NoError(t, err)
	t.Cleanup(func() { b.Checkin(context.Background(), mine...) })
	names := func() []string {
		recs, err := b.Inventory(ctx)
		require.NoError(t, err)
		var out []string
		for _, r := range recs {
			out = append(out, r.Name)
		}
		return out
	}
	report := func(recs ...*inventory.Record) {
		theSpy.mu.Lock()
		theSpy.synced = recs
		theSpy.mu.Unlock()
	}

	report(&inventory.Record{Hostname: "o1.example.com", Name: "o1"}, &inventory.Record{Hostname: "o2.example.com", Name: "o2"})
	res, err := b.Sync(ctx, "Spy:other::beta")
	require.NoError(t, err)
	assert.Len(t, res.Added, 2)
	assert.Empty(t, res.Dropped, "my hosts are not other's")
	assert.ElementsMatch(t, []string{b.Record(mine[0]).Name, b.Record(mine[1]).Name, "o1", "o2"}, names())

	report(&inventory.Record{Hostname: "o1.example.com", Name: "o1"})
	res, err = b.Sync(ctx, "Spy:other::beta")
	require.NoError(t, err)
	assert.Empty(t, res.Added)
	require.Len(t, res.Dropped, 1)
	assert.Equal(t, "o2", res.Dropped[0].Name)
	assert.Equal(t, 1, res.Kept)
	assert.ElementsMatch(t, []string{b.Record(mine[0]).Name, b.Record(mine[1]).Name, "o1"}, names())

	// A third user's sync touches neither.
	report()
	res, err = b.Sync(ctx, "Spy:third::beta")
	require.NoError(t, err)
	assert.Empty(t, res.Dropped)
	assert.Len(t, names(), 3)
}

// An unusable broker directory is named with where it came from: the
// variable, or the option.
func TestDirectoryErrorsNameTheirSource(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	dir := filepath.Join(file, "broker") // under a file: unusable even by root

	t.Setenv("BROKER_DIRECTORY", dir)
	_, err := broker.New(broker.WithReaper(false))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "BROKER_DIRECTORY="+dir+": ")

	_, err = broker.New(broker.WithDirectory(dir), broker.WithReaper(false))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `broker.WithDirectory("`+dir+`"): `)

	// A directory whose logs cannot be written (logs/ a file: unusable
	// even by root).
	noLogs := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(noLogs, "logs"), nil, 0o600))
	t.Setenv("BROKER_DIRECTORY", noLogs)
	_, err = broker.New(broker.WithReaper(false))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "BROKER_DIRECTORY="+noLogs+": log directory: ")
	t.Log(err)

	t.Setenv("BROKER_DIRECTORY", t.TempDir())
	settingsDir := t.TempDir() // a directory where the file should be
	_, err = broker.New(broker.WithSettingsFile(settingsDir), broker.WithReaper(false))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `broker.WithSettingsFile("`+settingsDir+`")`)
}
