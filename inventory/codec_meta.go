package inventory

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// brokerMap returns the _brokertest block as the file holds it, decoded as
// any other key is (what Map holds): m written as YAML and read back into
// an interface{}. That round trip is done directly for the values
// providers store; anything else goes through yaml.v3. ok is false when
// yaml.v3 cannot write m.
func brokerMap(m *Meta) (out map[string]any, ok bool) {
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

// metaMap is brokerMap's direct path; ok is false when m holds a value it
// does not know how yaml.v3 writes.
func metaMap(m *Meta) (map[string]any, bool) {
	out := make(map[string]any, 9)
	out["id"] = m.ID
	if m.State != "" {
		out["state"] = m.State
	}
	out["owner"] = map[string]any{
		"run":     m.Owner.Run,
		"pid":     m.Owner.PID,
		"started": uintValue(m.Owner.Started),
		"boot_id": m.Owner.BootID,
		"machine": m.Owner.Machine,
	}
	if m.Test != "" {
		out["test"] = m.Test
	}
	out["checked_out"] = timeValue(m.CheckedOut)
	if m.KeepUntil != nil {
		out["keep_until"] = timeValue(*m.KeepUntil)
	} else {
		out["keep_until"] = nil
	}
	if m.RequestKey != "" {
		out["request_key"] = m.RequestKey
	}
	if s := m.SSH; s != nil {
		ssh := make(map[string]any, 6)
		for k, v := range map[string]string{"host": s.Host, "user": s.User, "host_key": s.HostKey, "key_file": s.KeyFile} {
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
		out["ssh"] = ssh
	}
	if len(m.Data) > 0 {
		d, ok := roundTrip(m.Data)
		if !ok {
			return nil, false
		}
		out["data"] = d
	}
	return out, true
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
