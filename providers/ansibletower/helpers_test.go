package ansibletower_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hostbroker/broker/internal/testenv"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/ansibletower"
	"github.com/hostbroker/broker/providers/ansibletower/awxtest"
)

// env is one fake AWX server with VMs that are real SSH servers, the
// client key and known_hosts file that reach them, and a log sink.
type env struct {
	*awxtest.LocalEnv
	log *testenv.LogBuffer
}

// newEnv starts awxtest with opts; VMs are Local SSH servers.
func newEnv(t testing.TB, opts awxtest.Options) *env {
	t.Helper()
	return &env{LocalEnv: awxtest.StartLocal(t, t.TempDir(), opts), log: &testenv.LogBuffer{}}
}

// config is a provider configuration for e's server; settings override.
func (e *env) config(t testing.TB, settings map[string]any) providers.Config {
	s := map[string]any{
		"base_url":           e.Server.URL,
		"token":              e.Server.Token,
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
		SSH:      providers.SSHSettings{Username: "root", KeyFilename: e.KeyFile, KnownHosts: []string{e.KnownHosts}, ConnectTimeout: 5 * time.Second},
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
		for _, secret := range []string{e.Server.Token, e.Server.Password} {
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
