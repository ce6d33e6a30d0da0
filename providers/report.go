package providers

import "context"

type reporterKey struct{}

// WithReporter returns a copy of ctx that carries report: a provider doing
// long work for a call made with it (an image pull) calls report with a
// line of progress now and then, as net/http/httptrace carries its hooks.
// brokertest passes the test's log, so `go test -v` shows the line live.
// report must be safe for concurrent use and must not block; lines hold
// plain data, never secrets.
func WithReporter(ctx context.Context, report func(line string)) context.Context {
	return context.WithValue(ctx, reporterKey{}, report)
}

// Reporter is the report function ctx carries (see WithReporter), or nil.
func Reporter(ctx context.Context) func(line string) {
	f, _ := ctx.Value(reporterKey{}).(func(string))
	return f
}
