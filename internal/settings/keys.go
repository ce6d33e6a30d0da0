package settings

import (
	"slices"
	"strings"
)

// sshSectionKeys are the keys of the ssh: section: ours (parseSSH) and the
// Python broker's that we accept and ignore (backend, host_ipv6,
// host_ipv4_fallback).
var sshSectionKeys = []string{
	"host_username", "host_password", "host_ssh_port", "host_ssh_key_filename",
	"connect_timeout", "ssh_timeout", "host_connection_timeout", "command_timeout",
	"insecure_ignore_host_key", "known_hosts",
	"backend", "host_ipv6", "host_ipv4_fallback",
}

// topLevelKeys are the top-level keys that are no provider section: ours
// and the Python broker's (its listing, logging and scenario settings).
var topLevelKeys = []string{
	"ssh", "nicks", "logging", "inventory_file",
	"host_username", "host_password", "host_ssh_port", "host_ssh_key_filename", "host_connection_timeout",
	"_version", "less_colors", "inventory_fields", "inventory_list_vars", "thread_limit", "scenario_import",
}

// pythonProviders are the Python broker's provider sections, which its
// users' files carry whether or not this program implements them.
var pythonProviders = []string{"AnsibleTower", "Beaker", "Container", "Foreman", "LibVirt", "OpenStack", "TestProvider"}

// instanceKeys are the keys every instance may hold besides its provider's.
var instanceKeys = []string{"default", "override_envars"}

// checkKeys warns of the keys nobody reads: in the sections of the
// providers in use whose keys are known (keys, by provider name), in their
// instances, in ssh:, and at the top level when a key is close to a known
// one (a top-level map far from every known name is another tool's
// provider section, kept silently, as are its keys). Each warning names
// the file and line, or the variable, and the closest known key.
func (s *Settings) checkKeys(used []string, keys map[string][]string) {
	m := s.meta
	for _, name := range used {
		kk, ok := findKey(keys, name)
		if !ok {
			continue
		}
		known := keys[kk]
		k, ok := providerSection(s.Data, name)
		if !ok {
			continue
		}
		sec, err := m.parseSection(k, s.Data[k])
		if err != nil {
			continue // validate reports it
		}
		for _, key := range sortedKeys(sec.values) {
			p := joinPath(k, key)
			s.unknownKey(p, p, key, known)
		}
		inKnown := slices.Concat(known, instanceKeys)
		for _, in := range sec.instances {
			for _, key := range sortedKeys(in.m) {
				s.unknownKey(joinPath(in.raw, key), joinPath(in.shown, key), key, inKnown)
			}
		}
	}
	if k, ok := findKey(s.Data, "ssh"); ok && !(k == "SSH" && containsFold(used, "SSH")) {
		if sm, ok := s.Data[k].(map[string]any); ok {
			for _, key := range sortedKeys(sm) {
				p := joinPath(k, key)
				s.unknownKey(p, p, key, sshSectionKeys)
			}
		}
	}
	names := slices.Concat(topLevelKeys, pythonProviders, BuiltinProviders, used)
	for name := range keys {
		names = append(names, name)
	}
	for _, key := range sortedKeys(s.Data) {
		if containsFold(names, key) {
			continue
		}
		if near := closest(key, names); near != "" {
			e := m.errAt(key, key, "unknown top-level key (did you mean %s?)", near)
			s.warnings = append(s.warnings, "settings: "+e.Error())
		}
	}
}

// unknownKey warns of key (at raw path raw, shown as shown) unless it is
// one of known.
func (s *Settings) unknownKey(raw, shown, key string, known []string) {
	if containsFold(known, key) {
		return
	}
	hint := "keys it takes: " + strings.Join(slices.Sorted(slices.Values(known)), ", ")
	if near := closest(key, known); near != "" {
		hint = "did you mean " + near + "?"
	}
	e := s.meta.errAt(raw, shown, "unknown key, ignored (%s)", hint)
	s.warnings = append(s.warnings, "settings: "+e.Error())
}

// providerSection finds the section of provider name: spelt as written,
// else in any case but that of a key that is no provider section (the
// global ssh: is not the SSH provider's).
func providerSection(data map[string]any, name string) (string, bool) {
	if _, ok := data[name]; ok {
		return name, true
	}
	for _, k := range sortedKeys(data) {
		if strings.EqualFold(k, name) && isProviderName(k) {
			return k, true
		}
	}
	return "", false
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}

// closest returns the candidate nearest to key (ignoring case), if near
// enough to be a misspelling: at most one edit for names of up to four
// letters, two up to eight, three beyond. "" when none is.
func closest(key string, candidates []string) string {
	best, bestD := "", -1
	for _, c := range candidates {
		d := distance(strings.ToLower(key), strings.ToLower(c))
		limit := 1
		switch n := max(len(key), len(c)); {
		case n > 8:
			limit = 3
		case n > 4:
			limit = 2
		}
		if d <= limit && (bestD < 0 || d < bestD || d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	return best
}

// distance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// bytes, one edit each.
func distance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// Instances returns every instance of provider's section (matched as
// Instance matches it, but never the global ssh: section), in file order,
// each with the section's keys under its own; one Instance with Name ""
// for a section without instances; none when the settings have no such
// section.
func (s *Settings) Instances(provider string) ([]Instance, error) {
	k, ok := providerSection(s.Data, provider)
	if !ok {
		return nil, nil
	}
	sec, err := s.meta.parseSection(k, s.Data[k])
	if err != nil {
		return nil, err
	}
	if len(sec.instances) == 0 {
		return []Instance{{Provider: k, Values: sec.merged(-1)}}, nil
	}
	out := make([]Instance, len(sec.instances))
	for i, in := range sec.instances {
		out[i] = Instance{Provider: k, Name: in.name, Values: sec.merged(i)}
	}
	return out, nil
}
