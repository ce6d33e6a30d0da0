package ansibletower

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hostbroker/broker/internal/plain"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// Realistic answers of the AWX API, as seeds.
var seedBodies = []string{
	`{"description":"AWX REST API","current_version":"/api/v2/","available_versions":{"v2":"/api/v2/"}}`,
	`{"apis":{"controller":"/api/controller/","gateway":"/api/gateway/"}}`,
	`{"count":1,"next":null,"previous":null,"results":[{"id":1,"type":"user","username":"admin"}]}`,
	`{"count":1,"next":"/api/v2/workflow_job_templates/?page=2","previous":null,"results":[{"id":7,"type":"workflow_job_template","name":"deploy-vm","related":{"launch":"/api/v2/workflow_job_templates/7/launch/"},"summary_fields":{"user_capabilities":{"start":true}},"extra_vars":"template: x"}]}`,
	`{"id":9,"type":"workflow_job","url":"/api/v2/workflow_jobs/9/","workflow_job":9,"status":"successful","related":{"workflow_nodes":"/api/v2/workflow_jobs/9/workflow_nodes/"}}`,
	`{"count":2,"next":null,"results":[{"id":3,"type":"workflow_job_node","related":{"job":"/api/v2/jobs/4/"},"summary_fields":{"job":{"id":4,"name":"n","status":"failed","failed":true,"type":"job"}}}]}`,
	`{"id":4,"type":"job","status":"failed","artifacts":{"_broker_facts":{"fqdn":"h.example.test","name":"h"},"_broker_args":{"workflow":"deploy-vm"},"vm_name":["h"]},"related":{"job_events":"/api/v2/jobs/4/job_events/"}}`,
	`{"count":1,"next":null,"results":[{"id":5,"counter":2,"event":"runner_on_failed","failed":true,"event_data":{"task":"t","res":{"msg":"boom"}}}]}`,
	`{"detail":"Invalid token."}`,
	`<html>502 Bad Gateway</html>`,
	``,
}

// FuzzResponses serves one arbitrary answer to every request and drives the
// provider through open, checkout, sync and describe: it must never panic
// nor hang, and every failure must be an error that says where it came from.
func FuzzResponses(f *testing.F) {
	for _, b := range seedBodies {
		f.Add([]byte(b), uint16(200))
	}
	f.Add([]byte(seedBodies[8]), uint16(401))
	f.Add([]byte(seedBodies[9]), uint16(502))
	f.Add([]byte(`{"count":1,"next":"http://elsewhere.invalid/api/v2/x/?page=2","results":[]}`), uint16(200))
	f.Fuzz(func(t *testing.T, body []byte, status uint16) {
		code := int(status%500) + 100
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_, _ = w.Write(body)
		}))
		defer srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p, err := Open(ctx, providers.Config{
			Provider: Name,
			Settings: map[string]any{
				"base_url": srv.URL, "token": "fuzz-secret-token", "request_timeout": 2,
				"max_resilient_wait": 0.01, "workflow_timeout": 0.5, "workflow_poll_interval": 0.05,
			},
			Logger: slog.New(slog.DiscardHandler),
		})
		checkErr := func(what string, err error) {
			if err == nil {
				return
			}
			msg := err.Error()
			if msg == "" {
				t.Fatalf("%s: empty error", what)
			}
			if strings.Contains(msg, "fuzz-secret-token") {
				t.Fatalf("%s: the token leaked into the error: %s", what, msg)
			}
		}
		checkErr("open", err)
		if err != nil {
			return
		}
		_, err = p.Checkout(ctx, providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"workflow": "deploy-vm"}})
		checkErr("checkout", err)
		_, err = p.Sync(ctx, "")
		checkErr("sync", err)
		_, err = p.Describe(ctx, "")
		checkErr("describe", err)
	})
}

// FuzzArtifacts feeds arbitrary artifacts to the code that reads a host
// from them.
func FuzzArtifacts(f *testing.F) {
	f.Add(`{"_broker_facts":{"fqdn":"h.example.test","name":"h","ansible_port":2222},"_broker_args":{"workflow":"w"}}`)
	f.Add(`{"nested":{"deep":{"host_fqdn":["a.example.test","b"]}},"vm_provisioned":"vm1","vm_name":["vm1",3]}`)
	f.Add(`{"_broker_facts":"not a map","fqdn":7}`)
	f.Fuzz(func(t *testing.T, data string) {
		var artifacts map[string]any
		if json.Unmarshal([]byte(data), &artifacts) != nil {
			return
		}
		rec, err := hostFromArtifacts(artifacts)
		if err != nil {
			if !strings.Contains(err.Error(), "artifact") {
				t.Fatalf("error does not say what was wrong: %v", err)
			}
		} else if rec.Hostname == "" || rec.Name == "" {
			t.Fatalf("a host with no hostname or name: %+v", rec)
		}
		_ = vmNames(artifacts)
		merged := map[string]any{}
		plain.Merge(merged, artifacts)
		plain.Merge(merged, artifacts)
		_ = intFact(artifacts, "ansible_port")
	})
}

// FuzzVars feeds arbitrary variables text (JSON or YAML, as AWX stores it).
func FuzzVars(f *testing.F) {
	f.Add("fqdn: a.example.test\nansible_host: 10.0.0.1\n")
	f.Add(`{"fqdn": "a", "n": [1, {"x": null}]}`)
	f.Add("---\n")
	f.Add("- a list\n")
	f.Add("? [complex]\n: key\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseVars(s)
		if err != nil {
			if !strings.Contains(err.Error(), "JSON nor YAML") {
				t.Fatalf("unclear error: %v", err)
			}
			return
		}
		if m == nil {
			t.Fatal("nil map without error")
		}
		if _, err := json.Marshal(m); err != nil {
			t.Fatalf("variables are not JSON-like: %v", err)
		}
	})
}
