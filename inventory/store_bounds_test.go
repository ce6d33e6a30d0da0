package inventory_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/inventory/internal/codec"
)

// The store never writes over a file it refused, and says why.
func TestStoreRefusesBombAndKeepsIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	bomb := codec.AliasBomb(100, 10, 4, 120)
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
