// Package inventory is the local record of every host checked out and not yet
// checked in: a YAML list shared by all processes of a user, in
// [the Python broker]'s format, so its inventory files carry over. Store
// reads and writes the file; Record is one host. The Python broker's
// filters over records are package inventory/filter. How the file's values
// are read and written (as the Python broker's ruamel.yaml does) is
// package inventory/internal/codec, whose types this package re-exports.
//
// [the Python broker]: https://github.com/SatelliteQE/broker
package inventory

import "github.com/hostbroker/broker/inventory/internal/codec"

// The record's types, defined by the codec that reads and writes them.
type (
	// Record is one host in the inventory (see codec.Record).
	Record = codec.Record
	// Meta is the _brokertest block of a record.
	Meta = codec.Meta
	// Owner identifies the run that checked a host out.
	Owner = codec.Owner
	// SSH is how to reach a host over SSH.
	SSH = codec.SSH
	// Date is a calendar date (Python's datetime.date) in a record's values.
	Date = codec.Date
)

// Naive is the location of a time the file holds without a zone (Python's
// naive datetime): such a time is written back without a zone. Make one
// with time.Date(…, inventory.Naive); see codec.Naive.
var Naive = codec.Naive

// States a record moves through.
const (
	StateCreating = codec.StateCreating // written before the provider is asked for a host
	StateReady    = codec.StateReady    // checked out and in use by its owner
	StateFree     = codec.StateFree     // kept for reuse until KeepUntil; leasable
	StateLeased   = codec.StateLeased   // a kept host leased by a later run
	StateKept     = codec.StateKept     // kept after a failure, for a person to inspect
	StateRemoving = codec.StateRemoving // check-in under way
)

// ErrLimit is returned (wrapped, with ErrCorrupt) for an inventory file
// over one of the bounds that keep reading any file cheap.
var ErrLimit = codec.ErrLimit

// Same reports whether a and b describe the same host: by _brokertest id
// when either has one, else by name and hostname together.
func Same(a, b *Record) bool { return codec.Same(a, b) }

// Parse decodes an inventory file's content; name is used in errors.
// An empty file, "[]" and "null" are empty inventories.
func Parse(name string, data []byte) ([]*Record, error) { return codec.Parse(name, data) }

// Marshal encodes records as an inventory file.
func Marshal(recs []*Record) ([]byte, error) { return codec.Marshal(recs) }
