// Package plain turns values decoded from YAML into JSON-like ones, so that
// args and variables read from YAML or JSON look the same to their users.
package plain

import (
	"fmt"
	"reflect"
)

// Value returns v with every map a map[string]any and every slice a []any:
// yaml.v3 decodes mappings as map[string]any, except those with a
// non-string key, which it decodes as map[any]any; their keys are formatted
// here. Maps and slices are copied, never changed: one request's arguments
// are read by several checkouts at once.
func Value(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = Value(e)
		}
		return m
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = Value(e)
		}
		return m
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = Value(e)
		}
		return out
	case nil, string, bool, int, int64, float64, []byte:
		return v
	}
	// Go values given in code (map[string]int, []int, ...): copied into
	// the JSON-like forms.
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return v
		}
		m := make(map[string]any, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			m[it.Key().String()] = Value(it.Value().Interface())
		}
		return m
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = Value(rv.Index(i).Interface())
		}
		return out
	}
	return v
}

// Merge sets src's keys over dst's; nested maps merge key by key, and maps
// taken from src are copied, so later merges into dst never change src.
func Merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				Merge(dm, sm)
				continue
			}
			cp := map[string]any{}
			Merge(cp, sm)
			dst[k] = cp
			continue
		}
		dst[k] = v
	}
}
