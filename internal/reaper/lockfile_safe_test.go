package reaper

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hostbroker/broker/internal/safefile"
	"github.com/hostbroker/broker/inventory"
)

// plantLink makes path a symbolic link to a new file holding "keep me",
// and returns a check that the file is unchanged.
func plantLink(t *testing.T, path string) (check func()) {
	t.Helper()
	target := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(target, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		b, err := os.ReadFile(target)
		fi, _ := os.Stat(target)
		if err != nil || string(b) != "keep me" || fi.Mode().Perm() != 0o644 {
			t.Fatalf("the link's target changed: %q, %v, %v", b, fi.Mode(), err)
		}
	}
}

func TestOwnerLockRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	path := ownerLockPath(dir, inventory.CurrentOwner(""))
	unchanged := plantLink(t, path)

	err := createOwnerFile(path)
	if !errors.Is(err, safefile.ErrUnsafe) || !strings.Contains(err.Error(), path) {
		t.Fatalf("createOwnerFile through a link: %v, want ErrUnsafe naming %s", err, path)
	}
	for _, create := range []bool{false, true} {
		l := &ownerLock{path: path}
		held, err := l.try(create)
		if held || !errors.Is(err, safefile.ErrUnsafe) {
			t.Fatalf("try(create=%v) through a link: held %v, err %v; want ErrUnsafe", create, held, err)
		}
	}
	unchanged()
}

func TestOwnersDirRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	elsewhere := t.TempDir()
	if err := os.Symlink(elsewhere, filepath.Join(dir, ownersDir)); err != nil {
		t.Fatal(err)
	}
	path := ownerLockPath(dir, inventory.CurrentOwner(""))
	if err := createOwnerFile(path); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("createOwnerFile in a linked %s: %v, want ErrUnsafe", ownersDir, err)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Fatalf("wrote %v through the link", entries)
	}
}
