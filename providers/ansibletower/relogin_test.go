package ansibletower_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/providers/ansibletower"
	"github.com/hostbroker/broker/providers/ansibletower/awxtest"
)

// A token the server rejects is dropped for a login session while other
// calls are under way: 64 calls, staggered, so that the others add their
// credentials while the first logs in again. Under -race this failed when
// the token was read without the client's lock.
func TestTokenRejectedConcurrentRelogin(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	cfg := e.config(t, map[string]any{"username": e.Server.Username, "password": e.Server.Password})
	// The warning before the new login is slow to write: the other calls
	// go on meanwhile. (Any I/O between their reading of the token and the
	// login's dropping it would order the two for the race detector.)
	cfg.Logger = slog.New(slowHandler{Handler: cfg.Logger.Handler(), msg: "authentication expired", delay: 20 * time.Millisecond})
	p, err := ansibletower.Open(ctxFor(t, time.Minute), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	e.Server.RevokeTokens()
	const n = 64
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 300 * time.Microsecond)
			_, errs[i] = p.Describe(ctxFor(t, time.Minute), "workflow:deploy-vm")
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	logins := 0
	for _, r := range e.Server.Requests() {
		if r == "POST /api/login/" {
			logins++
		}
	}
	assert.Equal(t, 1, logins, "one login for all the calls that saw the rejected token")
	e.noSecrets(t)
}

// slowHandler delays the records whose message contains msg.
type slowHandler struct {
	slog.Handler
	msg   string
	delay time.Duration
}

func (h slowHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.msg) {
		time.Sleep(h.delay)
	}
	return h.Handler.Handle(ctx, r)
}
