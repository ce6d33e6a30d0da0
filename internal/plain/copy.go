package plain

import (
	"maps"
	"reflect"
	"slices"
)

// CopyMap returns a deep copy of m (nil for nil): see Copy.
func CopyMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = Copy(v)
	}
	return out
}

// Copy returns a deep copy of v: the maps and slices under it are its
// own. Those the YAML decoder makes are copied without reflection, any
// other kind of map or slice through it; other values are shared.
func Copy(v any) any {
	switch v := v.(type) {
	case nil, string, bool, int, int64, uint64, float64:
		return v
	case map[string]any:
		return CopyMap(v)
	case []any:
		out := slices.Clone(v)
		for i, e := range out {
			out[i] = Copy(e)
		}
		return out
	case map[any]any:
		out := make(map[any]any, len(v))
		for k, e := range v {
			out[k] = Copy(e)
		}
		return out
	case map[string]string:
		return maps.Clone(v)
	case []string:
		return slices.Clone(v)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map:
		if rv.IsNil() {
			return v
		}
		out := reflect.MakeMapWithSize(rv.Type(), rv.Len())
		it := rv.MapRange()
		for it.Next() {
			out.SetMapIndex(it.Key(), copyReflect(it.Value()))
		}
		return out.Interface()
	case reflect.Slice:
		if rv.IsNil() {
			return v
		}
		out := reflect.MakeSlice(rv.Type(), rv.Len(), rv.Len())
		for i := range rv.Len() {
			out.Index(i).Set(copyReflect(rv.Index(i)))
		}
		return out.Interface()
	}
	return v
}

// cloneReflect clones a map or slice element, keeping its static type.
func copyReflect(v reflect.Value) reflect.Value {
	if !v.IsValid() || (v.Kind() == reflect.Interface && v.IsNil()) {
		return v
	}
	c := Copy(v.Interface())
	if c == nil {
		return reflect.Zero(v.Type())
	}
	return reflect.ValueOf(c).Convert(v.Type())
}
