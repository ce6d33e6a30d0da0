package broker_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/internal/leakcheck"
	"github.com/hostbroker/broker/inventory"
	_ "github.com/hostbroker/broker/providers/container"
)

// freezingEngine is a proxy in front of the Docker socket that stops
// answering (holds every request) once a request matching freezeAfter has
// been answered, until thaw.
type freezingEngine struct {
	*httptest.Server
	freezeAfter *regexp.Regexp

	mu     sync.Mutex
	frozen bool
	thawed chan struct{}
	held   int
}

func newFreezingEngine(t *testing.T, socket string, freezeAfter *regexp.Regexp) *freezingEngine {
	f := &freezingEngine{freezeAfter: freezeAfter, thawed: make(chan struct{})}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "docker"
		},
		Transport: tr,
	}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		frozen := f.frozen
		if frozen {
			f.held++
		}
		f.mu.Unlock()
		if frozen {
			select {
			case <-f.thawed:
			case <-r.Context().Done():
				return
			}
		}
		proxy.ServeHTTP(w, r)
		if f.freezeAfter.MatchString(r.Method + " " + r.URL.Path) {
			f.mu.Lock()
			f.frozen = true
			f.mu.Unlock()
		}
	}))
	t.Cleanup(func() { f.thaw(); f.Close(); tr.CloseIdleConnections() })
	return f
}

func (f *freezingEngine) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen {
		f.frozen = false
		close(f.thawed)
	}
}

// An engine that stops answering right after starting the container: the
// checkout fails within its bounds (engine call timeout), the record stays
// in the inventory and says why; once the engine answers again, cleanup
// removes the container and the record. No goroutine is left.
func TestEngineFreezesMidCheckout(t *testing.T) {
	requireImage(t, sshdImage)
	leakcheck.Check(t)
	socket := "/var/run/docker.sock"
	if h, ok := strings.CutPrefix(os.Getenv("DOCKER_HOST"), "unix://"); ok {
		socket = h
	}
	engine := newFreezingEngine(t, socket, regexp.MustCompile(`^POST /v[0-9.]+/containers/[^/]+/start$`))
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), fmt.Appendf(nil,
		"Container: {host_uri: %q, timeout: 2, ssh_wait: 3}\n", "tcp://"+strings.TrimPrefix(engine.URL, "http://")), 0o600))
	runID := inventory.NewRunID()
	t.Cleanup(func() { removeContainersOfRun(runID) })
	b, err := broker.New(broker.WithDirectory(dir), broker.WithSettingsEnv([]string{}), broker.WithRunID(runID), broker.WithReaper(false))
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err = b.Checkout(ctx, broker.Request{Args: map[string]any{"container_host": sshdImage}})
	elapsed := time.Since(start)
	require.Error(t, err)
	t.Logf("checkout failed after %s: %v", elapsed.Round(time.Millisecond), err)
	assert.Less(t, elapsed, 30*time.Second, "bounded by the engine call timeout, not the caller's minute")
	assert.Contains(t, err.Error(), "left in the inventory")
	engine.mu.Lock()
	assert.Positive(t, engine.held, "requests reached the frozen engine")
	engine.mu.Unlock()
	assert.Equal(t, 1, containersOfRun(t, runID)(), "the container exists while the engine is frozen")

	recs, err := b.Inventory(ctx)
	require.NoError(t, err)
	require.Len(t, recs, 1, "the host is not forgotten")

	engine.thaw()
	require.NoError(t, b.CheckinRecords(ctx, recs...))
	assert.Equal(t, 0, containersOfRun(t, runID)())
	recs, err = b.Inventory(ctx)
	require.NoError(t, err)
	assert.Empty(t, recs)
}

// A checkout whose context ends while the engine creates its containers: a
// create call the provider gave up on completes after the provider's look
// by id, and the broker's second look checks that container in. Once Close
// has waited for the second looks, no container and no record is left.
func TestCheckoutCutShortLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	requireImage(t, sshdImage)
	for _, after := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
		t.Run(after.String(), func(t *testing.T) {
			runID := inventory.NewRunID()
			left := containersOfRun(t, runID)
			t.Cleanup(func() { removeContainersOfRun(runID) })
			b, err := broker.New(broker.WithDirectory(t.TempDir()), broker.WithRunID(runID), broker.WithReaper(false))
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), after)
			defer cancel()
			_, err = b.Checkout(ctx, broker.Request{Count: 3, Args: map[string]any{"container_host": sshdImage}})
			require.Error(t, err)
			require.NoError(t, b.Close())
			assert.Zero(t, left(), "containers left")
			recs, err := b.Store().Load(context.Background())
			require.NoError(t, err)
			assert.Empty(t, recs)
		})
	}
}
