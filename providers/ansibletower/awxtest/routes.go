package awxtest

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// routes returns the API's views below the prefix, for the authenticated
// requests that serve passes on with their path made canonical (one
// trailing slash). Each view runs under s.mu; whatever no view matches is
// AWX's 404.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	// handle registers f for method ("" for GET and POST) and path.
	handle := func(method, path string, f http.HandlerFunc) {
		pattern := strings.TrimSpace(method + " " + s.prefix + path + "{$}")
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			s.mu.Lock()
			defer s.mu.Unlock()
			f(w, r)
		})
	}
	mux.HandleFunc("/", notFound)

	handle("GET", "me/", func(w http.ResponseWriter, r *http.Request) {
		s.writeList(w, r, []map[string]any{{"id": 1, "type": "user", "url": s.path("users/1/"), "username": s.Username, "is_superuser": false}})
	})
	for _, kind := range []string{"workflow_job_templates", "job_templates"} {
		handle("GET", kind+"/", func(w http.ResponseWriter, r *http.Request) { s.listTemplates(w, r, kind) })
		handle("GET", kind+"/{id}/", s.templateView(kind, func(w http.ResponseWriter, r *http.Request, t *templateDef) {
			writeJSON(w, http.StatusOK, s.templateJSON(t))
		}))
		handle("GET", kind+"/{id}/launch/", s.templateView(kind, func(w http.ResponseWriter, r *http.Request, t *templateDef) {
			writeJSON(w, http.StatusOK, map[string]any{"can_start_without_user_input": true, "ask_variables_on_launch": !t.def.NoVariablesPrompt, "ask_inventory_on_launch": !t.def.NoInventoryPrompt, "variables_needed_to_start": []string{}})
		}))
		handle("POST", kind+"/{id}/launch/", s.templateView(kind, s.launchLocked))
	}

	for _, kind := range []string{"workflow_jobs", "jobs"} {
		handle("GET", kind+"/", func(w http.ResponseWriter, r *http.Request) { s.listJobs(w, r, kind) })
		handle("", kind+"/{id}/cancel/", s.jobView(kind, s.cancelLocked))
	}
	for _, kind := range []string{"workflow_jobs", "jobs", "project_updates", "inventory_updates"} {
		handle("GET", kind+"/{id}/", s.jobView(kind, func(w http.ResponseWriter, r *http.Request, j *jobState) {
			writeJSON(w, http.StatusOK, s.jobJSON(j))
		}))
	}
	writeEvents := func(w http.ResponseWriter, r *http.Request, j *jobState) { s.writeList(w, r, j.events) }
	handle("GET", "jobs/{id}/job_events/", s.jobView("jobs", writeEvents))
	handle("GET", "project_updates/{id}/events/", s.jobView("project_updates", writeEvents))
	handle("GET", "inventory_updates/{id}/events/", s.jobView("inventory_updates", writeEvents))
	handle("GET", "workflow_jobs/{id}/workflow_nodes/", s.jobView("workflow_jobs", func(w http.ResponseWriter, r *http.Request, j *jobState) {
		var objs []map[string]any
		for _, nid := range j.nodeIDs {
			objs = append(objs, s.nodeJSON(s.nodes[nid]))
		}
		s.writeList(w, r, objs)
	}))
	handle("GET", "workflow_job_nodes/{id}/", func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(r)
		if n := s.nodes[id]; ok && n != nil {
			writeJSON(w, http.StatusOK, s.nodeJSON(n))
			return
		}
		notFound(w, r)
	})

	handle("GET", "labels/", func(w http.ResponseWriter, r *http.Request) {
		var objs []map[string]any
		for _, l := range s.labels {
			objs = append(objs, s.labelJSON(l))
		}
		s.writeList(w, r, objs)
	})
	handle("POST", "labels/", s.createLabelLocked)

	s.inventoryRoutes(handle)
	return mux
}

// inventoryRoutes registers the views of inventories and their hosts.
func (s *Server) inventoryRoutes(handle func(method, path string, f http.HandlerFunc)) {
	handle("GET", "inventories/", func(w http.ResponseWriter, r *http.Request) {
		var objs []map[string]any
		for _, inv := range s.inventories {
			objs = append(objs, s.inventoryJSON(inv))
		}
		s.writeList(w, r, objs)
	})
	inventoryView := func(f func(http.ResponseWriter, *http.Request, *inventoryState)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			id, ok := pathID(r)
			if inv := s.inventoryByIDLocked(id); ok && inv != nil {
				f(w, r, inv)
				return
			}
			notFound(w, r)
		}
	}
	handle("GET", "inventories/{id}/", inventoryView(func(w http.ResponseWriter, r *http.Request, inv *inventoryState) {
		writeJSON(w, http.StatusOK, s.inventoryJSON(inv))
	}))
	handle("GET", "inventories/{id}/hosts/", inventoryView(func(w http.ResponseWriter, r *http.Request, inv *inventoryState) {
		var objs []map[string]any
		for _, h := range s.hosts {
			if h.inventory == inv.id {
				objs = append(objs, s.hostJSON(h))
			}
		}
		s.writeList(w, r, objs)
	}))

	handle("GET", "hosts/", func(w http.ResponseWriter, r *http.Request) {
		var objs []map[string]any
		for _, h := range s.hosts {
			objs = append(objs, s.hostJSON(h))
		}
		s.writeList(w, r, objs)
	})
	hostView := func(f func(http.ResponseWriter, *hostState)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			id, ok := pathID(r)
			for _, h := range slices.Backward(s.hosts) {
				if ok && h.id == id {
					f(w, h)
					return
				}
			}
			notFound(w, r)
		}
	}
	handle("GET", "hosts/{id}/", hostView(func(w http.ResponseWriter, h *hostState) { writeJSON(w, http.StatusOK, s.hostJSON(h)) }))
	handle("GET", "hosts/{id}/ansible_facts/", hostView(func(w http.ResponseWriter, h *hostState) { writeJSON(w, http.StatusOK, h.facts) }))
}

// notFound is AWX's answer for a path or an object that does not exist.
func notFound(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
}

// pathID reads the {id} of the request's path.
func pathID(r *http.Request) (int, bool) {
	id, err := strconv.Atoi(r.PathValue("id"))
	return id, err == nil
}

// listTemplates lists the workflow or job templates (kind is the
// collection: workflow_job_templates or job_templates).
func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request, kind string) {
	var objs []map[string]any
	for _, t := range s.templates {
		if (kind == "job_templates") == t.def.JobTemplate {
			objs = append(objs, s.templateJSON(t))
		}
	}
	s.writeList(w, r, objs)
}

// templateView serves f with the template of the request's id, if it is
// one of the collection kind.
func (s *Server) templateView(kind string, f func(http.ResponseWriter, *http.Request, *templateDef)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(r)
		t := s.templateByIDLocked(id)
		if !ok || t == nil || (kind == "job_templates") != t.def.JobTemplate {
			notFound(w, r)
			return
		}
		f(w, r, t)
	}
}

// listJobs lists every job of the collection kind (workflow_jobs or jobs),
// a workflow's node jobs included, oldest first unless ordered otherwise.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request, kind string) {
	typ := strings.TrimSuffix(kind, "s")
	var objs []map[string]any
	for _, id := range slices.Sorted(maps.Keys(s.jobs)) {
		if j := s.jobs[id]; j.typ == typ && j.unifiedType() == typ {
			objs = append(objs, s.jobJSON(j))
		}
	}
	s.writeList(w, r, objs)
}

// jobView serves f with the job of the request's id, if it is one of the
// collection kind: workflow_jobs, jobs (a playbook run: a job template's,
// or a workflow's node), project_updates or inventory_updates (nodes of a
// workflow, jobs of type "job" here).
func (s *Server) jobView(kind string, f func(http.ResponseWriter, *http.Request, *jobState)) http.HandlerFunc {
	typ := strings.TrimSuffix(kind, "s")
	update := kind == "project_updates" || kind == "inventory_updates"
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(r)
		j := s.jobs[id]
		if !ok || j == nil || j.unifiedType() != typ || !update && j.typ != typ {
			notFound(w, r)
			return
		}
		f(w, r, j)
	}
}
