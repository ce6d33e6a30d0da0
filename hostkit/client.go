package hostkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Defaults for the zero values of Config.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultConnectRetries = 3
)

// maxSessions bounds the sessions one Host opens at a time on its connection:
// OpenSSH refuses more than MaxSessions (10 by default) channels per
// connection, and the SFTP subsystem and a Shell need one each too.
const maxSessions = 8

var (
	// ErrNoSSH is returned when a host has no SSH address (and, for the
	// operations a Transport can do, no Transport either).
	ErrNoSSH = errors.New("hostkit: host has no SSH address")
	// ErrClosed is returned by every call on a Host after Close.
	ErrClosed = errors.New("hostkit: host is closed")
	// ErrHostGone, wrapped by an error of a Config.Dial, says the host
	// cannot be reached any more (a container that is no longer running):
	// the dial is not retried. A connection whose reads or writes fail
	// with it ends the calls on it with it.
	ErrHostGone = errors.New("hostkit: host is gone")
)

// HostKeyError is returned when a host presents a key that does not match
// the pinned ones. It is never retried.
type HostKeyError struct {
	Host string   // the host's name
	Addr string   // the address dialed
	Got  string   // SHA256 fingerprint of the key presented
	Want []string // SHA256 fingerprints of the pinned keys
}

func (e *HostKeyError) Error() string {
	return fmt.Sprintf("hostkit: host %s (%s): host key mismatch: server presented %s, pinned %s",
		e.Host, e.Addr, e.Got, strings.Join(e.Want, ", "))
}

// DialFunc opens the network connection an SSH client runs over.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Host is a machine reached over SSH (or a Transport). Its methods are safe
// for concurrent use.
type Host struct {
	Hostname string // the name users see
	Name     string // the provider's name for it
	// Via says how the host is reached, when its provider says so (the
	// Container provider: "engine-stream", "tcp" or "engine-exec"); String
	// shows it.
	Via string

	cfg       Config
	transport Transport
	dial      DialFunc
	log       *slog.Logger

	dialSem chan struct{} // held while dialing, so concurrent first uses dial once
	sftpSem chan struct{} // held while opening the SFTP client
	sessSem chan struct{} // bounds concurrent sessions

	insecureOnce sync.Once
	stuckAfter   time.Duration // see stuckAfter

	mu        sync.Mutex
	closed    bool
	client    *ssh.Client
	sftp      *sftp.Client
	sftpOwner *ssh.Client // the connection sftp runs over
	// leftovers are the temporaries of failed writes not removed yet
	// (their connection was lost): the next SFTP client removes them.
	leftovers map[string]struct{}
	// endedConn is the last connection seen to end, and endedWhy what
	// ended it: lostWhy adds it to the errors of calls it failed.
	endedConn *ssh.Client
	endedWhy  error
}

// New returns a host that dials cfg on first use (or drives
// cfg.Transport); it does not connect. Everything about reaching the host
// is in cfg.
func New(hostname string, cfg Config) *Host {
	h := &Host{
		Hostname:  hostname,
		cfg:       cfg,
		transport: cfg.Transport,
		dial:      cfg.Dial,
		dialSem:   make(chan struct{}, 1),
		sftpSem:   make(chan struct{}, 1),
		sessSem:   make(chan struct{}, maxSessions),
		leftovers: map[string]struct{}{},

		stuckAfter: stuckAfter,
	}
	h.log = cfg.Logger
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.dial == nil {
		var d net.Dialer
		h.dial = d.DialContext
	}
	return h
}

// Addr returns the host's SSH address over TCP ("host:port"), which other
// SSH clients may dial too; "" for hosts driven through a Transport and
// for those only their Dial reaches (Config.DialOnly).
func (h *Host) Addr() string {
	if h.cfg.DialOnly {
		return ""
	}
	return h.cfg.Addr
}

// String returns the host's name, followed by " via " and Via when set.
func (h *Host) String() string {
	if h.Via != "" {
		return h.Hostname + " via " + h.Via
	}
	return h.Hostname
}

// Close closes the host's SSH connection, SFTP client and Transport. It is
// idempotent; every later call on h returns ErrClosed. It does not wait for
// the peer: calls still running on the connection end with an error.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	sc, c, t := h.sftp, h.client, h.transport
	h.sftp, h.sftpOwner, h.client = nil, nil, nil
	h.mu.Unlock()

	var errs []error
	// The connection first: closing the SFTP client waits for its reads to
	// end, which a stuck peer never ends.
	if c != nil {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("hostkit: host %s: close ssh connection: %w", h.Hostname, err))
		}
	}
	if sc != nil {
		sc.Close() // its session died with the connection
	}
	if t != nil {
		if err := t.Close(); err != nil {
			errs = append(errs, fmt.Errorf("hostkit: host %s: close transport: %w", h.Hostname, err))
		}
	}
	return errors.Join(errs...)
}

func (h *Host) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// SSHClient returns the host's SSH connection, dialing it when there is none
// (or the last one was lost). The client is shared: do not close it. ctx
// bounds only the dial: calls on the client wait as long as the peer takes,
// while Execute and Shell give up when their ctx ends.
func (h *Host) SSHClient(ctx context.Context) (*ssh.Client, error) {
	if h.cfg.Addr == "" {
		if h.isClosed() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("%w: %s", ErrNoSSH, h.Hostname)
	}
	if c, err := h.current(); c != nil || err != nil {
		return c, err
	}
	select {
	case h.dialSem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("hostkit: host %s: waiting to connect: %w", h.Hostname, ctx.Err())
	}
	defer func() { <-h.dialSem }()
	// Another caller may have connected while we waited.
	if c, err := h.current(); c != nil || err != nil {
		return c, err
	}
	c, err := h.connect(ctx)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		c.Close()
		return nil, ErrClosed
	}
	h.client = c
	h.mu.Unlock()
	// Forget the connection as soon as it dies (e.g. sshd killed), so the
	// next call dials again instead of failing.
	go func() {
		why := c.Wait()
		h.mu.Lock()
		h.endedConn, h.endedWhy = c, why // see lostWhy
		h.mu.Unlock()
		h.forget(c)
	}()
	return c, nil
}

func (h *Host) current() (*ssh.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	return h.client, nil
}

// forget drops c (and the SFTP client over it) when it is still the host's
// connection, and closes it.
func (h *Host) forget(c *ssh.Client) {
	h.mu.Lock()
	var sc *sftp.Client
	if h.client == c {
		h.client = nil
	}
	if h.sftpOwner == c {
		sc = h.sftp
		h.sftp, h.sftpOwner = nil, nil
	}
	h.mu.Unlock()
	c.Close() // first: see Close
	if sc != nil {
		sc.Close()
	}
}

// connect dials with retries and exponential backoff. Authentication
// failures and host key mismatches are not retried: they would fail again.
func (h *Host) connect(ctx context.Context) (*ssh.Client, error) {
	retries := h.cfg.ConnectRetries
	if retries == 0 {
		retries = DefaultConnectRetries
	}
	if retries < 0 {
		retries = 0
	}
	backoff := 250 * time.Millisecond
	var last error
	for attempt := 0; attempt <= retries; attempt++ {
		if attempt > 0 {
			h.log.Debug("hostkit: retrying ssh connect", "host", h.Hostname, "addr", h.cfg.Addr, "attempt", attempt+1, "after", backoff, "error", last)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("hostkit: host %s: connect to %s: %w (last error: %v)", h.Hostname, h.cfg.Addr, ctx.Err(), last)
			}
			backoff = min(backoff*2, 5*time.Second)
		}
		c, err := h.dialOnce(ctx)
		if err == nil {
			return c, nil
		}
		last = err
		if !retryable(err) || ctx.Err() != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("hostkit: host %s: connect to %s failed after %d attempts: %w", h.Hostname, h.cfg.Addr, retries+1, last)
}

// errNotRetryable marks connect errors that would fail the same way again.
type errNotRetryable struct{ error }

func (e errNotRetryable) Unwrap() error { return e.error }

func retryable(err error) bool {
	var nr errNotRetryable
	return !errors.As(err, &nr)
}

func (h *Host) dialOnce(ctx context.Context) (*ssh.Client, error) {
	timeout := h.cfg.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cfg, cleanup, err := h.clientConfig()
	if err != nil {
		return nil, errNotRetryable{err}
	}
	defer cleanup()

	conn, err := h.dial(actx, "tcp", h.cfg.Addr)
	if err != nil {
		err = fmt.Errorf("hostkit: host %s: dial %s: %w", h.Hostname, h.cfg.Addr, err)
		if errors.Is(err, ErrHostGone) {
			return nil, errNotRetryable{err}
		}
		return nil, err
	}
	nc := newNudgeConn(conn)
	conn = nc
	// The handshake has no context: bound it by the connection's deadline,
	// and close the connection if ctx is cancelled before the deadline.
	if dl, ok := actx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(actx, func() { conn.Close() })
	cc, chans, reqs, err := ssh.NewClientConn(conn, h.cfg.Addr, cfg)
	if !stop() {
		if err == nil {
			cc.Close()
		}
		conn.Close()
		return nil, fmt.Errorf("hostkit: host %s: ssh handshake with %s: %w", h.Hostname, h.cfg.Addr, actx.Err())
	}
	if err != nil {
		conn.Close()
		var hke *HostKeyError
		var kke *knownhosts.KeyError
		switch {
		case errors.As(err, &hke):
			return nil, errNotRetryable{hke}
		case errors.As(err, &kke):
			return nil, errNotRetryable{fmt.Errorf("hostkit: host %s (%s): host key not accepted by known_hosts %s: %w", h.Hostname, h.cfg.Addr, strings.Join(h.cfg.KnownHostsFiles, ", "), err)}
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, errNotRetryable{fmt.Errorf("hostkit: host %s (%s): authentication as %q failed: %w", h.Hostname, h.cfg.Addr, h.user(), err)}
		case actx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
			// The connection's deadline is actx's: the timers may fire in
			// either order.
			cause := actx.Err()
			if cause == nil {
				cause = context.DeadlineExceeded
			}
			return nil, fmt.Errorf("hostkit: host %s: ssh handshake with %s: %w (%v)", h.Hostname, h.cfg.Addr, cause, err)
		}
		return nil, fmt.Errorf("hostkit: host %s: ssh handshake with %s: %w", h.Hostname, h.cfg.Addr, err)
	}
	conn.SetDeadline(time.Time{})
	nc.start(func() { _, _, _ = cc.SendRequest("keepalive@openssh.com", false, nil) })
	return ssh.NewClient(cc, chans, reqs), nil
}

func (h *Host) user() string {
	if h.cfg.User == "" {
		return "root"
	}
	return h.cfg.User
}

// clientConfig builds the auth methods and host key check. cleanup closes
// the agent connection once the handshake is done.
func (h *Host) clientConfig() (*ssh.ClientConfig, func(), error) {
	cleanup := func() {}
	var signers []ssh.Signer
	signers = append(signers, h.cfg.Signers...)
	for _, f := range h.cfg.KeyFiles {
		s, err := loadKeyFile(f)
		if err != nil {
			return nil, cleanup, fmt.Errorf("hostkit: host %s: %w", h.Hostname, err)
		}
		signers = append(signers, s)
	}
	if h.cfg.UseAgent {
		sock := os.Getenv("SSH_AUTH_SOCK")
		if sock == "" {
			return nil, cleanup, fmt.Errorf("hostkit: host %s: UseAgent is set but SSH_AUTH_SOCK is empty", h.Hostname)
		}
		ac, err := net.DialTimeout("unix", sock, 5*time.Second)
		if err != nil {
			return nil, cleanup, fmt.Errorf("hostkit: host %s: ssh agent at %s: %w", h.Hostname, sock, err)
		}
		cleanup = func() { ac.Close() }
		as, err := agent.NewClient(ac).Signers()
		if err != nil {
			cleanup()
			return nil, func() {}, fmt.Errorf("hostkit: host %s: list ssh agent keys at %s: %w", h.Hostname, sock, err)
		}
		signers = append(signers, as...)
	}
	var auth []ssh.AuthMethod
	if len(signers) > 0 {
		auth = append(auth, ssh.PublicKeys(signers...))
	}
	if h.cfg.Password != "" {
		pw := h.cfg.Password
		auth = append(auth, ssh.Password(pw), ssh.KeyboardInteractive(
			func(name, instruction string, questions []string, echos []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	if len(auth) == 0 {
		cleanup()
		return nil, func() {}, fmt.Errorf("hostkit: host %s: no SSH authentication configured (Signers, KeyFiles, Password or UseAgent)", h.Hostname)
	}
	hkcb, algos, err := h.hostKeyCallback()
	if err != nil {
		cleanup()
		return nil, func() {}, err
	}
	return &ssh.ClientConfig{
		User:              h.user(),
		Auth:              auth,
		HostKeyCallback:   hkcb,
		HostKeyAlgorithms: algos,
	}, cleanup, nil
}

func loadKeyFile(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key file: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return nil, fmt.Errorf("private key file %s is passphrase-protected (not supported; use an agent)", path)
		}
		return nil, fmt.Errorf("parse private key file %s: %w", path, err)
	}
	return s, nil
}

// hostKeyCallback returns the host key check and, for pinned keys, the
// algorithms to ask for so the server presents the pinned key type.
func (h *Host) hostKeyCallback() (ssh.HostKeyCallback, []string, error) {
	switch {
	case len(h.cfg.HostKeys) > 0:
		pinned := h.cfg.HostKeys
		var want []string
		var algos []string
		seen := map[string]bool{}
		for _, k := range pinned {
			want = append(want, ssh.FingerprintSHA256(k))
			for _, a := range keyAlgorithms(k.Type()) {
				if !seen[a] {
					seen[a] = true
					algos = append(algos, a)
				}
			}
		}
		cb := func(_ string, _ net.Addr, key ssh.PublicKey) error {
			m := key.Marshal()
			for _, k := range pinned {
				if bytes.Equal(k.Marshal(), m) {
					return nil
				}
			}
			return &HostKeyError{Host: h.Hostname, Addr: h.cfg.Addr, Got: ssh.FingerprintSHA256(key), Want: want}
		}
		return cb, algos, nil
	case len(h.cfg.KnownHostsFiles) > 0:
		cb, err := knownhosts.New(h.cfg.KnownHostsFiles...)
		if err != nil {
			return nil, nil, fmt.Errorf("hostkit: host %s: known_hosts %s: %w", h.Hostname, strings.Join(h.cfg.KnownHostsFiles, ", "), err)
		}
		return cb, nil, nil
	case h.cfg.InsecureIgnoreHostKey:
		cb := func(_ string, _ net.Addr, key ssh.PublicKey) error {
			h.insecureOnce.Do(func() {
				h.log.Warn("hostkit: host key not verified (InsecureIgnoreHostKey)", "host", h.Hostname, "addr", h.cfg.Addr, "fingerprint", ssh.FingerprintSHA256(key))
			})
			return nil
		}
		return cb, nil, nil
	}
	return nil, nil, fmt.Errorf("hostkit: host %s: cannot verify the host key: set HostKeys, KnownHostsFiles or InsecureIgnoreHostKey", h.Hostname)
}

func keyAlgorithms(keyType string) []string {
	switch keyType {
	case ssh.KeyAlgoRSA:
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	case ssh.CertAlgoRSAv01:
		return []string{ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01, ssh.CertAlgoRSAv01}
	}
	return []string{keyType}
}

// session opens a new session, redialing once when the connection turns out
// to be dead, and returns the connection it runs over. release closes the
// session, sending it sig first unless empty (to end its command), and frees
// its slot; once ctx is done it does so aside (the peer may be stuck).
func (h *Host) session(ctx context.Context) (*ssh.Session, *ssh.Client, func(sig ssh.Signal), error) {
	select {
	case h.sessSem <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, nil, fmt.Errorf("hostkit: host %s: waiting for a session: %w", h.Hostname, ctx.Err())
	}
	free := func() { <-h.sessSem }
	redialed := false
	busyRetries := 0
	delay := 10 * time.Millisecond
	for {
		c, err := h.SSHClient(ctx)
		if err != nil {
			free()
			return nil, nil, nil, err
		}
		s, err := await(ctx, h, c, c.NewSession, func(s *ssh.Session) { s.Close() })
		if err != nil && ctx.Err() != nil {
			free()
			return nil, nil, nil, fmt.Errorf("hostkit: host %s: open session: %w", h.Hostname, ctxErr(ctx, err))
		}
		if err == nil {
			end := func(sig ssh.Signal) {
				if sig != "" {
					_ = s.Signal(sig)
				}
				s.Close()
			}
			release := func(sig ssh.Signal) {
				if ctx.Err() != nil {
					h.aside(c, func() { end(sig) })
				} else {
					end(sig)
				}
				free()
			}
			return s, c, release, nil
		}
		var oce *ssh.OpenChannelError
		switch {
		case errors.As(err, &oce) && oce.Reason != ssh.UnknownChannelType && busyRetries < 30:
			// OpenSSH refuses sessions beyond MaxSessions ("open failed"),
			// and frees a slot only some time after the session ended:
			// wait for one.
			busyRetries++
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				free()
				return nil, nil, nil, fmt.Errorf("hostkit: host %s: open session: %w (%v)", h.Hostname, ctx.Err(), err)
			}
			delay = min(delay*2, 500*time.Millisecond)
			continue
		case errors.As(err, &oce):
			free()
			return nil, nil, nil, fmt.Errorf("hostkit: host %s: open session: %w", h.Hostname, err)
		case !redialed:
			// io.EOF or a network error: the connection is gone.
			h.log.Debug("hostkit: connection lost, redialing", "host", h.Hostname, "error", err)
			h.forget(c)
			redialed = true
			continue
		}
		free()
		return nil, nil, nil, fmt.Errorf("hostkit: host %s: open session: %w", h.Hostname, err)
	}
}

// isConnLost reports whether err means the connection itself failed.
func isConnLost(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne)
}
