package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/internal/registrytest"
)

// PullBase is the base of the pull cases' image: a small static busybox
// (built by scripts/build-test-images.sh) to which the case adds a layer
// of random bytes no engine has, so that every pull downloads it.
const PullBase = "brokertest/busybox:1"

// PullSize is the random layer's size: with the base, a ~90 MB image.
const PullSize = 88 << 20

// pullEnv is a registry holding one image made for the pull cases.
type pullEnv struct {
	reg  *registrytest.Registry
	repo string // without the registry
	ref  string // the image, as pulled
}

// newPullEnv starts a registry and pushes the pull cases' image, whose
// command keeps a container running, as every contender needs, and ends
// at once on SIGTERM (testcontainers-go's Terminate stops before it
// removes).
func (e *Env) newPullEnv(ctx context.Context, size int64) (*pullEnv, error) {
	reg, err := registrytest.New(registrytest.Options{})
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	repo := "brokertest/pull-bench-" + hex.EncodeToString(b)
	ref, _, err := reg.PushRandomContext(ctx, e.Engine, PullBase, repo+":1", size, []string{"sh", "-c", "trap 'exit 0' TERM; sleep 86400 & wait"})
	if err != nil {
		reg.Stop()
		return nil, err
	}
	return &pullEnv{reg: reg, repo: repo, ref: ref}, nil
}

// forget removes the image from the engine (its random layer with it):
// the next contender finds it missing.
func (p *pullEnv) forget(ctx context.Context, cli *client.Client) error {
	_, err := cli.ImageRemove(ctx, p.ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	if err != nil && !strings.Contains(strings.ToLower(err.Error()), "no such image") {
		return fmt.Errorf("remove %s: %w", p.ref, err)
	}
	if _, err := cli.ImageInspect(ctx, p.ref); err == nil {
		return fmt.Errorf("%s still on the engine after its removal", p.ref)
	}
	return nil
}

// manifestRequests is the registry's count of manifest requests (GET and
// HEAD) of the image so far: one pull by Docker makes a HEAD by tag, and a
// GET by digest unless the engine kept the manifest from an earlier pull.
func (p *pullEnv) manifestRequests() int {
	get, head := p.reg.ManifestRequests(p.repo)
	return get + head
}

// Pull: one checkout of a missing ~90 MB image against `docker pull` and
// the raw sequence, and testcontainers-go's Run; the image is removed from
// the engine before each contender.
func (e *Env) Pull(ctx context.Context, size int64) (Case, error) {
	pe, err := e.newPullEnv(ctx, size)
	if err != nil {
		return Case{}, err
	}
	defer pe.reg.Stop()
	defer func() { _ = pe.forget(context.WithoutCancel(ctx), e.Engine) }()
	b, err := e.newBroker()
	if err != nil {
		return Case{}, err
	}
	defer b.Close()
	names := []string{"broker (Checkout of the missing image, Execute, Checkin)", "raw Engine API (pull, create, start, exec, remove)", "testcontainers-go (Run of the missing image, Exec, Terminate)"}
	samples, err := interleave(e.Rounds, names, func(name string) (float64, error) {
		if err := pe.forget(ctx, e.Engine); err != nil {
			return 0, err
		}
		start := time.Now()
		switch name {
		case names[0]:
			err = brokerPullLifecycle(ctx, b, pe.ref)
		case names[1]:
			err = rawPullLifecycle(ctx, e.Engine, pe.ref)
		default:
			err = tcImageLifecycle(ctx, pe.ref)
		}
		return seconds(start), err
	})
	if err != nil {
		return Case{}, err
	}
	c := Case{
		Title: "A missing image pulled",
		What: fmt.Sprintf("One host of an image the engine lacks: `"+PullBase+"` plus a layer of %d MiB of random bytes (no engine has it, so every pull downloads it; %.0f MB in all), "+
			"in a local registry (Debian's docker-registry on 127.0.0.1, internal/registrytest), removed from the engine before each contender. "+
			"broker: Checkout with default settings (`pull_policy: missing`: the engine pulls it), `echo hi` through the engine (no sshd in the image), Checkin; "+
			"raw: the Engine API's pull (its progress stream read to the end, as `docker pull` does), create, start, one exec, remove; testcontainers-go: Run (which pulls a missing image), Exec, Terminate.",
			size>>20, float64(size)/1e6+2),
		Series: series(names, "s", samples),
	}
	c.RatioOf("broker / raw pull + lifecycle (time)", names[0], names[1], 1.05, true)
	c.RatioOf("broker / testcontainers-go (time)", names[0], names[2], 1, true)
	return c, nil
}

// PullTwenty: 20 concurrent checkouts of one missing image against
// testcontainers-go's 20 concurrent Runs, with the registry's manifest
// requests of each.
func (e *Env) PullTwenty(ctx context.Context, size int64) (Case, error) {
	pe, err := e.newPullEnv(ctx, size)
	if err != nil {
		return Case{}, err
	}
	defer pe.reg.Stop()
	defer func() { _ = pe.forget(context.WithoutCancel(ctx), e.Engine) }()
	b, err := e.newBroker()
	if err != nil {
		return Case{}, err
	}
	defer b.Close()
	names := []string{"broker (Count: 20 of the missing image)", "testcontainers-go (20 goroutines Run the missing image)"}
	gets := map[string][]float64{}
	samples, err := interleave(e.Rounds, names, func(name string) (float64, error) {
		if err := pe.forget(ctx, e.Engine); err != nil {
			return 0, err
		}
		before := pe.manifestRequests()
		start := time.Now()
		if name == names[0] {
			hosts, err := b.Checkout(ctx, broker.Request{Count: 20, Args: map[string]any{"container_host": pe.ref}})
			if err != nil {
				return 0, err
			}
			err = b.Checkin(ctx, hosts...)
			gets[name] = append(gets[name], float64(pe.manifestRequests()-before))
			return seconds(start), err
		}
		err := tcRunMany(ctx, 20, pe.ref)
		gets[name] = append(gets[name], float64(pe.manifestRequests()-before))
		return seconds(start), err
	})
	if err != nil {
		return Case{}, err
	}
	all := series(names, "s", samples)
	for _, n := range names {
		all = append(all, Series{Name: "registry manifest requests per round: " + strings.SplitN(n, " ", 2)[0], Unit: "requests", Samples: gets[n]})
	}
	c := Case{
		Title: "20 checkouts of one missing image",
		What: fmt.Sprintf("20 containers of the missing ~%.0f MB image of the case above made concurrently, then removed concurrently; the image is removed from the engine before each contender. "+
			"broker shares one pull among its 20 checkouts; each of testcontainers-go's 20 Runs asks the engine to pull (the engine shares the layer downloads, not the requests). "+
			"The last rows count the manifest requests (HEAD and GET) the registry logged in each round: one pull by Docker 20.10 is one HEAD by tag (the engine keeps the manifest itself from the first pull, so no GET after it).", float64(size)/1e6+2),
		Series: all,
	}
	c.RatioOf("broker / testcontainers-go (time)", names[0], names[1], 1, true)
	return c, nil
}

// brokerPullLifecycle checks out a host of image (missing: pulled), runs
// one command through the engine and checks it in.
func brokerPullLifecycle(ctx context.Context, b *broker.Broker, image string) error {
	hosts, err := b.Checkout(ctx, broker.Request{Args: map[string]any{"container_host": image}})
	if err != nil {
		return err
	}
	res, err := hosts[0].Execute(ctx, "echo hi")
	if err == nil && res.Stdout != "hi\n" {
		err = fmt.Errorf("broker: got %+v", res)
	}
	return errors.Join(err, b.Checkin(ctx, hosts...))
}

// rawPullLifecycle: the Engine API's pull (its stream read to the end),
// then create, start, one exec, remove.
func rawPullLifecycle(ctx context.Context, cli *client.Client, image string) error {
	resp, err := cli.ImagePull(ctx, image, client.ImagePullOptions{})
	if err != nil {
		return err
	}
	for msg, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return err
		}
		if msg.Error != nil {
			return errors.New(msg.Error.Message)
		}
	}
	return rawImageLifecycle(ctx, cli, image, false)
}
