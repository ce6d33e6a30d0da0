package ansibletower_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/ansibletower"
	"github.com/hostbroker/broker/providers/ansibletower/awxtest"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is one fake AWX server with VMs that are real SSH servers, and the
// client key and known_hosts file that reach them.
type env struct {
	srv        *awxtest.Server
	vms        *awxtest.LocalVMs
	keyFile    string
	knownHosts string
	log        *syncBuffer
}

// newEnv starts awxtest with opts; VMs are Local SSH servers.
func newEnv(t testing.TB, opts awxtest.Options) *env {
	t.Helper()
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "awx test user")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{keyFile: filepath.Join(dir, "id_ed25519"), knownHosts: filepath.Join(dir, "known_hosts"), log: &syncBuffer{}}
	if err := os.WriteFile(e.keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	e.vms, err = awxtest.NewLocalVMs(filepath.Join(dir, "vms"), string(ssh.MarshalAuthorizedKey(sshPub)), e.knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.vms.Close() })
	opts.VMs = e.vms
	e.srv = awxtest.Start(t, opts)
	return e
}

// config is a provider configuration for e's server; settings override.
func (e *env) config(t testing.TB, settings map[string]any) providers.Config {
	s := map[string]any{
		"base_url":           e.srv.URL,
		"token":              e.srv.Token,
		"max_resilient_wait": 30,
	}
	for k, v := range settings {
		if v == nil {
			delete(s, k)
			continue
		}
		s[k] = v
	}
	return providers.Config{
		Provider: ansibletower.Name,
		Instance: "test",
		Settings: s,
		SSH:      providers.SSHSettings{Username: "root", KeyFilename: e.keyFile, KnownHosts: []string{e.knownHosts}, ConnectTimeout: 5},
		Dir:      t.TempDir(),
		Logger:   slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// open opens a provider on e's server.
func (e *env) open(t testing.TB, settings map[string]any) *ansibletower.Provider {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := ansibletower.Open(ctx, e.config(t, settings))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// noSecrets fails if any secret of e's server appears in texts.
func (e *env) noSecrets(t testing.TB, texts ...string) {
	t.Helper()
	for _, s := range append(texts, e.log.String()) {
		for _, secret := range []string{e.srv.Token, e.srv.Password} {
			if strings.Contains(s, secret) {
				t.Errorf("secret %q… found in %q", secret[:6], s)
			}
		}
	}
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
