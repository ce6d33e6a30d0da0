package inventory

import (
	"bytes"
	"math"
	"math/big"
	"time"
)

// valuesEqual compares values as read and written: NaN equals NaN, times
// are equal at the same instant with the same offset, *big.Int by value,
// collections element by element.
func valuesEqual(a, b any) bool {
	a, b = normalize(a), normalize(b)
	asBig := func(v any) (*big.Int, bool) {
		switch x := v.(type) {
		case int:
			return big.NewInt(int64(x)), true
		case int64:
			return big.NewInt(x), true
		case uint64:
			return new(big.Int).SetUint64(x), true
		case *big.Int:
			return x, true
		}
		return nil, false
	}
	if x, ok := asBig(a); ok {
		y, ok := asBig(b)
		return ok && x.Cmp(y) == 0
	}
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && (x == y && math.Signbit(x) == math.Signbit(y) || math.IsNaN(x) && math.IsNaN(y))
	case time.Time:
		y, ok := b.(time.Time)
		if !ok {
			return false
		}
		_, xo := x.Zone()
		_, yo := y.Zone()
		return x.Equal(y) && xo == yo
	case *big.Int:
		y, ok := b.(*big.Int)
		return ok && x.Cmp(y) == 0
	case int:
		switch y := b.(type) {
		case int:
			return x == y
		case uint64:
			return x >= 0 && uint64(x) == y
		}
		return false
	case uint64:
		switch y := b.(type) {
		case int:
			return y >= 0 && uint64(y) == x
		case uint64:
			return x == y
		}
		return false
	case []byte:
		y, ok := b.([]byte)
		return ok && bytes.Equal(x, y)
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !valuesEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !valuesEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}

// recordsEqual compares records by everything the file holds of them.
func recordsEqual(a, b []*Record) bool {
	if len(a) != len(b) {
		return false
	}
	withArgs := func(r *Record) map[string]any {
		m := r.Map()
		if _, ok := m["_broker_args"]; !ok && r.nulls&bitArgs == 0 {
			m["_broker_args"] = map[string]any{}
		}
		return m
	}
	for i := range a {
		if !valuesEqual(withArgs(a[i]), withArgs(b[i])) {
			return false
		}
	}
	return true
}
