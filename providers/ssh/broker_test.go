package ssh_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/sshtest"
	_ "github.com/hostbroker/broker/providers/ssh"
)

// Through the broker, as a user configures it: two brokers on one
// directory (two test processes of a user) share a pool of two machines;
// a third checkout is refused until a host is checked in, and check-in
// leaves the machine running.
func TestThroughBroker(t *testing.T) {
	s := sshtest.Start(t)
	s2 := sshtest.Start(t)
	dir := t.TempDir()
	host, port, _ := strings.Cut(s.Addr, ":")
	host2, port2, _ := strings.Cut(s2.Addr, ":")
	known := filepath.Join(dir, "known_hosts")
	lines := fmt.Sprintf("[%s]:%s %s\n[%s]:%s %s\n", host, port, s.HostKeyLine, host2, port2, s2.HostKeyLine)
	if err := os.WriteFile(known, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	settings := fmt.Sprintf("ssh:\n  host_username: %s\n  known_hosts: [%s]\nSSH:\n  hosts: [%q, %q]\n  key_file: %s\n  lease_wait: 0\n  instances:\n    - lab: {default: true}\n",
		s.User, known, s.Addr, s2.Addr, s.KeyFile)
	if err := os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), []byte(settings), 0o600); err != nil {
		t.Fatal(err)
	}
	// s2 takes s's client key too (one lab key).
	f, err := os.OpenFile(filepath.Join(s2.Dir, "authorized_keys"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		pub, _ := os.ReadFile(filepath.Join(s.Dir, "authorized_keys"))
		_, err = f.Write(pub)
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	open := func() *broker.Broker {
		b, err := broker.New(broker.WithDirectory(dir), broker.WithReaper(false), broker.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	a, b := open(), open()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	req := broker.Request{Args: map[string]any{"ssh_host": "any"}}
	ha, err := a.Checkout(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := b.Checkout(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if ha[0].Name == hb[0].Name {
		t.Fatalf("both brokers got %s", ha[0].Name)
	}
	for _, h := range append(ha, hb...) {
		if res, err := h.Execute(ctx, "echo hi"); err != nil || res.Stdout != "hi\n" {
			t.Fatalf("%s: %+v, %v", h.Name, res, err)
		}
	}
	if _, err := a.Checkout(ctx, req); err == nil || !strings.Contains(err.Error(), "leased") {
		t.Fatalf("a third checkout from a pool of two: %v, want an error saying every address is leased", err)
	}
	if err := b.Checkin(ctx, hb...); err != nil {
		t.Fatal(err)
	}
	hc, err := a.Checkout(ctx, req)
	if err != nil {
		t.Fatalf("checkout after a check-in: %v", err)
	}
	if hc[0].Name != hb[0].Name {
		t.Errorf("got %s, want the released %s", hc[0].Name, hb[0].Name)
	}
	if err := a.Checkin(ctx, append(ha, hc...)...); err != nil {
		t.Fatal(err)
	}
	recs, err := a.Inventory(ctx)
	if err != nil || len(recs) != 0 {
		t.Fatalf("inventory after check-in: %d records, %v", len(recs), err)
	}
	for _, srv := range []*sshtest.Server{s, s2} {
		h := hostkit.New(srv.Addr, srv.Config())
		if _, err := h.Execute(ctx, "true"); err != nil {
			t.Errorf("%s after check-in: %v (the machine must stay up)", srv.Addr, err)
		}
		h.Close()
	}
}
