package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
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

// childFirst times its first and second checkouts of a Local host (reaper
// on unless REAPER=off), prints them, and checks the hosts in once its
// standard input closes.
func childFirst(t *testing.T) {
	opts := []broker.Option{broker.WithSignalHandling(false)}
	if os.Getenv("REAPER") == "off" {
		opts = append(opts, broker.WithReaper(false))
	}
	b, err := broker.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var hosts []*hostkit.Host
	for _, which := range []string{"first", "second"} {
		start := time.Now()
		h, err := b.Checkout(ctx, broker.Request{})
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h...)
		fmt.Println(which, took.Nanoseconds())
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := b.Checkin(ctx, hosts...); err != nil {
		t.Error(err)
	}
	_ = b.Close()
}

// BenchmarkReaperCost measures what the reaper's watcher costs a process:
// the time of its first checkout (which starts the watcher: this
// executable re-run) and of its second, with the reaper on (the default)
// and off, and the watcher's resident memory once it is up (it has read
// its owner's directory and holds the owner's lock), beside its owner's;
// watcher-anon-MiB is the part of it that is the watcher's own (RssAnon:
// the rest are the executable's pages, shared with the owner).
// Each iteration runs two child processes (the test binary re-run), one
// with the reaper and one without, one after the other so that both see
// the same machine, each checking out two Local hosts; ns/op is both
// children's whole runs. Times are medians over the iterations. Signal
// handling is off in the children (it costs a goroutine and a
// signal.Notify, nothing measurable).
func BenchmarkReaperCost(b *testing.B) {
	var first, second [2][]time.Duration // [on, off]
	var watcherKiB, anonKiB, ownerKiB []int
	for b.Loop() {
		for i, mode := range []string{"on", "off"} {
			f, s, w, a, o := firstCheckout(b, mode)
			first[i], second[i] = append(first[i], f), append(second[i], s)
			if mode == "on" {
				watcherKiB, anonKiB, ownerKiB = append(watcherKiB, w), append(anonKiB, a), append(ownerKiB, o)
			}
		}
	}
	ms := func(d []time.Duration) float64 { slices.Sort(d); return float64(d[len(d)/2].Microseconds()) / 1000 }
	mib := func(k []int) float64 { slices.Sort(k); return float64(k[len(k)/2]) / 1024 }
	b.ReportMetric(ms(first[0]), "first-on-ms")
	b.ReportMetric(ms(first[1]), "first-off-ms")
	b.ReportMetric(ms(second[0]), "second-on-ms")
	b.ReportMetric(ms(second[1]), "second-off-ms")
	b.ReportMetric(mib(watcherKiB), "watcher-RSS-MiB")
	b.ReportMetric(mib(anonKiB), "watcher-anon-MiB")
	b.ReportMetric(mib(ownerKiB), "owner-RSS-MiB")
}

// firstCheckout runs one childFirst and returns its two checkout times,
// its watcher's resident memory and the anonymous part of it (0 without a
// reaper: the rest is the executable's pages, shared with the owner) and
// its own, in KiB.
func firstCheckout(b *testing.B, mode string) (first, second time.Duration, watcherKiB, watcherAnonKiB, ownerKiB int) {
	dir := b.TempDir()
	cmd := child(b, "first", []string{"BROKER_DIRECTORY=" + dir, "REAPER=" + mode})
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(out)
	for first == 0 || second == 0 {
		if !sc.Scan() {
			b.Fatal("the child ended before its checkouts")
		}
		which, ns, _ := strings.Cut(sc.Text(), " ")
		d, _ := strconv.ParseInt(ns, 10, 64)
		switch which {
		case "first":
			first = time.Duration(d)
		case "second":
			second = time.Duration(d)
		}
	}
	if mode == "on" {
		watcher := watcherOf(b, cmd.Process.Pid)
		files := ownerFiles(b, dir)
		deadline := time.Now().Add(waitBound)
		for len(files) != 1 || !flockedBy(b, files[0], watcher) {
			if time.Now().After(deadline) {
				b.Fatal("the watcher never took its owner's lock")
			}
			time.Sleep(10 * time.Millisecond)
			files = ownerFiles(b, dir)
		}
		watcherKiB, watcherAnonKiB = vmRSS(b, watcher), procStatus(b, watcher, "RssAnon")
	}
	ownerKiB = vmRSS(b, cmd.Process.Pid)
	_ = stdin.Close()
	for sc.Scan() {
	}
	if err := cmd.Wait(); err != nil {
		b.Fatalf("child: %v", err)
	}
	waitWatcherGone(b, cmd.Process.Pid)
	return first, second, watcherKiB, watcherAnonKiB, ownerKiB
}

// vmRSS is the resident memory of process pid in KiB (/proc/<pid>/status).
func vmRSS(b *testing.B, pid int) int { return procStatus(b, pid, "VmRSS") }

// procStatus is the field (in kB) of /proc/<pid>/status, in KiB.
func procStatus(b *testing.B, pid int, field string) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				b.Fatalf("%s of %d: %q", field, pid, rest)
			}
			return kib
		}
	}
	b.Fatalf("no %s for process %d", field, pid)
	return 0
}
