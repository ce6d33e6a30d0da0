package inventory_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hostbroker/broker/inventory"
)

func FuzzParse(f *testing.F) {
	seed, err := os.ReadFile(pythonInventory)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte("- hostname: a\n  _brokertest: {id: x, owner: {pid: 1}}\n"))
	f.Add([]byte("[]"))
	f.Add([]byte("- hostname: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := inventory.Parse("fuzz.yaml", data)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		out, err := inventory.Marshal(recs)
		if err != nil {
			return // values yaml cannot re-encode are reported, not lost silently
		}
		again, err := inventory.Parse("again.yaml", out)
		if err != nil {
			t.Fatalf("re-parse of written inventory: %v\n%s", err, out)
		}
		if len(again) != len(recs) {
			t.Fatalf("records lost in a round trip: %d then %d", len(recs), len(again))
		}
	})
}

// BenchmarkPut measures one locked read-modify-write on a 100-record file.
func BenchmarkPut(b *testing.B) {
	s := inventory.Open(filepath.Join(b.TempDir(), "inventory.yaml"))
	for i := range 100 {
		if err := s.Put(context.Background(), &inventory.Record{Hostname: fmt.Sprint(i), Broker: &inventory.Meta{ID: fmt.Sprint(i)}}); err != nil {
			b.Fatal(err)
		}
	}
	r := &inventory.Record{Hostname: "x", Broker: &inventory.Meta{ID: "x"}}
	for b.Loop() {
		if err := s.Put(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}
