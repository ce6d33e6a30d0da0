package plain

import (
	"encoding/json"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestValue(t *testing.T) {
	var v any
	if err := yaml.Unmarshal([]byte("a: {1: one, true: [x, {2: two}]}\nb: [1, {c: d}]\n"), &v); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(Value(v)) // fails on any map[any]any left
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":{"1":"one","true":["x",{"2":"two"}]},"b":[1,{"c":"d"}]}`; string(out) != want {
		t.Fatalf("got %s, want %s", out, want)
	}
}
