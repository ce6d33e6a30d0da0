package safefile_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hostbroker/broker/internal/safefile"
)

func TestOpenFileRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "x.flock")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	_, err := safefile.OpenFile(link, os.O_RDWR|os.O_CREATE, 0o600)
	if !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("OpenFile through a symlink: err = %v, want ErrUnsafe", err)
	}
	if err := safefile.WriteFile(link, []byte("boom"), 0o600); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("WriteFile through a symlink: err = %v, want ErrUnsafe", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Fatalf("target changed: %q", b)
	}
}

func TestOpenFileRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	_, err := safefile.OpenFile(dir, os.O_RDONLY, 0)
	if !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("OpenFile of a directory: err = %v, want ErrUnsafe", err)
	}
}

func TestOpenFileRegular(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	f, err := safefile.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := safefile.Create(p, 0o600); err == nil {
		t.Fatal("Create over an existing file succeeded")
	}
}

func TestCreateTempAndReadFile(t *testing.T) {
	dir := t.TempDir()
	f, err := safefile.CreateTemp(dir, "x.tmp-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("data"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if b, err := safefile.ReadFile(f.Name()); err != nil || string(b) != "data" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(f.Name(), link); err != nil {
		t.Fatal(err)
	}
	if _, err := safefile.ReadFile(link); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("ReadFile through a symlink: err = %v, want ErrUnsafe", err)
	}
}
