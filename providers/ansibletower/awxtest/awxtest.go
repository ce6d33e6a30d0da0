// Package awxtest serves a fake AWX / Ansible Tower / AAP controller API for
// tests, in the manner of net/http/httptest: the real paths
// (/api/v2/workflow_job_templates/, …/launch/, /api/v2/workflow_jobs/ID/,
// workflow_nodes, jobs and their job_events, the lists /workflow_jobs/ and
// /jobs/, inventories, hosts and ansible_facts, me, ping), the real JSON
// shapes, filters (exact fields, name__icontains, search, __gt, __gte, __lt,
// __lte, order_by; extra_vars may not be filtered on, as in AWX) and paging
// (count, next, previous, results; page_size up to 200), token, Basic and
// session (CSRF) authentication, and AAP 2.5's layout (/api/controller/v2/
// behind a gateway /api/) on request.
//
// Workflows are Go functions: each node of a workflow runs one after the
// other for its share of Options.JobTime, writes artifacts (as set_stats
// does) and fails with a *TaskFailure (a failed job with a failed event) or
// a *JobFailure (an errored job with a traceback). The default catalog has
// the workflows the AnsibleTower provider uses: deploy-vm, remove-vm and
// extend-vm, making VMs through a VMFactory (LocalVMs hands out real SSH
// servers of the Local provider).
//
// Faults for resilience tests: FailFor (5xx answers), DropFor (connections
// closed without an answer), ExpireSessions and RevokeTokens (401s).
//
// Users can test their own workflow logic offline by adding workflows.
package awxtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configures a Server.
type Options struct {
	// AAP25 serves the controller under /api/controller/v2/ behind a
	// gateway root /api/, as AAP 2.5 and later do; else under /api/v2/.
	AAP25 bool
	// JobTime is how long each launched workflow or job runs (split evenly
	// over a workflow's nodes). Default 50ms.
	JobTime time.Duration
	// Username and Password of the one user (default "admin" and a random
	// password). Token is a valid bearer token for it (default random).
	Username, Password, Token string
	// VMs makes and removes the VMs of deploy-vm and remove-vm (default: VMs
	// that exist only as names, with no SSH).
	VMs VMFactory
	// NoCatalog leaves out deploy-vm, remove-vm and extend-vm.
	NoCatalog bool
	// SessionCookie names the session cookie a login sets. Default: AWX's
	// "awx_sessionid" (AWX 20.0.1 and later), or "gateway_sessionid" with
	// AAP25; "sessionid" is older AWX's. The login's redirect names it in
	// X-API-Session-Cookie-Name, as AWX's does.
	SessionCookie string
}

// Server is a fake AWX API server on 127.0.0.1.
type Server struct {
	// URL is the base URL, e.g. http://127.0.0.1:43210 (base_url in settings).
	URL string
	// Username, Password and Token are the credentials it accepts.
	Username, Password, Token string

	srv    *httptest.Server
	opts   Options
	prefix string         // "/api/v2/" or "/api/controller/v2/"
	api    *http.ServeMux // the views below prefix (routes)

	ctx    context.Context // canceled by Close: running jobs stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	nextID      int
	templates   []*templateDef
	jobs        map[int]*jobState
	nodes       map[int]*nodeState
	inventories []*inventoryState
	labels      []labelState
	hosts       []*hostState
	tokens      map[string]bool
	sessions    map[string]bool
	csrf        map[string]bool
	failUntil   time.Time
	failStatus  int
	dropUntil   time.Time
	requests    []string // "METHOD path"
}

// Workflow is a workflow job template (or, with JobTemplate set, a job
// template whose one node is the playbook).
type Workflow struct {
	Name        string
	Description string
	// ExtraVars are the template's variables and their defaults; launch
	// values override them.
	ExtraVars map[string]any
	// Inventory is the default inventory's name ("" for none).
	Inventory string
	// Nodes run in order; the first failure fails the workflow.
	Nodes []Node
	// NotStartable makes the template visible but not launchable by the user.
	NotStartable bool
	// JobTemplate registers it under /job_templates/ (Nodes must hold one).
	JobTemplate bool
	// NoInventoryPrompt: the template does not prompt for an inventory
	// (ask_inventory_on_launch false). As in AWX, a workflow's launch with
	// another inventory than its own gets 400; a job template's launch runs
	// with its own and lists the other under ignored_fields.
	NoInventoryPrompt bool
	// NoVariablesPrompt: likewise for extra_vars (ask_variables_on_launch
	// false), for each variable that the template does not define with the
	// same value.
	NoVariablesPrompt bool
}

// Node is one job of a workflow.
type Node struct {
	Name string
	Run  func(ctx context.Context, r *Run) error
	// Kind is the node's unified job type: "" or "job" (a playbook, with
	// job_events), "project_update" or "inventory_update" (with events, and
	// no artifacts), as a workflow's sync nodes are.
	Kind string
}

// Run is what a running node sees and writes.
type Run struct {
	Vars          map[string]any // extra_vars: the template's defaults under the launch's
	Inventory     string         // the launch's inventory name
	User          string
	JobID         int            // this node's job id
	WorkflowJobID int            // the workflow job's id (the job's own for a job template)
	Artifacts     map[string]any // what set_stats would publish
	Server        *Server
}

// TaskFailure fails a node's job ("failed") with one failed task event whose
// event_data.res.msg is Msg.
type TaskFailure struct {
	Task, Msg string
}

func (e *TaskFailure) Error() string { return e.Task + ": " + e.Msg }

// JobFailure errors a node's job ("error") with a job_explanation and a
// result_traceback, as a job that could not run does.
type JobFailure struct {
	Explanation, Traceback string
}

func (e *JobFailure) Error() string { return e.Explanation }

type templateDef struct {
	id  int
	def Workflow
}

func (t *templateDef) kind() string {
	if t.def.JobTemplate {
		return "job_template"
	}
	return "workflow_job_template"
}

type jobState struct {
	id          int
	typ         string // workflow_job | job
	kind        string // a node job's unified job type: "" (job), project_update, inventory_update
	name        string
	templateID  int
	status      string
	explanation string
	traceback   string
	artifacts   map[string]any
	extraVars   map[string]any
	inventory   int
	labels      []string // names of the launch's labels
	events      []map[string]any
	nodeIDs     []int         // workflow_job: its nodes
	top         bool          // launched from a template (not a workflow's node)
	canceled    chan struct{} // closed by a cancel request (shared by a workflow's jobs)
	created     time.Time
	started     time.Time
	finished    time.Time
}

type nodeState struct {
	id         int
	workflowID int
	jobID      int // 0 until it runs
	name       string
	doNotRun   bool
}

type inventoryState struct {
	id          int
	name        string
	description string
}

type hostState struct {
	id        int
	name      string
	inventory int
	variables string
	facts     map[string]any
}

// NewServer starts a server; Close stops it.
func NewServer(opts Options) *Server {
	if opts.JobTime <= 0 {
		opts.JobTime = 50 * time.Millisecond
	}
	if opts.Username == "" {
		opts.Username = "admin"
	}
	if opts.Password == "" {
		opts.Password = "pw-" + randomHex(12)
	}
	if opts.Token == "" {
		opts.Token = "tok-" + randomHex(16)
	}
	if opts.VMs == nil {
		opts.VMs = &NameOnlyVMs{}
	}
	s := &Server{
		Username: opts.Username, Password: opts.Password, Token: opts.Token,
		opts: opts, prefix: "/api/v2/",
		jobs: map[int]*jobState{}, nodes: map[int]*nodeState{},
		tokens: map[string]bool{opts.Token: true}, sessions: map[string]bool{}, csrf: map[string]bool{},
	}
	if opts.AAP25 {
		s.prefix = "/api/controller/v2/"
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.AddInventory("Demo Inventory", "")
	s.AddInventory(opts.Username+" VMs", "VMs deployed for "+opts.Username)
	if !opts.NoCatalog {
		s.addCatalog()
	}
	s.api = s.routes()
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Start starts a server that is closed when tb ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s := NewServer(opts)
	tb.Cleanup(s.Close)
	return s
}

// Close stops the server and every running job.
func (s *Server) Close() {
	s.cancel()
	s.srv.CloseClientConnections()
	s.srv.Close()
	s.wg.Wait()
}

// APIPrefix is the controller's API root path.
func (s *Server) APIPrefix() string { return s.prefix }

// AddWorkflow adds a workflow (or job template) to the catalog and returns its id.
func (s *Server) AddWorkflow(w Workflow) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.ExtraVars == nil {
		w.ExtraVars = map[string]any{}
	}
	t := &templateDef{id: s.newIDLocked(), def: w}
	s.templates = append(s.templates, t)
	return t.id
}

// AddInventory adds an inventory and returns its id.
func (s *Server) AddInventory(name, description string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	inv := &inventoryState{id: s.newIDLocked(), name: name, description: description}
	s.inventories = append(s.inventories, inv)
	return inv.id
}

// AddHost adds a host to the named inventory with the given variables (an
// fqdn and ansible_host, say) and facts, and returns its id.
func (s *Server) AddHost(inventory, name string, variables, facts map[string]any) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addHostLocked(inventory, name, variables, facts)
}

func (s *Server) addHostLocked(inventory, name string, variables, facts map[string]any) (int, error) {
	inv := s.inventoryByNameLocked(inventory)
	if inv == nil {
		return 0, fmt.Errorf("awxtest: no inventory %q", inventory)
	}
	for _, h := range s.hosts {
		if h.name == name && h.inventory == inv.id {
			return 0, fmt.Errorf("awxtest: host %q already in inventory %q", name, inventory)
		}
	}
	// AWX keeps variables as the text the user gave: YAML here, so clients
	// must read both JSON and YAML.
	var b strings.Builder
	for _, k := range slices.Sorted(mapsKeys(variables)) {
		v, _ := json.Marshal(variables[k])
		fmt.Fprintf(&b, "%s: %s\n", k, v)
	}
	if facts == nil {
		facts = map[string]any{}
	}
	h := &hostState{id: s.newIDLocked(), name: name, inventory: inv.id, variables: b.String(), facts: facts}
	s.hosts = append(s.hosts, h)
	return h.id, nil
}

func (s *Server) removeHostLocked(name string) bool {
	n := len(s.hosts)
	s.hosts = slices.DeleteFunc(s.hosts, func(h *hostState) bool { return h.name == name })
	return len(s.hosts) != n
}

// HostNames lists the hosts of every inventory, sorted.
func (s *Server) HostNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, h := range s.hosts {
		out = append(out, h.name)
	}
	slices.Sort(out)
	return out
}

// HostFacts returns a copy of a host's facts (nil when there is no such host).
func (s *Server) HostFacts(name string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.hosts {
		if h.name == name {
			return cloneJSON(h.facts)
		}
	}
	return nil
}

// Launches counts the launches of the named template.
func (s *Server) Launches(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, j := range s.jobs {
		if j.top && j.name == name {
			n++
		}
	}
	return n
}

// Job is a launched job as the server sees it.
type Job struct {
	ID        int
	Type      string // workflow_job or job
	Status    string // pending, running, successful, failed, error, canceled
	ExtraVars map[string]any
	Labels    []string // the names of the labels the launch gave
}

// labelState is a label of /labels/: names are unique per organization.
type labelState struct {
	id           int
	name         string
	organization int
}

// Jobs lists the jobs launched from the named template, oldest first.
func (s *Server) Jobs(name string) []Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Job
	for _, j := range s.jobs {
		if j.top && j.name == name {
			out = append(out, Job{ID: j.id, Type: j.typ, Status: j.status, ExtraVars: cloneJSON(j.extraVars), Labels: slices.Clone(j.labels)})
		}
	}
	slices.SortFunc(out, func(a, b Job) int { return a.ID - b.ID })
	return out
}

// Requests lists the requests served so far as "METHOD /path?query".
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// FailFor answers every API request with status (e.g. 502) for d, as a
// restarting server behind a proxy does.
func (s *Server) FailFor(d time.Duration, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failUntil, s.failStatus = time.Now().Add(d), status
}

// DropFor closes every connection without an answer for d.
func (s *Server) DropFor(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropUntil = time.Now().Add(d)
}

// ExpireSessions ends every login session: their next request gets a 401.
func (s *Server) ExpireSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.sessions)
}

// RevokeTokens makes every token invalid.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

func (s *Server) newIDLocked() int {
	s.nextID++
	return s.nextID
}

func (s *Server) inventoryByNameLocked(name string) *inventoryState {
	for _, inv := range s.inventories {
		if inv.name == name || strconv.Itoa(inv.id) == name {
			return inv
		}
	}
	return nil
}

func (s *Server) inventoryByIDLocked(id int) *inventoryState {
	for _, inv := range s.inventories {
		if inv.id == id {
			return inv
		}
	}
	return nil
}

func (s *Server) templateByIDLocked(id int) *templateDef {
	for _, t := range s.templates {
		if t.id == id {
			return t
		}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func mapsKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// cloneJSON deep-copies a JSON-like value.
func cloneJSON(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// absURL is the server's own absolute path for an API object.
func (s *Server) path(format string, args ...any) string {
	return s.prefix + fmt.Sprintf(format, args...)
}
