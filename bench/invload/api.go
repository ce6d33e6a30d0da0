//go:build !invbase

package invload

import (
	"context"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/inventory/filter"
)

// This file and api_base.go are the only parts of the program that differ
// between the two builds: the inventory API of the current tree here, the
// baseline's (built with -tags invbase, see build) there.

// loadFile reads the inventory at path.
func loadFile(path string) ([]*inventory.Record, error) {
	return inventory.Open(path).Load(context.Background())
}

// put writes rec into s (one locked write).
func put(s *inventory.Store, rec *inventory.Record) error {
	return s.Put(context.Background(), rec)
}

// remove drops rec from s (one locked write).
func remove(s *inventory.Store, rec *inventory.Record) error {
	return s.Remove(context.Background(), rec)
}

// applyFilter parses src and returns how many of recs it matches.
func applyFilter(src string, recs []*inventory.Record) (int, error) {
	f, err := filter.Parse(src)
	if err != nil {
		return 0, err
	}
	return len(f.Apply(recs)), nil
}
