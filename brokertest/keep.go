package brokertest

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/safefile"
)

// keepFlag is -brokertest.keep. Like httptest's -httptest.serve, it is
// registered only when given, so it never shows in other binaries' flags.
var keepFlag bool

func init() {
	for _, arg := range os.Args {
		if arg == "-brokertest.keep" || arg == "--brokertest.keep" || strings.HasPrefix(arg, "-brokertest.keep=") || strings.HasPrefix(arg, "--brokertest.keep=") {
			flag.BoolVar(&keepFlag, "brokertest.keep", false, "keep the hosts of failed tests, pools' leases included, for inspection (check them in later with brokertest cleanup)")
			return
		}
	}
}

// WithKeepOnFailure keeps the hosts of a failed test for a person to
// inspect instead of checking them in (Broker.Keep): the log says how to
// reach each, and "brokertest cleanup" checks them in later. In a pool
// (NewPool), the host of a lease whose test failed is kept so, and the pool
// checks out another when a lease needs it. The -brokertest.keep flag does
// the same for every test, pools included.
func WithKeepOnFailure() Option { return hostOption(func(o *options) { o.keepOnFailure = true }) }

func (o *options) keepsOnFailure() bool { return o.keepOnFailure || keepFlag }

// logKept logs how to reach each of hosts, kept for inspection.
func logKept(t testing.TB, b *broker.Broker, hosts []*hostkit.Host) {
	t.Helper()
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
	khName := fmt.Sprintf("[%s]:%d", addr, port)
	if s.Port == 0 && s.ProxyCommand != "" {
		// No address to dial (a container reached through its engine): the
		// proxy command reaches sshd, and the name is only a name.
		parts = []string{"ssh", "-o", hostkit.ShellQuote("ProxyCommand=" + s.ProxyCommand)}
		khName = addr
	}
	if s.KeyFile != "" {
		parts = append(parts, "-i", s.KeyFile)
	}
	var khErr error
	if s.HostKey != "" {
		kh := b.KeptKnownHosts(rec.ID())
		line := fmt.Sprintf("%s %s\n", khName, strings.TrimSpace(strings.SplitN(s.HostKey, "\n", 2)[0]))
		if err := writeKnownHosts(b.Dir(), kh, line); err == nil {
			parts = append(parts, "-o", "UserKnownHostsFile="+kh)
		} else {
			khErr = err
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
	if khErr != nil {
		parts = append(parts, " # known_hosts not written: "+khErr.Error())
	}
	return strings.Join(parts, " ")
}

// reach says briefly how h is reached, for the log: SSH to an address, SSH
// through the engine's exec stream, or the engine alone.
func reach(b *broker.Broker, h *hostkit.Host) string {
	rec := b.Record(h)
	if rec == nil || rec.Broker == nil || rec.Broker.SSH == nil {
		if h.Via != "" {
			return "no SSH: reached via " + h.Via
		}
		return "no SSH: reached through its provider"
	}
	s := rec.Broker.SSH
	user := s.User
	if user == "" {
		user = "root"
	}
	addr := s.Host
	if addr == "" {
		addr = rec.Hostname
	}
	switch {
	case s.Transport == "engine-stream" && s.Port != 0:
		return fmt.Sprintf("SSH as %s through the engine's exec stream (also published at %s)", user, net.JoinHostPort(addr, strconv.Itoa(s.Port)))
	case s.Transport == "engine-stream":
		return fmt.Sprintf("SSH as %s through the engine's exec stream", user)
	case s.Port == 0:
		return fmt.Sprintf("SSH to %s@%s", user, net.JoinHostPort(addr, "22"))
	}
	return fmt.Sprintf("SSH to %s@%s", user, net.JoinHostPort(addr, strconv.Itoa(s.Port)))
}

// writeKnownHosts writes line to kh, a file below the broker directory
// dir, following no symbolic link there.
func writeKnownHosts(dir, kh, line string) error {
	rel, err := filepath.Rel(dir, filepath.Dir(kh))
	if err != nil {
		return err
	}
	if _, err := safefile.MkdirAll(dir, rel, 0o700); err != nil {
		return err
	}
	return safefile.WriteFile(kh, []byte(line), 0o600)
}
