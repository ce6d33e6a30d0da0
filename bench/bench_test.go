package bench

import (
	"context"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// The driver (cmd/benchdriver) runs every case interleaved and writes the
// report; these Go benchmarks run the lifecycle contenders one by one, for
// profiling a single one:
//
//	cd bench && go test -run XX -bench Lifecycle -benchtime 10x

// engine returns a client of the local engine, skipping when it or the
// test image is missing.
func engine(b *testing.B) *client.Client {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		b.Skipf("no Docker engine: %v", err)
	}
	b.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.ImageInspect(ctx, Image); err != nil {
		b.Skipf("image %s missing (bash scripts/build-test-images.sh): %v", Image, err)
	}
	return cli
}

func BenchmarkLifecycle(b *testing.B) {
	cli := engine(b)
	b.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true") // no image can be pulled here
	env := &Env{Dir: b.TempDir(), Engine: cli, Rounds: 1}
	br, err := env.newBroker()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	ctx := context.Background()
	signer, err := newSigner()
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		run  func() error
	}{
		{"broker", func() error { return brokerLifecycle(ctx, br, true) }},
		{"broker-engine-exec", func() error { return brokerLifecycle(ctx, br, false) }},
		{"testcontainers", func() error { return tcLifecycle(ctx) }},
		{"testcontainers-for-ssh", func() error { return tcLifecycle(ctx, sshdReady()...) }},
		{"raw-engine", func() error { return rawLifecycle(ctx, cli, false) }},
		{"raw-engine-published", func() error { return rawLifecycle(ctx, cli, true) }},
		{"raw-engine-and-ssh", func() error { return rawSSHLifecycle(ctx, cli, signer) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if err := c.run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
