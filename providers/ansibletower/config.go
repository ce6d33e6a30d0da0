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

// settingKeys are the keys of the AnsibleTower section: those readConfig
// reads, and the Python broker's results_limit, accepted and ignored.
var settingKeys = []string{
	"base_url", "token", "username", "password", "inventory",
	"release_workflow", "extend_workflow", "new_expire_time", "error_scope", "dangling_behavior",
	"aap_version", "api_path", "workflow_timeout", "workflow_poll_interval", "max_resilient_wait",
	"request_timeout", "provider_labels", "verify_ssl", "results_limit",
}

// parseConfig reads an instance's settings: readConfig's checks, then what
// Open needs (base_url, credentials). Errors name the key and the bad
// value, never a secret's value.
func parseConfig(cfg providers.Config) (config, error) {
	c, base, err := readConfig(cfg)
	if err != nil {
		return c, err
	}
	r := newConfigReader(cfg)
	if c.baseURL, err = r.baseURL(base); err != nil {
		return c, err
	}
	if c.creds.token == "" && (c.creds.username == "" || c.creds.password == "") {
		return c, fmt.Errorf("ansibletower: settings of %s have no credentials: set token (BROKER_AnsibleTower__token), or username and password", r.where)
	}
	return c, nil
}

// readConfig reads and checks the values an instance's settings set, with
// the defaults for the others, and returns base_url as written. It
// requires nothing: what a section lacks is parseConfig's concern, so
// that the settings of a program that never uses AnsibleTower load.
func readConfig(cfg providers.Config) (config, string, error) {
	r := newConfigReader(cfg)
	c := config{
		releaseWorkflow: "remove-vm",
		extendWorkflow:  "extend-vm",
		newExpireTime:   "+172800",
		errorScope:      "last",
		dangling:        "checkin",
		verifySSL:       true,
	}
	var base string
	for _, step := range []error{
		r.str("base_url", &base),
		r.secret("token", &c.creds.token),
		r.str("username", &c.creds.username),
		r.secret("password", &c.creds.password),
		r.str("inventory", &c.inventory),
		r.str("release_workflow", &c.releaseWorkflow),
		r.str("extend_workflow", &c.extendWorkflow),
		r.str("new_expire_time", &c.newExpireTime),
		r.str("error_scope", &c.errorScope),
		r.str("dangling_behavior", &c.dangling),
		r.str("aap_version", &c.aapVersion),
		r.str("api_path", &c.apiPath),
		r.seconds("workflow_timeout", 3600, &c.workflowTimeout),
		r.seconds("workflow_poll_interval", 5, &c.pollInterval),
		r.seconds("max_resilient_wait", 7200, &c.maxResilientWait),
		r.seconds("request_timeout", 60, &c.requestTimeout),
		r.labels("provider_labels", &c.providerLabels),
		r.boolean("verify_ssl", &c.verifySSL),
	} {
		if step != nil {
			return c, "", step
		}
	}
	if base != "" {
		if _, err := r.baseURL(base); err != nil {
			return c, "", err
		}
	}
	switch c.errorScope {
	case "last", "all":
	default:
		return c, "", r.bad("error_scope", strconv.Quote(c.errorScope), "last or all")
	}
	switch c.dangling {
	case "checkin", "store":
	default:
		return c, "", r.bad("dangling_behavior", strconv.Quote(c.dangling), "checkin or store")
	}
	return c, base, nil
}

func newConfigReader(cfg providers.Config) configReader {
	r := configReader{s: cfg.Settings, where: Name}
	if cfg.Instance != "" {
		r.where += "::" + cfg.Instance
	}
	return r
}

// configReader reads the settings of one instance, named by where
// ("AnsibleTower::testing") in errors. Each method leaves dst alone when
// the key is not set.
type configReader struct {
	s     map[string]any
	where string
}

// bad is a complaint about one setting, which the broker locates in the
// settings file or the environment. v is never a secret's value.
func (r configReader) bad(key string, v any, want string) error {
	return fmt.Errorf("ansibletower: %s: %w", r.where, &providers.SettingError{Key: key, Err: fmt.Errorf("%v is not %s", v, want)})
}

// str reads a string; a number or a boolean is taken as its text.
func (r configReader) str(key string, dst *string) error {
	v, _, ok := providers.Setting(r.s, key)
	if !ok {
		return nil
	}
	switch v := v.(type) {
	case string:
		*dst = v
	case int, int64, float64, bool:
		*dst = fmt.Sprint(v)
	default:
		return r.bad(key, fmt.Sprintf("(%T)", v), "a string")
	}
	return nil
}

// secret reads a string that must not be shown: a wrong one is described
// by its kind only.
func (r configReader) secret(key string, dst *string) error {
	v, _, ok := providers.Setting(r.s, key)
	if !ok {
		return nil
	}
	if sv, ok := v.(string); ok {
		*dst = sv
		return nil
	}
	if _, ok := v.(map[string]any); ok {
		return r.bad(key, "(a map)", "a string")
	}
	*dst = fmt.Sprint(v)
	return nil
}

// seconds reads a duration in seconds; unset, it is def seconds.
func (r configReader) seconds(key string, def float64, dst *time.Duration) error {
	*dst = time.Duration(def * float64(time.Second))
	v, _, ok := providers.Setting(r.s, key)
	if !ok {
		return nil
	}
	d, err := providers.Seconds(v)
	if err != nil {
		if text, ok := v.(string); ok {
			return r.bad(key, strconv.Quote(text), "a positive number of seconds")
		}
		return r.bad(key, v, "a positive number of seconds")
	}
	*dst = d
	return nil
}

// labels reads a map of labels (null is unset).
func (r configReader) labels(key string, dst *map[string]any) error {
	v, _, ok := providers.Setting(r.s, key)
	if !ok || v == nil {
		return nil
	}
	m, ok := plain.Value(v).(map[string]any)
	if !ok {
		return r.bad(key, fmt.Sprintf("(%T)", v), "a map of labels")
	}
	*dst = m
	return nil
}

// boolean reads true or false.
func (r configReader) boolean(key string, dst *bool) error {
	v, _, ok := providers.Setting(r.s, key)
	if !ok {
		return nil
	}
	b, ok := v.(bool)
	if !ok {
		return r.bad(key, v, "true or false")
	}
	*dst = b
	return nil
}

// baseURL checks base_url (required; http or https; no credentials) and
// returns the server's root: base_url may be given with /api/ or /api/v2/
// appended, and the API root is detected below it.
func (r configReader) baseURL(base string) (*url.URL, error) {
	if base == "" {
		return nil, fmt.Errorf("ansibletower: setting %s.base_url is missing (e.g. https://tower.example.com/)", r.where)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, r.bad("base_url", strconv.Quote(base), "an http:// or https:// URL")
	}
	if u.User != nil {
		return nil, fmt.Errorf("ansibletower: %s: %w", r.where, &providers.SettingError{Key: "base_url", Err: errors.New("carries credentials: put them in username/password or token")})
	}
	u.RawQuery, u.Fragment = "", ""
	if i := strings.Index(u.Path, "/api/"); i >= 0 {
		u.Path = u.Path[:i]
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}
