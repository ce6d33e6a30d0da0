package providers

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Setting returns the first of keys set (to a non-nil value) in m, and the
// key as written there. Keys match case-insensitively, as the settings
// loader's environment overrides do.
func Setting(m map[string]any, keys ...string) (v any, key string, ok bool) {
	for _, k := range keys {
		if v, ok := m[k]; ok && v != nil {
			return v, k, true
		}
		for mk, v := range m {
			if strings.EqualFold(mk, k) && v != nil {
				return v, mk, true
			}
		}
	}
	return nil, "", false
}

// Seconds reads a duration setting given in seconds, as Python broker's
// settings give them: an integer, a float, or a string holding one. Zero,
// negative and non-numeric values are errors that quote the value; callers
// add the setting's name.
func Seconds(v any) (time.Duration, error) {
	var f float64
	switch x := v.(type) {
	case int:
		f = float64(x)
	case int64:
		f = float64(x)
	case uint64:
		f = float64(x)
	case float64:
		f = x
	case string:
		var err error
		if f, err = strconv.ParseFloat(strings.TrimSpace(x), 64); err != nil {
			return 0, fmt.Errorf("%q is not a number of seconds", x)
		}
	default:
		return 0, fmt.Errorf("want a number of seconds, got %T %v", v, v)
	}
	// The upper bound keeps the conversion from overflowing (~292 years).
	if !(f > 0) || f > 9e9 {
		return 0, fmt.Errorf("%v is not a positive number of seconds", v)
	}
	return time.Duration(f * float64(time.Second)), nil
}

// SettingError is a provider's complaint about one of its settings (a key
// of Config.Settings). The broker adds where the key was set: the settings
// file and line, or the environment variable.
type SettingError struct {
	Key string // as written in Config.Settings
	Err error  // what is wrong; never holds a secret value
}

func (e *SettingError) Error() string { return "setting " + e.Key + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *SettingError) Unwrap() error { return e.Err }
