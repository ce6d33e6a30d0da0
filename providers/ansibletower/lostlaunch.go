package ansibletower

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// A launch whose answer never arrives (the request timed out, the caller's
// context ended, the connection broke after the request was written) may
// still have started a job, and the job may make VMs. So a checkout sends a
// marker with its launch, the extra var markerVar holding the checkout's
// inventory id, and records beforehand how to find the job (the data keys
// below). The job is then looked up among its template's recent jobs: AWX
// refuses filters on extra_vars (prevent_search), so jobs created since
// shortly before the launch are listed newest first and their extra_vars
// read.

// markerVar is the extra var that carries a checkout's inventory id in its
// launch.
const markerVar = "_broker_request_id"

// Record data (inventory Meta.Data) of a launch under way.
const (
	dataMarker   = "launch_marker"      // markerVar's value
	dataKind     = "launch_kind"        // workflow | job_template
	dataTemplate = "launch_template_id" // the template's id
	dataStarted  = "launch_started"     // when the launch was sent (RFC 3339, this machine's clock)
)

const (
	// launchSkew is how much earlier than launch_started a job may have
	// been created by the server's clock.
	launchSkew = 15 * time.Minute
	// lookupGrace is how long after request_timeout a launch still under
	// way at the server may create its job.
	lookupGrace = 5 * time.Second
	// lookupMaxWait bounds how long findLaunch waits for a job to appear.
	lookupMaxWait = 30 * time.Second
	// lookupPoll is the pause between two looks.
	lookupPoll = 500 * time.Millisecond
)

// lostLaunchError is a launch that may have started a job although its
// answer never came. data says how to find the job (findLaunch).
type lostLaunchError struct {
	err      error
	data     map[string]any
	inFlight bool // the server may still be working on the launch
}

func (e *lostLaunchError) Error() string { return e.err.Error() }
func (e *lostLaunchError) Unwrap() error { return e.err }

// mayHaveLaunched says whether a launch that failed with err, after its
// request was written, may have started a job: every failure but an answer
// of the API that refused it (4xx). A 5xx may come from a proxy that passed
// the launch on; an answer that could not be read was a success.
func mayHaveLaunched(err error) bool {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode >= 500
	}
	return true
}

// inFlight says whether the server may still be working on a launch that
// failed with err: no answer came, or a gateway timed out (504). After any
// other answer the launch is over, and one look finds its job if any.
func inFlight(err error) bool {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode == http.StatusGatewayTimeout
	}
	var dec *decodeError
	return !errors.As(err, &dec)
}

// findLaunch looks for the job launched with data's marker (dataMarker and
// the other keys above). When the launch may still be on its way through
// the server (wait), it looks again while it could be: until
// request_timeout and a grace after launch_started, at most lookupMaxWait
// from now. It returns the job's data (job_id, job_type, api_url, ui_url),
// or nil when no job carries the marker. checkedOut stands in for a missing
// launch_started.
func (p *Provider) findLaunch(ctx context.Context, data map[string]any, wait bool, checkedOut time.Time) (map[string]any, error) {
	marker, _ := data[dataMarker].(string)
	kind, _ := data[dataKind].(string)
	tmplID := anyInt(data[dataTemplate])
	if marker == "" || (kind != "workflow" && kind != "job_template") || tmplID <= 0 {
		return nil, fmt.Errorf("record of the launch is incomplete (%s %q, %s %q, %s %v)", dataMarker, marker, dataKind, kind, dataTemplate, data[dataTemplate])
	}
	started := checkedOut
	if s, ok := data[dataStarted].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			started = t
		}
	}
	if t, ok := data[dataStarted].(time.Time); ok { // a YAML timestamp
		started = t
	}
	deadline := started.Add(p.set.requestTimeout + lookupGrace)
	if latest := time.Now().Add(lookupMaxWait); deadline.After(latest) {
		deadline = latest
	}
	if !wait {
		deadline = time.Time{}
	}
	query := url.Values{"order_by": {"-created"}}
	query.Set(map[string]string{"workflow": "workflow_job_template", "job_template": "job_template"}[kind], strconv.Itoa(tmplID))
	if !started.IsZero() {
		query.Set("created__gte", started.Add(-launchSkew).UTC().Format("2006-01-02T15:04:05Z"))
	}
	for {
		jobs, err := listAll[job](ctx, p.c, jobPath(kind), query)
		if err != nil {
			return nil, fmt.Errorf("look for the job launched with %s=%s: %w", markerVar, marker, err)
		}
		for _, j := range jobs {
			vars, err := parseVars(j.ExtraVars)
			if err != nil || fmt.Sprint(vars[markerVar]) != marker {
				continue
			}
			jobURL := j.URL
			if jobURL == "" {
				jobURL = fmt.Sprintf("%s%d/", jobPath(kind), j.ID)
			}
			return map[string]any{"job_id": j.ID, "job_type": j.Type, "api_url": p.c.resolve(jobURL), "ui_url": p.uiURL(kind, j.ID)}, nil
		}
		if !time.Now().Before(deadline) {
			return nil, nil
		}
		t := time.NewTimer(lookupPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("look for the job launched with %s=%s: %w", markerVar, marker, ctx.Err())
		case <-t.C:
		}
	}
}

// anyInt reads a number from record data (int in memory, int or float64
// after a round trip through YAML or JSON, or text).
func anyInt(v any) int {
	switch v := v.(type) {
	case int:
		return v
	case int64:
		return int(v)
	case uint64:
		return int(v)
	case float64:
		return int(v)
	case string:
		n, _ := strconv.Atoi(v)
		return n
	}
	return 0
}
