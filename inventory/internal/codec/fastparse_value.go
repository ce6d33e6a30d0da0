package codec

import (
	"encoding/base64"
	"math/big"
	"math/bits"
	"strings"
	"time"
)

// dropSpace drops the white space of a !!binary value (its base64 is
// written over several lines).
func dropSpace(r rune) rune {
	if r == ' ' || r == '\n' || r == '\t' || r == '\r' {
		return -1
	}
	return r
}

// parseUTC parses the form this library writes, 2006-01-02T15:04:05Z
// with up to nine digits of fractions of a second, giving what time.Parse
// gives with timestampFormats[0]; ok is false for any other form (for
// time.Parse to read) and for values out of range (for it to refuse).
func parseUTC(s string) (time.Time, bool) {
	if len(s) < 20 || s[len(s)-1] != 'Z' || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	num := func(a, b int) int {
		n := 0
		for i := a; i < b; i++ {
			if s[i] < '0' || s[i] > '9' {
				return -1
			}
			n = n*10 + int(s[i]-'0')
		}
		return n
	}
	year, month, day := num(0, 4), num(5, 7), num(8, 10)
	hour, minute, sec := num(11, 13), num(14, 16), num(17, 19)
	nsec := 0
	if frac := s[19 : len(s)-1]; frac != "" {
		if len(frac) < 2 || len(frac) > 10 || frac[0] != '.' {
			return time.Time{}, false
		}
		if nsec = num(20, len(s)-1); nsec < 0 {
			return time.Time{}, false
		}
		for range 10 - len(frac) {
			nsec *= 10
		}
	}
	if year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return time.Time{}, false
	}
	if day > 28 && time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC).Day() != day {
		return time.Time{}, false // no such day in that month
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC), true
}

// isNull reports a plain scalar that resolves to null.
func (n *fnode) isNull() bool {
	if n.kind != fScalar || n.quoted {
		return false
	}
	switch n.text {
	case "", "~", "null", "Null", "NULL":
		return true
	}
	return false
}

// value is n decoded into an interface{}, as yaml.v3 decodes it.
func (p *fastParser) value(n *fnode) any {
	switch n.kind {
	case fMap:
		kids := p.kidsOf(n)
		m := make(map[string]any, len(kids)/2)
		for a := 0; a < len(kids); a += 2 {
			m[kids[a].text] = p.value(&kids[a+1])
		}
		return m
	case fSeq:
		kids := p.kidsOf(n)
		l := make([]any, len(kids))
		for i := range kids {
			l[i] = p.value(&kids[i])
		}
		return l
	}
	if n.binary {
		b, err := base64.StdEncoding.DecodeString(strings.Map(dropSpace, n.text))
		if err != nil {
			p.bad(int(n.at), n.text, tagInvalid, "a !!binary value that is not base64")
			return n.text
		}
		return b
	}
	if n.quoted {
		return n.text
	}
	tag, v := resolvePlain(n.text)
	if tag == tagInvalid || tag == tagMerge {
		p.bad(int(n.at), n.text, tag, v)
		return n.text
	}
	return v
}

// bad records a plain scalar the Python libraries cannot read: the
// whole file is then refused (see decodeFile).
func (p *fastParser) bad(at int, text string, tag int, v any) {
	why, _ := v.(string)
	if tag == tagMerge {
		why = "a merge key (<<), which this library does not read"
	}
	if p.invalid == "" {
		p.invalid = why
		p.invalidAt = at
	}
	p.giveUp(at, "%s", why)
}

// record decodes a record from map n as yaml.v3 decodes it (through
// Record.UnmarshalYAML), or gives up where yaml.v3 would report a type
// error or do something this reader does not copy.
func (p *fastParser) record(n *fnode) (*Record, bool) {
	r := &Record{}
	kids := p.kidsOf(n)
	for a := 0; a < len(kids); a += 2 {
		k, v := kids[a].text, &kids[a+1]
		ok := true
		text := func(dst *string, bit uint8) bool {
			switch {
			case v.isNull():
				r.nulls |= bit
			case v.kind == fScalar && v.text == "":
				r.empties |= bit
			case v.kind == fScalar && !v.quoted && !v.binary && plainTag(v.text) != tagStr:
				r.plains |= bit
			}
			if !p.str(v, dst) {
				return false
			}
			if r.plains&bit != 0 {
				if r.held == nil {
					r.held = new([5]string)
				}
				r.held[bits.TrailingZeros8(bit)] = *dst
			}
			return true
		}
		switch k {
		case "hostname":
			ok = text(&r.Hostname, bitHostname)
		case "name":
			ok = text(&r.Name, bitName)
			r.nameNull = v.isNull()
			r.nulls &^= bitName
		case "ip":
			ok = text(&r.IP, bitIP)
		case "_broker_provider":
			ok = text(&r.Provider, bitProvider)
		case "_broker_provider_instance":
			ok = text(&r.Instance, bitInstance)
		case "_broker_args":
			if v.isNull() {
				r.nulls |= bitArgs
			}
			r.Args, ok = p.strMap(v)
		case "_broker_facts":
			if v.isNull() {
				r.nulls |= bitFacts
			}
			r.Facts, ok = p.strMap(v)
		case "_brokertest":
			r.Broker, ok = p.meta(v)
		default:
			if r.Extra == nil {
				r.Extra = make(map[string]any)
			}
			r.Extra[k] = p.value(v)
		}
		if !ok {
			return nil, false
		}
	}
	return r, true
}

// str decodes a string field: a scalar's text, whatever it resolves to;
// null leaves the field as it is.
func (p *fastParser) str(n *fnode, dst *string) bool {
	if n.kind != fScalar {
		return p.giveUp(int(n.at), "a list or map where a string was expected")
	}
	if !n.isNull() {
		if !n.quoted && mayResolve(n.text) {
			if tag, v := resolvePlain(n.text); tag == tagInvalid || tag == tagMerge {
				p.bad(int(n.at), n.text, tag, v)
				return false
			}
		}
		*dst = n.text
	}
	return true
}

// strMap decodes a map[string]any field: null is a nil map.
func (p *fastParser) strMap(n *fnode) (map[string]any, bool) {
	if n.isNull() {
		return nil, true
	}
	if n.kind != fMap {
		return nil, p.giveUp(int(n.at), "not a map where a map was expected")
	}
	return p.value(n).(map[string]any), true
}

func (p *fastParser) meta(n *fnode) (*Meta, bool) {
	if n.isNull() {
		return nil, true
	}
	if n.kind != fMap {
		return nil, p.giveUp(int(n.at), "_brokertest is not a map")
	}
	m := &Meta{}
	kids := p.kidsOf(n)
	for a := 0; a < len(kids); a += 2 {
		v := &kids[a+1]
		ok := true
		switch kids[a].text {
		case "id":
			ok = p.str(v, &m.ID)
		case "state":
			ok = p.str(v, &m.State)
		case "test":
			ok = p.str(v, &m.Test)
		case "user":
			ok = p.str(v, &m.User)
		case "request_key":
			ok = p.str(v, &m.RequestKey)
		case "owner":
			ok = p.owner(v, &m.Owner)
		case "checked_out":
			ok = p.time(v, &m.CheckedOut)
		case "keep_until":
			if v.isNull() {
				m.KeepUntil = nil
				break
			}
			var t time.Time
			if ok = p.time(v, &t); ok {
				m.KeepUntil = &t
			}
		case "ssh":
			m.SSH, ok = p.ssh(v)
		case "data":
			m.Data, ok = p.strMap(v)
		}
		if !ok {
			return nil, false
		}
	}
	return m, true
}

func (p *fastParser) owner(n *fnode, o *Owner) bool {
	if n.isNull() {
		return true
	}
	if n.kind != fMap {
		return p.giveUp(int(n.at), "owner is not a map")
	}
	kids := p.kidsOf(n)
	for a := 0; a < len(kids); a += 2 {
		v := &kids[a+1]
		ok := true
		switch kids[a].text {
		case "run":
			ok = p.str(v, &o.Run)
		case "pid":
			ok = p.int(v, &o.PID)
		case "started":
			ok = p.uint(v, &o.Started)
		case "boot_id":
			ok = p.str(v, &o.BootID)
		case "machine":
			ok = p.str(v, &o.Machine)
		}
		if !ok {
			return false
		}
	}
	return true
}

func (p *fastParser) ssh(n *fnode) (*SSH, bool) {
	if n.isNull() {
		return nil, true
	}
	if n.kind != fMap {
		return nil, p.giveUp(int(n.at), "ssh is not a map")
	}
	s := &SSH{}
	kids := p.kidsOf(n)
	for a := 0; a < len(kids); a += 2 {
		v := &kids[a+1]
		ok := true
		switch kids[a].text {
		case "host":
			ok = p.str(v, &s.Host)
		case "port":
			ok = p.int(v, &s.Port)
		case "user":
			ok = p.str(v, &s.User)
		case "host_key":
			ok = p.str(v, &s.HostKey)
		case "key_file":
			ok = p.str(v, &s.KeyFile)
		case "insecure":
			ok = p.bool(v, &s.Insecure)
		case "transport":
			ok = p.str(v, &s.Transport)
		case "proxy_command":
			ok = p.str(v, &s.ProxyCommand)
		}
		if !ok {
			return nil, false
		}
	}
	return s, true
}

// plainScalar resolves a plain scalar; ok is false for anything else.
func (n *fnode) plainScalar() (tag int, v any, ok bool) {
	if n.kind != fScalar || n.quoted {
		return 0, nil, false
	}
	tag, v = resolvePlain(n.text)
	return tag, v, true
}

// int decodes an int field from a plain integer; null leaves it. yaml.v3
// also truncates floats into it: that is left to yaml.v3.
func (p *fastParser) int(n *fnode, dst *int) bool {
	if n.isNull() {
		return true
	}
	if _, v, ok := n.plainScalar(); ok {
		if i, ok := v.(int); ok {
			*dst = i
			return true
		}
	}
	return p.giveUp(int(n.at), "not a plain integer")
}

func (p *fastParser) uint(n *fnode, dst *uint64) bool {
	if n.isNull() {
		return true
	}
	if _, v, ok := n.plainScalar(); ok {
		switch x := v.(type) {
		case int:
			if x >= 0 {
				*dst = uint64(x)
				return true
			}
		case *big.Int:
			if x.IsUint64() {
				*dst = x.Uint64()
				return true
			}
		}
	}
	return p.giveUp(int(n.at), "not a plain unsigned integer")
}

// bool decodes a bool field: YAML 1.2's true and false, and YAML 1.1's
// yes, no, on, off… (quoted or not), as yaml.v3 does for a typed bool.
func (p *fastParser) bool(n *fnode, dst *bool) bool {
	if n.isNull() {
		return true
	}
	if n.kind == fScalar {
		v := any(n.text)
		if !n.quoted {
			_, v = resolvePlain(n.text)
		}
		switch x := v.(type) {
		case bool:
			*dst = x
			return true
		case string:
			switch x {
			case "y", "Y", "yes", "Yes", "YES", "on", "On", "ON":
				*dst = true
				return true
			case "n", "N", "no", "No", "NO", "off", "Off", "OFF":
				*dst = false
				return true
			}
		}
	}
	return p.giveUp(int(n.at), "not a boolean")
}

// time decodes a time.Time field from a plain timestamp; null leaves it.
// (yaml.v3 also reads quoted RFC 3339 text into it: left to yaml.v3.)
func (p *fastParser) time(n *fnode, dst *time.Time) bool {
	if n.isNull() {
		return true
	}
	if n.kind == fScalar && !n.quoted {
		if t, ok := parseUTC(n.text); ok {
			*dst = t
			return true
		}
		// Another zone: still to the nanosecond (this library's own
		// times; the Python broker does not read them).
		if t, err := time.Parse(time.RFC3339Nano, n.text); err == nil && plainTag(n.text) == tagTimestamp {
			*dst = t
			return true
		}
	}
	if tag, v, ok := n.plainScalar(); ok && tag == tagTimestamp {
		if t, ok := v.(time.Time); ok {
			if t.Location() == Naive {
				// This library's own times are in UTC; one without a
				// zone is taken so, as before.
				t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
			}
			*dst = t
			return true
		}
	}
	return p.giveUp(int(n.at), "not a plain timestamp")
}
