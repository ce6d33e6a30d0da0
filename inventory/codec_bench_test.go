package inventory

import (
	"path/filepath"
	"testing"
)

// BenchmarkParse10k decodes 10,000 records shaped like the providers'
// (Container and AnsibleTower hosts with _broker_args and _brokertest).
func BenchmarkParse10k(b *testing.B) { benchParse10k(b, Parse) }

// BenchmarkParse10kGeneral is BenchmarkParse10k through yaml.v3 (the
// general reader, with its bounds), for comparison.
func BenchmarkParse10kGeneral(b *testing.B) { benchParse10k(b, decodeGeneral) }

func benchParse10k(b *testing.B, parse func(name string, data []byte) ([]*Record, error)) {
	data, err := Marshal(sampleRecords(10000))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		recs, err := parse("inventory.yaml", data)
		if err != nil || len(recs) != 10000 {
			b.Fatal(len(recs), err)
		}
	}
}

// BenchmarkLoadFilter10kRealistic is the CLI's "inventory --filter" over
// 10,000 provider-shaped records: a Store.Load and a seed-DSL filter.
func BenchmarkLoadFilter10kRealistic(b *testing.B) {
	path := filepath.Join(b.TempDir(), "inventory.yaml")
	recs := sampleRecords(10000)
	if err := Open(path).Update(func([]*Record) ([]*Record, error) { return recs, nil }); err != nil {
		b.Fatal(err)
	}
	flt, err := ParseFilter("name<host-99,_broker_args.container_host{brokertest")
	if err != nil {
		b.Fatal(err)
	}
	s := Open(path)
	b.ReportAllocs()
	for b.Loop() {
		got, err := s.Load()
		if err != nil {
			b.Fatal(err)
		}
		if n := len(flt.Apply(got)); n != 55 {
			b.Fatalf("matched %d", n)
		}
	}
}

// BenchmarkFilter10k applies filters of both forms to 10,000 records.
func BenchmarkFilter10k(b *testing.B) {
	recs := sampleRecords(10000)
	for _, c := range []struct{ name, filter string }{
		{"dsl", "name<host-99,_broker_args.container_host{brokertest"},
		{"dsl-extra", "tower_inventory=ci-inventory"},
		{"dsl-brokertest", "_brokertest.state=ready"},
		{"inv-name", `"host-99" in @inv.name`},
		{"inv-args", `@inv._broker_args.n > 5000 and @inv._broker_provider == "Container"`},
		{"inv-extra", `@inv.tower_inventory == "ci-inventory"`},
		{"inv-brokertest", `@inv._brokertest.state == "ready"`},
		{"inv-slice", `@inv._broker_provider == "AnsibleTower" | @inv[-10:]`},
	} {
		flt, err := ParseFilter(c.filter)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := flt.ApplyErr(recs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMarshal10k encodes 10,000 records, as a full rewrite does.
func BenchmarkMarshal10k(b *testing.B) {
	recs := sampleRecords(10000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(recs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeRecord encodes one provider-shaped record, as a write
// does for each record it changes.
func BenchmarkEncodeRecord(b *testing.B) {
	recs := sampleRecords(2)
	b.ReportAllocs()
	for b.Loop() {
		for _, r := range recs {
			if _, err := encodeRecord(r); err != nil {
				b.Fatal(err)
			}
		}
	}
}
