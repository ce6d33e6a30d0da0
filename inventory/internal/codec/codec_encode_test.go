package codec

import (
	"bytes"
	"math"
	"math/rand"
	"testing"
	"time"
)

// checkEncode writes r and reads it back with a fresh reader: the record
// read must hold r's values, of the same types (what roundTrip makes of
// them), and its bytes must be what the writer wrote, alone. It returns
// whether r could be written (text that is not UTF-8 cannot).
func checkEncode(t testing.TB, r *Record) bool {
	t.Helper()
	got, err := encodeRecord(r)
	if err != nil {
		return false
	}
	recs, raws, err := decodeFile("x.yaml", got)
	if err != nil {
		t.Fatalf("the writer wrote what the reader refuses (%v):\n%s", err, got)
	}
	if len(recs) != 1 {
		t.Fatalf("the writer wrote %d records for one:\n%s", len(recs), got)
	}
	if !Equal(recs, []*Record{r}) {
		t.Fatalf("the writer wrote\n%s\nwhich reads back as\n%s\nnot\n%s", got, showRecords(recs), showRecords([]*Record{r}))
	}
	if len(raws) != 1 || !bytes.Equal(raws[0], got) {
		t.Fatalf("the record's bytes are not kept as written:\n%s", got)
	}
	return true
}

var encodeStrings = []string{"", "a", "a b", "8.6", "1", "-1", "0x1F", "1_000", ".5", "1e3", "true", "yes", "no", "on", "y", "n", "null", "~", "<<",
	"2001-12-14", "2001-12-14T21:59:43Z", "12:30", "1:20:30.5", "190:20:30", "a#b", "a #b", "a:b", "a: b", "a:", ":a", "?a", "? a", "-a", "- a", "-", "--", "---", "---a", "...", "..x",
	" lead", "trail ", "it's", `say "hi"`, `back\slash`, "#x", ",x", "[x", "]", "{x", "}", "&a", "*a", "!t", "|x", ">x", "'q", `"q`, "%x", "@x", "`x",
	"é", "tab\there", "two\nlines", "\x7f", "a=b", "host-1.example.com", "10.0.0.5", "ssh-ed25519 AAAAC3Nz", "/tmp/k", "22/tcp", "0.0.0.0:32768",
	"a1", "a10", "a2", "a01", "a001", "1a", "10", "9", "_a", "A", "B", "b", "a-b", "a_b", "a.b", "a0b", "a00", "0", "00", "01", "x1y2", "x10y1", "x1y10"}

func (g *genYAML) encValue(depth int) any {
	switch g.r.Intn(14) {
	case 0:
		return nil
	case 1:
		return g.r.Intn(2) == 0
	case 2:
		return g.r.Intn(200000) - 100000
	case 3:
		return []any{int64(math.MinInt64), uint64(math.MaxUint64), 1.5, 1.0, 1e21, 1e-7, math.Inf(1), math.Inf(-1), math.NaN(), math.Copysign(0, -1), float64(g.r.Intn(100)) / 8}[g.r.Intn(11)]
	case 4:
		return time.Date(1990+g.r.Intn(50), 1, 2, 3, 4, 5, g.r.Intn(3)*500000000, []*time.Location{time.UTC, time.FixedZone("", 3600)}[g.r.Intn(2)])
	case 5, 6:
		if depth < 3 {
			m := map[string]any{}
			for range g.r.Intn(5) {
				m[g.pick(encodeStrings)] = g.encValue(depth + 1)
			}
			return m
		}
	case 7:
		if depth < 3 {
			l := []any{}
			for range g.r.Intn(4) {
				l = append(l, g.encValue(depth+1))
			}
			return l
		}
	case 8:
		if g.r.Intn(10) == 0 {
			return []any{int32(1), []string{"a"}, map[string]any(nil), []any(nil)}[g.r.Intn(4)]
		}
	}
	return g.pick(encodeStrings)
}

func (g *genYAML) encMap() map[string]any {
	if g.r.Intn(4) == 0 {
		return nil
	}
	m := map[string]any{}
	for range g.r.Intn(6) {
		m[g.pick(encodeStrings)] = g.encValue(1)
	}
	return m
}

func (g *genYAML) encRecord() *Record {
	s := func() string {
		if g.r.Intn(3) == 0 {
			return ""
		}
		return g.pick(encodeStrings)
	}
	r := &Record{Hostname: s(), Name: s(), IP: s(), Provider: s(), Instance: s(), Args: g.encMap(), Facts: g.encMap(), Extra: g.encMap()}
	r.nameNull = r.Name == "" && g.r.Intn(2) == 0
	if g.r.Intn(3) > 0 {
		m := &Meta{ID: s(), State: s(), Test: s(), User: s(), RequestKey: s(), CheckedOut: time.Date(2026, 11, 30, 9, 15, g.r.Intn(60), g.r.Intn(2)*123456000, time.UTC),
			Owner: Owner{Run: s(), PID: g.r.Intn(70000), Started: g.r.Uint64() >> uint(g.r.Intn(64)), BootID: s(), Machine: s()}, Data: g.encMap()}
		if g.r.Intn(2) == 0 {
			k := m.CheckedOut.Add(time.Hour).In(time.FixedZone("", -7200))
			m.KeepUntil = &k
		}
		if g.r.Intn(2) == 0 {
			m.SSH = &SSH{Host: s(), User: s(), HostKey: s(), KeyFile: s(), Port: g.r.Intn(2) * 2222, Insecure: g.r.Intn(2) == 0,
				Transport: s(), ProxyCommand: s()}
		}
		r.Broker = m
	}
	return r
}

// The writer's records read back equal, for records of every shape.
func TestFastEncode(t *testing.T) {
	g := &genYAML{r: rand.New(rand.NewSource(3))}
	n, wrote := 20000, 0
	if testing.Short() {
		n = 2000
	}
	for range n {
		if checkEncode(t, g.encRecord()) {
			wrote++
		}
	}
	for _, r := range sampleRecords(20) {
		if !checkEncode(t, r) {
			t.Errorf("the writer refused a provider's record %s", showRecords([]*Record{r}))
		}
	}
	t.Logf("the fast writer wrote %d of %d", wrote, n)
	if wrote < n/2 {
		t.Errorf("the fast writer wrote only %d of %d", wrote, n)
	}
}

// The writer on text from the fuzzer: whatever Put would write, a fresh
// reader reads back equal.
func FuzzFastEncode(f *testing.F) {
	for _, s := range []string{"a", "a1", "a: b", "-", "yes", "12:30", "x10y1", "'"} {
		f.Add(s, s+"x", int64(len(s)))
	}
	f.Fuzz(func(t *testing.T, a, b string, n int64) {
		r := &Record{Hostname: a, Name: b, Args: map[string]any{a: b, b: n, "k": []any{a, map[string]any{b: a}}}, Extra: map[string]any{"x" + a: n}, Broker: &Meta{ID: b, State: a, Data: map[string]any{a: []any{b}}}}
		checkEncode(t, r)
	})
}
