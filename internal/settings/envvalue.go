package settings

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// parseEnvValue converts an override's text as dynaconf's env loader does
// (boolean_fix, then parse_conf_data with tomlfy=True):
//
//   - "@int 5", "@float 1.5", "@bool yes", "@str 5", "@json {...}", "@none"
//     (and @null, @note, @comment), "@upper x", "@lower", "@strip",
//     "@lstrip", "@rstrip", "@split": dynaconf's converters. A value a
//     converter can't read is an error (dynaconf raises too). Other
//     converters (@format, @jinja, @get, @read_file, @merge, @del…) are
//     not supported: the text is kept and warn says so.
//   - anything else is read as a TOML value (see tomlValue): "true", "5",
//     "+172800", "0x1F", "1.50", "1e3", `"quoted"`, `["a", "b"]`,
//     "{a = 1}". Text that is no TOML value ("abc", "[a, b]", "{a: 1}",
//     "None", "null", "TRUE") stays as written. "True" and "False" are
//     booleans (dynaconf's boolean_fix).
//
// secret (a password or token key) keeps an unconverted value as text: the
// TOML reading would turn a token like "0x1F" or "1e3" into a number whose
// text is another secret. Converters still apply.
//
// problem, when not "", says why the value can't be read; the caller adds
// the variable and the key, and shows the value only if it is no secret.
func parseEnvValue(raw string, secret bool) (v any, warn, problem string) {
	if tok, rest, _ := strings.Cut(raw, " "); raw != "" && dynaconfConverters[tok] {
		return convert(tok, rest, raw)
	}
	if secret {
		return raw, "", ""
	}
	data := raw
	if t := strings.TrimSpace(raw); t == "True" || t == "False" {
		data = strings.ToLower(raw)
	}
	if v, ok := tomlValue(data); ok {
		return v, "", ""
	}
	return raw, "", ""
}

// dynaconfConverters are dynaconf 3.2/3.3's @ tokens (parse_conf.converters).
var dynaconfConverters = map[string]bool{
	"@str": true, "@int": true, "@float": true, "@bool": true, "@json": true,
	"@format": true, "@jinja": true, "@reset": true, "@del": true, "@merge": true,
	"@merge_unique": true, "@insert": true, "@get": true, "@read_file": true,
	"@upper": true, "@lower": true, "@title": true, "@capitalize": true,
	"@strip": true, "@lstrip": true, "@rstrip": true, "@split": true,
	"@casefold": true, "@swapcase": true, "@note": true, "@comment": true,
	"@null": true, "@none": true, "@empty": true,
}

// lazyCombo is dynaconf's "@int @jinja …" form: a cast of a template.
var lazyCombo = regexp.MustCompile(`^@\w+ @(jinja|format|read_file|get)\b`)

var (
	pyInt   = regexp.MustCompile(`^[+-]?[0-9](_?[0-9])*$`)
	pyFloat = regexp.MustCompile(`^[+-]?(([0-9](_?[0-9])*)?\.[0-9](_?[0-9])*|[0-9](_?[0-9])*\.?)([eE][+-]?[0-9](_?[0-9])*)?$`)
)

// convert applies dynaconf converter tok to text v (raw is the whole value).
func convert(tok, v, raw string) (any, string, string) {
	if lazyCombo.MatchString(raw) {
		tok = raw[strings.IndexByte(raw, ' ')+1:]
		tok, _, _ = strings.Cut(tok, " ")
	}
	switch tok {
	case "@str":
		return v, "", ""
	case "@int":
		// Python's int(): surrounding blanks, a sign, digits with single
		// underscores between them, leading zeros allowed; base 10 only.
		s := strings.TrimSpace(v)
		if !pyInt.MatchString(s) {
			return nil, "", "@int needs a whole number"
		}
		n, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
		if err != nil {
			return nil, "", "@int: the number is out of range"
		}
		return int(n), "", ""
	case "@float":
		// Python's float(): decimal, exponent, inf, infinity, nan.
		s := strings.TrimSpace(v)
		switch strings.ToLower(strings.TrimLeft(s, "+-")) {
		case "inf", "infinity":
			if strings.HasPrefix(s, "-") {
				return math.Inf(-1), "", ""
			}
			return math.Inf(1), "", ""
		case "nan":
			return math.NaN(), "", ""
		}
		if !pyFloat.MatchString(s) {
			return nil, "", "@float needs a number"
		}
		f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
		if err != nil && !math.IsInf(f, 0) {
			return nil, "", "@float needs a number"
		}
		return f, "", ""
	case "@bool":
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "t", "true", "enabled", "1", "on", "yes":
			return true, "", ""
		}
		return false, "", ""
	case "@json":
		x, err := jsonValue(v)
		if err != nil {
			return nil, "", "@json: " + err.Error()
		}
		return x, "", ""
	case "@none", "@null", "@note", "@comment":
		return nil, "", ""
	case "@upper":
		return strings.ToUpper(v), "", ""
	case "@lower":
		return strings.ToLower(v), "", ""
	case "@strip":
		return strings.TrimSpace(v), "", ""
	case "@lstrip":
		return strings.TrimLeftFunc(v, unicode.IsSpace), "", ""
	case "@rstrip":
		return strings.TrimRightFunc(v, unicode.IsSpace), "", ""
	case "@split":
		out := []any{}
		for _, f := range strings.Fields(v) {
			out = append(out, f)
		}
		return out, "", ""
	}
	return raw, fmt.Sprintf("dynaconf's %s is not supported here, so the value is kept as text", tok), ""
}

// jsonValue reads JSON as @json does: whole numbers become int, others
// float64. dynaconf also accepts Python's True/False/None after a colon
// (so does this) and Python literals with single quotes (this does not).
func jsonValue(s string) (any, error) {
	v, err := decodeJSON(s)
	if err != nil {
		fixed := s
		for _, r := range [][2]string{{": True", ": true"}, {":True", ": true"}, {": False", ": false"}, {":False", ": false"}, {": None", ": null"}, {":None", ": null"}} {
			fixed = strings.ReplaceAll(fixed, r[0], r[1])
		}
		if fixed == s {
			return nil, err
		}
		if v, err2 := decodeJSON(fixed); err2 == nil {
			return v, nil
		}
		return nil, err
	}
	return v, nil
}

func decodeJSON(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		// Positions only: a syntax error's text quotes a character of
		// the value, which may be a secret.
		var se *json.SyntaxError
		switch {
		case errors.Is(err, io.EOF):
			return nil, errors.New("no JSON value")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, errors.New("the JSON value is cut short")
		case errors.As(err, &se):
			return nil, fmt.Errorf("not valid JSON (at byte %d)", se.Offset)
		}
		return nil, errors.New("not valid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("text after the JSON value")
	}
	return jsonPlain(v, 0)
}

// jsonPlain turns json.Numbers into int or float64 and bounds nesting.
func jsonPlain(v any, depth int) (any, error) {
	if depth >= maxDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", maxDepth)
	}
	switch x := v.(type) {
	case json.Number:
		if !strings.ContainsAny(x.String(), ".eE") {
			if n, err := x.Int64(); err == nil {
				return int(n), nil
			}
		}
		f, err := x.Float64()
		if err != nil && !math.IsInf(f, 0) {
			return nil, fmt.Errorf("number %s out of range", x)
		}
		return f, nil
	case map[string]any:
		for k, e := range x {
			pe, err := jsonPlain(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[k] = pe
		}
	case []any:
		for i, e := range x {
			pe, err := jsonPlain(e, depth+1)
			if err != nil {
				return nil, err
			}
			x[i] = pe
		}
	}
	return v, nil
}
