package inventory

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hostbroker/broker/inventory/internal/codec"
)

// snapshotOf is the snapshot a write of recs leaves.
func snapshotOf(t *testing.T, recs []*Record) *snapshot {
	t.Helper()
	sn := &snapshot{}
	for _, r := range recs {
		raw, err := codec.EncodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		sn.entries = append(sn.entries, entry{rec: r, raw: raw})
	}
	data, err := encode(sn.entries, 0)
	if err != nil {
		t.Fatal(err)
	}
	sn.data = data
	return sn
}

func reuseRecords(n int) []*Record {
	var out []*Record
	for i := range n {
		out = append(out, &Record{
			Hostname: fmt.Sprintf("h%d.example.test", i), Name: fmt.Sprint("h", i), Provider: "Local",
			Args:   map[string]any{"text": "a\nb: c\n- d\n", "list": []any{1, "two"}},
			Broker: &Meta{ID: fmt.Sprint("id", i), State: StateReady, Data: map[string]any{"k": "v"}},
		})
	}
	return out
}

// checkReuse: reuseDecode gives what decodeFile gives, or declines; and
// the file written back from its entries reads the same.
func checkReuse(t *testing.T, prev *snapshot, data string, mustReuse bool) {
	t.Helper()
	want, werr := Parse("x", []byte(data))
	got := reuseDecode("x", prev, []byte(data), fileIdent{})
	if got == nil {
		if mustReuse {
			t.Errorf("declined %q", data)
		}
		return
	}
	if werr != nil {
		t.Fatalf("reused pieces of a file that does not parse (%v): %q", werr, data)
	}
	var recs []*Record
	for _, e := range got.entries {
		recs = append(recs, e.rec)
	}
	if !reflect.DeepEqual(want, recs) {
		t.Fatalf("reuseDecode differs from a parse of %q:\n got %#v\nwant %#v", data, recs, want)
	}
	out, err := encode(slices.Clone(got.entries), 0)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse("x", out)
	if err != nil || !reflect.DeepEqual(want, again) {
		t.Fatalf("written back from its pieces, %q reads %v, %v", out, again, err)
	}
}

func TestReuseDecode(t *testing.T) {
	recs := reuseRecords(4)
	prev := snapshotOf(t, recs)
	raw := func(i int) string { return string(prev.entries[i].raw) }
	changed := recs[1].Clone()
	changed.IP = "10.0.0.9"
	changedRaw, err := codec.EncodeRecord(changed)
	if err != nil {
		t.Fatal(err)
	}
	extra, _ := codec.EncodeRecord(reuseRecords(6)[5])
	for name, c := range map[string]struct {
		data      string
		mustReuse bool
	}{
		"same":                {raw(0) + raw(1) + raw(2) + raw(3), true},
		"appended":            {raw(0) + raw(1) + raw(2) + raw(3) + string(extra), true},
		"removed":             {raw(0) + raw(2) + raw(3), true},
		"changed":             {raw(0) + string(changedRaw) + raw(2) + raw(3), true},
		"reordered":           {raw(3) + raw(1) + raw(0), true},
		"comment between":     {raw(0) + "# note\n" + raw(1), true},
		"no final newline":    {raw(0) + strings.TrimSuffix(string(extra), "\n"), true},
		"python style":        {raw(0) + "- _broker_args: {}\n  hostname: py.example.test\n  name: py\n", true},
		"quoted at column 0":  {raw(0) + "- hostname: \"x\n- y\"\n" + raw(1), false},
		"anchor in an item":   {raw(0) + "- hostname: a\n  x: &A [1, 2]\n  y: *A\n", false},
		"star in a value":     {raw(0) + "- hostname: a\n  filter: name<*x\n", false},
		"alias of other item": {"- hostname: a\n  x: &A [1, 2]\n- hostname: b\n  x: *A\n", false},
		"document marker":     {raw(0) + "---\n" + raw(1), false},
		"ended document":      {raw(0) + "...\n" + raw(1), false},
		"null item":           {raw(0) + "- null\n" + raw(1), false},
		"dash item":           {raw(0) + "-\n" + raw(1), false},
		"scalar item":         {raw(0) + "- x\n", false},
		"empty":               {"", false},
		"empty list":          {"[]\n", false},
		"flow list":           {"[{hostname: a}]\n", false},
		"bad yaml":            {raw(0) + "- hostname: [unclosed\n", false},
		"tab after dash":      {raw(0) + "-\thostname: t\n", false},
	} {
		t.Run(name, func(t *testing.T) { checkReuse(t, prev, c.data, c.mustReuse) })
	}
}

// Random edits of a file's items, as other processes make them: the
// pieces reused and decoded give what a parse of the whole gives.
func TestReuseDecodeRandomEdits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pool := reuseRecords(40)
	for round := range 100 {
		prev := snapshotOf(t, pool[:10+rng.IntN(10)])
		var items []string
		for _, e := range prev.entries {
			items = append(items, string(e.raw))
		}
		for range 1 + rng.IntN(5) {
			switch k := rng.IntN(4); {
			case k == 0 && len(items) > 0: // remove
				i := rng.IntN(len(items))
				items = append(items[:i], items[i+1:]...)
			case k == 1: // add
				raw, _ := codec.EncodeRecord(pool[rng.IntN(len(pool))])
				i := rng.IntN(len(items) + 1)
				items = append(items[:i], append([]string{string(raw)}, items[i:]...)...)
			case k == 2 && len(items) > 0: // change
				r := pool[rng.IntN(len(pool))].Clone()
				r.Broker.State = fmt.Sprint("s", round)
				raw, _ := codec.EncodeRecord(r)
				items[rng.IntN(len(items))] = string(raw)
			case k == 3 && len(items) > 1: // swap
				i, j := rng.IntN(len(items)), rng.IntN(len(items))
				items[i], items[j] = items[j], items[i]
			}
		}
		checkReuse(t, prev, strings.Join(items, ""), len(items) > 0)
	}
}
