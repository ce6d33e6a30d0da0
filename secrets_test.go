package broker_test

import (
	"bytes"
	"context"
	"fmt"
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
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/sshtest"
	"github.com/hostbroker/broker/inventory"
	_ "github.com/hostbroker/broker/providers/ansibletower"
	"github.com/hostbroker/broker/providers/ansibletower/awxtest"
)

// TestSecretsNeverWritten runs the broker with every kind of secret in its
// settings (SSH password, AWX token from the environment, AWX password,
// a wrong token), checks hosts out and in on Local and AnsibleTower,
// provokes errors, and runs the CLI; then it scans everything written: the
// broker directory (inventory, logs), error strings and the CLI's output.
// No secret may appear. The settings file is readable by others on
// purpose: the log must warn about it.
func TestSecretsNeverWritten(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	mark := func(what string) string { return "SECRET-" + what + "-" + inventory.NewID() }
	var (
		sshPassword = mark("ssh-password")
		awxToken    = mark("awx-token")
		awxPassword = mark("awx-password")
		badToken    = mark("bad-token")
		secrets     = []string{sshPassword, awxToken, awxPassword, badToken}
	)
	srv := awxtest.Start(t, awxtest.Options{Token: awxToken, Password: awxPassword, JobTime: 100 * time.Millisecond})
	dir := t.TempDir()
	settingsFile := filepath.Join(dir, "broker_settings.yaml")
	require.NoError(t, os.WriteFile(settingsFile, fmt.Appendf(nil, `
ssh:
  host_username: root
  host_password: %s
AnsibleTower:
  base_url: %s
  instances:
    tok: {default: true}
    pw: {username: %s, password: %s}
    bad: {token: %s}
`, sshPassword, srv.URL, srv.Username, awxPassword, badToken), 0o644))
	env := []string{"BROKER_AnsibleTower__instances__tok__token=" + awxToken}

	var outputs []string // error strings and CLI output, scanned at the end
	record := func(err error) {
		if err != nil {
			outputs = append(outputs, err.Error())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := broker.New(broker.WithDirectory(dir), broker.WithSettingsEnv(env), broker.WithReaper(false))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"Local checkout, command, check-in", func(t *testing.T) {
			hosts, err := b.Checkout(ctx, broker.Request{})
			require.NoError(t, err)
			_, err = hosts[0].Execute(ctx, "true")
			require.NoError(t, err)
			require.NoError(t, b.Checkin(ctx, hosts...))
		}},
		{"AnsibleTower with the token from the environment", func(t *testing.T) {
			hosts, err := b.Checkout(ctx, broker.Request{Args: map[string]any{"workflow": "deploy-vm"}, Count: 2})
			require.NoError(t, err)
			require.Len(t, hosts, 2)
		}},
		{"AnsibleTower with a password, its session expiring", func(t *testing.T) {
			hosts, err := b.Checkout(ctx, broker.Request{Instance: "pw", Args: map[string]any{"workflow": "deploy-vm"}})
			require.NoError(t, err)
			srv.ExpireSessions()
			recs, err := b.Inventory(ctx)
			require.NoError(t, err)
			require.NoError(t, b.Extend(ctx, nil, recs[len(recs)-1]))
			require.NoError(t, b.Checkin(ctx, hosts...))
		}},
		{"errors: wrong token, missing workflow, bad args file", func(t *testing.T) {
			_, err := b.Checkout(ctx, broker.Request{Instance: "bad", Args: map[string]any{"workflow": "deploy-vm"}})
			require.Error(t, err)
			record(err)
			_, err = b.Checkout(ctx, broker.Request{Args: map[string]any{"workflow": "no-such-workflow"}})
			require.Error(t, err)
			record(err)
			argsFile := filepath.Join(t.TempDir(), "args.yaml")
			require.NoError(t, os.WriteFile(argsFile, []byte("workflow: [unclosed"), 0o600))
			_, err = b.Checkout(ctx, broker.Request{ArgsFile: argsFile})
			require.Error(t, err)
			record(err)
		}},
		{"errors: wrong SSH password against sshd", func(t *testing.T) {
			sshd := sshtest.Start(t, sshtest.WithPassword())
			cfg := sshd.Config()
			cfg.KeyFiles, cfg.Signers = nil, nil
			cfg.Password = sshPassword
			cfg.ConnectRetries = 0
			h := hostkit.New("127.0.0.1", cfg)
			defer h.Close()
			_, err := h.Execute(ctx, "true")
			require.Error(t, err)
			record(err)
		}},
		{"CLI: inventory, sync, cleanup", func(t *testing.T) {
			cli := buildCLI(t)
			for _, args := range [][]string{
				{"--json", "inventory"},
				{"--json", "sync", "AnsibleTower::tok"},
				{"-v", "inventory"},
				{"--json", "cleanup", "--all"},
				{"--json", "sync", "AnsibleTower::bad"},
			} {
				cmd := exec.CommandContext(ctx, cli, args...)
				cmd.Env = append(os.Environ(), append(env, "BROKER_DIRECTORY="+dir)...)
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				t.Logf("brokertest %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
				outputs = append(outputs, stdout.String(), stderr.String())
			}
			assert.Empty(t, srv.HostNames(), "cleanup --all checked in the AnsibleTower hosts")
		}},
	}
	for _, s := range steps {
		t.Run(s.name, s.run)
	}

	// Scan.
	files := 0
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path == settingsFile {
			return err
		}
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		files++
		for _, s := range secrets {
			assert.NotContains(t, string(data), s, "in %s", path)
		}
		if strings.HasSuffix(path, "inventory.yaml") || strings.HasSuffix(path, ".log") {
			info, err := d.Info()
			require.NoError(t, err)
			assert.Equal(t, fs.FileMode(0o600), info.Mode().Perm(), path)
		}
		return nil
	}))
	assert.GreaterOrEqual(t, files, 2, "the inventory and the log were scanned")
	for _, out := range outputs {
		for _, s := range secrets {
			assert.NotContains(t, out, s)
		}
	}
	log, err := os.ReadFile(filepath.Join(dir, "logs", "broker.log"))
	require.NoError(t, err)
	assert.Contains(t, string(log), "chmod 600", "the log warns that others can read the settings' secrets")
	t.Logf("scanned %d files and %d outputs for %d secrets", files, len(outputs), len(secrets))
}
