package container_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/brokertest"
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/registrytest"
	"github.com/hostbroker/broker/internal/testenv"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/container"
)

// The pull tests push images made for each test (brokertest/busybox:1
// plus a layer of random bytes, so that a pull downloads it) to a real
// registry (internal/registrytest) and check hosts out of them on engines
// that lack them. Every image name is new; each is removed at the end.

// docker is the Docker engine's client the tests push with.
func docker(t *testing.T) *client.Client {
	t.Helper()
	open(t, engines[0], nil) // skips when Docker or the test images are missing
	cli, err := client.New(client.FromEnv)
	testenv.Require(t, "docker", err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

// uniqueRepo is a repository name no engine has seen.
func uniqueRepo() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return "brokertest/pull-" + hex.EncodeToString(b)
}

// forget removes image ref from p's engine when t ends.
func forget(t *testing.T, p *container.Provider, ref string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = p.Client().ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	})
}

// openLogged is open with the provider's log kept in a buffer.
func openLogged(t *testing.T, e engine, settings map[string]any) (*container.Provider, *testenv.LogBuffer) {
	t.Helper()
	return openIn(t, e, t.TempDir(), settings)
}

// openIn is openLogged with dir as the broker directory.
func openIn(t *testing.T, e engine, dir string, settings map[string]any) (*container.Provider, *testenv.LogBuffer) {
	t.Helper()
	open(t, e, nil) // skips when the engine or the test images are missing
	s := map[string]any{"host_uri": e.uri(t), "runtime": e.name, "name_prefix": "brokertest"}
	for k, v := range settings {
		s[k] = v
	}
	var buf testenv.LogBuffer
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p, err := container.Open(ctx, providers.Config{
		Provider: container.Name, Instance: "pull-" + e.name, Settings: s, Dir: dir,
		Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, &buf
}

// hasImage reports whether p's engine holds ref.
func hasImage(t *testing.T, p *container.Provider, ref string) bool {
	t.Helper()
	_, err := p.Client().ImageInspect(t.Context(), ref)
	return err == nil
}

// TestPullMissing: a checkout of an image the engine lacks pulls it from
// the registry (one manifest GET) and runs it, on Docker and Podman;
// container_app's Execute pulls too.
func TestPullMissing(t *testing.T) {
	cli := docker(t)
	reg := registrytest.Start(t, registrytest.Options{})
	forEngine(t, func(t *testing.T, e engine) {
		p, _ := openLogged(t, e, nil)
		repo := uniqueRepo()
		ref, _ := reg.PushRandom(t, cli, busyboxImage, repo+":1", 1<<20)
		forget(t, p, ref)
		if hasImage(t, p, ref) {
			t.Fatalf("%s holds %s before the checkout", e.name, ref)
		}
		ctx := testCtx(t)
		rec := checkout(t, ctx, p, map[string]any{"container_host": ref}, nil)
		h := connect(t, ctx, p, rec)
		res, err := h.Execute(ctx, "wc -c < /payload")
		if err != nil || strings.TrimSpace(res.Stdout) != "1048576" {
			t.Fatalf("the pulled image's payload: %+v, %v", res, err)
		}
		if get, _ := reg.ManifestRequests(repo); get != 1 {
			t.Errorf("manifest GETs = %d, want 1 (one pull)", get)
		}
		// Present now: a second checkout does not ask the registry.
		checkout(t, ctx, p, map[string]any{"container_host": ref}, nil)
		if get, head := reg.ManifestRequests(repo); get != 1 || head > 1 {
			t.Errorf("after a checkout of a present image: manifest GETs %d, HEADs %d; want 1 and at most 1", get, head)
		}

		// Execute (container_app) pulls what it lacks too.
		repo2 := uniqueRepo()
		ref2, _ := reg.PushRandom(t, cli, busyboxImage, repo2+":1", 1024)
		forget(t, p, ref2)
		out, err := p.Execute(ctx, map[string]any{"container_app": ref2, "command": "wc -c < /payload"})
		if err != nil {
			t.Fatalf("Execute of a missing image: %v", err)
		}
		if r, ok := out.(hostkit.Result); !ok || strings.TrimSpace(r.Stdout) != "1024" {
			t.Errorf("Execute = %v, want the payload's size 1024", out)
		}
	})
}

// TestPullPolicy: always pulls a tag that moved in the registry (missing
// does not); never refuses a missing image clearly, without asking the
// registry or leaving a container; a bad policy is an error.
func TestPullPolicy(t *testing.T) {
	cli := docker(t)
	reg := registrytest.Start(t, registrytest.Options{})
	forEngine(t, func(t *testing.T, e engine) {
		p, _ := openLogged(t, e, nil)
		ctx := testCtx(t)
		repo := uniqueRepo()
		ref, first := reg.PushRandom(t, cli, busyboxImage, repo+":1", 1024)
		forget(t, p, ref)
		checkout(t, ctx, p, map[string]any{"container_host": ref}, nil)
		_, second := reg.PushRandom(t, cli, busyboxImage, repo+":1", 2048) // the tag moves
		if first == second {
			t.Fatal("the two pushes made one image")
		}
		if e.name == "docker" {
			// The push went through this engine and took the tag along:
			// the engine's tag names the first image again, as on an
			// engine that pulled it before the tag moved.
			if _, err := p.Client().ImageTag(ctx, client.ImageTagOptions{Source: first, Target: ref}); err != nil {
				t.Fatal(err)
			}
		}
		imageID := func() string {
			img, err := p.Client().ImageInspect(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimPrefix(img.ID, "sha256:")
		}
		if id := imageID(); id != strings.TrimPrefix(first, "sha256:") {
			t.Fatalf("after the first pull the engine has %s, want %s", id, first)
		}
		checkout(t, ctx, p, map[string]any{"container_host": ref}, nil)
		if id := imageID(); id != strings.TrimPrefix(first, "sha256:") {
			t.Errorf("pull_policy missing pulled a present image again (%s)", id)
		}
		rec := checkout(t, ctx, p, map[string]any{"container_host": ref, "pull_policy": "always"}, nil)
		if id := imageID(); id != strings.TrimPrefix(second, "sha256:") {
			t.Errorf("pull_policy always: the engine has %s, want the moved tag's %s", id, second)
		}
		h := connect(t, ctx, p, rec)
		if res, err := h.Execute(ctx, "wc -c < /payload"); err != nil || strings.TrimSpace(res.Stdout) != "2048" {
			t.Errorf("a host of the moved tag: %+v, %v", res, err)
		}

		// never: a clear refusal, nothing asked of the registry.
		never := uniqueRepo()
		nref, _ := reg.PushRandom(t, cli, busyboxImage, never+":1", 1024)
		forget(t, p, nref)
		pn, _ := openLogged(t, e, map[string]any{"pull_policy": "never"})
		id := inventory.NewID()
		_, err := pn.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"container_host": nref}})
		if err == nil || !strings.Contains(err.Error(), "pull_policy is never") || !strings.Contains(err.Error(), nref) || !strings.Contains(err.Error(), pn.EngineURI()) {
			t.Errorf("pull_policy never, missing image: %v; want an error naming the image, the engine and the policy", err)
		}
		if get, head := reg.ManifestRequests(never); get+head != 0 {
			t.Errorf("pull_policy never asked the registry (%d GETs, %d HEADs)", get, head)
		}
		if left, _ := containersWithID(ctx, pn, id); len(left) != 0 {
			t.Errorf("containers left: %v", left)
		}
		// The request's argument overrides the setting.
		checkout(t, ctx, pn, map[string]any{"container_host": nref, "pull_policy": "missing"}, nil)

		if _, err := p.Checkout(ctx, providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"container_host": ref, "pull_policy": "sometimes"}}); err == nil || !strings.Contains(err.Error(), "pull_policy") {
			t.Errorf("a bad pull_policy argument: %v, want an error naming it", err)
		}
	})
}

// TestPullSettings: the pull settings are checked when they load.
func TestPullSettings(t *testing.T) {
	for _, tc := range []struct {
		settings map[string]any
		mention  string
	}{
		{map[string]any{"pull_policy": "sometimes"}, "pull_policy"},
		{map[string]any{"pull_timeout": "soon"}, "pull_timeout"},
		{map[string]any{"registries": "r.example:5000"}, "registries"},
		{map[string]any{"registries": map[string]any{"r.example": map[string]any{"username": "u"}}}, "registries.r.example"},
		{map[string]any{"registries": map[string]any{"r.example": map[string]any{"username": "u", "password": 12345678}}}, "registries.r.example.password"},
		{map[string]any{"registries": map[string]any{"r.example": map[string]any{"pasword": "hunter2secret"}}}, "pasword"},
	} {
		err := container.Driver{}.CheckSettings(providers.Config{Provider: container.Name, Settings: tc.settings})
		if err == nil || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("CheckSettings(%v) = %v, want an error naming %s", tc.settings, err, tc.mention)
		}
		if err != nil && (strings.Contains(err.Error(), "12345678") || strings.Contains(err.Error(), "hunter2secret")) {
			t.Errorf("CheckSettings error %q shows a secret", err)
		}
	}
	for _, ok := range []map[string]any{
		{"pull_policy": "Always", "pull_timeout": 30},
		{"registries": map[string]any{"r.example:5000": map[string]any{"username": "u", "password": "p"}, "docker.io": map[string]any{"token": "t"}}},
	} {
		if err := (container.Driver{}).CheckSettings(providers.Config{Provider: container.Name, Settings: ok}); err != nil {
			t.Errorf("CheckSettings(%v) = %v", ok, err)
		}
	}
}

// TestPullCredentials: a registry with htpasswd users is pulled from with
// the credentials of a DOCKER_CONFIG file's auths, of a credential helper
// program on PATH, and of the settings; without them, or with a wrong
// password, the error names the registry and where the credentials came
// from, and the secret is in no error and no log line.
func TestPullCredentials(t *testing.T) {
	const user, password = "ci", "s3cret-Pa55word"
	cli := docker(t)
	reg := registrytest.Start(t, registrytest.Options{Users: map[string]string{user: password}})
	basic := func(u, p string) string { return base64.StdEncoding.EncodeToString([]byte(u + ":" + p)) }
	writeConfig := func(t *testing.T, cfg map[string]any) string {
		dir := t.TempDir()
		b, _ := json.Marshal(cfg)
		if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	var pullOn func(t *testing.T, e engine, settings map[string]any) (error, string)
	noSecret := func(t *testing.T, what, text string) {
		t.Helper()
		if strings.Contains(text, password) || strings.Contains(text, "wr0ng-Pa55word") {
			t.Errorf("%s shows a password: %s", what, text)
		}
	}
	pullWith := func(t *testing.T, settings map[string]any) (error, string) {
		t.Helper()
		return pullOn(t, engines[0], settings)
	}
	pullOn = func(t *testing.T, e engine, settings map[string]any) (error, string) {
		t.Helper()
		// An empty DOCKER_CONFIG directory unless the case sets one: the
		// machine's own ~/.docker stays out.
		if os.Getenv("DOCKER_CONFIG") == "" {
			t.Setenv("DOCKER_CONFIG", t.TempDir())
		}
		if os.Getenv("REGISTRY_AUTH_FILE") == "" {
			t.Setenv("REGISTRY_AUTH_FILE", filepath.Join(t.TempDir(), "none.json"))
		}
		p, logs := openLogged(t, e, settings)
		repo := uniqueRepo()
		ref := reg.Push(t, cli, busyboxImage, repo+":1")
		forget(t, p, ref)
		ctx := testCtx(t)
		id := inventory.NewID()
		res, err := p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"container_host": ref}})
		if err == nil {
			_ = p.Checkin(ctx, res.Record(id))
		} else if left, _ := containersWithID(ctx, p, id); len(left) != 0 {
			t.Errorf("containers left after a failed pull: %v", left)
		}
		if err != nil {
			noSecret(t, "the error", err.Error())
		}
		noSecret(t, "the log", logs.String())
		return err, ref
	}

	t.Run("none", func(t *testing.T) {
		err, _ := pullWith(t, nil)
		if err == nil || !strings.Contains(err.Error(), "no credentials") || !strings.Contains(err.Error(), reg.Addr) {
			t.Errorf("a pull without credentials: %v; want an error saying no credentials were sent to %s", err, reg.Addr)
		}
	})
	t.Run("DOCKER_CONFIG auths", func(t *testing.T) {
		dir := writeConfig(t, map[string]any{"auths": map[string]any{reg.Addr: map[string]any{"auth": basic(user, password)}}})
		t.Setenv("DOCKER_CONFIG", dir)
		if err, _ := pullWith(t, nil); err != nil {
			t.Errorf("with %s/config.json: %v", dir, err)
		}
	})
	t.Run("credential helper", func(t *testing.T) {
		bin := t.TempDir()
		calls := filepath.Join(bin, "calls")
		script := "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread host\necho \"$host\" >> " + calls + "\n" +
			"[ \"$host\" = \"" + reg.Addr + "\" ] || { echo 'credentials not found in native keychain'; exit 1; }\n" +
			"printf '{\"ServerURL\":\"%s\",\"Username\":\"" + user + "\",\"Secret\":\"" + password + "\"}\\n' \"$host\"\n"
		if err := os.WriteFile(filepath.Join(bin, "docker-credential-brokertestxyz"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		t.Setenv("DOCKER_CONFIG", writeConfig(t, map[string]any{"credHelpers": map[string]any{reg.Addr: "brokertestxyz"}}))
		if err, _ := pullWith(t, nil); err != nil {
			t.Errorf("with a credential helper: %v", err)
		}
		if b, _ := os.ReadFile(calls); strings.TrimSpace(string(b)) != reg.Addr {
			t.Errorf("the helper was asked for %q, want %s once", b, reg.Addr)
		}
	})
	t.Run("hanging helper", func(t *testing.T) {
		// A helper that never answers (a keychain waiting to unlock), with a
		// child of its own: the pull fails within the bound (pull_timeout 3
		// here, under the helpers' 30 s), naming the helper, and neither
		// process stays.
		bin := t.TempDir()
		pids := filepath.Join(bin, "pids")
		script := "#!/bin/sh\necho $$ >> " + pids + "\nsleep 100000 &\necho $! >> " + pids + "\nwait\n"
		if err := os.WriteFile(filepath.Join(bin, "docker-credential-brokerhang"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		t.Setenv("DOCKER_CONFIG", writeConfig(t, map[string]any{"credHelpers": map[string]any{reg.Addr: "brokerhang"}}))
		start := time.Now()
		err, ref := pullWith(t, map[string]any{"pull_timeout": 3})
		took := time.Since(start)
		if err == nil {
			t.Fatal("a pull with a hanging credential helper succeeded")
		}
		t.Logf("the error after %s: %v", took.Round(time.Millisecond), err)
		for _, want := range []string{ref, "registry " + reg.Addr, "docker-credential-brokerhang", "no answer within"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if took > 20*time.Second {
			t.Errorf("the checkout took %s with pull_timeout 3s", took)
		}
		b, _ := os.ReadFile(pids)
		fields := strings.Fields(string(b))
		if len(fields) != 2 {
			t.Fatalf("the helper wrote pids %q, want its own and its child's", b)
		}
		for _, f := range fields {
			pid, _ := strconv.Atoi(f)
			if !processGone(pid, 5*time.Second) {
				t.Errorf("helper process %d still runs", pid)
			}
		}
	})
	t.Run("podman auth.json", func(t *testing.T) {
		authFile := filepath.Join(t.TempDir(), "auth.json")
		b, _ := json.Marshal(map[string]any{"auths": map[string]any{reg.Addr: map[string]any{"auth": basic(user, password)}}})
		if err := os.WriteFile(authFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("DOCKER_CONFIG", t.TempDir())
		err, _ := pullOn(t, engines[1], nil)
		if err == nil {
			t.Fatal("a Podman pull without credentials succeeded")
		}
		t.Setenv("REGISTRY_AUTH_FILE", authFile)
		if err, _ := pullOn(t, engines[1], nil); err != nil {
			t.Errorf("a Podman pull with REGISTRY_AUTH_FILE %s: %v", authFile, err)
		}
	})
	t.Run("settings", func(t *testing.T) {
		err, _ := pullWith(t, map[string]any{"registries": map[string]any{reg.Addr: map[string]any{"username": user, "password": password}}})
		if err != nil {
			t.Errorf("with the settings' registries: %v", err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		err, ref := pullWith(t, map[string]any{"registries": map[string]any{reg.Addr: map[string]any{"username": user, "password": "wr0ng-Pa55word"}}})
		if err == nil {
			t.Fatal("a pull with a wrong password succeeded")
		}
		t.Logf("the error: %v", err)
		for _, want := range []string{ref, "registry " + reg.Addr, "engine ", "the settings' registries." + reg.Addr, "refused the credentials"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	})
}

// TestPullRegistryStopped: the registry dies mid-pull (behind a slow
// link, a layer under way), on Docker and on Podman: the checkout fails
// with an error naming the image, the registry and the engine; no
// container is left and the partial image does not count as present.
func TestPullRegistryStopped(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: Docker retries the layer for over a minute")
	}
	cli := docker(t)
	forEngine(t, func(t *testing.T, e engine) {
		// The engines side by side, a registry each: the run lasts
		// Docker's retries, not their sum.
		t.Parallel()
		registryStopped(t, cli, e)
	})
}

func registryStopped(t *testing.T, cli *client.Client, e engine) {
	reg := registrytest.Start(t, registrytest.Options{Rate: 2 << 20})
	p, logs := openLogged(t, e, nil)
	repo := uniqueRepo()
	ref, _ := reg.PushRandom(t, cli, busyboxImage, repo+":1", 24<<20)
	forget(t, p, ref)
	ctx := testCtx(t)
	var lines []string
	var mu sync.Mutex
	rctx := providers.WithReporter(ctx, func(line string) { mu.Lock(); lines = append(lines, line); mu.Unlock() })
	id := inventory.NewID()
	done := make(chan error, 1)
	go func() {
		_, err := p.Checkout(rctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"container_host": ref}})
		done <- err
	}()
	select {
	case <-reg.BlobStarted():
	case err := <-done:
		t.Fatalf("the checkout ended before a layer was under way: %v", err)
	}
	time.Sleep(2500 * time.Millisecond) // long enough for a progress line
	reg.Stop()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the checkout did not end within 2 minutes of the registry's death")
	}
	if err == nil {
		t.Fatal("the checkout succeeded with the registry stopped mid-pull")
	}
	t.Logf("the error: %v", err)
	for _, want := range []string{ref, "registry " + reg.Addr, p.EngineURI()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if left, _ := containersWithID(ctx, p, id); len(left) != 0 {
		t.Errorf("containers left: %v", left)
	}
	if hasImage(t, p, ref) {
		t.Errorf("the partly pulled %s counts as present", ref)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lines) == 0 || !strings.Contains(lines[0], "layers") || !strings.Contains(lines[0], "MB") {
		t.Errorf("progress reported: %q; want a line with layers and bytes", lines)
	}
	if !strings.Contains(logs.String(), "layers") {
		t.Errorf("no progress in the broker's log:\n%s", logs)
	}
}

// TestPullConcurrent: 20 concurrent checkouts of one missing image make
// one pull (one manifest GET at the registry), from two providers sharing
// a broker directory as two processes of a `go test -p 2` run do (the
// lock file per image); a caller cancelled meanwhile stops its own wait,
// not the others' pull.
func TestPullConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	cli := docker(t)
	reg := registrytest.Start(t, registrytest.Options{Rate: 8 << 20})
	dir := t.TempDir()
	p1, log1 := openIn(t, engines[0], dir, nil)
	p2, log2 := openIn(t, engines[0], dir, nil)
	repo := uniqueRepo()
	ref, _ := reg.PushRandom(t, cli, busyboxImage, repo+":1", 8<<20)
	forget(t, p1, ref)
	ctx := testCtx(t)
	const n = 20
	ids := make([]string, n)
	for i := range ids {
		ids[i] = inventory.NewID()
	}
	provider := func(i int) *container.Provider {
		if i%2 == 0 {
			return p1
		}
		return p2
	}
	t.Cleanup(func() {
		for i, id := range ids {
			_ = provider(i).Checkin(context.Background(), &inventory.Record{Broker: &inventory.Meta{ID: id}})
		}
	})
	// One more caller, cancelled once the pull is under way.
	cctx, cancel := context.WithCancel(ctx)
	cancelled := make(chan error, 1)
	go func() {
		_, err := p1.Checkout(cctx, providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"container_host": ref}})
		cancelled <- err
	}()
	var g errgroup.Group
	for i := range n {
		g.Go(func() error {
			_, err := provider(i).Checkout(ctx, providers.CheckoutRequest{ID: ids[i], Args: map[string]any{"container_host": ref}})
			return err
		})
	}
	<-reg.BlobStarted()
	cancel()
	if err := <-cancelled; err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("the cancelled caller: %v, want its context's error", err)
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("concurrent checkouts: %v", err)
	}
	if get, head := reg.ManifestRequests(repo); get != 1 || head != 1 {
		t.Errorf("manifest requests: %d GETs, %d HEADs; want 1 each (one pull)", get, head)
	}
	if !strings.Contains(log1.String()+log2.String(), "pulled by another process meanwhile") {
		t.Errorf("neither provider waited for the other's pull:\n%s\n%s", log1.String(), log2.String())
	}
}

// TestPullRemoteEngine: an engine reached over ssh:// or tcp:// (TLS with
// client certificates) pulls the image itself, from the registry as its
// host reaches it.
func TestPullRemoteEngine(t *testing.T) {
	cli := docker(t)
	reg := registrytest.Start(t, registrytest.Options{})
	sock := localSocket(t, engines[0])
	for _, tc := range []struct {
		name string
		open func(t *testing.T) *container.Provider
	}{
		{"ssh", func(t *testing.T) *container.Provider {
			h := startSSHEngineHost(t, sock)
			return openRemote(t, map[string]any{"host_uri": h.uri(""), "engine_ssh_config": h.config, "runtime": "docker"})
		}},
		{"tcp TLS", func(t *testing.T) *container.Provider {
			ca := newCA(t, "broker test CA")
			uri := startTLSEngine(t, ca, sock)
			return openRemote(t, map[string]any{"host_uri": uri, "tls_verify": true, "tls_cert_path": certDir(t, ca.caPEM, ca.certPEM, ca.keyPEM)})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.open(t)
			repo := uniqueRepo()
			ref, _ := reg.PushRandom(t, cli, busyboxImage, repo+":1", 4096)
			forget(t, p, ref)
			ctx := testCtx(t)
			rec := checkout(t, ctx, p, map[string]any{"container_host": ref}, nil)
			h := connect(t, ctx, p, rec)
			if res, err := h.Execute(ctx, "wc -c < /payload"); err != nil || strings.TrimSpace(res.Stdout) != "4096" {
				t.Errorf("a host pulled through %s: %+v, %v", p.EngineURI(), res, err)
			}
			if get, _ := reg.ManifestRequests(repo); get != 1 {
				t.Errorf("manifest GETs = %d, want 1", get)
			}
		})
	}
}

// TestPullThroughBroker: through a Broker with the credentials in
// broker_settings.yaml, a pull refused for a wrong password leaves no
// record in the inventory and no container, and the password is in no
// error, log, record or file but the settings; with the right one the
// host is checked out, used and checked in.
func TestPullThroughBroker(t *testing.T) {
	const user, password, wrong = "ci", "brok3r-Pa55", "wr0ng-brok3r"
	cli := docker(t)
	reg := registrytest.Start(t, registrytest.Options{Users: map[string]string{user: password}})
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	// An image of its own: the containers of its ancestor are only ours.
	ref, _ := reg.PushRandom(t, cli, busyboxImage, uniqueRepo()+":1", 1024)
	p := open(t, engines[0], nil)
	forget(t, p, ref)
	for _, tc := range []struct {
		name, password string
		ok, env        bool // env: the password in an environment variable
	}{{"wrong password", wrong, false, false}, {"right password", password, true, false}, {"password from the environment", password, true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			settings := fmt.Sprintf("Container:\n  host_uri: %s\n  registries:\n    %q: {username: %s, password: %s}\n", p.EngineURI(), reg.Addr, user, tc.password)
			var env []string
			if tc.env {
				settings = fmt.Sprintf("Container:\n  host_uri: %s\n  registries:\n    ci: {registry: %q, username: %s}\n", p.EngineURI(), reg.Addr, user)
				env = []string{"BROKER_Container__registries__ci__password=" + tc.password}
			}
			if err := os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), []byte(settings), 0o600); err != nil {
				t.Fatal(err)
			}
			// Missing on the engine in every case: each pulls.
			_, _ = p.Client().ImageRemove(t.Context(), ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
			if hasImage(t, p, ref) {
				t.Fatalf("%s still on the engine", ref)
			}
			var logs testenv.LogBuffer
			b, err := broker.New(broker.WithDirectory(dir), broker.WithReaper(false), broker.WithSettingsEnv(env),
				broker.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			ctx := testCtx(t)
			hosts, err := b.Checkout(ctx, broker.Request{Args: map[string]any{"container_host": ref}})
			if tc.ok {
				if err != nil {
					t.Fatalf("Checkout: %v", err)
				}
				if !strings.Contains(logs.String(), "pulled image") {
					t.Errorf("the checkout did not pull %s:\n%s", ref, logs.String())
				}
				res, err := hosts[0].Execute(ctx, "echo pulled")
				if err != nil || res.Stdout != "pulled\n" {
					t.Errorf("Execute on the pulled host: %+v, %v", res, err)
				}
				if err := b.Checkin(ctx, hosts...); err != nil {
					t.Fatal(err)
				}
			} else {
				if err == nil {
					t.Fatal("Checkout with a wrong password succeeded")
				}
				if strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), "registries."+reg.Addr) {
					t.Errorf("error %q: want it to name the settings' registries.%s and not the password", err, reg.Addr)
				}
			}
			recs, err := b.Store().Load(ctx)
			if err != nil || len(recs) != 0 {
				t.Errorf("inventory after the test: %v, %v; want it empty", recs, err)
			}
			res, err := p.Client().ContainerList(ctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("ancestor", ref)})
			if err != nil || len(res.Items) != 0 {
				t.Errorf("containers of %s left: %v, %v", ref, res.Items, err)
			}
			if strings.Contains(logs.String(), tc.password) {
				t.Errorf("the broker's log shows the password:\n%s", logs.String())
			}
			_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || d.Name() == "broker_settings.yaml" {
					return nil
				}
				if b, _ := os.ReadFile(path); strings.Contains(string(b), tc.password) {
					t.Errorf("%s holds the password", path)
				}
				return nil
			})
		})
	}
}

// TestPullFirstContainer: the README's first container test, with an
// image the engine lacks in a registry it reaches: no manual pull.
func TestPullFirstContainer(t *testing.T) {
	cli := docker(t)
	reg := registrytest.Start(t, registrytest.Options{})
	ref, _ := reg.PushRandom(t, cli, sshdImage, uniqueRepo()+":12", 1024)
	forget(t, open(t, engines[0], nil), ref)
	t.Setenv("BROKER_DIRECTORY", t.TempDir())
	h := brokertest.Host(t, broker.Request{Args: map[string]any{"container_host": ref}})
	res, err := h.Execute(t.Context(), "cat /etc/os-release")
	if err != nil || res.Status != 0 || !strings.Contains(res.Stdout, "bookworm") {
		t.Fatalf("cat /etc/os-release: %v %+v", err, res)
	}
}

// TestPullErrors: a tag the registry lacks and a registry too slow for
// pull_timeout each fail the checkout with one error naming the image, the
// registry, the engine and what to do; nothing is left behind and the
// partial image does not count as present.
func TestPullErrors(t *testing.T) {
	cli := docker(t)
	reg := registrytest.Start(t, registrytest.Options{Rate: 256 << 10})
	repo := uniqueRepo()
	ref, _ := reg.PushRandom(t, cli, busyboxImage, repo+":1", 4<<20)
	p, _ := openLogged(t, engines[0], map[string]any{"pull_timeout": 2})
	forget(t, p, ref)
	ctx := testCtx(t)
	for _, tc := range []struct {
		name, image, want string
	}{
		{"not found", reg.Addr + "/" + repo + ":no-such-tag", "no such image or tag"},
		{"slow", ref, "raise pull_timeout (now 2s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := inventory.NewID()
			start := time.Now()
			_, err := p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"container_host": tc.image}})
			if err == nil {
				t.Fatalf("Checkout of %s succeeded", tc.image)
			}
			t.Logf("the error (after %s): %v", time.Since(start).Round(time.Millisecond), err)
			for _, want := range []string{"pull " + tc.image + " from registry " + reg.Addr + " on engine " + p.EngineURI(), tc.want} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if left, _ := containersWithID(ctx, p, id); len(left) != 0 {
				t.Errorf("containers left: %v", left)
			}
			if hasImage(t, p, tc.image) {
				t.Errorf("%s counts as present", tc.image)
			}
		})
	}
}

// logTB is a test whose log lines are also kept, to see what brokertest
// writes there.
type logTB struct {
	*testing.T
	mu    sync.Mutex
	lines []string
}

func (l *logTB) Log(args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprint(args...))
	l.mu.Unlock()
	l.T.Log(args...)
}

// TestPullProgressInTestLog: a pull that lasts (a slow link) reports its
// layers and bytes in the test's log through brokertest, at most one line
// every two seconds.
func TestPullProgressInTestLog(t *testing.T) {
	cli := docker(t)
	reg := registrytest.Start(t, registrytest.Options{Rate: 2 << 20})
	ref, _ := reg.PushRandom(t, cli, busyboxImage, uniqueRepo()+":1", 10<<20)
	forget(t, open(t, engines[0], nil), ref)
	t.Setenv("BROKER_DIRECTORY", t.TempDir())
	lt := &logTB{T: t}
	start := time.Now()
	h := brokertest.Host(lt, broker.Request{Args: map[string]any{"container_host": ref}})
	took := time.Since(start)
	if res, err := h.Execute(t.Context(), "wc -c < /payload"); err != nil || strings.TrimSpace(res.Stdout) != "10485760" {
		t.Fatalf("the pulled host: %+v, %v", res, err)
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	var progress []string
	for _, l := range lt.lines {
		if strings.Contains(l, "pulling "+ref) {
			progress = append(progress, l)
		}
	}
	if len(progress) == 0 || !strings.Contains(progress[0], "layers") || !strings.Contains(progress[0], "MB of") {
		t.Fatalf("the test's log has no progress of the %s pull: %q", took, lt.lines)
	}
	if limit := int(took/(2*time.Second)) + 1; len(progress) > limit {
		t.Errorf("%d progress lines in %s, want at most one every 2s (%d)", len(progress), took, limit)
	}
}

// TestPullPodmanLocalhost: on Podman, a localhost/ image the engine holds
// (built or loaded there) is found by its name as the engine matches it,
// and a missing one is a clear error, not a pull.
func TestPullPodmanLocalhost(t *testing.T) {
	p, _ := openLogged(t, engines[1], nil)
	ctx := testCtx(t)
	name := "localhost/" + strings.TrimPrefix(uniqueRepo(), "brokertest/")
	if _, err := p.Client().ImageTag(ctx, client.ImageTagOptions{Source: busyboxImage, Target: name + ":1"}); err != nil {
		t.Fatal(err)
	}
	forget(t, p, name+":1")
	rec := checkout(t, ctx, p, map[string]any{"container_host": name + ":1"}, nil)
	h := connect(t, ctx, p, rec)
	if res, err := h.Execute(ctx, "echo local"); err != nil || res.Stdout != "local\n" {
		t.Errorf("a host of %s:1: %+v, %v", name, res, err)
	}
	// Its short name too, as Podman resolves it (the Python broker's
	// _ensure_image allows that).
	short := strings.TrimPrefix(name, "localhost/") + ":1"
	checkout(t, ctx, p, map[string]any{"container_host": short, "pull_policy": "never"}, nil)
	_, err := p.Checkout(ctx, providers.CheckoutRequest{ID: inventory.NewID(), Args: map[string]any{"container_host": name + ":2"}})
	if err == nil || !strings.Contains(err.Error(), "localhost/ images are built or loaded") || !strings.Contains(err.Error(), name+":2") {
		t.Errorf("a missing localhost/ image: %v, want an error saying it is not pulled", err)
	}
}

// processGone waits up to wait for pid to end (a zombie counts as ended).
func processGone(pid int, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// The state follows the command's closing parenthesis.
		if err != nil || strings.Contains(string(b), ") Z ") {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPullForeignPlatform: an image whose manifest list has no variant for
// the engine's platform (only arm64 and s390x, or amd64 and s390x on an
// arm64 host) fails the checkout with one error naming the image, the
// registry, the engine and what to do; no container is left and no image
// counts as present.
func TestPullForeignPlatform(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	platforms := []string{"linux/arm64", "linux/s390x"}
	if runtime.GOARCH == "arm64" {
		platforms[0] = "linux/amd64"
	}
	forEngine(t, func(t *testing.T, e engine) {
		p, logs := openLogged(t, e, nil)
		ref := reg.PushForeign(t, uniqueRepo()+":1", platforms...)
		forget(t, p, ref)
		ctx := testCtx(t)
		id := inventory.NewID()
		_, err := p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"container_host": ref}})
		if err == nil {
			t.Fatalf("a checkout of %s, built for %v only, succeeded on %s", ref, platforms, e.name)
		}
		t.Logf("the error: %v", err)
		for _, want := range []string{ref, "registry " + reg.Addr, "engine " + p.EngineURI(), "no variant for the engine's platform"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if left, _ := containersWithID(ctx, p, id); len(left) != 0 {
			t.Errorf("containers left: %v", left)
		}
		if hasImage(t, p, ref) {
			t.Errorf("%s counts as present after the refused pull", ref)
		}
		if !strings.Contains(logs.String(), ref) {
			t.Errorf("the broker's log does not mention the pull of %s:\n%s", ref, logs)
		}
	})
}
