package ansibletower_test

import (
	"testing"
	"time"

	"github.com/hostbroker/broker/providers/ansibletower/awxtest"
)

// BenchmarkCheckout20 checks out 20 hosts at once from awxtest, each
// workflow taking 2 s, and checks them in. Reported: the checkout's wall
// time against one job's time (1.0 would be perfect concurrency) and the
// API requests each checkout made (polling backs off: no busy loop).
func BenchmarkCheckout20(b *testing.B) {
	const jobTime = 2 * time.Second
	e := newEnv(b, awxtest.Options{JobTime: jobTime})
	p := e.open(b, nil)
	var wall time.Duration
	var requests int64
	for b.Loop() {
		before := p.Requests()
		start := time.Now()
		recs := checkoutManyB(b, p, 20)
		wall += time.Since(start)
		requests += p.Requests() - before
		b.StopTimer()
		checkinManyB(b, p, recs)
		b.StartTimer()
	}
	b.ReportMetric(float64(wall)/float64(b.N)/float64(jobTime), "wall/job")
	b.ReportMetric(float64(requests)/float64(b.N)/20, "requests/checkout")
	b.ReportMetric(0, "ns/op")
}
