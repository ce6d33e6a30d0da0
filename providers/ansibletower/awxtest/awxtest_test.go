package awxtest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/providers/ansibletower/awxtest"
)

// call makes one request with the server's token and decodes the JSON answer.
func call(t *testing.T, s *awxtest.Server, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = strings.NewReader(string(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != io.EOF { // EOF: an empty answer, as a 202
		require.NoError(t, err, "%s %s", method, path)
	}
	return resp.StatusCode, out
}

func TestRootAndVersions(t *testing.T) {
	s := awxtest.Start(t, awxtest.Options{})
	code, root := call(t, s, "GET", "/api/", nil)
	assert.Equal(t, 200, code)
	assert.Equal(t, "/api/v2/", root["current_version"])
	assert.Equal(t, map[string]any{"v2": "/api/v2/"}, root["available_versions"])

	aap := awxtest.Start(t, awxtest.Options{AAP25: true})
	_, root = call(t, aap, "GET", "/api/", nil)
	assert.Nil(t, root["available_versions"], "AAP 2.5's /api/ is the gateway's")
	assert.Equal(t, "/api/controller/", root["apis"].(map[string]any)["controller"])
	_, ctrl := call(t, aap, "GET", "/api/controller/", nil)
	assert.Equal(t, "/api/controller/v2/", ctrl["current_version"])
	code, _ = call(t, aap, "GET", "/api/v2/me/", nil)
	assert.Equal(t, 404, code, "no /api/v2/ behind the gateway")
}

// Lists page as AWX does: count, next and previous links carrying the
// query, page_size capped at 200, 404 past the last page.
func TestPaging(t *testing.T) {
	s := awxtest.Start(t, awxtest.Options{NoCatalog: true})
	for i := range 230 {
		_, err := s.AddHost("Demo Inventory", fmt.Sprintf("h%03d", i), map[string]any{"fqdn": fmt.Sprintf("h%03d.example.test", i)}, nil)
		require.NoError(t, err)
	}
	_, p1 := call(t, s, "GET", "/api/v2/hosts/", nil)
	assert.EqualValues(t, 230, p1["count"])
	assert.Len(t, p1["results"], 25, "default page size")
	assert.Nil(t, p1["previous"])
	assert.Equal(t, "/api/v2/hosts/?page=2", p1["next"])

	_, big := call(t, s, "GET", "/api/v2/hosts/?page_size=1000", nil)
	assert.Len(t, big["results"], 200, "page_size is capped at 200")
	next := big["next"].(string)
	assert.Contains(t, next, "page_size=1000")
	_, last := call(t, s, "GET", next, nil)
	assert.Len(t, last["results"], 30)
	assert.Nil(t, last["next"])
	assert.NotNil(t, last["previous"])
	code, _ := call(t, s, "GET", "/api/v2/hosts/?page_size=200&page=3", nil)
	assert.Equal(t, 404, code)
	for _, bad := range []string{"0", "-3", "many"} {
		code, p := call(t, s, "GET", "/api/v2/hosts/?page_size="+bad, nil)
		assert.Equal(t, 200, code, "page_size=%s", bad)
		assert.Len(t, p["results"], 25, "page_size=%s gives the default, as DRF's", bad)
	}

	_, one := call(t, s, "GET", "/api/v2/hosts/?name=h042", nil)
	require.EqualValues(t, 1, one["count"])
	h := one["results"].([]any)[0].(map[string]any)
	assert.Equal(t, "fqdn: \"h042.example.test\"\n", h["variables"], "variables are the text the user gave")
	assert.Contains(t, h["related"].(map[string]any)["ansible_facts"], "/ansible_facts/")
}

func TestAuthentication(t *testing.T) {
	s := awxtest.Start(t, awxtest.Options{})
	resp, err := http.Get(s.URL + "/api/v2/me/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, 401, resp.StatusCode)
	assert.Contains(t, string(body), "Authentication credentials were not provided")

	// Basic auth.
	req, _ := http.NewRequest("GET", s.URL+"/api/v2/me/", nil)
	req.SetBasicAuth(s.Username, s.Password)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)

	// Session login with CSRF, as awxkit does; POSTs need the CSRF header.
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = c.Get(s.URL + "/api/login/")
	require.NoError(t, err)
	resp.Body.Close()
	u, _ := url.Parse(s.URL)
	var csrf string
	for _, ck := range jar.Cookies(u) {
		if ck.Name == "csrftoken" {
			csrf = ck.Value
		}
	}
	require.NotEmpty(t, csrf)
	form := url.Values{"username": {s.Username}, "password": {s.Password}, "next": {"/api/v2/"}}
	req, _ = http.NewRequest("POST", s.URL+"/api/login/", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-CSRFToken", csrf)
	resp, err = c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusFound, resp.StatusCode)
	assert.Equal(t, "awx_sessionid", resp.Header.Get("X-API-Session-Cookie-Name"), "AWX names its session cookie")
	resp, err = c.Get(s.URL + "/api/v2/me/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode, "the session cookie authenticates")
	resp, err = c.Post(s.URL+"/api/v2/workflow_job_templates/1/launch/", "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 403, resp.StatusCode, "no CSRF header")
	s.ExpireSessions()
	resp, err = c.Get(s.URL + "/api/v2/me/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 401, resp.StatusCode)
}

// A launch answers 201 with the new job; the workflow job's nodes, jobs and
// failed events read as in AWX.
func TestLaunchAndFollow(t *testing.T) {
	s := awxtest.Start(t, awxtest.Options{JobTime: 100 * time.Millisecond})
	_, list := call(t, s, "GET", "/api/v2/workflow_job_templates/?name=deploy-vm", nil)
	require.EqualValues(t, 1, list["count"])
	wf := list["results"].([]any)[0].(map[string]any)
	launch := wf["related"].(map[string]any)["launch"].(string)
	// extra_vars may come as a JSON string, as the Python broker sends them.
	code, j := call(t, s, "POST", launch, map[string]any{"extra_vars": `{"fail_at": "finalize", "fail_msg": "no capacity"}`})
	require.Equal(t, 201, code)
	assert.Equal(t, "workflow_job", j["type"])
	assert.Equal(t, j["id"], j["workflow_job"])
	jobURL := j["url"].(string)
	var status string
	for range 100 {
		_, j = call(t, s, "GET", jobURL, nil)
		if status = j["status"].(string); status == "failed" || status == "successful" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	assert.Equal(t, "failed", status)
	assert.Equal(t, true, j["failed"])
	_, nodes := call(t, s, "GET", j["related"].(map[string]any)["workflow_nodes"].(string), nil)
	require.EqualValues(t, 2, nodes["count"])
	second := nodes["results"].([]any)[1].(map[string]any)
	sj := second["summary_fields"].(map[string]any)["job"].(map[string]any)
	assert.Equal(t, "failed", sj["status"])
	_, job := call(t, s, "GET", second["related"].(map[string]any)["job"].(string), nil)
	_, events := call(t, s, "GET", job["related"].(map[string]any)["job_events"].(string)+"?failed=true", nil)
	require.EqualValues(t, 1, events["count"])
	ev := events["results"].([]any)[0].(map[string]any)
	assert.Equal(t, "runner_on_failed", ev["event"])
	assert.Equal(t, "no capacity", ev["event_data"].(map[string]any)["res"].(map[string]any)["msg"])
	first := nodes["results"].([]any)[0].(map[string]any)
	_, pj := call(t, s, "GET", first["related"].(map[string]any)["job"].(string), nil)
	assert.NotEmpty(t, pj["artifacts"].(map[string]any)["vm_name"], "the first node made a VM")

	s.AddWorkflow(awxtest.Workflow{Name: "locked", NotStartable: true})
	_, list = call(t, s, "GET", "/api/v2/workflow_job_templates/?name=locked", nil)
	locked := list["results"].([]any)[0].(map[string]any)
	assert.Equal(t, false, locked["summary_fields"].(map[string]any)["user_capabilities"].(map[string]any)["start"])
	code, denied := call(t, s, "POST", locked["related"].(map[string]any)["launch"].(string), map[string]any{})
	assert.Equal(t, 403, code)
	assert.Contains(t, denied["detail"], "permission")
	code, bad := call(t, s, "POST", launch, map[string]any{"inventory": 999})
	assert.Equal(t, 400, code)
	assert.Contains(t, fmt.Sprint(bad["inventory"]), "does not exist")
}

// What a template does not prompt for: a workflow's launch is refused with
// 400 naming the field, a job template's runs with the template's values and
// lists what it ignored, as AWX's launch serializers do.
func TestLaunchPrompts(t *testing.T) {
	s := awxtest.Start(t, awxtest.Options{JobTime: time.Millisecond})
	s.AddInventory("other", "")
	node := []awxtest.Node{{Name: "noop", Run: func(context.Context, *awxtest.Run) error { return nil }}}
	fixed := awxtest.Workflow{Name: "fixed", ExtraVars: map[string]any{"size": "s"}, Inventory: s.Username + " VMs", Nodes: node, NoInventoryPrompt: true, NoVariablesPrompt: true}
	wfID := s.AddWorkflow(fixed)
	fixed.Name, fixed.JobTemplate = "fixed-job", true
	jtID := s.AddWorkflow(fixed)
	wf := fmt.Sprintf("/api/v2/workflow_job_templates/%d/", wfID)
	jt := fmt.Sprintf("/api/v2/job_templates/%d/", jtID)

	_, tmpl := call(t, s, "GET", wf, nil)
	assert.Equal(t, false, tmpl["ask_inventory_on_launch"])
	assert.Equal(t, false, tmpl["ask_variables_on_launch"])

	code, bad := call(t, s, "POST", wf+"launch/", map[string]any{"inventory": "other"})
	assert.Equal(t, 400, code)
	assert.Equal(t, []any{"Field is not configured to prompt on launch."}, bad["inventory"])
	code, bad = call(t, s, "POST", wf+"launch/", map[string]any{"extra_vars": map[string]any{"size": "s", "zone": "b", "az": 1}})
	assert.Equal(t, 400, code)
	assert.Contains(t, fmt.Sprint(bad["extra_vars"]), "Variables az, zone are not allowed on launch")
	// The template's own values change nothing and pass.
	code, _ = call(t, s, "POST", wf+"launch/", map[string]any{"extra_vars": map[string]any{"size": "s"}, "inventory": s.Username + " VMs"})
	assert.Equal(t, 201, code)

	code, j := call(t, s, "POST", jt+"launch/", map[string]any{"inventory": "other", "extra_vars": map[string]any{"zone": "b"}})
	require.Equal(t, 201, code)
	ignored := j["ignored_fields"].(map[string]any)
	assert.Contains(t, ignored, "inventory")
	assert.Equal(t, map[string]any{"zone": "b"}, ignored["extra_vars"])
	jobs := s.Jobs("fixed-job")
	require.Len(t, jobs, 1)
	assert.NotContains(t, jobs[0].ExtraVars, "zone", "ignored variables do not reach the job")
}

// Cancel: GET says whether a job can be cancelled, POST cancels it (202),
// and a canceled job, and its node in the workflow, read failed, as AWX's
// UnifiedJob.failed does; a finished job's cancel is 405.
func TestCancel(t *testing.T) {
	s := awxtest.Start(t, awxtest.Options{JobTime: 2 * time.Second})
	_, list := call(t, s, "GET", "/api/v2/workflow_job_templates/?name=deploy-vm", nil)
	launch := list["results"].([]any)[0].(map[string]any)["related"].(map[string]any)["launch"].(string)
	code, j := call(t, s, "POST", launch, map[string]any{})
	require.Equal(t, 201, code)
	jobURL := j["url"].(string)
	_, can := call(t, s, "GET", jobURL+"cancel/", nil)
	assert.Equal(t, true, can["can_cancel"])
	code, _ = call(t, s, "POST", jobURL+"cancel/", nil)
	assert.Equal(t, 202, code)
	for range 100 {
		if _, j = call(t, s, "GET", jobURL, nil); j["status"] == "canceled" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, "canceled", j["status"])
	assert.Equal(t, true, j["failed"])
	_, nodes := call(t, s, "GET", j["related"].(map[string]any)["workflow_nodes"].(string), nil)
	first := nodes["results"].([]any)[0].(map[string]any)
	sj := first["summary_fields"].(map[string]any)["job"].(map[string]any)
	assert.Equal(t, "canceled", sj["status"])
	assert.Equal(t, true, sj["failed"], "a canceled node job is failed")
	code, notAllowed := call(t, s, "POST", jobURL+"cancel/", nil)
	assert.Equal(t, 405, code)
	assert.Equal(t, `Method "POST" not allowed.`, notAllowed["detail"])
}

func TestFaults(t *testing.T) {
	s := awxtest.Start(t, awxtest.Options{})
	s.FailFor(200*time.Millisecond, http.StatusBadGateway)
	resp, err := http.Get(s.URL + "/api/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 502, resp.StatusCode)
	s.DropFor(300 * time.Millisecond)
	_, err = http.Get(s.URL + "/api/")
	require.Error(t, err, "connection dropped without an answer")
	time.Sleep(350 * time.Millisecond)
	code, _ := call(t, s, "GET", "/api/", nil)
	assert.Equal(t, 200, code, "the server recovers")
}

// Jobs are listed as AWX lists them: filtered by template and creation
// time, ordered by order_by, with their extra_vars as text; filtering on
// extra_vars is refused (prevent_search).
func TestJobLists(t *testing.T) {
	s := awxtest.Start(t, awxtest.Options{JobTime: 10 * time.Millisecond})
	_, list := call(t, s, "GET", "/api/v2/workflow_job_templates/?name=deploy-vm", nil)
	tmpl := list["results"].([]any)[0].(map[string]any)
	tmplID := fmt.Sprint(tmpl["id"])
	before := time.Now().UTC().Add(-time.Second).Format("2006-01-02T15:04:05Z")
	for i := range 3 {
		code, _ := call(t, s, "POST", tmpl["related"].(map[string]any)["launch"].(string), map[string]any{"extra_vars": map[string]any{"n": i}})
		require.Equal(t, 201, code)
	}
	_, other := call(t, s, "GET", "/api/v2/workflow_job_templates/?name=extend-vm", nil)
	code, _ := call(t, s, "POST", other["results"].([]any)[0].(map[string]any)["related"].(map[string]any)["launch"].(string), nil)
	require.Equal(t, 201, code)
	_, jobs := call(t, s, "GET", "/api/v2/workflow_jobs/?workflow_job_template="+tmplID+"&created__gte="+before+"&order_by=-created", nil)
	assert.EqualValues(t, 3, jobs["count"])
	results := jobs["results"].([]any)
	require.Len(t, results, 3)
	for i, r := range results {
		j := r.(map[string]any)
		assert.Equal(t, "workflow_job", j["type"])
		assert.EqualValues(t, tmpl["id"], j["workflow_job_template"])
		assert.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`, j["created"])
		var vars map[string]any
		require.NoError(t, json.Unmarshal([]byte(j["extra_vars"].(string)), &vars), "extra_vars is JSON text")
		assert.EqualValues(t, 2-i, vars["n"], "newest first")
	}
	later := time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04:05Z")
	_, none := call(t, s, "GET", "/api/v2/workflow_jobs/?workflow_job_template="+tmplID+"&created__gte="+later, nil)
	assert.EqualValues(t, 0, none["count"])
	_, nodeJobs := call(t, s, "GET", "/api/v2/jobs/?job_template="+tmplID, nil)
	assert.EqualValues(t, 0, nodeJobs["count"], "a workflow's node jobs belong to no job template here")
	_, all := call(t, s, "GET", "/api/v2/workflow_jobs/", nil)
	assert.EqualValues(t, 4, all["count"])
	code, body := call(t, s, "GET", "/api/v2/workflow_jobs/?extra_vars__icontains=n", nil)
	assert.Equal(t, 403, code)
	assert.Equal(t, "Filtering on extra_vars is not allowed.", body["detail"])
	assert.Len(t, s.Jobs("deploy-vm"), 3)
}
