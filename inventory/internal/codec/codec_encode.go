package codec

import (
	"encoding/base64"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The writer: one record as a one-item block list (indent 2), in the
// form ruamel.yaml's round-trip dumper writes (plain where both Python
// libraries read the text back as itself, floats as Python's repr), for
// every value a record may hold: nil, bool, integers (any Go integer
// type, *big.Int), floats, strings, []byte (!!binary), Date, time.Time,
// and maps with string keys and slices of these. A value it cannot write
// so that Go, ruamel.yaml and PyYAML all read it back equal (text that is
// not UTF-8, a time finer than a microsecond or outside years 1 – 9999,
// a channel…) is an error naming the record and the field, and nothing
// is written. A record read with a key that is not a string (null: …)
// is refused too: Go holds it under its text, and writing that would
// change it.

// encoder appends to b; err is the first value it could not write, with
// path the field it was in.
type encoder struct {
	b    []byte
	path []string
	err  error
	// plainKeys are the record's keys read as something other than text
	// (Record.plainKeys), written plain again.
	plainKeys map[string]bool
}

// fail records the first error, naming the field being written.
func (e *encoder) fail(format string, args ...any) {
	if e.err == nil {
		e.err = fmt.Errorf("field %s: %s", strings.Join(e.path, "."), fmt.Sprintf(format, args...))
	}
}

func (e *encoder) push(k string) { e.path = append(e.path, k) }
func (e *encoder) pop()          { e.path = e.path[:len(e.path)-1] }

// Bits of Record.nulls and Record.empties: fields read as null, or as
// empty text, and written back so.
const (
	bitHostname uint8 = 1 << iota
	bitName
	bitIP
	bitProvider
	bitInstance
	bitArgs
	bitFacts
)

// appendRecord appends r's bytes to b, or fails naming the record and
// the field it cannot write.
func appendRecord(b []byte, r *Record) ([]byte, error) {
	nulls := r.nulls
	if r.nameNull {
		nulls |= bitName
	}
	e := encoder{b: b, plainKeys: r.plainKeys}
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
	str := func(k, v string, bit uint8, always bool) {
		e.push(k)
		defer e.pop()
		switch {
		case v != "" && r.heldPlain(bit, v) && writtenPlain(v):
			// Read as a number, a date… and so written back while unchanged.
			key(k)
			e.b = append(e.b, ' ')
			e.b = append(e.b, v...)
			e.b = append(e.b, '\n')
		case v != "" || always && nulls&bit == 0:
			key(k)
			e.b = append(e.b, ' ')
			e.str(v)
			e.b = append(e.b, '\n')
		case nulls&bit != 0:
			key(k)
			e.b = append(e.b, " null\n"...)
		case r.empties&bit != 0:
			key(k)
			e.b = append(e.b, " ''\n"...)
		}
	}
	str("hostname", r.Hostname, bitHostname, true)
	str("name", r.Name, bitName, false)
	str("ip", r.IP, bitIP, false)
	str("_broker_provider", r.Provider, bitProvider, false)
	str("_broker_provider_instance", r.Instance, bitInstance, false)
	e.push("_broker_args")
	key("_broker_args")
	switch {
	case r.Args == nil && r.nulls&bitArgs != 0:
		e.b = append(e.b, " null\n"...)
	case r.Args == nil:
		e.b = append(e.b, " {}\n"...)
	default:
		e.strMap(r.Args, ind)
	}
	e.pop()
	e.push("_broker_facts")
	switch {
	case r.Facts != nil:
		key("_broker_facts")
		e.strMap(r.Facts, ind)
	case r.nulls&bitFacts != 0:
		key("_broker_facts")
		e.b = append(e.b, " null\n"...)
	}
	e.pop()
	if m := r.Broker; m != nil {
		e.push("_brokertest")
		key("_brokertest")
		e.meta(m, ind+2)
		e.pop()
	}
	if len(r.Extra) > 0 {
		for _, k := range sortedKeys(r.Extra) {
			e.push(k)
			if isRecordKey(k) {
				e.fail("a key of Extra that is one of Record's fields")
			}
			key(k)
			e.value(r.Extra[k], ind)
			e.pop()
		}
	}
	if e.err != nil {
		return nil, fmt.Errorf("inventory: record %s: %w; nothing written", Label(r), e.err)
	}
	return e.b, nil
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

// key writes a map key and its colon. A key over 1000 bytes would be
// written in the "? " form, which is not written here.
func (e *encoder) key(k string) {
	if len(k) > 1000 {
		e.fail("a key of %d bytes (at most 1000 are written)", len(k))
	}
	if e.plainKeys != nil && e.plainKeys[keyPlace(e.path)] && keptPlain(k) {
		e.b = append(e.b, k...)
	} else {
		e.str(k)
	}
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
			e.str(v)
			e.b = append(e.b, '\n')
		}
	}
	text("id", m.ID, true)
	text("state", m.State, false)
	e.metaOwner(&m.Owner, ind)
	text("test", m.Test, false)
	text("user", m.User, false)
	field("checked_out")
	e.push("checked_out")
	e.metaTime(m.CheckedOut)
	e.pop()
	e.b = append(e.b, '\n')
	field("keep_until")
	if m.KeepUntil == nil {
		e.b = append(e.b, "null"...)
	} else {
		e.push("keep_until")
		e.metaTime(*m.KeepUntil)
		e.pop()
	}
	e.b = append(e.b, '\n')
	text("request_key", m.RequestKey, false)
	if s := m.SSH; s != nil {
		e.metaSSH(s, ind)
	}
	if len(m.Data) > 0 {
		e.indent(ind)
		e.b = append(e.b, "data:"...)
		e.push("data")
		e.strMap(m.Data, ind)
		e.pop()
	}
}

// metaOwner writes the _brokertest block's owner map at indent ind.
func (e *encoder) metaOwner(ow *Owner, ind int) {
	e.indent(ind)
	e.b = append(e.b, "owner:\n"...)
	o := ind + 2
	e.indent(o)
	e.b = append(e.b, "run: "...)
	e.str(ow.Run)
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
	e.str(ow.BootID)
	e.b = append(e.b, '\n')
	e.indent(o)
	e.b = append(e.b, "machine: "...)
	e.str(ow.Machine)
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
				e.str(v)
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

// metaTime writes one of the _brokertest block's times: RFC 3339 with its
// zone. Python reads the block too (its listing, a rewrite) and keeps
// microseconds: a finer time is refused, as in any other value (callers
// truncate their times: broker to the second).
func (e *encoder) metaTime(t time.Time) {
	if !e.pythonTime(t) {
		return
	}
	e.b = t.AppendFormat(e.b, time.RFC3339Nano)
}

// pythonTime reports whether Python's datetime can hold t (years 1 – 9999,
// microseconds), failing the encoding when it cannot.
func (e *encoder) pythonTime(t time.Time) bool {
	if y := t.Year(); y < 1 || y > 9999 {
		e.fail("the time %s is outside years 1 – 9999", t)
		return false
	}
	if t.Nanosecond()%1000 != 0 {
		e.fail("the time %s is finer than a microsecond, which Python keeps", t.Format(time.RFC3339Nano))
		return false
	}
	return true
}

// time writes a time value as Python's datetime is written: RFC 3339 with
// its zone. Python keeps microseconds: a finer time is refused.
func (e *encoder) time(t time.Time) {
	if !e.pythonTime(t) {
		return
	}
	if t.Location() == Naive {
		// As Python writes a naive datetime: no zone, six digits of
		// fraction when it has one.
		e.b = t.AppendFormat(e.b, "2006-01-02 15:04:05")
		if us := t.Nanosecond() / 1000; us != 0 {
			e.b = append(e.b, fmt.Sprintf(".%06d", us)...)
		}
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
	for _, k := range sortedKeys(m) {
		e.indent(ind + 2)
		e.push(k)
		e.key(k)
		e.value(m[k], ind+2)
		e.pop()
	}
}

// value writes v after "key:" (or "-") at indent ind: " scalar\n", or a
// line break and a block collection, or " {}" and " []".
func (e *encoder) value(v any, ind int) {
	v = normalize(v)
	switch x := v.(type) {
	case map[string]any:
		e.strMap(x, ind)
		return
	case []any:
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
		e.push(strconv.Itoa(i))
		e.b = append(e.b, '-')
		switch x := normalize(v).(type) {
		case map[string]any:
			if len(x) == 0 {
				e.b = append(e.b, " {}\n"...)
				break
			}
			e.b = append(e.b, ' ')
			for j, k := range sortedKeys(x) {
				if j > 0 {
					e.indent(ind + 2)
				}
				e.push(k)
				e.key(k)
				e.value(x[k], ind+2)
				e.pop()
			}
		case []any:
			if len(x) == 0 {
				e.b = append(e.b, " []\n"...)
				break
			}
			e.b = append(e.b, ' ')
			e.list(x, ind+2)
		default:
			e.b = append(e.b, ' ')
			e.scalar(x)
			e.b = append(e.b, '\n')
		}
		e.pop()
	}
}

// normalize turns the collections and numbers of other Go types
// ([]string, map[string]string, int32, float32…) into those the writer
// knows; anything else is returned as it is.
func normalize(v any) any {
	switch v.(type) {
	case nil, string, bool, int, int64, uint64, float64, *big.Int, time.Time, Date, []byte, map[string]any, []any:
		return v
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return int(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return rv.Uint()
	case reflect.Float32:
		// The float32's own shortest text, as a float64.
		f, _ := strconv.ParseFloat(strconv.FormatFloat(rv.Float(), 'g', -1, 32), 64)
		return f
	case reflect.Float64:
		return rv.Float()
	case reflect.String:
		return rv.String()
	case reflect.Bool:
		return rv.Bool()
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return nil
		}
		l := make([]any, rv.Len())
		for i := range l {
			l[i] = rv.Index(i).Interface()
		}
		return l
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return v
		}
		if rv.IsNil() {
			return nil
		}
		m := make(map[string]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			m[it.Key().String()] = it.Value().Interface()
		}
		return m
	case reflect.Pointer:
		if rv.IsNil() {
			return nil
		}
		return normalize(rv.Elem().Interface())
	}
	return v
}

// scalar writes a value that is not a collection.
func (e *encoder) scalar(v any) {
	switch x := v.(type) {
	case nil:
		e.b = append(e.b, "null"...)
	case string:
		e.str(x)
	case bool:
		e.b = strconv.AppendBool(e.b, x)
	case int:
		e.b = strconv.AppendInt(e.b, int64(x), 10)
	case int64:
		e.b = strconv.AppendInt(e.b, x, 10)
	case uint64:
		e.b = strconv.AppendUint(e.b, x, 10)
	case *big.Int:
		e.b = x.Append(e.b, 10)
	case float64:
		e.b = appendPythonFloat(e.b, x)
	case time.Time:
		e.time(x)
	case Date:
		if x.Year < 1 || x.Year > 9999 || x.Month < 1 || x.Month > 12 || x.Day < 1 ||
			time.Date(x.Year, x.Month, x.Day, 0, 0, 0, 0, time.UTC).Day() != x.Day {
			e.fail("%v is not a date Python can hold", x)
			return
		}
		e.b = append(e.b, x.String()...)
	case []byte:
		e.b = append(e.b, "!!binary "...)
		e.b = append(e.b, '"')
		e.b = base64.StdEncoding.AppendEncode(e.b, x)
		e.b = append(e.b, '"')
	default:
		e.fail("a value of type %T, which is not written", v)
	}
}

// appendPythonFloat writes f as ruamel.yaml writes a Python float: its
// repr (the shortest text that reads back as f; positional from 1e-4 up
// to 1e16, else with an exponent), with a decimal point before an
// exponent so that PyYAML, too, reads a float.
func appendPythonFloat(b []byte, f float64) []byte {
	switch {
	case math.IsInf(f, 1):
		return append(b, ".inf"...)
	case math.IsInf(f, -1):
		return append(b, "-.inf"...)
	case math.IsNaN(f):
		return append(b, ".nan"...)
	}
	sci := strconv.FormatFloat(f, 'e', -1, 64) // -d.ddde±XX
	mant, expText, _ := strings.Cut(sci, "e")
	exp, _ := strconv.Atoi(expText)
	if exp < -4 || exp >= 16 {
		b = append(b, mant...)
		if !strings.Contains(mant, ".") {
			b = append(b, ".0"...)
		}
		b = append(b, 'e')
		if exp < 0 {
			b = append(b, '-')
			exp = -exp
		} else {
			b = append(b, '+')
		}
		if exp < 10 {
			b = append(b, '0')
		}
		return strconv.AppendInt(b, int64(exp), 10)
	}
	pos := strconv.FormatFloat(f, 'f', -1, 64)
	b = append(b, pos...)
	if !strings.Contains(pos, ".") {
		b = append(b, ".0"...)
	}
	return b
}

// writtenPlain reports whether v, a field read from a plain scalar that
// is not text, may be written plain again: it is still a valid value of
// another type to ruamel.yaml, and plain YAML.
func writtenPlain(v string) bool {
	if textKind(v) != textPrintable || !plainAllowed(v) {
		return false
	}
	tag, _ := resolvePlain(v)
	return tag != tagStr && tag != tagNull && tag != tagInvalid && tag != tagMerge
}

// keptPlain reports whether k, a key read from a plain scalar that is
// not text (null, 1, 2024-01-01), may be written plain again.
func keptPlain(k string) bool {
	if textKind(k) != textPrintable || !plainAllowed(k) {
		return false
	}
	tag, _ := resolvePlain(k)
	return tag != tagStr && tag != tagInvalid && tag != tagMerge
}

// str writes text: plain where ruamel.yaml and PyYAML both read it back
// as this text, else single-quoted (as ruamel.yaml quotes), or
// double-quoted with escapes when it holds a line break or a character
// either library does not take raw. Text that is not UTF-8 is refused.
func (e *encoder) str(s string) {
	if !utf8.ValidString(s) {
		e.fail("text that is not UTF-8 (%q)", s)
		return
	}
	switch textKind(s) {
	case textPrintable:
		if s != "" && plainAllowed(s) && !needsQuotes(s) {
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
	default:
		e.doubleQuoted(s)
	}
}

const (
	textPrintable = iota // only characters both libraries take raw, no line breaks
	textOther
)

// textKind tells text that may be written raw in single quotes or plain
// from text that needs double quotes: line breaks, tabs and other
// control characters, DEL and C1 controls, U+2028, U+2029, U+FEFF,
// U+FFFE, U+FFFF.
func textKind(s string) int {
	for _, r := range s {
		if !rawOK(r) {
			return textOther
		}
	}
	return textPrintable
}

func rawOK(r rune) bool {
	switch {
	case r >= 0x20 && r < 0x7f:
		return true
	case r < 0xa0:
		return false
	case r == 0x2028 || r == 0x2029 || r == 0xfeff || r == 0xfffe || r == 0xffff:
		return false
	case r >= 0xd800 && r <= 0xdfff:
		return false
	}
	return true
}

// doubleQuoted writes s double-quoted, escaping what rawOK refuses.
func (e *encoder) doubleQuoted(s string) {
	e.b = append(e.b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			e.b = append(e.b, '\\', byte(r))
		case r == '\n':
			e.b = append(e.b, `\n`...)
		case r == '\t':
			e.b = append(e.b, `\t`...)
		case r == '\r':
			e.b = append(e.b, `\r`...)
		case rawOK(r):
			e.b = utf8.AppendRune(e.b, r)
		case r < 0x100:
			e.b = fmt.Appendf(e.b, `\x%02X`, r)
		default:
			e.b = fmt.Appendf(e.b, `\u%04X`, r)
		}
	}
	e.b = append(e.b, '"')
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

// sortedKeys returns m's keys in a fixed order: yaml.v3's (keyLess,
// which this library has always written) when every key is printable
// ASCII and that order is total on them, else byte order.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	ascii := true
	for k := range m {
		keys = append(keys, k)
		for i := 0; i < len(k) && ascii; i++ {
			ascii = k[i] >= 0x20 && k[i] < 0x7f
		}
	}
	if !ascii || len(keys) > 64 {
		slices.Sort(keys)
		return keys
	}
	// Insertion sort: maps are small.
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keyLess(keys[j], keys[j-1]); j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if !keyLess(keys[i], keys[j]) || keyLess(keys[j], keys[i]) {
				slices.Sort(keys)
				return keys
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
