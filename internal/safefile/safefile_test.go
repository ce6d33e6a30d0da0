package safefile_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

func TestRefusedFileIsNotTruncated(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the file to another user")
	}
	if err := os.Chown(target, 65534, 65534); err != nil {
		t.Skip("chown:", err)
	}
	if err := safefile.WriteFile(target, []byte("boom"), 0o600); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("WriteFile to another user's file: err = %v, want ErrUnsafe", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Fatalf("target changed: %q", b)
	}
}

func TestOpenFileRefusesFIFOWithoutBlocking(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Skip("no fifo:", err)
	}
	done := make(chan error, 1)
	go func() { done <- safefile.WriteFile(p, []byte("x"), 0o600) }()
	select {
	case err := <-done:
		if !errors.Is(err, safefile.ErrUnsafe) || !strings.Contains(err.Error(), p) {
			t.Fatalf("WriteFile to a fifo: err = %v, want ErrUnsafe naming it", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WriteFile to a fifo blocked")
	}
}

func TestMkdirAllRefusesLinkedDirectory(t *testing.T) {
	dir := t.TempDir()
	elsewhere := t.TempDir()
	if err := os.Symlink(elsewhere, filepath.Join(dir, "logs")); err != nil {
		t.Fatal(err)
	}
	_, err := safefile.MkdirAll(dir, "logs/sub", 0o700)
	if !errors.Is(err, safefile.ErrUnsafe) || !strings.Contains(err.Error(), filepath.Join(dir, "logs")) {
		t.Fatalf("MkdirAll through a linked directory: err = %v, want ErrUnsafe naming it", err)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Fatalf("made %v in the link's target", entries)
	}
	got, err := safefile.MkdirAll(dir, "a/b", 0o700)
	if err != nil || got != filepath.Join(dir, "a", "b") {
		t.Fatalf("MkdirAll(a/b) = %q, %v", got, err)
	}
	if _, err := safefile.MkdirAll(dir, "../x", 0o700); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("MkdirAll(../x): err = %v, want ErrUnsafe", err)
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

func TestRemoveAllRefusesLinkOnTheWay(t *testing.T) {
	dir := t.TempDir()
	elsewhere := t.TempDir()
	if err := os.MkdirAll(filepath.Join(elsewhere, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	if err := safefile.RemoveAll(dir, "sub/x"); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("RemoveAll through a linked directory: %v, want ErrUnsafe", err)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, "x")); err != nil {
		t.Fatalf("the link's target lost x: %v", err)
	}
	if err := safefile.RemoveAll(dir, "../x"); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("RemoveAll(../x): %v, want ErrUnsafe", err)
	}
	if err := safefile.RemoveAll(dir, "missing/x"); err != nil {
		t.Fatalf("RemoveAll of a missing path: %v", err)
	}
}
