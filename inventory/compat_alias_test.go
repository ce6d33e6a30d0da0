package inventory

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hostbroker/broker/inventory/internal/codec"
)

// keptAsRead decodes data as the store does and says, for each record,
// whether a write that touches the records touched(i) must keep its bytes:
// it has bytes of its own, is not touched, and every record whose anchor
// it uses must keep its bytes too (an order-keeping write: no anchor of
// the same name moves between them).
func keptAsRead(t *testing.T, name string, data []byte, touched func(int) bool) (recs []*Record, raws [][]byte, keep []bool) {
	t.Helper()
	recs, raws, links, err := codec.DecodeFileLinked(name, data)
	if err != nil {
		t.Fatal(err)
	}
	keep = make([]bool, len(recs))
	for i := range recs {
		keep[i] = raws[i] != nil && !touched(i)
		if links == nil {
			continue
		}
		for _, u := range links[i].Uses {
			j := slices.Index(recs, u.Rec)
			if j < 0 || j >= i || !keep[j] {
				keep[i] = false
			}
		}
	}
	return recs, raws, keep
}

// A file the Python broker (ruamel.yaml) wrote with two hosts sharing one
// _broker_args dict (&id001 … *id001): a Put or Remove of a third record
// keeps both records' bytes exactly; a Remove or Put of the anchor's
// record, or a Put of the alias's, writes the alias's record anew with the
// shared values expanded, and Go and both Python libraries read the same
// values.
func TestSharedArgsAliasKeptOrExpanded(t *testing.T) {
	python := ""
	if !testing.Short() {
		python = pythonBridge(t)
	}
	src := filepath.Join("testdata", "compat", "keep", "shared-args-ruamel.yaml")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	recs, raws, _, err := codec.DecodeFileLinked(src, data)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || !bytes.Contains(raws[0], []byte("&id001")) || !bytes.Contains(raws[2], []byte("*id001")) {
		t.Fatalf("the fixture is not as expected: %q", raws)
	}
	anchor, other, alias := recs[0], recs[1], recs[2]
	ctx := context.Background()
	changed := func(r *Record) *Record {
		c := r.Clone()
		c.Args["changed"] = "yes"
		return c
	}
	for _, tc := range []struct {
		name     string
		change   func(s *Store) error
		want     []*Record
		keepFile []byte // the whole file expected, when all is kept
		kept     []int  // records of data whose bytes stay
		expanded bool   // the alias's record written anew
	}{
		{"put third", func(s *Store) error { return s.Put(ctx, changed(other)) },
			[]*Record{anchor, changed(other), alias}, nil, []int{0, 2}, false},
		{"remove third", func(s *Store) error { return s.Remove(ctx, other) },
			[]*Record{anchor, alias}, append(slices.Clone(raws[0]), raws[2]...), []int{0, 2}, false},
		{"put new", func(s *Store) error { return s.Put(ctx, &Record{Hostname: "new", Args: map[string]any{}}) },
			[]*Record{anchor, other, alias, {Hostname: "new", Args: map[string]any{}}}, nil, []int{0, 1, 2}, false},
		{"remove anchor", func(s *Store) error { return s.Remove(ctx, anchor) },
			[]*Record{other, alias}, nil, []int{1}, true},
		{"put anchor", func(s *Store) error { return s.Put(ctx, changed(anchor)) },
			[]*Record{changed(anchor), other, alias}, nil, []int{1}, true},
		{"put alias", func(s *Store) error { return s.Put(ctx, changed(alias)) },
			[]*Record{anchor, other, changed(alias)}, nil, []int{0, 1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "inventory.yaml")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := tc.change(Open(path)); err != nil {
				t.Fatal(err)
			}
			after, _ := os.ReadFile(path)
			if tc.keepFile != nil && !bytes.Equal(after, tc.keepFile) {
				t.Fatalf("file\n%s\nwant\n%s", after, tc.keepFile)
			}
			for _, i := range tc.kept {
				if !bytes.Contains(after, raws[i]) {
					t.Errorf("record %d's bytes changed:\n%q\nin\n%s", i, raws[i], after)
				}
			}
			if got := bytes.Contains(after, []byte("*id001")); got == tc.expanded {
				t.Errorf("alias kept: %v, want %v:\n%s", got, !tc.expanded, after)
			}
			got, err := Open(path).Load(ctx)
			if err != nil {
				t.Fatalf("%v\n%s", err, after)
			}
			if !codec.Equal(got, tc.want) {
				t.Fatalf("read back as\n%s\nwant\n%s", codec.Show(got), codec.Show(tc.want))
			}
			if python != "" {
				compareWithPython(t, python, path, tc.want, tc.name)
			}
		})
	}
}

// Two pairs using one anchor name (ruamel.yaml numbers anchors per dump,
// so files joined or edited by hand hold them): an alias refers to the
// nearest anchor before it. Rewriting the first pair (its anchor record
// changed, its alias record expanded) leaves the second pair's bytes and
// values; removing the second anchor's record expands the second alias
// with that record's values, not the first's. Records Go writes hold no
// anchors, so nothing it writes can capture an alias.
func TestSharedArgsSameAnchorNameTwice(t *testing.T) {
	python := ""
	if !testing.Short() {
		python = pythonBridge(t)
	}
	data := []byte("- hostname: a1\n  _broker_args: &id001\n    v: 1\n" +
		"- hostname: b1\n  _broker_args: *id001\n" +
		"- hostname: a2\n  _broker_args: &id001\n    v: 2\n" +
		"- hostname: b2\n  _broker_args: *id001\n")
	recs, raws, _, err := codec.DecodeFileLinked("x.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(raws, func(b []byte) bool { return b == nil }) || recs[3].Args["v"] != 2 {
		t.Fatalf("read as %s, bytes %q", codec.Show(recs), raws)
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s := Open(path)
	a1 := recs[0].Clone()
	a1.Args["v"] = "&id001" // text that looks like an anchor, written as text
	if err := s.Put(ctx, a1); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(path)
	want := []*Record{a1, {Hostname: "b1", Args: map[string]any{"v": 1}}, recs[2], recs[3]}
	if !bytes.HasSuffix(after, append(slices.Clone(raws[2]), raws[3]...)) || bytes.Count(after, []byte("*id001")) != 1 {
		t.Fatalf("the second pair not kept, or the first alias not expanded:\n%s", after)
	}
	// PyYAML refuses a document with one anchor name twice (ruamel.yaml
	// reads it, the nearest anchor counting): it reads the files below
	// only once a write has left one anchor.
	check := func(what string) {
		t.Helper()
		got, err := Open(path).Load(ctx)
		if err != nil || !codec.Equal(got, want) {
			t.Fatalf("%s: read back as %v\n%s\nwant\n%s", what, err, codec.Show(got), codec.Show(want))
		}
		if python != "" {
			data, _ := os.ReadFile(path)
			compareWithLibs(t, python, path, want, what, bytes.Count(data, []byte("&id001")) < 2)
		}
	}
	check("first pair rewritten")
	if err := s.Remove(ctx, recs[2]); err != nil {
		t.Fatal(err)
	}
	want = []*Record{want[0], want[1], recs[3]}
	after, _ = os.ReadFile(path)
	if bytes.Contains(after, []byte("*id001")) || recs[3].Args["v"] != 2 {
		t.Fatalf("the second alias not expanded:\n%s", after)
	}
	check("second anchor removed")

	// An update that moves an anchor of the same name between an anchor's
	// record and its alias's: the alias would refer to the moved one, so
	// its record is written anew with its own values.
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s = Open(path)
	if err := s.Update(ctx, func(rs []*Record) ([]*Record, error) {
		return []*Record{rs[2], rs[0], rs[1], rs[3]}, nil
	}); err != nil {
		t.Fatal(err)
	}
	after, _ = os.ReadFile(path)
	want = []*Record{recs[2], recs[0], recs[1], recs[3]}
	if !bytes.HasPrefix(after, slices.Concat(raws[2], raws[0], raws[1])) || bytes.Count(after, []byte("*id001")) != 1 {
		t.Fatalf("moved: want the first pair kept after the second anchor and the second alias expanded:\n%s", after)
	}
	check("anchor of the same name moved between")
}
