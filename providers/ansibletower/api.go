package ansibletower

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// The AWX API's objects, as far as the provider reads them.

// page is one page of a list endpoint.
type page[T any] struct {
	Count   int     `json:"count"`
	Next    *string `json:"next"`
	Results []T     `json:"results"`
}

// pageSize is the largest page AWX serves.
const pageSize = 200

// listAll follows a list endpoint's "next" links and returns every result.
func listAll[T any](ctx context.Context, c *client, path string, query url.Values) ([]T, error) {
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("page_size", strconv.Itoa(pageSize))
	next := path + "?" + q.Encode()
	var all []T
	for pages := 0; next != ""; pages++ {
		if pages > 10000 {
			return nil, fmt.Errorf("GET %s: more than 10000 pages; giving up", c.resolve(path))
		}
		var p page[T]
		if err := c.get(ctx, next, &p); err != nil {
			return nil, err
		}
		all = append(all, p.Results...)
		next = ""
		if p.Next != nil && *p.Next != "" {
			next = relativeURL(*p.Next)
		}
	}
	return all, nil
}

// relativeURL keeps the path and query of an absolute "next" link, so paging
// stays on the base URL the user configured (behind proxies AWX may answer
// with its own host name).
func relativeURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() {
		return s
	}
	if u.RawQuery != "" {
		return u.Path + "?" + u.RawQuery
	}
	return u.Path
}

// template is a workflow_job_template or a job_template.
type template struct {
	ID           int    `json:"id"`
	Type         string `json:"type"`
	URL          string `json:"url"`
	Name         string `json:"name"`
	Description  string `json:"description"`
	ExtraVars    string `json:"extra_vars"`
	Inventory    *int   `json:"inventory"`
	AskInventory bool   `json:"ask_inventory_on_launch"`
	AskVariables bool   `json:"ask_variables_on_launch"`
	Related      struct {
		Launch string `json:"launch"`
	} `json:"related"`
	SummaryFields struct {
		UserCapabilities map[string]bool `json:"user_capabilities"`
		Organization     *struct {
			ID int `json:"id"`
		} `json:"organization"`
		Inventory *struct {
			ID   int    `json:"id"`
			Name string `json:"name"`
		} `json:"inventory"`
	} `json:"summary_fields"`
}

// startable says whether the user may launch t.
func (t *template) startable() bool {
	start, ok := t.SummaryFields.UserCapabilities["start"]
	return !ok || start
}

// job is a workflow_job, a job, or another unified job a workflow node ran
// (project_update, inventory_update, workflow_approval).
type job struct {
	ID              int            `json:"id"`
	Type            string         `json:"type"`
	URL             string         `json:"url"`
	Name            string         `json:"name"`
	Status          string         `json:"status"`
	Failed          bool           `json:"failed"`
	JobExplanation  string         `json:"job_explanation"`
	ResultTraceback string         `json:"result_traceback"`
	ExtraVars       string         `json:"extra_vars"` // JSON or YAML text
	Artifacts       map[string]any `json:"artifacts"`
	Related         struct {
		WorkflowNodes string `json:"workflow_nodes"`
		JobEvents     string `json:"job_events"` // a playbook job's
		Events        string `json:"events"`     // a project or inventory update's
	} `json:"related"`
}

// finished says whether a job's status is final.
func finished(status string) bool {
	switch status {
	case "successful", "failed", "error", "canceled":
		return true
	}
	return false
}

// launched is the answer to a launch: the new job, whatever its kind.
type launched struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	URL         string `json:"url"`
	Job         int    `json:"job"`
	WorkflowJob int    `json:"workflow_job"`
	// IgnoredFields are launch fields the template does not prompt for.
	IgnoredFields map[string]any `json:"ignored_fields"`
}

// workflowNode is a node of a running or finished workflow job.
type workflowNode struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Related struct {
		Job string `json:"job"`
	} `json:"related"`
	SummaryFields struct {
		Job *struct {
			ID     int    `json:"id"`
			Name   string `json:"name"`
			Status string `json:"status"`
			Failed bool   `json:"failed"`
			Type   string `json:"type"`
		} `json:"job"`
	} `json:"summary_fields"`
}

// jobEvent is one event of a job's playbook run.
type jobEvent struct {
	ID        int    `json:"id"`
	Counter   int    `json:"counter"`
	Event     string `json:"event"`
	Failed    bool   `json:"failed"`
	Task      string `json:"task"`
	EventData struct {
		Play string         `json:"play"`
		Task string         `json:"task"`
		Res  map[string]any `json:"res"`
	} `json:"event_data"`
}

// inventoryObj is an AWX inventory.
type inventoryObj struct {
	ID          int    `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Kind        string `json:"kind"`
	Related     struct {
		Hosts string `json:"hosts"`
	} `json:"related"`
}

// hostObj is a host of an AWX inventory.
type hostObj struct {
	ID        int    `json:"id"`
	Type      string `json:"type"`
	Name      string `json:"name"`
	Inventory int    `json:"inventory"`
	Variables string `json:"variables"`
	Related   struct {
		AnsibleFacts string `json:"ansible_facts"`
	} `json:"related"`
	SummaryFields struct {
		Inventory *struct {
			ID   int    `json:"id"`
			Name string `json:"name"`
		} `json:"inventory"`
	} `json:"summary_fields"`
}

// user is an entry of /me/.
type user struct {
	ID       int    `json:"id"`
	Username string `json:"username"`
}

// parseVars reads AWX's variables and extra_vars strings, which hold JSON
// or YAML (AWX accepts both).
func parseVars(s string) (map[string]any, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "---" {
		return map[string]any{}, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err == nil {
		if m == nil {
			m = map[string]any{}
		}
		return m, nil
	}
	return parseYAMLVars(s)
}
