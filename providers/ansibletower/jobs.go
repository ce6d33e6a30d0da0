package ansibletower

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	osuser "os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hostbroker/broker/internal/plain"
	"github.com/hostbroker/broker/inventory"
)

// JobError is a workflow or job template that did not succeed. It names the
// failed nodes (newest first) and why each failed.
type JobError struct {
	Kind     string    // "workflow" or "job_template"
	Name     string    // the template's name
	ID       int       // the job's id
	Status   string    // failed, error, canceled
	URL      string    // the job's page in the UI
	Failures []Failure // newest first; one with error_scope: last
	Dangling []string  // hosts the failed workflow made, kept (dangling_behavior: store)
}

// Failure is why one job of a workflow failed.
type Failure struct {
	Job    string // the job's name
	Status string // failed or error
	Task   string // the failed task, when known
	Reason string // result_traceback or job_explanation (error), the failed event's res.msg (failed)
}

func (e *JobError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ansibletower: %s %q (job %d) %s", e.Kind, e.Name, e.ID, e.Status)
	for i, f := range e.Failures {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s [%s]", f.Job, f.Status)
		if f.Task != "" {
			fmt.Fprintf(&b, " task %q", f.Task)
		}
		if f.Reason != "" {
			b.WriteString(": " + f.Reason)
		}
	}
	if len(e.Dangling) > 0 {
		fmt.Fprintf(&b, "; hosts left for you (dangling_behavior: store): %s", strings.Join(e.Dangling, ", "))
	}
	if e.URL != "" {
		b.WriteString(" (" + e.URL + ")")
	}
	return b.String()
}

// ErrNotFound is wrapped by errors for a template or inventory that does
// not exist or that the user cannot see.
var ErrNotFound = errors.New("not found")

// ErrNotStartable is wrapped when the user may see a template but not start it.
var ErrNotStartable = errors.New("not startable by this user")

// runResult is a finished, successful job.
type runResult struct {
	kind, name    string
	inventory     string // the inventory launched against (name or id), "" for the template's
	template      *template
	job           job
	apiURL, uiURL string
}

// run launches the workflow or job template args name, with the other args
// (and a marker) as extra_vars, and waits for it; a launch whose answer was
// lost is found by its marker and waited for. A failure comes back as
// *JobError; hosts a failed workflow made are checked in first
// (dangling_behavior: checkin).
func (p *Provider) run(ctx context.Context, args map[string]any) (*runResult, error) {
	return p.runNotify(ctx, args, launchHooks{marker: inventory.NewID(), adopt: true})
}

// launchHooks make a launch findable and tell the caller about it.
type launchHooks struct {
	// marker, when not "", is sent as the extra var markerVar; a launch
	// whose answer is lost is then found by it (findLaunch).
	marker string
	// onIntent, with a marker, is told before the launch how to find its
	// job (launch_marker, launch_kind, launch_template_id, launch_started).
	onIntent func(map[string]any)
	// onLaunch is told the launched job's data (job_id, job_type, api_url,
	// ui_url) before the job is waited for.
	onLaunch func(map[string]any)
	// adopt, with a marker, finds the job of a launch whose answer was lost
	// while ctx lasts and waits for it, instead of failing.
	adopt bool
}

// runNotify is run with hooks: a marker sent with the launch, and callbacks
// before and after it. A launch with a marker that may have started a job
// although its answer never came fails with a *lostLaunchError.
func (p *Provider) runNotify(ctx context.Context, args map[string]any, hooks launchHooks) (*runResult, error) {
	res, payload, extra, err := p.prepareLaunch(ctx, args)
	if err != nil {
		return nil, err
	}
	kind, name := res.kind, res.name
	l, err := p.launch(ctx, res, payload, extra, hooks)
	if err != nil {
		return nil, err
	}
	if _, ignored := l.IgnoredFields["extra_vars"]; ignored && hooks.marker != "" {
		p.log.Warn("ansibletower: the template ignores the launch's extra_vars (enable Prompt on launch for Variables): a launch whose answer is lost cannot be found", kind, name)
	}
	id := l.ID
	if id == 0 {
		id = max(l.WorkflowJob, l.Job)
	}
	jobURL := l.URL
	if jobURL == "" {
		jobURL = fmt.Sprintf("%s%d/", jobPath(kind), id)
	}
	res.apiURL, res.uiURL = p.c.resolve(jobURL), p.uiURL(kind, id)
	p.log.Info("ansibletower: launched", kind, name, "job", id, "api_url", res.apiURL, "ui_url", res.uiURL)
	if hooks.onLaunch != nil {
		hooks.onLaunch(map[string]any{"job_id": id, "job_type": l.Type, "api_url": res.apiURL, "ui_url": res.uiURL})
	}
	j, err := p.wait(ctx, jobURL)
	if err != nil {
		return nil, fmt.Errorf("ansibletower: %s %q (job %d, %s): %w", kind, name, id, res.uiURL, err)
	}
	res.job = j
	if j.Status == "successful" {
		return res, nil
	}
	return nil, p.jobFailed(ctx, res, id)
}

// prepareLaunch finds the template that args name (workflow, else
// job_template) and the inventory they name (inventory, tower_inventory,
// else the setting), and returns the run it starts (template and
// inventory), the launch's payload and its extra_vars: the other
// arguments.
func (p *Provider) prepareLaunch(ctx context.Context, args map[string]any) (res *runResult, payload, extra map[string]any, err error) {
	kind, name := "workflow", stringArg(args, "workflow", "")
	if name == "" {
		kind, name = "job_template", stringArg(args, "job_template", "")
	}
	if name == "" {
		return nil, nil, nil, fmt.Errorf("ansibletower: no workflow or job_template argument (arguments: %s)", strings.Join(sortedKeys(args), ", "))
	}
	tmpl, err := p.findTemplate(ctx, kind, name)
	if err != nil {
		return nil, nil, nil, err
	}
	payload, extra = map[string]any{}, map[string]any{}
	for k, v := range args {
		switch k {
		case "workflow", "job_template", "inventory", "tower_inventory":
			continue
		}
		extra[k] = v
	}
	inv := stringArg(args, "inventory", stringArg(args, "tower_inventory", p.set.inventory))
	if inv != "" {
		id, err := p.inventoryID(ctx, inv)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("ansibletower: %s %q: %w", kind, name, err)
		}
		payload["inventory"] = id
	}
	return &runResult{kind: kind, name: name, inventory: inv, template: tmpl}, payload, extra, nil
}

// launch launches res's template with payload and extra (its extra_vars,
// to which the marker, labels and broker variables are added). A launch
// whose answer was lost, but which may have started a job, is a
// *lostLaunchError, unless hooks.adopt finds the job.
func (p *Provider) launch(ctx context.Context, res *runResult, payload, extra map[string]any, hooks launchHooks) (launched, error) {
	kind, name, tmpl := res.kind, res.name, res.template
	var intent map[string]any
	postCtx := ctx
	var sent atomic.Bool
	if hooks.marker != "" {
		extra[markerVar] = hooks.marker
		intent = map[string]any{
			dataMarker:   hooks.marker,
			dataKind:     kind,
			dataTemplate: tmpl.ID,
			dataStarted:  time.Now().UTC().Format(time.RFC3339Nano),
		}
		if hooks.onIntent != nil {
			hooks.onIntent(maps.Clone(intent))
		}
		// Whether a request was written (the launch, or a login on its
		// behalf): a launch that never left cannot have started a job.
		postCtx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { sent.Store(true) }})
	}
	if labels, err := p.launchLabels(ctx, extra, tmpl); err != nil {
		return launched{}, fmt.Errorf("ansibletower: %s %q: %w", kind, name, err)
	} else if len(labels) > 0 {
		payload["labels"] = labels
	}
	addBrokerVars(extra, tmpl)
	payload["extra_vars"] = extra
	var l launched
	launchPath := tmpl.Related.Launch
	if launchPath == "" {
		launchPath = fmt.Sprintf("%s%d/launch/", templatePath(kind), tmpl.ID)
	}
	err := p.c.post(postCtx, launchPath, payload, &l)
	if err == nil {
		return l, nil
	}
	err = fmt.Errorf("ansibletower: launch %s %q: %w", kind, name, authHint(err))
	if intent == nil || !sent.Load() || !mayHaveLaunched(err) {
		return launched{}, err
	}
	lost := &lostLaunchError{err: err, data: intent, inFlight: inFlight(err)}
	if !hooks.adopt || ctx.Err() != nil {
		return launched{}, lost
	}
	// Wait for the job the launch started, as if its answer had come.
	found, ferr := p.findLaunch(ctx, intent, lost.inFlight, time.Time{})
	if ferr != nil {
		return launched{}, errors.Join(err, fmt.Errorf("ansibletower: the launch may have started a job (extra var %s=%s): %w", markerVar, hooks.marker, ferr))
	}
	if found == nil {
		return launched{}, err
	}
	p.log.Warn("ansibletower: the launch's answer was lost but it started a job; waiting for it", kind, name, "api_url", found["api_url"])
	l = launched{ID: anyInt(found["job_id"])} // its URL follows from the id
	l.Type, _ = found["job_type"].(string)
	return l, nil
}

// jobFailed is the error of res's job id, which ended unsuccessfully: a
// *JobError with the failures found, and the hosts a failed workflow made
// either checked in or, with dangling_behavior store, listed.
func (p *Provider) jobFailed(ctx context.Context, res *runResult, id int) error {
	kind, name, j := res.kind, res.name, res.job
	jerr := &JobError{Kind: kind, Name: name, ID: id, Status: j.Status, URL: res.uiURL}
	// Cleanup and diagnosis must not be cut short by the caller's deadline
	// having passed: they are bounded by their own.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.set.workflowTimeout)
	defer cancel()
	var err error
	if jerr.Failures, err = p.failures(cctx, j); err != nil {
		jerr.Failures = append(jerr.Failures, Failure{Job: name, Status: j.Status, Reason: "reading the failure: " + err.Error()})
	}
	dangling, derr := p.danglingHosts(cctx, j)
	if len(dangling) > 0 && kind == "workflow" && name != p.set.releaseWorkflow {
		if p.set.dangling == "store" {
			jerr.Dangling = dangling
		} else {
			derr = errors.Join(derr, p.releaseAll(cctx, dangling, nil))
		}
	}
	if derr != nil {
		return errors.Join(jerr, fmt.Errorf("checking in hosts the failed workflow made: %w", derr))
	}
	return jerr
}

func templatePath(kind string) string {
	if kind == "workflow" {
		return "workflow_job_templates/"
	}
	return "job_templates/"
}

func jobPath(kind string) string {
	if kind == "workflow" {
		return "workflow_jobs/"
	}
	return "jobs/"
}

// uiURL is the job's output page in the web UI.
func (p *Provider) uiURL(kind string, id int) string {
	sub := "workflow"
	if kind == "job_template" {
		sub = "playbook"
	}
	base := strings.TrimSuffix(p.set.baseURL.String(), "/")
	if p.aap25 {
		return fmt.Sprintf("%s/execution/jobs/%s/%d/output", base, sub, id)
	}
	return fmt.Sprintf("%s/#/jobs/%s/%d/output", base, sub, id)
}

// findTemplate finds a startable template by its exact name.
func (p *Provider) findTemplate(ctx context.Context, kind, name string) (*template, error) {
	found, err := listAll[template](ctx, p.c, templatePath(kind), url.Values{"name": {name}})
	if err != nil {
		return nil, fmt.Errorf("ansibletower: find %s %q: %w", kind, name, authHint(err))
	}
	for i := range found {
		if found[i].Name != name {
			continue
		}
		if !found[i].startable() {
			return nil, fmt.Errorf("ansibletower: %s %q: %w (user %s)", kind, name, ErrNotStartable, p.username)
		}
		return &found[i], nil
	}
	return nil, fmt.Errorf("ansibletower: %s %q: %w (no %s of that name is visible to user %s at %s)", kind, name, ErrNotFound, strings.TrimSuffix(templatePath(kind), "s/"), p.username, p.set.baseURL)
}

// inventoryID resolves an inventory given by name or id.
func (p *Provider) inventoryID(ctx context.Context, inv string) (int, error) {
	if id, err := strconv.Atoi(inv); err == nil {
		return id, nil
	}
	p.invMu.Lock()
	id, ok := p.invIDs[inv]
	p.invMu.Unlock()
	if ok {
		return id, nil
	}
	found, err := listAll[inventoryObj](ctx, p.c, "inventories/", url.Values{"name": {inv}})
	if err != nil {
		return 0, fmt.Errorf("find inventory %q: %w", inv, err)
	}
	for _, i := range found {
		if i.Name == inv {
			p.invMu.Lock()
			p.invIDs[inv] = i.ID
			p.invMu.Unlock()
			return i.ID, nil
		}
	}
	return 0, fmt.Errorf("inventory %q: %w", inv, ErrNotFound)
}

// wait polls a job until it finishes: first after 250 ms, then 1.5 times
// longer each time up to workflow_poll_interval, for at most
// workflow_timeout. Transient API failures are retried by the client.
func (p *Provider) wait(ctx context.Context, jobURL string) (job, error) {
	ctx, cancel := context.WithTimeout(ctx, p.set.workflowTimeout)
	defer cancel()
	delay := 250 * time.Millisecond
	for {
		var j job
		if err := p.c.get(ctx, jobURL, &j); err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
				return j, fmt.Errorf("not finished after workflow_timeout %s: %w", p.set.workflowTimeout, err)
			}
			return j, err
		}
		if finished(j.Status) {
			return j, nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return j, fmt.Errorf("still %s after workflow_timeout %s: %w", j.Status, p.set.workflowTimeout, ctx.Err())
		case <-t.C:
		}
		delay = min(delay*3/2, p.set.pollInterval)
	}
}

// nodes lists a workflow job's nodes that ran a job, oldest job first.
func (p *Provider) nodes(ctx context.Context, j job) ([]workflowNode, error) {
	if j.Type != "workflow_job" {
		return nil, nil
	}
	path := j.Related.WorkflowNodes
	if path == "" {
		path = fmt.Sprintf("workflow_jobs/%d/workflow_nodes/", j.ID)
	}
	all, err := listAll[workflowNode](ctx, p.c, path, nil)
	if err != nil {
		return nil, err
	}
	all = slices.DeleteFunc(all, func(n workflowNode) bool { return n.SummaryFields.Job == nil })
	slices.SortFunc(all, func(a, b workflowNode) int { return a.SummaryFields.Job.ID - b.SummaryFields.Job.ID })
	return all, nil
}

// nodeJob fetches the job a node ran.
func (p *Provider) nodeJob(ctx context.Context, n workflowNode) (job, error) {
	path := n.Related.Job
	if path == "" {
		path = jobPath("job_template") + strconv.Itoa(n.SummaryFields.Job.ID) + "/"
		if n.SummaryFields.Job.Type == "workflow_job" {
			path = jobPath("workflow") + strconv.Itoa(n.SummaryFields.Job.ID) + "/"
		}
	}
	var j job
	err := p.c.get(ctx, path, &j)
	return j, err
}

// artifacts gathers a job's artifacts: a job's own; for a workflow, its
// nodes' jobs (nested workflows included) merged oldest first ("merge") or
// the last job's alone ("last").
func (p *Provider) artifacts(ctx context.Context, j job, strategy string) (map[string]any, error) {
	switch strategy {
	case "merge", "last":
	default:
		return nil, fmt.Errorf("artifacts strategy %q: want merge or last", strategy)
	}
	out := map[string]any{}
	if err := p.gather(ctx, j, strategy, out, 0); err != nil {
		return nil, err
	}
	return out, nil
}

func (p *Provider) gather(ctx context.Context, j job, strategy string, out map[string]any, depth int) error {
	if depth > 10 {
		return fmt.Errorf("workflows nested more than 10 deep")
	}
	if len(j.Artifacts) > 0 {
		if strategy == "last" {
			clear(out)
		}
		plain.Merge(out, j.Artifacts)
	}
	nodes, err := p.nodes(ctx, j)
	if err != nil {
		return err
	}
	if strategy == "last" && len(nodes) > 1 {
		nodes = nodes[len(nodes)-1:]
	}
	for _, n := range nodes {
		child, err := p.nodeJob(ctx, n)
		if err != nil {
			return err
		}
		if err := p.gather(ctx, child, strategy, out, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// failures explains a failed job: for each failed node of a workflow (or
// the job itself), newest first, the traceback or explanation of an errored
// job, or the res.msg of the failed events of a failed one.
func (p *Provider) failures(ctx context.Context, j job) ([]Failure, error) {
	var out []Failure
	if j.Type == "workflow_job" {
		nodes, err := p.nodes(ctx, j)
		if err != nil {
			return nil, err
		}
		for i := len(nodes) - 1; i >= 0; i-- {
			if !nodes[i].SummaryFields.Job.Failed {
				continue
			}
			child, err := p.nodeJob(ctx, nodes[i])
			if err != nil {
				return out, err
			}
			fs, err := p.failures(ctx, child)
			out = append(out, fs...)
			if err != nil {
				return out, err
			}
		}
		if len(out) == 0 && j.JobExplanation != "" {
			out = append(out, Failure{Job: j.Name, Status: j.Status, Reason: j.JobExplanation})
		}
	} else {
		fs, err := p.jobFailures(ctx, j)
		if err != nil {
			return fs, err
		}
		out = fs
	}
	if len(out) == 0 {
		out = []Failure{{Job: j.Name, Status: j.Status, Reason: "no failure reason recorded by the API"}}
	}
	if p.set.errorScope == "last" {
		out = out[:1]
	}
	return out, nil
}

// addBrokerVars adds what the Python broker's launches carry: a string
// argument holding a JSON object or list becomes that structure;
// _broker_origin says who asked (the test, else the program and user) and
// _jenkins_url the CI build (BUILD_URL); _broker_extra_vars repeats the
// variables the template does not define, for workflows that keep them
// (in host facts, for sync).
func addBrokerVars(extra map[string]any, tmpl *template) {
	for k, v := range extra {
		if s, ok := v.(string); ok && (strings.HasPrefix(s, "{") || strings.HasPrefix(s, "[")) {
			var parsed any
			if json.Unmarshal([]byte(s), &parsed) == nil {
				extra[k] = parsed
			}
		}
	}
	if _, ok := extra["_broker_origin"]; !ok {
		extra["_broker_origin"] = defaultOrigin()
	}
	if u := os.Getenv("BUILD_URL"); u != "" {
		if _, ok := extra["_jenkins_url"]; !ok {
			extra["_jenkins_url"] = u
		}
	}
	defined, _ := parseVars(tmpl.ExtraVars)
	custom := map[string]any{}
	for k, v := range extra {
		if _, ok := defined[k]; !ok && k != markerVar {
			custom[k] = v
		}
	}
	extra["_broker_extra_vars"] = custom
}

// launchLabels resolves the launch's labels, as the Python broker's do:
// the provider_labels argument under the provider_labels setting, each
// "key=value" (or "key" when the value is empty), created in the
// template's organization when AWX has no such label. The merged labels
// replace the argument in extra.
func (p *Provider) launchLabels(ctx context.Context, extra map[string]any, tmpl *template) ([]int, error) {
	labels := map[string]any{}
	if v, ok := extra["provider_labels"]; ok && v != nil {
		m, ok := plain.Value(v).(map[string]any)
		if !ok {
			return nil, fmt.Errorf("argument provider_labels: want a map of labels, got %T", v)
		}
		maps.Copy(labels, m)
	}
	maps.Copy(labels, p.set.providerLabels)
	if len(labels) == 0 {
		return nil, nil
	}
	extra["provider_labels"] = labels
	if tmpl.SummaryFields.Organization == nil {
		return nil, fmt.Errorf("labels %v: the template has no organization to hold them", slices.Sorted(maps.Keys(labels)))
	}
	org := tmpl.SummaryFields.Organization.ID
	var ids []int
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		name := k
		if v := labels[k]; v != nil && fmt.Sprint(v) != "" {
			name += "=" + fmt.Sprint(v)
		}
		var made struct {
			ID int `json:"id"`
		}
		err := p.c.post(ctx, "labels/", map[string]any{"name": name, "organization": org}, &made)
		var apiErr *APIError
		switch {
		case err == nil:
			ids = append(ids, made.ID)
		case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusBadRequest:
			// It exists already: AWX refuses a second of the name.
			found, lerr := listAll[struct {
				ID int `json:"id"`
			}](ctx, p.c, "labels/", url.Values{"name": {name}, "organization": {strconv.Itoa(org)}})
			if lerr != nil || len(found) == 0 {
				return nil, fmt.Errorf("label %q: %w", name, errors.Join(err, lerr))
			}
			ids = append(ids, found[0].ID)
		default:
			return nil, fmt.Errorf("label %q: %w", name, err)
		}
	}
	return ids, nil
}

// defaultOrigin names a launch's origin when no test label does: the
// program and the user, as the Python broker's "Unknown origin by USER".
func defaultOrigin() string {
	who := "unknown user"
	if u, err := osuser.Current(); err == nil {
		who = u.Username
	}
	return filepath.Base(os.Args[0]) + " by " + who
}

// jobFailures explains one failed (not workflow) job.
func (p *Provider) jobFailures(ctx context.Context, j job) ([]Failure, error) {
	explained := func() []Failure {
		reason := strings.TrimSpace(j.ResultTraceback)
		if reason == "" {
			reason = j.JobExplanation
		}
		return []Failure{{Job: j.Name, Status: j.Status, Reason: reason}}
	}
	if j.Status == "error" || j.Status == "canceled" {
		return explained(), nil
	}
	// A playbook job's events are job_events; a project or inventory
	// update's are events; an approval has none.
	path := cmp.Or(j.Related.JobEvents, j.Related.Events)
	if path == "" && (j.Type == "job" || j.Type == "") {
		path = fmt.Sprintf("jobs/%d/job_events/", j.ID)
	}
	if path == "" {
		return explained(), nil
	}
	events, err := listAll[jobEvent](ctx, p.c, path, url.Values{"failed": {"true"}})
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound {
		return explained(), nil
	}
	if err != nil {
		return nil, err
	}
	slices.SortFunc(events, func(a, b jobEvent) int { return b.Counter - a.Counter })
	var out []Failure
	for _, ev := range events {
		if !ev.Failed {
			continue
		}
		msg, _ := ev.EventData.Res["msg"].(string)
		if msg == "" {
			continue
		}
		task := ev.EventData.Task
		if task == "" {
			task = ev.Task
		}
		out = append(out, Failure{Job: j.Name, Status: j.Status, Task: task, Reason: msg})
	}
	if len(out) == 0 && j.JobExplanation != "" {
		out = append(out, Failure{Job: j.Name, Status: j.Status, Reason: j.JobExplanation})
	}
	return out, nil
}

// danglingHosts lists the VMs (vm_name artifacts) that the succeeded nodes of
// a failed workflow made.
func (p *Provider) danglingHosts(ctx context.Context, j job) ([]string, error) {
	if j.Type != "workflow_job" {
		return vmNames(j.Artifacts), nil
	}
	nodes, err := p.nodes(ctx, j)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range nodes {
		if n.SummaryFields.Job.Failed {
			continue
		}
		child, err := p.nodeJob(ctx, n)
		if err != nil {
			return names, err
		}
		for _, name := range vmNames(child.Artifacts) {
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return names, nil
}
