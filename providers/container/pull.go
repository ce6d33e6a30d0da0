package container

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/distribution/reference"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"

	"github.com/hostbroker/broker/internal/safefile"
	"github.com/hostbroker/broker/providers"
)

// Pull policies: when a checkout or an execute pulls its image (the
// pull_policy setting and argument).
const (
	PullMissing = "missing" // pull when the engine lacks the image (the default)
	PullAlways  = "always"  // pull every time: a tag that moved is fetched again
	PullNever   = "never"   // never pull: a missing image is an error
)

// defaultPullTimeout bounds one pull (the pull_timeout setting).
const defaultPullTimeout = 10 * time.Minute

// progressEvery is how often a pull under way reports, once it has lasted
// that long.
const progressEvery = 2 * time.Second

// pullSettings reads pull_policy and pull_timeout.
func pullSettings(m map[string]any, s *settings) error {
	var err error
	if s.pullPolicy, err = stringSetting(m, "pull_policy"); err != nil {
		return err
	}
	if s.pullPolicy, err = checkPolicy(s.pullPolicy); err != nil {
		_, k, _ := providers.Setting(m, "pull_policy")
		return settingError(k, err)
	}
	if s.pullTimeout, err = secondsSetting(m, defaultPullTimeout, "pull_timeout"); err != nil {
		return err
	}
	return nil
}

// checkPolicy normalizes a pull policy ("" is PullMissing). The names of
// Docker's `--pull` (missing, always, never) and of Kubernetes'
// imagePullPolicy (IfNotPresent, Always, Never) are taken.
func checkPolicy(v string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", PullMissing, "ifnotpresent":
		return PullMissing, nil
	case PullAlways:
		return PullAlways, nil
	case PullNever:
		return PullNever, nil
	}
	return "", fmt.Errorf("%q is not a pull policy (missing, always or never)", v)
}

// requestPolicy is the pull policy of a request: its pull_policy argument,
// else the instance's setting.
func (p *Provider) requestPolicy(args map[string]any) (string, error) {
	v, err := argString(args, "pull_policy")
	if err != nil {
		return "", fmt.Errorf("container: %w", err)
	}
	if v == "" {
		return p.settings.pullPolicy, nil
	}
	pol, err := checkPolicy(v)
	if err != nil {
		return "", fmt.Errorf("container: argument pull_policy: %w", err)
	}
	return pol, nil
}

// imageRef is an image name as the engines read it.
type imageRef struct {
	asked string          // as the request gave it: what the engine is asked to inspect
	named reference.Named // normalized: docker.io/library/debian:latest
}

// registry is the host[:port] the image comes from.
func (r imageRef) registry() string { return reference.Domain(r.named) }

// parseImage reads an image reference with the engines' rules: a name
// without a registry is Docker Hub's (library/ for one path component), a
// name without tag or digest is :latest.
func parseImage(s string) (imageRef, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return imageRef{}, fmt.Errorf("container: image %q is not a valid image reference: %w", s, err)
	}
	return imageRef{asked: s, named: reference.TagNameOnly(named)}, nil
}

// ensureImage makes sure the engine holds image under the request's pull
// policy and returns its inspection: under PullMissing it is pulled when
// the engine lacks it, under PullAlways always, under PullNever never.
func (p *Provider) ensureImage(ctx context.Context, name, policy string) (client.ImageInspectResult, error) {
	ref, err := parseImage(name)
	if err != nil {
		return client.ImageInspectResult{}, err
	}
	if policy != PullAlways {
		img, err := p.inspectImage(ctx, ref)
		if err == nil || !isNotFound(err) {
			return img, err
		}
		if policy == PullNever {
			return img, &textError{text: fmt.Sprintf("container: no image %q on engine %s, and pull_policy is never (pull, build or load it first, or allow pulls: pull_policy missing)", name, p.eng.uri), err: err}
		}
	}
	if err := p.pull(ctx, ref, policy); err != nil {
		return client.ImageInspectResult{}, err
	}
	img, err := p.inspectImage(ctx, ref)
	if err != nil && isNotFound(err) {
		return img, &textError{text: fmt.Sprintf("container: image %q was pulled from %s but engine %s does not have it", name, ref.registry(), p.eng.uri), err: err}
	}
	return img, err
}

// inspectImage asks the engine for the image by the name as given: the
// engine matches it its own way (Podman's localhost/ names and short-name
// aliases, say).
func (p *Provider) inspectImage(ctx context.Context, ref imageRef) (client.ImageInspectResult, error) {
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	img, err := p.eng.cli.ImageInspect(cctx, ref.asked)
	if err != nil && !isNotFound(err) {
		return img, fmt.Errorf("container: image %q on engine %s: %w", ref.asked, p.eng.uri, err)
	}
	return img, err
}

// pullFlight is one pull under way, shared by the calls that wait for it.
type pullFlight struct {
	ref      imageRef
	started  time.Time
	mu       sync.Mutex
	layers   map[string]*layerProgress
	waiting  bool // for another process's pull of the same image
	reported time.Time
}

type layerProgress struct {
	current, total int64
	done           bool
}

// pull pulls ref onto the engine, once at a time per image: the calls of
// this process that want it share one pull (singleflight), and processes
// share it through a lock file per image and engine. A caller whose ctx
// ends stops waiting; the pull goes on for the others, bounded by
// pull_timeout.
func (p *Provider) pull(ctx context.Context, ref imageRef, policy string) error {
	key := p.eng.uri + "\x00" + ref.named.String()
	if ref.registry() == "localhost" && p.podman(ctx) {
		// Podman names what it built or loaded localhost/…: no registry
		// serves them.
		return &textError{text: fmt.Sprintf("container: no image %q on engine %s: localhost/ images are built or loaded on the engine, not pulled (build or load it there)", ref.asked, p.eng.uri)}
	}
	ch := p.pulls.DoChan(key, func() (any, error) {
		flight := &pullFlight{ref: ref, started: time.Now(), layers: map[string]*layerProgress{}}
		p.flights.Store(key, flight)
		defer p.flights.CompareAndDelete(key, flight)
		// Detached from the caller: a cancelled test stops its own wait,
		// not the pull the others wait for.
		pctx, cancel := context.WithTimeout(context.Background(), p.settings.pullTimeout)
		defer cancel()
		return nil, p.pullLocked(pctx, flight, policy)
	})
	report := providers.Reporter(ctx)
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	for {
		select {
		case res := <-ch:
			return res.Err
		case <-ctx.Done():
			return fmt.Errorf("container: pull %s from registry %s on engine %s: %w (the pull goes on for other callers, up to pull_timeout %s)",
				ref.asked, ref.registry(), p.eng.uri, context.Cause(ctx), p.settings.pullTimeout)
		case <-tick.C:
			if f, ok := p.flights.Load(key); ok && report != nil {
				if line := f.(*pullFlight).progress(p.eng.uri); line != "" {
					report(line)
				}
			}
		}
	}
}

// podman reports whether the engine is Podman: the runtime setting, else
// what the engine says of itself.
func (p *Provider) podman(ctx context.Context) bool {
	if p.settings.runtime != "" {
		return p.settings.runtime == "podman"
	}
	return p.eng.createsDirs(ctx)
}

// pullLocked pulls under the image's lock file, unless another process
// pulled the image meanwhile (policy missing).
func (p *Provider) pullLocked(ctx context.Context, f *pullFlight, policy string) error {
	unlock, waited, err := p.lockImage(ctx, f)
	if err != nil {
		return err
	}
	defer unlock()
	if waited && policy == PullMissing {
		// Another process held the lock: it may have pulled the image.
		if _, err := p.inspectImage(ctx, f.ref); err == nil {
			p.log.Debug("container: image pulled by another process meanwhile", "image", f.ref.asked, "engine", p.eng.uri)
			return nil
		}
	}
	return p.enginePull(ctx, f)
}

// lockImage takes the lock file of the image on this engine, under
// <dir>/container/pulls, waiting for another process's pull (within ctx).
// waited says whether another process held it.
func (p *Provider) lockImage(ctx context.Context, f *pullFlight) (unlock func(), waited bool, err error) {
	dir := filepath.Join(p.settings.dir, "container", "pulls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("container: pull lock: %w", err)
	}
	sum := sha256.Sum256([]byte(p.eng.uri + "\x00" + f.ref.named.String()))
	path := filepath.Join(dir, hex.EncodeToString(sum[:12])+".lock")
	lf, err := safefile.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("container: pull lock: %w", err)
	}
	unlock = func() { lf.Close() } // closing releases the flock
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, 500*time.Millisecond) {
		err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if waited {
				f.mu.Lock()
				f.waiting = false
				f.mu.Unlock()
			}
			return unlock, waited, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			lf.Close()
			return nil, false, fmt.Errorf("container: pull lock %s: %w", path, err)
		}
		if !waited {
			waited = true
			f.mu.Lock()
			f.waiting = true
			f.mu.Unlock()
			p.log.Debug("container: waiting for another process's pull", "image", f.ref.asked, "engine", p.eng.uri, "lock", path)
		}
		select {
		case <-ctx.Done():
			lf.Close()
			return nil, false, f.ref.pullError(p, fmt.Errorf("waiting for another process's pull of it: %w", ctx.Err()), "")
		case <-time.After(delay):
		}
	}
}

// enginePull asks the engine to pull f's image with the registry's
// credentials, following its progress.
func (p *Provider) enginePull(ctx context.Context, f *pullFlight) error {
	cred, err := p.credentials(ctx, f.ref.registry())
	if err != nil {
		// Not pullError's hints: the engine was not asked yet.
		return &textError{text: fmt.Sprintf("container: pull %s from registry %s on engine %s: %v (check the credential helper or file named, e.g. run the helper by hand, or set the Container settings' registries for %s)",
			f.ref.asked, f.ref.registry(), p.eng.uri, err, f.ref.registry()), err: err}
	}
	p.log.Info("container: pulling image", "image", f.ref.asked, "registry", f.ref.registry(), "engine", p.eng.uri, "credentials", cred.describe())
	resp, err := p.eng.cli.ImagePull(ctx, f.ref.named.String(), client.ImagePullOptions{RegistryAuth: cred.header(f.ref.registry())})
	if err != nil {
		return f.ref.pullError(p, cred.redact(err), cred.describe())
	}
	defer resp.Close()
	for msg, err := range resp.JSONMessages(ctx) {
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (pull_timeout %s)", ctx.Err(), p.settings.pullTimeout)
			}
			return f.ref.pullError(p, cred.redact(err), cred.describe())
		}
		if msg.Error != nil {
			return f.ref.pullError(p, cred.redact(errors.New(msg.Error.Message)), cred.describe())
		}
		f.update(msg)
		if line := f.progressDue(p.eng.uri); line != "" {
			p.log.Info(line)
		}
	}
	p.log.Info("container: pulled image", "image", f.ref.asked, "engine", p.eng.uri, "took", time.Since(f.started).Round(time.Millisecond))
	return nil
}

// update records a layer's progress from the engine's pull stream.
func (f *pullFlight) update(msg jsonstream.Message) {
	if msg.ID == "" || strings.HasPrefix(msg.Status, "Pulling from") {
		return // the image's lines (its tag as the id), not a layer's
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.layers[msg.ID]
	if l == nil {
		l = &layerProgress{}
		f.layers[msg.ID] = l
	}
	switch {
	case msg.Status == "Downloading" && msg.Progress != nil:
		l.current = msg.Progress.Current
		if msg.Progress.Total > 0 {
			l.total = msg.Progress.Total
		}
	case msg.Status == "Download complete", msg.Status == "Pull complete", msg.Status == "Already exists":
		l.done = true
		if l.total > 0 {
			l.current = l.total
		}
	}
}

// progress is a line on the pull under way, or "" before it has lasted
// progressEvery.
func (f *pullFlight) progress(engine string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	took := time.Since(f.started)
	// The waiters' tickers started a moment before the pull: 9/10 of the
	// period lets their first tick report.
	if took < progressEvery*9/10 {
		return ""
	}
	if f.waiting {
		return fmt.Sprintf("container: waiting %s for another process pulling %s onto %s", took.Round(time.Second), f.ref.asked, engine)
	}
	done := 0
	var cur, total int64
	for _, l := range f.layers {
		if l.done {
			done++
		}
		cur += l.current
		total += l.total
	}
	return fmt.Sprintf("container: pulling %s from %s onto %s: %d/%d layers, %s of %s, %s",
		f.ref.asked, f.ref.registry(), engine, done, len(f.layers), megabytes(cur), megabytes(total), took.Round(time.Second))
}

// progressDue is progress when the last line for the broker's log is
// progressEvery old, else "".
func (f *pullFlight) progressDue(engine string) string {
	f.mu.Lock()
	due := time.Since(f.reported) >= progressEvery
	if due {
		f.reported = time.Now()
	}
	f.mu.Unlock()
	if !due {
		return ""
	}
	return f.progress(engine)
}

func megabytes(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// pullError is one error for a failed pull: what failed (the image, its
// registry, the engine), why in the engine's words, and what to do.
func (r imageRef) pullError(p *Provider, err error, credSource string) error {
	msg := err.Error()
	low := strings.ToLower(msg)
	var hint string
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		hint = fmt.Sprintf("the registry is slow or unreachable from the engine; raise pull_timeout (now %s) or pull it beforehand", p.settings.pullTimeout)
	case strings.Contains(low, "pull access denied"):
		// Docker Hub's answer both for a repository that does not exist
		// and for one that needs credentials.
		if credSource == "" {
			credSource = "no credentials"
		}
		hint = fmt.Sprintf("the registry has no such repository, or it needs credentials (sent: %s): check the name, or log in to %s (docker login / podman login) or set the Container settings' registries", credSource, r.registry())
	case strings.Contains(low, "unauthorized") || strings.Contains(low, "authentication required") ||
		strings.Contains(low, "denied") || strings.Contains(low, "no basic auth credentials") || strings.Contains(low, "incorrect username or password"):
		if credSource == "" {
			credSource = "no credentials"
		}
		hint = fmt.Sprintf("the registry refused the credentials (%s): log in to %s (docker login / podman login) or set the Container settings' registries: {%s: {username, password or token}}", credSource, r.registry(), r.registry())
	case strings.Contains(low, "no matching manifest") || strings.Contains(low, "platform") ||
		strings.Contains(low, "no image found in manifest list"):
		// Docker: "no matching manifest for linux/amd64 in the manifest
		// list entries"; Podman: "no image found in manifest list for
		// architecture amd64, variant "", OS linux". Before "not found".
		hint = "the image has no variant for the engine's platform: use a tag built for it (or a multi-platform one), or an engine of a platform the image has"
	case strings.Contains(low, "manifest unknown") || strings.Contains(low, "not found") || strings.Contains(low, "does not exist") || strings.Contains(low, "name unknown"):
		hint = "the registry has no such image or tag: check the name, or push it there"
	case strings.Contains(low, "no space left"):
		hint = "the engine's storage is full: free space on the engine's host (docker image prune / podman image prune)"
	case strings.Contains(low, "connection refused") || strings.Contains(low, "no such host") || strings.Contains(low, "timeout") ||
		strings.Contains(low, "connection reset") || strings.Contains(low, "eof") || strings.Contains(low, "unreachable") || strings.Contains(low, "dial tcp"):
		hint = "the engine could not reach the registry (or lost it mid-pull): check that it runs and that the engine's host can reach it"
	default:
		hint = "see the engine's message"
	}
	return &textError{text: fmt.Sprintf("container: pull %s from registry %s on engine %s: %s (%s)", r.asked, r.registry(), p.eng.uri, msg, hint), err: err}
}

// imageError says that image could not be read on the engine at uri (for
// Describe, which does not pull). The engine's "No such image: <name>" is
// not repeated.
func imageError(image, uri string, err error) error {
	if isNotFound(err) {
		return &textError{text: fmt.Sprintf("container: no image %q on engine %s (a checkout pulls it: pull_policy missing)", image, uri), err: err}
	}
	return fmt.Errorf("container: image %q on engine %s: %w", image, uri, err)
}
