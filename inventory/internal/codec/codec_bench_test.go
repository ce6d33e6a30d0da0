package codec

import "testing"

// BenchmarkParse10k decodes 10,000 records shaped like the providers'
// (Container and AnsibleTower hosts with _broker_args and _brokertest).
func BenchmarkParse10k(b *testing.B) { benchParse10k(b, Parse) }

// BenchmarkParse10kGeneral is BenchmarkParse10k through yaml.v3 (the
// general reader, with its bounds), for comparison.
func BenchmarkParse10kGeneral(b *testing.B) {
	benchParse10k(b, func(name string, data []byte) ([]*Record, error) {
		recs, _, err := decodeGeneral(name, data)
		return recs, err
	})
}

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
