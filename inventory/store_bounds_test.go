package inventory_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/hostbroker/broker/inventory"
)

// The store never writes over a file it refused, and says why.
func TestStoreRefusesBombAndKeepsIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	bomb := aliasBomb(100, 10, 4, 120)
	if err := os.WriteFile(path, bomb, 0o600); err != nil {
		t.Fatal(err)
	}
	s := Open(path)
	if _, err := s.Load(context.Background()); !errors.Is(err, ErrLimit) {
		t.Fatalf("Load: %v", err)
	}
	err := s.Put(context.Background(), &Record{Hostname: "new", Broker: &Meta{ID: "n"}})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Put: %v", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, bomb) {
		t.Fatal("the refused file was rewritten")
	}
}

// aliasBomb is a file whose aliases expand to fanout^levels values per
// record (as the codec's test of the same name).
func aliasBomb(records, fanout, levels, padding int) []byte {
	var b bytes.Buffer
	b.WriteString("- hostname: h0\n  _brokertest:\n    id: x0\n    ignored:\n")
	fmt.Fprintf(&b, "      l0: &l0 [%s]\n", strings.TrimSuffix(strings.Repeat("x, ", fanout), ", "))
	for i := 1; i < levels; i++ {
		fmt.Fprintf(&b, "      l%d: &l%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), fanout), ", "))
	}
	pad := "[" + strings.TrimSuffix(strings.Repeat("1, ", padding), ", ") + "]"
	for r := 1; r < records; r++ {
		fmt.Fprintf(&b, "- hostname: h%d\n  pad: %s\n  extra: *l%d\n", r, pad, levels-1)
	}
	return b.Bytes()
}
