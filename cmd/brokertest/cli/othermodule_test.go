package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/inventory"
)

// A module of its own (as the Kubernetes provider's) builds a brokertest
// that knows its provider: a main that registers it and calls Main, built
// from testdata/othermain against this tree. It checks in a host of that
// provider, which this package's CLI alone cannot.
func TestMainFromAnotherModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program in a module of its own")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool:", err)
	}
	root, err := filepath.Abs("../../..")
	require.NoError(t, err)
	mod := t.TempDir()
	src, err := os.ReadFile("testdata/othermain/main.go.txt")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(mod, "main.go"), src, 0o600))
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(mod, "go.sum"), sum, 0o600))
	goMod := "module example.com/podbrokertest\n\ngo 1.26\n\nrequire github.com/hostbroker/broker v0.0.0\n\nreplace github.com/hostbroker/broker => " + root + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(mod, "go.mod"), []byte(goMod), 0o600))
	bin := filepath.Join(mod, "podbrokertest")
	build := exec.CommandContext(t.Context(), goTool, "build", "-o", bin, ".")
	build.Dir = mod
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	_, store := cliEnv(t)
	pod := &inventory.Record{Hostname: "pod-1", Name: "pod-1", Provider: "Pods",
		Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateReady}}
	require.NoError(t, store.Put(t.Context(), pod))

	// This package's CLI, with this module's providers only, cannot.
	code, _, stderr := runCLI(t, "cleanup", "pod-1")
	assert.Equal(t, 1, code, stderr)
	assert.Contains(t, stderr, "Pods")

	var stdout, errOut bytes.Buffer
	cmd := exec.CommandContext(t.Context(), bin, "cleanup", "pod-1")
	cmd.Stdout, cmd.Stderr = &stdout, &errOut
	require.NoError(t, cmd.Run(), "stderr: %s", errOut.String())
	assert.Equal(t, "checked in pod-1 (id "+pod.ID()+")\nchecked in 1 host\n", stdout.String())
	assert.Contains(t, errOut.String(), "pods: deleted pod pod-1")
	recs, err := store.Load(t.Context())
	require.NoError(t, err)
	assert.Empty(t, recs)

	// Its help is the same CLI's.
	out, err = exec.CommandContext(t.Context(), bin, "cleanup", "-h").Output()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(out), "usage: brokertest [GLOBAL FLAGS] cleanup"), "%s", out)
}
