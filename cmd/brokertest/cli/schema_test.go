package cli

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The --json output is checked against the JSON Schemas in
// testdata/schema by this checker of the subset they use: type,
// properties, required, additionalProperties (false), items, enum,
// minimum, and $ref to "FILE#/$defs/NAME" or "#/$defs/NAME". A keyword it
// does not know is an error, so a schema cannot claim more than is
// checked. (A JSON Schema library would be a dependency of the module for
// five small files; this is sixty lines.)

type schemaChecker struct {
	dir   string
	files map[string]map[string]any
}

func newSchemaChecker(t *testing.T) *schemaChecker {
	t.Helper()
	return &schemaChecker{dir: filepath.Join("testdata", "schema"), files: map[string]map[string]any{}}
}

func (c *schemaChecker) file(name string) (map[string]any, error) {
	if s, ok := c.files[name]; ok {
		return s, nil
	}
	data, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		return nil, err
	}
	var s map[string]any
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c.files[name] = s
	return s, nil
}

// check validates the JSON document doc against schema file name.
func (c *schemaChecker) check(name string, doc []byte) error {
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	s, err := c.file(name)
	if err != nil {
		return err
	}
	return c.validate(name, s, v, "$")
}

func (c *schemaChecker) validate(file string, s map[string]any, v any, at string) error {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys) // $ref first, then the rest in a fixed order
	for _, k := range keys {
		var err error
		switch want := s[k]; k {
		case "$comment", "$defs":
		case "$ref":
			err = c.ref(file, want.(string), v, at)
		case "type":
			if typ := jsonType(v); typ != want && !(want == "number" && typ == "integer") {
				err = fmt.Errorf("%s: a %s, want a %s", at, typ, want)
			}
		case "enum":
			if !slices.ContainsFunc(want.([]any), func(e any) bool { return e == v }) {
				err = fmt.Errorf("%s: %v is not one of %v", at, v, want)
			}
		case "minimum":
			if n, ok := v.(float64); ok && n < want.(float64) {
				err = fmt.Errorf("%s: %v is below %v", at, n, want)
			}
		case "required":
			if m, ok := v.(map[string]any); ok {
				for _, r := range want.([]any) {
					if _, ok := m[r.(string)]; !ok {
						err = fmt.Errorf("%s: no %q", at, r)
						break
					}
				}
			}
		case "properties":
			if m, ok := v.(map[string]any); ok {
				for p, ps := range want.(map[string]any) {
					if pv, ok := m[p]; ok {
						if err = c.validate(file, ps.(map[string]any), pv, at+"."+p); err != nil {
							break
						}
					}
				}
			}
		case "additionalProperties":
			if m, ok := v.(map[string]any); ok && want == false {
				props, _ := s["properties"].(map[string]any)
				for p := range m {
					if _, ok := props[p]; !ok {
						err = fmt.Errorf("%s: unexpected %q", at, p)
						break
					}
				}
			}
		case "items":
			if a, ok := v.([]any); ok {
				for i, e := range a {
					if err = c.validate(file, want.(map[string]any), e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
						break
					}
				}
			}
		default:
			err = fmt.Errorf("%s: schema keyword %q is not checked here", file, k)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *schemaChecker) ref(from, ref string, v any, at string) error {
	file, frag, _ := strings.Cut(ref, "#")
	if file == "" {
		file = from
	}
	s, err := c.file(file)
	if err != nil {
		return err
	}
	name, ok := strings.CutPrefix(frag, "/$defs/")
	def, _ := s["$defs"].(map[string]any)[name].(map[string]any)
	if !ok || def == nil {
		return fmt.Errorf("%s: no definition %q", from, ref)
	}
	return c.validate(file, def, v, at)
}

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		if v == math.Trunc(v) {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// The checker fails what the schemas rule out, so a passing check means
// something.
func TestSchemaCheckerRejects(t *testing.T) {
	c := newSchemaChecker(t)
	good := `{"dry_run":false,"selected":[],"checked_in":[],"failed":[],"count":{"selected":0,"checked_in":0,"failed":0},"summary":"x"}`
	if err := c.check("cleanup.json", []byte(good)); err != nil {
		t.Fatalf("a good result: %v", err)
	}
	for name, doc := range map[string]string{
		"missing key":   `{"dry_run":false,"selected":[],"checked_in":[],"failed":[],"count":{"selected":0,"checked_in":0,"failed":0}}`,
		"wrong type":    `{"dry_run":"no","selected":[],"checked_in":[],"failed":[],"count":{"selected":0,"checked_in":0,"failed":0},"summary":"x"}`,
		"extra key":     `{"dry_run":false,"selected":[],"checked_in":[],"failed":[],"count":{"selected":0,"checked_in":0,"failed":0},"summary":"x","more":1}`,
		"negative":      `{"dry_run":false,"selected":[],"checked_in":[],"failed":[],"count":{"selected":-1,"checked_in":0,"failed":0},"summary":"x"}`,
		"bad record":    `{"dry_run":false,"selected":[{"hostname":"h"}],"checked_in":[],"failed":[],"count":{"selected":0,"checked_in":0,"failed":0},"summary":"x"}`,
		"bad state":     `{"dry_run":false,"selected":[{"_broker_provider":"Local","_brokertest":{"id":"1","state":"gone"}}],"checked_in":[],"failed":[],"count":{"selected":0,"checked_in":0,"failed":0},"summary":"x"}`,
		"not an object": `[]`,
	} {
		if err := c.check("cleanup.json", []byte(doc)); err == nil {
			t.Errorf("%s: accepted %s", name, doc)
		}
	}
	if err := c.check("error.json", []byte(`{"error":"x","exit":0}`)); err == nil {
		t.Error("error.json accepted exit 0")
	}
}
