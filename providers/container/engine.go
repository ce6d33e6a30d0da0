package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
)

// engine is a connected engine client and the address it came from.
type engine struct {
	cli *client.Client
	uri string // without a password
	// failures explains the moby client's bare "cannot connect" (ssh://).
	failures *dialFailures

	podmanOnce sync.Once
	podman     bool
}

// createsDirs reports whether the engine's archive API creates a missing
// destination directory (Podman's does; Docker answers 404). Asked once;
// an engine that does not say is assumed to.
func (e *engine) createsDirs(ctx context.Context) bool {
	e.podmanOnce.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, pingTimeout)
		defer cancel()
		v, err := e.cli.ServerVersion(ctx, client.ServerVersionOptions{})
		if err != nil {
			e.podman = true
			return
		}
		e.podman = strings.Contains(strings.ToLower(v.Platform.Name), "podman")
		for _, c := range v.Components {
			if strings.Contains(strings.ToLower(c.Name), "podman") {
				e.podman = true
			}
		}
	})
	return e.podman
}

// pingTimeout bounds the ping that proves a local engine answers;
// remotePingTimeout one reached over the network (ssh:// also starts ssh
// and a program on the engine host).
const (
	pingTimeout       = 5 * time.Second
	remotePingTimeout = 30 * time.Second
)

// candidate is one engine address to try and where it came from.
type candidate struct {
	uri, from string
}

// candidates lists the engine addresses to try, in order.
func candidates(s settings) []candidate {
	if s.hostURI != "" {
		return []candidate{{normalizeURI(s.hostURI), "setting host_uri"}}
	}
	var docker, podman []candidate
	if v := os.Getenv("DOCKER_HOST"); v != "" {
		docker = append(docker, candidate{normalizeURI(v), "DOCKER_HOST"})
	}
	if v := os.Getenv("CONTAINER_HOST"); v != "" {
		podman = append(podman, candidate{normalizeURI(v), "CONTAINER_HOST"})
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		podman = append(podman, candidate{"unix://" + filepath.Join(d, "podman", "podman.sock"), "$XDG_RUNTIME_DIR"})
	}
	if os.Getuid() == 0 {
		podman = append(podman, candidate{"unix:///run/podman/podman.sock", "rootful podman"})
	}
	sock := []candidate{{"unix:///var/run/docker.sock", "default"}}
	if s.runtime == "podman" {
		return append(append(podman, docker...), sock...)
	}
	// The documented order: DOCKER_HOST, CONTAINER_HOST, podman sockets, docker.sock.
	out := append(docker, podman...)
	return append(out, sock...)
}

// normalizeURI turns a bare socket path into a unix:// URI.
func normalizeURI(u string) string {
	if strings.HasPrefix(u, "/") {
		return "unix://" + u
	}
	return u
}

// redactURI is uri with any password replaced, for logs, errors and
// records.
func redactURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return uri
	}
	return u.Redacted()
}

// engineOptions are the settings that say how to reach an engine.
type engineOptions struct {
	runtime   string     // "podman" puts podman first for ssh:// sockets
	sshConfig string     // ssh -F file for ssh:// engines (setting engine_ssh_config)
	sshKey    string     // ssh -i file (CONTAINER_SSHKEY, for CONTAINER_HOST)
	tls       tlsOptions // for tcp:// and https://
}

// engineOptionsFor gives the options for candidate c.
func engineOptionsFor(s settings, c candidate) engineOptions {
	o := engineOptions{runtime: s.runtime, sshConfig: s.engineSSHConfig, tls: resolveTLS(s)}
	if c.from == "CONTAINER_HOST" {
		// Podman's companion of CONTAINER_HOST.
		o.sshKey = os.Getenv("CONTAINER_SSHKEY")
	}
	return o
}

// connect returns a client for the first candidate engine that answers. An
// engine named by DOCKER_HOST or CONTAINER_HOST that did not answer, when a
// later one did, is warned about on log: the user asked for it.
func connect(ctx context.Context, s settings, log *slog.Logger) (*engine, error) {
	var tried []string
	askedFor := false // a candidate from the environment did not answer
	for _, c := range candidates(s) {
		eng, err := dialEngine(ctx, c.uri, engineOptionsFor(s, c))
		if err == nil {
			if askedFor {
				log.Warn("container: an engine named in the environment did not answer; using the next one", "using", eng.uri, "tried", strings.Join(tried, "; "))
			}
			return eng, nil
		}
		askedFor = askedFor || c.from == "DOCKER_HOST" || c.from == "CONTAINER_HOST"
		tried = append(tried, fmt.Sprintf("%s (%s): %v", redactURI(c.uri), c.from, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("container: no container engine answered; tried: %s", strings.Join(tried, "; "))
}

// dialEngine makes a client for uri and pings it (negotiating the API
// version) within pingTimeout (remotePingTimeout for a network address).
//
//   - unix:///path: the socket.
//   - tcp://host:port, http://…: plain HTTP, or TLS as o.tls says;
//     https://…: TLS. The dialer does the TLS handshake, bounded by the
//     request's context (so does every hijacked connection's).
//   - ssh://[user@]host[:port][/socket]: through the ssh client (see
//     sshTarget): the user's ssh configuration, keys and agent, or
//     o.sshConfig; BatchMode, so nothing prompts.
func dialEngine(ctx context.Context, uri string, o engineOptions) (*engine, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("bad engine address %q (want unix:///path, tcp://host:port or ssh://[user@]host[:port][/socket])", redactURI(uri))
	}
	timeout := remotePingTimeout
	var opts []client.Opt
	var failures *dialFailures
	switch u.Scheme {
	case "unix":
		if _, err := os.Stat(u.Path); err != nil {
			return nil, fmt.Errorf("socket: %w", err)
		}
		timeout = pingTimeout
		opts = append(opts, client.WithHost(uri))
	case "tcp", "http", "https":
		if u.Host == "" {
			return nil, fmt.Errorf("engine address %s: no host", redactURI(uri))
		}
		tlsOn := o.tls.enabled || u.Scheme == "https"
		addr := u.Host
		if u.Port() == "" { // the docker CLI's default ports
			port := "2375"
			if tlsOn {
				port = "2376"
			}
			addr = net.JoinHostPort(u.Hostname(), port)
		}
		if !tlsOn {
			opts = append(opts, client.WithHost("tcp://"+addr))
			break
		}
		cfg, trust, err := o.tls.config(u.Hostname())
		if err != nil {
			return nil, err
		}
		// The request URL's scheme stays http: the TLS is the dialer's.
		opts = append(opts, client.WithHost("tcp://"+addr), client.WithHTTPClient(engineHTTPClient(tlsDial(addr, cfg, trust))))
	case "ssh":
		t, err := newSSHTarget(u, o)
		if err != nil {
			return nil, fmt.Errorf("engine address %s: %w", redactURI(uri), err)
		}
		failures = t.failures
		opts = append(opts, client.WithHost("http://"+sshDummyHost), client.WithHTTPClient(engineHTTPClient(func(ctx context.Context, _, _ string) (net.Conn, error) {
			return t.dial(ctx)
		})))
	default:
		return nil, fmt.Errorf("engine address %q: unsupported scheme %q", redactURI(uri), u.Scheme)
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		err = failures.explain(err)
		if u.Scheme == "tcp" && !o.tls.enabled && errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w (a TLS engine? set DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, or tls_verify and tls_cert_path)", err)
		}
		return nil, fmt.Errorf("ping: %w", readable(err, redactURI(uri)))
	}
	return &engine{cli: cli, uri: redactURI(uri), failures: failures}, nil
}

// engineHTTPClient is the HTTP client of an engine reached through dial:
// no proxy (dial reaches the engine whatever the address), and the moby
// client's limits on idle connections and redirects.
func engineHTTPClient(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:     dial,
			MaxIdleConns:    6,
			IdleConnTimeout: 30 * time.Second,
		},
		CheckRedirect: client.CheckRedirect,
	}
}

// sshDummyHost is the host of an ssh engine's request URLs (the dialer
// ignores it).
const sshDummyHost = "docker.example.invalid"
