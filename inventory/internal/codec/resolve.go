package codec

import (
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// How plain scalars are read and when text must be quoted.
//
// The Python broker (0.6 and later) reads and writes the inventory with
// ruamel.yaml in round-trip mode, whose resolver is YAML 1.2's core schema
// with its own rules for integers (underscores, "0o17", and "022" as
// decimal 22) and timestamps. This file reads a plain scalar as that
// resolver does (ruamelRead), and writes text plain only where neither it
// nor PyYAML's YAML 1.1 resolver (older Python brokers) would read
// anything but that text (needsQuotes). The regular expressions are
// theirs (ruamel/yaml/resolver.py 0.17, yaml/resolver.py 6.0), each tried
// only for the first characters it is registered for, as they do.

// Date is a calendar date without a time of day: what the Python
// libraries read from a plain 2006-01-02 (Python's datetime.date), kept
// apart from a time.Time so that it is written back as a date.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// String returns the date as YAML writes it, 2006-01-02.
func (d Date) String() string { return fmt.Sprintf("%04d-%02d-%02d", d.Year, int(d.Month), d.Day) }

// MarshalText writes the date as String does (so JSON has "2006-01-02").
func (d Date) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Tags a plain scalar resolves to.
const (
	tagStr = iota
	tagNull
	tagBool
	tagInt
	tagFloat
	tagTimestamp
	tagMerge
	// tagInvalid: the resolver takes the text for a value its
	// constructor then fails on ("0x_", "2024-02-30"): the Python
	// libraries cannot read the file at all.
	tagInvalid
)

type implicitResolver struct {
	tag   int
	first string // the first characters it is tried for ("" matches the empty text)
	re    *regexp.Regexp
}

// ruamelResolvers are ruamel.yaml's YAML 1.2 implicit resolvers, in its
// order (the first that matches wins).
var ruamelResolvers = []implicitResolver{
	{tagBool, "tTfF", regexp.MustCompile(`^(?:true|True|TRUE|false|False|FALSE)$`)},
	{tagFloat, "-+0123456789.", regexp.MustCompile(`^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)|[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$`)},
	{tagInt, "-+0123456789", regexp.MustCompile(`^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)$`)},
	{tagMerge, "<", regexp.MustCompile(`^(?:<<)$`)},
	{tagNull, "~nN", regexp.MustCompile(`^(?:~|null|Null|NULL)$`)},
	{tagTimestamp, "0123456789", timestampPattern},
	{tagInvalid, "=", regexp.MustCompile(`^(?:=)$`)}, // tag:yaml.org,2002:value: no constructor
}

// pyyamlResolvers are PyYAML 6's (YAML 1.1) implicit resolvers.
var pyyamlResolvers = []implicitResolver{
	{tagBool, "yYnNtTfFoO", regexp.MustCompile(`^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$`)},
	{tagFloat, "-+0123456789.", regexp.MustCompile(`^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$`)},
	{tagInt, "-+0123456789", regexp.MustCompile(`^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$`)},
	{tagMerge, "<", regexp.MustCompile(`^(?:<<)$`)},
	{tagNull, "~nN", regexp.MustCompile(`^(?:~|null|Null|NULL)$`)},
	{tagTimestamp, "0123456789", timestampPattern},
	{tagInvalid, "=", regexp.MustCompile(`^(?:=)$`)},
}

// timestampPattern is both libraries' timestamp resolver, with the
// groups of ruamel's constructor (ruamel/yaml/util.py).
var timestampPattern = regexp.MustCompile(`^(?:([0-9][0-9][0-9][0-9])-([0-9][0-9])-([0-9][0-9])|([0-9][0-9][0-9][0-9])-([0-9][0-9]?)-([0-9][0-9]?)(?:[Tt]|[ \t]+)([0-9][0-9]?):([0-9][0-9]):([0-9][0-9])(?:\.([0-9]*))?(?:[ \t]*(Z|([-+])([0-9][0-9]?)(?::([0-9][0-9]))?))?)$`)

// resolveTag is the tag resolvers gives a plain scalar.
func resolveTag(resolvers []implicitResolver, s string) int {
	for i := range resolvers {
		r := &resolvers[i]
		if s == "" {
			if r.tag == tagNull {
				return tagNull
			}
			continue
		}
		if strings.IndexByte(r.first, s[0]) >= 0 && r.re.MatchString(s) {
			return r.tag
		}
	}
	return tagStr
}

// mayResolve reports whether s could resolve to anything but a string
// for either library: only then are the regular expressions run.
func mayResolve(s string) bool {
	return s == "" || strings.IndexByte("-+0123456789.tTfFyYnNoO~<=", s[0]) >= 0
}

// needsQuotes reports whether plain text s would be read by ruamel.yaml
// or PyYAML as anything but the string s (or not be readable).
func needsQuotes(s string) bool {
	if !mayResolve(s) {
		return false
	}
	return plainTag(s) != tagStr || pyyamlCandidate(s) && resolveTag(pyyamlResolvers, s) != tagStr
}

// pyyamlCandidate reports whether PyYAML's resolvers could take s for
// anything but text, so that most text (ids, addresses with letters) is
// not run through its regular expressions: its words, or text of the
// characters of its numbers and timestamps.
func pyyamlCandidate(s string) bool {
	switch s {
	case "yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF",
		"true", "True", "TRUE", "false", "False", "FALSE", "~", "null", "Null", "NULL", "<<", "=":
		return true
	}
	t := strings.TrimLeft(s, "+-")
	if strings.HasPrefix(t, "0x") || strings.HasPrefix(t, ".") || len(s) >= 8 && s[4] == '-' {
		return true
	}
	return strings.Trim(s, "0123456789_-+.:eE") == ""
}

// plainTag is the tag ruamel.yaml gives plain text s: ruamelResolvers'
// answer, without running regular expressions but for timestamps (every
// plain scalar of a file is resolved; TestRuamelTagIsTheResolvers and
// FuzzRuamelTag check the two agree).
func plainTag(s string) int {
	if !mayResolve(s) {
		return tagStr
	}
	switch s {
	case "", "~", "null", "Null", "NULL":
		return tagNull
	case "true", "True", "TRUE", "false", "False", "FALSE":
		return tagBool
	case "<<":
		return tagMerge
	case "=":
		return tagInvalid
	}
	c := s[0]
	if !(c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.') {
		return tagStr
	}
	if ruamelFloatSyntax(s) {
		return tagFloat
	}
	if ruamelIntSyntax(s) {
		return tagInt
	}
	if c >= '0' && c <= '9' && len(s) >= 8 && s[4] == '-' && timestampPattern.MatchString(s) {
		return tagTimestamp
	}
	return tagStr
}

// ruamelIntSyntax is ruamel's YAML 1.2 int resolver:
// [-+]?0b[0-1_]+ | [-+]?0o?[0-7_]+ | [-+]?[0-9_]+ | [-+]?0x[0-9a-fA-F_]+
func ruamelIntSyntax(s string) bool {
	if s != "" && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	all := func(t string, ok func(byte) bool) bool {
		if t == "" {
			return false
		}
		for i := 0; i < len(t); i++ {
			if !ok(t[i]) {
				return false
			}
		}
		return true
	}
	dec := func(c byte) bool { return c >= '0' && c <= '9' || c == '_' }
	if len(s) > 2 && s[0] == '0' {
		switch s[1] {
		case 'b':
			return all(s[2:], func(c byte) bool { return c == '0' || c == '1' || c == '_' })
		case 'x':
			return all(s[2:], func(c byte) bool { return dec(c) || c|0x20 >= 'a' && c|0x20 <= 'f' })
		case 'o':
			return all(s[2:], func(c byte) bool { return c >= '0' && c <= '7' || c == '_' })
		}
	}
	return all(s, dec)
}

// ruamelFloatSyntax is ruamel's YAML 1.2 float resolver:
//
//	[-+]?[0-9][0-9_]*\.[0-9_]*([eE][-+]?[0-9]+)?
//	[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
//	[-+]?\.[0-9_]+([eE][-+][0-9]+)?
//	[-+]?\.(inf|Inf|INF)
//	\.(nan|NaN|NAN)
func ruamelFloatSyntax(s string) bool {
	switch s {
	case ".nan", ".NaN", ".NAN":
		return true
	}
	if s != "" && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	switch s {
	case ".inf", ".Inf", ".INF":
		return true
	}
	i := 0
	run := func(ok func(byte) bool) int {
		k := i
		for i < len(s) && ok(s[i]) {
			i++
		}
		return i - k
	}
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	digitU := func(c byte) bool { return digit(c) || c == '_' }
	// exponent reads [eE] then a sign (required when signRequired) and
	// digits, to the end.
	exponent := func(signRequired bool) bool {
		if i == len(s) || s[i] != 'e' && s[i] != 'E' {
			return false
		}
		i++
		if i < len(s) && (s[i] == '-' || s[i] == '+') {
			i++
		} else if signRequired {
			return false
		}
		return run(digit) > 0 && i == len(s)
	}
	if i < len(s) && s[i] == '.' {
		i++
		if run(digitU) == 0 {
			return false
		}
		return i == len(s) || exponent(true)
	}
	if i == len(s) || !digit(s[i]) {
		return false
	}
	i++
	run(digitU)
	if i < len(s) && s[i] == '.' {
		i++
		run(digitU)
		return i == len(s) || exponent(false)
	}
	return exponent(false)
}

// resolvePlain reads a plain scalar as ruamel.yaml's round-trip loader
// does: the tag and the value, in the Go types of Record's dynamic
// values (nil, bool, int, *big.Int past int64, float64, Date, time.Time,
// string). For tagInvalid, v is the reason (a string).
func resolvePlain(s string) (tag int, v any) {
	tag = plainTag(s)
	switch tag {
	case tagStr:
		return tagStr, s
	case tagNull:
		return tagNull, nil
	case tagBool:
		return tagBool, s[0] == 't' || s[0] == 'T'
	case tagInt:
		if v, ok := ruamelInt(s); ok {
			return tagInt, v
		}
		return tagInvalid, fmt.Sprintf("%q is an integer to the Python libraries, but not a valid one", s)
	case tagFloat:
		if v, ok := ruamelFloat(s); ok {
			return tagFloat, v
		}
		return tagInvalid, fmt.Sprintf("%q is a float to the Python libraries, but not a valid one", s)
	case tagTimestamp:
		if v, ok := ruamelTimestamp(s); ok {
			return tagTimestamp, v
		}
		return tagInvalid, fmt.Sprintf("%q is a date or time to the Python libraries, but not a valid one", s)
	case tagMerge:
		return tagMerge, s
	}
	return tagInvalid, fmt.Sprintf("%q has no value in the Python libraries (tag:yaml.org,2002:value)", s)
}

// ruamelInt is ruamel's construct_yaml_int (YAML 1.2): underscores
// dropped, 0b, 0o and 0x prefixes, and leading zeros decimal.
func ruamelInt(s string) (any, bool) {
	d := strings.ReplaceAll(s, "_", "")
	neg := false
	if d != "" && (d[0] == '-' || d[0] == '+') {
		neg = d[0] == '-'
		d = d[1:]
	}
	base := 10
	switch {
	case strings.HasPrefix(d, "0b"):
		base, d = 2, d[2:]
	case strings.HasPrefix(d, "0x"):
		base, d = 16, d[2:]
	case strings.HasPrefix(d, "0o"):
		base, d = 8, d[2:]
	}
	if d == "" {
		return nil, false
	}
	if u, err := strconv.ParseUint(d, base, 64); err == nil {
		if !neg && u <= math.MaxInt64 {
			return int(u), true
		}
		if neg && u <= 1<<63 {
			return int(-int64(u)), true // -(1<<63) wraps to itself
		}
	}
	b, ok := new(big.Int).SetString(d, base)
	if !ok {
		return nil, false
	}
	if neg {
		b.Neg(b)
	}
	return b, true
}

// ruamelFloat is ruamel's construct_yaml_float: underscores dropped,
// .inf and .nan in any case the resolver takes; past the range of a
// float64, an infinity (as Python's float()).
func ruamelFloat(s string) (float64, bool) {
	d := strings.ToLower(strings.ReplaceAll(s, "_", ""))
	sign := 1.0
	body := d
	if body != "" && (body[0] == '-' || body[0] == '+') {
		if body[0] == '-' {
			sign = -1
		}
		body = body[1:]
	}
	switch body {
	case ".inf":
		return math.Inf(int(sign)), true
	case ".nan":
		return math.NaN(), true
	}
	if body == "" || body == "." || strings.HasPrefix(body, "e") || strings.HasPrefix(body, ".e") {
		return 0, false
	}
	f, err := strconv.ParseFloat(d, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return f, true
		}
		return 0, false
	}
	return f, true
}

// ruamelTimestamp is ruamel's construct_yaml_timestamp: a Date for a
// date alone, else a time.Time, to the microsecond (a seventh digit
// rounds, as there). A time with a zone is in that zone (Z: UTC); one
// without is in Naive, as Python's naive datetime. Python's datetime bounds apply: year 1 to
// 9999, real days, hours below 24.
func ruamelTimestamp(s string) (any, bool) {
	m := timestampPattern.FindStringSubmatch(s)
	if m == nil {
		return nil, false
	}
	num := func(x string) int { n, _ := strconv.Atoi(x); return n }
	validDate := func(y, mo, d int) bool {
		return y >= 1 && y <= 9999 && mo >= 1 && mo <= 12 && d >= 1 &&
			time.Date(y, time.Month(mo), d, 0, 0, 0, 0, time.UTC).Day() == d
	}
	if m[1] != "" {
		y, mo, d := num(m[1]), num(m[2]), num(m[3])
		if !validDate(y, mo, d) {
			return nil, false
		}
		return Date{Year: y, Month: time.Month(mo), Day: d}, true
	}
	y, mo, d := num(m[4]), num(m[5]), num(m[6])
	h, mi, sec := num(m[7]), num(m[8]), num(m[9])
	if !validDate(y, mo, d) || h > 23 || mi > 59 || sec > 59 {
		return nil, false
	}
	usec := 0
	if frac := m[10]; frac != "" {
		f6 := (frac + "000000")[:6]
		usec = num(f6)
		if len(frac) > 6 && frac[6] > '4' {
			usec++
		}
	}
	loc := Naive
	if m[11] == "Z" {
		loc = time.UTC
	}
	if m[11] != "" && m[11] != "Z" {
		th, tm := num(m[13]), 0
		if m[14] != "" {
			tm = num(m[14])
		}
		if th > 23 || tm > 59 {
			return nil, false
		}
		off := th*3600 + tm*60
		if m[12] == "-" {
			off = -off
		}
		loc = time.FixedZone("", off)
	}
	return time.Date(y, time.Month(mo), d, h, mi, sec, usec*1000, loc), true
}

// Naive is the location of a time read without a zone (Python's naive
// datetime, 2024-01-01 10:00:00): its wall clock is the time, in no zone.
// Such a time is written back without a zone, as Python writes it; a time
// in any other location is written with its zone. Time methods that change
// the location (UTC, In, Local) make it an aware time.
var Naive = time.FixedZone("naive", 0)
