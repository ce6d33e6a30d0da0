package inventory

import (
	"bytes"
	"math"
	"regexp"
	"strconv"
	"time"
)

// The fast writer: writes a record in exactly the bytes yaml.v3 writes
// for it (indent 2, one record as a one-item list), for the values records
// hold: ASCII text on one line, integers, floats, bools, times, nil, and
// maps and lists of them. On anything else (other text, other types, keys
// that sort in a way it does not copy) it declines, and yaml.v3 writes the
// record. TestFastEncode checks it against yaml.v3.

// encoder appends to b; ok turns false when it declines.
type encoder struct {
	b  []byte
	ok bool
}

// fastEncode appends r's bytes to b, or returns false.
func fastEncode(b []byte, r *Record) ([]byte, bool) {
	e := encoder{b: b, ok: true}
	e.b = append(e.b, "- "...)
	ind := 2
	first := true
	key := func(k string) {
		if !first {
			e.indent(ind)
		}
		first = false
		e.key(k)
	}
	str := func(k, v string) {
		if v != "" {
			key(k)
			e.b = append(e.b, ' ')
			e.str(v, true)
			e.b = append(e.b, '\n')
		}
	}
	key("hostname")
	e.b = append(e.b, ' ')
	e.str(r.Hostname, true)
	e.b = append(e.b, '\n')
	switch {
	case r.Name != "":
		key("name")
		e.b = append(e.b, ' ')
		e.str(r.Name, false)
		e.b = append(e.b, '\n')
	case r.nameNull:
		key("name")
		e.b = append(e.b, " null\n"...)
	}
	str("ip", r.IP)
	str("_broker_provider", r.Provider)
	str("_broker_provider_instance", r.Instance)
	key("_broker_args")
	if r.Args == nil {
		e.b = append(e.b, " {}\n"...)
	} else {
		e.strMap(r.Args, ind)
	}
	if r.Facts != nil {
		key("_broker_facts")
		e.strMap(r.Facts, ind)
	}
	if m := r.Broker; m != nil {
		key("_brokertest")
		e.meta(m, ind+2)
	}
	if len(r.Extra) > 0 {
		keys := e.sortedKeys(r.Extra)
		for _, k := range keys {
			if isRecordKey(k) {
				return nil, false // yaml.v3 fails on it
			}
			key(k)
			e.value(r.Extra[k], ind)
		}
	}
	return e.b, e.ok
}

func isRecordKey(k string) bool {
	switch k {
	case "hostname", "name", "ip", "_broker_provider", "_broker_provider_instance", "_broker_args", "_broker_facts", "_brokertest":
		return true
	}
	return false
}

func (e *encoder) indent(n int) {
	for range n {
		e.b = append(e.b, ' ')
	}
}

// key writes a map key and its colon.
func (e *encoder) key(k string) {
	if len(k) > 100 {
		e.ok = false // yaml.v3 writes a long key in the "? " form
	}
	e.str(k, true)
	e.b = append(e.b, ':')
}

// meta writes the _brokertest block's lines at indent ind (after "key:").
func (e *encoder) meta(m *Meta, ind int) {
	e.b = append(e.b, '\n')
	field := func(k string) {
		e.indent(ind)
		e.key(k)
		e.b = append(e.b, ' ')
	}
	text := func(k, v string, always bool) {
		if v != "" || always {
			field(k)
			e.str(v, true)
			e.b = append(e.b, '\n')
		}
	}
	text("id", m.ID, true)
	text("state", m.State, false)
	e.metaOwner(&m.Owner, ind)
	text("test", m.Test, false)
	text("user", m.User, false)
	field("checked_out")
	e.time(m.CheckedOut)
	e.b = append(e.b, '\n')
	field("keep_until")
	if m.KeepUntil == nil {
		e.b = append(e.b, "null"...)
	} else {
		e.time(*m.KeepUntil)
	}
	e.b = append(e.b, '\n')
	text("request_key", m.RequestKey, false)
	if s := m.SSH; s != nil {
		e.metaSSH(s, ind)
	}
	if len(m.Data) > 0 {
		e.indent(ind)
		e.b = append(e.b, "data:"...)
		e.strMap(m.Data, ind)
	}
}

// metaOwner writes the _brokertest block's owner map at indent ind.
func (e *encoder) metaOwner(ow *Owner, ind int) {
	e.indent(ind)
	e.b = append(e.b, "owner:\n"...)
	o := ind + 2
	e.indent(o)
	e.b = append(e.b, "run: "...)
	e.str(ow.Run, true)
	e.b = append(e.b, '\n')
	e.indent(o)
	e.b = append(e.b, "pid: "...)
	e.b = strconv.AppendInt(e.b, int64(ow.PID), 10)
	e.b = append(e.b, '\n')
	e.indent(o)
	e.b = append(e.b, "started: "...)
	e.b = strconv.AppendUint(e.b, ow.Started, 10)
	e.b = append(e.b, '\n')
	e.indent(o)
	e.b = append(e.b, "boot_id: "...)
	e.str(ow.BootID, true)
	e.b = append(e.b, '\n')
	e.indent(o)
	e.b = append(e.b, "machine: "...)
	e.str(ow.Machine, true)
	e.b = append(e.b, '\n')
}

// metaSSH writes the _brokertest block's ssh map at indent ind.
func (e *encoder) metaSSH(s *SSH, ind int) {
	e.indent(ind)
	e.b = append(e.b, "ssh:"...)
	if *s == (SSH{}) {
		e.b = append(e.b, " {}\n"...)
	} else {
		e.b = append(e.b, '\n')
		text := func(k, v string) {
			if v != "" {
				e.indent(ind + 2)
				e.b = append(e.b, k...)
				e.b = append(e.b, ": "...)
				e.str(v, true)
				e.b = append(e.b, '\n')
			}
		}
		text("host", s.Host)
		if s.Port != 0 {
			e.indent(ind + 2)
			e.b = append(e.b, "port: "...)
			e.b = strconv.AppendInt(e.b, int64(s.Port), 10)
			e.b = append(e.b, '\n')
		}
		text("user", s.User)
		text("host_key", s.HostKey)
		text("key_file", s.KeyFile)
		if s.Insecure {
			e.indent(ind + 2)
			e.b = append(e.b, "insecure: true\n"...)
		}
		text("transport", s.Transport)
		text("proxy_command", s.ProxyCommand)
	}
}

// time writes a time as yaml.v3 does: RFC 3339, plain.
func (e *encoder) time(t time.Time) {
	if y := t.Year(); y < 0 || y > 9999 {
		e.ok = false
		return
	}
	e.b = t.AppendFormat(e.b, time.RFC3339Nano)
}

// strMap writes a map value after "key:" at indent ind.
func (e *encoder) strMap(m map[string]any, ind int) {
	if len(m) == 0 {
		e.b = append(e.b, " {}\n"...)
		return
	}
	e.b = append(e.b, '\n')
	for _, k := range e.sortedKeys(m) {
		e.indent(ind + 2)
		e.key(k)
		e.value(m[k], ind+2)
	}
}

// value writes v after "key:" (or "-") at indent ind: " scalar\n", or a
// line break and a block collection, or " {}" and " []".
func (e *encoder) value(v any, ind int) {
	switch x := v.(type) {
	case map[string]any:
		if x == nil {
			e.ok = false
			return
		}
		e.strMap(x, ind)
		return
	case []any:
		if x == nil {
			e.ok = false
			return
		}
		if len(x) == 0 {
			e.b = append(e.b, " []\n"...)
			return
		}
		e.b = append(e.b, '\n')
		e.list(x, ind+2)
		return
	}
	e.b = append(e.b, ' ')
	e.scalar(v)
	e.b = append(e.b, '\n')
}

// list writes the items of a non-empty list at indent ind.
func (e *encoder) list(l []any, ind int) {
	for i, v := range l {
		if i > 0 || e.b[len(e.b)-1] == '\n' {
			e.indent(ind)
		}
		e.b = append(e.b, '-')
		switch x := v.(type) {
		case map[string]any:
			if len(x) == 0 {
				if x == nil {
					e.ok = false
				}
				e.b = append(e.b, " {}\n"...)
				continue
			}
			e.b = append(e.b, ' ')
			for j, k := range e.sortedKeys(x) {
				if j > 0 {
					e.indent(ind + 2)
				}
				e.key(k)
				e.value(x[k], ind+2)
			}
		case []any:
			if len(x) == 0 {
				if x == nil {
					e.ok = false
				}
				e.b = append(e.b, " []\n"...)
				continue
			}
			e.b = append(e.b, ' ')
			e.list(x, ind+2)
		default:
			e.b = append(e.b, ' ')
			e.scalar(v)
			e.b = append(e.b, '\n')
		}
	}
}

// scalar writes a value that is not a collection.
func (e *encoder) scalar(v any) {
	switch x := v.(type) {
	case nil:
		e.b = append(e.b, "null"...)
	case string:
		e.str(x, true)
	case bool:
		e.b = strconv.AppendBool(e.b, x)
	case int:
		e.b = strconv.AppendInt(e.b, int64(x), 10)
	case int64:
		e.b = strconv.AppendInt(e.b, x, 10)
	case uint64:
		e.b = strconv.AppendUint(e.b, x, 10)
	case float64:
		switch {
		case math.IsInf(x, 1):
			e.b = append(e.b, ".inf"...)
		case math.IsInf(x, -1):
			e.b = append(e.b, "-.inf"...)
		case math.IsNaN(x):
			e.b = append(e.b, ".nan"...)
		default:
			e.b = strconv.AppendFloat(e.b, x, 'g', -1, 64)
		}
	case time.Time:
		e.time(x)
	default:
		e.ok = false
	}
}

// str writes text as yaml.v3 does: plain when it reads back as the same
// text and its emitter allows it, else single-quoted, or double-quoted
// when plain text would read as something else. typed is yaml.v3's
// string path; the record's name goes through a yaml.Node, which does not
// quote YAML 1.1's booleans and base 60 floats.
func (e *encoder) str(s string, typed bool) {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			e.ok = false // line breaks, tabs, other characters: yaml.v3
			return
		}
	}
	if plainTag(s) != tagStr || typed && (isBase60Float(s) || isOldBool(s)) {
		e.b = append(e.b, '"')
		for i := 0; i < len(s); i++ {
			if s[i] == '"' || s[i] == '\\' {
				e.b = append(e.b, '\\')
			}
			e.b = append(e.b, s[i])
		}
		e.b = append(e.b, '"')
		return
	}
	if plainAllowed(s) {
		e.b = append(e.b, s...)
		return
	}
	e.b = append(e.b, '\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			e.b = append(e.b, '\'')
		}
		e.b = append(e.b, s[i])
	}
	e.b = append(e.b, '\'')
}

// plainAllowed is yaml.v3's emitter's test for plain text in block
// context, for printable ASCII text that is not empty: no space at either
// end, no indicator at the start, no ": " or " #".
func plainAllowed(s string) bool {
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	if len(s) >= 3 && (s[:3] == "---" || s[:3] == "...") {
		return false
	}
	spaceAfter := func(i int) bool { return i+1 >= len(s) || s[i+1] == ' ' }
	switch s[0] {
	case '#', ',', '[', ']', '{', '}', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`':
		return false
	case '?', ':', '-':
		if spaceAfter(0) {
			return false
		}
	}
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case ':':
			if spaceAfter(i) {
				return false
			}
		case '#':
			if s[i-1] == ' ' {
				return false
			}
		}
	}
	return true
}

// base60Float is YAML 1.1's sexagesimal float, which yaml.v3 quotes.
var base60Float = regexp.MustCompile(`^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`)

func isBase60Float(s string) bool {
	if s == "" || !(s[0] == '+' || s[0] == '-' || s[0] >= '0' && s[0] <= '9') || bytes.IndexByte([]byte(s), ':') < 0 {
		return false
	}
	return base60Float.MatchString(s)
}

// isOldBool is YAML 1.1's booleans, which yaml.v3 quotes.
func isOldBool(s string) bool {
	switch s {
	case "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO", "off", "Off", "OFF":
		return true
	}
	return false
}

// sortedKeys returns m's keys in yaml.v3's order (keyLess). It declines
// keys the order is not a total one on (then yaml.v3's own order would
// depend on the map's), checking every pair of a small map and declining
// large ones.
func (e *encoder) sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Insertion sort: maps are small.
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keyLess(keys[j], keys[j-1]); j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	if len(keys) > 64 {
		e.ok = false
		return keys
	}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if !keyLess(keys[i], keys[j]) || keyLess(keys[j], keys[i]) {
				e.ok = false
			}
		}
	}
	return keys
}

// keyLess is yaml.v3's order of text keys, for printable ASCII (str
// declines the others): letters in byte order, and runs of digits by
// their number, so "a2" comes before "a10".
func keyLess(a, b string) bool {
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	isLetter := func(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
	digits := false
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] == b[i] {
			digits = isDigit(a[i])
			continue
		}
		al, bl := isLetter(a[i]), isLetter(b[i])
		if al && bl {
			return a[i] < b[i]
		}
		if al || bl {
			if digits {
				return al
			}
			return bl
		}
		var an, bn int64
		if a[i] == '0' || b[i] == '0' {
			for j := i - 1; j >= 0 && isDigit(a[j]); j-- {
				if a[j] != '0' {
					an, bn = 1, 1
					break
				}
			}
		}
		ai, bi := i, i
		for ; ai < len(a) && isDigit(a[ai]); ai++ {
			an = an*10 + int64(a[ai]-'0')
		}
		for ; bi < len(b) && isDigit(b[bi]); bi++ {
			bn = bn*10 + int64(b[bi]-'0')
		}
		if an != bn {
			return an < bn
		}
		if ai != bi {
			return ai < bi
		}
		return a[i] < b[i]
	}
	return len(a) < len(b)
}
