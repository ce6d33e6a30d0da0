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
	raw       string         // raw key path of instances:
	shown     string         // instances: as shown in messages
	marked    []int          // instances saying default: true, in file order
	badDef    *Error         // the first default: that is no boolean, if any
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

// BuiltinProviders are the providers this module implements (the names
// they register in package providers). Their sections are checked at Load
// when Options.Providers is nil; other sections (the Python broker's
// Foreman, Beaker, OpenStack…) are kept unchecked.
var BuiltinProviders = []string{"AnsibleTower", "Container", "Local", "SSH"}

// flagKey reports whether an instance key is one of the Python broker's
// instance flags (default:, override_envars:) rather than a setting for the
// provider: they are not shared by section-level overrides and not passed
// on in Instance.Values.
func flagKey(k string) bool {
	return strings.EqualFold(k, "default") || strings.EqualFold(k, "override_envars")
}

// parseSection checks a provider section's shape (a map; instances: a list
// of one-key maps or a map of maps; no instance twice; override_envars: a
// boolean) and notes which instances say default: true. Which one is the
// default is decided by defaultIndex, when a caller needs it: the Python
// broker never refuses a file over default:.
func (m *meta) parseSection(name string, v any) (*section, error) {
	s := &section{name: name, values: map[string]any{}}
	if v == nil {
		return s, nil
	}
	sm, ok := v.(map[string]any)
	if !ok {
		return nil, m.errAt(name, name, "expected a map of provider settings, got %s", got(name, v))
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
	s.raw, s.shown = raw, shown
	var err error
	if s.instances, err = m.parseInstances(raw, shown, sm[ik]); err != nil {
		return nil, err
	}
	if err := m.checkInstances(s); err != nil {
		return nil, err
	}
	return s, nil
}

// parseInstances reads the instances: of a section (at raw, as written;
// shown in messages), in file order.
func (m *meta) parseInstances(raw, shown string, v any) ([]instRef, error) {
	var out []instRef
	switch x := v.(type) {
	case []any:
		for i, el := range x {
			p := fmt.Sprintf("%s[%d]", raw, i)
			em, ok := el.(map[string]any)
			if !ok || len(em) != 1 {
				what := TypeName(el)
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
				out = append(out, in)
			}
		}
	case map[string]any:
		for _, iname := range sortedKeys(x) {
			in, err := m.instance(raw, shown, joinPath(raw, iname), iname, x[iname])
			if err != nil {
				return nil, err
			}
			out = append(out, in)
		}
		// File order reads better in messages, matches the list form and
		// is the order in which the Python broker looks for the default.
		sort.SliceStable(out, func(i, j int) bool {
			_, li := m.where(out[i].raw)
			_, lj := m.where(out[j].raw)
			return li < lj
		})
	default:
		return nil, m.errAt(raw, shown, "expected a list of `- name: {settings}` entries or a map of `name: {settings}`, got %s", got(shown, x))
	}
	return out, nil
}

// checkInstances refuses an instance defined twice or a bad
// override_envars, and notes which instances say default: true (a bad
// default: is kept in badDef, for defaultIndex).
func (m *meta) checkInstances(s *section) error {
	seen := map[string]string{}
	for i, in := range s.instances {
		if prev, dup := seen[strings.ToLower(in.name)]; dup {
			return m.errAt(s.raw, s.shown, "instance %q is defined twice (as %q and %q)", in.name, prev, in.name)
		}
		seen[strings.ToLower(in.name)] = in.name
		if _, err := m.instanceFlag(in, "override_envars"); err != nil {
			return err
		}
		b, err := m.instanceFlag(in, "default")
		if err != nil {
			if s.badDef == nil {
				s.badDef = err
			}
			continue
		}
		if b {
			s.marked = append(s.marked, i)
		}
	}
	return nil
}

// instanceFlag reads a boolean instance flag (false when unset or null).
func (m *meta) instanceFlag(in instRef, flag string) (bool, *Error) {
	k, ok := findKey(in.m, flag)
	if !ok || in.m[k] == nil {
		return false, nil
	}
	b, ok := toBool(in.m[k])
	if !ok {
		p := joinPath(in.shown, k)
		return false, m.errAt(joinPath(in.raw, k), p, "%s is not a boolean", show(p, in.m[k]))
	}
	return b, nil
}

// names lists the instances' names in file order.
func (s *section) names() []string {
	names := make([]string, len(s.instances))
	for i, in := range s.instances {
		names[i] = in.name
	}
	return names
}

// defaultIndex picks the instance a request that names none gets, as the
// Python broker does: none without instances (-1), the only one, else the
// first (in file order) that says default: true. Several marked is no
// error (warning says so at Load); none marked among several is an error
// here, when a request needs the default, rather than the Python broker's
// silent use of the section's own keys with no instance's, which leaves out
// what each instance sets (its URL, its credentials) and fails later and
// more obscurely.
func (m *meta) defaultIndex(s *section) (int, error) {
	switch {
	case len(s.instances) == 0:
		return -1, nil
	case len(s.instances) == 1:
		return 0, nil
	case s.badDef != nil:
		return -1, s.badDef
	case len(s.marked) == 0:
		return -1, m.errAt(s.raw, s.shown, "no instance marked default: true (%s); name one in the request (Request.Instance, or the argument %q) or mark one default: true",
			strings.Join(s.names(), ", "), s.name)
	}
	return s.marked[0], nil
}

// warning describes a default: marking the Python broker accepts but that is
// likely a mistake: several instances marked (the first wins), or none
// among several (a request must name one). "" when there is nothing to
// say. (A default: that is no boolean fails validate first.)
func (m *meta) warning(s *section) string {
	if len(s.instances) < 2 {
		return ""
	}
	var where string
	if _, line := m.where(s.raw); line > 0 {
		where = fmt.Sprintf(":%d", line)
	}
	switch {
	case len(s.marked) > 1:
		marked := make([]string, len(s.marked))
		for i, idx := range s.marked {
			marked[i] = s.instances[idx].name
		}
		return fmt.Sprintf("settings: %s%s: %s: %d instances marked default: true (%s); using the first, %s, as the Python broker does",
			m.file, where, s.shown, len(marked), strings.Join(marked, ", "), marked[0])
	case len(s.marked) == 0:
		return fmt.Sprintf("settings: %s%s: %s: no instance marked default: true (%s); requests for %s must name an instance",
			m.file, where, s.shown, strings.Join(s.names(), ", "), s.name)
	}
	return ""
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
		return ref, m.errAt(p, ref.shown, "expected a map of instance settings, got %s", got(ref.shown, v))
	}
	return ref, nil
}

// merged merges the section's keys with instance i's (instance keys win,
// matched ignoring case); default: and override_envars: are dropped, they
// are about choosing the instance and applying overrides.
func (s *section) merged(i int) map[string]any {
	out := deepCopy(s.values).(map[string]any)
	if i < 0 {
		return out
	}
	in := s.instances[i].m
	for _, k := range sortedKeys(in) {
		if flagKey(k) {
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
