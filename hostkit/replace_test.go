package hostkit_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/sshtest"
)

// TestWriteKeepsBehaviour: writing through a temporary keeps what writing
// in place did: a symbolic link at the destination is written through
// (remotely and locally), the mode is perm, a directory is an error, a
// file in a directory the user may not write in is still written; and no
// temporary is left by any of them.
func TestWriteKeepsBehaviour(t *testing.T) {
	srv := sshtest.Start(t)
	h := newHost(t, srv.Config())
	ctx := testCtx(t)
	dir := remoteTempDir(t, h)
	q := hostkit.ShellQuote

	// A link at the destination: the file it points to is replaced.
	require.NoError(t, h.WriteFile(ctx, dir+"/real", []byte("a"), 0o644))
	run(t, h, "ln -s real "+q(dir+"/link"))
	require.NoError(t, h.WriteFile(ctx, dir+"/link", []byte("b"), 0o600))
	assert.Equal(t, "link\nb\n600\n", run(t, h, "cd "+q(dir)+" && test -L link && echo link; cat real; echo; stat -c %a real"))

	// A directory is an error, and stays.
	run(t, h, "mkdir "+q(dir+"/sub"))
	assert.Error(t, h.WriteFile(ctx, dir+"/sub", []byte("x"), 0o644))
	assert.Equal(t, "directory\n", run(t, h, "stat -c %F "+q(dir+"/sub")))

	// A directory the user may not write in: its writable file is
	// written in place.
	run(t, h, "mkdir "+q(dir+"/ro")+" && echo old >"+q(dir+"/ro/f")+" && chmod 555 "+q(dir+"/ro"))
	t.Cleanup(func() { h.Execute(testCtx(t), "chmod 755 "+q(dir+"/ro")) })
	require.NoError(t, h.WriteFile(ctx, dir+"/ro/f", []byte("new"), 0o644))
	assert.Equal(t, "new", run(t, h, "cat "+q(dir+"/ro/f")))
	assert.Equal(t, "f\n", run(t, h, "ls -A "+q(dir+"/ro")))

	assert.Equal(t, "link\nreal\nro\nsub\n", run(t, h, "ls -A "+q(dir)), "temporaries left")

	// Locally: Download through a link.
	ldir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(ldir, "real"), []byte("old"), 0o600))
	require.NoError(t, os.Symlink("real", filepath.Join(ldir, "link")))
	require.NoError(t, h.Download(ctx, dir+"/real", filepath.Join(ldir, "link")))
	got, err := os.ReadFile(filepath.Join(ldir, "real"))
	require.NoError(t, err)
	assert.Equal(t, "b", string(got))
	fi, err := os.Lstat(filepath.Join(ldir, "link"))
	require.NoError(t, err)
	assert.Equal(t, os.ModeSymlink, fi.Mode().Type(), "the link was replaced")
	fi, err = os.Stat(filepath.Join(ldir, "real"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	assert.Equal(t, []string{"link", "real"}, localEntries(t, ldir))
}

// TestWriteWithoutPosixRename: a server that denies
// posix-rename@openssh.com (sftp-server -P) still gets whole files: SFTP's
// own rename, the old file removed first when the server will not
// replace it.
func TestWriteWithoutPosixRename(t *testing.T) {
	// SFTP only, every session: this sshd runs no commands.
	srv := sshtest.Start(t, sshtest.WithConfig("Match all", "ForceCommand internal-sftp -P posix-rename"))
	h := newHost(t, srv.Config())
	ctx := testCtx(t)
	// A directory the test user may write in, and others reach.
	dir, err := os.MkdirTemp("/tmp", "hostkit-rename-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	dst := dir + "/f"

	require.NoError(t, h.WriteFile(ctx, dst, []byte("one"), 0o644))
	require.NoError(t, h.WriteFile(ctx, dst, []byte("two"), 0o640)) // over an existing file
	got, err := h.ReadFile(ctx, dst)
	require.NoError(t, err)
	assert.Equal(t, "two", string(got))
	fi, err := os.Stat(dst)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
	assert.Equal(t, []string{"f"}, localEntries(t, dir), "temporaries left")
	// The server did deny it: the writes above took the fallback.
	sc, err := h.SFTP(ctx)
	require.NoError(t, err)
	require.NoError(t, h.WriteFile(ctx, dst+"-b", []byte("b"), 0o644))
	assert.ErrorIs(t, sc.PosixRename(dst+"-b", dst), fs.ErrPermission, "posix-rename not denied: the fallback went untested")
}
