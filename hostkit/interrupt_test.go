package hostkit_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/sshtest"
)

// sparseFile makes a local file of size bytes that takes no room (zeros).
func sparseFile(t *testing.T, size int64) string {
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	return p
}

// localEntries lists dir's names.
func localEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// keptOld checks that a destination holds its old content.
func keptOld(t *testing.T, got []byte, old string) {
	t.Helper()
	if string(got) != old {
		t.Errorf("the destination holds %d bytes (%q…), not its old content %q", len(got), got[:min(len(got), 24)], old)
	}
}

// killedWithin is how long a transfer may take to fail once sshd is
// killed: generous, for a loaded machine; the figures measured are in
// RELIABILITY.md.
const killedWithin = 30 * time.Second

// killDuring runs transfer, kills sshd once underWay holds, and checks
// that transfer then fails within killedWithin.
func killDuring(t *testing.T, srv *sshtest.Server, what string, transfer func() error, underWay func() bool) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- transfer() }()
	require.Eventually(t, underWay, time.Minute, time.Millisecond, "the %s never got going", what)
	require.NoError(t, srv.Kill())
	killed := time.Now()
	select {
	case err := <-done:
		t.Logf("%s failed %v after the kill: %v", what, time.Since(killed), err)
		require.Error(t, err, "the %s finished before sshd was killed: nothing tested", what)
	case <-time.After(killedWithin):
		t.Fatalf("%s still running %v after sshd was killed", what, killedWithin)
	}
}

// TestInterruptedTransferKeepsFile: sshd killed in the middle of an Upload
// or a Download: the call fails well before its deadline, the destination
// keeps its old content, and no temporary file is left (on the host: once
// sshd is back, the next SFTP use of the host removes it).
func TestInterruptedTransferKeepsFile(t *testing.T) {
	srv := sshtest.Start(t)
	h := newHost(t, srv.Config())
	ctx := testCtx(t)
	dir := remoteTempDir(t, h)
	const old = "the good old content\n"

	t.Run("upload", func(t *testing.T) {
		probe := newHost(t, srv.Config()) // a connection of its own
		dst := dir + "/upload.bin"
		require.NoError(t, h.WriteFile(ctx, dst, []byte(old), 0o640))
		src := sparseFile(t, 1<<30)
		// Once a megabyte is written on the host, kill sshd.
		killDuring(t, srv, "Upload", func() error { return h.Upload(ctx, src, dst) }, func() bool {
			res, err := probe.Execute(ctx, "find "+hostkit.ShellQuote(dir)+" -type f -size +1024k")
			return err == nil && strings.TrimSpace(res.Stdout) != ""
		})

		require.NoError(t, srv.Restart())
		got, err := h.ReadFile(ctx, dst)
		require.NoError(t, err)
		keptOld(t, got, old)
		assert.Equal(t, "upload.bin\n", run(t, h, "ls -A "+hostkit.ShellQuote(dir)+" | grep -v '^download'"),
			"files left beside the destination")
		assert.Equal(t, "640\n", run(t, h, "stat -c %a "+hostkit.ShellQuote(dst)))
		// And the next upload replaces it, mode and all.
		require.NoError(t, h.WriteFile(ctx, dst, []byte("new\n"), 0o600))
		assert.Equal(t, "new\n600\n", run(t, h, "cat "+hostkit.ShellQuote(dst)+"; stat -c %a "+hostkit.ShellQuote(dst)))
	})

	t.Run("download", func(t *testing.T) {
		src := dir + "/download-src.bin"
		run(t, h, "truncate -s 4G "+hostkit.ShellQuote(src))
		ldir := t.TempDir()
		dst := filepath.Join(ldir, "dst")
		require.NoError(t, os.WriteFile(dst, []byte(old), 0o644))
		killDuring(t, srv, "Download", func() error { return h.Download(ctx, src, dst) }, func() bool {
			es, _ := os.ReadDir(ldir)
			for _, e := range es {
				if fi, err := e.Info(); err == nil && fi.Size() > 1<<20 {
					return true
				}
			}
			return false
		})
		got, err := os.ReadFile(dst)
		require.NoError(t, err)
		keptOld(t, got, old)
		assert.Equal(t, []string{"dst"}, localEntries(t, ldir), "files left beside the destination")
		require.NoError(t, srv.Restart())
	})
}
