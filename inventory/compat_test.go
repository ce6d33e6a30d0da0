package inventory

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hostbroker/broker/internal/testenv"
	"github.com/hostbroker/broker/inventory/internal/codec"
)

// The differential tests against the Python libraries: Go's reading and
// writing of the inventory against ruamel.yaml 0.17 (round-trip, as the
// Python broker reads and writes) and PyYAML 6 (older Python brokers), in
// real Python processes running testdata/compat/bridge.py. Values are
// compared in a typed form both sides print (see bridge.py).

// pythonBridge returns the python3 that has ruamel.yaml and PyYAML, or
// skips (fails when BROKER_TEST_REQUIRE names python).
func pythonBridge(t testing.TB) string {
	t.Helper()
	python, err := exec.LookPath("python3")
	for _, p := range []string{python, "/usr/bin/python3"} {
		if p == "" {
			continue
		}
		if out, cerr := exec.Command(p, "-c", "import ruamel.yaml, yaml").CombinedOutput(); cerr == nil {
			return p
		} else {
			err = fmt.Errorf("%s cannot import ruamel.yaml and yaml (Debian: python3-ruamel.yaml python3-yaml): %v: %s", p, cerr, out)
		}
	}
	if err == nil {
		err = errors.New("no python3")
	}
	testenv.Require(t, "python", err)
	return ""
}

// bridge runs bridge.py.
func bridge(t testing.TB, python string, stdin []byte, args ...string) []byte {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("testdata", "compat", "bridge.py"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, append([]string{script}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bridge.py %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// pyRead is how both Python libraries read a file.
type pyRead struct {
	Ruamel      any    `json:"ruamel"`
	RuamelError string `json:"ruamel_error"`
	PyYAML      any    `json:"pyyaml"`
	PyYAMLError string `json:"pyyaml_error"`
}

func pythonRead(t testing.TB, python, path string) pyRead {
	t.Helper()
	var r pyRead
	if err := json.Unmarshal(bridge(t, python, nil, "read", path), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// typed is v in bridge.py's typed form.
func typed(v any) any {
	switch x := codec.Normalize(v).(type) {
	case nil:
		return []any{"n"}
	case bool:
		return []any{"b", x}
	case int:
		return []any{"i", strconv.Itoa(x)}
	case int64:
		return []any{"i", strconv.FormatInt(x, 10)}
	case uint64:
		return []any{"i", strconv.FormatUint(x, 10)}
	case *big.Int:
		return []any{"i", x.String()}
	case float64:
		return []any{"f", strconv.FormatFloat(x, 'g', -1, 64)}
	case string:
		return []any{"s", x}
	case []byte:
		return []any{"y", base64.StdEncoding.EncodeToString(x)}
	case Date:
		return []any{"d", x.String()}
	case time.Time:
		if x.Location() == codec.Naive {
			return []any{"T", x.Format("2006-01-02T15:04:05.000000")}
		}
		return []any{"t", x.UTC().Format("2006-01-02T15:04:05.000000")}
	case []any:
		l := make([]any, len(x))
		for i := range x {
			l[i] = typed(x[i])
		}
		return []any{"l", l}
	case map[string]any:
		pairs := make([]any, 0, len(x))
		for k, e := range x {
			pairs = append(pairs, []any{typed(k), typed(e)})
		}
		return []any{"m", pairs}
	}
	panic(fmt.Sprintf("no typed form for %T", v))
}

// recordTyped is a record as the file holds it, typed.
func recordTyped(r *Record) any {
	return typed(codec.FileMap(r))
}

// canonical turns a typed value (Go's, or JSON from Python) into text
// that is equal exactly when the values are: map entries sorted, floats
// by their bits.
func canonical(v any) string {
	var b strings.Builder
	var walk func(v any)
	walk = func(v any) {
		l, ok := v.([]any)
		if !ok || len(l) == 0 {
			fmt.Fprintf(&b, "?%v", v)
			return
		}
		kind, _ := l[0].(string)
		switch kind {
		case "f":
			f, err := strconv.ParseFloat(l[1].(string), 64)
			if err != nil {
				fmt.Fprintf(&b, "f(bad %q)", l[1])
				return
			}
			if math.IsNaN(f) {
				b.WriteString("f(nan)")
				return
			}
			fmt.Fprintf(&b, "f(%x)", math.Float64bits(f))
		case "l":
			b.WriteString("l[")
			for _, e := range l[1].([]any) {
				walk(e)
				b.WriteString(",")
			}
			b.WriteString("]")
		case "m":
			var entries []string
			for _, p := range l[1].([]any) {
				kv := p.([]any)
				entries = append(entries, canonical(kv[0])+":"+canonical(kv[1]))
			}
			sort.Strings(entries)
			b.WriteString("m{" + strings.Join(entries, ",") + "}")
		default:
			j, _ := json.Marshal(l)
			b.Write(j)
		}
	}
	walk(v)
	return b.String()
}

// jsonTyped turns Go's typed form into what it is once through JSON (as
// Python's arrives).
func jsonTyped(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

// compareWithPython fails t when either Python library fails on the file
// at path, or reads records other than want.
func compareWithPython(t *testing.T, python, path string, want []*Record, what string) {
	t.Helper()
	compareWithLibs(t, python, path, want, what, true)
}

// compareWithLibs is compareWithPython, for PyYAML too when withPyYAML
// (which reads some of the Python broker's own values otherwise: 022 as
// 18, 0o17 as text; docs/python-broker.md).
func compareWithLibs(t *testing.T, python, path string, want []*Record, what string, withPyYAML bool) {
	t.Helper()
	got := pythonRead(t, python, path)
	wantTyped := make([]any, len(want))
	for i, r := range want {
		wantTyped[i] = recordTyped(r)
	}
	wantList := jsonTyped([]any{"l", wantTyped})
	for _, lib := range []struct {
		name string
		v    any
		err  string
	}{{"ruamel.yaml", got.Ruamel, got.RuamelError}, {"PyYAML", got.PyYAML, got.PyYAMLError}} {
		if lib.name == "PyYAML" && !withPyYAML {
			continue
		}
		if lib.err != "" {
			data, _ := os.ReadFile(path)
			t.Fatalf("%s: %s cannot read the file: %s\n%s", what, lib.name, lib.err, clip(data))
		}
		if !typedListsEqual(t, lib.v, wantList, lib.name, what) {
			return
		}
	}
}

// typedListsEqual compares two typed lists of records item by item,
// reporting the first difference.
func typedListsEqual(t *testing.T, got, want any, who, what string) bool {
	t.Helper()
	gl, _ := got.([]any)
	wl, _ := want.([]any)
	if len(gl) != 2 || len(wl) != 2 {
		t.Fatalf("%s: %s: not a list: %v", what, who, got)
	}
	gi, wi := gl[1].([]any), wl[1].([]any)
	if len(gi) != len(wi) {
		t.Errorf("%s: %s reads %d records, want %d", what, who, len(gi), len(wi))
		return false
	}
	for i := range gi {
		if g, w := canonical(gi[i]), canonical(wi[i]); g != w {
			t.Errorf("%s: record %d: %s reads\n%s\nwant\n%s", what, i, who, g, w)
			return false
		}
	}
	return true
}

func clip(b []byte) string {
	if len(b) > 4000 {
		return string(b[:4000]) + "…"
	}
	return string(b)
}

// compatCase is one line of testdata/compat/*.txt: fields split by a tab.
func compatCases(t *testing.T, name string) [][]string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "compat", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, "\t"))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// writeValue is a value of testdata/compat/write_values.txt: "s" and a
// Go-quoted string, "f" and a float, "t" and an RFC 3339 time (aware), or
// "T" and a time without a zone (naive, in codec.Naive).
func writeValue(t *testing.T, c []string) any {
	t.Helper()
	switch c[0] {
	case "s":
		s, err := strconv.Unquote(c[1])
		if err != nil {
			t.Fatalf("%q: %v", c[1], err)
		}
		return s
	case "f":
		f, err := strconv.ParseFloat(c[1], 64)
		if err != nil {
			t.Fatalf("%q: %v", c[1], err)
		}
		return f
	case "t", "T":
		layout, loc := time.RFC3339Nano, time.UTC
		if c[0] == "T" {
			layout, loc = "2006-01-02T15:04:05.999999999", codec.Naive
		}
		tm, err := time.ParseInLocation(layout, c[1], loc)
		if err != nil {
			t.Fatalf("%q: %v", c[1], err)
		}
		return tm
	}
	t.Fatalf("unknown kind %q", c[0])
	return nil
}

// Every value of testdata/compat/write_values.txt (each found to be lost
// or to break the file once) is written by Put so that a fresh Store and
// both Python libraries read it back as the same value of the same type:
// as a name, in _broker_args, as a key and as a foreign field.
func TestWriteValuesReadBack(t *testing.T) {
	python := ""
	if !testing.Short() {
		python = pythonBridge(t)
	}
	cases := compatCases(t, "write_values.txt")
	var recs []*Record
	for i, c := range cases {
		v := writeValue(t, c)
		r := &Record{Hostname: fmt.Sprintf("h%d", i), Args: map[string]any{"v": v}, Extra: map[string]any{"x_v": []any{v}}}
		if s, ok := v.(string); ok {
			r.Name = s
			r.Args[s] = "as a key"
		}
		recs = append(recs, r)
	}
	// The _brokertest block's times, to the microsecond (finer ones are
	// refused: TestUnwritableValuesRefused), read alike by Python.
	keep := time.Date(2026, 12, 8, 4, 0, 0, 999999000, time.FixedZone("", 2*3600))
	recs = append(recs, &Record{Hostname: "meta", Broker: &Meta{ID: "m", CheckedOut: time.Date(2026, 12, 8, 2, 40, 1, 123456000, time.UTC), KeepUntil: &keep}})
	cases = append(cases, []string{"_brokertest", "checked_out, keep_until"})
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	if err := Open(path).Put(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	got, err := Open(path).Load(context.Background())
	if err != nil {
		data, _ := os.ReadFile(path)
		t.Fatalf("a fresh Store cannot read what Put wrote: %v\n%s", err, clip(data))
	}
	for i := range recs {
		if !codec.Equal(got[i:i+1], recs[i:i+1]) {
			t.Errorf("%v: read back as %s", cases[i], codec.Show(got[i:i+1]))
		}
	}
	if python != "" {
		compareWithPython(t, python, path, recs, "write_values.txt")
	}
}

// readCase is a line of testdata/compat/read_values.txt: a plain scalar
// as the Python broker's files hold it, and its value as ruamel.yaml
// reads it (typed JSON). The Python check proves the expectations.
func TestReadValuesAsRuamel(t *testing.T) {
	cases := compatCases(t, "read_values.txt")
	var doc strings.Builder
	var want []any
	for i, c := range cases {
		fmt.Fprintf(&doc, "- hostname: h%d\n  v: %s\n", i, c[0])
		var w any
		if err := json.Unmarshal([]byte(c[1]), &w); err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		want = append(want, w)
	}
	recs, err := Parse("read_values.yaml", []byte(doc.String()))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if g, w := canonical(jsonTyped(typed(r.Extra["v"]))), canonical(want[i]); g != w {
			t.Errorf("%q: Go reads %s, ruamel.yaml %s", cases[i][0], g, w)
		}
	}
	if testing.Short() {
		return
	}
	python := pythonBridge(t)
	path := filepath.Join(t.TempDir(), "read_values.yaml")
	if err := os.WriteFile(path, []byte(doc.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	py := pythonRead(t, python, path)
	if py.RuamelError != "" {
		t.Fatalf("ruamel.yaml: %s", py.RuamelError)
	}
	items := py.Ruamel.([]any)[1].([]any)
	for i, item := range items {
		for _, kv := range item.([]any)[1].([]any) {
			p := kv.([]any)
			if canonical(p[0]) == canonical(jsonTyped(typed("v"))) {
				if g, w := canonical(p[1]), canonical(want[i]); g != w {
					t.Errorf("%q: the testdata says %s, ruamel.yaml reads %s", cases[i][0], w, g)
				}
			}
		}
	}
}

// Files the Python broker refuses, or that hold something this library
// cannot hold, are refused with ErrCorrupt, and a Put leaves them as they
// are (testdata/compat/refuse/).
func TestRefusedFilesAreNeverRewritten(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "compat", "refuse", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "inventory.yaml")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			s := Open(path)
			if _, err := s.Load(context.Background()); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load: %v, want ErrCorrupt", err)
			} else {
				t.Log(err)
			}
			if err := s.Put(context.Background(), &Record{Hostname: "new"}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Put: %v, want ErrCorrupt", err)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, data) {
				t.Fatalf("the file was rewritten:\n%s", after)
			}
		})
	}
}

// Values Put cannot write so that every reader reads them back are
// refused, naming the record and the field, and nothing is written.
func TestUnwritableValuesRefused(t *testing.T) {
	for _, c := range []struct {
		name  string
		rec   *Record
		field string
	}{
		{"not UTF-8", &Record{Hostname: "h", Args: map[string]any{"k": "\xff"}}, "_broker_args.k"},
		{"nanoseconds", &Record{Hostname: "h", Extra: map[string]any{"when": time.Date(2024, 1, 1, 0, 0, 0, 1, time.UTC)}}, "when"},
		{"nanoseconds in _brokertest", &Record{Hostname: "h", Broker: &Meta{ID: "h", CheckedOut: time.Date(2024, 1, 1, 0, 0, 0, 1500, time.UTC)}}, "_brokertest.checked_out"},
		{"nanoseconds in keep_until", &Record{Hostname: "h", Broker: &Meta{ID: "h", CheckedOut: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), KeepUntil: new(time.Date(2024, 1, 1, 0, 0, 0, 999999999, time.UTC))}}, "_brokertest.keep_until"},
		{"year 0", &Record{Hostname: "h", Args: map[string]any{"d": []any{Date{Year: 0, Month: 1, Day: 1}}}}, "_broker_args.d.0"},
		{"a channel", &Record{Hostname: "h", Facts: map[string]any{"c": make(chan int)}}, "_broker_facts.c"},
		{"a struct", &Record{Hostname: "h", Extra: map[string]any{"s": struct{ A int }{1}}}, "s"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "inventory.yaml")
			s := Open(path)
			if err := s.Put(context.Background(), &Record{Hostname: "first"}); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			err := s.Put(context.Background(), c.rec)
			if err == nil || !strings.Contains(err.Error(), "field "+c.field) || !strings.Contains(err.Error(), "record h") {
				t.Fatalf("Put: %v; want an error naming record h and field %s", err, c.field)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
				t.Fatal("the file changed")
			}
		})
	}
}

// A record read with a key that is not a string (null: in _broker_args)
// is kept byte for byte while other records change, and a Put of it
// writes such keys as read (testdata/compat/non-string-keys.yaml), so
// that both Python libraries read the same keys back.
func TestNonStringKeyKeptAndWrittenAsRead(t *testing.T) {
	python := ""
	if !testing.Short() {
		python = pythonBridge(t)
	}
	odd := "- hostname: odd\n  _broker_args:\n    null: x\n    ~: y\n    1: one\n"
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	if err := os.WriteFile(path, []byte(odd), 0o600); err != nil {
		t.Fatal(err)
	}
	s := Open(path)
	if err := s.Put(context.Background(), &Record{Hostname: "new"}); err == nil {
		t.Fatal("a file with `null:` and `~:` in one map was read (ruamel.yaml refuses the duplicate key)")
	}
	odd = "- hostname: odd\n  _broker_args:\n    null: x\n    1: one\n"
	if err := os.WriteFile(path, []byte(odd), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), &Record{Hostname: "new"}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !bytes.HasPrefix(data, []byte(odd)) {
		t.Fatalf("the record with a null key changed:\n%s", data)
	}
	recs, err := s.Load(context.Background())
	if err != nil || len(recs) != 2 {
		t.Fatalf("%v, %d records", err, len(recs))
	}
	if err := s.Remove(context.Background(), recs[0]); err != nil {
		t.Fatal(err)
	}
	// A Put of the changed record keeps its keys' types, in Go and Python.
	data, err = os.ReadFile(filepath.Join("testdata", "compat", "non-string-keys.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	recs, err = s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	recs[0].IP = "10.0.0.1"
	recs[0].Args["added"] = "by Go"
	if err := s.Put(context.Background(), recs[0]); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	for _, k := range []string{"\n    null: x\n", "\n    1: one\n", "\n    2024-01-01: a date\n", "\n      - 1.5: f\n", "\n  3: at the top\n"} {
		if !strings.Contains(string(data), k) {
			t.Errorf("%q not written as read:\n%s", k, data)
		}
	}
	got, err := Open(path).Load(context.Background())
	if err != nil || !codec.Equal(got, recs) {
		t.Fatalf("read back: %v\n%s\nwant\n%s", err, codec.Show(got), codec.Show(recs))
	}
	if python != "" {
		py := pythonRead(t, python, path)
		if py.RuamelError != "" || py.PyYAMLError != "" {
			t.Fatalf("Python cannot read what Put wrote: %s %s", py.RuamelError, py.PyYAMLError)
		}
		for _, lib := range []any{py.Ruamel, py.PyYAML} {
			keys := fmt.Sprint(lib)
			for _, k := range []string{"[n] [s x]", "[i 1] [s one]", "[d 2024-01-01]", "[f 1.5] [s f]", "[i 3] [s at the top]"} {
				if !strings.Contains(keys, k) {
					t.Errorf("Python does not read the key %s as before: %s", k, keys)
				}
			}
		}
	}
}

// Null and empty fields, and fields read as numbers, dates or booleans,
// are written back as they were read when a Go process changes the record.
func TestNullAndEmptyFieldsKept(t *testing.T) {
	text := "- hostname: a\n  name: ''\n  ip: null\n  _broker_provider: null\n  _broker_provider_instance: ''\n  _broker_args: {}\n  _broker_facts: null\n"
	recs, err := Parse("x.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	recs[0].Extra = map[string]any{"touched": true}
	b, err := codec.EncodeRecord(recs[0])
	if err != nil {
		t.Fatal(err)
	}
	want := text + "  touched: true\n"
	if string(b) != want {
		t.Fatalf("written as\n%s\nwant\n%s", b, want)
	}
	// Fields the Python broker wrote as numbers, dates, booleans stay so.
	text = "- hostname: 10\n  name: 123\n  ip: 1.5\n  _broker_provider: true\n  _broker_provider_instance: 2024-01-01\n  _broker_args: {}\n"
	recs, err = Parse("x.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if m := recs[0].Map(); m["name"] != 123 || m["hostname"] != 10 || m["_broker_provider"] != true {
		t.Errorf("Map holds %#v", m)
	}
	recs[0].Extra = map[string]any{"touched": true}
	if b, _ := codec.EncodeRecord(recs[0]); string(b) != text+"  touched: true\n" {
		t.Fatalf("written as\n%s\nwant\n%s", b, text+"  touched: true\n")
	}
	recs[0].Name = "a name"
	if b, _ := codec.EncodeRecord(recs[0]); !strings.Contains(string(b), "\n  name: a name\n") {
		t.Fatalf("a name set by Go written as\n%s", b)
	}
	// As a Python broker's host without a name: null args too.
	text = "- hostname: b\n  name: null\n  _broker_args: null\n"
	recs, _ = Parse("x.yaml", []byte(text))
	if b, _ := codec.EncodeRecord(recs[0]); string(b) != text {
		t.Fatalf("written as\n%s\nwant\n%s", b, text)
	}
}

// Files in the forms ruamel.yaml and people write (testdata/compat/keep/:
// anchors shared between hosts, ip: ::1, a value starting with ?, an int
// key, !!binary, folded and |+ blocks, a byte-order mark, CRLF, "---"):
// a Put of a new record and a Remove of another keep the bytes of every
// record they do not touch; and the result reads back in Go (and, when
// python3 is here, in both Python libraries) as before.
func TestOddFormsKeepUntouchedBytes(t *testing.T) {
	python := ""
	if !testing.Short() {
		python = pythonBridge(t)
	}
	files, err := filepath.Glob(filepath.Join("testdata", "compat", "keep", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			// A record using another's anchor keeps its bytes while that
			// record keeps its own (not after a Remove of it).
			recs, raws, keep := keptAsRead(t, f, data, func(int) bool { return false })
			_, _, keepAfterRemove := keptAsRead(t, f, data, func(i int) bool { return i == 0 })
			path := filepath.Join(t.TempDir(), "inventory.yaml")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			s := Open(path)
			added := &Record{Hostname: "added", Args: map[string]any{"k": "v"}}
			if err := s.Put(context.Background(), added); err != nil {
				t.Fatal(err)
			}
			after, _ := os.ReadFile(path)
			for i, raw := range raws {
				if !keep[i] {
					continue // not cut out of the file
				}
				if !bytes.Contains(after, raw) {
					t.Errorf("record %d's bytes changed by a Put of another:\n%q\nin\n%q", i, raw, after)
				}
			}
			if kept := slices.IndexFunc(raws, func(r []byte) bool { return r != nil }); kept < 0 {
				t.Errorf("no record kept its bytes")
			}
			got, err := Open(path).Load(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := append(slices.Clone(recs), added)
			if !codec.Equal(got, want) {
				t.Fatalf("read back as\n%s\nwant\n%s", codec.Show(got), codec.Show(want))
			}
			if python != "" {
				compareWithLibs(t, python, path, want, filepath.Base(f)+" after a Put", false)
			}
			// Remove the first record: the others keep their bytes.
			if err := s.Remove(context.Background(), recs[0]); err != nil {
				t.Fatal(err)
			}
			after, _ = os.ReadFile(path)
			for i, raw := range raws[1:] {
				if keepAfterRemove[i+1] && !bytes.Contains(after, raw) {
					t.Errorf("record %d's bytes changed by a Remove of another", i+1)
				}
			}
			got, err = Open(path).Load(context.Background())
			if err != nil || !codec.Equal(got, want[1:]) {
				t.Fatalf("after Remove: %v\n%s", err, codec.Show(got))
			}
			if python != "" {
				compareWithLibs(t, python, path, want[1:], filepath.Base(f)+" after a Remove", false)
			}
		})
	}
}

// A field the file held as a number, a date or a boolean that Go then sets
// to other text is quoted wherever a resolver would read it as non-text
// (testdata/compat/retext.txt), so Go and both Python libraries read the
// text back; unchanged, it stays plain (TestNullAndEmptyFieldsKept).
func TestTextSetOverPlainFieldQuoted(t *testing.T) {
	python := ""
	if !testing.Short() {
		python = pythonBridge(t)
	}
	cases := compatCases(t, "retext.txt")
	var doc strings.Builder
	for i, c := range cases {
		if c[0] == "hostname" {
			fmt.Fprintf(&doc, "- hostname: %s\n  name: h%d\n  _broker_args: {}\n", c[1], i)
		} else {
			fmt.Fprintf(&doc, "- hostname: h%d\n  %s: %s\n  _broker_args: {}\n", i, c[0], c[1])
		}
	}
	recs, err := Parse("retext.yaml", []byte(doc.String()))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		text, err := strconv.Unquote(c[2])
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		r := recs[i]
		switch c[0] {
		case "hostname":
			r.Hostname = text
		case "name":
			r.Name = text
		case "ip":
			r.IP = text
		case "_broker_provider":
			r.Provider = text
		case "_broker_provider_instance":
			r.Instance = text
		}
		if m := r.Map(); m[c[0]] != text {
			t.Errorf("%v: Map holds %#v", c, m[c[0]])
		}
	}
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	if err := Open(path).Put(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
	got, err := Open(path).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		if !codec.Equal(got[i:i+1], recs[i:i+1]) || got[i].Map()[cases[i][0]] != recs[i].Map()[cases[i][0]] {
			data, _ := os.ReadFile(path)
			t.Errorf("%v: read back as %s\n%s", cases[i], codec.Show(got[i:i+1]), clip(data))
		}
	}
	if python != "" {
		compareWithPython(t, python, path, recs, "retext.txt")
	}
}
