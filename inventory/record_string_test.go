package inventory_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hostbroker/broker/inventory"
)

// A record printed with %v (or %s, or Println) is one readable line: no
// raw struct, no pointers, none of its arguments or SSH settings.
func TestRecordString(t *testing.T) {
	rec := &inventory.Record{
		Hostname: "vm1.example.com", Name: "local-3f2a9c", Provider: "Container", Instance: "podman",
		Args: map[string]any{"password": "hunter2"},
		Broker: &inventory.Meta{ID: "3f2a9c", State: inventory.StateReady,
			SSH: &inventory.SSH{User: "root", KeyFile: "/secret/key"}},
	}
	want := "local-3f2a9c vm1.example.com (Container::podman, id 3f2a9c, ready)"
	for _, format := range []string{"%v", "%s", "%+v"} {
		if got := fmt.Sprintf(format, rec); got != want {
			t.Errorf("%s: got %q, want %q", format, got, want)
		}
	}
	if got := fmt.Sprint([]*inventory.Record{rec}); got != "["+want+"]" {
		t.Errorf("a slice of records: %q", got)
	}
	for _, leak := range []string{"0x", "hunter2", "/secret/key", "&{"} {
		if strings.Contains(fmt.Sprint(rec), leak) {
			t.Errorf("%q in %q", leak, fmt.Sprint(rec))
		}
	}
	for _, tc := range []struct {
		rec  *inventory.Record
		want string
	}{
		{nil, "<nil>"},
		{&inventory.Record{}, "(unnamed host)"},
		{&inventory.Record{Hostname: "h", Name: "h", Provider: "SSH"}, "h (SSH)"},
		{&inventory.Record{Hostname: "vm.example.com"}, "vm.example.com"},
	} {
		if got := fmt.Sprint(tc.rec); got != tc.want {
			t.Errorf("%#v: got %q, want %q", tc.rec, got, tc.want)
		}
	}
}
