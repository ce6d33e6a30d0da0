package settings

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Error is a settings problem at one place: the file (and line when known),
// the key path, or the environment variable that set the value.
type Error struct {
	From string // what named the file, when the file itself is the problem (BROKER_DIRECTORY=/x)
	File string // the settings file
	Line int    // 1-based line in File; 0 when unknown or the value came from Env
	Env  string // the environment variable that set the value, if any
	Path string // dotted key path, e.g. "ssh.host_ssh_port"; "" for the whole file
	Msg  string // what is wrong; never holds a secret value
	Err  error  // underlying error (file read), if any
}

// Error formats as "[from: ]file:line: path (from env NAME): msg".
func (e *Error) Error() string {
	var b strings.Builder
	if e.From != "" {
		b.WriteString(e.From)
		b.WriteString(": ")
	}
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	if e.Path != "" {
		b.WriteString(": ")
		b.WriteString(e.Path)
	}
	if e.Env != "" {
		b.WriteString(" (from env ")
		b.WriteString(e.Env)
		b.WriteString(")")
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// meta remembers where each value of Data came from, so errors found after
// Load (by Instance or Nick) can still name the line or the variable.
type meta struct {
	file   string
	lines  map[string]int    // raw key path -> line of the key in the file
	origin map[string]string // raw key path -> env variable that set it
}

// errAt builds an Error for the value at raw key path raw, shown to the
// user as path (they differ for list-form instances).
func (m *meta) errAt(raw, path, format string, args ...any) *Error {
	e := &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
	if m == nil {
		e.File = "settings"
		return e
	}
	e.File = m.file
	e.Env, e.Line = m.where(raw)
	return e
}

// where finds the env variable that set raw (or one of its parents), else
// the line of raw (or of its nearest parent) in the file.
func (m *meta) where(raw string) (env string, line int) {
	if m == nil {
		return "", 0
	}
	for p := raw; p != ""; p = parentPath(p) {
		if v, ok := m.origin[p]; ok {
			return v, 0
		}
	}
	for p := raw; p != ""; p = parentPath(p) {
		if l, ok := m.lines[p]; ok {
			return "", l
		}
	}
	return "", 0
}

// parentPath strips the last ".key" or "[i]" of a raw path.
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// joinPath appends key to a dotted path.
func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// secretKey reports whether a key's value must never be shown.
func secretKey(key string) bool {
	k := strings.ToLower(key)
	if i := strings.LastIndexAny(k, ".]"); i >= 0 {
		k = k[i+1:]
	}
	switch k {
	case "password", "passwd", "token", "secret", "passphrase":
		return true
	}
	for _, suf := range []string{"_password", "_passwd", "_token", "_secret", "_passphrase"} {
		if strings.HasSuffix(k, suf) {
			return true
		}
	}
	return false
}

// show renders a value for an error message, redacting secrets (by the key
// path's last key) and summarising collections.
func show(path string, v any) string {
	if secretKey(path) {
		return "<redacted>"
	}
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if len(x) > 80 {
			x = x[:77] + "..."
		}
		return strconv.Quote(x)
	case map[string]any:
		return "a map"
	case []any:
		return "a list"
	default:
		s := fmt.Sprint(x)
		if len(s) > 80 {
			s = s[:77] + "..."
		}
		return s
	}
}

// got describes a value for "expected X, got Y" messages: its kind, and
// for a scalar its text as show renders it ("a string \"x\"", "a number 5";
// "a list", "null").
func got(path string, v any) string {
	switch v.(type) {
	case nil, map[string]any, []any:
		return TypeName(v)
	}
	return TypeName(v) + " " + show(path, v)
}

// TypeName names a settings value's YAML kind ("a list", "a map", "a
// number"…) for "expected X, got Y" messages, the providers' included.
func TypeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int, int64, uint64, float64:
		return "a number"
	case map[string]any:
		return "a map"
	case []any:
		return "a list"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

// sortedKeys returns m's keys in order.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
