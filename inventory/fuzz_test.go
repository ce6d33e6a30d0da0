package inventory_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hostbroker/broker/inventory"
)

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"", "name<test", "name<a,_broker_args.provider!=RHEV", "x{y", "x}y", "a.b.c!<d", "=", "!", ",", "a..b=c", "a!!=b"} {
		f.Add(s)
	}
	// The @inv expression form.
	for _, s := range []string{
		`"test" in @inv.hostname`,
		`@inv._broker_provider == "AnsibleTower"`,
		`@inv._broker_args.template.startswith("deploy-sat")`,
		`@inv[-1]`, `@inv[3:7]`, `@inv[:2]`, `@inv[::-2]`, `@inv[-9223372036854775808::-9223372036854775808]`,
		`"test" in @inv.name | @inv._broker_args.provider != "RHV"`,
		`not (@inv.os_distribution_version < 9.0 or @inv["release"] in ["6.14", None, True])`,
		`@inv.name.lower().strip(" x").endswith(("abc", 'c\x41\u00e9'))`,
		`1 < @inv._broker_args.cpu <= 8 and @inv.reported_devices.nics[-1] not in "eth0|eth1"`,
		`@inv.name == "unterminated`, `@inv. == 1`, `@inv.a =~ 1`, `@inv.a == 1 | name<x`, `@inv[1:2:0]`, `@inv`, `((@inv))`,
	} {
		f.Add(s)
	}
	recs, err := inventory.Open(pythonInventory).Load()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := inventory.ParseFilter(s)
		if err != nil {
			if !strings.Contains(err.Error(), "filter term") && !strings.Contains(err.Error(), "filter expression") {
				t.Fatalf("error %q does not name the term or expression", err)
			}
			return
		}
		got, _ := flt.ApplyErr(recs)
		if len(got) > len(recs) {
			t.Fatalf("filter widened the selection")
		}
		if again := flt.Apply(recs); len(again) != len(got) {
			t.Fatalf("Apply and ApplyErr differ: %d and %d records", len(again), len(got))
		}
		for _, r := range recs {
			flt.Match(r)
		}
	})
}

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

// BenchmarkLoadFilter10k is the CLI's "inventory --filter" over 10,000 records.
func BenchmarkLoadFilter10k(b *testing.B) {
	path := filepath.Join(b.TempDir(), "inventory.yaml")
	recs := make([]*inventory.Record, 10000)
	for i := range recs {
		recs[i] = &inventory.Record{
			Hostname: fmt.Sprintf("host-%d.example.com", i), Name: fmt.Sprintf("host-%d", i),
			Provider: "Container", Args: map[string]any{"container_host": "brokertest/debian-sshd:12", "n": i},
			Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateReady, SSH: &inventory.SSH{Port: 2000 + i%1000}},
		}
	}
	if err := inventory.Open(path).Update(func([]*inventory.Record) ([]*inventory.Record, error) { return recs, nil }); err != nil {
		b.Fatal(err)
	}
	flt, err := inventory.ParseFilter("name<host-99,_broker_args.container_host{brokertest")
	if err != nil {
		b.Fatal(err)
	}
	s := inventory.Open(path)
	b.ResetTimer()
	for b.Loop() {
		got, err := s.Load()
		if err != nil {
			b.Fatal(err)
		}
		if n := len(flt.Apply(got)); n != 111 {
			b.Fatalf("matched %d", n)
		}
	}
}

// BenchmarkPut measures one locked read-modify-write on a 100-record file.
func BenchmarkPut(b *testing.B) {
	s := inventory.Open(filepath.Join(b.TempDir(), "inventory.yaml"))
	for i := range 100 {
		if err := s.Put(&inventory.Record{Hostname: fmt.Sprint(i), Broker: &inventory.Meta{ID: fmt.Sprint(i)}}); err != nil {
			b.Fatal(err)
		}
	}
	r := &inventory.Record{Hostname: "x", Broker: &inventory.Meta{ID: "x"}}
	for b.Loop() {
		if err := s.Put(r); err != nil {
			b.Fatal(err)
		}
	}
}
