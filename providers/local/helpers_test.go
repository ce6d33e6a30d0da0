package local

import (
	"bytes"
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// openProvider opens a Local provider in a temporary directory; every host
// left is checked in at the end.
func openProvider(tb testing.TB, settings map[string]any) *Provider {
	tb.Helper()
	p, err := Open(providers.Config{Provider: Name, Settings: settings, Dir: tb.TempDir()})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// checkout checks a host out and checks it in at the end.
func checkout(tb testing.TB, p *Provider, args map[string]any) *inventory.Record {
	tb.Helper()
	id := inventory.NewID()
	res, err := p.Checkout(context.Background(), providers.CheckoutRequest{ID: id, Args: args})
	require.NoError(tb, err)
	rec := res.Record(id)
	tb.Cleanup(func() { _ = p.Checkin(context.Background(), rec) })
	return rec
}

// dial connects a raw SSH client to the host of rec with the key of keyFile
// (the host's own when ""), pinning the host key.
func dial(tb testing.TB, rec *inventory.Record, keyFile string) (*ssh.Client, error) {
	tb.Helper()
	if keyFile == "" {
		keyFile = rec.Broker.SSH.KeyFile
	}
	pem, err := os.ReadFile(keyFile)
	require.NoError(tb, err)
	signer, err := ssh.ParsePrivateKey(pem)
	require.NoError(tb, err)
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rec.Broker.SSH.HostKey))
	require.NoError(tb, err)
	return ssh.Dial("tcp", net.JoinHostPort(rec.Broker.SSH.Host, strconv.Itoa(rec.Broker.SSH.Port)), &ssh.ClientConfig{
		User:            rec.Broker.SSH.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
		Timeout:         10 * time.Second,
	})
}

func mustDial(tb testing.TB, rec *inventory.Record) *ssh.Client {
	tb.Helper()
	c, err := dial(tb, rec, "")
	require.NoError(tb, err)
	tb.Cleanup(func() { c.Close() })
	return c
}

type result struct {
	status         int
	stdout, stderr string
}

// run runs cmd in a new session with optional stdin and env requests.
func run(tb testing.TB, c *ssh.Client, cmd string, stdin string, env map[string]string) result {
	tb.Helper()
	s, err := c.NewSession()
	require.NoError(tb, err)
	defer s.Close()
	for k, v := range env {
		require.NoError(tb, s.Setenv(k, v))
	}
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	if stdin != "" {
		s.Stdin = strings.NewReader(stdin)
	}
	r := result{}
	if err := s.Run(cmd); err != nil {
		ee, ok := err.(*ssh.ExitError)
		require.True(tb, ok, "run %q: %v", cmd, err)
		r.status = ee.ExitStatus()
	}
	r.stdout, r.stderr = out.String(), errb.String()
	return r
}

// gone reports whether process pid has ended (missing or a zombie).
func gone(pid int) bool {
	if syscall.Kill(pid, 0) == syscall.ESRCH {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// groupGone reports whether process group pgid has no live member.
func groupGone(pgid int) bool {
	if syscall.Kill(-pgid, 0) == syscall.ESRCH {
		return true
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pg, err := syscall.Getpgid(pid); err == nil && pg == pgid && !gone(pid) {
			return false
		}
	}
	return true
}

// eventually waits (bounded, generously) for cond; SIGKILL and reaping are
// asynchronous, so a process may take a moment to disappear.
func eventually(tb testing.TB, cond func() bool, what string) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("after 20 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func atoi(tb testing.TB, s string) int {
	tb.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s))
	require.NoError(tb, err, "not a number: %q", s)
	return n
}

func itoa(n int) string { return strconv.Itoa(n) }
