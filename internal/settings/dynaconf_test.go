package settings_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hostbroker/broker/internal/settings"
)

// The Python broker's behaviour these tests pin comes from
// broker/providers/__init__.py (Provider._validate_settings),
// broker/settings.py, broker/hosts.py, and dynaconf's
// utils/parse_conf.py (parse_conf_data) and loaders/env_loader.py.

const overrideEnvars = `
AnsibleTower:
  base_url: https://section/
  username: section-user
  instances:
    testing:
      base_url: https://testing/
      default: true
    production:
      base_url: https://production/
      override_envars: true
`

// An instance with override_envars: true keeps its own keys over
// BROKER_<Provider>__<key>; the others get the environment's value.
func TestOverrideEnvars(t *testing.T) {
	env := []string{"BROKER_AnsibleTower__base_url=https://env/", "BROKER_AnsibleTower__username=env-user"}
	s := mustLoad(t, overrideEnvars, env...)

	def, err := s.Instance("AnsibleTower", "")
	noErr(t, err)
	eq(t, "testing", def.Name)
	eq(t, map[string]any{"base_url": "https://env/", "username": "env-user"}, def.Values)

	prod, err := s.Instance("AnsibleTower", "production")
	noErr(t, err)
	eq(t, map[string]any{"base_url": "https://production/", "username": "env-user"}, prod.Values,
		"its own base_url wins; a key it doesn't set comes from the environment; the flag is not passed on")

	// A variable naming the instance still wins: it sets the instance's key.
	s = mustLoad(t, overrideEnvars, append(env, "BROKER_AnsibleTower__instances__production__base_url=https://env-prod/")...)
	prod, err = s.Instance("AnsibleTower", "production")
	noErr(t, err)
	eq(t, "https://env-prod/", prod.Values["base_url"])

	// The flag may come from the environment, whatever the variables' order.
	for _, flag := range []string{"BROKER_AnsibleTower__instances__testing__override_envars=true", "BROKER_AnsibleTower__INSTANCES__Testing__OVERRIDE_ENVARS=True"} {
		s = mustLoad(t, overrideEnvars, append([]string{flag}, env...)...)
		def, err = s.Instance("AnsibleTower", "testing")
		noErr(t, err)
		eq(t, "https://testing/", def.Values["base_url"], flag)
	}
	// ...and be turned off there.
	s = mustLoad(t, overrideEnvars, append(env, "BROKER_AnsibleTower__instances__production__override_envars=false")...)
	prod, err = s.Instance("AnsibleTower", "production")
	noErr(t, err)
	eq(t, "https://env/", prod.Values["base_url"])

	// A section-level override_envars is no setting for the instances.
	s = mustLoad(t, overrideEnvars, append(env, "BROKER_AnsibleTower__override_envars=false")...)
	prod, err = s.Instance("AnsibleTower", "production")
	noErr(t, err)
	eq(t, "https://production/", prod.Values["base_url"])

	// The list form behaves the same.
	s = mustLoad(t, "AnsibleTower:\n  instances:\n    - a: {token: file-a, default: true}\n    - b: {token: file-b, override_envars: yes}\n",
		"BROKER_AnsibleTower__token=env")
	a, _ := s.Instance("AnsibleTower", "a")
	b, _ := s.Instance("AnsibleTower", "b")
	eq(t, "env", a.Values["token"])
	eq(t, "file-b", b.Values["token"])
}

func TestHostConnectionTimeout(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		want time.Duration
		err  string
	}{
		{name: "python name under ssh", yaml: "ssh: {host_connection_timeout: 60}", want: 60 * time.Second},
		{name: "python name at top level", yaml: "host_connection_timeout: 30", want: 30 * time.Second},
		{name: "under ssh wins over top level", yaml: "host_connection_timeout: 30\nssh: {host_connection_timeout: 45}", want: 45 * time.Second},
		{name: "ours wins", yaml: "ssh: {connect_timeout: 5, host_connection_timeout: 60}", want: 5 * time.Second},
		{name: "ours under ssh wins over python's at top level", yaml: "host_connection_timeout: 60\nssh: {ssh_timeout: 7}", want: 7 * time.Second},
		{name: "null is unset", yaml: "ssh: {host_connection_timeout: null}", want: settings.DefaultConnectTimeout},
		{name: "env", yaml: "ssh: {}", env: []string{"BROKER_SSH__HOST_CONNECTION_TIMEOUT=20"}, want: 20 * time.Second},
		{name: "top-level connect_timeout is not read", yaml: "connect_timeout: 99", want: settings.DefaultConnectTimeout},
		{name: "bad", yaml: "ssh:\n  host_connection_timeout: soon\n", err: `:2: ssh.host_connection_timeout: "soon" is not a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := load(t, tt.yaml, tt.env...)
			if tt.err != "" {
				isErr(t, err)
				contains(t, err.Error(), tt.err)
				return
			}
			noErr(t, err)
			eq(t, tt.want, s.SSH.ConnectTimeout)
		})
	}
}

// Environment values are read as dynaconf's env loader reads them.
func TestEnvValuesLikeDynaconf(t *testing.T) {
	tests := []struct {
		value string
		want  any
	}{
		// dynaconf's @ converters
		{"@int 5", 5},
		{"@int  -0_12 ", -12},
		{"@float 1.5", 1.5},
		{"@float 2", 2.0},
		{"@float -inf", math.Inf(-1)},
		{"@bool True", true},
		{"@bool yes", true},
		{"@bool enabled", true},
		{"@bool no", false},
		{"@bool whatever", false},
		{"@str 5", "5"},
		{"@str  padded", " padded"},
		{"@str true", "true"},
		{`@json {"a": [1, 2.5, "x", null, true], "b": {"c": 3}}`, map[string]any{"a": []any{1, 2.5, "x", nil, true}, "b": map[string]any{"c": 3}}},
		{`@json ["jpg", "png"]`, []any{"jpg", "png"}},
		{`@json {"debug": True, "x": None}`, map[string]any{"debug": true, "x": nil}},
		{"@none", nil},
		{"@none anything", nil},
		{"@null x", nil},
		{"@upper abc", "ABC"},
		{"@lower ABC", "abc"},
		{"@strip  a b  ", "a b"},
		{"@split a b  c", []any{"a", "b", "c"}},
		{"@unknown 5", "@unknown 5"},
		// TOML values (dynaconf's parse_with_toml)
		{"5", 5},
		{"-5", -5},
		{"+172800", 172800},
		{"1_000", 1000},
		{"0x1F", 31},
		{"0o17", 15},
		{"0b101", 5},
		{"0", 0},
		{"1.50", 1.5},
		{"1e3", 1000.0},
		{"-2.5E-1", -0.25},
		{"inf", math.Inf(1)},
		{"true", true},
		{"false", false},
		{"True", true},
		{" False ", false},
		{`"quoted # text"`, "quoted # text"},
		{`"esc\t\u00e9\"x"`, "esc\t\u00e9\"x"},
		{`'C:\path'`, `C:\path`},
		{`"""multi"""`, "multi"},
		{"'''it's'''", "it's"},
		{"[1, 2]", []any{1, 2}},
		{`[ "a", 'b', [1.5, true], ]`, []any{"a", "b", []any{1.5, true}}},
		{"[]", []any{}},
		{"{a=1}", map[string]any{"a": 1}},
		{`{ a = 1, b.c = "x", "d e" = [2] }`, map[string]any{"a": 1, "b": map[string]any{"c": "x"}, "d e": []any{2}}},
		{"{}", map[string]any{}},
		{"5 # five", 5},
		{"5   ", 5},
		// not TOML: the text as written
		{"None", "None"},
		{"null", "null"},
		{"~", "~"},
		{"TRUE", "TRUE"},
		{"yes", "yes"},
		{"0123", "0123"},
		{"1__0", "1__0"},
		{"1.", "1."},
		{".5", ".5"},
		{"0x", "0x"},
		{"99999999999999999999", "99999999999999999999"},
		{"[a, b]", "[a, b]"},
		{"{a: 1}", "{a: 1}"},
		{"{a = 1, a = 2}", "{a = 1, a = 2}"},
		{"{a = 1,}", "{a = 1,}"},
		{"[1 2]", "[1 2]"},
		{`"open`, `"open`},
		{`"a" b`, `"a" b`},
		{"2024-01-02", "2024-01-02"},
		{"07:32:00", "07:32:00"},
		{"5\nx = 1", "5\nx = 1"},
		{"\n5", "\n5"},
		{"  ", "  "},
		{"abc def", "abc def"},
		{"!!str 5", "!!str 5"},
		{"@int\t5", "@int\t5"},
		{"https://x.example.com/api", "https://x.example.com/api"},
		{"\"\x01\"", "\"\x01\""},
		{"\xff", "\xff"},
	}
	for _, tt := range tests {
		s, err := load(t, "", "BROKER_V__x="+tt.value)
		if err != nil {
			t.Errorf("%q: %v", tt.value, err)
			continue
		}
		got := s.Data["V"].(map[string]any)["x"]
		if f, ok := tt.want.(float64); ok && math.IsNaN(f) {
			g, _ := got.(float64)
			isTrue(t, math.IsNaN(g), "%q: got %#v", tt.value, got)
			continue
		}
		eq(t, tt.want, got, "value %q", tt.value)
	}
	s := mustLoad(t, "", "BROKER_V__x=nan", "BROKER_V__y=@float NaN")
	for _, k := range []string{"x", "y"} {
		f, ok := s.Data["V"].(map[string]any)[k].(float64)
		isTrue(t, ok && math.IsNaN(f), k)
	}
}

// A password or token stays text unless a converter says otherwise: the
// TOML reading would make "0x1F" the number 31, "1e3" 1000.0.
func TestEnvSecretsStayText(t *testing.T) {
	s := mustLoad(t, "", "BROKER_AnsibleTower__token=0x1F", "BROKER_ssh__host_password=1e3",
		"BROKER_AnsibleTower__instances__a__password=true", "BROKER_AnsibleTower__api_token=@int 5",
		"BROKER_AnsibleTower__instances__a__other=0x1F")
	at := s.Data["AnsibleTower"].(map[string]any)
	eq(t, "0x1F", at["token"])
	eq(t, 5, at["api_token"])
	eq(t, "1e3", s.SSH.Password)
	inst, err := s.Instance("AnsibleTower", "a")
	noErr(t, err)
	eq(t, "true", inst.Values["password"])
	eq(t, 31, inst.Values["other"])
}

func TestEnvValueErrors(t *testing.T) {
	tests := []struct {
		env  string
		want string
	}{
		{"BROKER_Local__n=@int abc", `Local.n (from env BROKER_Local__n): "@int abc" cannot be read: @int needs a whole number`},
		{"BROKER_Local__n=@int", `"@int" cannot be read: @int needs a whole number`},
		{"BROKER_Local__n=@int 1.5", `@int needs a whole number`},
		{"BROKER_Local__n=@int 0x10", `@int needs a whole number`},
		{"BROKER_Local__n=@int 99999999999999999999", `@int: the number is out of range`},
		{"BROKER_Local__f=@float one", `Local.f (from env BROKER_Local__f): "@float one" cannot be read: @float needs a number`},
		{"BROKER_Local__j=@json {a: 1}", `Local.j (from env BROKER_Local__j): "@json {a: 1}" cannot be read: @json: not valid JSON (at byte 2)`},
		{"BROKER_Local__j=@json [1] [2]", `@json: text after the JSON value`},
		{"BROKER_Local__j=@json [1,", `@json: the JSON value is cut short`},
		{"BROKER_Local__j=@json ", `@json: no JSON value`},
		{"BROKER_Local__j=@json " + strings.Repeat("[", 100) + strings.Repeat("]", 100), `nested deeper than 64 levels`},
		{"BROKER_AnsibleTower__token=@int " + secret, `AnsibleTower.token (from env BROKER_AnsibleTower__token): <redacted> cannot be read: @int needs a whole number`},
		{"BROKER_AnsibleTower__instances__x__password=@json {" + secret, `AnsibleTower.instances.x.password (from env BROKER_AnsibleTower__instances__x__password): <redacted> cannot be read: @json: not valid JSON (at byte 2)`},
	}
	for _, tt := range tests {
		_, err := load(t, "Local: {}\n", tt.env)
		isErr(t, err, tt.env)
		contains(t, err.Error(), tt.want)
		contains(t, err.Error(), settings.FileName)
		notContains(t, err.Error(), secret)
		var se *settings.Error
		isTrue(t, errors.As(err, &se), "%T", err)
	}
}

func TestEnvUnsupportedConverterWarns(t *testing.T) {
	s := mustLoad(t, "", "BROKER_Local__a=@format {this.X}", "BROKER_Local__b=@int @jinja {{ 1 }}", "BROKER_Local__token=@get "+secret)
	l := s.Data["Local"].(map[string]any)
	eq(t, "@format {this.X}", l["a"])
	eq(t, "@int @jinja {{ 1 }}", l["b"])
	mustLen(t, s.Warnings(), 3)
	contains(t, s.Warnings()[0], "environment variable BROKER_Local__a: dynaconf's @format is not supported here, so the value is kept as text")
	contains(t, s.Warnings()[1], "BROKER_Local__b: dynaconf's @jinja is not supported")
	for _, w := range s.Warnings() {
		notContains(t, w, secret)
	}
}

// A plain None in the file is null here, unlike PyYAML (dynaconf), which
// reads the text "None"; the Python broker's example files wrote it to
// mean "unset". In the environment None is text, as in dynaconf; @none
// is null.
func TestNoneInFileAndEnv(t *testing.T) {
	s := mustLoad(t, "Container:\n  host_port: None\n  network: 'None'\n", "BROKER_Container__a=None", "BROKER_Container__b=@none")
	c := s.Data["Container"].(map[string]any)
	isNil(t, c["host_port"])
	eq(t, "None", c["network"])
	eq(t, "None", c["a"])
	contains(t, c, "b")
	isNil(t, c["b"])
}
