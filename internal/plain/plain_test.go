package plain

import (
	"encoding/json"
	"reflect"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"
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

func TestMerge(t *testing.T) {
	src := map[string]any{"a": map[string]any{"x": 1}, "b": 2}
	dst := map[string]any{"a": map[string]any{"y": 3}, "c": 4}
	Merge(dst, src)
	out, _ := json.Marshal(dst)
	if want := `{"a":{"x":1,"y":3},"b":2,"c":4}`; string(out) != want {
		t.Fatalf("got %s, want %s", out, want)
	}
	fresh := map[string]any{}
	Merge(fresh, src)
	Merge(fresh, map[string]any{"a": map[string]any{"z": 5}})
	if _, changed := src["a"].(map[string]any)["z"]; changed {
		t.Fatal("a later merge changed src's nested map")
	}
}

// Go values given in code read as their JSON-like forms.
func TestValueGoTypes(t *testing.T) {
	got := Value(map[string]any{
		"ports": map[string]int{"8080": 18080},
		"list":  []int{1, 2},
		"env":   map[string]string{"A": "1"},
		"bytes": []byte("x"),
	})
	want := map[string]any{
		"ports": map[string]any{"8080": 18080},
		"list":  []any{1, 2},
		"env":   map[string]any{"A": "1"},
		"bytes": []byte("x"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Value = %#v, want %#v", got, want)
	}
}

// TestValueLeavesItsInput: one request's arguments are read by several
// checkouts at once (go test -race sees a write), and stay as given.
func TestValueLeavesItsInput(t *testing.T) {
	in := map[string]any{"env": map[string]any{"A": map[any]any{1: "x"}}, "list": []any{map[any]any{true: 1}}}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			out := Value(in).(map[string]any)
			if _, ok := out["env"].(map[string]any)["A"].(map[string]any); !ok {
				t.Errorf("nested map[any]any not converted: %#v", out)
			}
		})
	}
	wg.Wait()
	if _, ok := in["env"].(map[string]any)["A"].(map[any]any); !ok {
		t.Errorf("the input was changed: %#v", in)
	}
	if _, ok := in["list"].([]any)[0].(map[any]any); !ok {
		t.Errorf("the input's list was changed: %#v", in)
	}
}
