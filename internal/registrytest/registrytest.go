// Package registrytest runs a real image registry for tests, as httptest
// runs an HTTP server: Debian's docker-registry (Distribution v2) on
// 127.0.0.1 on a free port, its storage in a temporary directory, with
// optional htpasswd users and an optional slow link in front of it.
//
// Docker pulls from 127.0.0.0/8 over plain HTTP without any daemon
// setting; Podman needs the registry marked insecure in its
// registries.conf (RegistriesConf writes one that covers every port of
// 127.0.0.1).
//
// Tests that use it skip when docker-registry is not installed, or fail
// when BROKER_TEST_REQUIRE names "registry" (internal/testenv).
package registrytest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	"golang.org/x/crypto/bcrypt"

	"github.com/hostbroker/broker/internal/testenv"
)

// Part is the name BROKER_TEST_REQUIRE uses for the registry.
const Part = "registry"

// Options configure a registry.
type Options struct {
	// Users, when not empty, turns on htpasswd authentication with these
	// user names and passwords.
	Users map[string]string
	// Rate, when > 0, puts a proxy in front of the registry that sends
	// response bodies at no more than Rate bytes a second: a slow link,
	// for pulls that last.
	Rate int64
}

// Registry is a running registry.
type Registry struct {
	// Addr is host:port, the registry part of image references
	// (Addr + "/brokertest/x:1").
	Addr string

	opts    Options
	dir     string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	proxy   *http.Server
	blobs   chan struct{} // closed on the first blob response through the proxy
	blobOne sync.Once
	stopped atomic.Bool
	once    sync.Once
}

// binary finds Debian's docker-registry (upstream names it registry).
func binary() (string, error) {
	for _, name := range []string{"docker-registry", "registry"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("docker-registry is not installed (apt-get install docker-registry)")
}

// Start runs a registry for tb, stopped at tb's cleanup. It skips tb when
// docker-registry is missing (fails it when BROKER_TEST_REQUIRE names
// "registry").
func Start(tb testing.TB, opts Options) *Registry {
	tb.Helper()
	_, err := binary()
	testenv.Require(tb, Part, err)
	r, err := New(opts)
	if err != nil {
		tb.Fatalf("registrytest: %v", err)
	}
	tb.Cleanup(r.Stop)
	return r
}

// New runs a registry outside a test (the benchmarks' driver); stop it
// with Stop.
func New(opts Options) (*Registry, error) {
	bin, err := binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "registrytest")
	if err != nil {
		return nil, err
	}
	r := &Registry{opts: opts, dir: dir, logPath: filepath.Join(dir, "registry.log"), done: make(chan struct{}), blobs: make(chan struct{})}
	fail := func(err error) (*Registry, error) {
		r.Stop()
		return nil, err
	}
	auth := ""
	if len(opts.Users) > 0 {
		var b strings.Builder
		for u, p := range opts.Users {
			// bcrypt, as `htpasswd -B` writes: the only hash the registry takes.
			h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
			if err != nil {
				return fail(err)
			}
			fmt.Fprintf(&b, "%s:%s\n", u, h)
		}
		pw := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pw, []byte(b.String()), 0o600); err != nil {
			return fail(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: registrytest\n    path: %s\n", pw)
	}
	// A port taken between the probe and the registry's bind is tried again.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return fail(err)
		}
		addr := "127.0.0.1:" + port
		conf := fmt.Sprintf("version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"+
			"storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"+
			"http:\n  addr: %s\n%s", filepath.Join(dir, "data"), addr, auth)
		confPath := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			return fail(err)
		}
		if lastErr = r.run(bin, confPath, addr); lastErr == nil {
			r.Addr = addr
			break
		}
	}
	if lastErr != nil {
		return fail(lastErr)
	}
	if opts.Rate > 0 {
		if err := r.startProxy(); err != nil {
			return fail(err)
		}
	}
	return r, nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

// run starts the registry process on addr and waits until it answers.
func (r *Registry) run(bin, conf, addr string) error {
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "serve", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", bin, err)
	}
	logf.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			// 200, or 401 with auth: the registry answers.
			r.cmd, r.done = cmd, done
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("docker-registry exited: %s", bytes.TrimSpace(r.Log()))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			return fmt.Errorf("docker-registry on %s did not answer in 30s: %w", addr, err)
		}
	}
}

// startProxy puts the slow link in front of the registry: Addr becomes the
// proxy's.
func (r *Registry) startProxy() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	target := &url.URL{Scheme: "http", Host: r.Addr}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // a pull cut short is the point
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/") {
			r.blobOne.Do(func() { close(r.blobs) })
			resp.Body = &slowBody{rc: resp.Body, rate: r.opts.Rate, start: time.Now()}
		}
		return nil
	}
	rp.Director = func(req *http.Request) {
		req.URL.Scheme, req.URL.Host = target.Scheme, target.Host
		// The registry's redirects and realm name the address the client
		// used: keep its Host.
	}
	r.proxy = &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.proxy.Serve(l) }()
	r.Addr = l.Addr().String()
	return nil
}

// slowBody reads at most rate bytes a second.
type slowBody struct {
	rc    io.ReadCloser
	rate  int64
	start time.Time
	sent  int64
}

func (b *slowBody) Read(p []byte) (int, error) {
	chunk := max(b.rate/20, 512)
	if int64(len(p)) > chunk {
		p = p[:chunk]
	}
	n, err := b.rc.Read(p)
	b.sent += int64(n)
	due := b.start.Add(time.Duration(float64(b.sent) / float64(b.rate) * float64(time.Second)))
	time.Sleep(time.Until(due))
	return n, err
}

func (b *slowBody) Close() error { return b.rc.Close() }

// BlobStarted is closed when the first blob starts to go through the slow
// link (Options.Rate): a pull is under way.
func (r *Registry) BlobStarted() <-chan struct{} { return r.blobs }

// Stop kills the registry (and the slow link's open connections, which a
// pull under way then sees end) and removes its storage. Safe to call
// twice and mid-pull.
func (r *Registry) Stop() {
	r.once.Do(func() {
		r.stopped.Store(true)
		if r.cmd != nil && r.cmd.Process != nil {
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			<-r.done
		}
		if r.proxy != nil {
			_ = r.proxy.Close()
		}
		os.RemoveAll(r.dir)
	})
}

// Log is the registry's log so far (its access log included).
func (r *Registry) Log() []byte {
	b, _ := os.ReadFile(r.logPath)
	return b
}

// Request is one line of the registry's access log.
type Request struct {
	Method, Path string
	Status       int
}

var accessLine = regexp.MustCompile(`"([A-Z]+) (/v2/\S*) HTTP/[0-9.]+" ([0-9]{3}) `)

// Requests are the requests the registry has answered, from its access
// log, in order.
func (r *Registry) Requests() []Request {
	var out []Request
	sc := bufio.NewScanner(bytes.NewReader(r.Log()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := accessLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		var status int
		fmt.Sscan(m[3], &status)
		out = append(out, Request{Method: m[1], Path: m[2], Status: status})
	}
	return out
}

// ManifestRequests counts the manifest requests (GET and HEAD, any
// status) for repository repo ("brokertest/x", without the registry
// address). A pull by Docker makes a HEAD by tag, and a GET by digest
// unless the engine kept that manifest from an earlier pull (Docker 20.10
// does, even after the image's removal); a push makes none.
func (r *Registry) ManifestRequests(repo string) (get, head int) {
	prefix := "/v2/" + repo + "/manifests/"
	for _, q := range r.Requests() {
		if !strings.HasPrefix(q.Path, prefix) {
			continue
		}
		switch q.Method {
		case http.MethodGet:
			get++
		case http.MethodHead:
			head++
		}
	}
	return get, head
}

// AuthHeader is the X-Registry-Auth value of user's credentials for this
// registry, for the Engine API ("" is none: an empty object, which a push
// must still send).
func (r *Registry) AuthHeader(user string) string {
	if user == "" {
		return base64.URLEncoding.EncodeToString([]byte("{}"))
	}
	b, _ := json.Marshal(registry.AuthConfig{Username: user, Password: r.opts.Users[user], ServerAddress: r.Addr})
	return base64.URLEncoding.EncodeToString(b)
}

// anyUser is one of the registry's users, or "".
func (r *Registry) anyUser() string {
	for u := range r.opts.Users {
		return u
	}
	return ""
}

// Push tags the image src of the Docker engine cli as r.Addr/repoTag,
// pushes it (as one of the registry's users when it has any) and removes
// that tag from the engine again (src stays). It returns the reference
// pushed.
func (r *Registry) Push(tb testing.TB, cli *client.Client, src, repoTag string) string {
	tb.Helper()
	ref, err := r.push(tb.Context(), cli, src, repoTag)
	if err != nil {
		tb.Fatalf("registrytest: %v", err)
	}
	return ref
}

func (r *Registry) push(ctx context.Context, cli *client.Client, src, repoTag string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	ref := r.Addr + "/" + repoTag
	if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: src, Target: ref}); err != nil {
		return "", fmt.Errorf("tag %s as %s: %w", src, ref, err)
	}
	defer func() {
		_, _ = cli.ImageRemove(context.WithoutCancel(ctx), ref, client.ImageRemoveOptions{})
	}()
	resp, err := cli.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: r.AuthHeader(r.anyUser())})
	if err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	defer resp.Close()
	for msg, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return "", fmt.Errorf("push %s: %w", ref, err)
		}
		if msg.Error != nil {
			return "", fmt.Errorf("push %s: %s", ref, msg.Error.Message)
		}
	}
	return ref, nil
}

// PushRandom pushes, as r.Addr/repoTag, a new image: base (an image of the
// Docker engine cli with a shell and head, such as brokertest/busybox:1)
// plus a layer of size random bytes that no engine has, so a pull of it
// downloads that layer. It returns the reference pushed and the image's
// id; the image is removed from cli again.
func (r *Registry) PushRandom(tb testing.TB, cli *client.Client, base, repoTag string, size int64) (ref, id string) {
	tb.Helper()
	ref, id, err := r.PushRandomContext(tb.Context(), cli, base, repoTag, size, nil)
	if err != nil {
		tb.Fatalf("registrytest: %v", err)
	}
	return ref, id
}

// PushRandomContext is PushRandom outside a test, its image running cmd
// (nil: base's command).
func (r *Registry) PushRandomContext(ctx context.Context, cli *client.Client, base, repoTag string, size int64, cmd []string) (ref, id string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: &container.Config{
		Image: base, Cmd: []string{"sh", "-c", fmt.Sprintf("head -c %d /dev/urandom > /payload", size)},
		Labels: map[string]string{"io.hostbroker.registrytest": "payload"},
	}})
	if err != nil {
		return "", "", fmt.Errorf("create payload container from %s: %w", base, err)
	}
	defer func() {
		_, _ = cli.ContainerRemove(context.WithoutCancel(ctx), created.ID, client.ContainerRemoveOptions{Force: true})
	}()
	wait := cli.ContainerWait(ctx, created.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNextExit})
	if _, err := cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		return "", "", fmt.Errorf("start payload container: %w", err)
	}
	select {
	case res := <-wait.Result:
		if res.StatusCode != 0 {
			return "", "", fmt.Errorf("payload container exited %d", res.StatusCode)
		}
	case err := <-wait.Error:
		return "", "", fmt.Errorf("wait for payload container: %w", err)
	}
	local := "registrytest-payload/" + strings.ReplaceAll(strings.ToLower(repoTag), "/", "-")
	if !strings.Contains(local[strings.LastIndex(local, "/"):], ":") {
		local += ":latest"
	}
	// The image runs base's command, not the one that wrote the payload.
	bi, err := cli.ImageInspect(ctx, base)
	if err != nil {
		return "", "", fmt.Errorf("inspect %s: %w", base, err)
	}
	if cmd == nil && bi.Config != nil {
		cmd = bi.Config.Cmd
	}
	cmdJSON, _ := json.Marshal(cmd)
	committed, err := cli.ContainerCommit(ctx, created.ID, client.ContainerCommitOptions{Reference: local, Changes: []string{"CMD " + string(cmdJSON)}})
	if err != nil {
		return "", "", fmt.Errorf("commit payload image: %w", err)
	}
	defer func() {
		_, _ = cli.ImageRemove(context.WithoutCancel(ctx), committed.ID, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	}()
	ref, err = r.push(ctx, cli, local, repoTag)
	return ref, committed.ID, err
}

// RegistriesConf writes a registries.conf (containers-registries.conf(5))
// to dir that lets Podman pull from any port of 127.0.0.1 over plain
// HTTP, and returns its path, for CONTAINERS_REGISTRIES_CONF.
func RegistriesConf(dir string) (string, error) {
	p := filepath.Join(dir, "registries.conf")
	// A location without a port matches every port of that host.
	const conf = "unqualified-search-registries = [\"docker.io\"]\n\n[[registry]]\nlocation = \"127.0.0.1\"\ninsecure = true\n"
	return p, os.WriteFile(p, []byte(conf), 0o644)
}

// PushForeign pushes, as r.Addr/repoTag, an image built only for the
// platforms given ("linux/arm64", "linux/s390x"): a manifest list of one
// manifest per platform, each a config of that architecture and one tiny
// layer, put with the registry's HTTP API (no engine involved, so no
// emulation is needed). A pull of it on an engine of another platform
// finds no image for its platform. It returns the reference pushed.
func (r *Registry) PushForeign(tb testing.TB, repoTag string, platforms ...string) string {
	tb.Helper()
	ref, err := r.pushForeign(tb.Context(), repoTag, platforms)
	if err != nil {
		tb.Fatalf("registrytest: push %s for %v: %v", repoTag, platforms, err)
	}
	return ref
}

// Schema 2 media types, which every engine and this registry take.
const (
	mediaManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaConfig   = "application/vnd.docker.container.image.v1+json"
	mediaLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// descriptor is a content descriptor of the image manifest formats.
type descriptor struct {
	MediaType string    `json:"mediaType"`
	Size      int       `json:"size"`
	Digest    string    `json:"digest"`
	Platform  *platform `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

func (r *Registry) pushForeign(ctx context.Context, repoTag string, platforms []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if len(platforms) == 0 {
		return "", errors.New("no platform given")
	}
	repo, tag, ok := strings.Cut(repoTag, ":")
	if !ok {
		tag = "latest"
	}
	// One layer, a tar.gz of one file, shared by every platform's image.
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	content := []byte("registrytest: an image for another platform\n")
	if err := tw.WriteHeader(&tar.Header{Name: "README", Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(0, 0)}); err != nil {
		return "", err
	}
	tw.Write(content)
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	layer, err := r.putBlob(ctx, repo, mediaLayer, gz.Bytes())
	if err != nil {
		return "", err
	}
	list := struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}{SchemaVersion: 2, MediaType: mediaList}
	for _, pl := range platforms {
		osName, arch, ok := strings.Cut(pl, "/")
		if !ok {
			return "", fmt.Errorf("platform %q: want os/architecture", pl)
		}
		cfg, _ := json.Marshal(map[string]any{
			"architecture": arch, "os": osName,
			"config": map[string]any{"Cmd": []string{"/README"}},
			"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digestOf(tarBuf.Bytes())}},
		})
		config, err := r.putBlob(ctx, repo, mediaConfig, cfg)
		if err != nil {
			return "", err
		}
		m, _ := json.Marshal(map[string]any{
			"schemaVersion": 2, "mediaType": mediaManifest,
			"config": config, "layers": []descriptor{layer},
		})
		d, err := r.putManifest(ctx, repo, digestOf(m), mediaManifest, m)
		if err != nil {
			return "", err
		}
		d.Platform = &platform{Architecture: arch, OS: osName}
		list.Manifests = append(list.Manifests, d)
	}
	b, _ := json.Marshal(list)
	if _, err := r.putManifest(ctx, repo, tag, mediaList, b); err != nil {
		return "", err
	}
	return r.Addr + "/" + repo + ":" + tag, nil
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// do sends req to the registry as one of its users, and wants status.
func (r *Registry) do(req *http.Request, status int) (*http.Response, error) {
	if u := r.anyUser(); u != "" {
		req.SetBasicAuth(u, r.opts.Users[u])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != status {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %s, want %d: %s", req.Method, req.URL.Path, resp.Status, status, bytes.TrimSpace(body))
	}
	return resp, nil
}

// putBlob uploads b to repo in one piece (POST, then PUT with its digest).
func (r *Registry) putBlob(ctx context.Context, repo, mediaType string, b []byte) (descriptor, error) {
	d := descriptor{MediaType: mediaType, Size: len(b), Digest: digestOf(b)}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.Addr+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := r.do(req, http.StatusAccepted)
	if err != nil {
		return d, err
	}
	resp.Body.Close()
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil {
		return d, fmt.Errorf("upload location %q: %w", resp.Header.Get("Location"), err)
	}
	q := loc.Query()
	q.Set("digest", d.Digest)
	loc.RawQuery = q.Encode()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = r.do(req, http.StatusCreated)
	if err != nil {
		return d, err
	}
	resp.Body.Close()
	return d, nil
}

// putManifest puts manifest b of mediaType as repo:ref (a tag or digest).
func (r *Registry) putManifest(ctx context.Context, repo, ref, mediaType string, b []byte) (descriptor, error) {
	d := descriptor{MediaType: mediaType, Size: len(b), Digest: digestOf(b)}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+r.Addr+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(b))
	req.Header.Set("Content-Type", mediaType)
	resp, err := r.do(req, http.StatusCreated)
	if err != nil {
		return d, err
	}
	resp.Body.Close()
	return d, nil
}
