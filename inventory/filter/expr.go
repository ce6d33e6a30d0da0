package filter

import (
	"cmp"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hostbroker/broker/inventory"
)

// This file implements the @inv expression form of Filter, the Python
// broker's (0.3+) filter syntax: a small subset of Python evaluated by a
// hand-written parser, never by eval. docs/filters.md describes it.

// stage is one "|"-separated part: a per-record condition or a list selection.
type stage struct {
	cond node
	sel  *selection
}

// selection is @inv[i] (one) or @inv[lo:hi:step].
type selection struct {
	one          bool
	i            int
	lo, hi, step *int
}

// missingT is a property the record lacks (Python's MockStub).
type missingT struct{}

var missing any = missingT{}

func isMissing(v any) bool { _, ok := v.(missingT); return ok }

func parseExpr(s string) (Filter, error) {
	f := Filter{src: s}
	for _, sp := range splitStages(s) {
		toks, err := lex(s, sp[0], sp[1])
		if err != nil {
			return Filter{}, err
		}
		hasInv := false
		for _, t := range toks {
			hasInv = hasInv || t.kind == tInv
		}
		if !hasInv {
			return Filter{}, fmt.Errorf("inventory: filter expression %q: stage %q has no @inv", s, strings.TrimSpace(s[sp[0]:sp[1]]))
		}
		p := &parser{src: s, toks: toks}
		var st stage
		if toks[0].kind == tInv && p.at(1, "[") && toks[2].kind != tStr {
			st.sel, err = p.selection()
		} else if st.cond, err = p.or(); err == nil && p.peek().kind != tEOF {
			err = p.errAt(p.peek(), "unexpected %s", p.peek().describe())
		}
		if err != nil {
			return Filter{}, err
		}
		f.stages = append(f.stages, st)
	}
	return f, nil
}

// splitStages splits s on "|" outside quotes, as byte ranges.
func splitStages(s string) [][2]int {
	var out [][2]int
	start, q := 0, byte(0)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case q != 0 && c == '\\':
			i++
		case q != 0 && c == q:
			q = 0
		case q != 0:
		case c == '"' || c == '\'':
			q = c
		case c == '|':
			out = append(out, [2]int{start, i})
			start = i + 1
		}
	}
	return append(out, [2]int{start, len(s)})
}

// applyExpr runs the stages left to right; a record whose evaluation fails
// is dropped, and the first such error is returned.
func (f Filter) applyExpr(recs []*inventory.Record) ([]*inventory.Record, error) {
	var first error
	for _, st := range f.stages {
		if st.sel != nil {
			var err error
			if recs, err = st.sel.apply(recs); err != nil && first == nil {
				first = fmt.Errorf("inventory: filter %q: %w", f.src, err)
			}
			continue
		}
		out := []*inventory.Record{}
		for _, r := range recs {
			ok, err := st.match(r)
			if err != nil && first == nil {
				host := r.Hostname
				if host == "" {
					host = r.Name
				}
				first = fmt.Errorf("inventory: filter %q on host %q: %w", f.src, host, err)
			}
			if ok {
				out = append(out, r)
			}
		}
		recs = out
	}
	return recs, first
}

func (st stage) match(r *inventory.Record) (bool, error) {
	v, err := st.cond.eval(&env{rec: r})
	return err == nil && truthy(v), err
}

func (s *selection) apply(recs []*inventory.Record) ([]*inventory.Record, error) {
	n := len(recs)
	if s.one {
		i := s.i
		if i < 0 {
			i += n
		}
		if i < 0 || i >= n {
			return []*inventory.Record{}, fmt.Errorf("index %d out of range for %d hosts", s.i, n)
		}
		return []*inventory.Record{recs[i]}, nil
	}
	step := 1
	if s.step != nil {
		step = *s.step
	}
	if step == math.MinInt {
		step = -n - 1 // same selection, and -step cannot overflow
	}
	adj := func(p *int, def int) int { // Python's PySlice_AdjustIndices
		if p == nil {
			return def
		}
		i := *p
		if i < 0 {
			if i += n; i < 0 {
				if step < 0 {
					return -1
				}
				return 0
			}
		} else if i >= n {
			if step < 0 {
				return n - 1
			}
			return n
		}
		return i
	}
	lo, hi, cnt := 0, 0, 0
	if step > 0 {
		if lo, hi = adj(s.lo, 0), adj(s.hi, n); lo < hi {
			cnt = (hi-lo-1)/step + 1
		}
	} else if lo, hi = adj(s.lo, n-1), adj(s.hi, -1); lo > hi {
		cnt = (lo-hi-1)/(-step) + 1
	}
	out := make([]*inventory.Record, cnt)
	for k := range out {
		out[k] = recs[lo+k*step]
	}
	return out, nil
}

// ---- tokens ----

type tokKind int

const (
	tEOF tokKind = iota
	tInv
	tName
	tStr
	tNum
	tOp
)

type token struct {
	kind     tokKind
	text     string // source text (the value for tStr is in str)
	str      string
	pos, end int // byte offsets in the whole filter
}

func (t token) describe() string {
	if t.kind == tEOF {
		return "end of stage"
	}
	return strconv.Quote(t.text)
}

func synErr(s string, pos int, format string, args ...any) error {
	return fmt.Errorf("inventory: filter expression %q: %s at column %d", s, fmt.Sprintf(format, args...), utf8.RuneCountInString(s[:pos])+1)
}

func lex(s string, start, end int) ([]token, error) {
	var toks []token
	for i := start; i < end; {
		c := s[i]
		r, size := utf8.DecodeRuneInString(s[i:end])
		j := i + size
		kind := tOp
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
			continue
		case c == '"' || c == '\'':
			k, v, err := lexString(s, i, end)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tStr, text: s[i:k], str: v, pos: i, end: k})
			i = k
			continue
		case c >= '0' && c <= '9':
			for j < end && (isDigit(s[j]) || s[j] == '.' || s[j] == 'e' || s[j] == 'E' ||
				(s[j] == '-' || s[j] == '+') && (s[j-1] == 'e' || s[j-1] == 'E')) {
				j++
			}
			kind = tNum
		case c == '@' || r == '_' || unicode.IsLetter(r):
			for j < end {
				r, size := utf8.DecodeRuneInString(s[j:end])
				if r != '_' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
					break
				}
				j += size
			}
			kind = tName
			if c == '@' {
				if s[i:j] != "@inv" {
					return nil, synErr(s, i, "unknown reference %q (use @inv)", s[i:j])
				}
				kind = tInv
			}
		case strings.IndexByte("()[],.:-", c) >= 0:
		case strings.IndexByte("=!<>~&^%*/+", c) >= 0:
			for j < end && strings.IndexByte("=!<>~&^%*/+", s[j]) >= 0 {
				j++
			}
			switch s[i:j] {
			case "==", "!=", "<", "<=", ">", ">=":
			default:
				return nil, synErr(s, i, "unknown operator %q", s[i:j])
			}
		default:
			return nil, synErr(s, i, "unexpected %q", s[i:j])
		}
		toks = append(toks, token{kind: kind, text: s[i:j], pos: i, end: j})
		i = j
	}
	return append(toks, token{kind: tEOF, pos: end, end: end}), nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// lexString reads a quoted string at s[i] with Python's common escapes.
func lexString(s string, i, end int) (int, string, error) {
	q := s[i]
	var b strings.Builder
	for j := i + 1; j < end; j++ {
		c := s[j]
		if c == q {
			return j + 1, b.String(), nil
		}
		if c != '\\' || j+1 >= end {
			b.WriteByte(c)
			continue
		}
		j++
		switch e := s[j]; e {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case '0':
			b.WriteByte(0)
		case '\\', '\'', '"':
			b.WriteByte(e)
		case 'x', 'u':
			n := map[byte]int{'x': 2, 'u': 4}[e]
			v, err := strconv.ParseUint(s[j+1:min(j+1+n, end)], 16, 32)
			if err != nil || j+1+n > end {
				return 0, "", synErr(s, j-1, "bad escape %q", s[j-1:min(j+1+n, end)])
			}
			b.WriteRune(rune(v))
			j += n
		default: // Python keeps unknown escapes as written
			b.WriteByte('\\')
			b.WriteByte(e)
		}
	}
	return 0, "", synErr(s, i, "unterminated string %q", s[i:end])
}

// ---- parser ----

type parser struct {
	src   string
	toks  []token
	i     int
	depth int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

// at reports whether the token k ahead is the operator or keyword text.
func (p *parser) at(k int, text string) bool {
	if p.i+k >= len(p.toks) {
		return false
	}
	t := p.toks[p.i+k]
	return (t.kind == tOp || t.kind == tName) && t.text == text
}

func (p *parser) errAt(t token, format string, args ...any) error {
	return synErr(p.src, t.pos, format, args...)
}

func (p *parser) expect(text string) error {
	if !p.at(0, text) {
		return p.errAt(p.peek(), "expected %q, found %s", text, p.peek().describe())
	}
	p.next()
	return nil
}

func (p *parser) enter() error {
	if p.depth++; p.depth > 50 {
		return p.errAt(p.peek(), "expression nested too deeply")
	}
	return nil
}

func (p *parser) or() (node, error) {
	defer func() { p.depth-- }()
	if err := p.enter(); err != nil {
		return nil, err
	}
	x, err := p.and()
	for err == nil && p.at(0, "or") {
		p.next()
		var y node
		if y, err = p.and(); err == nil {
			x = orNode{x, y}
		}
	}
	return x, err
}

func (p *parser) and() (node, error) {
	x, err := p.not()
	for err == nil && p.at(0, "and") {
		p.next()
		var y node
		if y, err = p.not(); err == nil {
			x = andNode{x, y}
		}
	}
	return x, err
}

func (p *parser) not() (node, error) {
	if !p.at(0, "not") {
		return p.cmp()
	}
	defer func() { p.depth-- }()
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.next()
	x, err := p.not()
	return notNode{x}, err
}

func (p *parser) cmp() (node, error) {
	start := p.peek().pos
	x, err := p.postfix()
	c := &cmpNode{xs: []node{x}}
	for err == nil {
		op := p.peek().text
		switch {
		case p.at(0, "not") && p.at(1, "in"):
			p.next()
			op = "not in"
		case p.peek().kind == tOp && strings.ContainsAny(op, "=<>") || p.at(0, "in"):
		default:
			if len(c.ops) == 0 {
				return x, nil
			}
			c.src = p.src[start:p.toks[p.i-1].end]
			return c, nil
		}
		p.next()
		if x, err = p.postfix(); err == nil {
			c.ops, c.xs = append(c.ops, op), append(c.xs, x)
		}
	}
	return nil, err
}

var methods = map[string][2]int{ // name: min, max arguments
	"startswith": {1, 1}, "endswith": {1, 1}, "lower": {0, 0}, "upper": {0, 0},
	"strip": {0, 1}, "lstrip": {0, 1}, "rstrip": {0, 1},
}

func (p *parser) postfix() (node, error) {
	start := p.peek().pos
	x, err := p.primary()
	for err == nil {
		switch {
		case p.at(0, "."):
			dot := p.next()
			name := p.next()
			if name.kind != tName {
				return nil, p.errAt(name, "expected a property name after %q, found %s", p.src[start:dot.end], name.describe())
			}
			if !p.at(0, "(") {
				x = attrNode{x, name.text}
				continue
			}
			arity, ok := methods[name.text]
			if !ok {
				return nil, p.errAt(name, "unknown method %q (have startswith, endswith, lower, upper, strip, lstrip, rstrip)", name.text)
			}
			p.next()
			var args []node
			if args, err = p.items(")"); err != nil {
				return nil, err
			}
			if len(args) < arity[0] || len(args) > arity[1] {
				want := fmt.Sprint(arity[0])
				if arity[1] != arity[0] {
					want = fmt.Sprintf("%d or %d", arity[0], arity[1])
				}
				return nil, p.errAt(name, "%s() takes %s arguments, got %d", name.text, want, len(args))
			}
			x = callNode{x, name.text, args, p.src[start:p.toks[p.i-1].end]}
		case p.at(0, "["):
			p.next()
			k := p.peek()
			if _, inv := x.(invNode); inv && k.kind != tStr {
				return nil, p.errAt(k, "a list selection @inv[...] must be a whole stage (properties are @inv[\"key\"])")
			}
			if k.kind == tStr {
				p.next()
				x = attrNode{x, k.str}
			} else {
				var i int
				if i, err = p.intLit(); err != nil {
					return nil, err
				}
				x = indexNode{x, i}
			}
			err = p.expect("]")
		default:
			return x, nil
		}
	}
	return nil, err
}

// items parses expressions separated by commas up to the closing text.
func (p *parser) items(closing string) ([]node, error) {
	var xs []node
	for !p.at(0, closing) {
		x, err := p.or()
		if err != nil {
			return nil, err
		}
		xs = append(xs, x)
		if !p.at(0, ",") {
			break
		}
		p.next()
	}
	return xs, p.expect(closing)
}

func (p *parser) primary() (node, error) {
	t := p.next()
	switch {
	case t.kind == tInv:
		return invNode{}, nil
	case t.kind == tStr:
		return litNode{t.str}, nil
	case t.kind == tNum || t.text == "-" && p.peek().kind == tNum:
		p.i--
		v, err := p.number()
		return litNode{v}, err
	case t.text == "True" || t.text == "False":
		return litNode{t.text == "True"}, nil
	case t.text == "None":
		return litNode{nil}, nil
	case t.kind == tName:
		return nil, p.errAt(t, "unknown name %q (properties are @inv.%s)", t.text, t.text)
	case t.text == "(" || t.text == "[":
		closing := map[string]string{"(": ")", "[": "]"}[t.text]
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		if t.text == "(" && !p.at(0, ")") {
			x, err := p.or()
			if err != nil || !p.at(0, ",") {
				if err == nil {
					err = p.expect(")")
				}
				return x, err
			}
			p.next()
			xs, err := p.items(")")
			return listNode(append([]node{x}, xs...)), err
		}
		xs, err := p.items(closing)
		return listNode(xs), err
	}
	return nil, p.errAt(t, "unexpected %s", t.describe())
}

// number reads an optionally negative int or float literal.
func (p *parser) number() (any, error) {
	t := p.next()
	text := t.text
	if text == "-" {
		text += p.next().text
	}
	if !strings.ContainsAny(text, ".eE") {
		i, err := strconv.ParseInt(text, 10, 0)
		if err != nil {
			return nil, p.errAt(t, "bad integer %q", text)
		}
		return int(i), nil
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return nil, p.errAt(t, "bad number %q", text)
	}
	return f, nil
}

func (p *parser) intLit() (int, error) {
	t := p.peek()
	if t.kind != tNum && !(t.text == "-" && p.toks[p.i+1].kind == tNum) {
		return 0, p.errAt(t, "expected an integer index, found %s", t.describe())
	}
	v, err := p.number()
	if i, ok := v.(int); ok || err != nil {
		return i, err
	}
	return 0, p.errAt(t, "index %q is not an integer", p.src[t.pos:p.toks[p.i-1].end])
}

// selection parses a whole stage @inv[i] or @inv[lo:hi:step].
func (p *parser) selection() (*selection, error) {
	p.next()
	p.next()
	var parts []*int
	var cur *int
	for !p.at(0, "]") {
		switch {
		case p.at(0, ":") && len(parts) < 2:
			p.next()
			parts, cur = append(parts, cur), nil
		case cur == nil && !p.at(0, ":"):
			i, err := p.intLit()
			if err != nil {
				return nil, err
			}
			cur = &i
		default:
			return nil, p.errAt(p.peek(), "unexpected %s in list selection", p.peek().describe())
		}
	}
	p.next()
	if t := p.peek(); t.kind != tEOF {
		return nil, p.errAt(t, "unexpected %s after list selection (a list selection is a whole stage)", t.describe())
	}
	parts = append(parts, cur)
	if len(parts) == 1 {
		if cur == nil {
			return nil, p.errAt(p.toks[1], "empty list selection")
		}
		return &selection{one: true, i: *cur}, nil
	}
	s := &selection{lo: parts[0], hi: parts[1]}
	if len(parts) == 3 {
		s.step = parts[2]
		if s.step != nil && *s.step == 0 {
			return nil, p.errAt(p.toks[1], "slice step cannot be zero")
		}
	}
	return s, nil
}

// ---- evaluation ----

type env struct {
	rec *inventory.Record
	m   map[string]any // the record as a map, built if needed
	bm  map[string]any // its _brokertest block, built if needed
}

func (e *env) all() map[string]any {
	if e.m == nil {
		e.m = e.rec.Map()
	}
	return e.m
}

func (e *env) top(key string) any {
	v, ok := lookupFast(e.rec, []string{key})
	if !ok && !knownTop(key) {
		v, ok = topValue(e.rec, key, &e.bm)
	}
	if !ok {
		return missing
	}
	return v
}

type node interface{ eval(*env) (any, error) }

type (
	invNode  struct{}
	litNode  struct{ v any }
	listNode []node
	attrNode struct {
		x   node
		key string
	}
	indexNode struct {
		x node
		i int
	}
	callNode struct {
		x    node
		name string
		args []node
		src  string
	}
	notNode struct{ x node }
	andNode struct{ x, y node }
	orNode  struct{ x, y node }
	cmpNode struct {
		xs  []node
		ops []string
		src string
	}
)

func (invNode) eval(e *env) (any, error)   { return e.all(), nil }
func (n litNode) eval(*env) (any, error)   { return n.v, nil }
func (n notNode) eval(e *env) (any, error) { v, err := n.x.eval(e); return !truthy(v), err }

func (n listNode) eval(e *env) (any, error) {
	out := make([]any, len(n))
	for i, x := range n {
		v, err := x.eval(e)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func (n attrNode) eval(e *env) (any, error) {
	if _, ok := n.x.(invNode); ok {
		return e.top(n.key), nil
	}
	// @inv._brokertest.key, without building the whole block.
	if a, ok := n.x.(attrNode); ok && a.key == "_brokertest" {
		if _, inv := a.x.(invNode); inv && e.bm == nil {
			if v, present, done := brokerField(e.rec, []string{a.key, n.key}); done {
				if !present {
					return missing, nil
				}
				return v, nil
			}
		}
	}
	v, err := n.x.eval(e)
	if m, ok := v.(map[string]any); ok {
		if w, ok := m[n.key]; ok {
			return w, err
		}
	}
	return missing, err
}

func (n indexNode) eval(e *env) (any, error) {
	v, err := n.x.eval(e)
	l, _ := v.([]any)
	i := n.i
	if i < 0 {
		i += len(l)
	}
	if i < 0 || i >= len(l) {
		return missing, err
	}
	return l[i], err
}

func (n andNode) eval(e *env) (any, error) {
	v, err := n.x.eval(e)
	if err != nil || !truthy(v) {
		return v, err
	}
	return n.y.eval(e)
}

func (n orNode) eval(e *env) (any, error) {
	v, err := n.x.eval(e)
	if err != nil || truthy(v) {
		return v, err
	}
	return n.y.eval(e)
}

func (n callNode) eval(e *env) (any, error) {
	v, err := n.x.eval(e)
	if err != nil {
		return nil, err
	}
	args, err := listNode(n.args).eval(e)
	if err != nil {
		return nil, err
	}
	if isMissing(v) {
		if n.name == "startswith" || n.name == "endswith" {
			return false, nil
		}
		return missing, nil
	}
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("%s: %s has no method %s", n.src, pyType(v), n.name)
	}
	a := args.([]any)
	var cut any
	if len(a) > 0 {
		cut = a[0]
	}
	switch n.name {
	case "startswith", "endswith":
		fixes, ok := cut.([]any)
		if !ok {
			fixes = []any{cut}
		}
		for _, x := range fixes {
			fix, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("%s: %s() argument must be str or a tuple of str, not %s", n.src, n.name, pyType(x))
			}
			if n.name == "startswith" && strings.HasPrefix(s, fix) || n.name == "endswith" && strings.HasSuffix(s, fix) {
				return true, nil
			}
		}
		return false, nil
	case "lower":
		return strings.ToLower(s), nil
	case "upper":
		return strings.ToUpper(s), nil
	}
	isCut := unicode.IsSpace
	if set, ok := cut.(string); ok {
		isCut = func(r rune) bool { return strings.ContainsRune(set, r) }
	} else if cut != nil {
		return nil, fmt.Errorf("%s: %s() argument must be str or None, not %s", n.src, n.name, pyType(cut))
	}
	trim := map[string]func(string, func(rune) bool) string{"strip": strings.TrimFunc, "lstrip": strings.TrimLeftFunc, "rstrip": strings.TrimRightFunc}
	return trim[n.name](s, isCut), nil
}

func (n *cmpNode) eval(e *env) (any, error) {
	l, err := n.xs[0].eval(e)
	for i, op := range n.ops {
		if err != nil {
			return nil, err
		}
		var r any
		if r, err = n.xs[i+1].eval(e); err != nil {
			return nil, err
		}
		ok, msg := compare(op, l, r)
		if msg != "" {
			return nil, fmt.Errorf("%s: %s", n.src, msg)
		}
		if !ok {
			return false, nil
		}
		l = r
	}
	return true, err
}

// compare applies op; msg is Python's TypeError, if it would raise one.
func compare(op string, l, r any) (ok bool, msg string) {
	switch op {
	case "==":
		return pyEq(l, r), ""
	case "!=":
		return !pyEq(l, r), ""
	case "in":
		return contains(r, l)
	case "not in":
		ok, msg := contains(r, l)
		return !ok, msg
	}
	if isMissing(l) || isMissing(r) {
		return false, ""
	}
	c, ok := order(l, r)
	if !ok {
		return false, fmt.Sprintf("'%s' not supported between %s and %s", op, pyType(l), pyType(r))
	}
	switch op {
	case "<":
		return c < 0, ""
	case "<=":
		return c <= 0, ""
	case ">":
		return c > 0 && c != unordered, ""
	}
	return c >= 0 && c != unordered, "" // >=
}

func contains(container, item any) (bool, string) {
	if isMissing(container) || isMissing(item) {
		return false, ""
	}
	switch c := container.(type) {
	case string:
		s, ok := item.(string)
		if !ok {
			return false, fmt.Sprintf("'in <string>' requires string as left operand, not %s", pyType(item))
		}
		return strings.Contains(c, s), ""
	case []any:
		for _, x := range c {
			if pyEq(item, x) {
				return true, ""
			}
		}
		return false, ""
	case map[string]any:
		s, ok := item.(string)
		_, has := c[s]
		return ok && has, ""
	}
	return false, fmt.Sprintf("argument of type '%s' is not iterable", pyType(container))
}

// number is a Python int (bool included) or float.
func number(v any) (i int64, f float64, isInt, ok bool) {
	switch x := v.(type) {
	case bool:
		if x {
			return 1, 1, true, true
		}
		return 0, 0, true, true
	case int:
		return int64(x), float64(x), true, true
	case int64:
		return x, float64(x), true, true
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), float64(x), true, true
		}
		return 0, float64(x), false, true
	case float64:
		return 0, x, false, true
	}
	return 0, 0, false, false
}

// pyEq is Python's ==: no conversion between text and numbers.
func pyEq(a, b any) bool {
	if isMissing(a) || isMissing(b) {
		return false
	}
	if _, _, _, an := number(a); an {
		c, ok := order(a, b)
		return ok && c == 0
	}
	switch x := a.(type) {
	case nil:
		return b == nil
	case string:
		y, ok := b.(string)
		return ok && x == y
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !pyEq(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, has := y[k]; !has || !pyEq(v, w) {
				return false
			}
		}
		return true
	}
	return false
}

const unordered = 2 // a NaN: every comparison is false

// order compares values Python can order; ok is false where Python raises.
func order(a, b any) (int, bool) {
	ai, af, aInt, an := number(a)
	bi, bf, bInt, bn := number(b)
	switch {
	case an && bn && aInt && bInt:
		return cmp.Compare(ai, bi), true
	case an && bn:
		if math.IsNaN(af) || math.IsNaN(bf) {
			return unordered, true
		}
		return cmp.Compare(af, bf), true
	case an || bn:
		return 0, false
	}
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		return strings.Compare(x, y), ok
	case time.Time:
		y, ok := b.(time.Time)
		return x.Compare(y), ok
	case []any:
		y, ok := b.([]any)
		if !ok {
			return 0, false
		}
		for i := 0; i < len(x) && i < len(y); i++ {
			if !pyEq(x[i], y[i]) {
				return order(x[i], y[i])
			}
		}
		return cmp.Compare(len(x), len(y)), true
	}
	return 0, false
}

func truthy(v any) bool {
	switch x := v.(type) {
	case nil, missingT:
		return false
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	if _, f, _, ok := number(v); ok {
		return f != 0
	}
	return true
}

func pyType(v any) string {
	switch v.(type) {
	case nil:
		return "NoneType"
	case missingT:
		return "missing"
	case string:
		return "str"
	case bool:
		return "bool"
	case int, int64, uint64:
		return "int"
	case float64:
		return "float"
	case []any:
		return "list"
	case map[string]any:
		return "dict"
	case time.Time:
		return "datetime"
	}
	return fmt.Sprintf("%T", v)
}
