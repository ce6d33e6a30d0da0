package codec

import (
	"math"
	"math/rand"
	"reflect"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// viaYAML is the _brokertest block written by yaml.v3 and read back, as
// Map built it before Meta.Map.
func viaYAML(t *testing.T, m *Meta) map[string]any {
	t.Helper()
	b, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := yaml.Unmarshal(b, &out); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return out
}

// Meta.Map gives what a yaml.v3 round trip gives, for every kind of
// value providers store and a few they do not.
func TestMetaMapIsTheRoundTrip(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("", 2*3600), time.FixedZone("X", -5*3600-1800)}
	strs := []string{"", "a", "8.6", "null", "yes", "two\nlines\n", " lead", "trail ", "é", "\xff\xfe", "- x", "a: b", "#", "'", "0x1F", "2001-12-14"}
	times := []time.Time{{}, time.Date(2026, 11, 30, 9, 15, 0, 123456789, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(999, 5, 6, 7, 8, 9, 0, time.UTC)}
	values := []any{nil, "s", "123", true, false, 0, -7, int64(math.MinInt64), uint64(math.MaxUint64), uint64(5), 1.0, 1.5, 1e21, math.Copysign(0, -1), math.Inf(1), math.Inf(-1), math.NaN(),
		[]any{}, []any(nil), map[string]any{}, map[string]any(nil), []any{1, "x", []any{2.5}}, map[string]any{"k": map[string]any{"j": []any{nil}}},
		int32(3), []string{"a"}, map[string]string{"a": "b"}, uint8(7), float32(1.5)}
	pick := func(l []string) string { return l[r.Intn(len(l))] }
	for i := range 3000 {
		tm := times[r.Intn(len(times))].In(zones[r.Intn(len(zones))])
		m := &Meta{ID: pick(strs), State: pick(strs), Test: pick(strs), User: pick(strs), RequestKey: pick(strs), CheckedOut: tm,
			Owner: Owner{Run: pick(strs), PID: r.Intn(100000) - 10, Started: r.Uint64() >> uint(r.Intn(64)), BootID: pick(strs), Machine: pick(strs)}}
		if r.Intn(2) == 0 {
			k := times[r.Intn(len(times))].In(zones[r.Intn(len(zones))])
			m.KeepUntil = &k
		}
		if r.Intn(2) == 0 {
			m.SSH = &SSH{Host: pick(strs), Port: r.Intn(3) * 2222, User: pick(strs), Insecure: r.Intn(2) == 0}
		}
		if n := r.Intn(4); n > 0 {
			m.Data = map[string]any{}
			for range n {
				m.Data[pick(strs)] = values[r.Intn(len(values))]
			}
		}
		got, ok := m.Map()
		if !ok {
			t.Fatalf("%d: Map failed for %#v", i, m)
		}
		b, err := encodeRecord(&Record{Hostname: "h", Broker: m})
		if err != nil {
			continue // text that is not UTF-8, a year Python cannot hold, a time finer than a microsecond
		}
		recs, err := Parse("x.yaml", b)
		if err != nil || len(recs) != 1 || recs[0].Broker == nil {
			t.Fatalf("%d: %v reading\n%s", i, err, b)
		}
		want, _ := recs[0].Broker.Map()
		if !ValuesEqual(got, want) {
			t.Fatalf("%d: Map\n%#v\nwritten and read\n%#v\n%s", i, got, want, b)
		}
	}
}

// Field gives what Map holds under the key, for the paths filters read
// into the _brokertest block.
func TestMetaFieldIsMap(t *testing.T) {
	g := &genYAML{r: rand.New(rand.NewSource(6))}
	for range 3000 {
		r := g.encRecord()
		if r.Broker == nil {
			continue
		}
		m := r.Map()
		for _, k := range append(metaKeys, "nope") {
			for _, sub := range []string{"", "pid", "port", "run", "x"} {
				path := []string{"_brokertest", k}
				if sub != "" {
					path = append(path, sub)
				}
				v, present, done := r.Broker.Field(k)
				if !done {
					continue
				}
				if present {
					v, present = lookup(v, path[2:])
				}
				if !present {
					v = nil
				}
				want, wantOK := lookup(m, path)
				if present != wantOK || !reflect.DeepEqual(canonNaN(v), canonNaN(want)) {
					t.Fatalf("%v: Field %#v %v, Map %#v %v", path, v, present, want, wantOK)
				}
			}
		}
	}
}

// lookup follows path through nested maps.
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
