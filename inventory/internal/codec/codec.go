package codec

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"

	"go.yaml.in/yaml/v3"
)

// ErrCorrupt is returned (wrapped) when the inventory file cannot be parsed.
var ErrCorrupt = errors.New("inventory file is corrupt")

// ErrLimit is returned (wrapped, with ErrCorrupt) for an inventory file
// over one of the bounds that keep reading any file cheap: its size, the
// number of its values, their nesting, or how much its aliases expand.
// Such a file is not read, and so never written either.
var ErrLimit = errors.New("over a safety limit")

// Bounds on an inventory file, which keep the memory to read any file
// under about 0.7 GB. A real one holds a few hundred records of a few
// hundred bytes; the bounds leave room for 150,000 (122,000 records are
// 55 MB, 4.5 million values, read in 0.25 GB and 1 s).
const (
	// maxFileSize bounds a file in the form this package writes.
	maxFileSize = 64 << 20
	// maxValues bounds the values (keys, scalars, lists and maps) in a
	// file, aliases expanded: 50 bytes each once read, 100 at most.
	maxValues = 6_000_000
	// maxRecordValues bounds the values of one record the fast reader
	// reads (a larger record is left to yaml.v3, whose bounds apply).
	maxRecordValues = 200_000
	// maxGeneralSize bounds a file in any other form, which yaml.v3
	// reads in about 25 times its size, 70 times for a file of nothing
	// but empty lists.
	maxGeneralSize = 4 << 20
	// maxDepth bounds the nesting of lists and maps.
	maxDepth = 100
	// minAliasBudget is how many values aliases may add to any file;
	// a larger file may add as many as it holds itself.
	minAliasBudget = 100_000
)

// Parse decodes an inventory file's content; name is used in errors.
// An empty file, "[]" and "null" are empty inventories.
func Parse(name string, data []byte) ([]*Record, error) {
	recs, _, err := decodeFile(name, data)
	return recs, err
}

// decodeFile is Parse that also returns, when the file is a plain block
// list of independent items (no anchors or aliases, nothing but comments
// between items), raw[i]: the bytes of record i, a "- …" block ending in a
// line break that alone decodes to recs[i]. Any of them concatenated, in
// any order, form an inventory file; comments between items are part of
// the item before them (those before the first, of the first). raw is nil
// when the file is in another form.
func decodeFile(name string, data []byte) (recs []*Record, raw [][]byte, err error) {
	recs, raw, links, err := decodeFileLinked(name, data)
	for i := range links {
		if len(links[i].Uses) > 0 {
			raw[i] = nil
		}
	}
	return recs, raw, err
}

// decodeFileLinked is decodeFile that also keeps the bytes of a record
// using an alias of other records' anchors, when they decode to it after
// the bytes of those records; links[i] then says which records and anchor
// names record i uses, and which anchors it holds (links is nil for a file
// without anchors or aliases).
func decodeFileLinked(name string, data []byte) (recs []*Record, raw [][]byte, links []Link, err error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, [][]byte{}, nil, nil
	}
	if len(data) > maxFileSize {
		return nil, nil, nil, limitError(name, "it is %s; an inventory file may hold at most %s", size(len(data)), size(maxFileSize))
	}
	recs, raw, why, invalid := fastDecode(data)
	if invalid {
		return nil, nil, nil, fmt.Errorf("%w: %s: %s (the Python broker cannot read this file either)", ErrCorrupt, name, why)
	}
	if why == "" {
		if len(recs) == 0 {
			recs = nil
		}
		return recs, raw, nil, nil
	}
	if len(data) > maxGeneralSize {
		return nil, nil, nil, limitError(name, "it is %s and not in the plain form this library writes (%s); such a file may hold at most %s", size(len(data)), why, size(maxGeneralSize))
	}
	recs, links, err = decodeGeneral(name, data)
	if err != nil {
		return nil, nil, nil, err
	}
	return recs, generalRaws(name, data, recs, links), links, nil
}

// DecodeFile is decodeFile: the records, and the bytes of each (nil for
// a record whose bytes do not stand alone).
func DecodeFile(name string, data []byte) ([]*Record, [][]byte, error) {
	return decodeFile(name, data)
}

// DecodeFileLinked is decodeFileLinked: the records, the bytes of each
// (nil for a record whose bytes do not stand alone, nor after those of
// the records whose anchors it uses), and the records' links (nil when
// the file has no anchors or aliases).
func DecodeFileLinked(name string, data []byte) ([]*Record, [][]byte, []Link, error) {
	return decodeFileLinked(name, data)
}

// Link ties a record read from a file, as its bytes stand, to the anchors
// they hold and to the anchors of other records they use (aliases of the
// Python broker's shared _broker_args: "_broker_args: *id001"). Its bytes
// read as the record only while each record it uses precedes it with its
// own bytes, and no record between them holds an anchor of the same name.
type Link struct {
	Anchors []string // the anchors the record's bytes hold
	Uses    []Use    // the aliases in them of other records' anchors
}

// Use is an alias in one record of an anchor in another.
type Use struct {
	Rec  *Record // the record holding the anchor
	Name string  // the anchor's name
}

// EncodeRecord is one record's bytes, as Marshal writes it.
func EncodeRecord(r *Record) ([]byte, error) { return encodeRecord(r) }

// encodeRecord encodes one record as Marshal does: Marshal(recs) is the
// concatenation of encodeRecord(r) for r in recs.
func encodeRecord(r *Record) ([]byte, error) {
	return appendRecord(nil, r)
}

func limitError(name, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %w: %s", ErrCorrupt, name, ErrLimit, fmt.Sprintf(format, args...))
}

func size(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d bytes (%.1f MiB)", n, float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// checkBounds measures the values that decoding doc would build, aliases
// expanded, and refuses a tree nested deeper than maxDepth or whose
// aliases would add more than max(minAliasBudget, its own size) values.
func checkBounds(doc *yaml.Node) error {
	b := bounds{anchors: map[*yaml.Node]extent{}}
	if _, err := b.visit(doc, 0); err != nil {
		return err
	}
	if budget := max(minAliasBudget, b.nodes); b.aliased > budget {
		return fmt.Errorf("aliases (the first at line %d) expand to more than %d values; the file itself has %d", b.line, budget, b.nodes)
	}
	// The document node is not a value.
	if n := b.nodes - 1 + b.aliased; n > maxValues {
		return fmt.Errorf("%d values (aliases expanded); an inventory file may hold %d", n, maxValues)
	}
	return nil
}

// extent is the size and depth of a node's value, aliases expanded.
type extent struct {
	size, depth int
}

type bounds struct {
	anchors map[*yaml.Node]extent // anchored nodes visited
	nodes   int                   // nodes in the tree, aliases not followed
	aliased int                   // values added by aliases
	line    int                   // the first alias's
}

// saturate keeps counts of exponential aliases from overflowing.
const saturate = 1 << 50

// visit measures n at depth (the collections around it). Anchors come
// before their aliases in a document, so an alias's anchor has been
// measured, unless the alias is inside it.
func (b *bounds) visit(n *yaml.Node, depth int) (extent, error) {
	b.nodes++
	switch n.Kind {
	case yaml.AliasNode:
		e, ok := b.anchors[n.Alias]
		if !ok {
			return extent{}, fmt.Errorf("alias *%s at line %d is used inside its own anchor", n.Value, n.Line)
		}
		if depth+e.depth > maxDepth {
			return extent{}, fmt.Errorf("values nested deeper than %d levels (through alias *%s), line %d", maxDepth, n.Value, n.Line)
		}
		b.aliased = min(b.aliased+e.size, saturate)
		if b.line == 0 {
			b.line = n.Line
		}
		return e, nil
	case yaml.SequenceNode, yaml.MappingNode:
		depth++
		if depth > maxDepth {
			return extent{}, fmt.Errorf("values nested deeper than %d levels, line %d", maxDepth, n.Line)
		}
	}
	e := extent{size: 1}
	for _, c := range n.Content {
		ce, err := b.visit(c, depth)
		if err != nil {
			return extent{}, err
		}
		e.size = min(e.size+ce.size, saturate)
		e.depth = max(e.depth, ce.depth)
	}
	if n.Kind == yaml.SequenceNode || n.Kind == yaml.MappingNode {
		e.depth++
	}
	if n.Anchor != "" {
		b.anchors[n] = e
	}
	return e, nil
}

var yamlPrefix = regexp.MustCompile(`^yaml: (unmarshal errors:\n\s*)?`)

// yamlErrorText keeps yaml.v3's "line N: …" but drops its package prefix.
func yamlErrorText(err error) string {
	return yamlPrefix.ReplaceAllString(err.Error(), "")
}

// Marshal encodes records as an inventory file.
func Marshal(recs []*Record) ([]byte, error) {
	if len(recs) == 0 {
		return []byte("[]\n"), nil
	}
	var b []byte
	for _, r := range recs {
		var err error
		if b, err = appendRecord(b, r); err != nil {
			return nil, err
		}
	}
	return b, nil
}
