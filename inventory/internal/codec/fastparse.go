package codec

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// The fast reader: a parser for the plain block YAML that Marshal writes
// (and the Python broker's ruamel writes for ordinary records), straight
// into records without yaml.v3's node tree. It understands a subset of
// YAML, and on anything outside it (anchors, aliases, tags, document
// markers, tabs, folded scalars, multi-line flow collections, keys that
// are not strings, duplicate keys, values of the wrong type for a field…)
// it gives up with a reason, and the general reader (yaml.v3, with the
// file's bounds) reads the file instead. Where it succeeds, it gives the
// records yaml.v3 gives: FuzzFastParse checks that.

// fnode is a parsed YAML node: a scalar, a mapping or a sequence.
// It is small (32 bytes) and holds no slice: it is copied a lot.
type fnode struct {
	text string // a scalar's value
	// kid and kids locate in the parser's arena a mapping's keys and
	// values, alternating, or a sequence's items.
	kid, kids int32
	at        int32 // offset in the file, for reasons
	kind      uint8
	// quoted: a quoted or block scalar, always a string (yaml.v3's
	// "indicated string"); else a plain scalar, resolved by its text.
	quoted bool
	// binary: a !!binary scalar (only the general reader makes them),
	// whose text is base64.
	binary bool
}

const (
	fScalar = iota
	fMap
	fSeq
)

// fastParser reads s, a whole inventory file.
type fastParser struct {
	s     string
	depth int
	// stack holds the children of the collections being read; arena,
	// those of the collections of the record being read, which are
	// dropped once it is decoded (so that a file's trees cost no garbage).
	stack, arena []fnode
	// peeked caches nextContent's last answer: a value's end is looked
	// for by the value, then by the collection holding it.
	peekedAt   int
	peeked     line
	peekedMore bool
	// values counts the values read (keys, scalars, lists and maps), in
	// the file and in the record being read.
	values, recValues int
	why               string // why the fast reader gave up
	whyAt             int    // where, as an offset in s
	// invalid is set, beside why, when the file holds a plain scalar
	// the Python libraries cannot read: then no reader may take it.
	invalid   string
	invalidAt int
}

// giveUp records why the fast reader cannot read the file (the first
// reason wins) and returns false, for "return p.giveUp(…)".
func (p *fastParser) giveUp(at int, format string, args ...any) bool {
	if p.why == "" {
		p.why = fmt.Sprintf(format, args...)
		p.whyAt = at
	}
	return false
}

// reason is why the reader gave up, with its line.
func (p *fastParser) reason() string {
	at := min(max(p.whyAt, 0), len(p.s))
	return fmt.Sprintf("line %d: %s", strings.Count(p.s[:at], "\n")+1, p.why)
}

// fastDecode reads data in the fast form: the records and each one's
// bytes (see decodeFile), or why it cannot.
func fastDecode(data []byte) (recs []*Record, raw [][]byte, why string, invalid bool) {
	p := &fastParser{s: string(data)}
	recs, spans, ok := p.file()
	if !ok || p.invalid != "" {
		if p.invalid != "" {
			p.why, p.whyAt = p.invalid, p.invalidAt
			return nil, nil, p.reason(), true
		}
		return nil, nil, p.reason(), false
	}
	raw = make([][]byte, len(spans))
	for i, sp := range spans {
		raw[i] = data[sp[0]:sp[1]:sp[1]]
	}
	return recs, raw, "", false
}

// checkText gives up on characters the fast reader leaves to yaml.v3:
// control characters (tabs and carriage returns included), YAML's other
// line breaks (U+0085, U+2028, U+2029), byte order marks, invalid UTF-8,
// and a file that does not end in a line break.
func (p *fastParser) checkText() bool {
	s := p.s
	if len(s) > 0 && s[len(s)-1] != '\n' {
		return p.giveUp(len(s), "no line break at the end of the file")
	}
	for i := 0; i < len(s); {
		if i+8 <= len(s) && plainASCII(load64(s[i:i+8])) {
			i += 8
			continue
		}
		c := s[i]
		if c >= 0x20 && c < 0x7f || c == '\n' {
			i++
			continue
		}
		if c < 0x80 {
			return p.giveUp(i, "control character %q", c)
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return p.giveUp(i, "invalid UTF-8")
		}
		if r < 0xa0 || r == 0x2028 || r == 0x2029 || r == 0xfeff || r == 0xfffe || r == 0xffff {
			return p.giveUp(i, "character %U", r)
		}
		i += size
	}
	return true
}

// load64 reads 8 bytes of s as one number.
func load64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// plainASCII reports whether the 8 bytes in x are all printable ASCII or
// line breaks, testing them all at once.
func plainASCII(x uint64) bool {
	const (
		ones = 0x0101010101010101
		high = 0x8080808080808080
		low7 = 0x7f7f7f7f7f7f7f7f
	)
	// A byte's high bit in each: below 0x20; a line break; DEL; not ASCII.
	control := ^((x&low7 + (0x80-0x20)*ones) | x) & high
	y := x ^ 0x0a*ones
	lineBreak := ^((y&low7 + low7) | y) & high
	z := x ^ 0x7f*ones
	del := ^((z&low7 + low7) | z) & high
	return control&^lineBreak|del|x&high == 0
}

// line describes the line starting at offset ls.
type line struct {
	start  int // offset of its first byte
	indent int // leading spaces
	end    int // offset of its line break (or len(s))
}

func (p *fastParser) lineAt(ls int) line {
	i := ls
	for i < len(p.s) && p.s[i] == ' ' {
		i++
	}
	e := strings.IndexByte(p.s[i:], '\n')
	if e < 0 {
		e = len(p.s)
	} else {
		e += i
	}
	return line{start: ls, indent: i - ls, end: e}
}

// content is the offset of the line's first non-space byte.
func (l line) content() int { return l.start + l.indent }

// blank reports a line of spaces only.
func (l line) blank() bool { return l.content() == l.end }

// next returns the offset of the following line.
func (l line) next(s string) int { return min(l.end+1, len(s)) }

// nextContent returns the first line at or after offset ls that is
// neither blank nor a comment; ok is false at the end of the file.
func (p *fastParser) nextContent(ls int) (l line, ok bool) {
	if ls == p.peekedAt && ls > 0 {
		return p.peeked, p.peekedMore
	}
	p.peekedAt = ls
	p.peeked, p.peekedMore = p.scanContent(ls)
	return p.peeked, p.peekedMore
}

func (p *fastParser) scanContent(ls int) (l line, ok bool) {
	for ls < len(p.s) {
		l = p.lineAt(ls)
		if !l.blank() && p.s[l.content()] != '#' {
			return l, true
		}
		ls = l.next(p.s)
	}
	return line{start: len(p.s), end: len(p.s)}, false
}

// restIsComment reports whether s[i:end], the rest of a line after a
// value, holds only spaces and perhaps a comment after them.
func (p *fastParser) restIsComment(i, end int) bool {
	j := i
	for j < end && p.s[j] == ' ' {
		j++
	}
	return j == end || p.s[j] == '#' && j > i
}

// file reads the whole file: a block sequence of records at column 0, or
// an empty list. spans are the byte ranges of the records.
func (p *fastParser) file() (recs []*Record, spans [][2]int, ok bool) {
	if !p.checkText() {
		return nil, nil, false
	}
	l, more := p.nextContent(0)
	if !more {
		return nil, [][2]int{}, true
	}
	if l.indent == 0 && strings.HasPrefix(p.s[l.start:], "[]") && p.restIsComment(l.start+2, l.end) {
		if _, more := p.nextContent(l.next(p.s)); more {
			return nil, nil, p.giveUp(l.end, "content after []")
		}
		return nil, [][2]int{}, true
	}
	start := 0  // the first record's bytes include the comments before it
	p.depth = 1 // the list
	for {
		if l.indent != 0 || !p.isDash(l.start, l.end) {
			return nil, nil, p.giveUp(l.start, "not an item of a list of hosts at the left margin")
		}
		p.arena = p.arena[:0]
		p.recValues = 0
		if !p.count(l.start, 1) {
			return nil, nil, false
		}
		item, next, ok := p.seqItem(l, 0)
		if !ok {
			return nil, nil, false
		}
		if item.kind != fMap {
			return nil, nil, p.giveUp(l.start, "a list item that is not a map")
		}
		rec, ok := p.record(&item)
		if !ok {
			return nil, nil, false
		}
		l, more = p.nextContent(next)
		end := len(p.s)
		if more {
			end = l.start
		}
		recs = append(recs, rec)
		spans = append(spans, [2]int{start, end})
		if !more {
			return recs, spans, true
		}
		start = end
	}
}

// isDash reports a block sequence entry at s[i]: "-" then a space or the
// end of the line.
func (p *fastParser) isDash(i, end int) bool {
	return p.s[i] == '-' && (i+1 == end || p.s[i+1] == ' ')
}

func (p *fastParser) enter(at int) bool {
	p.depth++
	if p.depth > maxDepth {
		return p.giveUp(at, "nested deeper than %d levels", maxDepth)
	}
	return true
}

func (p *fastParser) leave() { p.depth-- }

// count counts n values read at offset at, and gives up past the bounds:
// maxValues in the file (the limit of both readers), maxRecordValues in a
// record (which bounds the memory of a record's tree; yaml.v3 reads such a
// record, if the file is small enough for it).
func (p *fastParser) count(at, n int) bool {
	p.values += n
	p.recValues += n
	if p.values > maxValues {
		return p.giveUp(at, "more than %d values", maxValues)
	}
	if p.recValues > maxRecordValues {
		return p.giveUp(at, "a record of more than %d values", maxRecordValues)
	}
	return true
}

// collection returns a collection of the given kind at offset at, with
// the children pushed on the stack since base, which it moves to the arena.
func (p *fastParser) collection(kind uint8, at, base int) fnode {
	n := fnode{kind: kind, at: int32(at), kid: int32(len(p.arena)), kids: int32(len(p.stack) - base)}
	p.arena = append(p.arena, p.stack[base:]...)
	p.stack = p.stack[:base]
	return n
}

// kidsOf returns n's children.
func (p *fastParser) kidsOf(n *fnode) []fnode {
	return p.arena[n.kid : n.kid+n.kids]
}

// seqItem reads the item of a block sequence at indent n whose "-" starts
// line l. It returns the item and the offset of the line after it.
func (p *fastParser) seqItem(l line, n int) (fnode, int, bool) {
	i := l.content() + 1
	for i < l.end && p.s[i] == ' ' {
		i++
	}
	if i == l.end || p.s[i] == '#' {
		return fnode{}, 0, p.giveUp(i, "a list item with nothing on its line")
	}
	return p.inline(l, i, n, true)
}

// inline reads the node that starts at s[i] on line l (after "- " or
// "key: "), in a block collection at indent parent; item tells a sequence
// item (which may be a compact map or sequence) from a map value.
func (p *fastParser) inline(l line, i, parent int, item bool) (fnode, int, bool) {
	col := i - l.start
	switch c := p.s[i]; {
	case item && p.isDash(i, l.end):
		if !p.enter(i) {
			return fnode{}, 0, false
		}
		defer p.leave()
		return p.seq(l, col, false)
	case c == '[' || c == '{':
		n, j, ok := p.flow(i, l.end)
		if !ok {
			return fnode{}, 0, false
		}
		if !p.restIsComment(j, l.end) {
			return fnode{}, 0, p.giveUp(j, "text after a flow collection")
		}
		next, ok := p.after(l, parent)
		return n, next, ok
	case c == '|' || c == '>':
		return p.blockScalar(l, i, parent)
	case c == '\'' || c == '"':
		if item && p.isQuotedKey(i, l.end) {
			return p.compactMap(l, col)
		}
		s, j, ok := p.quoted(i, l.end, parent)
		if !ok {
			return fnode{}, 0, false
		}
		// j may be on a later line.
		el := p.lineAt(p.lineStart(j))
		if !p.restIsComment(j, el.end) {
			return fnode{}, 0, p.giveUp(j, "text after a quoted string")
		}
		next, ok := p.after(el, parent)
		return fnode{kind: fScalar, text: s, quoted: true, at: int32(i)}, next, ok
	}
	if item && p.plainKeyEnd(i, l.end) >= 0 {
		return p.compactMap(l, col)
	}
	return p.plain(l, i, parent)
}

// lineStart is the offset of the start of the line holding s[i].
func (p *fastParser) lineStart(i int) int {
	return strings.LastIndexByte(p.s[:i], '\n') + 1
}

// after checks what follows a complete value that ended on line l, in a
// block collection at indent parent: the next content line may not be
// more indented than parent (it would continue the value, or be an error).
// It returns the offset of the line after l.
func (p *fastParser) after(l line, parent int) (int, bool) {
	next := l.next(p.s)
	if nl, more := p.nextContent(next); more && nl.indent > parent {
		return 0, p.giveUp(nl.start, "indented text after a value")
	}
	return next, true
}

// compactMap reads a block map whose first key is on line l at column col
// (after "- ").
func (p *fastParser) compactMap(l line, col int) (fnode, int, bool) {
	if !p.enter(l.start + col) {
		return fnode{}, 0, false
	}
	defer p.leave()
	return p.mapping(l, col)
}

// mapping reads a block map at indent m whose first key is on line l.
func (p *fastParser) mapping(l line, m int) (fnode, int, bool) {
	base, at := len(p.stack), l.start+m
	var seen map[string]bool
	for {
		k, j, ok := p.key(l.start+m, l.end)
		if !ok || !p.newKey(p.stack[base:], &seen, k) {
			return fnode{}, 0, false
		}
		j++ // the colon
		for j < l.end && p.s[j] == ' ' {
			j++
		}
		var v fnode
		var next int
		if j == l.end || p.s[j] == '#' {
			v, next, ok = p.nested(l, m, true)
		} else {
			v, next, ok = p.inline(l, j, m, false)
		}
		if !ok {
			return fnode{}, 0, false
		}
		if !p.count(int(k.at), 2) {
			return fnode{}, 0, false
		}
		p.stack = append(p.stack, k, v)
		nl, more := p.nextContent(next)
		if !more || nl.indent < m {
			return p.collection(fMap, at, base), next, true
		}
		if nl.indent > m || p.isDash(nl.content(), nl.end) {
			return fnode{}, 0, p.giveUp(nl.start, "unexpected text in a map")
		}
		l = nl
	}
}

// key reads a map key at s[i] up to its colon: a plain or quoted scalar
// that yaml.v3 takes as a string. j is the offset of the colon.
func (p *fastParser) key(i, end int) (k fnode, j int, ok bool) {
	var text string
	if c := p.s[i]; c == '\'' || c == '"' {
		text, j, ok = p.quoted(i, end, -1)
		if !ok {
			return fnode{}, 0, false
		}
		if j = p.keyColon(j, end); j < 0 {
			return fnode{}, 0, p.giveUp(i, "a quoted string where a key was expected")
		}
	} else {
		if j = p.plainKeyEnd(i, end); j < 0 {
			return fnode{}, 0, p.giveUp(i, "a line with no key")
		}
		text = strings.TrimRight(p.s[i:j], " ")
		if !p.plainStart(i, end, false) {
			return fnode{}, 0, false
		}
		if plainTag(text) != tagStr {
			return fnode{}, 0, p.giveUp(i, "key %q is not a string", text)
		}
	}
	// libyaml takes a key of up to 1024 characters only.
	if j-i > 512 {
		return fnode{}, 0, p.giveUp(i, "a long key")
	}
	return fnode{kind: fScalar, text: text, quoted: true, at: int32(i)}, j, true
}

// newKey reports whether k is not among the keys of a map so far (kids),
// and gives up if it is: yaml.v3 refuses a repeated key. seen indexes the
// keys of a large map.
func (p *fastParser) newKey(kids []fnode, seen *map[string]bool, k fnode) bool {
	const small = 16
	if len(kids) < 2*small {
		for a := 0; a < len(kids); a += 2 {
			if kids[a].text == k.text {
				return p.giveUp(int(k.at), "key %q repeated", k.text)
			}
		}
		return true
	}
	if *seen == nil {
		*seen = make(map[string]bool, len(kids))
		for a := 0; a < len(kids); a += 2 {
			(*seen)[kids[a].text] = true
		}
	}
	if (*seen)[k.text] {
		return p.giveUp(int(k.at), "key %q repeated", k.text)
	}
	(*seen)[k.text] = true
	return true
}

// keyColon returns the offset of the colon ending a key after a quoted
// scalar that ended at j, or -1.
func (p *fastParser) keyColon(j, end int) int {
	for j < end && p.s[j] == ' ' {
		j++
	}
	if j < end && p.s[j] == ':' && (j+1 == end || p.s[j+1] == ' ') {
		return j
	}
	return -1
}

// plainKeyEnd returns the offset of the colon that ends a plain key
// starting at s[i] (a colon followed by a space or the line's end, before
// any comment), or -1.
func (p *fastParser) plainKeyEnd(i, end int) int {
	for j := i; j < end; j++ {
		switch p.s[j] {
		case ':':
			if j+1 == end || p.s[j+1] == ' ' {
				return j
			}
		case '#':
			if j > i && p.s[j-1] == ' ' {
				return -1
			}
		}
	}
	return -1
}

// plainStart checks the first character of a plain scalar: YAML's
// indicators cannot start one (or are left to yaml.v3).
func (p *fastParser) plainStart(i, end int, flow bool) bool {
	c := p.s[i]
	switch c {
	case '-', '?', ':':
		if i+1 == end || p.s[i+1] == ' ' || flow && strings.IndexByte(",[]{}", p.s[i+1]) >= 0 {
			return p.giveUp(i, "%q where a value was expected", c)
		}
		if c != '-' {
			return p.giveUp(i, "a value starting with %q", c)
		}
	case '&':
		return p.giveUp(i, "an anchor (&)")
	case '*':
		return p.giveUp(i, "an alias (*)")
	case '!':
		return p.giveUp(i, "a tag (!)")
	case ',', '[', ']', '{', '}', '#', '|', '>', '\'', '"', '%', '@', '`':
		return p.giveUp(i, "a value starting with %q", c)
	}
	return true
}

// nested reads the value of a key at indent m (or of an item of a list at
// indent m) whose line holds nothing after the colon (or dash): a block
// collection on the next lines, or null. A key's value may be a list at
// the key's own indent.
func (p *fastParser) nested(l line, m int, key bool) (fnode, int, bool) {
	next := l.next(p.s)
	nl, more := p.nextContent(next)
	switch {
	case more && nl.indent > m:
		if !p.enter(nl.content()) {
			return fnode{}, 0, false
		}
		defer p.leave()
		if p.isDash(nl.content(), nl.end) {
			return p.seq(nl, nl.indent, false)
		}
		if p.plainKeyEnd(nl.content(), nl.end) < 0 && !p.isQuotedKey(nl.content(), nl.end) {
			return fnode{}, 0, p.giveUp(nl.start, "a value on the line after its key")
		}
		return p.mapping(nl, nl.indent)
	case key && more && nl.indent == m && p.isDash(nl.content(), nl.end):
		// A sequence at the key's own indent, as ruamel writes them.
		if !p.enter(nl.content()) {
			return fnode{}, 0, false
		}
		defer p.leave()
		return p.seq(nl, m, true)
	}
	return fnode{kind: fScalar, at: int32(l.end)}, next, true // null
}

// isQuotedKey reports whether s[i:end] starts with a quoted map key (a
// quoted scalar, then a colon); it records no reason.
func (p *fastParser) isQuotedKey(i, end int) bool {
	if c := p.s[i]; c != '\'' && c != '"' {
		return false
	}
	why, at := p.why, p.whyAt
	_, j, ok := p.quoted(i, end, -1)
	p.why, p.whyAt = why, at
	return ok && p.keyColon(j, end) >= 0
}

// seq reads a block sequence at indent n whose first "-" is on line l at
// column n; indentless is a sequence at its parent key's indent.
func (p *fastParser) seq(l line, n int, indentless bool) (fnode, int, bool) {
	base := len(p.stack)
	at := l.start + n
	for {
		var item fnode
		var next int
		var ok bool
		i := l.start + n + 1
		for i < l.end && p.s[i] == ' ' {
			i++
		}
		if i == l.end || p.s[i] == '#' {
			item, next, ok = p.nested(l, n, false)
		} else {
			item, next, ok = p.inline(l, i, n, true)
		}
		if !ok {
			return fnode{}, 0, false
		}
		if !p.count(int(item.at), 1) {
			return fnode{}, 0, false
		}
		p.stack = append(p.stack, item)
		nl, more := p.nextContent(next)
		if !more || nl.indent < n {
			return p.collection(fSeq, at, base), next, true
		}
		if nl.indent > n {
			return fnode{}, 0, p.giveUp(nl.start, "unexpected indented text in a list")
		}
		if !p.isDash(nl.content(), nl.end) {
			if indentless {
				return p.collection(fSeq, at, base), next, true
			}
			return fnode{}, 0, p.giveUp(nl.start, "unexpected text in a list")
		}
		l = nl
	}
}

// plain reads a plain scalar starting at s[i] on line l, in a block
// collection at indent parent; it may go on over more indented lines.
func (p *fastParser) plain(l line, i, parent int) (fnode, int, bool) {
	if !p.plainStart(i, l.end, false) {
		return fnode{}, 0, false
	}
	var b []byte // only for a scalar over several lines
	text, end, comment := p.plainLine(i, l.end)
	if end < 0 {
		return fnode{}, 0, p.giveUp(i, "a colon and space inside a value")
	}
	next := l.next(p.s)
	for !comment && next < len(p.s) {
		// The common case, looked at once: the next line is not blank
		// and ends the scalar.
		if nl, more := p.nextContent(next); !more || nl.start == next && nl.indent <= parent {
			break
		}
		// Further lines indented more than parent continue the scalar;
		// blank lines among them are line breaks.
		breaks, ls := 0, next
		var nl line
		for ls < len(p.s) {
			nl = p.lineAt(ls)
			if !nl.blank() {
				break
			}
			breaks++
			ls = nl.next(p.s)
		}
		if ls >= len(p.s) || nl.indent <= parent || p.s[nl.content()] == '#' {
			break
		}
		c := nl.content()
		if strings.IndexByte("-?:,[]{}#&*!|>'\"%@`", p.s[c]) >= 0 {
			return fnode{}, 0, p.giveUp(c, "a continued value's line starting with %q", p.s[c])
		}
		more, e, cm := p.plainLine(c, nl.end)
		if e < 0 {
			return fnode{}, 0, p.giveUp(c, "a colon and space inside a value")
		}
		if b == nil {
			b = append(b, text...)
		}
		if breaks == 0 {
			b = append(b, ' ')
		}
		for range breaks {
			b = append(b, '\n')
		}
		b = append(b, more...)
		comment = cm
		l = nl
		next = l.next(p.s)
	}
	if b != nil {
		text = string(b)
	}
	next, ok := p.after(l, parent)
	return fnode{kind: fScalar, text: text, at: int32(i)}, next, ok
}

// plainLine reads the part of a plain scalar on one line, from s[i] to
// end: up to a comment, without trailing spaces. end is -1 when the line
// holds ": " (a key, where a value was expected: an error in YAML) or
// ends in a colon; comment tells that a comment ended it.
func (p *fastParser) plainLine(i, end int) (text string, e int, comment bool) {
	j := i
	for ; j < end; j++ {
		c := p.s[j]
		if c == ':' && (j+1 == end || p.s[j+1] == ' ') {
			return "", -1, false
		}
		if c == '#' && p.s[j-1] == ' ' {
			comment = true
			break
		}
	}
	return strings.TrimRight(p.s[i:j], " "), j, comment
}

// quoted reads a quoted scalar at s[i] ('…' or "…"), which may go on over
// lines indented more than parent (parent -1: it must end on its line,
// which ends at end). j is the offset after the closing quote.
func (p *fastParser) quoted(i, end, parent int) (text string, j int, ok bool) {
	q := p.s[i]
	j = i + 1
	// The common case: one line, no escapes.
	for k := j; k < len(p.s); k++ {
		c := p.s[k]
		if c == q {
			if q == '\'' && k+1 < len(p.s) && p.s[k+1] == '\'' {
				break
			}
			return p.s[j:k], k + 1, true
		}
		if c == '\n' || c == '\\' && q == '"' {
			break
		}
	}
	var b []byte
	for {
		if j >= len(p.s) {
			return "", 0, p.giveUp(i, "an unclosed quoted string")
		}
		c := p.s[j]
		switch {
		case c == q && q == '\'' && j+1 < len(p.s) && p.s[j+1] == '\'':
			b = append(b, '\'')
			j += 2
		case c == q:
			return string(b), j + 1, true
		case c == '\\' && q == '"':
			if j+1 < len(p.s) && p.s[j+1] == '\n' {
				// An escaped line break: the next line joins without
				// a space.
				nj, breaks, ok := p.quotedBreak(i, j+1, parent)
				if !ok {
					return "", 0, false
				}
				for range breaks - 1 {
					b = append(b, '\n')
				}
				j = nj
				continue
			}
			var ok bool
			if b, j, ok = p.escape(b, j); !ok {
				return "", 0, false
			}
		case c == '\n' || c == ' ':
			// Spaces then a line break fold; spaces alone are kept.
			k := j
			for k < len(p.s) && p.s[k] == ' ' {
				k++
			}
			if k < len(p.s) && p.s[k] != '\n' {
				b = append(b, p.s[j:k]...)
				j = k
				continue
			}
			nj, breaks, ok := p.quotedBreak(i, k, parent)
			if !ok {
				return "", 0, false
			}
			if breaks == 1 {
				b = append(b, ' ')
			}
			for range breaks - 1 {
				b = append(b, '\n')
			}
			j = nj
		default:
			b = append(b, c)
			j++
		}
	}
}

// quotedBreak continues a quoted scalar (opened at s[start]) at the line
// break s[j]: it skips blank lines and the next line's indentation, and
// returns where the text goes on and the number of line breaks.
func (p *fastParser) quotedBreak(start, j, parent int) (int, int, bool) {
	if parent < 0 {
		return 0, 0, p.giveUp(start, "a quoted string over several lines")
	}
	breaks := 0
	for j < len(p.s) && p.s[j] == '\n' {
		breaks++
		l := p.lineAt(j + 1)
		if l.start >= len(p.s) {
			return 0, 0, p.giveUp(start, "an unclosed quoted string")
		}
		if !l.blank() {
			if l.indent <= parent {
				return 0, 0, p.giveUp(l.start, "a quoted string's line not indented")
			}
			return l.content(), breaks, true
		}
		j = l.end
	}
	return 0, 0, p.giveUp(start, "an unclosed quoted string")
}

// escape decodes the escape sequence at s[j] ('\\') into b.
func (p *fastParser) escape(b []byte, j int) ([]byte, int, bool) {
	if j+1 >= len(p.s) {
		return nil, 0, p.giveUp(j, "an escape at the end of the file")
	}
	var r rune
	size := 0
	switch e := p.s[j+1]; e {
	case '0':
		r = 0
	case 'a':
		r = '\a'
	case 'b':
		r = '\b'
	case 't':
		r = '\t'
	case 'n':
		r = '\n'
	case 'v':
		r = '\v'
	case 'f':
		r = '\f'
	case 'r':
		r = '\r'
	case 'e':
		r = 0x1b
	case ' ', '"', '\'', '\\':
		r = rune(e)
	case 'N':
		r = 0x85
	case '_':
		r = 0xa0
	case 'L':
		r = 0x2028
	case 'P':
		r = 0x2029
	case 'x':
		size = 2
	case 'u':
		size = 4
	case 'U':
		size = 8
	default:
		return nil, 0, p.giveUp(j, "unknown escape \\%c", e)
	}
	j += 2
	if size > 0 {
		if j+size > len(p.s) {
			return nil, 0, p.giveUp(j, "a short escape")
		}
		v := 0
		for _, c := range []byte(p.s[j : j+size]) {
			switch {
			case c >= '0' && c <= '9':
				v = v<<4 | int(c-'0')
			case c >= 'a' && c <= 'f':
				v = v<<4 | int(c-'a'+10)
			case c >= 'A' && c <= 'F':
				v = v<<4 | int(c-'A'+10)
			default:
				return nil, 0, p.giveUp(j, "a bad hexadecimal escape")
			}
		}
		if v >= 0xd800 && v <= 0xdfff || v > 0x10ffff {
			return nil, 0, p.giveUp(j, "an escape of an invalid character")
		}
		r = rune(v)
		j += size
	}
	return utf8.AppendRune(b, r), j, true
}

// blockScalar reads a literal block scalar ("|" or "|-") whose indicator
// is at s[i] on line l, for a value in a block collection at indent
// parent. Folded scalars, explicit indentation, keep chomping ("|+") and
// leading blank lines are left to yaml.v3.
func (p *fastParser) blockScalar(l line, i, parent int) (fnode, int, bool) {
	if p.s[i] == '>' {
		return fnode{}, 0, p.giveUp(i, "a folded scalar")
	}
	j := i + 1
	strip := false
	if j < l.end && p.s[j] == '-' {
		strip = true
		j++
	}
	if j < l.end && p.s[j] != ' ' || !p.restIsComment(j, l.end) {
		return fnode{}, 0, p.giveUp(j, "a block scalar header this reader does not know")
	}
	first := p.lineAt(l.next(p.s))
	if first.start >= len(p.s) || first.blank() {
		return fnode{}, 0, p.giveUp(first.start, "a block scalar starting with a blank line")
	}
	ind := first.indent
	if ind <= parent {
		return fnode{}, 0, p.giveUp(first.start, "an empty block scalar")
	}
	var b []byte
	breaks := 0 // blank lines since the last content line
	ls := first.start
	last := first // the last content line
	for ls < len(p.s) {
		cl := p.lineAt(ls)
		if cl.indent < ind && !cl.blank() {
			break
		}
		if cl.end-cl.start <= ind {
			breaks++ // ind spaces or fewer: a blank line
		} else {
			if ls != first.start {
				b = append(b, '\n')
			}
			for range breaks {
				b = append(b, '\n')
			}
			breaks = 0
			b = append(b, p.s[cl.start+ind:cl.end]...)
			last = cl
		}
		ls = cl.next(p.s)
	}
	if !strip {
		b = append(b, '\n')
	}
	// Trailing blank lines belong to the scalar, and are dropped.
	next, ok := p.after(last, parent)
	return fnode{kind: fScalar, text: string(b), quoted: true, at: int32(i)}, next, ok
}

// flow reads a flow collection ([…] or {…}) at s[i] that ends on its line
// (which ends at end); j is the offset after it.
func (p *fastParser) flow(i, end int) (n fnode, j int, ok bool) {
	if !p.enter(i) {
		return fnode{}, 0, false
	}
	defer p.leave()
	open := p.s[i]
	closing := byte(']')
	kind := uint8(fSeq)
	if open == '{' {
		closing = '}'
		kind = fMap
	}
	var seen map[string]bool
	base := len(p.stack)
	j = p.skipSpaces(i+1, end)
	if j < end && p.s[j] == closing {
		return p.collection(kind, i, base), j + 1, true
	}
	for {
		if j >= end {
			return fnode{}, 0, p.giveUp(i, "a flow collection over several lines")
		}
		if kind == fMap {
			var k fnode
			if k, j, ok = p.flowScalar(j, end, true); !ok {
				return fnode{}, 0, false
			}
			if k.quoted {
				j = p.skipSpaces(j, end)
			} else if plainTag(k.text) != tagStr {
				return fnode{}, 0, p.giveUp(j, "key %q is not a string", k.text)
			}
			if j+1 >= end || p.s[j] != ':' || p.s[j+1] != ' ' {
				return fnode{}, 0, p.giveUp(j, "a flow map entry without \": \"")
			}
			if !p.newKey(p.stack[base:], &seen, k) {
				return fnode{}, 0, false
			}
			if j-int(k.at) > 512 {
				return fnode{}, 0, p.giveUp(j, "a long key")
			}
			k.quoted = true
			if !p.count(int(k.at), 1) {
				return fnode{}, 0, false
			}
			p.stack = append(p.stack, k)
			j = p.skipSpaces(j+1, end)
		}
		var v fnode
		if j < end && (p.s[j] == '[' || p.s[j] == '{') {
			v, j, ok = p.flow(j, end)
		} else {
			v, j, ok = p.flowScalar(j, end, false)
		}
		if !ok {
			return fnode{}, 0, false
		}
		if !p.count(int(v.at), 1) {
			return fnode{}, 0, false
		}
		p.stack = append(p.stack, v)
		j = p.skipSpaces(j, end)
		if j < end && p.s[j] == closing {
			return p.collection(kind, i, base), j + 1, true
		}
		if j >= end || p.s[j] != ',' {
			return fnode{}, 0, p.giveUp(j, "unexpected text in a flow collection")
		}
		j = p.skipSpaces(j+1, end)
		if j < end && p.s[j] == closing {
			return fnode{}, 0, p.giveUp(j, "a comma before the end of a flow collection")
		}
	}
}

func (p *fastParser) skipSpaces(j, end int) int {
	for j < end && p.s[j] == ' ' {
		j++
	}
	return j
}

// flowScalar reads a quoted or plain scalar inside a flow collection; a
// plain one ends before ",[]{}", and before ": " when it is a key.
func (p *fastParser) flowScalar(i, end int, key bool) (fnode, int, bool) {
	if i >= end {
		return fnode{}, 0, p.giveUp(i, "a flow collection over several lines")
	}
	if c := p.s[i]; c == '\'' || c == '"' {
		s, j, ok := p.quoted(i, end, -1)
		return fnode{kind: fScalar, text: s, quoted: true, at: int32(i)}, j, ok
	}
	if !p.plainStart(i, end, true) {
		return fnode{}, 0, false
	}
	j := i
	for ; j < end; j++ {
		c := p.s[j]
		if strings.IndexByte(",[]{}", c) >= 0 {
			break
		}
		if c == ':' {
			if key && j+1 < end && p.s[j+1] == ' ' {
				break
			}
			return fnode{}, 0, p.giveUp(j, "a colon in a flow collection's value")
		}
		if c == '#' && p.s[j-1] == ' ' || c == '?' {
			return fnode{}, 0, p.giveUp(j, "%q in a flow collection", c)
		}
	}
	return fnode{kind: fScalar, text: strings.TrimRight(p.s[i:j], " "), at: int32(i)}, j, true
}
