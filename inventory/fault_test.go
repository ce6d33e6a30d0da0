package inventory_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/internal/leakcheck"
	"github.com/hostbroker/broker/inventory"
)

// smallDisk mounts a 64 KiB tmpfs for the test, or skips: it needs root
// and a kernel that lets the test mount.
func smallDisk(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

func records(n int) []*inventory.Record {
	var out []*inventory.Record
	for i := range n {
		out = append(out, &inventory.Record{Hostname: fmt.Sprintf("h%d.example.test", i), Name: fmt.Sprintf("h%d", i), Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateReady}})
	}
	return out
}

func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	require.NoError(t, err)
	return m
}

// A full disk: the write fails naming the file, the inventory on disk is
// byte for byte what it was, no temp file is left, and writes work again
// once there is room.
func TestDiskFull(t *testing.T) {
	leakcheck.Check(t)
	dir := smallDisk(t)
	path := filepath.Join(dir, "inventory.yaml")
	store := inventory.Open(path)
	require.NoError(t, store.Put(context.Background(), records(20)...))
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	// Fill the disk: a big record no longer fits.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	require.NoError(t, err)
	_, _ = f.Write(make([]byte, 64<<10)) // ENOSPC once full
	f.Close()
	big := records(1)[0]
	big.Extra = map[string]any{"notes": strings.Repeat("x", 16<<10)}
	err = store.Put(context.Background(), big)
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.ENOSPC)
	assert.Contains(t, err.Error(), path, "the error names the inventory")
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(before, after), "the old inventory is intact")
	assert.Empty(t, tempFiles(t, dir), "no temp file left on the full disk")
	recs, err := store.Load(context.Background())
	require.NoError(t, err)
	assert.Len(t, recs, 20)

	require.NoError(t, os.Remove(filler))
	require.NoError(t, store.Put(context.Background(), big), "writes work again once there is room")
	recs, err = store.Load(context.Background())
	require.NoError(t, err)
	assert.Len(t, recs, 21)
}

// A read-only inventory directory: reads work, writes fail naming the
// file, nothing changes.
func TestReadOnlyDirectory(t *testing.T) {
	leakcheck.Check(t)
	dir := smallDisk(t)
	path := filepath.Join(dir, "inventory.yaml")
	store := inventory.Open(path)
	require.NoError(t, store.Put(context.Background(), records(3)...))
	before, err := os.ReadFile(path)
	require.NoError(t, err)
	out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Cleanup(func() { _ = exec.Command("mount", "-o", "remount,rw", dir).Run() })

	recs, err := store.Load(context.Background())
	require.NoError(t, err, "a read-only inventory can still be read")
	assert.Len(t, recs, 3)
	err = store.Put(context.Background(), records(1)...)
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.EROFS)
	assert.Contains(t, err.Error(), path)
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(before, after))
	err = store.Remove(context.Background(), recs[0])
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
}
