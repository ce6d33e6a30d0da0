package broker_test

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/brokertest"
	"github.com/hostbroker/broker/inventory"
	_ "github.com/hostbroker/broker/providers/ansibletower"
	"github.com/hostbroker/broker/providers/ansibletower/awxtest"
)

// AnsibleTower end to end through the Broker: settings in the Python
// broker's format with the token from the environment, a nick, Count,
// the inventory, SSH to the VMs, Extend, Sync and check-in; the token is
// never written anywhere.
func TestAnsibleTowerThroughBroker(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	awx := awxtest.StartLocal(t, dir, awxtest.Options{JobTime: 300 * time.Millisecond})
	srv := awx.Server

	settingsYAML := fmt.Sprintf(`
ssh:
  host_username: root
  host_ssh_key_filename: %s
  known_hosts: [%s]
AnsibleTower:
  workflow_poll_interval: 1
  instances:
    - staging:
        base_url: http://127.0.0.1:1/
    - awx:
        base_url: %s
        default: true
nicks:
  debian:
    workflow: deploy-vm
    template: debian-12
`, awx.KeyFile, awx.KnownHosts, srv.URL)
	bdir := filepath.Join(dir, "broker")
	require.NoError(t, os.MkdirAll(bdir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(bdir, "broker_settings.yaml"), []byte(settingsYAML), 0o600))
	b, err := broker.New(broker.WithDirectory(bdir), broker.WithSettingsEnv([]string{"BROKER_AnsibleTower__token=" + srv.Token}), broker.WithReaper(false))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })

	hosts, err := b.Checkout(ctx, broker.Request{Nick: "debian", Count: 3})
	require.NoError(t, err)
	require.Len(t, hosts, 3)
	for _, h := range hosts {
		res, err := h.Execute(ctx, "echo hello from $0")
		require.NoError(t, err)
		assert.Equal(t, 0, res.Status)
		assert.Contains(t, res.Stdout, "hello from")
	}
	recs, err := b.Inventory(ctx)
	require.NoError(t, err)
	require.Len(t, recs, 3)
	for _, r := range recs {
		assert.Equal(t, "AnsibleTower", r.Provider)
		assert.Equal(t, "awx", r.Instance, "the default instance")
		assert.Equal(t, "debian-12", r.Args["template"], "nick args")
		assert.Equal(t, "admin VMs", r.Extra["tower_inventory"])
		assert.Contains(t, r.Broker.Data["ui_url"], "/#/jobs/workflow/")
	}

	require.NoError(t, b.Extend(ctx, map[string]any{"new_expire_time": "+7200"}, recs[0]))
	assert.Equal(t, "+7200", srv.HostFacts(recs[0].Name)["expire_time"])

	// A VM made outside this broker is found by Sync.
	_, err = srv.AddHost("admin VMs", "made-by-hand", map[string]any{"fqdn": "by-hand.example.test"}, map[string]any{"_broker_args": map[string]any{"workflow": "deploy-vm"}})
	require.NoError(t, err)
	sres, err := b.Sync(ctx, "AnsibleTower::awx")
	require.NoError(t, err)
	require.Len(t, sres.Added, 1)
	assert.Equal(t, "made-by-hand", sres.Added[0].Name)
	assert.Equal(t, 3, sres.Kept)

	require.NoError(t, b.Checkin(ctx, hosts...))
	assert.Equal(t, []string{"made-by-hand"}, srv.HostNames())
	assert.Equal(t, 0, awx.VMs.Running())

	// The token reached no file of the broker directory, and files are private.
	require.NoError(t, filepath.WalkDir(bdir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.NotContains(t, string(data), srv.Token, path)
		if info, err := d.Info(); err == nil && !strings.HasSuffix(path, ".lock") {
			assert.Zero(t, info.Mode().Perm()&0o077, "%s is %v", path, info.Mode().Perm())
		}
		return nil
	}))
}

// brokertest.Host works with AnsibleTower hosts as with any other.
func TestAnsibleTowerBrokertest(t *testing.T) {
	dir := t.TempDir()
	awx := awxtest.StartLocal(t, dir, awxtest.Options{})
	srv := awx.Server
	bdir := filepath.Join(dir, "broker")
	require.NoError(t, os.MkdirAll(bdir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(bdir, "broker_settings.yaml"), fmt.Appendf(nil, `
ssh: {host_username: root, host_ssh_key_filename: %s, known_hosts: [%s]}
AnsibleTower: {base_url: %s, username: %s, password: %s}
`, awx.KeyFile, awx.KnownHosts, srv.URL, srv.Username, srv.Password), 0o600))
	b, err := broker.New(broker.WithDirectory(bdir), broker.WithSettingsEnv([]string{}), broker.WithReaper(false))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })

	t.Run("test", func(t *testing.T) {
		h := brokertest.Host(t, broker.Request{Args: map[string]any{"workflow": "deploy-vm"}}, brokertest.WithBroker(b))
		require.NoError(t, h.WriteFile(t.Context(), "marker", []byte("x"), 0o600))
		got, err := h.ReadFile(t.Context(), "marker")
		require.NoError(t, err)
		assert.Equal(t, "x", string(got))
		assert.Len(t, srv.HostNames(), 1)
	})
	assert.Empty(t, srv.HostNames(), "checked in at the subtest's end")
	log, err := os.ReadFile(filepath.Join(bdir, "logs", "broker.log"))
	if err == nil {
		assert.NotContains(t, string(log), srv.Password)
	}
}

// A test process SIGKILLed while AnsibleTower workflows run (mid-checkout)
// or after its VMs are ready: its watcher cancels the running jobs and
// releases every VM; the inventory keeps nothing of the run.
func TestReaperAnsibleTower(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	for _, c := range []struct {
		name        string
		midCheckout bool // else once every host is ready
	}{{"mid-checkout", true}, {"ready", false}} {
		t.Run(c.name, func(t *testing.T) {
			srv := awxtest.Start(t, awxtest.Options{JobTime: 3 * time.Second})
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), fmt.Appendf(nil,
				"AnsibleTower: {base_url: %s, token: %s, workflow_poll_interval: 0.5}\n", srv.URL, srv.Token), 0o600))
			runID := inventory.NewRunID()
			env := []string{"BROKER_DIRECTORY=" + dir, "RUN_ID=" + runID, "WORKFLOW=deploy-vm", "COUNT=5"}
			var cmd *exec.Cmd
			if !c.midCheckout {
				cmd = child(t, "hold", env)
				out, err := cmd.StdoutPipe()
				require.NoError(t, err)
				require.NoError(t, cmd.Start())
				t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
				sc := bufio.NewScanner(out)
				for sc.Scan() && !strings.HasPrefix(sc.Text(), "ready") {
				}
				go func() { _, _ = io.Copy(io.Discard, out) }()
			} else {
				cmd = child(t, "hold", env)
				require.NoError(t, cmd.Start())
				t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
				// Killed once the workflows have made their first VM
				// (polled: how long that takes depends on the machine's
				// load), while they still run.
				deadline := time.Now().Add(waitBound)
				for len(srv.HostNames()) == 0 {
					require.True(t, time.Now().Before(deadline), "the workflows made no VM in %v", waitBound)
					time.Sleep(10 * time.Millisecond)
				}
			}
			t.Logf("killing with %d VMs made", len(srv.HostNames()))
			require.NoError(t, cmd.Process.Kill())
			_ = cmd.Wait()
			waitEmpty(t, dir, runID, func() int { return len(srv.HostNames()) })
		})
	}
}
