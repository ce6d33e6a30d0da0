package inventory_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/internal/safefile"
	"github.com/hostbroker/broker/inventory"
)

// Every file the store opens for writing beside the inventory (its lock,
// the Python broker's lock, the queue and its tickets, the previous
// version) is opened without following a symbolic link: a link planted
// at its path is refused with an error naming it, and its target is
// neither written, truncated nor removed. Issue 30: a link at
// inventory.yaml.flock made a Put write 16 bytes at offset 0 of the
// link's target.
func TestPlantedLinksAreNotFollowed(t *testing.T) {
	const targetText = "root:x:0:0:root:/root:/bin/bash\n"
	cases := []struct {
		name string
		// plant puts a link (or other file) at one of the store's paths,
		// pointing at target.
		plant func(t *testing.T, dir, target string) (planted string)
		// refused: the Put fails naming planted; else it succeeds (a
		// renamed file replaces the link itself).
		refused bool
	}{
		{name: "flock is a link", refused: true, plant: func(t *testing.T, dir, target string) string {
			p := filepath.Join(dir, "inventory.yaml.flock")
			require.NoError(t, os.Symlink(target, p))
			return p
		}},
		{name: "flock is a named pipe", refused: true, plant: func(t *testing.T, dir, _ string) string {
			p := filepath.Join(dir, "inventory.yaml.flock")
			require.NoError(t, syscall.Mkfifo(p, 0o600))
			return p
		}},
		{name: "Python lock is a link", refused: true, plant: func(t *testing.T, dir, target string) string {
			p := filepath.Join(dir, "inventory.yaml.lock")
			require.NoError(t, os.Symlink(target, p))
			return p
		}},
		{name: "Python lock is a directory", refused: true, plant: func(t *testing.T, dir, _ string) string {
			p := filepath.Join(dir, "inventory.yaml.lock")
			require.NoError(t, os.Mkdir(p, 0o700))
			return p
		}},
		{name: "queue is a link to a directory", refused: true, plant: func(t *testing.T, dir, target string) string {
			other := filepath.Join(filepath.Dir(target), "elsewhere")
			require.NoError(t, os.Mkdir(other, 0o700))
			p := filepath.Join(dir, ".inventory.yaml.queue")
			require.NoError(t, os.Symlink(other, p))
			return p
		}},
		{name: "a ticket in the queue is a link", refused: true, plant: func(t *testing.T, dir, target string) string {
			q := filepath.Join(dir, ".inventory.yaml.queue")
			require.NoError(t, os.Mkdir(q, 0o700))
			p := filepath.Join(q, "00000000000000000001-1-abcd")
			require.NoError(t, os.Symlink(target, p))
			return p
		}},
		{name: "previous version is a link", refused: false, plant: func(t *testing.T, dir, target string) string {
			p := filepath.Join(dir, ".inventory.yaml.prev")
			require.NoError(t, os.Symlink(target, p))
			return p
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			// The target lives outside the broker directory, as
			// /etc/passwd would.
			target := filepath.Join(t.TempDir(), "passwd")
			require.NoError(t, os.WriteFile(target, []byte(targetText), 0o600))
			planted := c.plant(t, dir, target)
			store := inventory.Open(filepath.Join(dir, "inventory.yaml"))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := store.Put(ctx, records(1)...)
			if c.refused {
				require.Error(t, err)
				assert.ErrorIs(t, err, safefile.ErrUnsafe)
				assert.Contains(t, err.Error(), planted, "the error names the file refused")
				assert.NoError(t, ctx.Err(), "refused at once, not after a wait")
			} else {
				require.NoError(t, err)
				fi, lerr := os.Lstat(planted)
				require.NoError(t, lerr)
				assert.True(t, fi.Mode().IsRegular(), "%s: the link is replaced by a file of the store's own", planted)
			}
			got, rerr := os.ReadFile(target)
			require.NoError(t, rerr, "the link's target is still there")
			assert.Equal(t, targetText, string(got), "the link's target is unchanged")
		})
	}
}

// A Store whose Python lock is a link reports it on Load too (it looks
// at the lock when the file is empty), without reading the target.
func TestLoadRefusesLinkedPythonLock(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	require.NoError(t, os.Symlink(fifo, filepath.Join(dir, "inventory.yaml.lock")))
	store := inventory.Open(filepath.Join(dir, "inventory.yaml"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recs, err := store.Load(ctx)
	// An empty inventory either way; what matters is that the pipe
	// behind the link is not opened (which would block).
	if err != nil {
		assert.False(t, errors.Is(err, context.DeadlineExceeded), "Load waited: %v", err)
	}
	assert.Empty(t, recs)
	assert.NoError(t, ctx.Err())
}
