package inventory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hostbroker/broker/internal/safefile"
	"github.com/hostbroker/broker/inventory/internal/codec"
	"github.com/hostbroker/broker/inventory/internal/filelock"
)

// ErrCorrupt is returned (wrapped) when the inventory file cannot be parsed.
// The file is then never written: a person must look at it.
var ErrCorrupt = codec.ErrCorrupt

// Store is an inventory file shared by every process of a user.
//
// Writers take the inventory lock in arrival order (see internal/filelock: a
// queue of tickets over an flock of <path>.flock, so a crashed holder never
// blocks the next one) and replace the file atomically (temp file, fsync,
// rename, fsync of the directory): a reader sees the old or the new list,
// never a torn one. The Python broker's lock is honoured around the rename
// (see internal/filelock).
//
// Updates that arrive together in one process share one hold of the lock
// and one write (group commit): a single goroutine takes the lock, applies
// every pending update in arrival order, writes once, and answers each
// caller with its own outcome. The records last read or written are kept,
// so a file that is still what this Store wrote is not parsed again, and
// records are encoded one by one, an unchanged record's bytes reused.
//
// After taking over the lock of a Python broker that died (perhaps in the
// middle of rewriting the file), records of the last version this library
// wrote (kept as .<name>.prev beside the file) that vanished are put back,
// and a copy of the file as found is kept (<name>.torn-<time>); each record
// put back is named in a warning on the Store's logger. Lock waits over a
// second are logged at debug level.
type Store struct {
	path   string
	logger *slog.Logger

	mu         sync.Mutex
	pending    []*op              // not yet taken into a batch, in arrival order
	running    bool               // a committer goroutine runs
	waitCancel context.CancelFunc // ends the committer's wait for the lock

	// cache is the file as this Store last wrote or read it; only the
	// committer goroutine (one at a time) uses it.
	cache *snapshot

	writes, parses atomic.Int64 // for tests
	beforeRename   func()       // for tests: called with the Python lock held
}

// Option configures a Store.
type Option func(*Store)

// WithLogger sets where the Store logs: lock waits over a second (debug)
// and records put back after a Python broker's crash (warning). The
// default is slog.Default() at the time of logging.
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.logger = l } }

// Open returns the store for the inventory file at path. Nothing is read or
// created until the first call.
func Open(path string, opts ...Option) *Store {
	s := &Store{path: path}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Store) log() *slog.Logger {
	if s.logger != nil {
		return s.logger
	}
	return slog.Default()
}

// Path returns the inventory file's path.
func (s *Store) Path() string { return s.path }

// prevPath is where the last version this library wrote is kept: a file
// of its own (written by temp file and rename; not a hard link, since the
// Python broker rewrites the live file's inode in place).
func (s *Store) prevPath() string {
	return filepath.Join(filepath.Dir(s.path), "."+filepath.Base(s.path)+".prev")
}

// tempPattern names temp files beside the inventory (removeLeftovers
// removes those of killed writers).
func (s *Store) tempPattern() string { return "." + filepath.Base(s.path) + ".tmp-*" }

// Load returns the records; none when the file does not exist. It takes no
// lock, since this library replaces the file atomically; but the Python
// broker rewrites it in place under its lock, so a file missing, empty or
// corrupt while that lock is held is read again once it is released (a
// wait of at most pythonLockWait). When ctx ends first, Load returns an
// error wrapping ctx's.
func (s *Store) Load(ctx context.Context) ([]*Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("inventory: load %s: %w", s.path, err)
	}
	recs, err := s.load()
	if err == nil && len(recs) > 0 {
		return recs, nil
	}
	py := s.pythonLockPath()
	data, rerr := safefile.ReadFile(py)
	if errors.Is(rerr, fs.ErrNotExist) && err == nil {
		return recs, nil // an empty inventory, or none yet
	}
	if _, _, ours := filelock.ParseMark(data); rerr == nil && !ours {
		wctx, cancel := context.WithTimeout(ctx, pythonLockWait)
		defer cancel()
		werr := poll(wctx, func() (bool, error) {
			_, err := os.Stat(py)
			return errors.Is(err, fs.ErrNotExist), nil
		})
		if werr != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("inventory: load %s: wait for the Python broker's lock %s: %w", s.path, py, werr)
		}
	}
	// Read again even when no lock is seen: it may have been released
	// between the first read and the look.
	return s.load()
}

// pythonLockWait bounds how long Load waits for the Python broker to finish
// rewriting the file: as long as the Python broker waits for its lock.
const pythonLockWait = 10 * time.Second

func (s *Store) load() ([]*Record, error) {
	data, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inventory: read %s: %w", s.path, err)
	}
	return Parse(s.path, data)
}

// poll calls try until it reports done, waiting between calls (0.5 ms,
// doubling up to 20 ms) and giving up when ctx ends.
func poll(ctx context.Context, try func() (done bool, err error)) error {
	wait := 500 * time.Microsecond
	for {
		done, err := try()
		if done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", filelock.ErrWait, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// Update runs fn on the records under the exclusive lock and writes back the
// records it returns, atomically. When fn returns an error nothing of it is
// written. A corrupt file is never overwritten.
//
// fn may be run more than once (when the Python broker wrote the file
// between the read and the write, the update is applied again to what it
// wrote), so it must start afresh each time, resetting whatever it
// records. It gets records of its own: changing them changes nothing
// until it returns them, and records it keeps after Update returns are
// not the store's.
//
// ctx bounds the wait for the lock. When ctx ends before the update is
// taken into a write, Update returns an error wrapping ctx's and the update
// is never applied; once taken, it waits for the write's outcome.
func (s *Store) Update(ctx context.Context, fn func([]*Record) ([]*Record, error)) error {
	return s.submit(&op{ctx: ctx, kind: opUpdate, fn: fn})
}

// Put adds each record, or replaces the record Same as it. What is written
// is each record as it is when Put is called (a deep copy): the caller may
// go on changing its records. ctx bounds the wait for the lock, as for
// Update.
func (s *Store) Put(ctx context.Context, recs ...*Record) error {
	o := &op{ctx: ctx, kind: opPut}
	for _, r := range recs {
		if r == nil {
			return errors.New("inventory: put of a nil record")
		}
		c := r.Clone()
		// Encoded here, in the caller's goroutine: not while holding
		// the lock.
		raw, err := codec.EncodeRecord(c)
		if err != nil {
			return err
		}
		o.recs = append(o.recs, c)
		o.raws = append(o.raws, raw)
	}
	return s.submit(o)
}

// Remove drops every record Same as any of recs. ctx bounds the wait for
// the lock, as for Update.
func (s *Store) Remove(ctx context.Context, recs ...*Record) error {
	o := &op{ctx: ctx, kind: opRemove}
	for _, r := range recs {
		if r == nil {
			continue
		}
		// What Same looks at, as it is now.
		k := &Record{Hostname: r.Hostname, Name: r.Name}
		if id := r.ID(); id != "" {
			k.Broker = &Meta{ID: id}
		}
		o.recs = append(o.recs, k)
	}
	return s.submit(o)
}

type opKind int

const (
	opUpdate opKind = iota
	opPut
	opRemove
)

// An op's state: waiting may become cancelled (by its caller, whose
// context ended) or taken (by the committer, at the point where a write
// cannot be undone for it any more); nothing else changes.
const (
	opWaiting int32 = iota
	opTaken
	opCancelled
)

// Phases of an op's wait, for the error its caller returns on giving up.
const (
	phaseLock int32 = iota
	phasePython
)

// op is one Update, Put or Remove waiting for, or in, a batch.
type op struct {
	ctx  context.Context
	kind opKind
	fn   func([]*Record) ([]*Record, error) // update
	recs []*Record                          // put: copies; remove: keys
	raws [][]byte                           // put: recs encoded

	state atomic.Int32
	phase atomic.Int32

	applyErr error // the outcome of its last application (committer only)
	err      error // its result, set before done is closed
	done     chan struct{}
}

func (o *op) finish(err error) {
	o.err = err
	close(o.done)
}

// waitError is what a caller gets when its context ends first.
func (s *Store) waitError(o *op) error {
	err := fmt.Errorf("%w: %w", filelock.ErrWait, o.ctx.Err())
	if o.phase.Load() == phasePython {
		return filelock.PythonLockError(s.pythonLockPath(), err)
	}
	return fmt.Errorf("inventory: lock %s: %w", s.flockPath(), err)
}

// submit queues o for the committer and waits for its outcome, or for its
// context to end while o is still waiting.
func (s *Store) submit(o *op) error {
	if o.ctx.Err() != nil {
		return s.waitError(o)
	}
	o.done = make(chan struct{})
	s.mu.Lock()
	s.pending = append(s.pending, o)
	if !s.running {
		s.running = true
		go s.commitLoop()
	}
	s.mu.Unlock()
	select {
	case <-o.done:
		return o.err
	case <-o.ctx.Done():
	}
	if !o.state.CompareAndSwap(opWaiting, opCancelled) {
		<-o.done // taken: its write is under way
		return o.err
	}
	// Nobody left waiting: end the committer's wait for the lock (it
	// leaves the queue).
	s.mu.Lock()
	if !anyWaiting(s.pending) && s.waitCancel != nil {
		s.waitCancel()
	}
	s.mu.Unlock()
	return s.waitError(o)
}

func anyWaiting(ops []*op) bool {
	for _, o := range ops {
		if o.state.Load() == opWaiting {
			return true
		}
	}
	return false
}

// lockWaitLogged is how long a wait for a lock must take to be logged.
const lockWaitLogged = time.Second

// commitLoop takes the lock and commits batches while updates are pending.
// Between batches it releases the lock and queues again, behind whoever
// arrived meanwhile.
func (s *Store) commitLoop() {
	for {
		s.mu.Lock()
		s.pending = slices.DeleteFunc(s.pending, func(o *op) bool { return o.state.Load() != opWaiting })
		if len(s.pending) == 0 {
			s.running = false
			s.waitCancel = nil
			s.mu.Unlock()
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		s.waitCancel = cancel
		s.mu.Unlock()

		start := time.Now()
		h, err := s.acquire(ctx)
		if wait := time.Since(start); wait > lockWaitLogged {
			ahead := -1
			if h != nil {
				ahead = h.Ahead
			}
			s.log().Debug("inventory: waited for the lock", "file", s.path, "wait", wait.Round(time.Millisecond), "queue_depth", ahead, "err", err)
		}
		s.mu.Lock()
		batch := s.pending
		s.pending = nil
		s.waitCancel = nil
		s.mu.Unlock()
		cancel()
		if err != nil {
			if errors.Is(err, filelock.ErrWait) {
				// Everyone waiting gave up; any who came since go
				// back in line.
				s.mu.Lock()
				s.pending = append(batch, s.pending...)
				s.mu.Unlock()
				continue
			}
			for _, o := range batch {
				if o.state.CompareAndSwap(opWaiting, opTaken) {
					o.finish(err)
				}
			}
			continue
		}
		s.runBatch(h, batch)
	}
}

// runBatch commits batch with the lock held, releases the lock and answers
// each caller taken into the write.
func (s *Store) runBatch(h *lockHeld, batch []*op) {
	taken, wrote, err := s.commit(h, batch)
	h.Release()
	if wrote {
		// The directory's fsync makes the rename durable across a power
		// loss; it is not needed for other processes, which see the
		// rename at once, so it runs after the lock is released. Callers
		// are answered only after it: nil means durable.
		if d, derr := os.Open(filepath.Dir(s.path)); derr == nil {
			if serr := d.Sync(); serr != nil && err == nil {
				err = fmt.Errorf("inventory: sync directory of %s: %w", s.path, serr)
			}
			d.Close()
		}
	}
	for _, o := range taken {
		switch {
		case o.applyErr != nil:
			o.finish(o.applyErr)
		default:
			o.finish(err)
		}
	}
	// Ops not taken were cancelled; their callers have returned.
}

// entry is a record with its exact encoding (nil until encoded).
type entry struct {
	rec *Record
	raw []byte
	// link, for a record read from a file with anchors and kept as read,
	// names the anchors raw holds and those of other records it uses: raw
	// reads as rec only after those records' own bytes (linkHolds). Nil
	// for records written anew, which hold no anchors or aliases.
	link *codec.Link
}

// fileIdent tells one version of the file from another.
type fileIdent struct {
	dev, ino           uint64
	size, mtime, ctime int64
	exists             bool
}

// snapshot is the file as read or written: its bytes and its records.
// Its entries are never changed: a batch builds new slices.
type snapshot struct {
	entries []entry
	data    []byte
	ident   fileIdent
	// indent is the column of the file's top-level list (codec.ListIndent):
	// records written anew are indented as much.
	indent int

	byRaw    map[string]int // entry index by encoding, built on first use
	hasIndex bool
}

// index returns the entries' indices by their encodings, or nil when an
// entry has none.
func (sn *snapshot) index() map[string]int {
	if sn.hasIndex {
		return sn.byRaw
	}
	sn.hasIndex = true
	m := make(map[string]int, len(sn.entries))
	for i, e := range sn.entries {
		// Bytes using another record's anchor do not stand alone.
		if e.raw == nil || e.link != nil && len(e.link.Uses) > 0 {
			return nil
		}
		m[string(e.raw)] = i
	}
	sn.byRaw = m
	return m
}

// readFile reads the inventory file and its identity; a missing file is
// empty.
func (s *Store) readFile() ([]byte, fileIdent, error) {
	f, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fileIdent{}, nil
	}
	if err != nil {
		return nil, fileIdent{}, fmt.Errorf("inventory: read %s: %w", s.path, err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fileIdent{}, fmt.Errorf("inventory: stat %s: %w", s.path, err)
	}
	data := make([]byte, 0, st.Size+512)
	for {
		n, err := f.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fileIdent{}, fmt.Errorf("inventory: read %s: %w", s.path, err)
		}
		if len(data) == cap(data) {
			data = slices.Grow(data, 4096)
		}
	}
	return data, identOf(&st), nil
}

// identOf is a file's identity. It only spares reading the file where
// it shows a change: an unchanged identity is confirmed by the bytes.
func identOf(st *syscall.Stat_t) fileIdent {
	mtime, ctime := statTimes(st)
	return fileIdent{
		dev: uint64(st.Dev), ino: uint64(st.Ino), size: st.Size,
		mtime: mtime, ctime: ctime, exists: true,
	}
}

// readBase returns the file's current snapshot, and whether it is the
// one this Store last wrote or read (then it was not parsed again).
func (s *Store) readBase() (*snapshot, bool, error) {
	data, id, err := s.readFile()
	if err != nil {
		return nil, false, err
	}
	// The identity alone could miss an in-place rewrite of the same
	// size within the file system's timestamp granularity: the bytes
	// are compared too (reading is cheap next to parsing).
	if c := s.cache; c != nil && c.ident == id && bytes.Equal(c.data, data) {
		return c, true, nil
	}
	snap, err := s.decode(s.cache, data, id)
	return snap, false, err
}

// decode parses the file's bytes. Items whose exact bytes are those of a
// record of prev are not parsed again (see reuseDecode).
func (s *Store) decode(prev *snapshot, data []byte, id fileIdent) (*snapshot, error) {
	s.parses.Add(1)
	if snap := reuseDecode(s.path, prev, data, id); snap != nil {
		return snap, nil
	}
	recs, raws, links, err := codec.DecodeFileLinked(s.path, data)
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			if _, serr := os.Stat(s.prevPath()); serr == nil {
				err = fmt.Errorf("%w (the last version this library wrote is kept in %s)", err, s.prevPath())
			}
		}
		return nil, err
	}
	snap := &snapshot{data: data, ident: id, entries: make([]entry, len(recs)), indent: codec.ListIndent(data)}
	for i, r := range recs {
		snap.entries[i].rec = r
		if raws != nil {
			snap.entries[i].raw = raws[i]
		}
		if links != nil && raws != nil && raws[i] != nil {
			snap.entries[i].link = &links[i]
		}
	}
	return snap, nil
}

// reuseDecode decodes data item by item, reusing each record of prev whose
// encoding recurs byte for byte, and decoding only the others; or returns
// nil when that cannot be done safely, for decodeFile to parse the whole.
//
// Other processes of this library write the same encoding and keep the
// bytes of records they did not change, so a file another process wrote
// differs from the one this Store last saw by the few records it changed:
// with many processes taking turns, parsing only those keeps the hold
// short as the file grows (1,600 records: 48 ms to parse on a loaded
// 2-core machine).
//
// In a file that is a top-level block sequence ("- " at column 0 first),
// a line at column 0 that starts "- " (or is "-") begins the next item:
// an item's content is indented, block scalars end at a line indented
// less, and a complete item cannot continue. So the file is cut there.
// A reused piece decoded alone to its record before; any other piece
// must decode alone to exactly one record, or everything is parsed as a
// whole (and fails or succeeds as decodeFile says): a piece cut wrongly
// (a quoted scalar continued at column 0, which yaml.v3 accepts) does not
// decode alone, nor does one with an alias of another item's anchor.
// Document markers make the whole file parsed.
//
// decodeFile bounds a file as a whole (its size, and what its aliases
// expand to): so a piece with anchors or aliases ('&' or '*' anywhere in
// it) is not decoded alone, and neither is any piece of a file over
// reuseMaxSize (the size up to which decodeFile reads files in any form).
func reuseDecode(name string, prev *snapshot, data []byte, id fileIdent) *snapshot {
	if prev == nil || len(prev.entries) == 0 || len(data) > reuseMaxSize || !bytes.HasPrefix(data, []byte("- ")) ||
		bytes.Contains(data, []byte("\n---")) || bytes.Contains(data, []byte("\n...")) {
		return nil
	}
	known := prev.index()
	if known == nil {
		return nil
	}
	snap := &snapshot{data: data, ident: id}
	for p := 0; p < len(data); {
		q := nextItem(data, p)
		piece := data[p:q:q]
		p = q
		if i, ok := known[string(piece)]; ok {
			snap.entries = append(snap.entries, prev.entries[i])
			continue
		}
		if bytes.ContainsAny(piece, "&*") {
			return nil
		}
		recs, _, err := codec.DecodeFile(name, piece)
		if err != nil || len(recs) != 1 {
			return nil
		}
		snap.entries = append(snap.entries, entry{rec: recs[0], raw: piece})
	}
	return snap
}

// reuseMaxSize bounds the files reuseDecode cuts: 16 MiB, what decodeFile
// reads in any form.
const reuseMaxSize = 16 << 20

// nextItem returns where the item that begins at p ends: at the next line
// that begins with "- " or is "-", or at the end.
func nextItem(data []byte, p int) int {
	for {
		j := bytes.IndexByte(data[p:], '\n')
		if j < 0 {
			return len(data)
		}
		p += j + 1
		if p >= len(data) {
			return len(data)
		}
		if data[p] == '-' && (p+1 == len(data) || data[p+1] == ' ' || data[p+1] == '\n' || data[p+1] == '\r') {
			return p
		}
	}
}

// apply applies the waiting ops in order to base, each on the result of
// the ones before, and returns the result and the ops it applied. An op
// whose function fails is left out (its error in applyErr), the others
// are not affected: each function gets copies of the records, so nothing
// it changed before failing stays.
func apply(base []entry, ops []*op) (cur []entry, applied []*op) {
	cur = base
	for _, o := range ops {
		if o.state.Load() == opCancelled {
			continue
		}
		applied = append(applied, o)
		o.applyErr = nil
		switch o.kind {
		case opPut:
			cur = slices.Clone(cur)
		next:
			for i, r := range o.recs {
				e := entry{rec: r, raw: o.raws[i]}
				for j := range cur {
					if Same(cur[j].rec, r) {
						cur[j] = e
						continue next
					}
				}
				cur = append(cur, e)
			}
		case opRemove:
			cur = slices.DeleteFunc(slices.Clone(cur), func(e entry) bool {
				return slices.ContainsFunc(o.recs, func(r *Record) bool { return Same(e.rec, r) })
			})
		case opUpdate:
			out, err := applyUpdate(cur, o.fn)
			if err != nil {
				o.applyErr = err
				continue
			}
			cur = out
		}
	}
	return cur, applied
}

// applyUpdate runs fn on copies of cur's records. A record it returns
// unchanged keeps its entry (and encoding); one it changed or added is
// copied (the caller may keep it) and encoded.
func applyUpdate(cur []entry, fn func([]*Record) ([]*Record, error)) ([]entry, error) {
	in := make([]*Record, len(cur))
	from := make(map[*Record]int, len(cur))
	for i, e := range cur {
		in[i] = e.rec.Clone()
		from[in[i]] = i
	}
	out, err := fn(in)
	if err != nil {
		return nil, err
	}
	next := make([]entry, 0, len(out))
	for _, r := range out {
		if r == nil {
			return nil, errors.New("inventory: an update returned a nil record")
		}
		if i, ok := from[r]; ok && reflect.DeepEqual(r, cur[i].rec) {
			next = append(next, cur[i])
			continue
		}
		c := r.Clone()
		raw, err := codec.EncodeRecord(c)
		if err != nil {
			return nil, err
		}
		next = append(next, entry{rec: c, raw: raw})
	}
	return next, nil
}

// sameEntries reports whether a and b hold the same records in the same
// order.
func sameEntries(a, b []entry) bool {
	return slices.EqualFunc(a, b, func(x, y entry) bool { return x.rec == y.rec })
}

// encode returns the file's bytes for entries, encoding those not yet
// encoded (in place: entries is a batch's own slice). In a file whose list
// is indented by indent, the records written anew (which start at the
// margin, where none of the file's can) are indented as much.
func encode(entries []entry, indent int) ([]byte, error) {
	if len(entries) == 0 {
		return []byte("[]\n"), nil
	}
	n := 0
	for i := range entries {
		// A record using another's anchor keeps its bytes only while
		// that record keeps its own and precedes it; else it is written
		// anew, the shared values expanded.
		if l := entries[i].link; l != nil && len(l.Uses) > 0 && !linkHolds(entries[:i], l) {
			entries[i].raw = nil
		}
		if entries[i].raw == nil {
			raw, err := codec.EncodeRecord(entries[i].rec)
			if err != nil {
				return nil, err
			}
			entries[i].raw = raw
			entries[i].link = nil
		}
		if indent > 0 && bytes.HasPrefix(entries[i].raw, []byte("- ")) {
			entries[i].raw = codec.IndentRecord(entries[i].raw, indent)
		}
		n += len(entries[i].raw)
	}
	data := make([]byte, 0, n+len(entries))
	for _, e := range entries {
		data = append(data, e.raw...)
		// The last item of a file read may lack its line's end.
		if !bytes.HasSuffix(e.raw, []byte("\n")) {
			data = append(data, '\n')
		}
	}
	return data, nil
}

// linkHolds reports whether the bytes of a record with link l, written
// after before, read as that record: each record whose anchor it uses is
// in before, kept as read (its link still there), and no record after it
// in before holds an anchor of the same name. Records written anew hold
// no anchors, so only records kept as read can.
func linkHolds(before []entry, l *codec.Link) bool {
	for _, u := range l.Uses {
		j := slices.IndexFunc(before, func(e entry) bool { return e.rec == u.Rec })
		if j < 0 || before[j].link == nil {
			return false
		}
		for _, e := range before[j+1:] {
			if e.link != nil && slices.Contains(e.link.Anchors, u.Name) {
				return false
			}
		}
	}
	return true
}

// takeOps takes the waiting ops of batch into the write: from here their
// callers wait for its outcome.
func takeOps(batch []*op) []*op {
	var taken []*op
	for _, o := range batch {
		if o.state.CompareAndSwap(opWaiting, opTaken) {
			taken = append(taken, o)
		}
	}
	return taken
}

// commit applies batch and writes the result, holding the lock h. It
// returns the ops taken (to be answered: those whose function failed with
// applyErr, the others with err), and whether it renamed a new file.
//
// What runs under the lock, and why:
//   - the read, checked against the bytes last written or read (no parse
//     when this Store wrote the file last);
//   - the functions (they must see the latest records), then the encoding
//     of the records they changed (Put's records come encoded);
//   - the temp file's write and fsync: the fsync must precede the rename,
//     or a crash could leave a renamed empty file;
//   - the Python broker's lock, then a check that the file is still what
//     was read, the rename, the release;
//   - the previous version's copy (no fsync: it is for a Python broker's
//     crash, not a power loss).
//
// The directory's fsync follows the release (see runBatch). The steps are
// prepare (under the flock alone), takeBatchPythonLock, and publish (under
// the Python broker's lock too).
func (s *Store) commit(h *lockHeld, batch []*op) (taken []*op, wrote bool, err error) {
	if !anyWaiting(batch) {
		return nil, false, nil
	}
	p := &prepared{}
	defer func() {
		if p.tmp != "" {
			os.Remove(p.tmp)
		}
	}()
	done, err := s.prepare(p, batch)
	if err != nil {
		return failBatch(nil, batch, err)
	}
	if done {
		return takeOps(batch), false, nil
	}
	pl, err := s.takeBatchPythonLock(h, batch)
	if err != nil {
		return failBatch(nil, batch, err)
	}
	return s.publish(h, pl, p, batch)
}

// failBatch ends a commit that failed with err: the ops taken, and those
// of batch still waiting (taken now), are all answered with err, whatever
// their functions returned.
func failBatch(taken, batch []*op, err error) ([]*op, bool, error) {
	taken = append(taken, takeOps(batch)...)
	for _, o := range taken {
		o.applyErr = nil
	}
	return taken, false, err
}

// prepared is a batch applied to the file as read under the flock, and
// the new file written for it, before the Python broker's lock is taken.
type prepared struct {
	base    *snapshot // the file as read
	baseErr error     // why it could not be read (then base is nil)
	cur     []entry   // the records to write
	applied []*op     // the ops applied to get cur
	changed bool      // cur is not base's records
	data    []byte    // cur encoded, when changed
	tmp     string    // the temp file holding data; "" when none (commit removes it)
}

// prepare reads the file and applies batch to it; when that changed the
// records it encodes them and writes the temp file (p.tmp). It reports
// done when there is nothing to write and the file is what this Store
// wrote or read last.
func (s *Store) prepare(p *prepared, batch []*op) (done bool, err error) {
	s.removeLeftovers()
	var cached bool
	p.base, cached, p.baseErr = s.readBase()
	if p.baseErr == nil {
		p.cur, p.applied = apply(p.base.entries, batch)
		p.changed = !sameEntries(p.cur, p.base.entries)
		if !p.changed && cached {
			// Nothing to write, and the file is what this Store wrote
			// or read last: a state it really had.
			return true, nil
		}
	}
	if p.baseErr == nil && p.changed {
		if p.data, err = encode(p.cur, p.base.indent); err != nil {
			return false, err
		}
		if p.tmp, err = s.writeTemp(p.data); err != nil {
			return false, err
		}
	}
	return false, nil
}

// takeBatchPythonLock takes the Python broker's lock for batch, giving up
// when none of its ops waits any more.
func (s *Store) takeBatchPythonLock(h *lockHeld, batch []*op) (*pythonLock, error) {
	// The Python broker's lock, after the gap that leaves it room.
	for _, o := range batch {
		o.phase.Store(phasePython)
	}
	if gap := h.PythonGap(); gap > 0 {
		time.Sleep(gap)
	}
	start := time.Now()
	pl, err := s.takePythonLock(func() error {
		if !anyWaiting(batch) {
			return fmt.Errorf("%w: %w", filelock.ErrWait, context.Canceled)
		}
		return nil
	})
	if wait := time.Since(start); wait > lockWaitLogged {
		s.log().Debug("inventory: waited for the Python broker's lock", "file", s.path, "wait", wait.Round(time.Millisecond), "err", err)
	}
	return pl, err
}

// publish runs under the Python broker's lock pl, which it releases: it
// takes the ops of batch still waiting, checks the file is still what p
// was prepared from (preparing again if not), renames the temp file over
// it, releases the lock, and keeps the previous version. Its results are
// commit's.
func (s *Store) publish(h *lockHeld, pl *pythonLock, p *prepared, batch []*op) (taken []*op, wrote bool, err error) {
	released := false
	release := func() {
		if released {
			return
		}
		released = true
		held := time.Since(pl.Taken)
		if rerr := pl.Release(); rerr != nil {
			// What was written stands; the lock file is someone
			// else's business now.
			s.log().Warn("inventory: release the Python broker's lock", "err", rerr)
		}
		h.NotePythonHold(time.Now(), held)
	}
	defer release()

	taken = takeOps(batch)
	if len(taken) == 0 {
		return nil, false, nil
	}
	if err = s.recheck(p, pl, taken); err != nil {
		return failBatch(taken, batch, err)
	}
	if !p.changed {
		// Verified under the Python lock: the file was what was read.
		s.cache = p.base
		return taken, false, nil
	}
	if s.beforeRename != nil {
		s.beforeRename()
	}
	if err := os.Rename(p.tmp, s.path); err != nil {
		return failBatch(taken, batch, fmt.Errorf("inventory: replace %s: %w", s.path, err))
	}
	p.tmp = ""
	release()
	// The identity is taken after the release: should the Python broker
	// have rewritten the file in the meantime, the cache's bytes no longer
	// match and the file is read again.
	var st syscall.Stat_t
	statErr := syscall.Stat(s.path, &st)
	s.writes.Add(1)
	s.keepPrevious(p.data)
	if statErr == nil {
		s.cache = &snapshot{entries: p.cur, data: p.data, ident: identOf(&st), indent: p.base.indent}
	} else {
		s.cache = nil
	}
	return taken, true, err
}

// recheck runs under the Python broker's lock pl, before the rename: it
// makes p hold the records to write for the ops taken, applied to the
// file as it is now.
func (s *Store) recheck(p *prepared, pl *pythonLock, taken []*op) error {
	// Is the file still what was read? If not (the Python broker wrote
	// it in place, or it was torn and could not be read, or a Python
	// broker died holding its lock), read it again and apply the ops
	// again: their functions may be run again.
	nowData, nowID, err := s.readFile()
	if err != nil {
		return err
	}
	same := p.baseErr == nil && nowID == p.base.ident && bytes.Equal(nowData, p.base.data)
	if !same || pl.TookOver || len(taken) != len(p.applied) {
		if !same {
			if p.base, err = s.decode(p.base, nowData, nowID); err != nil {
				if pl.TookOver {
					err = fmt.Errorf("%w; a Python broker died while holding its lock, perhaps in the middle of rewriting it", err)
				}
				return err
			}
		}
		entries := p.base.entries
		restored := false
		if pl.TookOver {
			entries, restored = s.restoreVanished(entries, nowData)
		}
		p.cur, _ = apply(entries, taken)
		p.changed = restored || !sameEntries(p.cur, p.base.entries)
		if p.tmp != "" {
			os.Remove(p.tmp)
			p.tmp = ""
		}
		if p.changed {
			if p.data, err = encode(p.cur, p.base.indent); err != nil {
				return err
			}
			if p.tmp, err = s.writeTemp(p.data); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeTemp writes data to a new temp file beside the inventory (0600)
// and fsyncs it; on failure nothing is left.
func (s *Store) writeTemp(data []byte) (string, error) {
	tmp, err := safefile.CreateTemp(filepath.Dir(s.path), s.tempPattern())
	if err != nil {
		return "", fmt.Errorf("inventory: write %s: %w", s.path, err)
	}
	name := tmp.Name()
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("inventory: write %s: %w", s.path, err)
	}
	return name, nil
}

// keepPrevious keeps a copy of what was just written as the previous
// version (see prevPath). It is best effort: the write it copies has
// succeeded.
func (s *Store) keepPrevious(data []byte) {
	tmp, err := safefile.CreateTemp(filepath.Dir(s.path), s.tempPattern())
	if err != nil {
		return
	}
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.prevPath())
	}
	if err != nil {
		os.Remove(tmp.Name())
		s.log().Debug("inventory: keep the previous version", "file", s.prevPath(), "err", err)
	}
}

// restoreVanished is called after taking over the lock of a Python broker
// that died, perhaps in the middle of rewriting the file: records of the
// last version this library wrote that are missing from entries are put
// back (at the end), a copy of the file as found is kept, and each record
// put back is named in a warning. A record the Python broker removed on
// purpose after that version is put back too: a host listed twice is
// checked in and dropped again, a host lost is leaked.
func (s *Store) restoreVanished(entries []entry, found []byte) ([]entry, bool) {
	prevData, err := safefile.ReadFile(s.prevPath())
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log().Warn("inventory: cannot read the previous version to check for records lost", "file", s.prevPath(), "err", err)
		}
		return entries, false
	}
	prev, prevRaws, err := codec.DecodeFile(s.prevPath(), prevData)
	if err != nil {
		s.log().Warn("inventory: cannot read the previous version to check for records lost", "file", s.prevPath(), "err", err)
		return entries, false
	}
	var vanished []entry
	var names []string
	for i, p := range prev {
		if slices.ContainsFunc(entries, func(e entry) bool { return Same(e.rec, p) }) {
			continue
		}
		e := entry{rec: p}
		if prevRaws != nil {
			e.raw = prevRaws[i]
		}
		vanished = append(vanished, e)
		names = append(names, codec.Label(p))
	}
	if len(vanished) == 0 {
		return entries, false
	}
	torn := s.path + ".torn-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	if err := writeNew(torn, found); err != nil {
		torn = "(not kept: " + err.Error() + ")"
	}
	s.log().Warn("inventory: a Python broker died while rewriting the inventory; records it lost were put back",
		"file", s.path, "restored", names, "torn_copy", torn, "previous", s.prevPath())
	return append(slices.Clone(entries), vanished...), true
}

// writeNew writes data to a new file at name (0600), never through a
// link or over anything already there.
func writeNew(name string, data []byte) error {
	f, err := safefile.Create(name, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
