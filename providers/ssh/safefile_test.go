package ssh

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hostbroker/broker/internal/safefile"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// The lease files under the broker directory's ssh/ are not written
// through a symbolic link: one at ssh/ fails Open, one at a lock file or
// the lease's temporary name fails the checkout; their targets are left
// as they were.
func TestLeaseFilesRefuseSymlinks(t *testing.T) {
	target := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(target, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	unchanged := func() {
		t.Helper()
		if b, _ := os.ReadFile(target); string(b) != "keep me" {
			t.Fatalf("the link's target changed: %q", b)
		}
	}
	cfg := func(dir string) providers.Config {
		return providers.Config{Provider: Name, Settings: map[string]any{"hosts": []any{"127.0.0.1:22201"}},
			Dir: dir, SSH: providers.SSHSettings{KeyFilename: "unused"}}
	}

	dir := t.TempDir()
	if err := os.Symlink(filepath.Dir(target), filepath.Join(dir, "ssh")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(cfg(dir)); !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("Open with ssh/ a link: %v, want ErrUnsafe", err)
	}

	// The lease's temporary file is written once the host's lease is
	// taken: a real host.
	lab, servers := lab(t, 1)
	for _, ext := range []string{".lock", ".lease.tmp"} {
		c := lab
		c.Dir = t.TempDir()
		p, err := Open(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		if err := os.Symlink(target, p.path(servers[0].Addr, ext)); err != nil {
			t.Fatal(err)
		}
		if _, err := checkout(p, inventory.NewID(), nil); !errors.Is(err, safefile.ErrUnsafe) {
			t.Fatalf("checkout with %s a link: %v, want ErrUnsafe", ext, err)
		}
		unchanged()
		if a, err := p.remoteOp(t.Context(), servers[0].Addr, "show", "", "", ""); err != nil || a.Cur != nil {
			t.Fatalf("the host's lease after the failed checkout: %+v, %v; want none", a.Cur, err)
		}
	}
}
