package brokertest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/brokertest"
	"github.com/hostbroker/broker/hostkit"
)

// WebHost is a custom host type: brokertest.HostAs runs its Setup after
// checkout and its Teardown before check-in.
type WebHost struct {
	*hostkit.Host
}

// Setup prepares the host for the test.
func (w *WebHost) Setup(ctx context.Context) error {
	return w.WriteFile(ctx, "index.html", []byte("<h1>hello</h1>\n"), 0o644)
}

// Teardown runs before the host is checked in.
func (w *WebHost) Teardown(ctx context.Context) error {
	_, err := w.Execute(ctx, "rm -f index.html")
	return err
}

func TestWebHost(t *testing.T) {
	// An empty request is a host of the embedded Local provider; with
	// Args{"container_host": "brokertest/debian-sshd:12"} it is a container
	// (in a test package that has import _ ".../providers/container").
	w := brokertest.HostAs[WebHost](t, broker.Request{})
	res, err := w.Execute(t.Context(), "cat index.html")
	if err != nil || res.Status != 0 || !strings.Contains(res.Stdout, "hello") {
		t.Fatalf("cat index.html: %v %+v", err, res)
	}
}

func TestParallelOnAPool(t *testing.T) {
	// Host's options (WithKeepOnFailure) and pool-only ones (WithEager) mix.
	pool := brokertest.NewPool(t, broker.Request{}, 2, brokertest.WithKeepOnFailure(), brokertest.WithEager())
	for _, name := range []string{"a", "b", "c", "d"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := pool.Lease(t) // this subtest's alone until it ends
			if _, err := h.Execute(t.Context(), "echo "+name+" > owner && cat owner"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Tests get hosts with brokertest.Host (checked in at the test's end),
// brokertest.HostAs for custom host types with Setup and Teardown hooks, and
// brokertest.NewPool to share a few hosts among parallel subtests. This
// file is the example.
func Example() {}
