package awxtest

import (
	"errors"
	"fmt"
	"time"
)

// startLocked creates the job (and, for a workflow, its nodes) and runs it
// in the background.
func (s *Server) startLocked(t *templateDef, user string, vars map[string]any, inv *inventoryState) *jobState {
	j := &jobState{
		id: s.newIDLocked(), typ: "workflow_job", name: t.def.Name, templateID: t.id,
		status: "pending", extraVars: vars, top: true, canceled: make(chan struct{}), created: time.Now(),
	}
	if t.def.JobTemplate {
		j.typ = "job"
	}
	invName := ""
	if inv != nil {
		j.inventory, invName = inv.id, inv.name
	}
	s.jobs[j.id] = j
	var nodes []*nodeState
	if !t.def.JobTemplate {
		for _, n := range t.def.Nodes {
			ns := &nodeState{id: s.newIDLocked(), workflowID: j.id, name: n.Name}
			s.nodes[ns.id] = ns
			j.nodeIDs = append(j.nodeIDs, ns.id)
			nodes = append(nodes, ns)
		}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.execute(t, j, nodes, user, invName)
	}()
	return j
}

// execute runs a launched job: a job template's one playbook, or a
// workflow's nodes in order until one fails.
func (s *Server) execute(t *templateDef, j *jobState, nodes []*nodeState, user, inv string) {
	share := s.opts.JobTime
	if n := len(t.def.Nodes); n > 1 {
		share /= time.Duration(n)
	}
	s.mu.Lock()
	j.status, j.started = "running", time.Now()
	s.mu.Unlock()
	finish := func(status, explanation string) {
		s.mu.Lock()
		j.status, j.finished = status, time.Now()
		if explanation != "" {
			j.explanation = explanation
		}
		s.mu.Unlock()
	}
	if t.def.JobTemplate {
		if len(t.def.Nodes) == 0 {
			finish("successful", "")
			return
		}
		s.runJob(j, t.def.Nodes[0], share, user, inv, j.id)
		s.mu.Lock()
		status := j.status
		s.mu.Unlock()
		finish(status, "")
		return
	}
	for i, n := range t.def.Nodes {
		s.mu.Lock()
		select {
		case <-j.canceled:
			for _, rest := range nodes[i:] {
				rest.doNotRun = true
			}
			s.mu.Unlock()
			finish("canceled", "Job canceled by user.")
			return
		default:
		}
		child := &jobState{id: s.newIDLocked(), typ: "job", kind: n.Kind, name: n.Name, status: "running", created: time.Now(), started: time.Now(), extraVars: j.extraVars, inventory: j.inventory, canceled: j.canceled}
		s.jobs[child.id] = child
		nodes[i].jobID = child.id
		s.mu.Unlock()
		s.runJob(child, n, share, user, inv, j.id)
		s.mu.Lock()
		failed := child.status != "successful"
		if failed {
			for _, rest := range nodes[i+1:] {
				rest.doNotRun = true
			}
		}
		s.mu.Unlock()
		if child.status == "canceled" {
			finish("canceled", "Job canceled by user.")
			return
		}
		if failed {
			finish("failed", fmt.Sprintf("No error handling path for workflow job node(s) [%d]. Workflow job node(s) missing unified job template and error handling path [].", nodes[i].id))
			return
		}
	}
	finish("successful", "")
}

// runJob runs one playbook job: waits its share of the job time, calls the
// node, and records artifacts, events and status.
func (s *Server) runJob(j *jobState, n Node, share time.Duration, user, inv string, workflowID int) {
	s.mu.Lock()
	j.status, j.started = "running", time.Now()
	vars := cloneJSON(j.extraVars)
	s.mu.Unlock()
	t := time.NewTimer(share)
	canceled := ""
	select {
	case <-s.ctx.Done():
		canceled = "Server stopped."
	case <-j.canceled:
		canceled = "Job canceled by user."
	case <-t.C:
	}
	if canceled != "" {
		t.Stop()
		s.mu.Lock()
		j.status, j.finished, j.explanation = "canceled", time.Now(), canceled
		s.mu.Unlock()
		return
	}
	run := &Run{Vars: vars, Inventory: inv, User: user, JobID: j.id, WorkflowJobID: workflowID, Artifacts: map[string]any{}, Server: s}
	var err error
	if n.Run != nil {
		err = n.Run(s.ctx, run)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j.finished = time.Now()
	j.artifacts = run.Artifacts
	counter := 1
	event := func(name string, failed bool, task string, res map[string]any) {
		ev := map[string]any{
			"id": s.newIDLocked(), "type": "job_event", "job": j.id, "counter": counter,
			"event": name, "failed": failed, "task": task, "play": n.Name,
			"created":    time.Now().UTC().Format(awxTime),
			"event_data": map[string]any{"play": n.Name, "task": task},
		}
		if res != nil {
			ev["event_data"].(map[string]any)["res"] = res
		}
		j.events = append(j.events, ev)
		counter++
	}
	event("playbook_on_start", false, "", nil)
	var tf *TaskFailure
	var jf *JobFailure
	switch {
	case err == nil:
		event("runner_on_ok", false, n.Name, map[string]any{"changed": true})
		j.status = "successful"
	case errors.As(err, &tf):
		event("runner_on_ok", false, "gather facts", map[string]any{"changed": false})
		event("runner_on_failed", true, tf.Task, map[string]any{"msg": tf.Msg, "changed": false})
		event("playbook_on_stats", false, "", nil)
		j.status = "failed"
	case errors.As(err, &jf):
		j.status, j.explanation, j.traceback = "error", jf.Explanation, jf.Traceback
	default:
		event("runner_on_failed", true, n.Name, map[string]any{"msg": err.Error()})
		j.status = "failed"
	}
}
