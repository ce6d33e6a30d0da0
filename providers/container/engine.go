package container

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
)

// engine is a connected engine client and the address it came from.
type engine struct {
	cli *client.Client
	uri string

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

// pingTimeout bounds the ping that proves an engine answers.
const pingTimeout = 5 * time.Second

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

// connect returns a client for the first candidate engine that answers. An
// engine named by DOCKER_HOST or CONTAINER_HOST that did not answer, when a
// later one did, is warned about on log: the user asked for it.
func connect(ctx context.Context, s settings, log *slog.Logger) (*engine, error) {
	var tried []string
	askedFor := false // a candidate from the environment did not answer
	for _, c := range candidates(s) {
		eng, err := dialEngine(ctx, c.uri)
		if err == nil {
			if askedFor {
				log.Warn("container: an engine named in the environment did not answer; using the next one", "using", eng.uri, "tried", strings.Join(tried, "; "))
			}
			return eng, nil
		}
		askedFor = askedFor || c.from == "DOCKER_HOST" || c.from == "CONTAINER_HOST"
		tried = append(tried, fmt.Sprintf("%s (%s): %v", c.uri, c.from, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("container: no container engine answered; tried: %s", strings.Join(tried, "; "))
}

// dialEngine makes a client for uri and pings it (negotiating the API
// version) within pingTimeout.
func dialEngine(ctx context.Context, uri string) (*engine, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("bad engine address %q (want unix:///path, tcp://host:port or ssh://[user@]host)", uri)
	}
	var opts []client.Opt
	switch u.Scheme {
	case "unix":
		if _, err := os.Stat(u.Path); err != nil {
			return nil, fmt.Errorf("socket: %w", err)
		}
		opts = append(opts, client.WithHost(uri))
	case "tcp", "http", "https":
		opts = append(opts, client.WithHost(uri), client.WithTLSClientConfigFromEnv())
	case "ssh":
		opts = append(opts, client.WithHost("http://"+sshDummyHost), client.WithDialContext(sshDialer(u)))
	default:
		return nil, fmt.Errorf("engine address %q: unsupported scheme %q", uri, u.Scheme)
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if _, err := cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("ping: %w", err)
	}
	return &engine{cli: cli, uri: uri}, nil
}

// sshDummyHost is the host of an ssh engine's request URLs (the dialer
// ignores it).
const sshDummyHost = "docker.example.invalid"

// sshDialer reaches a remote engine as the docker CLI does: through
// `ssh -- HOST docker system dial-stdio`, the command's stdio as the
// connection.
func sshDialer(u *url.URL) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		args := []string{"-o", "ConnectTimeout=30", "-o", "BatchMode=yes"}
		if u.Port() != "" {
			args = append(args, "-p", u.Port())
		}
		host := u.Hostname()
		if u.User != nil && u.User.Username() != "" {
			args = append(args, "-l", u.User.Username())
		}
		args = append(args, "--", host, "docker", "system", "dial-stdio")
		// Not CommandContext: the connection outlives the dial's context.
		cmd := exec.Command("ssh", args...)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("ssh to engine host %s: %w", host, err)
		}
		return &cmdConn{cmd: cmd, w: stdin, r: stdout, host: host}, nil
	}
}

// cmdConn is a net.Conn over a command's stdin and stdout.
type cmdConn struct {
	cmd  *exec.Cmd
	w    io.WriteCloser
	r    io.ReadCloser
	host string
	once sync.Once
}

func (c *cmdConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *cmdConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// CloseWrite closes the command's stdin (half-close, for exec stdin EOF).
func (c *cmdConn) CloseWrite() error { return c.w.Close() }

func (c *cmdConn) Close() error {
	c.once.Do(func() {
		c.w.Close()
		if c.cmd.Process != nil {
			_ = c.cmd.Process.Kill()
		}
		_ = c.cmd.Wait()
	})
	return nil
}

func (c *cmdConn) LocalAddr() net.Addr                { return cmdAddr("local") }
func (c *cmdConn) RemoteAddr() net.Addr               { return cmdAddr(c.host) }
func (c *cmdConn) SetDeadline(t time.Time) error      { return nil } // not supported; bounded by the ssh process
func (c *cmdConn) SetReadDeadline(t time.Time) error  { return nil } // not supported; bounded by the ssh process
func (c *cmdConn) SetWriteDeadline(t time.Time) error { return nil } // not supported; bounded by the ssh process

type cmdAddr string

func (a cmdAddr) Network() string { return "ssh" }
func (a cmdAddr) String() string  { return string(a) }
