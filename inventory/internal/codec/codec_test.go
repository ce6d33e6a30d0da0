package codec

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// allocated runs f and returns the bytes it allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// An alias bomb is refused, naming the file and the limit, before it
// costs memory.
func TestAliasBombRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"per record", AliasBomb(500, 10, 4, 120)},
		{"billion laughs", AliasBomb(2, 10, 9, 0)},
	} {
		t.Run(c.name, func(t *testing.T) {
			var err error
			n := allocated(func() { _, err = Parse("bomb.yaml", c.data) })
			if !errors.Is(err, ErrLimit) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrLimit and ErrCorrupt", err)
			}
			for _, want := range []string{"bomb.yaml", "aliases", "line 6"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if n > 64<<20 {
				t.Errorf("refusing a %d-byte file allocated %d MB", len(c.data), n>>20)
			}
		})
	}
}

// Aliases that expand no more than the file itself (as the Python broker's
// ruamel writes for a dict shared by several hosts) are read.
func TestSharedAliasesRead(t *testing.T) {
	data := []byte("- hostname: a\n  _broker_args: &args\n    template: deploy-rhel\n    count: 2\n- hostname: b\n  _broker_args: *args\n")
	recs, err := Parse("shared.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[1].Args["template"] != "deploy-rhel" {
		t.Fatalf("got %s", showRecords(recs))
	}
	// The anchor's record keeps its bytes; the alias's record does not
	// stand alone, so it has none (a write gives it its values anew).
	if _, raw, _ := decodeFile("shared.yaml", data); len(raw) != 2 || raw[0] == nil || raw[1] != nil {
		t.Errorf("record bytes %q: want the first record's only", raw)
	}
	// Linked, the alias's record keeps its bytes too, which read as it
	// after the anchor's record's.
	recs, raw, links, err := decodeFileLinked("shared.yaml", data)
	if err != nil || len(raw) != 2 || raw[1] == nil || len(links) != 2 {
		t.Fatalf("bytes %q, links %v: %v", raw, links, err)
	}
	if !reflect.DeepEqual(links[0].Anchors, []string{"args"}) || len(links[0].Uses) != 0 ||
		len(links[1].Uses) != 1 || links[1].Uses[0] != (Use{Rec: recs[0], Name: "args"}) {
		t.Errorf("links %+v", links)
	}
}

func TestDepthAndSelfAliasRefused(t *testing.T) {
	deep := fmt.Sprintf("- hostname: a\n  x: %s%s\n", strings.Repeat("[", maxDepth), strings.Repeat("]", maxDepth))
	for _, c := range []struct{ data, want string }{
		{deep, "deeper than 100"},
		{"- hostname: a\n  x: &a [1, *a]\n", "inside its own anchor"},
		{"- hostname: a\n  x: &a [[[[1]]]]\n  y: " + strings.Repeat("[", maxDepth-4) + "*a" + strings.Repeat("]", maxDepth-4) + "\n", "through alias *a"},
	} {
		_, err := Parse("deep.yaml", []byte(c.data))
		if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "deep.yaml") {
			t.Errorf("%.40q: got %v, want ErrLimit saying %q", c.data, err, c.want)
		}
	}
	// Nesting within the limit is read, by both readers.
	ok := fmt.Sprintf("- hostname: a\n  x: %s1%s\n", strings.Repeat("[", maxDepth-2), strings.Repeat("]", maxDepth-2))
	if _, err := Parse("ok.yaml", []byte(ok)); err != nil {
		t.Error(err)
	}
	if _, _, err := decodeGeneral("ok.yaml", []byte(ok)); err != nil {
		t.Error(err)
	}
}

// A file over the size limit of the general reader is refused without
// being parsed; one in the plain form is read at that size.
func TestSizeLimit(t *testing.T) {
	big := bytes.Repeat([]byte("# padding padding padding padding padding padding padding\n"), maxGeneralSize/58+1)
	plain := append(big, "- hostname: a\n"...)
	recs, err := Parse("big.yaml", plain)
	if err != nil || len(recs) != 1 {
		t.Fatalf("a large file in the plain form: %v", err)
	}
	odd := append(big, "- hostname: &a a\n"...)
	_, err = Parse("big.yaml", odd)
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "big.yaml") || !strings.Contains(err.Error(), fmt.Sprintf("line %d: an anchor", bytes.Count(odd, []byte("\n")))) {
		t.Fatalf("got %v", err)
	}
}

// decodeFile's record bytes: each stands alone, comments go with the
// record before them, and any of them in any order are an inventory.
func TestDecodeFileRaw(t *testing.T) {
	data := "# written by hand\n\n- hostname: a\n  name: x # a comment\n\n# about b\n- hostname: b\n  _broker_args:\n    text: |\n      one\n\n      two\n\n- hostname: c\n"
	recs, raw, err := decodeFile("x.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"# written by hand\n\n- hostname: a\n  name: x # a comment\n\n# about b\n",
		"- hostname: b\n  _broker_args:\n    text: |\n      one\n\n      two\n\n",
		"- hostname: c\n",
	}
	if len(raw) != len(want) {
		t.Fatalf("%d records' bytes: %q", len(raw), raw)
	}
	for i := range want {
		if string(raw[i]) != want[i] {
			t.Errorf("record %d: %q, want %q", i, raw[i], want[i])
		}
	}
	if recs[1].Args["text"] != "one\n\ntwo\n" {
		t.Errorf("text %q", recs[1].Args["text"])
	}
	// Every order of every subset decodes to those records.
	for _, order := range [][]int{{}, {2}, {2, 0}, {1, 2, 0}, {0, 2, 1}} {
		var b []byte
		var wantRecs []*Record
		for _, i := range order {
			b = append(b, raw[i]...)
			wantRecs = append(wantRecs, recs[i])
		}
		got, _, err := decodeFile("x.yaml", b)
		if err != nil || len(got) != len(order) {
			t.Fatalf("%v: %v, %d records", order, err, len(got))
		}
		for k := range got {
			if got[k].Hostname != wantRecs[k].Hostname || !slices.Equal(mapKeys(got[k].Args), mapKeys(wantRecs[k].Args)) {
				t.Errorf("%v: record %d is %s", order, k, showRecords(got[k:k+1]))
			}
		}
	}
	// Files in other forms keep the bytes of every record that stands
	// alone; a flow list cannot be cut, so its records have none.
	for _, c := range []struct {
		s    string
		want []string
	}{
		{"- hostname: a\n  x: &a 1\n- hostname: b\n  y: *a\n", []string{"- hostname: a\n  x: &a 1\n", ""}},
		{"[{hostname: a}]\n", []string{""}},
		{"---\n- hostname: a\n", []string{"---\n- hostname: a\n"}},
		{"- hostname: a", []string{"- hostname: a"}},
		{"\uFEFF- hostname: a\r\n- hostname: b\r\n", []string{"\uFEFF- hostname: a\r\n", "- hostname: b\r\n"}},
		// An indented list: its pieces keep their indentation (the store
		// indents the records it writes as much).
		{"  - hostname: a\n    ip: ::1\n  - hostname: b\n", []string{"  - hostname: a\n    ip: ::1\n", "  - hostname: b\n"}},
		{"- hostname: a\n- hostname: b\n...\n", []string{"- hostname: a\n", "- hostname: b\n"}},
	} {
		recs, raw, err := decodeFile("x.yaml", []byte(c.s))
		if err != nil || len(recs) != len(c.want) || len(raw) != len(c.want) {
			t.Errorf("%q: %d records, bytes %q, %v", c.s, len(recs), raw, err)
			continue
		}
		for i := range raw {
			if string(raw[i]) != c.want[i] {
				t.Errorf("%q: record %d's bytes %q, want %q", c.s, i, raw[i], c.want[i])
			}
		}
	}
	if _, raw, _ := decodeFile("x.yaml", []byte("[]\n")); raw == nil || len(raw) != 0 {
		t.Errorf("an empty list: %q", raw)
	}
}

func mapKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Marshal is the records' encodeRecord bytes one after another, and what
// it writes reads back as the same records, with its bytes as they are.
func TestEncodeRecordAndMarshal(t *testing.T) {
	recs := sampleRecords(50)
	recs = append(recs, &Record{Hostname: "n", nameNull: true}, &Record{Hostname: "m", Name: "two\nlines", Extra: map[string]any{"k": []any{}}})
	all, err := Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	var cat []byte
	for _, r := range recs {
		one, err := encodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		single, _ := Marshal([]*Record{r})
		if !bytes.Equal(one, single) {
			t.Fatalf("encodeRecord(%s) is not Marshal of it alone", r.Hostname)
		}
		cat = append(cat, one...)
	}
	if !bytes.Equal(all, cat) {
		t.Fatal("Marshal is not the records' encodeRecord bytes one after another")
	}
	back, raw, err := decodeFile("x.yaml", all)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		one, _ := encodeRecord(r)
		if !bytes.Equal(raw[i], one) {
			t.Errorf("record %d's bytes are not its encoding:\n%s\n%s", i, raw[i], one)
		}
		if back[i].Hostname != r.Hostname || back[i].nameNull != r.nameNull || back[i].ID() != r.ID() {
			t.Errorf("record %d came back as %s", i, showRecords(back[i:i+1]))
		}
	}
}

// A record too large for the fast reader is read by yaml.v3; a file of
// more values than a file may hold is refused, naming the limit.
func TestValueLimits(t *testing.T) {
	big := "- hostname: a\n  x: [" + strings.Repeat("1, ", maxRecordValues) + "1]\n- hostname: b\n"
	recs, raw, err := decodeFile("big.yaml", []byte(big))
	if err != nil || len(recs) != 2 || len(recs[0].Extra["x"].([]any)) != maxRecordValues+1 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	if len(raw) != 2 || raw[0] == nil || raw[1] == nil {
		t.Error("the records of a file the general reader read have no bytes")
	}
	if testing.Short() {
		t.Skip("a file of 8 million values")
	}
	var b strings.Builder
	row := "- hostname: a\n  x: [" + strings.Repeat("1,", maxRecordValues/2) + "1]\n"
	for b.Len() < len(row)*(maxValues/(maxRecordValues/2)+1) {
		b.WriteString(row)
	}
	_, err = Parse("huge.yaml", []byte(b.String()))
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), fmt.Sprintf("more than %d values", maxValues)) || !strings.Contains(err.Error(), "huge.yaml") {
		t.Fatalf("got %v", err)
	}
}

// ListIndent finds the column of the top-level list past comments and
// directives, and IndentRecord shifts a record's lines but its empty ones.
func TestListIndentAndIndentRecord(t *testing.T) {
	for s, want := range map[string]int{"- a\n": 0, "# c\n\n  - a\n": 2, "\uFEFF---\n    -\n": 4, "[]\n": 0, "": 0} {
		if got := ListIndent([]byte(s)); got != want {
			t.Errorf("ListIndent(%q) = %d, want %d", s, got, want)
		}
	}
	if got := string(IndentRecord([]byte("- a: |\n    x\n\n    y\n"), 2)); got != "  - a: |\n      x\n\n      y\n" {
		t.Errorf("IndentRecord gives %q", got)
	}
}
