package filter_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/inventory/filter"
)

// sampleRecords returns n records shaped like those providers write:
// Container and AnsibleTower hosts with _broker_args and _brokertest (the
// records of inventory's own benchmarks).
func sampleRecords(n int) []*inventory.Record {
	recs := make([]*inventory.Record, n)
	base := time.Date(2026, 11, 30, 9, 15, 0, 0, time.UTC)
	for i := range recs {
		keep := base.Add(time.Duration(i) * time.Hour)
		owner := inventory.Owner{Run: fmt.Sprintf("%016x", i*7919), PID: 4000 + i, Started: uint64(123456 + i), BootID: "47261ecd-7982-492e-b928-51a0e7c693b0", Machine: "ci-runner-3"}
		if i%2 == 0 {
			recs[i] = &inventory.Record{
				Hostname: fmt.Sprintf("host-%d.example.com", i), Name: fmt.Sprintf("host-%d", i),
				Provider: "Container", Instance: "docker",
				Args: map[string]any{"container_host": "brokertest/debian-sshd:12", "n": i, "ports": []any{"22/tcp"}},
				Broker: &inventory.Meta{ID: fmt.Sprintf("%012x", i), State: inventory.StateReady, Owner: owner, Test: fmt.Sprintf("TestCheckout/case_%d", i),
					CheckedOut: base, SSH: &inventory.SSH{Port: 2000 + i%1000, User: "root", KeyFile: "/home/ci/.cache/brokertest/keys/id_ed25519"},
					Data: map[string]any{"container_id": fmt.Sprintf("%064x", i), "engine": "unix:///run/user/1000/podman/podman.sock", "image": "brokertest/debian-sshd:12",
						"ports": map[string]any{"22/tcp": fmt.Sprintf("127.0.0.1:%d", 32768+i%1000)}}},
			}
			continue
		}
		recs[i] = &inventory.Record{
			Hostname: fmt.Sprintf("dhcp-%d-%d.lab.example.com", i/250, i%250), Name: fmt.Sprintf("ci-rhel9-%d", i), IP: fmt.Sprintf("10.%d.%d.%d", i/65536%256, i/256%256, i%256),
			Provider: "AnsibleTower", Instance: "production",
			Args:  map[string]any{"workflow": "deploy-rhel", "deploy_rhel_version": "9.4", "provider": "RHEV", "host_type": "host"},
			Facts: map[string]any{"os_distribution": "RHEL", "os_distribution_version": "9.4", "ansible_port": 22},
			Broker: &inventory.Meta{ID: fmt.Sprintf("%012x", i), State: inventory.StateFree, Owner: owner, CheckedOut: base, KeepUntil: &keep,
				Data: map[string]any{"job_id": 100000 + i, "job_type": "workflow_job", "api_url": fmt.Sprintf("https://tower.example.com/api/v2/workflow_jobs/%d/", 100000+i)}},
			Extra: map[string]any{"tower_inventory": "ci-inventory", "type": "host"},
		}
	}
	return recs
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
	benchLoadFilter(b, path, recs, 111)
}

// BenchmarkLoadFilter10kRealistic is the CLI's "inventory --filter" over
// 10,000 provider-shaped records: a Store.Load and a term filter.
func BenchmarkLoadFilter10kRealistic(b *testing.B) {
	b.ReportAllocs()
	benchLoadFilter(b, filepath.Join(b.TempDir(), "inventory.yaml"), sampleRecords(10000), 55)
}

// benchLoadFilter writes recs to path, then times loading the file and
// applying the CLI's term filter, which must match want records.
func benchLoadFilter(b *testing.B, path string, recs []*inventory.Record, want int) {
	if err := inventory.Open(path).Update(context.Background(), func([]*inventory.Record) ([]*inventory.Record, error) { return recs, nil }); err != nil {
		b.Fatal(err)
	}
	flt, err := filter.Parse("name<host-99,_broker_args.container_host{brokertest")
	if err != nil {
		b.Fatal(err)
	}
	s := inventory.Open(path)
	b.ResetTimer()
	for b.Loop() {
		got, err := s.Load(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if n := len(flt.Apply(got)); n != want {
			b.Fatalf("matched %d, want %d", n, want)
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
		flt, err := filter.Parse(c.filter)
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
