package broker_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/brokertest"
	"github.com/hostbroker/broker/inventory"
)

// TestMidCheckoutChild is TestSIGTERMMidCheckout's child: a test that
// checks COUNT hosts out through brokertest.Hosts (IMAGE: containers, else
// Local) with no reaper, so that only the signal handler can check them in.
func TestMidCheckoutChild(t *testing.T) {
	if os.Getenv("BROKER_TEST_MIDCHILD") == "" {
		t.Skip("the child process of TestSIGTERMMidCheckout")
	}
	b, err := broker.New(broker.WithRunID(os.Getenv("RUN_ID")), broker.WithReaper(false))
	require.NoError(t, err)
	n, _ := strconv.Atoi(os.Getenv("COUNT"))
	req := broker.Request{Count: n}
	if img := os.Getenv("IMAGE"); img != "" {
		req.Args = map[string]any{"container_host": img}
	}
	brokertest.Hosts(t, req, brokertest.WithBroker(b))
	time.Sleep(time.Hour) // the parent signals before this
}

// TestSIGTERMMidCheckout: SIGTERM reaches a test binary while
// brokertest.Hosts is checking hosts out (after its first intent record,
// and after its first container). The process has no reaper: its signal
// handler checks in what it holds, what is half made included, before
// the signal ends it. Nothing is left: no record, no container, no Local
// host's directory.
func TestSIGTERMMidCheckout(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	for _, tc := range []struct {
		name, image string
		count       int
		early       bool // after the first intent record, not the first host
	}{
		{"Local", "", 8, true},
		{"Container_first_record", sshdImage, 8, true},
		{"Container_first_container", sshdImage, 8, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.image != "" {
				requireImage(t, tc.image)
			}
			dir := t.TempDir()
			runID := inventory.NewRunID()
			left := localDirs(dir)
			if tc.image != "" {
				left = containersOfRun(t, runID)
				t.Cleanup(func() { removeContainersOfRun(runID) })
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestMidCheckoutChild$", "-test.v")
			cmd.Env = append(os.Environ(), childRole+"=midcheckout", "BROKER_TEST_MIDCHILD=1", "BROKER_DIRECTORY="+dir, "RUN_ID="+runID,
				"IMAGE="+tc.image, "COUNT="+strconv.Itoa(tc.count))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

			store := inventory.Open(filepath.Join(dir, "inventory.yaml"))
			waitCheckoutStarted(t, store, left, tc.early, &out)
			recs, _ := store.Load(context.Background())
			ready := 0
			for _, r := range recs {
				if r.Broker != nil && r.Broker.State == inventory.StateReady {
					ready++
				}
			}
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			_ = cmd.Wait()
			t.Logf("SIGTERM with %d records (%d ready), %d hosts made", len(recs), ready, left())
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGTERM, "the child ends of SIGTERM: %v\n%s", cmd.ProcessState, &out)
			// The process is gone and had no watcher: what is left now
			// stays. Nothing may be.
			recs, err := store.Load(context.Background())
			require.NoError(t, err)
			assert.Empty(t, recs, "records left by the SIGTERMed checkout")
			assert.Zero(t, left(), "hosts left by the SIGTERMed checkout")
			time.Sleep(time.Second) // a create in flight at the engine would show by now
			assert.Zero(t, left(), "hosts made after the process ended")
		})
	}
}

// waitCheckoutStarted waits until a child's checkout has made its first
// host (left counts them), or with early its first record in store; out,
// when set, is the child's output, shown if it never does.
func waitCheckoutStarted(t *testing.T, store *inventory.Store, left func() int, early bool, out fmt.Stringer) {
	t.Helper()
	started := func() bool {
		if !early {
			return left() > 0
		}
		recs, _ := store.Load(context.Background())
		return len(recs) > 0
	}
	deadline := time.Now().Add(waitBound)
	for !started() {
		if time.Now().After(deadline) {
			if out != nil {
				t.Fatalf("the checkout did not start:\n%s", out)
			}
			t.Fatal("the checkout did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
