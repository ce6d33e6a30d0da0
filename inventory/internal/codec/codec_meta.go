package codec

import (
	"math"
	"math/big"
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

// roundTrip returns v as written and read back into an interface{}:
// collections of other Go types as map[string]any and []any, integers as
// int (or *big.Int past int64); ok is false for a value that cannot be
// written.
func roundTrip(v any) (any, bool) {
	switch x := normalize(v).(type) {
	case nil, string, bool, int, float64, Date, []byte:
		return x, true
	case int64:
		return int(x), true
	case uint64:
		return uintValue(x), true
	case *big.Int:
		if x.IsInt64() {
			return int(x.Int64()), true
		}
		return x, true
	case time.Time:
		return x, true
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if !utf8.ValidString(k) {
				return nil, false
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
// fits, else a *big.Int.
func uintValue(u uint64) any {
	if u <= math.MaxInt64 {
		return int(u)
	}
	return new(big.Int).SetUint64(u)
}

// timeValue is a time written (in RFC 3339) and read back.
func timeValue(t time.Time) any {
	return t
}
