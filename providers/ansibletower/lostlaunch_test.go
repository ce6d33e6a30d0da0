package ansibletower_test

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/ansibletower/awxtest"
)

// markerVar is the extra var a checkout's launch carries its id in.
const markerVar = "_broker_request_id"

// delayingProxy forwards every request to target at once, but gives the
// answers that match to the client only after delay, or never when the
// client gives up first.
func delayingProxy(t *testing.T, target string, delay time.Duration, match func(*http.Response) bool) *httptest.Server {
	t.Helper()
	u, err := url.Parse(target)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	rp.ModifyResponse = func(resp *http.Response) error {
		if match(resp) {
			tm := time.NewTimer(delay)
			defer tm.Stop()
			select {
			case <-tm.C:
			case <-resp.Request.Context().Done():
			}
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv
}

// isLaunch matches the answer to a launch (POST …/launch/): delayed, the
// job exists but the client does not learn its id.
func isLaunch(resp *http.Response) bool {
	return resp.Request.Method == http.MethodPost && strings.HasSuffix(resp.Request.URL.Path, "/launch/")
}

// intentRecord is what the broker keeps of a checkout under way: its id
// and the data the provider reported through Progress.
type intentRecord struct {
	mu  sync.Mutex
	rec *inventory.Record
}

func newIntent() *intentRecord {
	return &intentRecord{rec: &inventory.Record{Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateCreating, CheckedOut: time.Now().UTC().Truncate(time.Second), Data: map[string]any{}}}}
}

func (r *intentRecord) progress(data map[string]any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	maps.Copy(r.rec.Broker.Data, data)
}

func (r *intentRecord) data() map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.rec.Broker.Data)
}

// A launch whose answer comes too late (after the caller's deadline, or
// after request_timeout) still started its job: the checkout finds the job
// by the marker it sent, cancels it and checks in what it made, so no VM is
// left; the broker's check-in of the intent record then has nothing left
// to do. Two checkouts at once, as with Count=2.
func TestLaunchAnswerLost(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings map[string]any
		timeout  time.Duration
		logged   string
	}{
		{"caller deadline", nil, 1500 * time.Millisecond, ""},
		// remove-vm's launches answer late too: their jobs are waited for.
		{"request_timeout", map[string]any{"request_timeout": 1}, time.Minute, "waiting for it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, awxtest.Options{JobTime: 2 * time.Second})
			proxy := delayingProxy(t, e.Server.URL, 3*time.Second, isLaunch)
			settings := map[string]any{"base_url": proxy.URL, "workflow_poll_interval": 0.2}
			maps.Copy(settings, tc.settings)
			p := e.open(t, settings)

			const n = 2
			intents := make([]*intentRecord, n)
			errs := make([]error, n)
			var firstData []map[string]any
			var mu sync.Mutex
			var wg sync.WaitGroup
			for i := range n {
				intents[i] = newIntent()
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
					defer cancel()
					first := true
					_, errs[i] = p.Checkout(ctx, providers.CheckoutRequest{
						ID:   intents[i].rec.Broker.ID,
						Args: map[string]any{"workflow": "deploy-vm"},
						Progress: func(d map[string]any) {
							if first {
								mu.Lock()
								firstData = append(firstData, maps.Clone(d))
								mu.Unlock()
								first = false
							}
							intents[i].progress(d)
						},
					})
				})
			}
			wg.Wait()
			for i, err := range errs {
				require.Error(t, err)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Contains(t, err.Error(), "launch workflow \"deploy-vm\"")
				d := intents[i].data()
				assert.Equal(t, intents[i].rec.Broker.ID, d["launch_marker"], "the marker is the intent record's id")
				assert.Contains(t, d["api_url"], "/api/v2/workflow_jobs/", "the job found is reported")
			}
			for _, d := range firstData {
				assert.NotContains(t, d, "api_url", "the marker is recorded before the launch")
				assert.NotEmpty(t, d["launch_marker"])
			}
			assert.Empty(t, e.Server.HostNames(), "no VM is left at AWX")
			assert.Equal(t, 0, e.VMs.Running())
			jobs := e.Server.Jobs("deploy-vm")
			require.Len(t, jobs, n)
			for _, j := range jobs {
				assert.Equal(t, "canceled", j.Status)
				assert.NotEmpty(t, j.ExtraVars[markerVar])
			}
			assert.Contains(t, e.log.String(), "the launch's answer was lost but it started a job")
			// The cleanup launches remove-vm (whose answer is lost too, and
			// whose job is then waited for) only when the cancelled deploy
			// job had made a VM by then: how far it got in its first second
			// depends on the machine's load, so the log is checked when it
			// did. Either way no VM is left (above).
			if len(e.Server.Jobs("remove-vm")) > 0 {
				assert.Contains(t, e.log.String(), tc.logged)
			}

			// The broker checks the intent record in; it is resolved.
			for _, in := range intents {
				require.NoError(t, p.Checkin(ctxFor(t, time.Minute), in.rec))
			}
			assert.Equal(t, 0, e.VMs.Running())
			e.noSecrets(t)
		})
	}
}

// The record of a checkout whose launch was sent but never answered (its
// process died, or its own lookup failed) holds only the marker: check-in
// finds the job by it, cancels it and releases the VM it made. A marker no
// job carries, long after its launch, is nothing to do; an API that fails
// keeps the record (an error).
func TestCheckinLostLaunchRecord(t *testing.T) {
	e := newEnv(t, awxtest.Options{JobTime: 2 * time.Second})
	p := e.open(t, map[string]any{"workflow_poll_interval": 0.2})
	tmplID := templateID(t, e.Server, "deploy-vm")
	record := func(marker string, started time.Time) *inventory.Record {
		return &inventory.Record{Broker: &inventory.Meta{ID: marker, State: inventory.StateCreating, CheckedOut: started.Truncate(time.Second), Data: map[string]any{
			"launch_marker": marker, "launch_kind": "workflow", "launch_template_id": tmplID,
			"launch_started": started.UTC().Format(time.RFC3339Nano),
		}}}
	}

	id := inventory.NewID()
	rec := record(id, time.Now())
	launchRaw(t, e.Server, "deploy-vm", map[string]any{"vm_name": "orphan-3", markerVar: id})
	// Another checkout's job, launched at the same time, is left alone.
	launchRaw(t, e.Server, "deploy-vm", map[string]any{"vm_name": "bystander", markerVar: inventory.NewID()})
	time.Sleep(1200 * time.Millisecond) // the provision nodes have run
	require.Contains(t, e.Server.HostNames(), "orphan-3")
	require.NoError(t, p.Checkin(ctxFor(t, time.Minute), rec))
	assert.NotContains(t, e.Server.HostNames(), "orphan-3")
	jobs := e.Server.Jobs("deploy-vm")
	require.Len(t, jobs, 2)
	assert.Equal(t, "canceled", jobs[0].Status, "the running job was cancelled")
	assert.NotEqual(t, "canceled", jobs[1].Status, "another checkout's job runs on")
	require.NoError(t, p.Checkin(ctxFor(t, time.Minute), rec), "idempotent")
	assert.Equal(t, 1, e.Server.Launches("remove-vm"))
	assert.Contains(t, e.log.String(), "found the job of an unfinished checkout by its marker")

	start := time.Now()
	require.NoError(t, p.Checkin(ctxFor(t, time.Minute), record(inventory.NewID(), time.Now().Add(-time.Hour))), "no job carries the marker")
	assert.Less(t, time.Since(start), 2*time.Second, "a launch long past is looked for once")

	failing := e.open(t, map[string]any{"max_resilient_wait": 1})
	e.Server.FailFor(3*time.Second, http.StatusServiceUnavailable)
	err := failing.Checkin(ctxFor(t, time.Minute), record(inventory.NewID(), time.Now().Add(-time.Hour)))
	require.Error(t, err, "the job may exist: the record must stay")
	assert.Contains(t, err.Error(), "503")
	assert.Contains(t, err.Error(), markerVar)
}

// templateID finds a workflow template's id over plain HTTP.
func templateID(t *testing.T, s *awxtest.Server, name string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", s.URL+s.APIPrefix()+"workflow_job_templates/?name="+url.QueryEscape(name), nil)
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var list struct {
		Results []struct {
			ID int `json:"id"`
		} `json:"results"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	require.Len(t, list.Results, 1)
	return list.Results[0].ID
}
