package container_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hostbroker/broker/inventory"
)

// conmonsOf counts the conmon processes of the container ctrID (conmon's
// "-c ID" argument): Podman's monitor of the container and of each exec
// session, which outlives its session by containers.conf's
// exit_command_delay.
func conmonsOf(t *testing.T, ctrID string) int {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("\x00-c\x00" + ctrID + "\x00")
	n := 0
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		if err != nil || !bytes.HasPrefix(cmd, []byte("/")) && !bytes.HasPrefix(cmd, []byte("conmon")) {
			continue
		}
		if name := filepath.Base(string(bytes.SplitN(cmd, []byte{0}, 2)[0])); name == "conmon" && bytes.Contains(cmd, want) {
			n++
		}
	}
	return n
}

// Podman keeps each API exec session's conmon for exit_command_delay after
// the session ends (300 s by default, Docker's exec reaping; nothing in the
// API shortens it for one session, and removing the session or the
// container does not end that conmon: docs/settings.md#podman). With the
// delay podmantest configures (5 s), as docs/settings.md advises, a host's
// conmons are gone within seconds of its check-in: for an image with sshd
// (its exec stream) and one without (an exec per command).
func TestPodmanExecConmonsEndAfterCheckin(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for Podman's exit command delay")
	}
	p := open(t, engines[1], nil) // podman; skips when missing
	for _, img := range testImages {
		t.Run(filepath.Base(img), func(t *testing.T) {
			ctx := testCtx(t)
			rec := checkout(t, ctx, p, map[string]any{"container_host": img}, nil)
			h := connect(t, ctx, p, rec)
			for range 3 {
				if _, err := h.Execute(ctx, "true"); err != nil {
					t.Fatal(err)
				}
			}
			ids, err := containersWithID(ctx, p, rec.ID())
			if err != nil || len(ids) != 1 {
				t.Fatalf("the host's container: %v %v", ids, err)
			}
			during := conmonsOf(t, ids[0])
			if during == 0 {
				t.Fatalf("no conmon of container %s found while it runs: the count below would prove nothing", ids[0])
			}
			h.Close()
			start := time.Now()
			if err := p.Checkin(ctx, &inventory.Record{Broker: &inventory.Meta{ID: rec.ID()}}); err != nil {
				t.Fatal(err)
			}
			// The delay is 5 s; the margin is for a loaded machine.
			deadline := time.Now().Add(45 * time.Second)
			left := conmonsOf(t, ids[0])
			atCheckin := left // the container's removal ends none of them
			for left > 0 && time.Now().Before(deadline) {
				time.Sleep(250 * time.Millisecond)
				left = conmonsOf(t, ids[0])
			}
			if left > 0 {
				t.Fatalf("%d conmon processes of %s still there %v after check-in (exit_command_delay not applied?)", left, ids[0], time.Since(start).Round(time.Second))
			}
			t.Logf("%d conmon processes while the host ran, %d just after its check-in, none %v after it",
				during, atCheckin, time.Since(start).Round(100*time.Millisecond))
		})
	}
}
