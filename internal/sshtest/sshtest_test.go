package sshtest_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/sshtest"
)

func TestServer(t *testing.T) {
	srv := sshtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	assert.True(t, strings.HasPrefix(srv.Addr, "127.0.0.1:"))
	if os.Geteuid() == 0 {
		assert.Equal(t, sshtest.TestUser, srv.User)
	}
	assert.Contains(t, srv.HostKeyLine, "ssh-ed25519 ")

	h := hostkit.New("sshtest", srv.Config())
	defer h.Close()
	res, err := h.Execute(ctx, "id -un; echo $0")
	require.NoError(t, err)
	assert.Equal(t, srv.User+"\n", strings.SplitAfter(res.Stdout, "\n")[0])

	// A long-running session process dies with Kill.
	res, err = h.Execute(ctx, "sleep 600 >/dev/null 2>&1 & echo $!")
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(res.Stdout))
	require.NoError(t, err)
	require.NoError(t, srv.Kill())
	require.Eventually(t, func() bool { return syscall.Kill(pid, 0) != nil }, 10*time.Second, 20*time.Millisecond,
		"session process %d survived Kill", pid)

	// Restart: same address and host key (the pinned config still works).
	addr := srv.Addr
	require.NoError(t, srv.Restart())
	assert.Equal(t, addr, srv.Addr)
	res, err = h.Execute(ctx, "echo back")
	require.NoError(t, err)
	assert.Equal(t, "back\n", res.Stdout)

	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Stop())
	_, err = hostkit.New("stopped", func() hostkit.Config {
		c := srv.Config()
		c.ConnectRetries = -1
		return c
	}()).Execute(ctx, "true")
	assert.Error(t, err)
}

func TestNew(t *testing.T) {
	if err := sshtest.Available(); err != nil {
		t.Skip(err)
	}
	dir, err := os.MkdirTemp("", "sshtest-new-")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	srv, err := sshtest.New(dir, sshtest.Options{Config: []string{"MaxSessions 3"}})
	require.NoError(t, err)
	defer srv.Close()
	assert.Equal(t, dir, srv.Dir)
	assert.FileExists(t, srv.KeyFile)
	b, err := os.ReadFile(dir + "/sshd_config")
	require.NoError(t, err)
	assert.Contains(t, string(b), "MaxSessions 3")

	// More concurrent commands than MaxSessions still all run.
	h := hostkit.New("new", srv.Config())
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := h.Execute(ctx, "sleep 0.2")
			errs <- err
		}()
	}
	for range 8 {
		assert.NoError(t, <-errs)
	}
}
