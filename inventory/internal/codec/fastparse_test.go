package codec

import (
	"bytes"
	"fmt"
	"math"
	"math/big"
	"math/rand"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// canonNaN replaces NaN floats, which are never equal to themselves, by a
// marker, so that reflect.DeepEqual can compare decoded values.
func canonNaN(v any) any {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) {
			return "NaN!"
		}
	case map[string]any:
		for k, e := range x {
			x[k] = canonNaN(e)
		}
	case map[any]any:
		for k, e := range x {
			x[k] = canonNaN(e)
		}
	case []any:
		for i, e := range x {
			x[i] = canonNaN(e)
		}
	}
	return v
}

func canonRecords(recs []*Record) []*Record {
	for _, r := range recs {
		canonNaN(r.Extra)
		canonNaN(r.Args)
		canonNaN(r.Facts)
		if r.Broker != nil {
			canonNaN(r.Broker.Data)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	return recs
}

func showRecords(recs []*Record) string { return Show(recs) }

// checkFast compares the fast reader with yaml.v3 on data: when the fast
// reader accepts it, yaml.v3 must give the same records, and each
// record's bytes must stand alone. It returns whether the fast reader
// accepted data.
func checkFast(t *testing.T, data []byte) bool {
	t.Helper()
	recs, raw, why, _ := fastDecode(data)
	if why != "" {
		return false
	}
	want, _, err := decodeGeneral("x.yaml", data)
	if err != nil {
		t.Fatalf("the fast reader accepts what yaml.v3 refuses (%v):\n%s", err, data)
	}
	if got, want := canonRecords(recs), canonRecords(want); !Equal(got, want) {
		t.Fatalf("records differ for\n%s\nfast:\n%s\nyaml.v3:\n%s", data, showRecords(got), showRecords(want))
	}
	if len(raw) != len(recs) {
		t.Fatalf("%d records, %d byte ranges", len(recs), len(raw))
	}
	var back []byte
	for i := len(raw) - 1; i >= 0; i-- {
		one, oneRaw, why, _ := fastDecode(raw[i])
		if why != "" || len(one) != 1 || len(oneRaw) != 1 || !bytes.Equal(oneRaw[0], raw[i]) {
			t.Fatalf("record %d's bytes do not stand alone (%s):\n%s", i, why, raw[i])
		}
		if !Equal(canonRecords(one)[:1], recs[i:i+1]) {
			t.Fatalf("record %d's bytes alone decode to\n%s\nnot\n%s", i, showRecords(one), showRecords(recs[i:i+1]))
		}
		back = append(back, raw[i]...)
	}
	rev, _, why, _ := fastDecode(back)
	slices.Reverse(rev)
	if why != "" || !Equal(canonRecords(rev), canonRecords(recs)) {
		t.Fatalf("the records' bytes in reverse order do not decode to the records reversed (%s):\n%s", why, back)
	}
	return true
}

// fastSeeds are files the fast reader reads, or must give up on.
var fastSeeds = []string{
	"",
	"[]\n",
	"# only a comment\n",
	"- hostname: a\n",
	"- hostname: a\n  name: null\n",
	"- hostname: a\n  name:\n  ip: ~\n",
	"- hostname: a\n  name: ''\n",
	"- hostname: 'a''b'\n  name: \"x\\ty\\u00e9\\x41\\N\\L\"\n",
	"- hostname: 8.6\n  name: 2001-12-14\n  ip: 0x1F\n",
	"- hostname: a\n  _broker_args: {}\n  _broker_facts: {}\n",
	"- hostname: a\n  _broker_args: null\n  _brokertest: null\n",
	"- hostname: a\n  _broker_args: {template: deploy-rhel, n: 3, tags: [a, 'b', \"c\", 1.5, true, null, ~]}\n",
	"- hostname: a\n  _brokertest: {id: x, owner: {pid: 1}}\n",
	"- hostname: a\n  _brokertest:\n    id: abc\n    state: ready\n    owner:\n      run: r\n      pid: 12\n      started: 18446744073709551615\n      boot_id: b\n      machine: m\n    test: TestX/sub\n    checked_out: 2026-12-02T05:43:13Z\n    keep_until: 2026-12-02T06:43:13.5+02:00\n    ssh:\n      host: 10.0.0.1\n      port: 2222\n      user: root\n      insecure: yes\n    data:\n      container_id: abc\n      ports:\n        22/tcp: 0.0.0.0:32768\n",
	"- hostname: a\n  _brokertest:\n    keep_until: null\n    ssh:\n      insecure: 'off'\n",
	"- hostname: a\n  list:\n  - 1\n  - two\n  - - 3\n    - 4\n  - k: v\n    k2: v2\n  next: x\n",
	"- hostname: a\n  list:\n    - 1\n    - a: b\n      c: d\n",
	"- hostname: a\n  text: |\n    line one\n      indented\n\n    last\n  stripped: |-\n    x\n\n\n  after: y\n",
	"- hostname: a\n  long: this is a long\n    plain scalar\n\n    over lines\n  q: 'single\n    quoted\n\n    lines'\n  d: \"double \\\n    joined\\n  \n    end\"\n",
	"# header\n- hostname: a # comment\n  # between\n  name: b\n\n# before b\n- hostname: b\n",
	"- hostname: a\n  'quoted key': 1\n  \"n\": 2\n  \"y\": 3\n",
	"- hostname: a\n  k: .5\n  l: -.inf\n  m: .nan\n  n: 1_000\n  o: 0o17\n  p: 0b101\n  q: +12\n  r: 012\n  s: 1e3\n  t: 2001-12-14 21:59:43.10\n  u: 9223372036854775808\n  v: -0b11\n",
	// Given up on.
	"- hostname: a\n  x: &a [1]\n  y: *a\n",
	"- hostname: a\n  x: !!str 1\n",
	"---\n- hostname: a\n",
	"- hostname: a\n\tname: b\n",
	"- hostname: a\r\n",
	"- hostname: a\n  hostname: b\n",
	"- hostname: a\n  1: b\n",
	"- hostname: a\n  x: >\n    folded\n",
	"- hostname: a\n  x: [a,\n    b]\n",
	"- hostname: a\n  _brokertest:\n    owner:\n      pid: 1.5\n",
	"- hostname: a\n  _brokertest:\n    checked_out: '2026-12-02T05:43:13Z'\n",
	"- hostname: [a]\n",
	"-\n  hostname: a\n",
	"- hostname: a\n- \n",
	"hostname: a\n",
	"- hostname: a",
	"- hostname: a\n  x: a: b\n",
	"- hostname: a\n  <<: {b: 1}\n",
}

func FuzzFastParse(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	if b, err := os.ReadFile("../testdata/inventory/python_broker_inventory.yaml"); err == nil {
		f.Add(b)
	}
	if b, err := Marshal(sampleRecords(4)); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		checkFast(t, data)
	})
}

// The fast reader reads what Marshal writes, and gives the records back.
func TestFastParseReadsMarshal(t *testing.T) {
	recs := sampleRecords(200)
	extra := []*Record{
		{Hostname: "8.6", Name: "null"},
		{Hostname: "yes", Name: "two\nlines\n", nameNull: false, Extra: map[string]any{"": "empty key", "n": "y", "t": "tab\there", "u": "é\u0085\u2028", "b": "\x00\x01", "long": strings.Repeat("word ", 40), "lead": " x ", "f": 1.0, "big": uint64(math.MaxUint64), "neg": -5, "nan": math.NaN(), "inf": math.Inf(-1)}},
		{Hostname: "h", nameNull: true, Args: map[string]any{"nested": map[string]any{"l": []any{[]any{}, map[string]any{}, []any{1, []any{2}}}}}},
	}
	recs = append(recs, extra...)
	data, err := Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		one, err := Marshal([]*Record{r})
		if err != nil {
			t.Fatal(err)
		}
		got, _, why, _ := fastDecode(one)
		if why != "" {
			t.Errorf("record %d: the fast reader gave up: %s\n%s", i, why, one)
			continue
		}
		checkFast(t, one)
		if len(got) != 1 {
			t.Fatalf("record %d: %d records", i, len(got))
		}
	}
	if !checkFast(t, data) {
		_, _, why, _ := fastDecode(data)
		t.Fatalf("the fast reader gave up on Marshal's output: %s", why)
	}
}

func TestFastParseSeeds(t *testing.T) {
	accepted := 0
	for _, s := range fastSeeds {
		if checkFast(t, []byte(s)) {
			accepted++
		}
	}
	if accepted < 20 {
		t.Errorf("the fast reader accepted only %d seeds", accepted)
	}
}

// Table of values: what each decodes to (as ruamel.yaml's round-trip
// loader reads them), through the fast reader, which must accept them
// all, and the general reader alike.
func TestFastParseValues(t *testing.T) {
	big1 := new(big.Int)
	big1.SetString("9223372036854775808", 10)
	for _, c := range []struct {
		yaml string
		want any
	}{
		{"a", "a"}, {"'a'", "a"}, {`"a"`, "a"}, {"1", 1}, {"'1'", "1"}, {"-1", -1}, {"+1", 1},
		{"1.5", 1.5}, {"1e3", 1000.0}, {".5", 0.5}, {"1_000", 1000}, {"0x1f", 31}, {"0o17", 15}, {"017", 17}, {"09", 9},
		{"0b11", 3}, {"9223372036854775808", big1}, {"1.", 1.0}, {"0X10", "0X10"}, {"0O17", "0O17"}, {"0B11", "0B11"}, {".5e3", ".5e3"},
		{"true", true}, {"False", false}, {"yes", "yes"}, {"no", "no"}, {"on", "on"}, {"y", "y"},
		{"null", nil}, {"~", nil}, {"", nil}, {"'null'", "null"}, {"NULL", nil}, {"nULL", "nULL"},
		{".inf", math.Inf(1)}, {"-.Inf", math.Inf(-1)},
		{"2001-12-14", Date{2001, 12, 14}}, {"2001-12-14T21:59:43.10-05:00", time.Date(2001, 12, 14, 21, 59, 43, 100000000, time.FixedZone("", -5*3600))},
		{"2024-1-1", "2024-1-1"}, {"2024-01-01T1:2:3Z", "2024-01-01T1:2:3Z"},
		{"'2001-12-14'", "2001-12-14"},
		{"10.0.0.5", "10.0.0.5"}, {"8.6", 8.6}, {"'8.6'", "8.6"}, {"1:2", "1:2"}, {"a#b", "a#b"}, {"a # b", "a"},
		{"[]", []any{}}, {"{}", map[string]any{}}, {"[a, [b], {c: d}]", []any{"a", []any{"b"}, map[string]any{"c": "d"}}},
		{`"\x41\u00e9\U0001F600\t\\\""`, "Aé\U0001F600\t\\\""}, {`'it''s'`, "it's"},
		{"-a", "-a"}, {"a b  c", "a b  c"}, {"é", "é"},
		{"|\n    x\n    y\n", "x\ny\n"}, {"|-\n    x\n\n", "x"},
	} {
		doc := "- hostname: h\n  v: " + c.yaml + "\n"
		recs, _, why, _ := fastDecode([]byte(doc))
		if why != "" {
			t.Errorf("%q: the fast reader gave up: %s", c.yaml, why)
			continue
		}
		checkFast(t, []byte(doc))
		if got := recs[0].Extra["v"]; !ValuesEqual(got, c.want) {
			t.Errorf("%q: got %#v, want %#v", c.yaml, got, c.want)
		}
	}
}

func isPlainSafe(s string) bool {
	for _, r := range s {
		if r < 0x20 || r >= 0x7f {
			return false
		}
	}
	return !strings.HasPrefix(s, "-") || len(s) > 1 && s[1] != ' '
}

// sampleRecords returns n records shaped like those providers write:
// Container and AnsibleTower hosts with _broker_args and _brokertest.
func sampleRecords(n int) []*Record {
	recs := make([]*Record, n)
	base := time.Date(2026, 11, 30, 9, 15, 0, 0, time.UTC)
	for i := range recs {
		keep := base.Add(time.Duration(i) * time.Hour)
		owner := Owner{Run: fmt.Sprintf("%016x", i*7919), PID: 4000 + i, Started: uint64(123456 + i), BootID: "47261ecd-7982-492e-b928-51a0e7c693b0", Machine: "ci-runner-3"}
		if i%2 == 0 {
			recs[i] = &Record{
				Hostname: fmt.Sprintf("host-%d.example.com", i), Name: fmt.Sprintf("host-%d", i),
				Provider: "Container", Instance: "docker",
				Args: map[string]any{"container_host": "brokertest/debian-sshd:12", "n": i, "ports": []any{"22/tcp"}},
				Broker: &Meta{ID: fmt.Sprintf("%012x", i), State: StateReady, Owner: owner, Test: fmt.Sprintf("TestCheckout/case_%d", i),
					CheckedOut: base, SSH: &SSH{Port: 2000 + i%1000, User: "root", KeyFile: "/home/ci/.cache/brokertest/keys/id_ed25519"},
					Data: map[string]any{"container_id": fmt.Sprintf("%064x", i), "engine": "unix:///run/user/1000/podman/podman.sock", "image": "brokertest/debian-sshd:12",
						"ports": map[string]any{"22/tcp": fmt.Sprintf("127.0.0.1:%d", 32768+i%1000)}}},
			}
			continue
		}
		recs[i] = &Record{
			Hostname: fmt.Sprintf("dhcp-%d-%d.lab.example.com", i/250, i%250), Name: fmt.Sprintf("ci-rhel9-%d", i), IP: fmt.Sprintf("10.%d.%d.%d", i/65536%256, i/256%256, i%256),
			Provider: "AnsibleTower", Instance: "production",
			Args:  map[string]any{"workflow": "deploy-rhel", "deploy_rhel_version": "9.4", "provider": "RHEV", "host_type": "host"},
			Facts: map[string]any{"os_distribution": "RHEL", "os_distribution_version": "9.4", "ansible_port": 22},
			Broker: &Meta{ID: fmt.Sprintf("%012x", i), State: StateFree, Owner: owner, CheckedOut: base, KeepUntil: &keep,
				Data: map[string]any{"job_id": 100000 + i, "job_type": "workflow_job", "api_url": fmt.Sprintf("https://tower.example.com/api/v2/workflow_jobs/%d/", 100000+i)}},
			Extra: map[string]any{"tower_inventory": "ci-inventory", "type": "host"},
		}
	}
	return recs
}

// genYAML writes random inventories in (and around) the fast reader's
// subset, for TestFastParseGenerated.
type genYAML struct {
	r *rand.Rand
	b strings.Builder
}

var genScalars = []string{
	"a", "a b", "8.6", "1", "0x1F", "-1", "+1", "1_000", ".5", "1e3", "1.", "true", "True", "yes", "no", "y", "null", "~",
	"2001-12-14", "2001-12-14T21:59:43Z", "2001-12-14 21:59:43.10", "2026-11-30T09:15:00.123+02:00", "a#b", "a:b", "-a", "é", "日本",
	"0o17", "012", "09", "9223372036854775808", "-9223372036854775809", "-.inf", ".nan", "a  b", "a'b", `x"y`, "<<", "=", "0b101",
	"host-1.example.com", "10.0.0.5", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "/tmp/key", "unix:///run/podman.sock", "22/tcp", "1:2:3",
	"TestX/sub_1", "deploy-rhel-8.6",
}

var genKeys = []string{"hostname", "name", "ip", "_broker_provider", "_broker_provider_instance", "_broker_args", "_broker_facts", "_brokertest",
	"id", "state", "owner", "pid", "started", "run", "checked_out", "keep_until", "ssh", "port", "insecure", "data", "host", "user",
	"type", "tags", "n", "y", "x", "a b", "nics", "release", "a-b", "k.e.y", "é", "-k", "a'b", "test", "request_key", "host_key", "key_file", "boot_id", "machine"}

// genOddKeys are keys yaml.v3 does not take as strings, used now and then.
var genOddKeys = []string{"1", "true", "null", "~", "<<", "2001-12-14", "1.5"}

func (g *genYAML) pick(l []string) string { return l[g.r.Intn(len(l))] }

func (g *genYAML) scalar(indent int) string {
	s := g.pick(genScalars)
	switch g.r.Intn(12) {
	case 0:
		return "'" + strings.ReplaceAll(s, "'", "''") + "'"
	case 1:
		return strconvQuote(s)
	case 2:
		if g.r.Intn(2) == 0 {
			return ""
		}
		return "null"
	case 3:
		// Over several lines.
		pad := strings.Repeat(" ", indent+1+g.r.Intn(3))
		switch g.r.Intn(3) {
		case 0:
			return "word " + s + "\n" + pad + "more" + strings.Repeat("\n", g.r.Intn(3)) + pad + "end"
		case 1:
			return "'word " + strings.ReplaceAll(s, "'", "''") + "\n" + pad + "more  \n\n" + pad + " end'"
		default:
			return "\"word \\\n" + pad + "more\\t\n" + pad + "\\x41 end\""
		}
	case 4:
		pad := strings.Repeat(" ", indent+2)
		chomp := []string{"", "-"}[g.r.Intn(2)]
		return "|" + chomp + "\n" + pad + s + "\n" + pad + "  deeper\n" + strings.Repeat("\n", g.r.Intn(2)) + pad + "last" + strings.Repeat("\n", g.r.Intn(3))
	}
	return s
}

func (g *genYAML) key() string {
	if g.r.Intn(40) == 0 {
		return g.pick(genOddKeys)
	}
	return g.pick(genKeys)
}

func (g *genYAML) flow(depth int) string {
	if depth > 2 || g.r.Intn(3) == 0 {
		s := g.scalar(0)
		if strings.ContainsAny(s, "\n,[]{}") || s == "" || strings.Contains(s, ":") && g.r.Intn(10) != 0 {
			return "x"
		}
		return s
	}
	n := g.r.Intn(4)
	var parts []string
	if g.r.Intn(2) == 0 {
		for range n {
			parts = append(parts, g.flow(depth+1))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	used := map[string]bool{}
	for range n {
		k := g.key()
		if used[k] {
			continue
		}
		used[k] = true
		parts = append(parts, k+": "+g.flow(depth+1))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// value writes a value after "key:" or "- " at indent (the collection's).
func (g *genYAML) value(indent, depth int) {
	switch c := g.r.Intn(10); {
	case depth < 4 && c < 3:
		g.b.WriteString("\n")
		g.mapping(indent+2+g.r.Intn(2), depth+1, false)
	case depth < 4 && c < 5:
		g.b.WriteString("\n")
		in := indent + 2
		if g.r.Intn(2) == 0 {
			in = indent // ruamel's indentless list
		}
		g.seq(in, depth+1)
	case c < 6:
		g.b.WriteString(" " + g.flow(0) + "\n")
	default:
		s := g.scalar(indent)
		if s != "" {
			g.b.WriteString(" ")
		}
		g.b.WriteString(s)
		if g.r.Intn(8) == 0 && !strings.HasPrefix(s, "|") {
			g.b.WriteString(" # comment")
		} else if g.r.Intn(10) == 0 && !strings.HasPrefix(s, "|") {
			g.b.WriteString("  ")
		}
		if !strings.HasSuffix(s, "\n") {
			g.b.WriteString("\n")
		}
	}
}

func (g *genYAML) mapping(indent, depth int, compact bool) {
	used := map[string]bool{}
	for i := range 1 + g.r.Intn(5) {
		k := g.key()
		if used[k] && g.r.Intn(10) != 0 {
			continue
		}
		used[k] = true
		if !(compact && i == 0) {
			if g.r.Intn(12) == 0 {
				g.b.WriteString(strings.Repeat(" ", g.r.Intn(indent+4)) + "\n")
			}
			g.b.WriteString(strings.Repeat(" ", indent))
		}
		if g.r.Intn(10) == 0 && !strings.Contains(k, "'") {
			k = "'" + k + "'"
		}
		g.b.WriteString(k + ":")
		if k == "_brokertest" && depth == 1 && g.r.Intn(3) > 0 {
			g.meta(indent + 2)
			continue
		}
		g.value(indent, depth)
		if g.r.Intn(10) == 0 {
			g.b.WriteString(strings.Repeat(" ", g.r.Intn(indent+3)) + "# note\n")
		}
	}
}

// meta writes a _brokertest block of mostly well-typed values in the
// forms YAML allows, after "_brokertest:".
func (g *genYAML) meta(ind int) {
	if g.r.Intn(8) == 0 {
		g.b.WriteString(" " + g.pick([]string{"null", "~", "{}", "{id: x, owner: {pid: 3, started: 9}}", "[]", "x"}) + "\n")
		return
	}
	g.b.WriteString("\n")
	pad := strings.Repeat(" ", ind)
	line := func(k, v string) {
		if g.r.Intn(6) > 0 {
			g.b.WriteString(pad + k + ":" + v + "\n")
		}
	}
	pick := func(l ...string) string { return " " + l[g.r.Intn(len(l))] }
	line("id", pick("abc123", "'0001'", "\"x\"", "12", "", "null", "2001-12-14", "[a]"))
	line("state", pick("ready", "free", "'leased'", "~"))
	if g.r.Intn(5) > 0 {
		g.b.WriteString(pad + "owner:")
		if g.r.Intn(6) == 0 {
			g.b.WriteString(pick("null", "{}", "{run: r, pid: 1}", "x") + "\n")
		} else {
			g.b.WriteString("\n")
			op := pad + "  "
			for _, kv := range [][2]string{
				{"run", pick("0123abcd", "'r'", "1e3")},
				{"pid", pick("4242", "0x10", "-1", "1.5", "'7'", "null", "9223372036854775807", "9223372036854775808", "1_000", "0o17")},
				{"started", pick("123456", "18446744073709551615", "18446744073709551616", "-1", "0", "~", "1.0", "0b11")},
				{"boot_id", pick("47261ecd-7982", "'b'")},
				{"machine", pick("vm", "8.6")},
				{"other", pick("&a x", "{a: 1, a: 2}", "[1, 2]")},
			} {
				if g.r.Intn(5) > 0 {
					g.b.WriteString(op + kv[0] + ":" + kv[1] + "\n")
				}
			}
		}
	}
	line("test", pick("TestX/sub", "'a: b'"))
	line("checked_out", pick("2026-11-30T09:15:00Z", "2026-11-30T09:15:00.5Z", "2026-11-30t09:15:00+02:00", "2026-11-30 09:15:00", "2026-11-30",
		"2026-2-3T4:5:6Z", "'2026-11-30T09:15:00Z'", "null", "", "2026-13-30T09:15:00Z", "1", "2026-11-30T09:15:00,5Z"))
	line("keep_until", pick("2026-12-01T00:00:00Z", "null", "~", "", "2026-12-01", "''", "x"))
	line("request_key", pick("k1", "'1'"))
	if g.r.Intn(2) == 0 {
		g.b.WriteString(pad + "ssh:")
		if g.r.Intn(5) == 0 {
			g.b.WriteString(pick("null", "{}", "{port: 22, insecure: yes}", "[]") + "\n")
		} else {
			g.b.WriteString("\n")
			for _, kv := range [][2]string{{"host", pick("10.0.0.1", "'h'")}, {"port", pick("22", "2222", "'22'", "0x16", "22.0")},
				{"user", pick("root", "null")}, {"host_key", pick("ssh-ed25519 AAAA")}, {"key_file", pick("/k")},
				{"insecure", pick("true", "false", "yes", "No", "'on'", "\"off\"", "y", "1", "TRUE", "null", "maybe")},
				{"transport", pick("engine-stream", "tcp", "null", "1")}, {"proxy_command", pick("docker exec -i c /usr/sbin/sshd -i", "'a: b'")}} {
				if g.r.Intn(4) > 0 {
					g.b.WriteString(pad + "  " + kv[0] + ":" + kv[1] + "\n")
				}
			}
		}
	}
	if g.r.Intn(2) == 0 {
		g.b.WriteString(pad + "data:")
		g.value(ind, 2)
	}
}

func (g *genYAML) seq(indent, depth int) {
	for range 1 + g.r.Intn(3) {
		g.b.WriteString(strings.Repeat(" ", indent) + "-")
		switch g.r.Intn(4) {
		case 0, 1:
			pad := 1 + g.r.Intn(4)/3*g.r.Intn(3)
			g.b.WriteString(strings.Repeat(" ", pad))
			g.mapping(indent+1+pad, depth+1, true)
		default:
			g.value(indent, depth)
		}
	}
}

func strconvQuote(s string) string {
	b, _ := yaml.Marshal(s)
	if q := strings.TrimSpace(string(b)); strings.HasPrefix(q, `"`) {
		return q
	}
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
}

// Random inventories: wherever the fast reader accepts one, yaml.v3 reads
// the same records.
func TestFastParseGenerated(t *testing.T) {
	g := &genYAML{r: rand.New(rand.NewSource(1))}
	n := 4000
	if testing.Short() {
		n = 500
	}
	accepted := 0
	for range n {
		g.b.Reset()
		if g.r.Intn(5) == 0 {
			g.b.WriteString("# header\n")
		}
		for range 1 + g.r.Intn(3) {
			g.b.WriteString("- ")
			g.mapping(2, 1, true)
		}
		if checkFast(t, []byte(g.b.String())) {
			accepted++
		}
	}
	t.Logf("the fast reader accepted %d of %d", accepted, n)
	if accepted < n/10 {
		t.Errorf("the fast reader accepted only %d of %d", accepted, n)
	}
}

// plainASCII tests 8 bytes at once as checkText tests each.
func TestPlainASCII(t *testing.T) {
	ok := func(c byte) bool { return c >= 0x20 && c < 0x7f || c == '\n' }
	r := rand.New(rand.NewSource(4))
	for k := range 8 {
		for c := range 256 {
			w := []byte("abcdefgh")
			w[k] = byte(c)
			if got := plainASCII(load64(string(w))); got != ok(byte(c)) {
				t.Fatalf("%q: %v", w, got)
			}
		}
	}
	for range 100000 {
		var w [8]byte
		want := true
		for i := range w {
			w[i] = byte(r.Intn(256))
			if r.Intn(2) == 0 {
				w[i] = byte(0x20 + r.Intn(0x5f))
			}
			want = want && ok(w[i])
		}
		if got := plainASCII(load64(string(w[:]))); got != want {
			t.Fatalf("%q: %v", w, got)
		}
	}
}

// parseUTC gives what time.Parse gives, and leaves it what it refuses.
func TestParseUTC(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	cases := []string{"2026-11-30T09:15:00Z", "2024-02-29T23:59:59.999999999Z", "2023-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z",
		"2026-00-01T00:00:00Z", "2026-01-00T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T00:60:00Z", "2026-01-01T00:00:60Z", "2026-01-01T00:00:00.Z",
		"2026-01-01T00:00:00.1234567891Z", "2026-01-01T00:00:00,5Z", "0000-01-01T00:00:00Z", "2026-1-01T00:00:00Z", "2026-01-01t00:00:00Z", "2026-01-01T00:00:00+00:00"}
	for range 20000 {
		b := []byte(cases[r.Intn(3)])
		b[r.Intn(len(b))] = "0123456789:.-TZ+"[r.Intn(16)]
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		fast, ok := parseUTC(s)
		want, err := time.Parse("2006-1-2T15:4:5.999999999Z07:00", s)
		if ok && (err != nil || fast != want) {
			t.Fatalf("%q: parseUTC %v, time.Parse %v %v", s, fast, want, err)
		}
		if !ok && err == nil && len(s) == 20 && strings.HasSuffix(s, "Z") && s[10] == 'T' && strings.Count(s, ":") == 2 && s[4] == '-' && s[7] == '-' {
			t.Errorf("%q: parseUTC declined what time.Parse reads", s)
		}
	}
}

// _brokertest blocks in every form YAML allows for their typed fields:
// wherever the fast reader accepts one, yaml.v3 reads the same.
func TestFastParseMeta(t *testing.T) {
	g := &genYAML{r: rand.New(rand.NewSource(9))}
	accepted, keep := 0, 0
	for range 5000 {
		g.b.Reset()
		g.b.WriteString("- _brokertest:")
		g.meta(4)
		data := []byte(g.b.String())
		if !checkFast(t, data) {
			continue
		}
		accepted++
		if recs, _, _, _ := fastDecode(data); recs[0].Broker != nil && recs[0].Broker.KeepUntil != nil {
			keep++
		}
	}
	t.Logf("the fast reader accepted %d of 5000 (%d with keep_until)", accepted, keep)
	if accepted < 500 || keep < 50 {
		t.Errorf("the fast reader accepted only %d (%d with keep_until)", accepted, keep)
	}
}
