package providers_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/internal/onregister"
	"github.com/hostbroker/broker/providers"
)

type lampDriver struct{}

func (lampDriver) Open(context.Context, providers.Config) (providers.Provider, error) {
	return nil, nil
}
func (lampDriver) ArgKeys() []string { return []string{"lamp"} }

func init() { providers.Register("Lamp", lampDriver{}) }

// This test binary imports none of the module's providers: asking for one,
// by name or by argument, is an error that names the import to add.
func TestUnimportedBuiltins(t *testing.T) {
	_, _, err := providers.Lookup("container")
	require.ErrorIs(t, err, providers.ErrNotImported)
	require.ErrorIs(t, err, providers.ErrUnknown)
	assert.EqualError(t, err, `provider Container is not imported: add import _ "github.com/hostbroker/broker/providers/container" to the program (for tests, to a _test.go file)`)

	_, _, err = providers.Lookup("Local")
	require.ErrorIs(t, err, providers.ErrNotImported, "Local is imported by the broker package, not by providers")

	_, _, err = providers.Lookup("Foreman")
	require.ErrorIs(t, err, providers.ErrUnknown)
	assert.NotErrorIs(t, err, providers.ErrNotImported)
	assert.Contains(t, err.Error(), "Lamp", "lists the registered providers")

	name, err := providers.Infer(map[string]any{"workflow": "deploy", "other": 1})
	assert.Empty(t, name)
	require.ErrorIs(t, err, providers.ErrNotImported)
	assert.Contains(t, err.Error(), `argument "workflow" picks provider AnsibleTower, which is not imported: add import _ "github.com/hostbroker/broker/providers/ansibletower"`)

	name, err = providers.Infer(map[string]any{"lamp": true})
	require.NoError(t, err)
	assert.Equal(t, "Lamp", name)

	_, err = providers.Infer(map[string]any{"lamp": true, "container_app": "web"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "several providers (Container, Lamp)")

	name, err = providers.Infer(map[string]any{"image": "x"})
	require.NoError(t, err)
	assert.Empty(t, name, "no provider claims it")

	assert.Equal(t, []string{
		"lamp (Lamp)",
		`workflow or job_template (AnsibleTower, not imported: import _ "github.com/hostbroker/broker/providers/ansibletower")`,
		`container_host or container_app (Container, not imported: import _ "github.com/hostbroker/broker/providers/container")`,
		`kubernetes_image (Kubernetes, not imported: import _ "github.com/hostbroker/broker/providers/kubernetes")`,
		`local (Local, not imported: import _ "github.com/hostbroker/broker/providers/local")`,
		`ssh_host (SSH, not imported: import _ "github.com/hostbroker/broker/providers/ssh")`,
	}, providers.Selectors())
}

// Register tells the broker package's hook (through which the reaper's
// watcher waits for the providers its owner had) every name registered so
// far, once the new one is there to look up.
func TestRegisterTellsTheHook(t *testing.T) {
	var got []string
	var lookupErr error
	onregister.Set(func(names []string) {
		got = names
		_, _, lookupErr = providers.Lookup("Wick")
	})
	t.Cleanup(func() { onregister.Set(nil) })
	providers.Register("Wick", wickDriver{})
	require.NoError(t, lookupErr, "the hook runs outside the registry's lock, after the registration")
	assert.Contains(t, got, "Wick")
	assert.Contains(t, got, "Lamp")
}

type wickDriver struct{ lampDriver }

func (wickDriver) ArgKeys() []string { return nil }
