package settings

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxNodes bounds the values built from one document, so a file of nested
// aliases ("billion laughs") fails instead of eating the memory.
const maxNodes = 200_000

// maxDepth bounds nesting: settings are shallow, and each level's key path
// is kept, so a very deep document would cost memory quadratic in depth.
const maxDepth = 64

// converter turns a yaml.Node tree into plain Go values (map[string]any,
// []any, scalars), recording each key's line.
type converter struct {
	m     *meta
	nodes int
	depth int
	// expanding holds the aliased nodes being converted, to refuse an
	// alias inside its own anchor (an infinite value).
	expanding map[*yaml.Node]bool
	track     bool // record lines (false for env values)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseFile parses a settings document into its top-level map.
func parseFile(m *meta, data []byte) (map[string]any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		e := &Error{File: m.file, Msg: strings.TrimPrefix(err.Error(), "yaml: "), Err: err}
		if sm := yamlLine.FindStringSubmatch(err.Error()); sm != nil {
			e.Line, _ = strconv.Atoi(sm[1])
			e.Msg = sm[2]
		}
		return nil, e
	}
	c := &converter{m: m, track: true}
	v, err := c.value(&doc, "")
	if err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case nil:
		return map[string]any{}, nil
	case map[string]any:
		return x, nil
	default:
		line := doc.Line
		if len(doc.Content) > 0 {
			line = doc.Content[0].Line
		}
		return nil, &Error{File: m.file, Line: line, Msg: fmt.Sprintf("the top level must be a map of settings, got %s", TypeName(v))}
	}
}

func (c *converter) errf(n *yaml.Node, path, format string, args ...any) error {
	e := &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
	if c.m != nil {
		e.File = c.m.file
	}
	if c.track && n != nil {
		e.Line = n.Line
	}
	return e
}

func (c *converter) record(path string, line int) {
	if c.track && c.m != nil && path != "" {
		if _, ok := c.m.lines[path]; !ok {
			c.m.lines[path] = line
		}
	}
}

// value converts n (at raw key path) to a Go value.
func (c *converter) value(n *yaml.Node, path string) (any, error) {
	c.nodes++
	if c.nodes > maxNodes {
		return nil, c.errf(n, path, "more than %d values (aliases expanding too much?)", maxNodes)
	}
	if c.depth >= maxDepth {
		return nil, c.errf(n, path, "nested deeper than %d levels", maxDepth)
	}
	c.depth++
	defer func() { c.depth-- }()
	switch n.Kind {
	case 0:
		return nil, nil
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return c.value(n.Content[0], path)
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil, c.errf(n, path, "unknown alias %q", n.Value)
		}
		if c.expanding[n.Alias] {
			return nil, c.errf(n, path, "alias *%s is used inside its own anchor", n.Value)
		}
		if c.expanding == nil {
			c.expanding = map[*yaml.Node]bool{}
		}
		c.expanding[n.Alias] = true
		defer delete(c.expanding, n.Alias)
		return c.value(n.Alias, path)
	case yaml.ScalarNode:
		return c.scalar(n, path)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			c.record(p, item.Line)
			v, err := c.value(item, p)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		return c.mapping(n, path)
	}
	return nil, c.errf(n, path, "unsupported YAML node")
}

// scalar decodes a scalar the way yaml.v3 does for an interface{}, except
// that a plain (unquoted) None is null. That is not what the Python broker
// reads (PyYAML gives the text "None", which Python code then takes as a
// set value), but it is what its users meant by it: its example files
// wrote "host_port: None" for "no port".
func (c *converter) scalar(n *yaml.Node, path string) (any, error) {
	if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 &&
		n.Value == "None" && (n.Tag == "" || n.Tag == "!!str") {
		return nil, nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, c.errf(n, path, "value %s cannot be read as %s", show(path, n.Value), n.Tag)
	}
	return v, nil
}

// mapping converts a YAML map, applying merge keys (<<) and refusing
// duplicate keys (a likely mistake the Python loader would hide).
func (c *converter) mapping(n *yaml.Node, path string) (any, error) {
	out := make(map[string]any, len(n.Content)/2)
	keyLine := map[string]int{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if kn.Kind == yaml.AliasNode && kn.Alias != nil {
			kn = kn.Alias
		}
		if kn.Kind != yaml.ScalarNode {
			return nil, c.errf(kn, path, "map keys must be plain values, not a list or a map")
		}
		if kn.Tag == "!!merge" {
			merges = append(merges, vn)
			continue
		}
		key := kn.Value
		p := joinPath(path, key)
		if l, dup := keyLine[key]; dup {
			if c.track {
				return nil, c.errf(kn, p, "duplicate key (first at line %d)", l)
			}
			return nil, c.errf(kn, p, "duplicate key")
		}
		keyLine[key] = kn.Line
		c.record(p, kn.Line)
		v, err := c.value(vn, p)
		if err != nil {
			return nil, err
		}
		out[key] = v
	}
	// Explicit keys win over merged ones; among merged maps the first wins.
	for _, mn := range merges {
		v, err := c.value(mn, path)
		if err != nil {
			return nil, err
		}
		srcs, ok := v.([]any)
		if !ok {
			srcs = []any{v}
		}
		for _, src := range srcs {
			sm, ok := src.(map[string]any)
			if !ok {
				return nil, c.errf(mn, path, "a merge key (<<) needs a map or a list of maps, got %s", TypeName(src))
			}
			for k, x := range sm {
				if _, ok := out[k]; !ok {
					out[k] = x
				}
			}
		}
	}
	return out, nil
}
