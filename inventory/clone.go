package inventory

import (
	"maps"
	"reflect"
	"slices"
)

// Clone returns a deep copy of r: its maps, slices, Meta and the values
// under them are its own, so a caller may go on changing r (progress
// updates, say) while the store keeps what r was. Pointers other than
// those of Record and Meta, and values that are neither maps nor slices,
// are shared.
func (r *Record) Clone() *Record {
	if r == nil {
		return nil
	}
	c := *r
	c.Args = cloneMap(r.Args)
	c.Facts = cloneMap(r.Facts)
	c.Extra = cloneMap(r.Extra)
	if r.Broker != nil {
		m := *r.Broker
		if m.KeepUntil != nil {
			t := *m.KeepUntil
			m.KeepUntil = &t
		}
		if m.SSH != nil {
			s := *m.SSH
			m.SSH = &s
		}
		m.Data = cloneMap(m.Data)
		c.Broker = &m
	}
	return &c
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

// cloneValue copies the maps and slices under v: those the YAML decoder
// makes without reflection, any other kind through it.
func cloneValue(v any) any {
	switch v := v.(type) {
	case nil, string, bool, int, int64, uint64, float64:
		return v
	case map[string]any:
		return cloneMap(v)
	case []any:
		out := slices.Clone(v)
		for i, e := range out {
			out[i] = cloneValue(e)
		}
		return out
	case map[any]any:
		out := make(map[any]any, len(v))
		for k, e := range v {
			out[k] = cloneValue(e)
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
			out.SetMapIndex(it.Key(), cloneReflect(it.Value()))
		}
		return out.Interface()
	case reflect.Slice:
		if rv.IsNil() {
			return v
		}
		out := reflect.MakeSlice(rv.Type(), rv.Len(), rv.Len())
		for i := range rv.Len() {
			out.Index(i).Set(cloneReflect(rv.Index(i)))
		}
		return out.Interface()
	}
	return v
}

// cloneReflect clones a map or slice element, keeping its static type.
func cloneReflect(v reflect.Value) reflect.Value {
	if !v.IsValid() || (v.Kind() == reflect.Interface && v.IsNil()) {
		return v
	}
	c := cloneValue(v.Interface())
	if c == nil {
		return reflect.Zero(v.Type())
	}
	return reflect.ValueOf(c).Convert(v.Type())
}
