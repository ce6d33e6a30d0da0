package awxtest

import (
	"cmp"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxPageSize is AWX's largest page.
const maxPageSize = 200

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" "+r.URL.RequestURI())
	drop := time.Now().Before(s.dropUntil)
	fail := time.Now().Before(s.failUntil)
	status := s.failStatus
	s.mu.Unlock()
	if drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
	}
	if fail {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		fmt.Fprintf(w, "<html><body><h1>%d %s</h1></body></html>\n", status, http.StatusText(status))
		return
	}
	path := r.URL.Path
	switch {
	case path == "/api/" || path == "/api":
		s.serveRoot(w)
		return
	case s.opts.AAP25 && path == "/api/controller/":
		writeJSON(w, http.StatusOK, map[string]any{
			"description": "AWX REST API", "current_version": s.prefix,
			"available_versions": map[string]string{"v2": s.prefix},
		})
		return
	case path == s.loginPath():
		s.serveLogin(w, r)
		return
	case !strings.HasPrefix(path, s.prefix):
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "The requested resource could not be found."})
		return
	}
	seg := strings.Split(strings.Trim(strings.TrimPrefix(path, s.prefix), "/"), "/")
	if seg[0] == "ping" {
		writeJSON(w, http.StatusOK, map[string]any{"ha": false, "version": "24.6.1", "active_node": "awxtest", "install_uuid": "00000000-0000-0000-0000-000000000000"})
		return
	}
	if !s.authenticate(w, r) {
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"detail": fmt.Sprintf("Method \"%s\" not allowed.", r.Method)})
		return
	}
	// The views take a path with or without its trailing slash, never one
	// that ServeMux would redirect (empty segments, dots).
	if slices.ContainsFunc(seg, func(e string) bool { return e == "" || e == "." || e == ".." }) {
		notFound(w, r)
		return
	}
	r = r.Clone(r.Context())
	r.URL.Path, r.URL.RawPath = s.prefix+strings.Join(seg, "/")+"/", ""
	s.api.ServeHTTP(w, r)
}

func (s *Server) loginPath() string {
	if s.opts.AAP25 {
		return "/api/gateway/v1/login/"
	}
	return "/api/login/"
}

// sessionCookie is the name of the cookie a login sets (see
// Options.SessionCookie).
func (s *Server) sessionCookie() string {
	switch {
	case s.opts.SessionCookie != "":
		return s.opts.SessionCookie
	case s.opts.AAP25:
		return "gateway_sessionid"
	}
	return "awx_sessionid"
}

func (s *Server) serveRoot(w http.ResponseWriter) {
	if s.opts.AAP25 {
		writeJSON(w, http.StatusOK, map[string]any{
			"apis": map[string]string{
				"gateway": "/api/gateway/", "controller": "/api/controller/",
				"eda": "/api/eda/", "galaxy": "/api/galaxy/",
			},
		})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"description": "AWX REST API", "current_version": "/api/v2/",
		"available_versions": map[string]string{"v2": "/api/v2/"},
		"oauth2":             "/api/o/", "custom_logo": "", "custom_login_info": "", "login_redirect_override": "",
	})
}

// serveLogin is AWX's login view (Django's, with AWX's changes): GET sets
// the CSRF cookie, POST checks it and the credentials, and answers with a
// redirect, a session cookie and the cookie's name in
// X-API-Session-Cookie-Name; wrong credentials get the form again, with 401.
func (s *Server) serveLogin(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		tok := randomHex(16)
		s.mu.Lock()
		s.csrf[tok] = true
		s.mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: "csrftoken", Value: tok, Path: "/"})
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<html><form method=post>login</form></html>")
	case http.MethodPost:
		ck, err := r.Cookie("csrftoken")
		s.mu.Lock()
		valid := err == nil && s.csrf[ck.Value] && r.Header.Get("X-CSRFToken") == ck.Value
		s.mu.Unlock()
		if !valid {
			writeJSON(w, http.StatusForbidden, map[string]any{"detail": "CSRF Failed: CSRF token missing or incorrect."})
			return
		}
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		if !s.checkPassword(r.PostForm.Get("username"), r.PostForm.Get("password")) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, "<html>Please enter a correct username and password.</html>")
			return
		}
		sid := randomHex(16)
		s.mu.Lock()
		s.sessions[sid] = true
		s.mu.Unlock()
		http.SetCookie(w, &http.Cookie{Name: s.sessionCookie(), Value: sid, Path: "/", HttpOnly: true})
		http.SetCookie(w, &http.Cookie{Name: "userLoggedIn", Value: "true", Path: "/"})
		w.Header().Set("X-API-Session-Cookie-Name", s.sessionCookie())
		next := r.PostForm.Get("next")
		if next == "" {
			next = "/api/"
		}
		http.Redirect(w, r, next, http.StatusFound)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (s *Server) checkPassword(user, pass string) bool {
	return subtle.ConstantTimeCompare([]byte(user), []byte(s.Username)) == 1 &&
		subtle.ConstantTimeCompare([]byte(pass), []byte(s.Password)) == 1
}

// authenticate accepts a bearer token, Basic credentials or a session
// cookie (with the CSRF header on unsafe methods), as AWX does, for the
// one user; otherwise it answers as AWX does and returns false.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) bool {
	authz := r.Header.Get("Authorization")
	switch {
	case strings.HasPrefix(authz, "Bearer "):
		s.mu.Lock()
		ok := s.tokens[strings.TrimPrefix(authz, "Bearer ")]
		s.mu.Unlock()
		if ok {
			return true
		}
		// AWX does not say the token is bad: the request is simply
		// unauthenticated.
		writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Authentication credentials were not provided. To establish a login session, visit " + s.loginPath() + "."})
		return false
	case strings.HasPrefix(authz, "Basic "):
		u, p, _ := r.BasicAuth()
		if s.checkPassword(u, p) {
			return true
		}
		writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Invalid username/password."})
		return false
	}
	if ck, err := r.Cookie(s.sessionCookie()); err == nil {
		s.mu.Lock()
		ok := s.sessions[ck.Value]
		s.mu.Unlock()
		if ok {
			if r.Method != http.MethodGet {
				csrf, err := r.Cookie("csrftoken")
				if err != nil || r.Header.Get("X-CSRFToken") != csrf.Value {
					writeJSON(w, http.StatusForbidden, map[string]any{"detail": "CSRF Failed: CSRF token missing."})
					return false
				}
			}
			return true
		}
	}
	writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Authentication credentials were not provided. To establish a login session, visit " + s.loginPath() + "."})
	return false
}

// writeList serves one page of objs, filtered and ordered by the query
// (exact field matches, FIELD__icontains, __gt, __gte, __lt, __lte, search,
// order_by), as AWX's list views do.
func (s *Server) writeList(w http.ResponseWriter, r *http.Request, objs []map[string]any) {
	q := r.URL.Query()
	for k := range q {
		field, _, _ := strings.Cut(k, "__")
		if slices.Contains(preventSearch, field) {
			// AWX marks these fields prevent_search: filtering on them is
			// refused, not ignored.
			writeJSON(w, http.StatusForbidden, map[string]any{"detail": fmt.Sprintf("Filtering on %s is not allowed.", field)})
			return
		}
	}
	size := 25
	// As DRF's get_page_size: a page_size that is not a positive number
	// gives the default, a larger one the maximum.
	if n, err := strconv.Atoi(q.Get("page_size")); err == nil && n > 0 {
		size = min(n, maxPageSize)
	}
	pageNo := 1
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Invalid page."})
			return
		}
		pageNo = n
	}
	var kept []map[string]any
	for _, o := range objs {
		if matches(o, q) {
			kept = append(kept, o)
		}
	}
	if order := q.Get("order_by"); order != "" {
		keys := strings.Split(order, ",")
		slices.SortStableFunc(kept, func(a, b map[string]any) int {
			for _, k := range keys {
				desc := strings.HasPrefix(k, "-")
				k = strings.TrimPrefix(k, "-")
				c := compareValues(a[k], fmt.Sprint(b[k]))
				if desc {
					c = -c
				}
				if c != 0 {
					return c
				}
			}
			return 0
		})
	}
	start := (pageNo - 1) * size
	if start > len(kept) || (start == len(kept) && pageNo > 1) {
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Invalid page."})
		return
	}
	end := min(start+size, len(kept))
	link := func(p int) any {
		u := url.URL{Path: r.URL.Path}
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Set("page", strconv.Itoa(p))
		u.RawQuery = v.Encode()
		return u.String()
	}
	var next, prev any
	if end < len(kept) {
		next = link(pageNo + 1)
	}
	if pageNo > 1 {
		prev = link(pageNo - 1)
	}
	results := kept[start:end]
	if results == nil {
		results = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(kept), "next": next, "previous": prev, "results": results})
}

func matches(o map[string]any, q url.Values) bool {
	for k, vs := range q {
		want := vs[0]
		switch k {
		case "page", "page_size", "order_by":
			continue
		case "search":
			name, _ := o["name"].(string)
			desc, _ := o["description"].(string)
			if !strings.Contains(strings.ToLower(name+" "+desc), strings.ToLower(want)) {
				return false
			}
		default:
			field, lookup, _ := strings.Cut(k, "__")
			v, ok := o[field]
			if !ok {
				continue // unknown filters are ignored here; AWX would 400 on some
			}
			switch lookup {
			case "", "exact":
				if v == nil && want != "" || v != nil && fmt.Sprint(v) != want {
					return false
				}
			case "icontains":
				if v == nil || !strings.Contains(strings.ToLower(fmt.Sprint(v)), strings.ToLower(want)) {
					return false
				}
			case "gt", "gte", "lt", "lte":
				if v == nil {
					return false
				}
				c := compareValues(v, want)
				if lookup == "gt" && c <= 0 || lookup == "gte" && c < 0 || lookup == "lt" && c >= 0 || lookup == "lte" && c > 0 {
					return false
				}
			}
		}
	}
	return true
}

// preventSearch are the fields AWX refuses to filter on (prevent_search in
// its models), such as a job's extra_vars.
var preventSearch = []string{"extra_vars", "job_args", "job_env", "start_args", "survey_passwords"}

// compareValues orders a field's value against a query's text: as times
// when both are timestamps, as numbers when both are numbers, else as text.
func compareValues(v any, want string) int {
	have := fmt.Sprint(v)
	if v == nil {
		have = ""
	}
	if a, err := time.Parse(time.RFC3339Nano, have); err == nil {
		if b, err := time.Parse(time.RFC3339Nano, want); err == nil {
			return a.Compare(b)
		}
	}
	if a, err := strconv.ParseFloat(have, 64); err == nil {
		if b, err := strconv.ParseFloat(want, 64); err == nil {
			return cmp.Compare(a, b)
		}
	}
	return strings.Compare(have, want)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) templateJSON(t *templateDef) map[string]any {
	base := "workflow_job_templates"
	if t.def.JobTemplate {
		base = "job_templates"
	}
	vars, _ := json.Marshal(t.def.ExtraVars)
	o := map[string]any{
		"id": t.id, "type": t.kind(), "url": s.path("%s/%d/", base, t.id),
		"name": t.def.Name, "description": t.def.Description,
		"extra_vars": string(vars), "ask_variables_on_launch": !t.def.NoVariablesPrompt, "ask_inventory_on_launch": !t.def.NoInventoryPrompt,
		"related": map[string]any{"launch": s.path("%s/%d/launch/", base, t.id)},
		"summary_fields": map[string]any{
			"organization":      map[string]any{"id": 1, "name": "Default"},
			"user_capabilities": map[string]bool{"edit": false, "delete": false, "copy": false, "schedule": false, "start": !t.def.NotStartable},
		},
		"inventory": nil,
	}
	if inv := s.inventoryByNameLocked(t.def.Inventory); t.def.Inventory != "" && inv != nil {
		o["inventory"] = inv.id
		o["summary_fields"].(map[string]any)["inventory"] = map[string]any{"id": inv.id, "name": inv.name}
	}
	return o
}

func (s *Server) jobJSON(j *jobState) map[string]any {
	vars, _ := json.Marshal(j.extraVars)
	o := map[string]any{
		"id": j.id, "type": j.typ, "name": j.name, "status": j.status,
		"failed":          j.failed(),
		"job_explanation": j.explanation, "extra_vars": string(vars), "launch_type": "manual",
		"created": timeOrNil(j.created), "modified": timeOrNil(j.created),
		"started": timeOrNil(j.started), "finished": timeOrNil(j.finished),
		"elapsed": elapsed(j),
	}
	if j.inventory != 0 {
		o["inventory"] = j.inventory
	}
	var tmpl any // a template's id; null for a workflow's node jobs here
	if j.top {
		tmpl = j.templateID
	}
	if j.typ == "workflow_job" {
		o["workflow_job_template"] = tmpl
		o["url"] = s.path("workflow_jobs/%d/", j.id)
		o["related"] = map[string]any{
			"workflow_nodes":        s.path("workflow_jobs/%d/workflow_nodes/", j.id),
			"workflow_job_template": s.path("workflow_job_templates/%d/", j.templateID),
		}
		o["summary_fields"] = map[string]any{"workflow_job_template": map[string]any{"id": j.templateID, "name": j.name}}
		return o
	}
	if kind := j.unifiedType(); kind != "job" {
		o["type"] = kind
		o["url"] = s.path("%ss/%d/", kind, j.id)
		o["related"] = map[string]any{
			"events": s.path("%ss/%d/events/", kind, j.id),
			"stdout": s.path("%ss/%d/stdout/", kind, j.id),
		}
		o["result_traceback"] = j.traceback
		return o
	}
	o["job_template"] = tmpl
	o["url"] = s.path("jobs/%d/", j.id)
	o["related"] = map[string]any{
		"job_events": s.path("jobs/%d/job_events/", j.id),
		"stdout":     s.path("jobs/%d/stdout/", j.id),
	}
	o["artifacts"] = j.artifacts
	o["result_traceback"] = j.traceback
	o["playbook"] = strings.ReplaceAll(j.name, " ", "_") + ".yml"
	return o
}

// unifiedType is the job's type in AWX's API: workflow_job, job, or a
// node's project_update or inventory_update.
func (j *jobState) unifiedType() string {
	if j.typ == "job" && j.kind != "" {
		return j.kind
	}
	return j.typ
}

// failed is AWX's UnifiedJob.failed: set for failed, error and canceled.
func (j *jobState) failed() bool {
	return j.status == "failed" || j.status == "error" || j.status == "canceled"
}

func (s *Server) labelJSON(l labelState) map[string]any {
	return map[string]any{"id": l.id, "type": "label", "url": s.path("labels/%d/", l.id), "name": l.name, "organization": l.organization}
}

// createLabelLocked is AWX's POST /labels/: a name and an organization;
// a name the organization has already is refused with 400.
func (s *Server) createLabelLocked(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name         string `json:"name"`
		Organization int    `json:"organization"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"detail": "JSON parse error - " + err.Error()})
		return
	}
	switch {
	case body.Name == "":
		writeJSON(w, http.StatusBadRequest, map[string]any{"name": []string{"This field is required."}})
		return
	case body.Organization == 0:
		writeJSON(w, http.StatusBadRequest, map[string]any{"organization": []string{"This field is required."}})
		return
	case slices.ContainsFunc(s.labels, func(l labelState) bool { return l.name == body.Name && l.organization == body.Organization }):
		writeJSON(w, http.StatusBadRequest, map[string]any{"__all__": []string{"Label with this Name and Organization already exists."}})
		return
	}
	l := labelState{id: s.newIDLocked(), name: body.Name, organization: body.Organization}
	s.labels = append(s.labels, l)
	writeJSON(w, http.StatusCreated, s.labelJSON(l))
}

func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(awxTime)
}

// awxTime is how AWX writes timestamps: UTC, microseconds, always six digits.
const awxTime = "2006-01-02T15:04:05.000000Z07:00"

func elapsed(j *jobState) float64 {
	if j.started.IsZero() {
		return 0
	}
	end := j.finished
	if end.IsZero() {
		end = time.Now()
	}
	return end.Sub(j.started).Seconds()
}

func (s *Server) nodeJSON(n *nodeState) map[string]any {
	o := map[string]any{
		"id": n.id, "type": "workflow_job_node", "url": s.path("workflow_job_nodes/%d/", n.id),
		"workflow_job": n.workflowID, "do_not_run": n.doNotRun, "identifier": n.name, "job": nil,
		"related": map[string]any{"workflow_job": s.path("workflow_jobs/%d/", n.workflowID)},
		"summary_fields": map[string]any{
			"workflow_job": map[string]any{"id": n.workflowID, "name": s.jobs[n.workflowID].name},
		},
	}
	if j := s.jobs[n.jobID]; j != nil {
		o["job"] = j.id
		o["related"].(map[string]any)["job"] = s.path("%ss/%d/", j.unifiedType(), j.id)
		o["summary_fields"].(map[string]any)["job"] = map[string]any{
			"id": j.id, "name": j.name, "description": "", "status": j.status, "type": j.unifiedType(),
			"failed": j.failed(), "elapsed": elapsed(j),
		}
	}
	return o
}

func (s *Server) inventoryJSON(inv *inventoryState) map[string]any {
	n := 0
	for _, h := range s.hosts {
		if h.inventory == inv.id {
			n++
		}
	}
	return map[string]any{
		"id": inv.id, "type": "inventory", "url": s.path("inventories/%d/", inv.id),
		"name": inv.name, "description": inv.description, "kind": "", "total_hosts": n,
		"related": map[string]any{"hosts": s.path("inventories/%d/hosts/", inv.id)},
	}
}

func (s *Server) hostJSON(h *hostState) map[string]any {
	inv := s.inventoryByIDLocked(h.inventory)
	return map[string]any{
		"id": h.id, "type": "host", "url": s.path("hosts/%d/", h.id),
		"name": h.name, "inventory": h.inventory, "variables": h.variables, "enabled": true,
		"related": map[string]any{
			"ansible_facts": s.path("hosts/%d/ansible_facts/", h.id),
			"inventory":     s.path("inventories/%d/", h.inventory),
		},
		"summary_fields": map[string]any{"inventory": map[string]any{"id": inv.id, "name": inv.name}},
	}
}

// launchLocked starts a job of template t: the launch's extra_vars over the
// template's, the launch's inventory or the template's.
func (s *Server) launchLocked(w http.ResponseWriter, r *http.Request, t *templateDef) {
	if t.def.NotStartable {
		writeJSON(w, http.StatusForbidden, map[string]any{"detail": "You do not have permission to perform this action."})
		return
	}
	body, launchVars, problem := readLaunch(r)
	if problem != nil {
		writeJSON(w, http.StatusBadRequest, problem)
		return
	}
	plan, problem := s.planLaunchLocked(t, launchVars, body.Inventory)
	if problem == nil && len(plan.refused) > 0 {
		problem = plan.refused
	}
	if problem != nil {
		writeJSON(w, http.StatusBadRequest, problem)
		return
	}
	var labels []string
	for _, id := range body.Labels {
		i := slices.IndexFunc(s.labels, func(l labelState) bool { return l.id == id })
		if i < 0 {
			writeJSON(w, http.StatusBadRequest, map[string]any{"labels": []string{fmt.Sprintf("Invalid pk \"%d\" - object does not exist.", id)}})
			return
		}
		labels = append(labels, s.labels[i].name)
	}
	j := s.startLocked(t, s.Username, plan.vars, plan.inv)
	j.labels = labels
	o := s.jobJSON(j)
	o["ignored_fields"] = plan.ignored
	if j.typ == "workflow_job" {
		o["workflow_job"] = j.id
	} else {
		o["job"] = j.id
	}
	writeJSON(w, http.StatusCreated, o)
}

// launchRequest is the body of a launch.
type launchRequest struct {
	ExtraVars json.RawMessage `json:"extra_vars"`
	Inventory any             `json:"inventory"`
	Labels    []int           `json:"labels"`
}

// readLaunch decodes a launch's body and its extra_vars, which may be an
// object or a string holding JSON. A bad body gets AWX's answer, problem
// (for a 400).
func readLaunch(r *http.Request) (body launchRequest, vars map[string]any, problem map[string]any) {
	data, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if len(data) > 0 {
		if err := json.Unmarshal(data, &body); err != nil {
			return body, nil, map[string]any{"detail": "JSON parse error - " + err.Error()}
		}
	}
	if len(body.ExtraVars) == 0 || string(body.ExtraVars) == "null" {
		return body, nil, nil
	}
	var str string
	if json.Unmarshal(body.ExtraVars, &str) == nil {
		if str != "" {
			if err := json.Unmarshal([]byte(str), &vars); err != nil {
				return body, nil, map[string]any{"extra_vars": []string{"Cannot parse as JSON (error: " + err.Error() + ")."}}
			}
		}
	} else if err := json.Unmarshal(body.ExtraVars, &vars); err != nil {
		return body, nil, map[string]any{"extra_vars": []string{"Must be a valid JSON or YAML dictionary."}}
	}
	return body, vars, nil
}

// launchPlan is what a launch of a template runs with.
type launchPlan struct {
	vars             map[string]any  // the launch's variables over the template's
	inv              *inventoryState // nil for none
	ignored, refused map[string]any  // launch fields the template does not prompt for
}

// planLaunchLocked applies a launch's variables and inventory (a name or
// an id) to template t. What the template does not prompt for is refused
// (workflows) or ignored (job templates), as AWX's launch serializers do.
// An inventory that does not exist gets AWX's answer, problem (for a 400).
func (s *Server) planLaunchLocked(t *templateDef, launchVars map[string]any, wantInv any) (plan launchPlan, problem map[string]any) {
	plan = launchPlan{vars: cloneJSON(t.def.ExtraVars), ignored: map[string]any{}, refused: map[string]any{}}
	notPrompted := func(field string, value any, msg string) {
		if t.def.JobTemplate {
			plan.ignored[field] = value
		} else {
			plan.refused[field] = []string{msg}
		}
	}
	if t.def.NoVariablesPrompt {
		rejected := map[string]any{}
		for k, v := range launchVars {
			if tv, ok := plan.vars[k]; !ok || !reflect.DeepEqual(tv, v) {
				rejected[k] = v
			}
		}
		if len(rejected) > 0 {
			notPrompted("extra_vars", rejected, fmt.Sprintf("Variables %s are not allowed on launch. Check the Prompt on Launch setting on the Workflow Job Template to include Extra Variables.", strings.Join(slices.Sorted(maps.Keys(rejected)), ", ")))
		}
		launchVars = nil
	}
	for k, v := range launchVars {
		plan.vars[k] = v
	}
	if wantInv != nil {
		plan.inv = s.inventoryByNameLocked(fmt.Sprint(wantInv))
		if f, ok := wantInv.(float64); ok {
			plan.inv = s.inventoryByIDLocked(int(f))
		}
		if plan.inv == nil {
			return plan, map[string]any{"inventory": []string{fmt.Sprintf("Invalid pk \"%v\" - object does not exist.", wantInv)}}
		}
	}
	var own *inventoryState
	if t.def.Inventory != "" {
		own = s.inventoryByNameLocked(t.def.Inventory)
	}
	if plan.inv == nil {
		plan.inv = own
	} else if plan.inv != own && t.def.NoInventoryPrompt {
		notPrompted("inventory", plan.inv.id, "Field is not configured to prompt on launch.")
		plan.inv = own
	}
	return plan, nil
}

// cancelLocked is AWX's cancel view: GET says whether the job can be
// cancelled; POST cancels a pending or running job (202), else 405.
func (s *Server) cancelLocked(w http.ResponseWriter, r *http.Request, j *jobState) {
	running := j.status == "pending" || j.status == "waiting" || j.status == "running"
	if r.Method == http.MethodGet {
		writeJSON(w, http.StatusOK, map[string]any{"can_cancel": running})
		return
	}
	if !running || j.canceled == nil {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"detail": `Method "POST" not allowed.`})
		return
	}
	select {
	case <-j.canceled:
	default:
		close(j.canceled)
	}
	w.WriteHeader(http.StatusAccepted)
}
