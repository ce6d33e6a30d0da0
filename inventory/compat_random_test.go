package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hostbroker/broker/inventory/internal/codec"
)

// randValues makes random and adversarial record values: text that
// looks like other types to one YAML library or another, or holds
// indicators, controls, line breaks and other scripts; floats of every
// magnitude; integers past int64; dates, times with zones, bytes; and
// lists and maps of them.
type randValues struct {
	r    *rand.Rand
	pool []string // adversarial text (testdata/compat/write_values.txt)
}

var randChars = []string{"a", "b", "Z", "0", "1", "9", "-", "+", ".", "_", ":", "#", "?", "!", "&", "*", "|", ">", "'", "\"", "%", "@", "`", ",", "[", "]", "{", "}", "=", "<", "~",
	" ", " ", "\t", "\n", "\r", "\\", "é", "日", "\u2028", "\u2029", "\u0085", "\ufeff", "\x00", "\x7f", "e", "x", "o", "b", "T", "Z", "y", "n"}

func (g *randValues) text() string {
	if g.r.IntN(3) == 0 {
		return g.pool[g.r.IntN(len(g.pool))]
	}
	var b strings.Builder
	for range g.r.IntN(12) {
		b.WriteString(randChars[g.r.IntN(len(randChars))])
	}
	return b.String()
}

func (g *randValues) float() float64 {
	switch g.r.IntN(6) {
	case 0:
		return math.Float64frombits(g.r.Uint64()&^(0x7ff<<52) | uint64(g.r.IntN(0x7ff))<<52)
	case 1:
		return float64(g.r.Int64N(1e12)) / math.Pow(10, float64(g.r.IntN(8)))
	case 2:
		return g.r.Float64() * math.Pow(10, float64(g.r.IntN(40)-10))
	case 3:
		return float64(g.r.IntN(1000)) // integral: written with ".0"
	case 4:
		return -g.r.NormFloat64() * 1e6
	}
	return []float64{0, math.Copysign(0, -1), math.Inf(1), math.Inf(-1), math.NaN(), 1e16, 1e-5, 5e-324, math.MaxFloat64}[g.r.IntN(9)]
}

func (g *randValues) scalar() any {
	switch g.r.IntN(12) {
	case 0, 1, 2, 3:
		return g.text()
	case 4:
		return g.float()
	case 5:
		return int(g.r.Int64()) >> g.r.IntN(64)
	case 6:
		b, _ := new(big.Int).SetString(strconv.FormatUint(g.r.Uint64(), 10)+strconv.Itoa(g.r.IntN(1e6)), 10)
		if g.r.IntN(2) == 0 {
			b.Neg(b)
		}
		return b
	case 7:
		return g.r.IntN(2) == 0
	case 8:
		return nil
	case 9:
		t := time.Date(1+g.r.IntN(9998), time.Month(1+g.r.IntN(12)), 1+g.r.IntN(28), g.r.IntN(24), g.r.IntN(60), g.r.IntN(60), g.r.IntN(1e6)*1000, time.UTC)
		if g.r.IntN(2) == 0 {
			return Date{Year: t.Year(), Month: t.Month(), Day: t.Day()}
		}
		if g.r.IntN(2) == 0 {
			t = t.In(time.FixedZone("", (g.r.IntN(49)-24)*1800))
		}
		return t
	case 10:
		b := make([]byte, g.r.IntN(20))
		for i := range b {
			b[i] = byte(g.r.IntN(256))
		}
		return b
	}
	return g.float()
}

func (g *randValues) value(depth int) any {
	if depth > 2 || g.r.IntN(4) > 0 {
		return g.scalar()
	}
	if g.r.IntN(2) == 0 {
		l := make([]any, g.r.IntN(4))
		for i := range l {
			l[i] = g.value(depth + 1)
		}
		return l
	}
	return g.strMap(depth + 1)
}

func (g *randValues) strMap(depth int) map[string]any {
	m := map[string]any{}
	for range g.r.IntN(4) {
		m[g.text()] = g.value(depth)
	}
	return m
}

func (g *randValues) record(i int) *Record {
	r := &Record{Hostname: fmt.Sprintf("host-%d.example.test", i), Args: g.strMap(0)}
	if g.r.IntN(2) == 0 {
		r.Name = g.text()
	}
	if g.r.IntN(3) == 0 {
		r.Facts = g.strMap(0)
	}
	if g.r.IntN(2) == 0 {
		r.Extra = map[string]any{}
		for range 1 + g.r.IntN(3) {
			k := "x_" + g.text()
			r.Extra[k] = g.value(0)
		}
	}
	return r
}

// writable keeps the records Put can write (text that is UTF-8: all of
// randValues'), so each batch is the records written.
func newRandValues(t *testing.T, seed uint64) *randValues {
	t.Helper()
	g := &randValues{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	for _, c := range compatCases(t, "write_values.txt") {
		if c[0] == "s" {
			g.pool = append(g.pool, writeValue(t, c).(string))
		}
	}
	return g
}

// testSeed is BROKER_TEST_SEED, or the time; the test logs it so a
// failure can be repeated.
func testSeed(t *testing.T) uint64 {
	if s := os.Getenv("BROKER_TEST_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BROKER_TEST_SEED=%q: %v", s, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// Go and the Python libraries exchange thousands of random and
// adversarial records, in both directions, with ruamel.yaml's rewrite in
// between, as the Python broker's update_inventory does:
//
//  1. Go writes them (one Put): a fresh Store, ruamel.yaml and PyYAML all
//     read every record back as the same values of the same types.
//  2. ruamel.yaml rewrites the file: Go reads every record as ruamel.yaml
//     reads it.
//  3. Go changes a tenth of them, removes some and adds some: every record
//     it did not touch keeps its bytes (ruamel.yaml's), and ruamel.yaml
//     reads what Go wrote as Go does.
//  4. ruamel.yaml writes random records of its own (yaml.dump in
//     round-trip mode): Go reads them as ruamel.yaml does and as they
//     were.
//
// It fails on any difference of value or type, any record lost, and any
// file one side cannot read. BROKER_TEST_SEED repeats a run.
func TestPythonDifferential(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs Python processes")
	}
	python := pythonBridge(t)
	seed := testSeed(t)
	t.Logf("seed %d (BROKER_TEST_SEED=%d repeats this run)", seed, seed)
	defer func() {
		if t.Failed() {
			t.Logf("failed with BROKER_TEST_SEED=%d", seed)
		}
	}()
	g := newRandValues(t, seed)
	const n = 2000
	recs := make([]*Record, n)
	for i := range recs {
		recs[i] = g.record(i)
		// Some hosts checked out together: equal _broker_args, which
		// ruamel.yaml's rewrite below shares (an anchor and aliases).
		if i%7 == 6 && len(recs[i-3].Args) > 0 {
			recs[i].Args = recs[i-3].Clone().Args
		}
	}
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "inventory.yaml")

	// 1. Go writes.
	if err := Open(path).Put(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	got, err := Open(path).Load(ctx)
	if err != nil {
		t.Fatalf("a fresh Store cannot read what Put wrote: %v", err)
	}
	for i := range recs {
		if !codec.Equal(got[i:i+1], recs[i:i+1]) {
			t.Fatalf("record %d: Put\n%s\nread back\n%s", i, codec.Show(recs[i:i+1]), codec.Show(got[i:i+1]))
		}
	}
	compareWithPython(t, python, path, recs, "1. written by Go")
	if t.Failed() {
		return
	}

	// 2. ruamel.yaml rewrites, records with equal _broker_args sharing
	// them as the Python broker up to 0.8.10 writes them.
	bridge(t, python, nil, "rewrite", path, "share")
	if rewritten, _ := os.ReadFile(path); !bytes.Contains(rewritten, []byte("_broker_args: *id")) {
		t.Fatalf("2. ruamel.yaml's rewrite holds no shared _broker_args")
	}
	if goAgreesWithRuamel(t, python, path, "2. rewritten by ruamel.yaml") {
		goChangesKeepBytes(t, g, python, path, recs)
	}

	// 4. ruamel.yaml writes records of its own.
	var typedRecs []any
	var want []*Record
	// Without U+0085, U+2028, U+2029: ruamel.yaml writes them raw and
	// reads them back as line breaks, folding two keys into one it then
	// refuses as duplicates (its own file, unreadable to it).
	for i := 0; len(want) < n/2; i++ {
		r := g.record(10*n + i)
		j, _ := json.Marshal(recordTyped(r))
		if strings.ContainsAny(string(j), "\u0085\u2028\u2029") || strings.Contains(string(j), `\u2028`) || strings.Contains(string(j), `\u2029`) {
			continue
		}
		want = append(want, r)
		typedRecs = append(typedRecs, recordTyped(r))
	}
	in, err := json.Marshal(typedRecs)
	if err != nil {
		t.Fatal(err)
	}
	pyPath := filepath.Join(dir, "python.yaml")
	bridge(t, python, in, "write", pyPath)
	goAgreesWithRuamel(t, python, pyPath, "4. written by ruamel.yaml")
	pyData, _ := os.ReadFile(pyPath)
	pyRecs, err := Parse(pyPath, pyData)
	if err != nil {
		t.Fatal(err)
	}
	if len(pyRecs) != len(want) {
		t.Fatalf("4. %d records written by ruamel.yaml, %d given it", len(pyRecs), len(want))
	}
	// ruamel.yaml's own dump changes some text (U+0085…): Go
	// agreeing with ruamel.yaml is what is proven; the changes are logged.
	ruamelLosses(t, pyRecs, want)
}

// goAgreesWithRuamel fails t unless Go reads the file at path as
// ruamel.yaml does; it reports whether both read it (false: neither).
func goAgreesWithRuamel(t *testing.T, python, path, what string) bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := Parse(path, data)
	if err != nil {
		// Agreement still: when ruamel.yaml cannot read it either.
		if py := pythonRead(t, python, path); py.RuamelError != "" {
			t.Logf("%s: neither Go nor ruamel.yaml reads the file (Go: %v; ruamel.yaml: %s)", what, err, firstLine(py.RuamelError))
			return false
		}
		t.Fatalf("%s: Go cannot read the file ruamel.yaml reads: %v\n%s", what, err, clip(data))
	}
	compareWithLibs(t, python, path, recs, what, false)
	return true
}

// typedRecordsEqual compares records in the typed form (times by their
// instant).
func typedRecordsEqual(t *testing.T, got, want []*Record, what string) bool {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d records, want %d", what, len(got), len(want))
		return false
	}
	for i := range got {
		g, w := canonical(jsonTyped(recordTyped(got[i]))), canonical(jsonTyped(recordTyped(want[i])))
		if g != w {
			t.Errorf("%s: record %d\n%s\nwant\n%s", what, i, g, w)
			return false
		}
	}
	return true
}

// ruamelLosses logs the records ruamel.yaml's rewrite changed: floats in
// their last digits (it keeps a float's printed width), and others.
func ruamelLosses(t *testing.T, got, want []*Record) {
	t.Helper()
	floats, other := 0, 0
	for i := range got {
		g, w := recordTyped(got[i]), recordTyped(want[i])
		switch {
		case canonical(jsonTyped(g)) == canonical(jsonTyped(w)):
		case onlyFloatsDiffer(jsonTyped(g), jsonTyped(w)):
			floats++
		default:
			other++
			if other <= 3 {
				t.Logf("ruamel.yaml's round trip changed record %d:\n%s\nfrom\n%s", i, canonical(jsonTyped(g)), canonical(jsonTyped(w)))
			}
		}
	}
	t.Logf("ruamel.yaml's own round trip changed %d of %d records in a float's last digits and %d otherwise (Go read each as ruamel.yaml does)", floats, len(got), other)
}

// onlyFloatsDiffer reports whether typed values a and b differ only in
// floats that are within 1e-12 of each other relatively.
func onlyFloatsDiffer(a, b any) bool {
	al, bl := a.([]any), b.([]any)
	if al[0] != bl[0] {
		return false
	}
	switch al[0] {
	case "f":
		x, _ := strconv.ParseFloat(al[1].(string), 64)
		y, _ := strconv.ParseFloat(bl[1].(string), 64)
		return x == y || math.Abs(x-y) <= 1e-12*math.Max(math.Abs(x), math.Abs(y))
	case "l":
		ai, bi := al[1].([]any), bl[1].([]any)
		if len(ai) != len(bi) {
			return false
		}
		for i := range ai {
			if !onlyFloatsDiffer(ai[i], bi[i]) {
				return false
			}
		}
		return true
	case "m":
		am := map[string]any{}
		for _, p := range al[1].([]any) {
			kv := p.([]any)
			am[canonical(jsonTyped(kv[0]))] = kv[1]
		}
		bp := bl[1].([]any)
		if len(bp) != len(am) {
			return false
		}
		for _, p := range bp {
			kv := p.([]any)
			v, ok := am[canonical(jsonTyped(kv[0]))]
			if !ok || !onlyFloatsDiffer(v, kv[1]) {
				return false
			}
		}
		return true
	}
	return canonical(jsonTyped(a)) == canonical(jsonTyped(b))
}

// Whatever Put writes, a fresh Store reads back equal.
func FuzzPutReadsBack(f *testing.F) {
	for _, s := range []string{"0000-00-00", "-_", "\tx\ny", "one\u2028two\n", "=", "1.0", "yes", "::1"} {
		f.Add(s, 1.5, int64(7), uint64(1))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, s string, x float64, n int64, seed uint64) {
		g := &randValues{r: rand.New(rand.NewPCG(seed, 1)), pool: []string{s}}
		r := g.record(0)
		r.Name = s
		r.Args[s] = []any{x, n, s}
		path := filepath.Join(dir, fmt.Sprintf("inv-%d.yaml", seed%8))
		os.Remove(path)
		if err := Open(path).Put(context.Background(), r); err != nil {
			if strings.Contains(err.Error(), "not UTF-8") {
				return
			}
			t.Fatal(err)
		}
		got, err := Open(path).Load(context.Background())
		if err != nil {
			data, _ := os.ReadFile(path)
			t.Fatalf("%v\n%s", err, data)
		}
		if !codec.Equal(got, []*Record{r}) {
			data, _ := os.ReadFile(path)
			t.Fatalf("Put\n%s\nread back\n%s\nfrom\n%s", codec.Show([]*Record{r}), codec.Show(got), data)
		}
	})
}

// Whatever the other records hold, a Put or Remove changes only the bytes
// of its own record: random files mixing records this library writes with
// records in every form of testdata/compat/keep (anchors, flow maps,
// !!binary, folded blocks, nulls…), then random Puts (changes and new
// records) and Removes, each checked against the file before it.
func TestPutRemoveKeepOtherRecordsBytes(t *testing.T) {
	seed := testSeed(t)
	t.Logf("seed %d (BROKER_TEST_SEED=%d repeats this run)", seed, seed)
	defer func() {
		if t.Failed() {
			t.Logf("failed with BROKER_TEST_SEED=%d", seed)
		}
	}()
	g := newRandValues(t, seed)
	// Odd pieces: the records of the keep/ files (bar the first, which
	// may carry a byte-order mark or "---"), their hostnames made unique.
	var odd [][]byte
	var pairs [][2][]byte // an anchor's record and one using it
	files, _ := filepath.Glob(filepath.Join("testdata", "compat", "keep", "*.yaml"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		recs, raws, links, err := codec.DecodeFileLinked(f, data)
		if err != nil {
			t.Fatal(err)
		}
		for i, raw := range raws {
			if raw != nil && !bytes.HasPrefix(raw, []byte("\ufeff")) && !bytes.HasPrefix(raw, []byte("---")) && bytes.HasPrefix(raw, []byte("- hostname: ")) {
				if links == nil || len(links[i].Uses) == 0 {
					odd = append(odd, raw)
					continue
				}
				// A record using another's anchor: the pair, as one piece.
				if len(links[i].Uses) == 1 {
					if j := slices.Index(recs, links[i].Uses[0].Rec); j >= 0 && raws[j] != nil && bytes.HasPrefix(raws[j], []byte("- hostname: ")) {
						pairs = append(pairs, [2][]byte{raws[j], raw})
					}
				}
			}
		}
	}
	if len(odd) < 5 || len(pairs) < 2 {
		t.Fatalf("only %d odd pieces, %d pairs sharing an anchor", len(odd), len(pairs))
	}
	ctx := context.Background()
	for round := range 40 {
		var file []byte
		n := 3 + g.r.IntN(8)
		for i := range n {
			if g.r.IntN(4) == 0 {
				// The pair, perhaps with other records between (an
				// anchor of the same name too: the alias then refers
				// to that one).
				pair := pairs[g.r.IntN(len(pairs))]
				for k, piece := range pair {
					_, rest, _ := bytes.Cut(piece, []byte("\n"))
					file = fmt.Appendf(file, "- hostname: pair-%d-%d-%d\n%s", round, i, k, rest)
					if k == 0 && g.r.IntN(2) == 0 {
						b, err := codec.EncodeRecord(g.record(round*100 + i))
						if err != nil {
							t.Fatal(err)
						}
						file = append(file, b...)
					}
				}
				continue
			}
			if g.r.IntN(2) == 0 {
				piece := odd[g.r.IntN(len(odd))]
				name := fmt.Sprintf("- hostname: odd-%d-%d", round, i)
				_, rest, _ := bytes.Cut(piece, []byte("\n"))
				file = append(file, name+"\n"...)
				file = append(file, rest...)
				continue
			}
			b, err := codec.EncodeRecord(g.record(round*100 + i))
			if err != nil {
				t.Fatal(err)
			}
			file = append(file, b...)
		}
		path := filepath.Join(t.TempDir(), "inventory.yaml")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		s := Open(path)
		for step := range 5 {
			before, _ := os.ReadFile(path)
			recs, raws, links, err := codec.DecodeFileLinked(path, before)
			if err != nil {
				t.Fatalf("round %d step %d: %v\n%s", round, step, err, before)
			}
			touched := -1
			var want []*Record // the records after the change
			switch op := g.r.IntN(3); {
			case op == 0 && len(recs) > 0:
				touched = g.r.IntN(len(recs))
				err = s.Remove(ctx, recs[touched])
				want = slices.Delete(slices.Clone(recs), touched, touched+1)
			case op == 1 && len(recs) > 0:
				touched = g.r.IntN(len(recs))
				c := recs[touched].Clone()
				if c.Args == nil {
					c.Args = map[string]any{}
				}
				c.Args["changed"] = g.value(0)
				err = s.Put(ctx, c)
				want = slices.Clone(recs)
				want[touched] = c
			default:
				r := g.record(round*100 + 50 + step)
				err = s.Put(ctx, r)
				want = append(slices.Clone(recs), r)
			}
			if err != nil {
				t.Fatalf("round %d step %d: %v", round, step, err)
			}
			after, _ := os.ReadFile(path)
			_, _, keep := keptAsRead(t, path, before, func(i int) bool { return i == touched })
			for i, raw := range raws {
				if !keep[i] {
					continue
				}
				if !bytes.Contains(after, raw) {
					t.Fatalf("round %d step %d: record %d (not touched) changed its bytes:\n%q\nbefore\n%s\nafter\n%s", round, step, i, raw, before, after)
				}
			}
			// A record using an anchor keeps its bytes exactly while
			// the anchor's record is untouched, and only then.
			for i := range links {
				if len(links[i].Uses) > 0 && i != touched {
					if has := bytes.Contains(after, raws[i]); has != keep[i] {
						t.Fatalf("round %d step %d: record %d, using another's anchor, kept its bytes: %v, want %v\nbefore\n%s\nafter\n%s", round, step, i, has, keep[i], before, after)
					}
				}
			}
			got, err := Open(path).Load(ctx)
			if err != nil {
				t.Fatalf("round %d step %d: the file written cannot be read: %v\n%s", round, step, err, after)
			}
			if !codec.Equal(got, want) {
				t.Fatalf("round %d step %d: read back as\n%s\nwant\n%s\nfile\n%s", round, step, codec.Show(got), codec.Show(want), after)
			}
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// goChangesKeepBytes is steps 2 and 3 of TestPythonDifferential on the
// file ruamel.yaml rewrote: Go's reading against what Go wrote (ruamel's
// own losses logged), then Go's changes, which keep every untouched
// record's bytes and are read by ruamel.yaml as by Go.
func goChangesKeepBytes(t *testing.T, g *randValues, python, path string, recs []*Record) {
	t.Helper()
	ctx := context.Background()
	n := len(recs)
	rewritten, _ := os.ReadFile(path)
	before, raws, links, err := codec.DecodeFileLinked(path, rewritten)
	if err != nil {
		t.Fatal(err)
	}
	// ruamel.yaml's round trip itself changes some values (a float's
	// last digit, a U+0085 in text read back as a space): Go agreeing with
	// ruamel.yaml above is what is proven; the changes are logged.
	if len(before) != len(recs) {
		t.Fatalf("2. %d records after ruamel.yaml's rewrite, %d before", len(before), len(recs))
	}
	ruamelLosses(t, before, recs)

	// 3. Go changes some records, removes some, adds some.
	s := Open(path)
	touched := map[int]bool{}
	var changed, removed []*Record
	for i := range before {
		switch g.r.IntN(20) {
		case 0, 1:
			c := before[i].Clone()
			if c.Args == nil {
				c.Args = map[string]any{}
			}
			c.Args["changed"] = g.value(0)
			changed = append(changed, c)
			touched[i] = true
		case 2:
			removed = append(removed, before[i])
			touched[i] = true
		}
	}
	added := []*Record{g.record(n), g.record(n + 1)}
	if err := s.Put(ctx, append(changed, added...)...); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, removed...); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(path)
	_, _, keep := keptAsRead(t, path, rewritten, func(i int) bool { return touched[i] })
	kept, aliases := 0, 0
	for i, raw := range raws {
		if !keep[i] {
			continue
		}
		if !bytes.Contains(after, raw) {
			t.Fatalf("record %d was not touched but its bytes changed:\n%q", i, raw)
		}
		kept++
		if links != nil && len(links[i].Uses) > 0 {
			aliases++
		}
	}
	if aliases == 0 {
		t.Fatalf("no record using another's anchor kept its bytes")
	}
	if kept < len(raws)/2 {
		t.Fatalf("only %d of %d untouched records kept their bytes", kept, len(raws))
	}
	goAgreesWithRuamel(t, python, path, "3. changed by Go")

}
