package cli

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// The package links no provider but the embedded Local: a module with its
// own providers (Kubernetes and client-go) builds its brokertest from it
// without carrying this module's Docker client, and this module's
// brokertest links its providers in its own main.
func TestCLILinksOnlyLocal(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to list the dependencies:", err)
	}
	out, err := exec.CommandContext(t.Context(), goTool, "list", "-deps", "github.com/hostbroker/broker/cmd/brokertest/cli").Output()
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		t.Fatalf("go list -deps: %v\n%s", err, ee.Stderr)
	}
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	var sawLocal bool
	for _, d := range deps {
		sawLocal = sawLocal || d == "github.com/hostbroker/broker/providers/local"
		for _, banned := range []string{"moby", "/providers/container", "/providers/ansibletower", "/providers/ssh", "k8s.io"} {
			if strings.Contains(d, banned) {
				t.Errorf("cli links %s", d)
			}
		}
	}
	if !sawLocal {
		t.Errorf("the listing does not hold providers/local; is it of what cli links? %q", deps)
	}
}
