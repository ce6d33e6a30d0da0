//go:build invbase

package invload

import "github.com/hostbroker/broker/inventory"

// The baseline's inventory API (commit 69f4458): see api.go.

// loadFile reads the inventory at path.
func loadFile(path string) ([]*inventory.Record, error) {
	return inventory.Open(path).Load()
}

// put writes rec into s (one locked write).
func put(s *inventory.Store, rec *inventory.Record) error { return s.Put(rec) }

// remove drops rec from s (one locked write).
func remove(s *inventory.Store, rec *inventory.Record) error { return s.Remove(rec) }

// applyFilter parses src and returns how many of recs it matches.
func applyFilter(src string, recs []*inventory.Record) (int, error) {
	f, err := inventory.ParseFilter(src)
	if err != nil {
		return 0, err
	}
	return len(f.Apply(recs)), nil
}
