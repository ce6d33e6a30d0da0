package broker

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzArgsFile feeds arbitrary bytes as an args file (JSON or YAML) and as
// a file named by an argument (the seed's --extra): no panic, every error
// names the file, and whatever loads is plain JSON-like data.
func FuzzArgsFile(f *testing.F) {
	f.Add([]byte(`{"workflow": "deploy-rhel", "count": 2, "extra": {"a": [1, 2]}}`), true)
	f.Add([]byte("container_host: brokertest/debian-sshd:12\nports: \"22 8080:1337\"\nenv: {A: 1}\n"), false)
	f.Add([]byte("? [complex, key]\n: v\n1: one\ntrue: yes\n"), false)
	f.Add([]byte("- not\n- a map\n"), false)
	f.Add([]byte("a: &x {b: *x}\n"), false)
	f.Add([]byte("{\"a\": "), true)
	f.Add([]byte(""), false)
	f.Add([]byte("a: .nan\nb: !!binary aGVsbG8=\nc: 2001-12-14t21:59:43.10-05:00\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, asJSON bool) {
		dir := t.TempDir()
		name := filepath.Join(dir, "args.yaml")
		if asJSON {
			name = filepath.Join(dir, "args.json")
		}
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
		args, err := loadArgsFile(name)
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("error does not name the file: %v", err)
			}
		} else {
			checkPlain(t, args)
		}
		// The same bytes as a file-valued argument.
		extra := map[string]any{"extra": name, "other": "not-a-file.yaml"}
		if err := resolveFileArgs(extra); err != nil {
			if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), `"extra"`) {
				t.Fatalf("error does not name the argument and file: %v", err)
			}
			return
		}
		if extra["other"] != "not-a-file.yaml" {
			t.Fatalf("a string naming no file was replaced: %v", extra["other"])
		}
		checkPlain(t, extra)
	})
}

// checkPlain fails unless v is JSON-like data (maps with string keys),
// what providers and the inventory expect.
func checkPlain(t *testing.T, v any) {
	t.Helper()
	if _, err := json.Marshal(v); err != nil {
		var unsupported *json.UnsupportedValueError
		if errors.As(err, &unsupported) {
			return // NaN and infinities: valid YAML, not JSON
		}
		t.Fatalf("loaded arguments are not plain data: %v (%#v)", err, v)
	}
}
