package codec

import (
	"bytes"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"
)

// Comparisons of records and values as the file holds them, for this
// package's tests and the store's differential tests.

// FileMap is r.Map() with _broker_args as written: {} when the record has
// none (unless it was read as null).
func FileMap(r *Record) map[string]any {
	m := r.Map()
	if _, ok := m["_broker_args"]; !ok && r.nulls&bitArgs == 0 {
		m["_broker_args"] = map[string]any{}
	}
	return m
}

// Normalize turns collections and numbers of other Go types into those
// the writer knows (as it does before writing them).
func Normalize(v any) any { return normalize(v) }

// ValuesEqual compares values as read and written: NaN equals NaN, times
// are equal at the same instant with the same offset, *big.Int by value,
// collections element by element.
func ValuesEqual(a, b any) bool {
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
		return x.Equal(y) && xo == yo && (x.Location() == Naive) == (y.Location() == Naive)
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
			if !ok || !ValuesEqual(v, w) {
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
			if !ValuesEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}

// Equal compares records by everything the file holds of them
// (FileMap), values as ValuesEqual compares them.
func Equal(a, b []*Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !ValuesEqual(FileMap(a[i]), FileMap(b[i])) {
			return false
		}
	}
	return true
}

// Show prints records with every field, for test failures.
func Show(recs []*Record) string {
	var b strings.Builder
	for i, r := range recs {
		fmt.Fprintf(&b, "%d: %#v nameNull=%v\n", i, *r, r.nameNull)
		if r.Broker != nil {
			fmt.Fprintf(&b, "   broker %#v\n", *r.Broker)
			if r.Broker.SSH != nil {
				fmt.Fprintf(&b, "   ssh %#v\n", *r.Broker.SSH)
			}
			if r.Broker.KeepUntil != nil {
				fmt.Fprintf(&b, "   keep_until %v\n", *r.Broker.KeepUntil)
			}
		}
	}
	return b.String()
}

// AliasBomb writes an inventory as the one in issue 17: anchors that
// multiply (fanout^levels values) hidden in a key of _brokertest that is
// never decoded, then one alias to them per record, each record with
// enough values of its own to pass yaml.v3's alias ratio, which starts
// again with each record.
func AliasBomb(records, fanout, levels, padding int) []byte {
	var b bytes.Buffer
	b.WriteString("- hostname: h0\n  _brokertest:\n    id: x0\n    ignored:\n")
	fmt.Fprintf(&b, "      l0: &l0 [%s]\n", strings.TrimSuffix(strings.Repeat("x, ", fanout), ", "))
	for i := 1; i < levels; i++ {
		fmt.Fprintf(&b, "      l%d: &l%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), fanout), ", "))
	}
	pad := "[" + strings.TrimSuffix(strings.Repeat("1, ", padding), ", ") + "]"
	for r := 1; r < records; r++ {
		fmt.Fprintf(&b, "- hostname: h%d\n  pad: %s\n  extra: *l%d\n", r, pad, levels-1)
	}
	return b.Bytes()
}
