package ansibletower_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/internal/leakcheck"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/ansibletower"
	"github.com/hostbroker/broker/providers/ansibletower/awxtest"
	"github.com/hostbroker/broker/providers/providertest"
)

func checkout(t *testing.T, p *ansibletower.Provider, args map[string]any) *inventory.Record {
	t.Helper()
	id := inventory.NewID()
	res, err := p.Checkout(ctxFor(t, time.Minute), providers.CheckoutRequest{ID: id, Args: args})
	require.NoError(t, err)
	return res.Record(id)
}

// A checked-out VM is reachable over SSH with the user's key and a
// verified host key; check-in runs remove-vm and the VM is gone.
func TestCheckoutExecuteCheckin(t *testing.T) {
	leakcheck.Check(t)
	e := newEnv(t, awxtest.Options{})
	p := e.open(t, nil)
	assert.Equal(t, "/api/v2/", p.APIPath())
	assert.Equal(t, e.Server.Username, p.Username(), "username from /me/")

	rec := checkout(t, p, map[string]any{"workflow": "deploy-vm", "template": "rhel-9"})
	assert.Equal(t, "127.0.0.1", rec.Hostname)
	assert.Contains(t, rec.Name, "admin-vm-")
	assert.Equal(t, "rhel-9", rec.Facts["template"], "facts from _broker_facts")
	assert.Equal(t, "deploy-vm", rec.Args["workflow"])
	assert.Equal(t, "admin VMs", rec.Extra["tower_inventory"])
	require.NotNil(t, rec.Broker)
	assert.Contains(t, rec.Broker.Data["ui_url"], "/#/jobs/workflow/")
	assert.Contains(t, rec.Broker.Data["api_url"], "/api/v2/workflow_jobs/")
	assert.Contains(t, e.log.String(), rec.Broker.Data["ui_url"].(string), "the job's UI URL is logged")
	assert.Equal(t, []string{rec.Name}, e.Server.HostNames())

	h, err := p.Connect(ctxFor(t, time.Minute), rec)
	require.NoError(t, err)
	res, err := h.Execute(ctxFor(t, time.Minute), "echo out; echo err >&2; exit 3")
	require.NoError(t, err)
	assert.Equal(t, 3, res.Status)
	assert.Equal(t, "out\n", res.Stdout)
	assert.Equal(t, "err\n", res.Stderr)
	require.NoError(t, h.Close())

	require.NoError(t, p.Checkin(ctxFor(t, time.Minute), rec))
	assert.Empty(t, e.Server.HostNames())
	assert.Equal(t, 0, e.VMs.Running())
	assert.Equal(t, 1, e.Server.Launches("remove-vm"))
	e.noSecrets(t)
}

// The provider keeps the contract every provider keeps.
func TestConformance(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	providertest.Run(t, func(t *testing.T) providers.Provider { return e.open(t, nil) }, providertest.Options{
		Args:               map[string]any{"workflow": "deploy-vm"},
		BadArgs:            map[string]any{"workflow": "no-such-workflow"},
		BadArgsMention:     "no-such-workflow",
		Count:              3,
		Driver:             ansibletower.Driver{},
		Config:             e.config(t, nil),
		BadSettings:        map[string]any{"base_url": "ftp://tower.invalid"},
		BadSettingsMention: "base_url",
		Secrets:            []string{e.Server.Token, e.Server.Password},
		Exists: func(_ context.Context, rec *inventory.Record) (bool, error) {
			names := e.Server.HostNames()
			if rec.Name == "" {
				// An intent record names no VM; the checks run one at a
				// time, so any VM left is the one it made.
				return len(names) > 0, nil
			}
			return slices.Contains(names, rec.Name), nil
		},
	})
}

// AAP 2.5+ serves the controller under /api/controller/v2/ behind a
// gateway: detected from /api/, or forced by a setting.
func TestAAP25(t *testing.T) {
	e := newEnv(t, awxtest.Options{AAP25: true})
	p := e.open(t, nil)
	assert.Equal(t, "/api/controller/v2/", p.APIPath())
	rec := checkout(t, p, map[string]any{"workflow": "deploy-vm"})
	assert.Contains(t, rec.Broker.Data["ui_url"], "/execution/jobs/workflow/")
	assert.Contains(t, rec.Broker.Data["api_url"], "/api/controller/v2/workflow_jobs/")
	require.NoError(t, p.Checkin(ctxFor(t, time.Minute), rec))

	forced := e.open(t, map[string]any{"aap_version": "2.5"})
	assert.Equal(t, "/api/controller/v2/", forced.APIPath())
	byPath := e.open(t, map[string]any{"api_path": "/api/controller/v2"})
	assert.Equal(t, "/api/controller/v2/", byPath.APIPath())
	// Password login goes through the gateway's login page.
	pw := e.open(t, map[string]any{"token": nil, "username": e.Server.Username, "password": e.Server.Password})
	rec = checkout(t, pw, map[string]any{"workflow": "deploy-vm"})
	require.NoError(t, pw.Checkin(ctxFor(t, time.Minute), rec))

	old := newEnv(t, awxtest.Options{})
	wrong, err := ansibletower.Open(ctxFor(t, time.Minute), old.config(t, map[string]any{"aap_version": "2.5"}))
	if err == nil {
		_, err = wrong.Describe(ctxFor(t, time.Minute), "")
	}
	require.Error(t, err, "forcing the AAP 2.5 path on an AWX server fails")
	assert.Contains(t, err.Error(), "/api/controller/v2/")
}

// A password login finds its session cookie by the name the login's
// redirect gives (AWX ≥ 20.0.1: awx_sessionid), else by the names AWX and
// AAP use.
func TestPasswordLoginCookieNames(t *testing.T) {
	for _, name := range []string{"", "sessionid", "site_sessionid"} {
		t.Run("cookie "+name, func(t *testing.T) {
			e := newEnv(t, awxtest.Options{SessionCookie: name})
			p := e.open(t, map[string]any{"token": nil, "username": e.Server.Username, "password": e.Server.Password})
			rec := checkout(t, p, map[string]any{"workflow": "deploy-vm"})
			require.NoError(t, p.Checkin(ctxFor(t, time.Minute), rec))
		})
	}
}

// A launch carries what the Python broker's do: JSON-looking string args as
// structures, _broker_origin, and _broker_extra_vars with the arguments the
// template does not define.
func TestLaunchVars(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	p := e.open(t, nil)
	t.Setenv("BUILD_URL", "https://ci.example.test/job/7/")
	rec := checkout(t, p, map[string]any{"workflow": "deploy-vm", "template": "debian-12", "zone": "b", "size": `{"cpu": 2}`})
	require.NoError(t, p.Checkin(ctxFor(t, time.Minute), rec))
	jobs := e.Server.Jobs("deploy-vm")
	require.NotEmpty(t, jobs)
	vars := jobs[len(jobs)-1].ExtraVars
	assert.Equal(t, map[string]any{"cpu": float64(2)}, vars["size"])
	assert.NotEmpty(t, vars["_broker_origin"])
	assert.Equal(t, "https://ci.example.test/job/7/", vars["_jenkins_url"])
	custom, _ := vars["_broker_extra_vars"].(map[string]any)
	assert.Contains(t, custom, "zone")
	assert.Contains(t, custom, "size")
	assert.NotContains(t, custom, "template", "deploy-vm defines template")
}

// provider_labels become the launch's labels, as the Python broker's: the
// setting's over the argument's, "key=value" each, made in the template's
// organization once and found there afterwards.
func TestProviderLabels(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	p := e.open(t, map[string]any{"provider_labels": map[string]any{"team": "qa"}})
	for range 2 {
		rec := checkout(t, p, map[string]any{"workflow": "deploy-vm", "provider_labels": map[string]string{"owner": "ci", "plain": ""}})
		require.NoError(t, p.Checkin(ctxFor(t, time.Minute), rec))
	}
	jobs := e.Server.Jobs("deploy-vm")
	require.Len(t, jobs, 2)
	for _, j := range jobs {
		assert.Equal(t, []string{"owner=ci", "plain", "team=qa"}, j.Labels)
		assert.Equal(t, map[string]any{"owner": "ci", "plain": "", "team": "qa"}, j.ExtraVars["provider_labels"])
	}
	_, err := ansibletower.Open(ctxFor(t, time.Minute), e.config(t, map[string]any{"provider_labels": "team=qa"}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "provider_labels")
}

func TestOpenErrors(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	cases := []struct {
		name     string
		settings map[string]any
		want     []string
	}{
		{"no base_url", map[string]any{"base_url": nil}, []string{"AnsibleTower::test.base_url is missing"}},
		{"bad base_url", map[string]any{"base_url": "tower.example.com"}, []string{"base_url", "tower.example.com", "http://"}},
		{"no credentials", map[string]any{"token": nil}, []string{"no credentials", "BROKER_AnsibleTower__token"}},
		{"bad timeout", map[string]any{"workflow_timeout": "soon"}, []string{"workflow_timeout", `"soon"`, "seconds"}},
		{"bad error_scope", map[string]any{"error_scope": "some"}, []string{"error_scope", "last or all"}},
		{"wrong token", map[string]any{"token": "tok-wrong-0123456789"}, []string{"401", "BROKER_AnsibleTower__token"}},
		{"wrong password", map[string]any{"token": nil, "username": "admin", "password": "wrong-pw-42"}, []string{"log in as \"admin\"", "wrong username or password"}},
		{"nothing listening", map[string]any{"base_url": "http://127.0.0.1:1", "request_timeout": 2, "max_resilient_wait": 0.3}, []string{"GET /api/", "127.0.0.1:1", "max_resilient_wait"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ansibletower.Open(ctxFor(t, time.Minute), e.config(t, c.settings))
			require.Error(t, err)
			for _, w := range c.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), "tok-wrong-0123456789")
			assert.NotContains(t, err.Error(), "wrong-pw-42")
			e.noSecrets(t, err.Error())
		})
	}
}

func TestTemplateErrors(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	e.Server.AddWorkflow(awxtest.Workflow{Name: "admins-only", NotStartable: true})
	p := e.open(t, nil)
	ctx := ctxFor(t, time.Minute)

	_, err := p.Checkout(ctx, providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"workflow": "deploy-rhel"}})
	require.ErrorIs(t, err, ansibletower.ErrNotFound)
	assert.Contains(t, err.Error(), `workflow "deploy-rhel"`)
	assert.Contains(t, err.Error(), "user admin")

	_, err = p.Checkout(ctx, providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"job_template": "deploy-vm"}})
	require.ErrorIs(t, err, ansibletower.ErrNotFound, "a workflow is not a job template")

	_, err = p.Checkout(ctx, providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"workflow": "admins-only"}})
	require.ErrorIs(t, err, ansibletower.ErrNotStartable)

	_, err = p.Checkout(ctx, providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"template": "x"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no workflow or job_template argument")

	_, err = p.Checkout(ctx, providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"workflow": "deploy-vm", "inventory": "nowhere"}})
	require.ErrorIs(t, err, ansibletower.ErrNotFound)
	assert.Contains(t, err.Error(), `inventory "nowhere"`)
	assert.Equal(t, 0, e.Server.Launches("deploy-vm"), "nothing launched for bad requests")
}

// A failed workflow's error names the failed node, its task and message;
// the VM its first node made is checked in, not leaked.
func TestFailedWorkflow(t *testing.T) {
	leakcheck.Check(t)
	e := newEnv(t, awxtest.Options{})
	p := e.open(t, nil)
	_, err := p.Checkout(ctxFor(t, time.Minute), providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{
		"workflow": "deploy-vm", "fail_at": "finalize", "fail_msg": "quota exceeded in zone b",
	}})
	var jerr *ansibletower.JobError
	require.ErrorAs(t, err, &jerr)
	assert.Equal(t, "failed", jerr.Status)
	require.Len(t, jerr.Failures, 1)
	assert.Equal(t, ansibletower.Failure{Job: "finalize vm", Status: "failed", Task: "finalize vm", Reason: "quota exceeded in zone b"}, jerr.Failures[0])
	assert.Contains(t, err.Error(), "quota exceeded in zone b")
	assert.Contains(t, err.Error(), "/#/jobs/workflow/")
	assert.Empty(t, e.Server.HostNames(), "the dangling VM was checked in")
	assert.Equal(t, 0, e.VMs.Running())
	assert.Equal(t, 1, e.Server.Launches("remove-vm"))

	// An errored job reports its traceback.
	_, err = p.Checkout(ctxFor(t, time.Minute), providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"workflow": "deploy-vm", "error_at": "provision"}})
	require.ErrorAs(t, err, &jerr)
	require.Len(t, jerr.Failures, 1)
	assert.Equal(t, "error", jerr.Failures[0].Status)
	assert.Contains(t, jerr.Failures[0].Reason, "Traceback")
	assert.Contains(t, jerr.Failures[0].Reason, "simulated error in provision")
	assert.Empty(t, e.Server.HostNames())

	// dangling_behavior: store keeps the VM and names it.
	store := e.open(t, map[string]any{"dangling_behavior": "store"})
	_, err = store.Checkout(ctxFor(t, time.Minute), providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"workflow": "deploy-vm", "fail_at": "finalize"}})
	require.ErrorAs(t, err, &jerr)
	require.Len(t, jerr.Dangling, 1)
	assert.Equal(t, []string{jerr.Dangling[0]}, e.Server.HostNames())
	assert.Contains(t, err.Error(), jerr.Dangling[0])
}

// A workflow's failed project or inventory sync node is reported from its
// events (not job_events, which such jobs do not have).
func TestFailedSyncNode(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	for _, kind := range []string{"project_update", "inventory_update"} {
		e.Server.AddWorkflow(awxtest.Workflow{Name: "sync-" + kind, Nodes: []awxtest.Node{{
			Name: "sync " + kind, Kind: kind,
			Run: func(context.Context, *awxtest.Run) error {
				return &awxtest.TaskFailure{Task: "update source", Msg: "repository unreachable for " + kind}
			},
		}}})
	}
	p := e.open(t, nil)
	for _, kind := range []string{"project_update", "inventory_update"} {
		_, err := p.Execute(ctxFor(t, time.Minute), map[string]any{"workflow": "sync-" + kind})
		var jerr *ansibletower.JobError
		require.ErrorAs(t, err, &jerr, kind)
		require.Len(t, jerr.Failures, 1, kind)
		assert.Equal(t, ansibletower.Failure{Job: "sync " + kind, Status: "failed", Task: "update source", Reason: "repository unreachable for " + kind}, jerr.Failures[0])
	}
}

// error_scope: all reports every failed node, newest first.
func TestErrorScopeAll(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	fail := func(task, msg string) func(context.Context, *awxtest.Run) error {
		return func(context.Context, *awxtest.Run) error { return &awxtest.TaskFailure{Task: task, Msg: msg} }
	}
	e.Server.AddWorkflow(awxtest.Workflow{Name: "two-failures", JobTemplate: true, Nodes: []awxtest.Node{{Name: "check", Run: fail("check disk", "disk full")}}})
	p := e.open(t, map[string]any{"error_scope": "all"})
	_, err := p.Execute(ctxFor(t, time.Minute), map[string]any{"job_template": "two-failures"})
	var jerr *ansibletower.JobError
	require.ErrorAs(t, err, &jerr)
	assert.Equal(t, "job_template", jerr.Kind)
	assert.Contains(t, jerr.URL, "/#/jobs/playbook/")
	require.Len(t, jerr.Failures, 1)
	assert.Equal(t, "check disk", jerr.Failures[0].Task)
	assert.Equal(t, "disk full", jerr.Failures[0].Reason)
}

// A server that returns 502 and drops connections for a while, mid-job:
// the checkout waits it out. Past max_resilient_wait it fails, saying so.
func TestResilientWait(t *testing.T) {
	leakcheck.Check(t)
	e := newEnv(t, awxtest.Options{JobTime: 2 * time.Second})
	p := e.open(t, map[string]any{"workflow_poll_interval": 0.2})
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(500 * time.Millisecond)
		e.Server.FailFor(800*time.Millisecond, http.StatusBadGateway)
		time.Sleep(900 * time.Millisecond)
		e.Server.DropFor(600 * time.Millisecond)
	}()
	rec := checkout(t, p, map[string]any{"workflow": "deploy-vm"})
	<-done
	assert.NotEmpty(t, rec.Hostname)
	assert.Contains(t, e.log.String(), "API unavailable; retrying")
	require.NoError(t, p.Checkin(ctxFor(t, time.Minute), rec))

	short := e.open(t, map[string]any{"max_resilient_wait": 0.5, "workflow_poll_interval": 0.2})
	go func() {
		time.Sleep(300 * time.Millisecond)
		e.Server.FailFor(5*time.Second, http.StatusServiceUnavailable)
	}()
	_, err := short.Checkout(ctxFor(t, time.Minute), providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"workflow": "deploy-vm"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "503")
	assert.Contains(t, err.Error(), "max_resilient_wait")
	time.Sleep(5 * time.Second) // let the server recover and the job finish
}

func TestWorkflowTimeout(t *testing.T) {
	e := newEnv(t, awxtest.Options{JobTime: 3 * time.Second})
	p := e.open(t, map[string]any{"workflow_timeout": 0.5})
	start := time.Now()
	_, err := p.Checkout(ctxFor(t, time.Minute), providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"workflow": "deploy-vm"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "workflow_timeout")
	assert.Less(t, time.Since(start), 2500*time.Millisecond)
}

// A login session that expires in the middle of 20 concurrent checkouts is
// renewed once, and every checkout succeeds.
func TestSessionExpiresMidRun(t *testing.T) {
	leakcheck.Check(t)
	e := newEnv(t, awxtest.Options{JobTime: time.Second})
	p := e.open(t, map[string]any{"token": nil, "username": e.Server.Username, "password": e.Server.Password, "workflow_poll_interval": 0.3})
	go func() {
		time.Sleep(600 * time.Millisecond)
		e.Server.ExpireSessions()
	}()
	recs := checkoutMany(t, p, 20)
	assert.Len(t, e.Server.HostNames(), 20)
	logins := 0
	for _, r := range e.Server.Requests() {
		if strings.HasPrefix(r, "POST /api/login/") {
			logins++
		}
	}
	assert.Equal(t, 2, logins, "one login at open, one after the session expired")
	assert.Contains(t, e.log.String(), "authentication expired")
	checkinMany(t, p, recs)
	assert.Empty(t, e.Server.HostNames())
	e.noSecrets(t)
}

// A revoked token cannot be renewed: the error says 401 and what to check.
func TestTokenRevoked(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	p := e.open(t, nil)
	e.Server.RevokeTokens()
	_, err := p.Checkout(ctxFor(t, time.Minute), providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"workflow": "deploy-vm"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "401")
	assert.Contains(t, err.Error(), "token")
	e.noSecrets(t, err.Error())
}

func checkoutMany(t *testing.T, p *ansibletower.Provider, n int) []*inventory.Record {
	t.Helper()
	return checkoutManyB(t, p, n)
}

func checkoutManyB(t testing.TB, p *ansibletower.Provider, n int) []*inventory.Record {
	t.Helper()
	recs := make([]*inventory.Record, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := inventory.NewID()
			var res providers.CheckoutResult
			res, errs[i] = p.Checkout(ctxFor(t, 2*time.Minute), providers.CheckoutRequest{ID: id, Args: map[string]any{"workflow": "deploy-vm"}})
			if errs[i] == nil {
				recs[i] = res.Record(id)
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	return recs
}

func checkinMany(t *testing.T, p *ansibletower.Provider, recs []*inventory.Record) {
	t.Helper()
	checkinManyB(t, p, recs)
}

func checkinManyB(t testing.TB, p *ansibletower.Provider, recs []*inventory.Record) {
	t.Helper()
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	for i, r := range recs {
		wg.Go(func() { errs[i] = p.Checkin(ctxFor(t, 2*time.Minute), r) })
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
}

// 20 concurrent checkouts take about one job's time, and every host
// answers over SSH.
func TestCount20Concurrent(t *testing.T) {
	e := newEnv(t, awxtest.Options{JobTime: time.Second})
	p := e.open(t, nil)
	start := time.Now()
	recs := checkoutMany(t, p, 20)
	t.Logf("20 checkouts in %s, %d API requests", time.Since(start), p.Requests())
	names := map[string]bool{}
	for _, r := range recs {
		names[r.Name] = true
		h, err := p.Connect(ctxFor(t, time.Minute), r)
		require.NoError(t, err)
		res, err := h.Execute(ctxFor(t, time.Minute), "echo "+r.Name)
		require.NoError(t, err)
		assert.Equal(t, r.Name+"\n", res.Stdout)
		require.NoError(t, h.Close())
	}
	assert.Len(t, names, 20, "20 distinct VMs")
	assert.Equal(t, 20, e.Server.Launches("deploy-vm"))
	checkinMany(t, p, recs)
	assert.Empty(t, e.Server.HostNames())
	assert.Equal(t, 0, e.VMs.Running())
}

func TestExtend(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	p := e.open(t, nil)
	rec := checkout(t, p, map[string]any{"workflow": "deploy-vm"})
	require.NoError(t, p.Extend(ctxFor(t, time.Minute), rec, nil))
	assert.Equal(t, "+172800", e.Server.HostFacts(rec.Name)["expire_time"])
	require.NoError(t, p.Extend(ctxFor(t, time.Minute), rec, map[string]any{"new_expire_time": "+3600"}))
	assert.Equal(t, "+3600", e.Server.HostFacts(rec.Name)["expire_time"])
	require.NoError(t, p.Checkin(ctxFor(t, time.Minute), rec))
	err := p.Extend(ctxFor(t, time.Minute), rec, nil)
	require.Error(t, err, "extending a removed VM fails")
	assert.Contains(t, err.Error(), "not found")
}

// Execute returns artifacts merged across nodes or from the last node.
func TestExecuteArtifacts(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	set := func(a map[string]any) func(context.Context, *awxtest.Run) error {
		return func(_ context.Context, r *awxtest.Run) error {
			for k, v := range a {
				r.Artifacts[k] = v
			}
			return nil
		}
	}
	e.Server.AddWorkflow(awxtest.Workflow{Name: "list-things", Nodes: []awxtest.Node{
		{Name: "one", Run: set(map[string]any{"a": 1.0, "data_out": map[string]any{"x": "1"}})},
		{Name: "two", Run: set(map[string]any{"b": 2.0, "data_out": map[string]any{"y": "2"}})},
	}})
	p := e.open(t, nil)
	got, err := p.Execute(ctxFor(t, time.Minute), map[string]any{"workflow": "list-things", "artifacts": "merge"})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"a": 1.0, "b": 2.0, "data_out": map[string]any{"x": "1", "y": "2"}}, got)
	got, err = p.Execute(ctxFor(t, time.Minute), map[string]any{"workflow": "list-things", "artifacts": "last"})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"b": 2.0, "data_out": map[string]any{"y": "2"}}, got)
	got, err = p.Execute(ctxFor(t, time.Minute), map[string]any{"workflow": "list-things"})
	require.NoError(t, err)
	assert.Equal(t, "successful", got.(map[string]any)["status"])
	assert.Empty(t, e.Server.HostNames(), "Execute makes no host")
}

func TestDescribe(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	e.Server.AddWorkflow(awxtest.Workflow{Name: "admins-only", NotStartable: true})
	p := e.open(t, nil)
	all, err := p.Describe(ctxFor(t, time.Minute), "")
	require.NoError(t, err)
	assert.Contains(t, all, "deploy-vm")
	assert.NotContains(t, all, "admins-only", "only what the user may start")
	assert.Contains(t, all, "admin VMs")
	one, err := p.Describe(ctxFor(t, time.Minute), "deploy-vm")
	require.NoError(t, err)
	assert.Contains(t, one, "template: debian-12")
	assert.Contains(t, one, "inventory: admin VMs")
	_, err = p.Describe(ctxFor(t, time.Minute), "workflow:nope")
	require.ErrorIs(t, err, ansibletower.ErrNotFound)
}

// Sync pages through more than 200 hosts and reads each one's facts.
func TestSyncPaging(t *testing.T) {
	e := newEnv(t, awxtest.Options{})
	const n = 450
	for i := range n {
		_, err := e.Server.AddHost("admin VMs", fmt.Sprintf("vm-%03d", i),
			map[string]any{"fqdn": fmt.Sprintf("vm-%03d.example.test", i), "ansible_host": fmt.Sprintf("10.0.%d.%d", i/250, i%250)},
			map[string]any{"_broker_args": map[string]any{"workflow": "deploy-vm", "n": float64(i)}, "_broker_facts": map[string]any{"os": "debian"}})
		require.NoError(t, err)
	}
	e.Server.AddInventory("someone-else VMs", "")
	_, err := e.Server.AddHost("someone-else VMs", "other", map[string]any{"fqdn": "other.example.test"}, nil)
	require.NoError(t, err)
	p := e.open(t, nil)
	recs, err := p.Sync(ctxFor(t, time.Minute), "")
	require.NoError(t, err)
	require.Len(t, recs, n)
	byName := map[string]*inventory.Record{}
	for _, r := range recs {
		byName[r.Name] = r
	}
	r := byName["vm-321"]
	require.NotNil(t, r)
	assert.Equal(t, "vm-321.example.test", r.Hostname)
	assert.Equal(t, "10.0.1.71", r.IP)
	assert.Equal(t, 321.0, r.Args["n"])
	assert.Equal(t, "admin VMs", r.Extra["tower_inventory"])
	pages := 0
	for _, q := range e.Server.Requests() {
		if strings.Contains(q, "/hosts/?") {
			pages++
			assert.Contains(t, q, "page_size=200")
		}
	}
	assert.Equal(t, 3, pages, "450 hosts in pages of 200")

	everyone, err := p.Sync(ctxFor(t, time.Minute), "@ll")
	require.NoError(t, err)
	assert.Len(t, everyone, n+1)
	other, err := p.Sync(ctxFor(t, time.Minute), "someone-else")
	require.NoError(t, err)
	require.Len(t, other, 1)
	assert.Equal(t, "other.example.test", other[0].Hostname)
}

// A checkout cancelled while its workflow runs cancels the job and checks in
// the VM its first node had made.
func TestCheckoutCancelledMidWorkflow(t *testing.T) {
	leakcheck.Check(t)
	e := newEnv(t, awxtest.Options{JobTime: 2 * time.Second})
	p := e.open(t, map[string]any{"workflow_poll_interval": 0.2})
	ctx, cancel := context.WithCancel(context.Background())
	var progress map[string]any
	go func() {
		// The first node (provision) ends at 1 s; cancel in the second.
		time.Sleep(1500 * time.Millisecond)
		cancel()
	}()
	_, err := p.Checkout(ctx, providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"workflow": "deploy-vm"},
		Progress: func(d map[string]any) { progress = d }})
	require.ErrorIs(t, err, context.Canceled)
	require.NotNil(t, progress, "the launched job was reported")
	assert.Contains(t, progress["api_url"], "/api/v2/workflow_jobs/")
	assert.Empty(t, e.Server.HostNames(), "the VM made before the cancel was checked in")
	assert.Equal(t, 0, e.VMs.Running())
	assert.Equal(t, 1, e.Server.Launches("remove-vm"))
	assert.Contains(t, e.log.String(), "cancelling the job of an unfinished checkout")
}

// The record of a checkout whose process died mid-workflow (no VM name,
// only the launched job) is checked in through that job.
func TestCheckinUnfinishedRecord(t *testing.T) {
	e := newEnv(t, awxtest.Options{JobTime: 2 * time.Second})
	p := e.open(t, map[string]any{"workflow_poll_interval": 0.2})
	// Another process launched the workflow and died: only its job is
	// known, recorded by the checkout's progress in the inventory.
	code := launchRaw(t, e.Server, "deploy-vm", map[string]any{"vm_name": "orphan-2"})
	rec := &inventory.Record{Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateCreating, Data: map[string]any{"api_url": e.Server.URL + code}}}
	time.Sleep(1200 * time.Millisecond) // the provision node has run
	require.Contains(t, e.Server.HostNames(), "orphan-2")
	require.NoError(t, p.Checkin(ctxFor(t, time.Minute), rec))
	assert.NotContains(t, e.Server.HostNames(), "orphan-2")
	require.NoError(t, p.Checkin(ctxFor(t, time.Minute), rec), "idempotent")
	require.NoError(t, p.Checkin(ctxFor(t, time.Minute), &inventory.Record{Broker: &inventory.Meta{ID: "x"}}), "nothing known, nothing to do")
}

// launchRaw launches a workflow over plain HTTP and returns the job's path.
func launchRaw(t *testing.T, s *awxtest.Server, name string, vars map[string]any) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	get := func(path string, out any) {
		req, _ := http.NewRequest("GET", s.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+s.Token)
		resp, err := c.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
	}
	var list struct {
		Results []struct {
			Related struct{ Launch string } `json:"related"`
		} `json:"results"`
	}
	get(s.APIPrefix()+"workflow_job_templates/?name="+name, &list)
	require.Len(t, list.Results, 1)
	body, _ := json.Marshal(map[string]any{"extra_vars": vars})
	req, _ := http.NewRequest("POST", s.URL+list.Results[0].Related.Launch, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var j struct{ URL string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&j))
	require.NotEmpty(t, j.URL)
	return j.URL
}
