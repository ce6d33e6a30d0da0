package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/internal/safefile"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// A symbolic link planted at the broker directory's local/ (or at a host's
// own directory) is not followed: the checkout fails naming it, and nothing
// is written where it points.
func TestCheckoutRefusesSymlinks(t *testing.T) {
	dir := t.TempDir()
	elsewhere := t.TempDir()
	p, err := Open(providers.Config{Provider: Name, Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })

	require.NoError(t, os.Symlink(elsewhere, filepath.Join(dir, "local")))
	_, err = p.Checkout(context.Background(), providers.CheckoutRequest{ID: inventory.NewID()})
	require.ErrorIs(t, err, safefile.ErrUnsafe)
	require.ErrorContains(t, err, filepath.Join(dir, "local")+": is a symbolic link")
	entries, _ := os.ReadDir(elsewhere)
	require.Empty(t, entries, "nothing made through the link")

	// A host's directory is made anew: a link at its name is not used.
	require.NoError(t, os.Remove(filepath.Join(dir, "local")))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "local"), 0o700))
	id := inventory.NewID()
	require.NoError(t, os.Symlink(elsewhere, filepath.Join(dir, "local", id)))
	_, err = p.Checkout(context.Background(), providers.CheckoutRequest{ID: id})
	require.Error(t, err)
	require.True(t, errors.Is(err, os.ErrExist) || strings.Contains(err.Error(), id), "error %v", err)
	entries, _ = os.ReadDir(elsewhere)
	require.Empty(t, entries, "nothing made through the link")
}

// A check-in does not remove through a symbolic link put at local/ after
// the checkout: it fails naming it, and what the link points to stays.
func TestCheckinRefusesLinkedBase(t *testing.T) {
	dir := t.TempDir()
	p, err := Open(providers.Config{Provider: Name, Dir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	id := inventory.NewID()
	res, err := p.Checkout(context.Background(), providers.CheckoutRequest{ID: id})
	require.NoError(t, err)

	elsewhere := t.TempDir()
	keep := filepath.Join(elsewhere, id, "keep")
	require.NoError(t, os.MkdirAll(filepath.Dir(keep), 0o700))
	require.NoError(t, os.WriteFile(keep, []byte("keep me"), 0o600))
	moved := filepath.Join(dir, "local.moved")
	require.NoError(t, os.Rename(filepath.Join(dir, "local"), moved))
	require.NoError(t, os.Symlink(elsewhere, filepath.Join(dir, "local")))

	err = p.Checkin(context.Background(), res.Record(id))
	require.ErrorIs(t, err, safefile.ErrUnsafe)
	require.FileExists(t, keep, "removed through the link")

	require.NoError(t, os.Remove(filepath.Join(dir, "local")))
	require.NoError(t, os.Rename(moved, filepath.Join(dir, "local")))
	require.NoError(t, p.Checkin(context.Background(), res.Record(id)))
}
