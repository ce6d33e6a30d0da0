package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/inventory"
)

// TestCheckoutDeadlineBounded: a Count=40 container checkout whose context
// ends after 2 s returns soon after the deadline (the work it started is
// undone in the background), with one line per distinct error and its
// count; nothing is left once the background check-ins are done.
func TestCheckoutDeadlineBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	requireImage(t, sshdImage)
	runID := inventory.NewRunID()
	left := containersOfRun(t, runID)
	t.Cleanup(func() { removeContainersOfRun(runID) })
	b, err := broker.New(broker.WithDirectory(t.TempDir()), broker.WithRunID(runID), broker.WithReaper(false))
	require.NoError(t, err)
	const deadline = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	_, err = b.Checkout(ctx, broker.Request{Count: 40, Args: map[string]any{"container_host": sshdImage}})
	took := time.Since(start)
	require.Error(t, err)
	t.Logf("returned after %v with an error of %d bytes, %d lines:\n%v", took.Round(time.Millisecond), len(err.Error()), strings.Count(err.Error(), "\n")+1, err)
	// About a second after the deadline; a loaded machine gets slack, but
	// not the seconds of undoing 40 half-made containers.
	assert.Less(t, took, deadline+3*time.Second, "returned long after the deadline")
	lines := strings.Split(err.Error(), "\n")
	assert.LessOrEqual(t, len(lines), 6, "one line per distinct error")
	assert.Less(t, len(err.Error()), 4096, "a short error")
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	cleaned := time.Now()
	for left() > 0 && time.Since(cleaned) < 2*time.Minute {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("0 containers left %v after the return", time.Since(cleaned).Round(100*time.Millisecond))
	require.NoError(t, b.Close())
	assert.Zero(t, left(), "containers left")
	recs, err := b.Store().Load(context.Background())
	require.NoError(t, err)
	assert.Empty(t, recs, "records left")
}
