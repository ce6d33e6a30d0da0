package settings_test

import (
	"strings"
	"testing"

	"github.com/hostbroker/broker/internal/settings"
)

// Unknown keys of the sections whose keys are known (Options.Keys, ssh:,
// the top level) get a warning naming the file and line, or the variable,
// and the closest known key; other sections stay silent.
func TestUnknownKeysWarn(t *testing.T) {
	dir := writeSettings(t, `Container:
  host_url: unix:///x
  Runtime: docker
  instances:
    a: {Host_Uri: x, default: true, override_envars: false, zzz: 1}
ssh:
  host_usrname: root
  connect_timeout: 5
Contianer: {}
Beaker: {whatever: 1}
nick: {}
invetory_file: x.yaml
`)
	s, err := settings.Load(settings.Options{
		Dir:       dir,
		Environ:   []string{"BROKER_Container__instances__a__netwrok=host"},
		Providers: []string{"Container", "Local"},
		Keys:      map[string][]string{"container": {"host_uri", "runtime", "network"}},
	})
	noErr(t, err)
	got := strings.Join(s.Warnings(), "\n")
	for _, want := range []string{
		"broker_settings.yaml:2: Container.host_url: unknown key, ignored (did you mean host_uri?)",
		"broker_settings.yaml:5: Container.instances.a.zzz: unknown key, ignored (keys it takes: default, host_uri, network, override_envars, runtime)",
		"Container.instances.a.netwrok (from env BROKER_Container__instances__a__netwrok): unknown key, ignored (did you mean network?)",
		"broker_settings.yaml:7: ssh.host_usrname: unknown key, ignored (did you mean host_username?)",
		"broker_settings.yaml:9: Contianer: unknown top-level key (did you mean Container?)",
		"broker_settings.yaml:11: nick: unknown top-level key (did you mean nicks?)",
		"broker_settings.yaml:12: invetory_file: unknown top-level key (did you mean inventory_file?)",
	} {
		contains(t, got, want)
	}
	mustLen(t, s.Warnings(), 7, got)
	notContains(t, got, "Runtime", "keys match ignoring case")
	notContains(t, got, "Beaker")

	// Without Keys, a provider's section is not checked.
	s, err = settings.Load(settings.Options{Dir: dir, Environ: []string{}, Providers: []string{"Container"}})
	noErr(t, err)
	notContains(t, strings.Join(s.Warnings(), "\n"), "host_url")
}

// A default: that is not a boolean, in a section of a provider in use,
// fails Load.
func TestDefaultNotBooleanFailsLoad(t *testing.T) {
	_, err := load(t, "Container:\n  instances:\n    a: {default: yes please}\n")
	isErr(t, err)
	contains(t, err.Error(), `broker_settings.yaml:3: Container.instances.a.default: "yes please" is not a boolean`)
	_, err = load(t, "Foreman:\n  instances:\n    a: {default: yes please}\n    b: {}\n")
	noErr(t, err, "sections of other providers are not checked")
}

func TestInstances(t *testing.T) {
	s := mustLoad(t, "Container:\n  runtime: docker\n  instances:\n    - b: {runtime: podman}\n    - a: {default: true}\nssh: {host_username: x}\n")
	insts, err := s.Instances("Container")
	noErr(t, err)
	mustLen(t, insts, 2)
	eq(t, "b", insts[0].Name, "file order")
	eq(t, "podman", insts[0].Values["runtime"])
	eq(t, "docker", insts[1].Values["runtime"])
	insts, err = s.Instances("SSH")
	noErr(t, err)
	empty(t, insts, "the global ssh: section is no SSH provider section")
	insts, err = s.Instances("Local")
	noErr(t, err)
	empty(t, insts)
	s = mustLoad(t, "Local: {shell: /bin/sh}\n")
	insts, err = s.Instances("local")
	noErr(t, err)
	mustLen(t, insts, 1)
	eq(t, settings.Instance{Provider: "Local", Values: map[string]any{"shell": "/bin/sh"}}, insts[0])
}

// "expected X, got Y" names a collection's kind once ("got a list", never
// "got a list a list"), and null as null.
func TestGotNamesTheKindOnce(t *testing.T) {
	for yaml, want := range map[string]string{
		"ssh: [a, b]\n":                                   "ssh: expected a map of SSH settings, got a list",
		"ssh: {known_hosts: {a: 1}}\n":                    "ssh.known_hosts: expected a list of file paths, got a map",
		"ssh: {known_hosts: [[a]]}\n":                     "ssh.known_hosts[0]: expected a file path, got a list",
		"nicks: [a]\n":                                    "nicks: expected a map of nicks, got a list",
		"nicks: {a: [x]}\n":                               "nicks.a: a nick must be a map of arguments, got a list",
		"Container: [a]\n":                                "Container: expected a map of provider settings, got a list",
		"Container: {instances: {a: [1]}}\n":              "Container.instances.a: expected a map of instance settings, got a list",
		"Container: {instances: 5}\n":                     "got a number 5",
		"inventory_file: [a]\n":                           "inventory_file: expected a file name, got a list",
		"inventory_file: {a: 1}\n":                        "inventory_file: expected a file name, got a map",
		"Container: {instances: {a: {b: 1}}}\nnicks: 7\n": "nicks: expected a map of nicks, got a number 7",
	} {
		_, err := load(t, yaml)
		isErr(t, err, yaml)
		contains(t, err.Error(), want, yaml)
		for _, twice := range []string{"a list a list", "a map a map", "null null"} {
			notContains(t, err.Error(), twice, yaml)
		}
	}
}
