package container

import (
	"errors"
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
