package brokertest

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/hostkit"
)

// keepFlag is -brokertest.keep. Like httptest's -httptest.serve, it is
// registered only when given, so it never shows in other binaries' flags.
var keepFlag bool

func init() {
	for _, arg := range os.Args {
		if arg == "-brokertest.keep" || arg == "--brokertest.keep" || strings.HasPrefix(arg, "-brokertest.keep=") || strings.HasPrefix(arg, "--brokertest.keep=") {
			flag.BoolVar(&keepFlag, "brokertest.keep", false, "keep the hosts of failed tests for inspection (check them in later with brokertest cleanup)")
			return
		}
	}
}

// WithKeepOnFailure keeps the hosts of a failed test instead of checking them
// in; the log says how to reach each, and "brokertest cleanup" removes them.
// The -brokertest.keep flag does the same for every test.
func WithKeepOnFailure() Option { return func(o *options) { o.keepOnFailure = true } }

// WithKeep keeps a pool's hosts for d after the test instead of checking
// them in, for later runs (and other test binaries) with the same request to
// lease.
func WithKeep(d time.Duration) Option { return func(o *options) { o.pool.Keep = d } }

func (o *options) keepsOnFailure() bool { return o.keepOnFailure || keepFlag }

// keep marks hosts kept and logs how to reach each.
func keep(t testing.TB, b *broker.Broker, hosts []*hostkit.Host) {
	if err := b.Keep(hosts, time.Time{}); err != nil {
		t.Errorf("brokertest: keeping hosts of a failed test: %v", err)
		return
	}
	for _, h := range hosts {
		t.Logf("brokertest: kept %s for inspection: %s", hostName(b, h), sshCommand(b, h))
	}
	t.Logf("brokertest: check kept hosts in with: brokertest cleanup --filter '_brokertest.state=kept' --all")
}

// sshCommand is an ssh command line that reaches h with its pinned host key.
func sshCommand(b *broker.Broker, h *hostkit.Host) string {
	rec := b.Record(h)
	if rec == nil || rec.Broker == nil || rec.Broker.SSH == nil {
		return "(no SSH; reach it through its provider)"
	}
	s := rec.Broker.SSH
	addr := s.Host
	if addr == "" {
		addr = rec.Hostname
	}
	port := s.Port
	if port == 0 {
		port = 22
	}
	parts := []string{"ssh", "-p", fmt.Sprint(port)}
	if s.KeyFile != "" {
		parts = append(parts, "-i", s.KeyFile)
	}
	if s.HostKey != "" {
		kh := b.KeptKnownHosts(rec.ID())
		line := fmt.Sprintf("[%s]:%d %s\n", addr, port, strings.TrimSpace(strings.SplitN(s.HostKey, "\n", 2)[0]))
		if err := os.MkdirAll(filepath.Dir(kh), 0o700); err == nil && os.WriteFile(kh, []byte(line), 0o600) == nil {
			parts = append(parts, "-o", "UserKnownHostsFile="+kh)
		}
	}
	user := s.User
	if user == "" {
		user = "root"
	}
	parts = append(parts, user+"@"+addr)
	if rec.Provider == "Local" {
		parts = append(parts, " # Local hosts live only as long as the test process")
	}
	return strings.Join(parts, " ")
}
