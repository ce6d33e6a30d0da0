// Package filter is the inventory's filter language: the Python broker's
// filters over inventory records, in both of its forms (the "@inv"
// expressions of 0.3+ and the older comma-separated terms). Parse reads one;
// a Filter selects records. docs/filters.md describes the grammar.
package filter

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hostbroker/broker/inventory"
)

// Filter is a parsed inventory filter in one of two forms. The zero Filter
// matches every record.
//
// A filter that contains "@inv" is an expression filter, the Python broker's
// (0.3+) form: stages separated by "|" (outside quotes) applied left to
// right, each either a list selection of the whole stage (@inv[-1],
// @inv[3:7], @inv[::2]) or a per-record condition in a small Python subset
// ('"test" in @inv.name and @inv._broker_args.template.startswith("deploy")').
// See docs/filters.md for the grammar and the differences from Python.
//
// Any other filter is the Python broker's DSL before 0.3: terms joined by
// "," that must all match. A term is (property)(condition)(value). Conditions: "<" in (substring of a
// text value, member of a list, key of a map), "=" equals, "{" starts with,
// "}" ends with; "!" before a condition inverts it. Nested properties use
// dots: "_broker_args.template". A property the record lacks makes a
// positive condition false and a negated one true. Values compare as text,
// so '8.6' and 8.6 are equal.
type Filter struct {
	src    string
	terms  []term
	stages []stage // the expression form
}

type term struct {
	path  []string
	op    byte // one of < = { }
	not   bool
	value string
}

// Parse parses a filter such as "name<test,_broker_args.provider!=RHEV"
// or, when s contains "@inv", an expression such as
// `"test" in @inv.name | @inv._broker_args.provider != "RHV"`. Syntax errors
// quote the offending text; those of expressions also give its column. An
// empty string is the filter that matches everything.
func Parse(s string) (Filter, error) {
	if strings.Contains(s, "@inv") {
		return parseExpr(s)
	}
	f := Filter{src: s}
	if strings.TrimSpace(s) == "" {
		return f, nil
	}
	for _, raw := range strings.Split(s, ",") {
		t, err := parseTerm(raw)
		if err != nil {
			return Filter{}, err
		}
		f.terms = append(f.terms, t)
	}
	return f, nil
}

func parseTerm(raw string) (term, error) {
	i := strings.IndexAny(raw, "<={}")
	if i < 0 {
		return term{}, fmt.Errorf("inventory: filter term %q has no condition (one of < = { }, optionally after !)", raw)
	}
	t := term{op: raw[i], value: raw[i+1:]}
	prop := raw[:i]
	if strings.HasSuffix(prop, "!") {
		t.not = true
		prop = prop[:len(prop)-1]
	}
	prop = strings.TrimSpace(prop)
	if prop == "" {
		return term{}, fmt.Errorf("inventory: filter term %q has an empty property", raw)
	}
	t.path = strings.Split(prop, ".")
	for _, p := range t.path {
		if p == "" {
			return term{}, fmt.Errorf("inventory: filter term %q has an empty part in property %q", raw, prop)
		}
	}
	return t, nil
}

// String returns the filter as parsed.
func (f Filter) String() string { return f.src }

// Empty reports whether the filter matches every record.
func (f Filter) Empty() bool { return len(f.terms) == 0 && len(f.stages) == 0 }

// Match reports whether rec passes every term. For an expression filter it
// evaluates the per-record stages only: list selections need the list, and
// are ignored. A record whose evaluation fails does not match.
func (f Filter) Match(rec *inventory.Record) bool {
	for _, st := range f.stages {
		if st.cond == nil {
			continue
		}
		if ok, _ := st.match(rec); !ok {
			return false
		}
	}
	if len(f.terms) == 0 {
		return true
	}
	var bm map[string]any // the _brokertest block, built once if a term needs it
	for _, t := range f.terms {
		v, ok := lookupFast(rec, t.path)
		if !ok && !knownTop(t.path[0]) {
			if w, present, done := brokerField(rec, t.path); done {
				v, ok = w, present
				if ok {
					v, ok = lookup(v, t.path[2:])
				}
			} else if v, ok = topValue(rec, t.path[0], &bm); ok {
				v, ok = lookup(v, t.path[1:])
			}
		}
		if t.eval(v, ok) == t.not {
			return false
		}
	}
	return true
}

// Apply returns the records that match, in order. An expression filter
// drops a record whose evaluation fails (a type error Python would raise,
// such as "a" < 3) and selects nothing with an index out of range;
// ApplyErr reports those errors.
func (f Filter) Apply(recs []*inventory.Record) []*inventory.Record {
	out, _ := f.ApplyErr(recs)
	return out
}

// ApplyErr is Apply that also returns the first run-time error of an
// expression filter, naming the expression and the host's hostname (or
// name), or the out-of-range index. The records are those Apply returns.
func (f Filter) ApplyErr(recs []*inventory.Record) ([]*inventory.Record, error) {
	if len(f.stages) > 0 {
		return f.applyExpr(recs)
	}
	if f.Empty() {
		return recs, nil
	}
	var out []*inventory.Record
	for _, r := range recs {
		if f.Match(r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// eval is the positive condition; a missing property is false.
func (t term) eval(v any, ok bool) bool {
	if !ok || v == nil {
		return false
	}
	switch t.op {
	case '<':
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				if text(e) == t.value {
					return true
				}
			}
			return false
		case map[string]any:
			_, has := x[t.value]
			return has
		}
		return strings.Contains(text(v), t.value)
	case '=':
		return text(v) == t.value
	case '{':
		return strings.HasPrefix(text(v), t.value)
	case '}':
		return strings.HasSuffix(text(v), t.value)
	}
	return false
}

func knownTop(k string) bool {
	switch k {
	case "hostname", "name", "ip", "_broker_provider", "_broker_provider_instance", "_broker_args", "_broker_facts":
		return true
	}
	return false
}

// lookupFast resolves the typed fields without building a map.
func lookupFast(r *inventory.Record, path []string) (any, bool) {
	str := func(s string) (any, bool) {
		if s == "" || len(path) > 1 {
			return nil, false
		}
		return s, true
	}
	switch path[0] {
	case "hostname":
		return str(r.Hostname)
	case "name":
		return str(r.Name)
	case "ip":
		return str(r.IP)
	case "_broker_provider":
		return str(r.Provider)
	case "_broker_provider_instance":
		return str(r.Instance)
	case "_broker_args":
		if r.Args == nil {
			return nil, false
		}
		return lookup(r.Args, path[1:])
	case "_broker_facts":
		if r.Facts == nil {
			return nil, false
		}
		return lookup(r.Facts, path[1:])
	}
	return nil, false
}

func lookup(v any, path []string) (any, bool) {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[p]; !ok {
			return nil, false
		}
	}
	return v, true
}

// text renders a value for comparison: numbers without trailing zeros,
// times in RFC 3339, collections as flow YAML.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return x.Format(time.RFC3339)
	case []any, map[string]any:
		b, err := yaml.Marshal(flow{x})
		if err != nil {
			return fmt.Sprint(x)
		}
		return strings.TrimSpace(string(b))
	}
	return fmt.Sprint(v)
}

// flow marshals a collection in YAML flow style.
type flow struct{ v any }

func (f flow) MarshalYAML() (any, error) {
	var n yaml.Node
	if err := n.Encode(f.v); err != nil {
		return nil, err
	}
	setFlow(&n)
	return &n, nil
}

func setFlow(n *yaml.Node) {
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		n.Style = yaml.FlowStyle
	}
	for _, c := range n.Content {
		setFlow(c)
	}
}

// brokerField is rec.Map()["_brokertest"][path[1]] for a path into the
// _brokertest block, without building the block; done is false for other
// paths and for values only yaml.v3 can write.
func brokerField(rec *inventory.Record, path []string) (v any, present, done bool) {
	if len(path) < 2 || path[0] != "_brokertest" || rec.Broker == nil {
		return nil, false, false
	}
	return rec.Broker.Field(path[1])
}

// topValue is rec.Map()[key] for a key of no typed field (not knownTop),
// without building the map; bm caches the _brokertest block.
func topValue(rec *inventory.Record, key string, bm *map[string]any) (any, bool) {
	if key == "_brokertest" && rec.Broker != nil {
		if *bm == nil {
			*bm, _ = rec.Broker.Map()
		}
		if *bm != nil {
			return *bm, true
		}
	}
	v, ok := rec.Extra[key]
	return v, ok
}
