package inventory

// TEMPORARY skeleton: replaced by the real implementation.

// Store is an inventory file shared by processes under a file lock.
type Store struct {
	path string
}

// Open returns the store for the inventory file at path (created on first write).
func Open(path string) *Store { return &Store{path: path} }

// Path returns the inventory file's path.
func (s *Store) Path() string { return s.path }

// Load returns the records (none when the file does not exist).
func (s *Store) Load() ([]*Record, error) { panic("todo") }

// Update runs fn on the records under the exclusive lock and writes back what
// it returns, atomically.
func (s *Store) Update(fn func([]*Record) ([]*Record, error)) error { panic("todo") }

// Put adds rec, or replaces the record Same as it.
func (s *Store) Put(recs ...*Record) error { panic("todo") }

// Remove drops the records Same as any of recs.
func (s *Store) Remove(recs ...*Record) error { panic("todo") }

// Filter is a parsed filter expression of the DSL.
type Filter struct{}

// ParseFilter parses "prop<value,prop!=value".
func ParseFilter(s string) (Filter, error) { panic("todo") }

// Match reports whether rec passes every term.
func (f Filter) Match(rec *Record) bool { panic("todo") }
