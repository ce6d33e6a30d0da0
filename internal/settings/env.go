package settings

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// envPrefix starts every override variable, as in the Python broker
// (dynaconf's BROKER_ prefix).
const envPrefix = "BROKER_"

// override is one BROKER_<Section>__<key>[__<subkey>…]=value variable.
type override struct {
	name  string   // the variable's name
	parts []string // Section, key, subkeys
	value any
}

// overrides picks the override variables out of environ and reads their
// values (parseEnvValue). Names without "__" (BROKER_DIRECTORY,
// BROKER_TEST_REQUIRE…) are not overrides; names with an empty part give a
// warning; a value a dynaconf converter can't read is an error. The result
// is ordered by depth, so a more specific variable
// (…__instances__testing__token) is applied after, and so wins over, a
// broader one (…__token); equal depths keep environ's order, so a later
// duplicate wins.
func (m *meta) overrides(environ []string) (out []override, warnings []string, err error) {
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, envPrefix) || name == "BROKER_DIRECTORY" {
			continue
		}
		rest := name[len(envPrefix):]
		if !strings.Contains(rest, "__") {
			continue
		}
		parts := strings.Split(rest, "__")
		bad := false
		for _, p := range parts {
			if p == "" {
				bad = true
			}
		}
		if bad {
			warnings = append(warnings, fmt.Sprintf("settings: ignoring environment variable %s: an empty key between \"__\" separators", name))
			continue
		}
		path := strings.Join(parts, ".")
		v, warn, problem := parseEnvValue(value, secretKey(parts[len(parts)-1]))
		if problem != "" {
			return nil, nil, &Error{File: m.file, Env: name, Path: path, Msg: fmt.Sprintf("%s cannot be read: %s", show(path, value), problem)}
		}
		if warn != "" {
			warnings = append(warnings, fmt.Sprintf("settings: environment variable %s: %s", name, warn))
		}
		out = append(out, override{name: name, parts: parts, value: v})
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i].parts) < len(out[j].parts) })
	return out, warnings, nil
}

// instanceFlags finds the override_envars: flags that overrides set on
// instances (BROKER_<Section>__instances__<name>__override_envars), keyed
// by lower-case section and instance name, so apply knows them before the
// deeper variables are applied.
func instanceFlags(ovs []override) map[[2]string]any {
	flags := map[[2]string]any{}
	for _, o := range ovs {
		if len(o.parts) == 4 && strings.EqualFold(o.parts[1], "instances") && strings.EqualFold(o.parts[3], "override_envars") {
			flags[[2]string{strings.ToLower(o.parts[0]), strings.ToLower(o.parts[2])}] = o.value
		}
	}
	return flags
}

// findKey finds name among m's keys ignoring case: the exact spelling if
// present, else the first match in sorted order (so the choice is stable).
func findKey[V any](m map[string]V, name string) (string, bool) {
	if _, ok := m[name]; ok {
		return name, true
	}
	found, ok := "", false
	for k := range m {
		if strings.EqualFold(k, name) && (!ok || k < found) {
			found, ok = k, true
		}
	}
	return found, ok
}

// apply sets one override in data. The section keeps the variable's
// spelling when it is new; other new keys are lower-cased. A section-level
// key (BROKER_AnsibleTower__token) also replaces the same key in each
// instance that sets its own, since env wins over the file, as in the
// Python broker (which loads the environment again over the chosen
// instance's keys), except in an instance that says override_envars: true:
// its own keys win over the environment's section-level ones, as in the
// Python broker. The instance flags default: and override_envars: are not
// shared. flags holds override_envars: values set by variables not yet
// applied (instanceFlags).
func (m *meta) apply(data map[string]any, o override, flags map[[2]string]any) error {
	sec, ok := findKey(data, o.parts[0])
	if !ok {
		sec = o.parts[0]
	}
	v, err := m.set(data[sec], sec, sec, o.parts[1:], o)
	if err != nil {
		return err
	}
	data[sec] = v
	secMap, ok := data[sec].(map[string]any)
	if !ok || strings.EqualFold(o.parts[1], "instances") || flagKey(o.parts[1]) {
		return nil
	}
	ik, ok := findKey(secMap, "instances")
	if !ok {
		return nil
	}
	for _, in := range instanceMaps(secMap[ik], joinPath(sec, ik)) {
		if _, has := findKey(in.m, o.parts[1]); !has {
			continue
		}
		flag, ok := flags[[2]string{strings.ToLower(sec), strings.ToLower(in.name)}]
		if !ok {
			if k, has := findKey(in.m, "override_envars"); has {
				flag = in.m[k]
			}
		}
		if keep, _ := toBool(flag); keep {
			continue
		}
		if _, err := m.set(in.m, in.raw, in.shown, o.parts[1:], o); err != nil {
			return err
		}
	}
	return nil
}

// instRef is an instance's map with its raw and shown key paths.
type instRef struct {
	name, raw, shown string
	m                map[string]any
}

// instanceMaps lists the instances of an instances: value in either form,
// skipping malformed entries (validation reports those).
func instanceMaps(v any, raw string) []instRef {
	var out []instRef
	switch x := v.(type) {
	case []any:
		for i, el := range x {
			em, ok := el.(map[string]any)
			if !ok || len(em) != 1 {
				continue
			}
			for name, iv := range em {
				if im, ok := iv.(map[string]any); ok {
					out = append(out, instRef{name, fmt.Sprintf("%s[%d].%s", raw, i, name), joinPath(raw, name), im})
				}
			}
		}
	case map[string]any:
		for _, name := range sortedKeys(x) {
			if im, ok := x[name].(map[string]any); ok {
				out = append(out, instRef{name, joinPath(raw, name), joinPath(raw, name), im})
			}
		}
	}
	return out
}

// set puts o.value at parts below cur (found at raw path raw, shown as
// shown) and returns cur updated (a new map when cur was null).
func (m *meta) set(cur any, raw, shown string, parts []string, o override) (any, error) {
	if len(parts) == 0 {
		m.origin[raw] = o.name
		return deepCopy(o.value), nil
	}
	key := parts[0]
	switch c := cur.(type) {
	case nil:
		return m.set(map[string]any{}, raw, shown, parts, o)
	case map[string]any:
		k, ok := findKey(c, key)
		if !ok {
			k = strings.ToLower(key)
		}
		v, err := m.set(c[k], joinPath(raw, k), joinPath(shown, k), parts[1:], o)
		if err != nil {
			return nil, err
		}
		c[k] = v
		return c, nil
	case []any:
		// A list of one-key maps (the list form of instances:) is addressed
		// by the entries' names; any other list by index.
		named := true
		for _, el := range c {
			if em, ok := el.(map[string]any); !ok || len(em) != 1 {
				named = false
			}
		}
		if named {
			for i, el := range c {
				em := el.(map[string]any)
				k, ok := findKey(em, key)
				if !ok {
					continue
				}
				v, err := m.set(em[k], fmt.Sprintf("%s[%d].%s", raw, i, k), joinPath(shown, k), parts[1:], o)
				if err != nil {
					return nil, err
				}
				em[k] = v
				return c, nil
			}
			k := strings.ToLower(key)
			i := len(c)
			v, err := m.set(nil, fmt.Sprintf("%s[%d].%s", raw, i, k), joinPath(shown, k), parts[1:], o)
			if err != nil {
				return nil, err
			}
			return append(c, map[string]any{k: v}), nil
		}
		i, err := strconv.Atoi(key)
		if err != nil || i < 0 || i >= len(c) {
			return nil, m.envErr(o, shown, "is a list of %d items; %q is neither an entry name nor an index", len(c), key)
		}
		p := fmt.Sprintf("%s[%d]", raw, i)
		v, err := m.set(c[i], p, fmt.Sprintf("%s[%d]", shown, i), parts[1:], o)
		if err != nil {
			return nil, err
		}
		c[i] = v
		return c, nil
	default:
		return nil, m.envErr(o, shown, "is %s, not a map, so it has no key %q", got(shown, cur), key)
	}
}

func (m *meta) envErr(o override, path, format string, args ...any) *Error {
	return &Error{File: m.file, Env: o.name, Path: path, Msg: fmt.Sprintf(format, args...)}
}
