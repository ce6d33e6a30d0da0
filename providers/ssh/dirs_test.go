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
	"github.com/hostbroker/broker/internal/sshtest"
)

// The README's per-test BROKER_DIRECTORY: two Brokers on two directories,
// one lab machine in their settings. The second's checkout is refused
// while the first holds it (before, both got it), waits for it with
// lease_wait, and gets it once the first checks it in.
func TestBrokersOfTwoDirectories(t *testing.T) {
	s := sshtest.Start(t)
	host, port, _ := strings.Cut(s.Addr, ":")
	open := func(wait int) *broker.Broker {
		dir := t.TempDir()
		known := filepath.Join(dir, "known_hosts")
		if err := os.WriteFile(known, fmt.Appendf(nil, "[%s]:%s %s\n", host, port, s.HostKeyLine), 0o600); err != nil {
			t.Fatal(err)
		}
		settings := fmt.Sprintf("ssh:\n  host_username: %s\n  known_hosts: [%s]\nSSH:\n  hosts: [%q]\n  key_file: %s\n  lease_wait: %d\n",
			s.User, known, s.Addr, s.KeyFile, wait)
		if err := os.WriteFile(filepath.Join(dir, "broker_settings.yaml"), []byte(settings), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := broker.New(broker.WithDirectory(dir), broker.WithReaper(false), broker.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	req := broker.Request{Args: map[string]any{"ssh_host": "any"}}
	a, b, waiting := open(0), open(0), open(60)
	ha, err := a.Checkout(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Checkout(ctx, req); err == nil || !strings.Contains(err.Error(), "leased") {
		t.Fatalf("checkout from another directory while the host is leased: %v, want a refusal", err)
	}
	got := make(chan error, 1)
	go func() {
		hw, err := waiting.Checkout(ctx, req)
		if err == nil {
			err = waiting.Checkin(ctx, hw...)
		}
		got <- err
	}()
	time.Sleep(500 * time.Millisecond)
	if err := a.Checkin(ctx, ha...); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiting checkout: %v", err)
	}
}
