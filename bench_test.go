package broker_test

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
	_ "github.com/hostbroker/broker/providers/container"
)

const busyboxImage = "brokertest/busybox:1"

// leak checks n containers out through a broker whose process "dies": the
// records stay in the inventory, as after a killed run.
func leak(b *testing.B, dir, image string, n int) []*inventory.Record {
	b.Helper()
	br, err := broker.New(broker.WithDirectory(dir), broker.WithReaper(false))
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	hosts, err := br.Checkout(context.Background(), broker.Request{Count: n, Args: map[string]any{"container_host": image}})
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]*inventory.Record, len(hosts))
	for i, h := range hosts {
		recs[i] = br.Record(h)
		h.Close()
	}
	return recs
}

// BenchmarkCleanup100Containers: checking in 100 leaked containers (what
// "brokertest cleanup" does) against a parallel "docker rm -f" of the same
// 100. The broker also updates the inventory and removes key directories.
func BenchmarkCleanup100Containers(b *testing.B) {
	if out, err := exec.Command("docker", "image", "inspect", busyboxImage).CombinedOutput(); err != nil {
		b.Skipf("image %s: %s", busyboxImage, out)
	}
	b.Run("broker", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			dir := b.TempDir()
			recs := leak(b, dir, busyboxImage, 100)
			br, err := broker.New(broker.WithDirectory(dir), broker.WithReaper(false))
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := br.CheckinRecords(context.Background(), recs...); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			br.Close()
			b.StartTimer()
		}
	})
	b.Run("docker-rm-parallel", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			dir := b.TempDir()
			recs := leak(b, dir, busyboxImage, 100)
			var ids []string
			for _, r := range recs {
				ids = append(ids, r.Name)
			}
			b.StartTimer()
			// 16 docker CLIs at once, like the broker's bound.
			var wg sync.WaitGroup
			for i := range 16 {
				wg.Go(func() {
					var mine []string
					for j := i; j < len(ids); j += 16 {
						mine = append(mine, ids[j])
					}
					if out, err := exec.Command("docker", append([]string{"rm", "-fv"}, mine...)...).CombinedOutput(); err != nil {
						b.Error(err, string(out))
					}
				})
			}
			wg.Wait()
		}
	})
}

// BenchmarkPool64On4: 64 parallel holders, one Execute each, on a pool of 4
// Container hosts, against 64 fresh containers. Reported: checkouts, and for
// the pool its wall time over the ideal (4 concurrent checkouts + 16 rounds of
// one Execute), measured in the same run.
func BenchmarkPool64On4(b *testing.B) {
	if out, err := exec.Command("docker", "image", "inspect", sshdImage).CombinedOutput(); err != nil {
		b.Skipf("image %s: %s", sshdImage, strings.TrimSpace(string(out)))
	}
	req := broker.Request{Args: map[string]any{"container_host": sshdImage}}
	ctx := context.Background()
	run := func(h *hostkit.Host) {
		if res, err := h.Execute(ctx, "hostname"); err != nil || res.Status != 0 {
			b.Fatalf("execute: %v %+v", err, res)
		}
	}
	b.Run("pool", func(b *testing.B) {
		var ideal, wall time.Duration
		checkouts := 0
		for b.Loop() {
			br, err := broker.New(broker.WithDirectory(b.TempDir()), broker.WithReaper(false))
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			p, err := br.NewPool(ctx, req, 4, broker.PoolOptions{})
			if err != nil {
				b.Fatal(err)
			}
			var wg sync.WaitGroup
			for range 64 {
				wg.Go(func() {
					h, err := p.Acquire(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					run(h)
					if err := p.Release(ctx, h, true); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
			wall += time.Since(start)
			n, _ := p.Stats()
			checkouts += n
			b.StopTimer()
			if err := p.Close(ctx); err != nil {
				b.Error(err)
			}
			// The ideal, measured now: 4 concurrent checkouts, and 16
			// sequential Executes on one host.
			t0 := time.Now()
			hosts, err := br.Checkout(ctx, broker.Request{Count: 4, Args: req.Args})
			if err != nil {
				b.Fatal(err)
			}
			co := time.Since(t0)
			t0 = time.Now()
			for range 16 {
				run(hosts[0])
			}
			ideal += co + time.Since(t0)
			_ = br.Checkin(ctx, hosts...)
			br.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(checkouts)/float64(b.N), "checkouts/op")
		b.ReportMetric(float64(wall)/float64(ideal), "wall/ideal")
	})
	b.Run("fresh", func(b *testing.B) {
		for b.Loop() {
			br, err := broker.New(broker.WithDirectory(b.TempDir()), broker.WithReaper(false))
			if err != nil {
				b.Fatal(err)
			}
			var wg sync.WaitGroup
			for range 64 {
				wg.Go(func() {
					hosts, err := br.Checkout(ctx, req)
					if err != nil {
						b.Error(err)
						return
					}
					run(hosts[0])
					if err := br.Checkin(ctx, hosts...); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
			br.Close()
		}
		b.ReportMetric(64, "checkouts/op")
	})
}
