// Package plain turns values decoded from YAML into JSON-like ones, so that
// args and variables read from YAML or JSON look the same to their users.
package plain

import "fmt"

// Value returns v with every map keyed by strings: yaml.v3 decodes mappings
// as map[string]any, except those with a non-string key, which it decodes
// as map[any]any; their keys are formatted here. Maps and slices are
// changed in place.
func Value(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = Value(e)
		}
		return v
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = Value(e)
		}
		return m
	case []any:
		for i, e := range v {
			v[i] = Value(e)
		}
		return v
	}
	return v
}
