package providers_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/sshtest"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// ConfigFromRecord gives the SSH settings a record holds: enough to reach
// the host with its pinned key.
func TestConfigFromRecord(t *testing.T) {
	srv := sshtest.Start(t)
	host, port, err := net.SplitHostPort(srv.Addr)
	require.NoError(t, err)
	var portN int
	fmt.Sscan(port, &portN)
	rec := &inventory.Record{
		Hostname: "myhost.example",
		Name:     "brokertest-x",
		Broker: &inventory.Meta{ID: "id1", SSH: &inventory.SSH{
			Host: host, Port: portN, User: srv.User, HostKey: srv.HostKeyLine, KeyFile: srv.KeyFile,
		}},
	}
	cfg, err := providers.ConfigFromRecord(rec)
	require.NoError(t, err)
	assert.Equal(t, srv.Addr, cfg.Addr)
	assert.Equal(t, srv.User, cfg.User)
	assert.Equal(t, []string{srv.KeyFile}, cfg.KeyFiles)
	require.Len(t, cfg.HostKeys, 1)
	assert.Equal(t, srv.HostKey.Marshal(), cfg.HostKeys[0].Marshal())
	h := hostkit.New(rec.Hostname, cfg)
	t.Cleanup(func() { h.Close() })
	res, err := h.Execute(t.Context(), "id -un")
	require.NoError(t, err)
	assert.Equal(t, srv.User+"\n", res.Stdout)

	t.Run("defaults", func(t *testing.T) {
		cfg, err := providers.ConfigFromRecord(&inventory.Record{Hostname: "h1", Broker: &inventory.Meta{SSH: &inventory.SSH{Insecure: true}}})
		require.NoError(t, err)
		assert.Equal(t, "h1:22", cfg.Addr)
		assert.Equal(t, "root", cfg.User)
		assert.True(t, cfg.InsecureIgnoreHostKey)
		assert.Empty(t, cfg.HostKeys)
		cfg, err = providers.ConfigFromRecord(&inventory.Record{Hostname: "h1", Broker: &inventory.Meta{SSH: &inventory.SSH{Host: "::1", Port: 2222}}})
		require.NoError(t, err)
		assert.Equal(t, "[::1]:2222", cfg.Addr)
	})
	t.Run("errors", func(t *testing.T) {
		_, err := providers.ConfigFromRecord(nil)
		assert.ErrorIs(t, err, hostkit.ErrNoSSH)
		_, err = providers.ConfigFromRecord(&inventory.Record{Hostname: "h"})
		assert.ErrorIs(t, err, hostkit.ErrNoSSH)
		_, err = providers.ConfigFromRecord(&inventory.Record{Hostname: "h", Broker: &inventory.Meta{ID: "x"}})
		assert.ErrorIs(t, err, hostkit.ErrNoSSH)
		_, err = providers.ConfigFromRecord(&inventory.Record{Hostname: "h", Name: "bad-rec", Broker: &inventory.Meta{SSH: &inventory.SSH{HostKey: "ssh-ed25519 notbase64"}}})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "bad-rec")
		assert.NotErrorIs(t, err, hostkit.ErrNoSSH)
	})
}
