package settings_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hostbroker/broker/internal/settings"
)

// FuzzLoad feeds arbitrary settings bytes and one environment variable to
// Load: it must not panic, errors must say something and not show a
// secret, and whatever loads must resolve every nick and, for every
// section, give a default instance or a settings error saying why not (no
// default marked, or a section of a provider not in use that Load left
// unchecked).
func FuzzLoad(f *testing.F) {
	for _, name := range []string{"python_broker_settings.yaml", "broker_settings.yaml"} {
		data, err := os.ReadFile(testdata(name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "BROKER_AnsibleTower__token", "tok")
	}
	f.Add([]byte(listForm), "BROKER_AnsibleTower__instances__production__default", "true")
	f.Add([]byte(mapForm), "BROKER_AnsibleTower__instances__testing__token__x", "1")
	f.Add([]byte("ssh: {host_ssh_port: 22}\n"), "BROKER_ssh__host_ssh_port", "[1, 2]")
	f.Add([]byte("a: &a [1]\nb: [*a, *a]\nc: {<<: {x: 1}}\n"), "BROKER_c__x", "{y: 2}")
	f.Add([]byte("nicks:\n  n: [1]\n"), "BROKER_nicks__n__a", "None")
	f.Add([]byte(":\n- {"), "BROKER_DIRECTORY", "/tmp")
	f.Add([]byte("Foreman:\n  instances: [{a: {}}, {b: {}}]\nBeaker:\n  instances: x\n"), "BROKER_Beaker__instances__a__default", "@bool yes")
	f.Add([]byte(overrideEnvars), "BROKER_AnsibleTower__base_url", "@json {\"a\": [1, 2.5]}")
	f.Add([]byte("Local: {}\n"), "BROKER_Local__x", "{ a = 1, b.c = [0x1F, \"\"\"x\"\"\"] } # c")
	f.Add([]byte("Local: {}\n"), "BROKER_Local__token", "@int 0123456789")
	f.Fuzz(func(t *testing.T, data []byte, name, value string) {
		// A value for a secret key never shows in an error or a warning.
		leaks := func(msg string) bool {
			return len(value) >= 8 && strings.HasPrefix(name, "BROKER_") && secretName(name) &&
				!strings.Contains(name, value) && !strings.Contains(string(data), value) &&
				strings.Contains(msg, value)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, settings.FileName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := settings.Load(settings.Options{Dir: dir, Environ: []string{name + "=" + value}})
		if err != nil {
			msg := err.Error()
			if strings.TrimSpace(msg) == "" {
				t.Fatalf("empty error text for %T", err)
			}
			if leaks(strings.ReplaceAll(msg, dir, "")) {
				t.Fatalf("error shows the secret value %q: %s", value, msg)
			}
			return
		}
		for _, w := range s.Warnings() {
			if leaks(strings.ReplaceAll(w, dir, "")) {
				t.Fatalf("warning shows the secret value %q: %s", value, w)
			}
		}
		for _, sec := range s.Sections() {
			if _, err := s.Instance(sec, ""); err != nil {
				var se *settings.Error
				if !errors.As(err, &se) || strings.TrimSpace(err.Error()) == "" {
					t.Fatalf("section %q: default instance: %T %v", sec, err, err)
				}
				if leaks(strings.ReplaceAll(err.Error(), dir, "")) {
					t.Fatalf("error shows the secret value %q: %s", value, err)
				}
			}
		}
		if nicks, ok := s.Data["nicks"].(map[string]any); ok {
			for n := range nicks {
				if _, err := s.Nick(n); err != nil {
					t.Fatalf("nick %q loaded but does not resolve: %v", n, err)
				}
			}
		}
		_ = s.Warnings()
	})
}

// secretName reports whether an override variable names a secret key.
func secretName(env string) bool {
	parts := strings.Split(strings.ToLower(env), "__")
	last := parts[len(parts)-1]
	return last == "password" || last == "token" || last == "secret" ||
		strings.HasSuffix(last, "_password") || strings.HasSuffix(last, "_token")
}
