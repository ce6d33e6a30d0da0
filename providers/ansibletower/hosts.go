package ansibletower

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/hostbroker/broker/internal/plain"
	"github.com/hostbroker/broker/inventory"
)

// hostFromArtifacts reads the host a workflow made from its artifacts:
// _broker_facts (hostname from a key ending in "fqdn", name from "name" or
// "vm_provisioned") and _broker_args, as the Python broker does. Artifacts
// without _broker_facts are searched whole (older workflows).
func hostFromArtifacts(artifacts map[string]any) (*inventory.Record, error) {
	facts, _ := artifacts["_broker_facts"].(map[string]any)
	args, _ := artifacts["_broker_args"].(map[string]any)
	search := facts
	if search == nil {
		search = artifacts
	}
	flat := map[string]any{}
	flatten("", search, flat)
	var hostname, name string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range flat {
			if !yield(k) {
				return
			}
		}
	}) {
		v := first(flat[k])
		if v == "" {
			continue
		}
		if hostname == "" && strings.HasSuffix(k, "fqdn") {
			hostname = v
		}
		if name == "" && (k == "name" || k == "vm_provisioned" || k == "vm_name") {
			name = v
		}
	}
	if hostname == "" {
		return nil, fmt.Errorf("the artifacts name no host (no key ending in fqdn in _broker_facts; artifact keys: %s)", strings.Join(sortedKeys(artifacts), ", "))
	}
	if name == "" {
		name = hostname
	}
	rec := &inventory.Record{Hostname: hostname, Name: name, Args: map[string]any{}, Facts: map[string]any{}}
	for k, v := range args {
		if !empty(v) {
			rec.Args[k] = v
		}
	}
	for k, v := range facts {
		if !empty(v) {
			rec.Facts[k] = v
		}
	}
	if ip := first(flat["ansible_host"]); ip != "" {
		rec.IP = ip
	} else if ip := first(flat["ip"]); ip != "" {
		rec.IP = ip
	}
	return rec, nil
}

// flatten writes nested maps as dotted keys; leaf keys stay findable by
// suffix.
func flatten(prefix string, m map[string]any, out map[string]any) {
	for k, v := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok {
			flatten(key, sub, out)
			continue
		}
		out[key] = v
	}
}

// first returns a string value, or the first of a list of strings.
func first(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []any:
		if len(v) > 0 {
			s, _ := v[0].(string)
			return s
		}
	}
	return ""
}

func empty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case bool:
		return !v
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

// vmNames lists the vm_name artifacts (a string or a list).
func vmNames(artifacts map[string]any) []string {
	switch v := artifacts["vm_name"].(type) {
	case string:
		if v != "" {
			return []string{v}
		}
	case []any:
		var out []string
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// parseYAMLVars reads variables written as YAML.
func parseYAMLVars(s string) (map[string]any, error) {
	var m map[string]any
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("variables are neither JSON nor YAML: %w", err)
	}
	if m == nil {
		m = map[string]any{}
	}
	return plain.Value(m).(map[string]any), nil
}

// Sync lists the hosts of every inventory whose name mentions user ("" for
// the provider's user, "@ll" for all), or of the instance's configured
// inventory, as records: name, hostname (fqdn variable or ansible_fqdn fact),
// ip (ansible_host), tower_inventory, and _broker_args/_broker_facts from the
// host's facts.
func (p *Provider) Sync(ctx context.Context, who string) ([]*inventory.Record, error) {
	if who == "" {
		who = p.username
	}
	var invs []inventoryObj
	all, err := listAll[inventoryObj](ctx, p.c, "inventories/", nil)
	if err != nil {
		return nil, fmt.Errorf("ansibletower: sync: list inventories: %w", authHint(err))
	}
	for _, inv := range all {
		if who == "@ll" || strings.Contains(inv.Name, who) || (p.set.inventory != "" && (inv.Name == p.set.inventory || fmt.Sprint(inv.ID) == p.set.inventory)) {
			invs = append(invs, inv)
		}
	}
	var hosts []hostObj
	invNames := map[int]string{}
	for _, inv := range invs {
		invNames[inv.ID] = inv.Name
		path := inv.Related.Hosts
		if path == "" {
			path = fmt.Sprintf("inventories/%d/hosts/", inv.ID)
		}
		hs, err := listAll[hostObj](ctx, p.c, path, nil)
		if err != nil {
			return nil, fmt.Errorf("ansibletower: sync: hosts of inventory %q: %w", inv.Name, err)
		}
		hosts = append(hosts, hs...)
	}
	recs := make([]*inventory.Record, len(hosts))
	errs := make([]error, len(hosts))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			recs[i], errs[i] = p.hostRecord(ctx, h, invNames[h.Inventory])
		})
	}
	wg.Wait()
	out := recs[:0]
	for i, r := range recs {
		if errs[i] != nil {
			return nil, fmt.Errorf("ansibletower: sync: %w", errs[i])
		}
		if r != nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// hostRecord turns an AWX host into an inventory record.
func (p *Provider) hostRecord(ctx context.Context, h hostObj, invName string) (*inventory.Record, error) {
	vars, err := parseVars(h.Variables)
	if err != nil {
		return nil, fmt.Errorf("host %q: variables: %w", h.Name, err)
	}
	facts := map[string]any{}
	path := h.Related.AnsibleFacts
	if path == "" {
		path = fmt.Sprintf("hosts/%d/ansible_facts/", h.ID)
	}
	if err := p.c.get(ctx, path, &facts); err != nil {
		p.log.Warn("ansibletower: no facts for host", "host", h.Name, "err", err)
	}
	hostname := first(vars["fqdn"])
	if hostname == "" {
		hostname = first(facts["ansible_fqdn"])
	}
	if hostname == "" {
		// A host with no address cannot be matched safely; skip it.
		p.log.Debug("ansibletower: sync: host has no fqdn; skipped", "host", h.Name)
		return nil, nil
	}
	if invName == "" && h.SummaryFields.Inventory != nil {
		invName = h.SummaryFields.Inventory.Name
	}
	rec := &inventory.Record{
		Hostname: hostname,
		Name:     h.Name,
		IP:       first(vars["ansible_host"]),
		Args:     map[string]any{},
		Facts:    map[string]any{},
		Extra:    map[string]any{"tower_inventory": invName},
	}
	if a, ok := facts["_broker_args"].(map[string]any); ok {
		for k, v := range a {
			if !empty(v) {
				rec.Args[k] = v
			}
		}
	}
	if f, ok := facts["_broker_facts"].(map[string]any); ok {
		for k, v := range f {
			if !empty(v) {
				rec.Facts[k] = v
			}
		}
	}
	return rec, nil
}

// Describe tells what the user may start. topic "" lists workflows, job
// templates and inventories; "workflow:NAME" or "job_template:NAME" (or a
// bare NAME, tried as a workflow first) shows one template's description,
// default inventory and arguments (its extra_vars with their defaults).
func (p *Provider) Describe(ctx context.Context, topic string) (string, error) {
	kind, name, _ := strings.Cut(topic, ":")
	if name == "" {
		kind, name = "", kind
	}
	if name != "" {
		kinds := []string{"workflow", "job_template"}
		if kind != "" {
			kinds = []string{kind}
		}
		var lastErr error
		for _, k := range kinds {
			t, err := p.findTemplate(ctx, k, name)
			if err != nil {
				lastErr = err
				continue
			}
			return p.describeTemplate(k, t)
		}
		return "", lastErr
	}
	var b strings.Builder
	for _, k := range []string{"workflow", "job_template"} {
		ts, err := listAll[template](ctx, p.c, templatePath(k), nil)
		if err != nil {
			return "", fmt.Errorf("ansibletower: describe: %w", authHint(err))
		}
		fmt.Fprintf(&b, "%ss you may start:\n", strings.ReplaceAll(k, "_", " "))
		for _, t := range ts {
			if t.startable() {
				fmt.Fprintf(&b, "  %s\n", t.Name)
			}
		}
	}
	invs, err := listAll[inventoryObj](ctx, p.c, "inventories/", nil)
	if err != nil {
		return "", fmt.Errorf("ansibletower: describe: %w", err)
	}
	b.WriteString("inventories:\n")
	for _, inv := range invs {
		fmt.Fprintf(&b, "  %s (id %d)\n", inv.Name, inv.ID)
	}
	return b.String(), nil
}

func (p *Provider) describeTemplate(kind string, t *template) (string, error) {
	vars, err := parseVars(t.ExtraVars)
	if err != nil {
		return "", fmt.Errorf("ansibletower: %s %q: extra_vars: %w", kind, t.Name, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", kind, t.Name)
	if t.Description != "" {
		fmt.Fprintf(&b, "  description: %s\n", t.Description)
	}
	if t.SummaryFields.Inventory != nil {
		fmt.Fprintf(&b, "  inventory: %s\n", t.SummaryFields.Inventory.Name)
	}
	if len(vars) == 0 {
		b.WriteString("  no arguments\n")
		return b.String(), nil
	}
	b.WriteString("  arguments (defaults):\n")
	for _, k := range sortedKeys(vars) {
		fmt.Fprintf(&b, "    %s: %v\n", k, vars[k])
	}
	return b.String(), nil
}
