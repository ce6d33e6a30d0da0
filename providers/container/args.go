package container

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/hostbroker/broker/internal/plain"
)

// PortSpec is one port to publish: the container port ("22/tcp") and the
// loopback host port (0: the engine picks a free one).
type PortSpec struct {
	Container string // "number/proto"
	HostPort  int
}

// ParsePorts reads the ports argument in the Python broker's forms:
//
//	"22"                      container port 22/tcp on a free host port
//	"22:1337"                 container 22/tcp on host port 1337
//	"53/udp" "53/udp:5353"    another protocol
//	"22 8080:1337 53/udp"     several, separated by spaces (or commas)
//
// a list of such items, or a map of container port to host port
// ({"22/tcp": 1337, "8080": null}). Ports are always published on 127.0.0.1.
func ParsePorts(v any) ([]PortSpec, error) {
	var out []PortSpec
	switch v := plain.Value(v).(type) {
	case nil:
		return nil, nil
	case string:
		for _, item := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' }) {
			ps, err := parsePortItem(item)
			if err != nil {
				return nil, err
			}
			out = append(out, ps)
		}
	case int, int64, float64:
		ps, err := parsePortItem(fmt.Sprint(v))
		if err != nil {
			return nil, err
		}
		out = append(out, ps)
	case []any:
		for _, item := range v {
			more, err := ParsePorts(item)
			if err != nil {
				return nil, err
			}
			out = append(out, more...)
		}
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			cport, err := normalizePort(k)
			if err != nil {
				return nil, err
			}
			host := 0
			switch h := v[k].(type) {
			case nil:
			case int:
				host = h
			case int64:
				host = int(h)
			case float64:
				host = int(h)
			case string:
				if h != "" {
					if host, err = strconv.Atoi(h); err != nil {
						return nil, fmt.Errorf("ports: host port %q of %s is not a number", h, k)
					}
				}
			default:
				return nil, fmt.Errorf("ports: host port of %s: want a number, got %T", k, h)
			}
			if host < 0 || host > 65535 {
				return nil, fmt.Errorf("ports: host port %d of %s out of range", host, k)
			}
			out = append(out, PortSpec{Container: cport, HostPort: host})
		}
	default:
		return nil, fmt.Errorf("ports: want a string, list or map, got %T", v)
	}
	return out, nil
}

func parsePortItem(item string) (PortSpec, error) {
	if strings.Count(item, ":") > 1 {
		// Docker's -p ip:host:container: another order, and an address.
		return PortSpec{}, fmt.Errorf("ports: item %q: want container[/proto][:host], the Python broker's order (docker -p's is the reverse); ports are always published on 127.0.0.1", item)
	}
	cport, host, hasHost := strings.Cut(item, ":")
	c, err := normalizePort(cport)
	if err != nil {
		return PortSpec{}, fmt.Errorf("ports: item %q: %w", item, err)
	}
	ps := PortSpec{Container: c}
	if hasHost {
		n, err := strconv.Atoi(host)
		if err != nil || n < 0 || n > 65535 {
			return PortSpec{}, fmt.Errorf("ports: item %q: host port %q is not a port number", item, host)
		}
		ps.HostPort = n
	}
	return ps, nil
}

// normalizePort turns "22" or "22/TCP" into "22/tcp".
func normalizePort(s string) (string, error) {
	num, proto, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok || proto == "" {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return "", fmt.Errorf("port %q: unknown protocol %q", s, proto)
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("port %q: not a port number", s)
	}
	return strconv.Itoa(n) + "/" + proto, nil
}

// parseEnv reads env (or the Python broker's environment) as a map, a list
// of "K=V", or a string "K=V,K2=V2".
func parseEnv(v any) ([]string, error) {
	var out []string
	switch v := plain.Value(v).(type) {
	case nil:
	case map[string]any:
		for k, val := range v {
			if k == "" || strings.Contains(k, "=") {
				return nil, fmt.Errorf("env: variable name %q: want a name without '='", k)
			}
			if val == nil {
				val = ""
			}
			out = append(out, k+"="+fmt.Sprint(val))
		}
	case []any:
		for _, item := range v {
			s, ok := item.(string)
			if !ok || !strings.Contains(s, "=") {
				return nil, fmt.Errorf("env: item %v is not K=V", item)
			}
			out = append(out, s)
		}
	case string:
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			if !strings.Contains(s, "=") {
				return nil, fmt.Errorf("env: item %q is not K=V", s)
			}
			out = append(out, s)
		}
	default:
		return nil, fmt.Errorf("env: want a map, list or string, got %T", v)
	}
	sort.Strings(out)
	return out, nil
}

// parseLabels reads the labels argument (or the Python broker's
// provider_labels): a map of container labels. Values are written as text.
func parseLabels(args map[string]any) (map[string]string, error) {
	out := map[string]string{}
	for _, key := range []string{"provider_labels", "labels"} {
		switch v := plain.Value(args[key]).(type) {
		case nil:
		case map[string]any:
			for k, val := range v {
				if k == "" {
					return nil, fmt.Errorf("%s: an empty label name", key)
				}
				if val == nil {
					val = ""
				}
				out[k] = fmt.Sprint(val)
			}
		default:
			return nil, fmt.Errorf("%s: want a map of labels, got %T", key, v)
		}
	}
	return out, nil
}

// envOf reads the env argument of args (or its Python broker name,
// environment) as K=V items.
func envOf(args map[string]any) ([]string, error) {
	v := args["env"]
	if v == nil {
		v = args["environment"]
	}
	return parseEnv(v)
}

// parseCommand reads command: a list is the argv, a string runs with /bin/sh -c.
func parseCommand(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		if v == "" {
			return nil, nil
		}
		return []string{"/bin/sh", "-c", v}, nil
	case []string:
		return v, nil
	case []any:
		out := make([]string, len(v))
		for i, a := range v {
			s, ok := a.(string)
			if !ok {
				s = fmt.Sprint(a)
			}
			out[i] = s
		}
		return out, nil
	}
	return nil, fmt.Errorf("command: want a string or list, got %T", v)
}

// parseVolumes reads volumes as binds: a list of "src:dst[:opts]", a map
// src -> dst, or docker-py's map src -> {bind: dst, mode: ro}.
func parseVolumes(v any) ([]string, error) {
	var out []string
	switch v := plain.Value(v).(type) {
	case nil:
	case string:
		out = strings.Fields(v)
	case []any:
		for _, item := range v {
			s, ok := item.(string)
			if !ok {
				return nil, fmt.Errorf("volumes: item %v is not src:dst", item)
			}
			out = append(out, s)
		}
	case map[string]any:
		for src, d := range v {
			switch d := d.(type) {
			case string:
				out = append(out, src+":"+d)
			case map[string]any:
				bind, _ := d["bind"].(string)
				if bind == "" {
					return nil, fmt.Errorf("volumes: %s: no bind path", src)
				}
				b := src + ":" + bind
				if mode, _ := d["mode"].(string); mode != "" {
					b += ":" + mode
				}
				out = append(out, b)
			default:
				return nil, fmt.Errorf("volumes: %s: want a path or {bind, mode}, got %T", src, d)
			}
		}
	default:
		return nil, fmt.Errorf("volumes: want a list or map, got %T", v)
	}
	for _, b := range out {
		if !strings.Contains(b, ":") {
			return nil, fmt.Errorf("volumes: %q is not src:dst", b)
		}
	}
	sort.Strings(out)
	return out, nil
}

// argString reads a string argument.
func argString(args map[string]any, key string) (string, error) {
	v, ok := args[key]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("argument %s: want a string, got %T", key, v)
	}
	return s, nil
}

// argBool reads a boolean argument; def when absent.
func argBool(args map[string]any, key string, def bool) (bool, error) {
	v, ok := args[key]
	if !ok || v == nil {
		return def, nil
	}
	b, err := parseBool(v)
	if err != nil {
		return def, fmt.Errorf("argument %s: %w", key, err)
	}
	return b, nil
}

// parseBool accepts a YAML/JSON boolean or its text ("true", "0", …).
func parseBool(v any) (bool, error) {
	switch v := v.(type) {
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("%q is not a boolean", v)
		}
		return b, nil
	}
	return false, fmt.Errorf("want a boolean, got %T", v)
}

// argsJSON encodes the checkout arguments for the args label.
func argsJSON(args map[string]any) string {
	b, err := json.Marshal(args)
	if err != nil {
		return "{}"
	}
	return string(b)
}
