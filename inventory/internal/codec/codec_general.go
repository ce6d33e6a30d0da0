package codec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The general reader: any YAML the fast reader leaves (anchors and
// aliases, tags, flow collections over several lines, folded scalars,
// CRLF, a byte-order mark…) is parsed by yaml.v3 into its node tree,
// which is then turned into the fast reader's nodes and decoded by the
// same code (fastParser.record), so both read every value alike: as
// ruamel.yaml's round-trip loader does (resolve.go). What ruamel.yaml
// refuses is refused: several documents, duplicate keys, merge keys;
// and so is what this library cannot hold: tags other than the standard
// ones. A key that is not a string (null:, 1:) is read under its text,
// and its place noted in its record so that a write gives it as read.

// decodeGeneral reads any YAML with yaml.v3, within the bounds; links
// (nil when the file has no anchors) say which anchors each record holds
// and which of other records' it uses.
func decodeGeneral(name string, data []byte) ([]*Record, []Link, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("%w: %s: %s", ErrCorrupt, name, yamlErrorText(err))
	}
	var second yaml.Node
	if err := dec.Decode(&second); !errors.Is(err, io.EOF) {
		line := second.Line
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %s", ErrCorrupt, name, yamlErrorText(err))
		}
		return nil, nil, fmt.Errorf("%w: %s: a second YAML document at line %d (after \"---\" or \"...\"); an inventory is one document, and the Python broker refuses this file too", ErrCorrupt, name, line)
	}
	if err := checkBounds(&doc); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w: %s", ErrCorrupt, name, ErrLimit, err.Error())
	}
	g := &generalReader{p: &fastParser{s: string(data)}, lineStarts: lineStarts(data)}
	recs, err := g.file(&doc)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %s", ErrCorrupt, name, err)
	}
	return recs, g.links(recs), nil
}

type generalReader struct {
	p          *fastParser
	lineStarts []int
	// path is where node is in the record being read (keys, list
	// indexes); plainKeys the places (keyPlace) of its keys that are not
	// strings, and keyNotText whether the key node just read is one.
	path       []string
	plainKeys  map[string]bool
	keyNotText bool
	// items are the top-level list's items, for links.
	items []*yaml.Node
}

// links finds, in each item, the anchors it holds and the aliases of
// other items' anchors it uses; nil when there are none.
func (g *generalReader) links(recs []*Record) []Link {
	if len(g.items) != len(recs) {
		return nil
	}
	var links []Link
	holder := map[*yaml.Node]int{} // anchored node → its item
	var walk func(i int, n *yaml.Node)
	walk = func(i int, n *yaml.Node) {
		if n.Kind == yaml.AliasNode {
			if j, ok := holder[n.Alias]; ok && j != i {
				links[i].Uses = append(links[i].Uses, Use{Rec: recs[j], Name: n.Value})
			}
			return
		}
		if n.Anchor != "" {
			holder[n] = i
			links[i].Anchors = append(links[i].Anchors, n.Anchor)
		}
		for _, c := range n.Content {
			walk(i, c)
		}
	}
	for i, item := range g.items {
		if links == nil {
			if !hasAnchorOrAlias(item) {
				continue
			}
			links = make([]Link, len(recs))
		}
		walk(i, item)
	}
	return links
}

func hasAnchorOrAlias(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return true
	}
	for _, c := range n.Content {
		if hasAnchorOrAlias(c) {
			return true
		}
	}
	return false
}

func lineStarts(data []byte) []int {
	starts := []int{0}
	for i, c := range data {
		if c == '\n' {
			starts = append(starts, i+1)
		}
	}
	return starts
}

// offset is a node's offset in the file, for the parser's reasons.
func (g *generalReader) offset(n *yaml.Node) int32 {
	if n.Line < 1 || n.Line > len(g.lineStarts) {
		return 0
	}
	return int32(g.lineStarts[n.Line-1] + max(n.Column-1, 0))
}

func (g *generalReader) errorAt(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("line %d: %s", n.Line, fmt.Sprintf(format, args...))
}

func (g *generalReader) file(doc *yaml.Node) ([]*Record, error) {
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, nil
	}
	top := doc.Content[0]
	if top.Kind == yaml.AliasNode {
		top = top.Alias
	}
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return nil, nil
	}
	if top.Kind != yaml.SequenceNode {
		return nil, g.errorAt(top, "the file is not a list of hosts")
	}
	if err := g.checkTag(top); err != nil {
		return nil, err
	}
	var recs []*Record
	g.items = top.Content
	for i, item := range top.Content {
		g.p.arena = g.p.arena[:0]
		g.p.stack = g.p.stack[:0]
		g.path, g.plainKeys = g.path[:0], nil
		n, err := g.node(item, false)
		if err != nil {
			return nil, err
		}
		if n.kind != fMap {
			if n.kind == fScalar && n.isNull() {
				return nil, g.errorAt(item, "entry %d is empty", i)
			}
			return nil, g.errorAt(item, "entry %d is not a map", i)
		}
		r, ok := g.p.record(&n)
		if !ok {
			return nil, errors.New(g.p.reason())
		}
		if g.p.invalid != "" {
			g.p.why, g.p.whyAt = g.p.invalid, g.p.invalidAt
			return nil, errors.New(g.p.reason() + " (the Python broker cannot read this file either)")
		}
		r.plainKeys = g.plainKeys
		recs = append(recs, r)
	}
	return recs, nil
}

// knownTags are the tags a node may carry explicitly.
var knownTags = map[string]bool{
	"!!str": true, "!!int": true, "!!float": true, "!!bool": true, "!!null": true,
	"!!timestamp": true, "!!binary": true, "!!map": true, "!!seq": true,
}

func (g *generalReader) checkTag(n *yaml.Node) error {
	if n.Style&yaml.TaggedStyle == 0 {
		return nil
	}
	if !knownTags[n.ShortTag()] {
		return g.errorAt(n, "the tag %s, which this library does not read", n.Tag)
	}
	want := map[yaml.Kind]string{yaml.MappingNode: "!!map", yaml.SequenceNode: "!!seq"}[n.Kind]
	if n.Kind != yaml.ScalarNode && n.ShortTag() != want || n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!map" || n.ShortTag() == "!!seq") {
		return g.errorAt(n, "the tag %s on a value that is not one", n.Tag)
	}
	return nil
}

// node turns n into a fast-reader node, its children into the arena.
func (g *generalReader) node(n *yaml.Node, isKey bool) (fnode, error) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if err := g.checkTag(n); err != nil {
		return fnode{}, err
	}
	at := g.offset(n)
	switch n.Kind {
	case yaml.ScalarNode:
		f := fnode{kind: fScalar, text: n.Value, at: at}
		tagged := n.Style&yaml.TaggedStyle != 0
		quoted := n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0
		switch {
		case tagged && n.ShortTag() == "!!str":
			f.quoted = true
		case tagged && n.ShortTag() == "!!binary":
			f.binary = true
		case tagged && n.ShortTag() == "!!null":
			// ruamel.yaml (and PyYAML) construct None whatever the text.
			f.text = "null"
		case tagged && n.ShortTag() == "!!bool":
			// Both libraries look the text up in YAML 1.1's words.
			switch strings.ToLower(n.Value) {
			case "true", "yes", "on":
				f.text = "true"
			case "false", "no", "off":
				f.text = "false"
			default:
				return fnode{}, g.errorAt(n, "%s %q is not one", n.Tag, n.Value)
			}
		case tagged:
			// !!int "12" and the like: the text must be one. (ruamel.yaml
			// 0.17 refuses !!float on text without a point or an exponent,
			// "1" or "022", which PyYAML reads as 1.0: refused here too.)
			want := map[string]int{"!!int": tagInt, "!!float": tagFloat, "!!bool": tagBool, "!!null": tagNull, "!!timestamp": tagTimestamp}[n.ShortTag()]
			if tag, _ := resolvePlain(n.Value); tag != want {
				return fnode{}, g.errorAt(n, "%s %q is not one", n.Tag, n.Value)
			}
		default:
			f.quoted = quoted
		}
		if isKey {
			if !f.quoted && !f.binary && plainTag(n.Value) != tagStr {
				g.keyNotText = true
			}
			if !f.quoted && n.Value == "<<" {
				return fnode{}, g.errorAt(n, "a merge key (<<), which this library does not read")
			}
			f.quoted = true
		}
		return f, nil
	case yaml.MappingNode:
		if isKey {
			return fnode{}, g.errorAt(n, "a key that is a map or a list")
		}
		base := len(g.p.stack)
		seen := make(map[string]bool, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			g.keyNotText = false
			k, err := g.node(n.Content[i], true)
			if err != nil {
				return fnode{}, err
			}
			g.path = append(g.path, k.text)
			if g.keyNotText {
				if g.plainKeys == nil {
					g.plainKeys = make(map[string]bool)
				}
				g.plainKeys[keyPlace(g.path)] = true
			}
			same := k.text
			if kn := n.Content[i]; kn.Kind == yaml.ScalarNode && kn.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle|yaml.TaggedStyle) == 0 {
				if tag, v := resolvePlain(k.text); tag != tagStr {
					same = fmt.Sprintf("\x00%d:%v", tag, v) // null: and ~: are one key
				}
			}
			if seen[same] {
				return fnode{}, g.errorAt(n.Content[i], "the key %q twice in one map (ruamel.yaml refuses it)", k.text)
			}
			seen[same] = true
			v, err := g.node(n.Content[i+1], false)
			if err != nil {
				return fnode{}, err
			}
			g.path = g.path[:len(g.path)-1]
			g.p.stack = append(g.p.stack, k, v)
		}
		return g.p.collection(fMap, int(at), base), nil
	case yaml.SequenceNode:
		if isKey {
			return fnode{}, g.errorAt(n, "a key that is a map or a list")
		}
		base := len(g.p.stack)
		for i, c := range n.Content {
			g.path = append(g.path, strconv.Itoa(i))
			v, err := g.node(c, false)
			if err != nil {
				return fnode{}, err
			}
			g.path = g.path[:len(g.path)-1]
			g.p.stack = append(g.p.stack, v)
		}
		return g.p.collection(fSeq, int(at), base), nil
	}
	return fnode{}, g.errorAt(n, "an unexpected YAML node")
}

// generalRaws cuts a file the general reader read into its records'
// bytes, so that a write keeps the bytes of every record it does not
// touch: at each line that starts an item of the top-level list (at the
// column of the first item's "-"). A piece is kept only when it decodes
// alone to what the whole file gave for that record, or, for a piece
// holding an alias of other records' anchors (links[i].Uses), when it
// decodes to that record after the kept pieces of the records it uses,
// theirs in turn, in the file's order (the store then keeps it only while
// they precede it with their bytes); raws[i] is nil for the others, and
// all are nil when the file cannot be cut so. In a file whose list is
// indented the pieces keep their indentation, and the store indents the
// records it writes anew as much (ListIndent).
func generalRaws(name string, data []byte, recs []*Record, links []Link) [][]byte {
	raws := make([][]byte, len(recs))
	if len(recs) == 0 {
		return raws
	}
	starts, _ := itemStarts(data)
	if len(starts) != len(recs) {
		return raws
	}
	starts[0] = 0 // what comes before the first item is part of it
	// A document end marker ("...") after the last item is not part of
	// it: records written after it would be in no document.
	data = data[:endBeforeDocumentEnd(data, starts[len(starts)-1])]
	index := make(map[*Record]int, len(recs))
	for i, r := range recs {
		index[r] = i
	}
	for i := range recs {
		end := len(data)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		piece := data[starts[i]:end:end]
		if links != nil && len(links[i].Uses) > 0 {
			if keepsAfterUsed(name, piece, i, recs, raws, links, index) {
				raws[i] = piece
			}
			continue
		}
		got, _, err := decodeGeneral(name, piece)
		if err != nil || len(got) != 1 || !sameRecord(got[0], recs[i]) {
			continue
		}
		raws[i] = piece
	}
	return raws
}

// keepsAfterUsed reports whether piece, record i's bytes, decodes to
// recs[i] after the kept bytes of the records it uses (and those they
// use), in the file's order.
func keepsAfterUsed(name string, piece []byte, i int, recs []*Record, raws [][]byte, links []Link, index map[*Record]int) bool {
	need := map[int]bool{}
	var add func(k int) bool
	add = func(k int) bool {
		for _, u := range links[k].Uses {
			j, ok := index[u.Rec]
			if !ok || j >= k || raws[j] == nil {
				return false
			}
			if !need[j] {
				need[j] = true
				if !add(j) {
					return false
				}
			}
		}
		return true
	}
	if !add(i) {
		return false
	}
	var doc []byte
	for j := range i {
		if need[j] {
			doc = append(doc, raws[j]...)
			if !bytes.HasSuffix(doc, []byte("\n")) {
				return false
			}
		}
	}
	doc = append(doc, piece...)
	got, _, err := decodeGeneral(name, doc)
	return err == nil && len(got) == len(need)+1 && sameRecord(got[len(need)], recs[i])
}

// itemStarts returns the offsets of the lines that start an item of the
// top-level block list: the indent of the first such line, then "-" and
// a space or the line's end.
func itemStarts(data []byte) (starts []int, indent int) {
	indent = -1
	for p := 0; p < len(data); {
		end := bytes.IndexByte(data[p:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += p
		}
		line := bytes.TrimSuffix(data[p:end], []byte("\r"))
		if p == 0 {
			line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		}
		sp := len(line) - len(bytes.TrimLeft(line, " "))
		rest := line[sp:]
		isDash := len(rest) > 0 && rest[0] == '-' && (len(rest) == 1 || rest[1] == ' ' || rest[1] == '\t')
		if isDash && (indent < 0 || sp == indent) {
			if indent < 0 {
				indent = sp
			}
			starts = append(starts, p)
		}
		p = end + 1
	}
	return starts, indent
}

// endBeforeDocumentEnd returns where the last item, which starts at
// from, ends: before a "..." line, or at the end of data.
func endBeforeDocumentEnd(data []byte, from int) int {
	for p := from; p < len(data); {
		end := bytes.IndexByte(data[p:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += p
		}
		line := bytes.TrimRight(data[p:end], " \r")
		if bytes.Equal(line, []byte("...")) || bytes.HasPrefix(line, []byte("... ")) {
			return p
		}
		p = end + 1
	}
	return len(data)
}

// sameRecord reports whether a and b hold the same values: the same
// encoding, or, for records that cannot be encoded, deep equality.
func sameRecord(a, b *Record) bool {
	ea, erra := encodeRecord(a)
	eb, errb := encodeRecord(b)
	if erra == nil && errb == nil {
		return bytes.Equal(ea, eb)
	}
	return reflect.DeepEqual(a, b)
}

// keyPlace names a key's place in a record: the keys and list indexes
// leading to it, and the key, as the encoder's path holds them.
func keyPlace(path []string) string { return strings.Join(path, "\x00") }

// ListIndent is the column of the first item of the file's top-level
// list (0 for a file in this library's form, or with no list): records
// written anew into the file are indented as much (IndentRecord), so that
// they join the items kept as read.
func ListIndent(data []byte) int {
	for p := 0; p < len(data); {
		end := bytes.IndexByte(data[p:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += p
		}
		line := bytes.TrimSuffix(data[p:end], []byte("\r"))
		if p == 0 {
			line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		}
		rest := bytes.TrimLeft(line, " ")
		switch {
		case len(rest) == 0 || rest[0] == '#' || rest[0] == '%' || bytes.HasPrefix(rest, []byte("---")):
		case rest[0] == '-' && (len(rest) == 1 || rest[1] == ' ' || rest[1] == '\t'):
			return len(line) - len(rest)
		default:
			return 0
		}
		p = end + 1
	}
	return 0
}

// IndentRecord returns a record's bytes as EncodeRecord gives them,
// indented by n spaces (its empty lines left empty).
func IndentRecord(raw []byte, n int) []byte {
	pad := bytes.Repeat([]byte(" "), n)
	out := make([]byte, 0, len(raw)+n*bytes.Count(raw, []byte("\n"))+n)
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line = raw[:i+1]
		}
		raw = raw[len(line):]
		if len(line) > 0 && line[0] != '\n' {
			out = append(out, pad...)
		}
		out = append(out, line...)
	}
	return out
}
