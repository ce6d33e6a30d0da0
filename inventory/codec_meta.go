package inventory

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Map returns the _brokertest block as the file holds it, decoded as any
// other key is (what Record.Map holds under "_brokertest"): m written as
// YAML and read back into an interface{}. That round trip is done directly
// for the values providers store; anything else goes through yaml.v3. ok is
// false when yaml.v3 cannot write m.
func (m *Meta) Map() (out map[string]any, ok bool) {
	if out, ok := metaMap(m); ok {
		return out, true
	}
	b, err := yaml.Marshal(m)
	if err != nil {
		return nil, false
	}
	if err := yaml.Unmarshal(b, &out); err != nil {
		return nil, false
	}
	return out, true
}

// metaKeys are the keys of the _brokertest block, in the order written.
var metaKeys = []string{"id", "state", "owner", "test", "user", "checked_out", "keep_until", "request_key", "ssh", "data"}

// metaMap is Map's direct path; ok is false when m holds a value it
// does not know how yaml.v3 writes.
func metaMap(m *Meta) (map[string]any, bool) {
	out := make(map[string]any, len(metaKeys))
	for _, k := range metaKeys {
		v, present, ok := m.Field(k)
		if !ok {
			return nil, false
		}
		if present {
			out[k] = v
		}
	}
	return out, true
}

// Field is m.Map()[key] without building the rest of the map, for readers
// of one key (filters): present is false for a key the block does not
// hold; ok is false for a value whose YAML round trip only Map knows (then
// ask Map).
func (m *Meta) Field(key string) (v any, present, ok bool) {
	text := func(s string, always bool) (any, bool, bool) { return s, s != "" || always, true }
	switch key {
	case "id":
		return text(m.ID, true)
	case "state":
		return text(m.State, false)
	case "test":
		return text(m.Test, false)
	case "user":
		return text(m.User, false)
	case "request_key":
		return text(m.RequestKey, false)
	case "owner":
		return map[string]any{
			"run":     m.Owner.Run,
			"pid":     m.Owner.PID,
			"started": uintValue(m.Owner.Started),
			"boot_id": m.Owner.BootID,
			"machine": m.Owner.Machine,
		}, true, true
	case "checked_out":
		return timeValue(m.CheckedOut), true, true
	case "keep_until":
		if m.KeepUntil == nil {
			return nil, true, true
		}
		return timeValue(*m.KeepUntil), true, true
	case "ssh":
		s := m.SSH
		if s == nil {
			return nil, false, true
		}
		ssh := make(map[string]any, 8)
		for k, v := range map[string]string{"host": s.Host, "user": s.User, "host_key": s.HostKey, "key_file": s.KeyFile, "transport": s.Transport, "proxy_command": s.ProxyCommand} {
			if v != "" {
				ssh[k] = v
			}
		}
		if s.Port != 0 {
			ssh["port"] = s.Port
		}
		if s.Insecure {
			ssh["insecure"] = true
		}
		return ssh, true, true
	case "data":
		if len(m.Data) == 0 {
			return nil, false, true
		}
		d, ok := roundTrip(m.Data)
		return d, ok, ok
	}
	return nil, false, true
}

// roundTrip returns v as yaml.v3 writes and then reads it into an
// interface{}, for the types it knows; ok is false for others.
func roundTrip(v any) (any, bool) {
	switch x := v.(type) {
	case nil, string, bool, int:
		return x, true
	case int64:
		return int(x), true
	case uint64:
		return uintValue(x), true
	case float64:
		s := strconv.FormatFloat(x, 'g', -1, 64)
		switch {
		case math.IsInf(x, 1):
			s = ".inf"
		case math.IsInf(x, -1):
			s = "-.inf"
		case math.IsNaN(x):
			s = ".nan"
		}
		_, r := resolvePlain(s)
		return r, true
	case time.Time:
		return timeValue(x), true
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if !utf8.ValidString(k) {
				return nil, false // a !!binary key: yaml.v3 reads a map[any]any
			}
			r, ok := roundTrip(e)
			if !ok {
				return nil, false
			}
			out[k] = r
		}
		return out, true
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			r, ok := roundTrip(e)
			if !ok {
				return nil, false
			}
			out[i] = r
		}
		return out, true
	}
	return nil, false
}

// uintValue is an unsigned integer written and read back: an int when it
// fits.
func uintValue(u uint64) any {
	if u <= math.MaxInt64 {
		return int(u)
	}
	return u
}

// timeValue is a time written (in RFC 3339) and read back: a time.Time,
// or text when its year has not four digits.
func timeValue(t time.Time) any {
	_, v := resolvePlain(t.Format(time.RFC3339Nano))
	return v
}
