package settings

import (
	"fmt"
	"sort"
	"strings"
)

// section is a provider section split into its own keys and its instances.
type section struct {
	name      string         // as written in the file
	values    map[string]any // the section's keys, without instances:
	instances []instRef      // in file order
	def       int            // index of the default instance; -1 without instances
}

// nonProvider are top-level maps that are not provider sections.
var nonProvider = []string{"ssh", "nicks", "logging"}

func isProviderName(k string) bool {
	for _, n := range nonProvider {
		if strings.EqualFold(k, n) {
			return false
		}
	}
	return true
}

// knownProviders are the project's provider sections: if present they must
// be maps (or empty), checked at Load rather than at first checkout.
var knownProviders = []string{"AnsibleTower", "Container", "Local"}

// parseSection validates a provider section's instances and finds the
// default one.
func (m *meta) parseSection(name string, v any) (*section, error) {
	s := &section{name: name, values: map[string]any{}, def: -1}
	if v == nil {
		return s, nil
	}
	sm, ok := v.(map[string]any)
	if !ok {
		return nil, m.errAt(name, name, "expected a map of provider settings, got %s %s", typeName(v), show(name, v))
	}
	ik, hasInst := findKey(sm, "instances")
	for k, x := range sm {
		if !hasInst || k != ik {
			s.values[k] = x
		}
	}
	if !hasInst || sm[ik] == nil {
		return s, nil
	}
	raw := joinPath(name, ik)
	shown := joinPath(name, "instances")
	switch x := sm[ik].(type) {
	case []any:
		for i, el := range x {
			p := fmt.Sprintf("%s[%d]", raw, i)
			em, ok := el.(map[string]any)
			if !ok || len(em) != 1 {
				what := typeName(el)
				if ok {
					what = fmt.Sprintf("a map of %d keys", len(em))
				}
				return nil, m.errAt(p, fmt.Sprintf("%s[%d]", shown, i), "each list entry must be one `name: {settings}` pair, got %s", what)
			}
			for iname, iv := range em {
				in, err := m.instance(raw, shown, fmt.Sprintf("%s.%s", p, iname), iname, iv)
				if err != nil {
					return nil, err
				}
				s.instances = append(s.instances, in)
			}
		}
	case map[string]any:
		for _, iname := range sortedKeys(x) {
			in, err := m.instance(raw, shown, joinPath(raw, iname), iname, x[iname])
			if err != nil {
				return nil, err
			}
			s.instances = append(s.instances, in)
		}
		// File order reads better in messages and matches the list form.
		sort.SliceStable(s.instances, func(i, j int) bool {
			_, li := m.where(s.instances[i].raw)
			_, lj := m.where(s.instances[j].raw)
			return li < lj
		})
	default:
		return nil, m.errAt(raw, shown, "expected a list of `- name: {settings}` entries or a map of `name: {settings}`, got %s %s", typeName(x), show(shown, x))
	}
	if len(s.instances) == 0 {
		return s, nil
	}
	names := make([]string, len(s.instances))
	seen := map[string]string{}
	var marked []string
	for i, in := range s.instances {
		names[i] = in.name
		if prev, dup := seen[strings.ToLower(in.name)]; dup {
			return nil, m.errAt(raw, shown, "instance %q is defined twice (as %q and %q)", in.name, prev, in.name)
		}
		seen[strings.ToLower(in.name)] = in.name
		dk, ok := findKey(in.m, "default")
		if !ok {
			continue
		}
		p := joinPath(in.shown, dk)
		b, ok := toBool(in.m[dk])
		if !ok {
			return nil, m.errAt(joinPath(in.raw, dk), p, "%s is not a boolean", show(p, in.m[dk]))
		}
		if b {
			marked = append(marked, in.name)
			s.def = i
		}
	}
	switch {
	case len(s.instances) == 1:
		s.def = 0
	case len(marked) == 0:
		return nil, m.errAt(raw, shown, "no instance marked default: true (%s); exactly one must be", strings.Join(names, ", "))
	case len(marked) > 1:
		return nil, m.errAt(raw, shown, "%d instances marked default: true (%s); exactly one must be", len(marked), strings.Join(marked, ", "))
	}
	return s, nil
}

// instance checks one instance's settings (a map, or empty).
func (m *meta) instance(raw, shown, p, name string, v any) (instRef, error) {
	ref := instRef{name: name, raw: p, shown: joinPath(shown, name)}
	switch x := v.(type) {
	case nil:
		ref.m = map[string]any{}
	case map[string]any:
		ref.m = x
	default:
		return ref, m.errAt(p, ref.shown, "expected a map of instance settings, got %s %s", typeName(v), show(ref.shown, v))
	}
	return ref, nil
}

// values merges the section's keys with instance i's (instance keys win,
// matched ignoring case); default: is dropped, it only picks the instance.
func (s *section) merged(i int) map[string]any {
	out := deepCopy(s.values).(map[string]any)
	if i < 0 {
		return out
	}
	in := s.instances[i].m
	for _, k := range sortedKeys(in) {
		if strings.EqualFold(k, "default") {
			continue
		}
		if old, ok := findKey(out, k); ok {
			delete(out, old)
		}
		out[k] = deepCopy(in[k])
	}
	return out
}

// toBool reads a YAML 1.1 or 1.2 boolean: the Python broker's files say
// True/False, some say yes/no.
func toBool(v any) (bool, bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case int:
		if x == 0 || x == 1 {
			return x == 1, true
		}
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "true", "yes", "on", "1":
			return true, true
		case "false", "no", "off", "0":
			return false, true
		}
	}
	return false, false
}

// deepCopy copies maps and lists so callers can't change the settings.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	case []byte:
		return append([]byte(nil), x...)
	default:
		return v
	}
}
