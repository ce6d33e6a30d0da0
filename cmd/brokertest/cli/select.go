package cli

import (
	"fmt"
	"strconv"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/inventory/filter"
)

// selectRecords chooses the records a command acts on: every record with
// all, else those named by ids. An id is a local id (a position in the
// filtered list, as the inventory command prints), a _brokertest id, a
// name or a hostname. The filter narrows first; it never widens the
// selection. An id that matches nothing is an error naming it, and so is a
// filter that fails on a record (ApplyErr): a selection to check in is
// never a guess.
func selectRecords(recs []*inventory.Record, ids []string, all bool, f filter.Filter) ([]*inventory.Record, error) {
	filtered, err := f.ApplyErr(recs)
	if err != nil {
		return nil, err
	}
	if all {
		return filtered, nil
	}
	var out []*inventory.Record
	seen := map[*inventory.Record]bool{}
	add := func(r *inventory.Record) {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for _, id := range ids {
		if n, err := strconv.Atoi(id); err == nil {
			if n < 0 || n >= len(filtered) {
				return nil, fmt.Errorf("local id %d out of range (0..%d)", n, len(filtered)-1)
			}
			add(filtered[n])
			continue
		}
		found := false
		for _, r := range filtered {
			if id != "" && (r.ID() == id || r.Name == id || r.Hostname == id) {
				add(r)
				found = true
			}
		}
		if !found {
			if f.Empty() {
				return nil, fmt.Errorf("no host %q in the inventory", id)
			}
			return nil, fmt.Errorf("no host %q in the inventory matching filter %q", id, f.String())
		}
	}
	return out, nil
}
