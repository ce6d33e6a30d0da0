package settings

import (
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// tomlValue reads s as dynaconf reads an environment value: as the value
// of the TOML 1.0 line "key=" + s (dynaconf's parse_with_toml). ok is false
// when that is no valid TOML, and dynaconf then keeps the text as it is.
//
// Booleans, integers (+1, 1_000, 0x1F, 0o17, 0b101), floats (1.50, 1e3,
// inf, nan), basic and literal strings (one or several lines), arrays and
// inline tables are read; a comment may follow the value. Dates and times
// are not (dynaconf makes date objects of them; they stay text here), nor
// is anything after the value's line (valid TOML there would be further
// keys dynaconf ignores; it stays text here).
func tomlValue(s string) (any, bool) {
	if !utf8.ValidString(s) {
		return nil, false
	}
	p := &tomlParser{s: s}
	p.skipWS()
	v, ok := p.value(0)
	if !ok {
		return nil, false
	}
	p.skipWS()
	p.skipComment()
	if p.i < len(p.s) && !p.newline() {
		return nil, false
	}
	for p.i < len(p.s) {
		p.skipWS()
		p.skipComment()
		if p.i < len(p.s) && !p.newline() {
			return nil, false
		}
	}
	return v, true
}

type tomlParser struct {
	s string
	i int
}

func (p *tomlParser) skipWS() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *tomlParser) skipComment() {
	if p.i < len(p.s) && p.s[p.i] == '#' {
		for p.i < len(p.s) && p.s[p.i] != '\n' {
			p.i++
		}
	}
}

// newline consumes "\n" or "\r\n".
func (p *tomlParser) newline() bool {
	switch {
	case strings.HasPrefix(p.s[p.i:], "\n"):
		p.i++
	case strings.HasPrefix(p.s[p.i:], "\r\n"):
		p.i += 2
	default:
		return false
	}
	return true
}

// skipWSNL skips whitespace, newlines and comments (between array items).
func (p *tomlParser) skipWSNL() {
	for {
		p.skipWS()
		p.skipComment()
		if p.i >= len(p.s) || !p.newline() {
			return
		}
	}
}

func (p *tomlParser) value(depth int) (any, bool) {
	if depth >= maxDepth || p.i >= len(p.s) {
		return nil, false
	}
	switch p.s[p.i] {
	case '"':
		if strings.HasPrefix(p.s[p.i:], `"""`) {
			return p.multiline('"')
		}
		return p.basic()
	case '\'':
		if strings.HasPrefix(p.s[p.i:], "'''") {
			return p.multiline('\'')
		}
		return p.literal()
	case '[':
		return p.array(depth)
	case '{':
		return p.table(depth)
	}
	j := p.i
	for j < len(p.s) && isBareValueByte(p.s[j]) {
		j++
	}
	v, ok := tomlScalar(p.s[p.i:j])
	if ok {
		p.i = j
	}
	return v, ok
}

func isBareValueByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '+' || c == '-' || c == '.'
}

var (
	tomlDec   = regexp.MustCompile(`^[+-]?(0|[1-9](_?[0-9])*)$`)
	tomlHex   = regexp.MustCompile(`^0x[0-9A-Fa-f](_?[0-9A-Fa-f])*$`)
	tomlOct   = regexp.MustCompile(`^0o[0-7](_?[0-7])*$`)
	tomlBin   = regexp.MustCompile(`^0b[01](_?[01])*$`)
	tomlFloat = regexp.MustCompile(`^[+-]?(0|[1-9](_?[0-9])*)(\.[0-9](_?[0-9])*)?([eE][+-]?[0-9](_?[0-9])*)?$`)
)

// tomlScalar reads a bare TOML value: a boolean, an integer or a float.
func tomlScalar(tok string) (any, bool) {
	switch tok {
	case "true":
		return true, true
	case "false":
		return false, true
	case "inf", "+inf":
		return math.Inf(1), true
	case "-inf":
		return math.Inf(-1), true
	case "nan", "+nan", "-nan":
		return math.NaN(), true
	}
	digits := strings.ReplaceAll(tok, "_", "")
	base := 0
	switch {
	case tomlDec.MatchString(tok):
		base = 10
	case tomlHex.MatchString(tok):
		base, digits = 16, digits[2:]
	case tomlOct.MatchString(tok):
		base, digits = 8, digits[2:]
	case tomlBin.MatchString(tok):
		base, digits = 2, digits[2:]
	}
	if base != 0 {
		n, err := strconv.ParseInt(digits, base, 64)
		if err != nil {
			return nil, false // beyond int64
		}
		return int(n), true
	}
	if tomlFloat.MatchString(tok) && strings.ContainsAny(tok, ".eE") {
		f, err := strconv.ParseFloat(digits, 64)
		if err != nil && !math.IsInf(f, 0) {
			return nil, false
		}
		return f, true
	}
	return nil, false
}

// basic reads a one-line "basic string" with escapes.
func (p *tomlParser) basic() (any, bool) {
	p.i++
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return b.String(), true
		case c == '\\':
			if !p.escape(&b) {
				return nil, false
			}
		case isControl(c):
			return nil, false
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return nil, false
}

// isControl reports a byte TOML allows in no string but a multi-line one's
// newlines: control characters other than tab, and DEL.
func isControl(c byte) bool { return c < 0x20 && c != '\t' || c == 0x7f }

// escape reads the escape sequence at p.i (a backslash) into b.
func (p *tomlParser) escape(b *strings.Builder) bool {
	if p.i+1 >= len(p.s) {
		return false
	}
	e := p.s[p.i+1]
	p.i += 2
	switch e {
	case 'b':
		b.WriteByte('\b')
	case 't':
		b.WriteByte('\t')
	case 'n':
		b.WriteByte('\n')
	case 'f':
		b.WriteByte('\f')
	case 'r':
		b.WriteByte('\r')
	case '"', '\\':
		b.WriteByte(e)
	case 'u', 'U':
		n := 4
		if e == 'U' {
			n = 8
		}
		if p.i+n > len(p.s) {
			return false
		}
		hex := p.s[p.i : p.i+n]
		if strings.ContainsAny(hex, "+-_") {
			return false
		}
		r, err := strconv.ParseUint(hex, 16, 32)
		if err != nil || !utf8.ValidRune(rune(r)) {
			return false
		}
		b.WriteRune(rune(r))
		p.i += n
	default:
		return false
	}
	return true
}

// literal reads a one-line 'literal string'.
func (p *tomlParser) literal() (any, bool) {
	p.i++
	j := p.i
	for j < len(p.s) && p.s[j] != '\'' {
		if isControl(p.s[j]) {
			return nil, false
		}
		j++
	}
	if j >= len(p.s) {
		return nil, false
	}
	v := p.s[p.i:j]
	p.i = j + 1
	return v, true
}

// multiline reads a multi-line string, basic (in three double quotes) or
// literal (in three single quotes): a newline right after the opening
// quotes is dropped, and in the basic form a backslash at a line's end
// joins the next non-blank text.
func (p *tomlParser) multiline(q byte) (any, bool) {
	p.i += 3
	p.newline()
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == q && strings.HasPrefix(p.s[p.i:], strings.Repeat(string(q), 3)):
			n := 3
			for p.i+n < len(p.s) && p.s[p.i+n] == q {
				n++
			}
			if n > 5 {
				return nil, false
			}
			b.WriteString(strings.Repeat(string(q), n-3))
			p.i += n
			return b.String(), true
		case c == '\\' && q == '"':
			j := p.i + 1
			for j < len(p.s) && (p.s[j] == ' ' || p.s[j] == '\t') {
				j++
			}
			if j < len(p.s) && (p.s[j] == '\n' || strings.HasPrefix(p.s[j:], "\r\n")) {
				p.i = j
				for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || strings.HasPrefix(p.s[p.i:], "\r\n")) {
					if p.s[p.i] == '\r' {
						p.i++
					}
					p.i++
				}
				continue
			}
			if !p.escape(&b) {
				return nil, false
			}
		case c == '\n':
			b.WriteByte(c)
			p.i++
		case c == '\r' && strings.HasPrefix(p.s[p.i:], "\r\n"):
			b.WriteString("\r\n")
			p.i += 2
		case isControl(c):
			return nil, false
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return nil, false
}

func (p *tomlParser) array(depth int) (any, bool) {
	p.i++
	out := []any{}
	for {
		p.skipWSNL()
		if p.i >= len(p.s) {
			return nil, false
		}
		if p.s[p.i] == ']' {
			p.i++
			return out, true
		}
		v, ok := p.value(depth + 1)
		if !ok {
			return nil, false
		}
		out = append(out, v)
		p.skipWSNL()
		closed, ok := p.next(']')
		if !ok {
			return nil, false
		}
		if closed {
			return out, true
		}
	}
}

// next reads what follows an item of an array or inline table: a comma,
// or close, which ends it (closed).
func (p *tomlParser) next(close byte) (closed, ok bool) {
	if p.i >= len(p.s) {
		return false, false
	}
	switch p.s[p.i] {
	case ',':
		p.i++
		return false, true
	case close:
		p.i++
		return true, true
	}
	return false, false
}

// table reads a one-line { inline = "table" } with dotted keys allowed.
func (p *tomlParser) table(depth int) (any, bool) {
	p.i++
	out := map[string]any{}
	p.skipWS()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return out, true
	}
	explicit := map[string]bool{} // key paths given a value
	implicit := map[string]bool{} // key paths made tables by dotted keys
	for {
		p.skipWS()
		keys, ok := p.key()
		if !ok || depth+len(keys) >= maxDepth {
			return nil, false
		}
		p.skipWS()
		if p.i >= len(p.s) || p.s[p.i] != '=' {
			return nil, false
		}
		p.i++
		p.skipWS()
		v, ok := p.value(depth + len(keys))
		if !ok {
			return nil, false
		}
		cur := out
		path := ""
		for _, k := range keys[:len(keys)-1] {
			path += "\x00" + k
			if explicit[path] {
				return nil, false
			}
			implicit[path] = true
			next, ok := cur[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[k] = next
			}
			cur = next
		}
		path += "\x00" + keys[len(keys)-1]
		if explicit[path] || implicit[path] {
			return nil, false
		}
		explicit[path] = true
		cur[keys[len(keys)-1]] = v
		p.skipWS()
		closed, ok := p.next('}')
		if !ok {
			return nil, false
		}
		if closed {
			return out, true
		}
	}
}

// key reads a dotted key: bare-key, "quoted" or 'literal' parts.
func (p *tomlParser) key() ([]string, bool) {
	var keys []string
	for {
		p.skipWS()
		if p.i >= len(p.s) {
			return nil, false
		}
		switch p.s[p.i] {
		case '"':
			if strings.HasPrefix(p.s[p.i:], `"""`) {
				return nil, false
			}
			v, ok := p.basic()
			if !ok {
				return nil, false
			}
			keys = append(keys, v.(string))
		case '\'':
			if strings.HasPrefix(p.s[p.i:], "'''") {
				return nil, false
			}
			v, ok := p.literal()
			if !ok {
				return nil, false
			}
			keys = append(keys, v.(string))
		default:
			j := p.i
			for j < len(p.s) && (isBareValueByte(p.s[j]) && p.s[j] != '+' && p.s[j] != '.') {
				j++
			}
			if j == p.i {
				return nil, false
			}
			keys = append(keys, p.s[p.i:j])
			p.i = j
		}
		p.skipWS()
		if p.i < len(p.s) && p.s[p.i] == '.' {
			p.i++
			continue
		}
		return keys, true
	}
}
