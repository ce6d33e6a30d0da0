package container

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/hostbroker/broker/providers"
)

// A bad setting is a providers.SettingError naming the key as written, so
// the broker can say where it was set.
func TestBadSettingsAreSettingErrors(t *testing.T) {
	for _, tc := range []struct {
		settings map[string]any
		key      string
	}{
		{map[string]any{"Timeout": "soon"}, "Timeout"},
		{map[string]any{"auto_map_ports": "perhaps"}, "auto_map_ports"},
		{map[string]any{"runtime": "rkt"}, "runtime"},
		{map[string]any{"host_password": []any{"a"}}, "host_password"},
	} {
		_, err := parseSettings(providers.Config{Settings: tc.settings})
		se, ok := errors.AsType[*providers.SettingError](err)
		if !ok {
			t.Errorf("%v: got %v, want a SettingError", tc.settings, err)
			continue
		}
		if se.Key != tc.key {
			t.Errorf("%v: key %q, want %q", tc.settings, se.Key, tc.key)
		}
	}
}

// Every key parseSettings reads is in settingKeys, so that broker.New does
// not warn of a key the provider takes (the list and the reads are apart).
func TestSettingKeysListsWhatIsRead(t *testing.T) {
	src, err := os.ReadFile("container.go")
	if err != nil {
		t.Fatal(err)
	}
	reads := regexp.MustCompile(`(?:stringSetting|boolSetting|secondsSetting|optionalBool|providers\.Setting)\(m,(?: [a-z0-9*.]+,)?((?: "[a-z_]+",?)+)\)`)
	var read []string
	for _, m := range reads.FindAllStringSubmatch(string(src), -1) {
		for _, k := range regexp.MustCompile(`"([a-z_]+)"`).FindAllStringSubmatch(m[1], -1) {
			read = append(read, k[1])
		}
	}
	if len(read) < 10 {
		t.Fatalf("found only %v in container.go: the pattern is out of date", read)
	}
	for _, k := range read {
		if !slices.Contains(settingKeys, k) {
			t.Errorf("parseSettings reads %q, which settingKeys does not list", k)
		}
	}
}
