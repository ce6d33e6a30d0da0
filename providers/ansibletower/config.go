package ansibletower

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hostbroker/broker/internal/plain"
	"github.com/hostbroker/broker/providers"
)

// parseConfig reads an instance's settings. Errors name the key and the bad
// value, never a secret's value.
func parseConfig(cfg providers.Config) (config, error) {
	s := cfg.Settings
	where := Name
	if cfg.Instance != "" {
		where += "::" + cfg.Instance
	}
	// bad is a complaint about one setting, which the broker locates in
	// the settings file or the environment. v is never a secret's value.
	bad := func(key string, v any, want string) error {
		return fmt.Errorf("ansibletower: %s: %w", where, &providers.SettingError{Key: key, Err: fmt.Errorf("%v is not %s", v, want)})
	}
	c := config{
		releaseWorkflow: "remove-vm",
		extendWorkflow:  "extend-vm",
		newExpireTime:   "+172800",
		errorScope:      "last",
		dangling:        "checkin",
		verifySSL:       true,
	}
	str := func(key string, dst *string) error {
		v, _, ok := providers.Setting(s, key)
		if !ok {
			return nil
		}
		switch v := v.(type) {
		case string:
			*dst = v
		case int, int64, float64, bool:
			*dst = fmt.Sprint(v)
		default:
			return bad(key, fmt.Sprintf("(%T)", v), "a string")
		}
		return nil
	}
	secret := func(key string, dst *string) error {
		v, _, ok := providers.Setting(s, key)
		if !ok {
			return nil
		}
		if sv, ok := v.(string); ok {
			*dst = sv
			return nil
		}
		if _, ok := v.(map[string]any); ok {
			return bad(key, "(a map)", "a string")
		}
		*dst = fmt.Sprint(v)
		return nil
	}
	seconds := func(key string, def float64, dst *time.Duration) error {
		*dst = time.Duration(def * float64(time.Second))
		v, _, ok := providers.Setting(s, key)
		if !ok {
			return nil
		}
		d, err := providers.Seconds(v)
		if err != nil {
			if text, ok := v.(string); ok {
				return bad(key, strconv.Quote(text), "a positive number of seconds")
			}
			return bad(key, v, "a positive number of seconds")
		}
		*dst = d
		return nil
	}
	var base string
	for _, step := range []error{
		str("base_url", &base),
		secret("token", &c.creds.token),
		str("username", &c.creds.username),
		secret("password", &c.creds.password),
		str("inventory", &c.inventory),
		str("release_workflow", &c.releaseWorkflow),
		str("extend_workflow", &c.extendWorkflow),
		str("new_expire_time", &c.newExpireTime),
		str("error_scope", &c.errorScope),
		str("dangling_behavior", &c.dangling),
		str("aap_version", &c.aapVersion),
		str("api_path", &c.apiPath),
		seconds("workflow_timeout", 3600, &c.workflowTimeout),
		seconds("workflow_poll_interval", 5, &c.pollInterval),
		seconds("max_resilient_wait", 7200, &c.maxResilientWait),
		seconds("request_timeout", 60, &c.requestTimeout),
	} {
		if step != nil {
			return c, step
		}
	}
	if v, _, ok := providers.Setting(s, "provider_labels"); ok && v != nil {
		m, ok := plain.Value(v).(map[string]any)
		if !ok {
			return c, bad("provider_labels", fmt.Sprintf("(%T)", v), "a map of labels")
		}
		c.providerLabels = m
	}
	if v, _, ok := providers.Setting(s, "verify_ssl"); ok {
		b, ok := v.(bool)
		if !ok {
			return c, bad("verify_ssl", v, "true or false")
		}
		c.verifySSL = b
	}
	if base == "" {
		return c, fmt.Errorf("ansibletower: setting %s.base_url is missing (e.g. https://tower.example.com/)", where)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, bad("base_url", strconv.Quote(base), "an http:// or https:// URL")
	}
	if u.User != nil {
		return c, fmt.Errorf("ansibletower: %s: %w", where, &providers.SettingError{Key: "base_url", Err: errors.New("carries credentials: put them in username/password or token")})
	}
	u.RawQuery, u.Fragment = "", ""
	// base_url may be given with /api/ or /api/v2/ appended; the API root is
	// detected below it.
	if i := strings.Index(u.Path, "/api/"); i >= 0 {
		u.Path = u.Path[:i]
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c.baseURL = u
	if c.creds.token == "" && (c.creds.username == "" || c.creds.password == "") {
		return c, fmt.Errorf("ansibletower: settings of %s have no credentials: set token (BROKER_AnsibleTower__token), or username and password", where)
	}
	switch c.errorScope {
	case "last", "all":
	default:
		return c, bad("error_scope", strconv.Quote(c.errorScope), "last or all")
	}
	switch c.dangling {
	case "checkin", "store":
	default:
		return c, bad("dangling_behavior", strconv.Quote(c.dangling), "checkin or store")
	}
	return c, nil
}
