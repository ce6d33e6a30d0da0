package settings_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// Small assertion helpers: the standard library only, so this package's
// tests don't depend on testify's YAML dependency being in go.sum.

func msg(args []any) string {
	if len(args) == 0 {
		return ""
	}
	if f, ok := args[0].(string); ok && len(args) > 1 {
		return ": " + fmt.Sprintf(f, args[1:]...)
	}
	return ": " + fmt.Sprint(args...)
}

func noErr(t *testing.T, err error, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error%s: %v", msg(args), err)
	}
}

func isErr(t *testing.T, err error, args ...any) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected an error%s", msg(args))
	}
}

func eq(t *testing.T, got, want any, args ...any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("not equal%s:\n got: %#v\nwant: %#v", msg(args), got, want)
	}
}

// has reports whether container (string, map or slice) holds item (a
// substring, a key or an element).
func has(container, item any) bool {
	if s, ok := container.(string); ok {
		return strings.Contains(s, item.(string))
	}
	v := reflect.ValueOf(container)
	switch v.Kind() {
	case reflect.Map:
		return v.MapIndex(reflect.ValueOf(item)).IsValid()
	case reflect.Slice:
		for i := range v.Len() {
			if reflect.DeepEqual(v.Index(i).Interface(), item) {
				return true
			}
		}
	}
	return false
}

func contains(t *testing.T, container, item any, args ...any) {
	t.Helper()
	if !has(container, item) {
		t.Errorf("%#v does not contain %#v%s", container, item, msg(args))
	}
}

func notContains(t *testing.T, container, item any, args ...any) {
	t.Helper()
	if has(container, item) {
		t.Errorf("%#v contains %#v%s", container, item, msg(args))
	}
}

func isTrue(t *testing.T, b bool, args ...any) {
	t.Helper()
	if !b {
		t.Errorf("expected true%s", msg(args))
	}
}

func empty(t *testing.T, v any, args ...any) {
	t.Helper()
	if rv := reflect.ValueOf(v); v != nil && rv.Len() != 0 {
		t.Errorf("expected empty, got %#v%s", v, msg(args))
	}
}

func mustTrue(t *testing.T, b bool, args ...any) {
	t.Helper()
	if !b {
		t.Fatalf("expected true%s", msg(args))
	}
}

func isNil(t *testing.T, v any, args ...any) {
	t.Helper()
	if v != nil {
		t.Errorf("expected nil, got %#v%s", v, msg(args))
	}
}

func mustLen(t *testing.T, v any, n int, args ...any) {
	t.Helper()
	if l := reflect.ValueOf(v).Len(); l != n {
		t.Fatalf("expected %d items, got %d: %#v%s", n, l, v, msg(args))
	}
}
