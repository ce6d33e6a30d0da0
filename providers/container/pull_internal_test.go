package container

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hostbroker/broker/providers"
)

// Image names are read as the engines read them, by the reference parser.
func TestParseImage(t *testing.T) {
	for _, tc := range []struct{ in, named, registry string }{
		{"debian", "docker.io/library/debian:latest", "docker.io"},
		{"debian:12", "docker.io/library/debian:12", "docker.io"},
		{"brokertest/busybox:1", "docker.io/brokertest/busybox:1", "docker.io"},
		{"quay.io/podman/stable", "quay.io/podman/stable:latest", "quay.io"},
		{"127.0.0.1:5000/a/b:2", "127.0.0.1:5000/a/b:2", "127.0.0.1:5000"},
		{"localhost/mine", "localhost/mine:latest", "localhost"},
		{"debian@sha256:" + strings.Repeat("a", 64), "docker.io/library/debian@sha256:" + strings.Repeat("a", 64), "docker.io"},
	} {
		ref, err := parseImage(tc.in)
		if err != nil {
			t.Errorf("parseImage(%q): %v", tc.in, err)
			continue
		}
		if ref.named.String() != tc.named || ref.registry() != tc.registry || ref.asked != tc.in {
			t.Errorf("parseImage(%q) = %s from %s, want %s from %s", tc.in, ref.named, ref.registry(), tc.named, tc.registry)
		}
	}
	for _, bad := range []string{"Debian", "debian:", "a b", ""} {
		if _, err := parseImage(bad); err == nil || !strings.Contains(err.Error(), "not a valid image reference") {
			t.Errorf("parseImage(%q) = %v, want an error", bad, err)
		}
	}
}

func TestCheckPolicy(t *testing.T) {
	for in, want := range map[string]string{"": PullMissing, "Missing": PullMissing, "IfNotPresent": PullMissing, "always": PullAlways, "NEVER": PullNever} {
		if got, err := checkPolicy(in); err != nil || got != want {
			t.Errorf("checkPolicy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := checkPolicy("sometimes"); err == nil {
		t.Error("checkPolicy(sometimes) succeeded")
	}
}

// Credentials come from the settings first, then Docker's config.json and
// Podman's auth.json (Podman's first on a Podman engine), under any of the
// names a registry has there; the source is named, the secret never.
func TestCredentials(t *testing.T) {
	dockerDir := t.TempDir()
	authFile := filepath.Join(t.TempDir(), "auth.json")
	auth := func(u, p string) string { return base64.StdEncoding.EncodeToString([]byte(u + ":" + p)) }
	write := func(path, body string) {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dockerDir, "config.json"), `{"auths": {
		"https://index.docker.io/v1/": {"auth": "`+auth("hubuser", "hubpass")+`"},
		"both.example:5000": {"auth": "`+auth("docker", "dpass")+`"},
		"https://scheme.example": {"auth": "`+auth("s", "spass")+`"},
		"token.example": {"identitytoken": "idtok"}}}`)
	write(authFile, `{"auths": {"both.example:5000": {"auth": "`+auth("podman", "ppass")+`"}, "quay.io": {"auth": "`+auth("q", "qpass")+`"}}}`)
	t.Setenv("DOCKER_CONFIG", dockerDir)
	t.Setenv("REGISTRY_AUTH_FILE", authFile)
	p := &Provider{settings: settings{registries: map[string]registryCred{
		"set.example": {username: "u", password: "setpass"},
		"docker.io":   {token: "hubtoken"},
	}}}
	for _, tc := range []struct {
		runtime, host, user, secret, source string
	}{
		{"docker", "set.example", "u", "setpass", "the settings' registries.set.example"},
		{"docker", "index.docker.io", "", "hubtoken", "the settings' registries.docker.io"},
		{"docker", "both.example:5000", "docker", "dpass", "auths of " + filepath.Join(dockerDir, "config.json")},
		{"podman", "both.example:5000", "podman", "ppass", "auths of " + authFile},
		{"docker", "quay.io", "q", "qpass", "auths of " + authFile},
		{"docker", "scheme.example", "s", "spass", "auths of"},
		{"docker", "token.example", "", "idtok", "auths of"},
		{"docker", "none.example", "", "", ""},
	} {
		p.settings.runtime = tc.runtime
		c, err := p.credentials(context.Background(), tc.host)
		if err != nil {
			t.Errorf("%s on %s: %v", tc.host, tc.runtime, err)
			continue
		}
		secret := c.password + c.identityToken + c.registryToken
		if c.username != tc.user || secret != tc.secret || !strings.HasPrefix(c.source, tc.source) {
			t.Errorf("%s on %s: user %q secret %q from %q; want %q %q from %q", tc.host, tc.runtime, c.username, secret, c.source, tc.user, tc.secret, tc.source)
		}
		if secret != "" && (strings.Contains(c.describe(), secret) || c.header(tc.host) == "") {
			t.Errorf("%s: describe %q, header %q", tc.host, c.describe(), c.header(tc.host))
		}
	}
	// The hub's entry under its config.json name, without settings.
	p.settings.registries = nil
	if c, _ := p.credentials(context.Background(), "docker.io"); c.username != "hubuser" || c.password != "hubpass" {
		t.Errorf("docker.io from config.json: %+v", c.source)
	}
	// A broken file is an error naming it.
	write(filepath.Join(dockerDir, "config.json"), "{not json")
	if _, err := p.credentials(context.Background(), "both.example:5000"); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("a broken config.json: %v, want an error naming it", err)
	}
	// An engine's message quoting a secret loses it.
	c := credential{username: "u", password: "hunter22", source: "x"}
	if err := c.redact(errors.New("login u:hunter22 refused")); strings.Contains(err.Error(), "hunter22") {
		t.Errorf("redact: %v", err)
	}
}

// Podman's localhost/ names are local images: a missing one is not pulled.
func TestPodmanLocalhostNotPulled(t *testing.T) {
	p := &Provider{settings: settings{runtime: "podman", pullTimeout: defaultPullTimeout}, eng: &engine{uri: "unix:///podman.sock"}}
	ref, _ := parseImage("localhost/mine:1")
	err := p.pull(context.Background(), ref, PullMissing)
	if err == nil || !strings.Contains(err.Error(), "localhost/ images are built or loaded") {
		t.Errorf("pull of localhost/mine:1 on Podman: %v", err)
	}
}

// Each kind of failed pull gets its hint, naming the image, the registry
// and the engine once (the messages are the engines' own).
func TestPullErrorHints(t *testing.T) {
	p := &Provider{settings: settings{pullTimeout: defaultPullTimeout}, eng: &engine{uri: "unix:///var/run/docker.sock"}}
	ref, _ := parseImage("127.0.0.1:5000/team/app:2")
	for _, tc := range []struct {
		err  error
		cred string
		want string
	}{
		{errors.New("manifest for 127.0.0.1:5000/team/app:2 not found: manifest unknown: manifest unknown"), "", "no such image or tag"},
		{errors.New("unauthorized: authentication required"), "auths of /home/u/.docker/config.json", "refused the credentials (auths of /home/u/.docker/config.json)"},
		{errors.New("unauthorized: authentication required"), "", "refused the credentials (no credentials)"},
		{errors.New("pull access denied for team/app, repository does not exist or may require 'docker login'"), "", "no such repository, or it needs credentials"},
		{errors.New("write /var/lib/docker/tmp/GetImageBlob1: no space left on device"), "", "storage is full"},
		{errors.New("no matching manifest for linux/amd64 in the manifest list entries"), "", "no variant for the engine's platform"},
		{errors.New("image with reference x was found but does not match the specified platform: wanted linux/amd64, actual: linux/arm64"), "", "no variant for the engine's platform"},
		{errors.New(`choosing an image from manifest list docker://127.0.0.1:5000/team/app:2: no image found in manifest list for architecture amd64, variant "", OS linux`), "", "no variant for the engine's platform"},
		{errors.New(`Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused`), "", "could not reach the registry"},
		{context.DeadlineExceeded, "", "raise pull_timeout"},
	} {
		err := ref.pullError(p, tc.err, tc.cred)
		msg := err.Error()
		if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "registry 127.0.0.1:5000") || !strings.Contains(msg, "engine unix:///var/run/docker.sock") {
			t.Errorf("%v: %q, want it to say %q and name the registry and the engine", tc.err, msg, tc.want)
		}
		if !strings.HasPrefix(msg, "container: pull 127.0.0.1:5000/team/app:2 from") {
			t.Errorf("%v: %q does not start with the image", tc.err, msg)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%v: the engine's error is not in the chain", tc.err)
		}
	}
}

// A registries entry may be named, its registry given by the registry
// key: environment variables can then set it.
func TestRegistrySettingsNamed(t *testing.T) {
	s, err := parseSettings(providersConfig(map[string]any{"registries": map[string]any{
		"ci":              map[string]any{"registry": "Reg.Example:5000", "username": "u", "password": "p"},
		"index.docker.io": map[string]any{"token": "t"},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	if c := s.registries["reg.example:5000"]; c.username != "u" || c.password != "p" {
		t.Errorf("named entry: %+v", s.registries)
	}
	if c := s.registries["docker.io"]; c.token != "t" {
		t.Errorf("Docker Hub entry: %+v", s.registries)
	}
}

func providersConfig(m map[string]any) providers.Config { return providers.Config{Settings: m} }
