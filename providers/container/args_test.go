package container

import (
	"reflect"
	"strings"
	"testing"
)

func TestParsePorts(t *testing.T) {
	tests := []struct {
		in      any
		want    []PortSpec
		wantErr string
	}{
		{in: nil, want: nil},
		{in: "22", want: []PortSpec{{"22/tcp", 0}}},
		{in: "22:1337", want: []PortSpec{{"22/tcp", 1337}}},
		{in: "22/tcp", want: []PortSpec{{"22/tcp", 0}}},
		{in: "53/UDP:5353", want: []PortSpec{{"53/udp", 5353}}},
		{in: "22 8080:1337 53/udp", want: []PortSpec{{"22/tcp", 0}, {"8080/tcp", 1337}, {"53/udp", 0}}},
		{in: "22,23", want: []PortSpec{{"22/tcp", 0}, {"23/tcp", 0}}},
		{in: "22:1337 23:1335", want: []PortSpec{{"22/tcp", 1337}, {"23/tcp", 1335}}},
		{in: 8080, want: []PortSpec{{"8080/tcp", 0}}},
		{in: []any{"22", "80:8080"}, want: []PortSpec{{"22/tcp", 0}, {"80/tcp", 8080}}},
		{in: map[string]any{"22/tcp": 1337, "80": nil, "53/udp": "5353"}, want: []PortSpec{{"22/tcp", 1337}, {"53/udp", 5353}, {"80/tcp", 0}}},
		{in: "abc", wantErr: `"abc"`},
		{in: "22:x", wantErr: `host port "x"`},
		{in: "22/icmp", wantErr: "icmp"},
		{in: "0", wantErr: "not a port"},
		{in: "70000", wantErr: "not a port"},
		{in: "22:70000", wantErr: "70000"},
		{in: map[string]any{"22": true}, wantErr: "bool"},
		{in: 1.5, wantErr: "1.5"},
		{in: true, wantErr: "bool"},
	}
	for _, tt := range tests {
		got, err := ParsePorts(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParsePorts(%#v) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParsePorts(%#v) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseEnvCommandVolumes(t *testing.T) {
	env, err := parseEnv("A=1, B=x=y")
	if err != nil || !reflect.DeepEqual(env, []string{"A=1", "B=x=y"}) {
		t.Errorf("parseEnv string: %v, %v", env, err)
	}
	env, err = parseEnv(map[string]any{"B": 2, "A": "a"})
	if err != nil || !reflect.DeepEqual(env, []string{"A=a", "B=2"}) {
		t.Errorf("parseEnv map: %v, %v", env, err)
	}
	if _, err := parseEnv([]any{"NOEQUALS"}); err == nil {
		t.Error("parseEnv accepted an item without =")
	}
	cmd, err := parseCommand("echo hi")
	if err != nil || !reflect.DeepEqual(cmd, []string{"/bin/sh", "-c", "echo hi"}) {
		t.Errorf("parseCommand string: %v, %v", cmd, err)
	}
	cmd, err = parseCommand([]any{"sleep", 10})
	if err != nil || !reflect.DeepEqual(cmd, []string{"sleep", "10"}) {
		t.Errorf("parseCommand list: %v, %v", cmd, err)
	}
	vols, err := parseVolumes(map[string]any{"/a": "/b", "/c": map[string]any{"bind": "/d", "mode": "ro"}})
	if err != nil || !reflect.DeepEqual(vols, []string{"/a:/b", "/c:/d:ro"}) {
		t.Errorf("parseVolumes map: %v, %v", vols, err)
	}
	if _, err := parseVolumes([]any{"/nocolon"}); err == nil {
		t.Error("parseVolumes accepted a bind without a destination")
	}
	if _, err := parseEnv(map[string]any{"A=B": "x"}); err == nil || !strings.Contains(err.Error(), `"A=B"`) {
		t.Errorf("parseEnv with a name holding '=': %v; want an error naming it", err)
	}
}

// Docker's -p form with an address is refused, naming the order wanted.
func TestParsePortsDockerForm(t *testing.T) {
	_, err := ParsePorts("127.0.0.1:8080:80")
	if err == nil || !strings.Contains(err.Error(), "container[/proto][:host]") || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("ParsePorts(ip:host:container): %v", err)
	}
}

// Go values given in code, not only YAML's forms, are accepted.
func TestArgsGoTypes(t *testing.T) {
	ports, err := ParsePorts(map[string]int{"8080": 18080})
	if err != nil || !reflect.DeepEqual(ports, []PortSpec{{Container: "8080/tcp", HostPort: 18080}}) {
		t.Errorf("ParsePorts(map[string]int): %v, %v", ports, err)
	}
	ports, err = ParsePorts([]int{22, 8080})
	if err != nil || len(ports) != 2 {
		t.Errorf("ParsePorts([]int): %v, %v", ports, err)
	}
	env, err := parseEnv(map[string]int{"N": 1})
	if err != nil || !reflect.DeepEqual(env, []string{"N=1"}) {
		t.Errorf("parseEnv(map[string]int): %v, %v", env, err)
	}
	env, err = parseEnv(map[string]string{"A": "a"})
	if err != nil || !reflect.DeepEqual(env, []string{"A=a"}) {
		t.Errorf("parseEnv(map[string]string): %v, %v", env, err)
	}
	vols, err := parseVolumes(map[string]string{"/a": "/b"})
	if err != nil || !reflect.DeepEqual(vols, []string{"/a:/b"}) {
		t.Errorf("parseVolumes(map[string]string): %v, %v", vols, err)
	}
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{"alice": "alice", "DOMAIN\\bob": "DOMAIN_bob", "-x y": "x_y", "": "broker", "@@": "broker"} {
		if got := sanitizeName(in); got != want {
			t.Errorf("sanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
}

// A misspelt or unsupported argument is an error naming the ones taken;
// other tools' marks (a leading "_") pass.
func TestCheckArgNames(t *testing.T) {
	if err := checkArgNames(map[string]any{"container_host": "x", "ports": "22", "_broker_origin": "t"}); err != nil {
		t.Errorf("known arguments: %v", err)
	}
	for _, bad := range []string{"prots", "enviroment", "image", "privileged"} {
		err := checkArgNames(map[string]any{"container_host": "x", bad: 1})
		if err == nil || !strings.Contains(err.Error(), `"`+bad+`"`) || !strings.Contains(err.Error(), "ports") {
			t.Errorf("argument %s: %v; want an error naming it and the arguments taken", bad, err)
		}
	}
	labels, err := parseLabels(map[string]any{"labels": map[string]string{"team": "qa"}, "provider_labels": map[string]any{"n": 2}})
	if err != nil || !reflect.DeepEqual(labels, map[string]string{"team": "qa", "n": "2"}) {
		t.Errorf("parseLabels: %v, %v", labels, err)
	}
	if _, err := parseLabels(map[string]any{"labels": "team=qa"}); err == nil {
		t.Error("parseLabels accepted a string")
	}
}
