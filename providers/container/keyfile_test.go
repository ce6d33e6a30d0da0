package container

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hostbroker/broker/internal/safefile"
)

// A container host's client key is not written through a symbolic link
// planted in the broker directory: at container/, or at the key's name.
func TestClientKeyRefusesSymlinks(t *testing.T) {
	dir := t.TempDir()
	p := &Provider{}
	p.settings.dir = dir
	elsewhere := t.TempDir()
	target := filepath.Join(elsewhere, "target")
	if err := os.WriteFile(target, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := os.Symlink(elsewhere, filepath.Join(dir, "container")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.newClientKey("h1"); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("newClientKey with container/ a link: %v, want ErrUnsafe", err)
	}
	if err := os.Remove(filepath.Join(dir, "container")); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"client_key", "client_key.pub"} {
		kd := p.keyDir("h-" + name)
		if err := os.MkdirAll(kd, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(kd, name)); err != nil {
			t.Fatal(err)
		}
		_, _, err := p.newClientKey("h-" + name)
		if !errors.Is(err, safefile.ErrUnsafe) {
			t.Fatalf("newClientKey with %s a link: %v, want ErrUnsafe", name, err)
		}
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 1 {
		t.Fatalf("files made through the links: %v", entries)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Fatalf("the link's target changed: %q", b)
	}

	if _, _, err := p.newClientKey("h2"); err != nil {
		t.Fatalf("newClientKey: %v", err)
	}
}

// Removing a host's key dir (check-in, a failed checkout) follows no link
// planted at container/: what the link points to keeps its files.
func TestKeyDirRemovalRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	p := &Provider{}
	p.settings.dir = dir
	elsewhere := t.TempDir()
	victim := filepath.Join(elsewhere, "h1")
	if err := os.MkdirAll(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(victim, "precious"), []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, "container")); err != nil {
		t.Fatal(err)
	}
	if err := p.removeKeyDir("h1"); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("removeKeyDir with container/ a link: %v, want ErrUnsafe", err)
	}
	if b, err := os.ReadFile(filepath.Join(victim, "precious")); err != nil || string(b) != "keep me" {
		t.Fatalf("the link's target lost its files: %q, %v", b, err)
	}

	// Without the link, the key dir goes; a missing one is no error.
	if err := os.Remove(filepath.Join(dir, "container")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.newClientKey("h2"); err != nil {
		t.Fatal(err)
	}
	if err := p.removeKeyDir("h2"); err != nil {
		t.Fatalf("removeKeyDir: %v", err)
	}
	if _, err := os.Stat(p.keyDir("h2")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("key dir still there: %v", err)
	}
	if err := p.removeKeyDir("never-made"); err != nil {
		t.Fatalf("removeKeyDir of a missing dir: %v", err)
	}
}
