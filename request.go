package broker

import (
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/hostbroker/broker/internal/plain"
	"github.com/hostbroker/broker/providers"
)

// plan is a request resolved against settings: which provider instance and
// with which arguments.
type plan struct {
	provider string
	instance string
	args     map[string]any
}

// resolve merges a request's arguments (nick < ArgsFile < Args), loads
// file-valued arguments and picks the provider: Request.Provider, else the
// provider claiming the arguments' keys, else the default.
func (b *Broker) resolve(req Request) (plan, error) {
	args := map[string]any{}
	if req.Nick != "" {
		nick, err := b.settings.Nick(req.Nick)
		if err != nil {
			return plan{}, fmt.Errorf("broker: nick %q: %w", req.Nick, err)
		}
		plain.Merge(args, nick)
	}
	if req.ArgsFile != "" {
		fileArgs, err := loadArgsFile(req.ArgsFile)
		if err != nil {
			return plan{}, err
		}
		plain.Merge(args, fileArgs)
	}
	plain.Merge(args, cloneMap(req.Args))
	if err := resolveFileArgs(args); err != nil {
		return plan{}, err
	}
	pl := plan{provider: req.Provider, instance: req.Instance, args: args}
	if pl.provider == "" {
		name, err := providers.Infer(args)
		if err != nil {
			return plan{}, fmt.Errorf("broker: %w", err)
		}
		pl.provider = name
	}
	if pl.provider == "" {
		pl.provider = DefaultProvider
	}
	// The Python broker's "--AnsibleTower testing": an argument named after the
	// provider picks its instance.
	for k, v := range args {
		if strings.EqualFold(k, pl.provider) {
			if inst, ok := v.(string); ok {
				if pl.instance == "" {
					pl.instance = inst
				}
				delete(args, k)
			}
		}
	}
	return pl, nil
}

// loadArgsFile reads a JSON or YAML file whose top-level keys become arguments.
func loadArgsFile(path string) (map[string]any, error) {
	v, err := loadDataFile(path)
	if err != nil {
		return nil, fmt.Errorf("broker: args file: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("broker: args file %s: top level is %s, want a map of arguments", path, kindOf(v))
	}
	return m, nil
}

// loadDataFile decodes a .json file as JSON and anything else as YAML (a
// superset of JSON), with maps as map[string]any.
func loadDataFile(path string) (any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v any
	if strings.EqualFold(filepath.Ext(path), ".json") {
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return v, nil
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return plain.Value(v), nil
}

// resolveFileArgs replaces argument values that name an existing .json,
// .yaml or .yml file by the file's contents, as the Python broker's --extra does.
func resolveFileArgs(args map[string]any) error {
	for k, v := range args {
		s, ok := v.(string)
		if !ok {
			continue
		}
		switch strings.ToLower(filepath.Ext(s)) {
		case ".json", ".yaml", ".yml":
		default:
			continue
		}
		if st, err := os.Stat(s); err != nil || st.IsDir() {
			continue
		}
		val, err := loadDataFile(s)
		if err != nil {
			return fmt.Errorf("broker: argument %q: %w", k, err)
		}
		args[k] = val
	}
	return nil
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "empty"
	case []any:
		return "a list"
	case string:
		return "a string"
	}
	return fmt.Sprintf("%T", v)
}

func currentUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}
