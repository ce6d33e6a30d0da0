package brokertest_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// A test binary that uses only the embedded Local provider links neither
// the Docker client nor OpenTelemetry: as database/sql imports no driver,
// the core imports no provider but Local.
func TestCoreLinksOnlyLocal(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to list the dependencies:", err)
	}
	out, err := exec.CommandContext(t.Context(), goTool, "list", "-deps",
		"github.com/hostbroker/broker", "github.com/hostbroker/broker/brokertest").Output()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		t.Fatalf("go list -deps: %v\n%s", err, ee.Stderr)
	}
	require.NoError(t, err, "go list -deps")
	deps := strings.Fields(string(out))
	assert.Contains(t, deps, "github.com/hostbroker/broker/providers/local", "the listing is of what brokertest links")
	for _, d := range deps {
		for _, banned := range []string{"moby", "opentelemetry", "/providers/container", "/providers/ansibletower"} {
			assert.NotContains(t, d, banned, "brokertest links %s", d)
		}
	}
}

// This test binary imports no provider but Local. A request that needs
// another of this module's providers says which import to add, however it
// names the provider; the Python broker's settings sections of those
// providers still load, and Local still works.
func TestUnimportedProviderNamesItsImport(t *testing.T) {
	const (
		tower     = `import _ "github.com/hostbroker/broker/providers/ansibletower"`
		container = `import _ "github.com/hostbroker/broker/providers/container"`
	)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), []byte(`
AnsibleTower:
  instances:
    - testing: {base_url: "https://tower.example.com/", token: "", default: true}
    - production: {base_url: "https://aap.example.com/"}
Container:
  runtime: podman
  instances: {remote: {host_uri: "ssh://root@engine.example.com"}}
Foreman:
  foreman_url: https://foreman.example.com
nicks:
  rhel9: {workflow: deploy-rhel, rhel_version: "9"}
`), 0o600))
	b, err := broker.New(broker.WithDirectory(dir), broker.WithSettingsEnv([]string{}), broker.WithReaper(false))
	require.NoError(t, err, "sections of providers nobody imported load")
	t.Cleanup(func() { b.Close() })
	ctx := t.Context()

	for _, tc := range []struct {
		req  broker.Request
		want []string
	}{
		{broker.Request{Provider: "Container"}, []string{"provider Container is not imported", container}},
		{broker.Request{Provider: "ansibletower", Instance: "production"}, []string{"provider AnsibleTower is not imported", tower}},
		{broker.Request{Args: map[string]any{"container_host": "brokertest/debian-sshd:12"}}, []string{`argument "container_host" picks provider Container`, container}},
		{broker.Request{Args: map[string]any{"job_template": "rhel9"}}, []string{`argument "job_template" picks provider AnsibleTower`, tower}},
		{broker.Request{Nick: "rhel9"}, []string{`argument "workflow" picks provider AnsibleTower`, tower}},
	} {
		hosts, err := b.Checkout(ctx, tc.req)
		require.ErrorIs(t, err, providers.ErrNotImported, "%+v", tc.req)
		assert.ErrorIs(t, err, providers.ErrUnknown)
		assert.Empty(t, hosts)
		for _, w := range tc.want {
			assert.Contains(t, err.Error(), w, "%+v", tc.req)
		}
	}

	// A record of such a provider (another program's) cannot be checked in
	// here, and the error says why.
	err = b.CheckinRecords(ctx, &inventory.Record{Provider: "Container", Name: "web", Hostname: "127.0.0.1"})
	require.ErrorIs(t, err, providers.ErrNotImported)
	assert.Contains(t, err.Error(), container)

	// An argument that picks no provider runs nowhere; the error lists the
	// arguments that pick each provider, and the imports they need.
	_, err = b.Checkout(ctx, broker.Request{Args: map[string]any{"image": "brokertest/busybox:1"}})
	require.Error(t, err)
	assert.NotErrorIs(t, err, providers.ErrNotImported)
	for _, w := range []string{`unknown argument "image"`, "local (Local)", "container_host or container_app (Container, not imported: " + container + ")"} {
		assert.Contains(t, err.Error(), w)
	}

	hosts, err := b.Checkout(ctx, broker.Request{})
	require.NoError(t, err, "Local works beside the sections of unimported providers")
	res, err := hosts[0].Execute(ctx, "echo ok")
	require.NoError(t, err)
	assert.Equal(t, "ok\n", res.Stdout)
	require.NoError(t, b.Checkin(ctx, hosts...))
	recs, err := b.Inventory(ctx)
	require.NoError(t, err)
	assert.Empty(t, recs, "nothing was left in the inventory")
}
