package container

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cpuguy83/dockercfg"
	"github.com/moby/moby/api/types/registry"

	settingsfile "github.com/hostbroker/broker/internal/settings"
	"github.com/hostbroker/broker/providers"
)

// registryCred is one registry's credentials in the settings (the
// registries key): a user and a password, or a token.
type registryCred struct {
	username string
	password string // secret
	token    string // secret
}

// registrySettings reads the registries setting: registry host[:port] →
// {username (or user), password, token}; or a name → the same with
// registry: host[:port], for names an environment variable can hold
// (BROKER_Container__registries__ci__password).
func registrySettings(m map[string]any, s *settings) error {
	v, k, ok := providers.Setting(m, "registries")
	if !ok || v == nil {
		return nil
	}
	regs, ok := v.(map[string]any)
	if !ok {
		return settingError(k, fmt.Errorf("want a map of registry host to {username, password or token}, got %s", settingsfile.TypeName(v)))
	}
	s.registries = map[string]registryCred{}
	for host, e := range regs {
		fields, ok := e.(map[string]any)
		if !ok {
			return settingError(k+"."+host, fmt.Errorf("want {username, password or token}, got %s", settingsfile.TypeName(e)))
		}
		var c registryCred
		key := host
		for f, fv := range fields {
			str, ok := fv.(string)
			if !ok {
				// Never the value: it may be a secret.
				return settingError(k+"."+host+"."+f, fmt.Errorf("want a string, got %s", settingsfile.TypeName(fv)))
			}
			switch strings.ToLower(f) {
			case "username", "user":
				c.username = str
			case "password":
				c.password = str
			case "token":
				c.token = str
			case "registry":
				key = str
			default:
				return settingError(k+"."+host+"."+f, errors.New("unknown key (a registry takes username, password, token, registry)"))
			}
		}
		if c.password == "" && c.token == "" {
			return settingError(k+"."+host, errors.New("needs a password or a token"))
		}
		s.registries[registryKey(key)] = c
	}
	return nil
}

// dockerHub are the names of Docker Hub's registry in configuration files.
var dockerHub = []string{"docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/"}

// registryKey is how a registry is named in the settings: its host[:port],
// lower-case, with Docker Hub as docker.io.
func registryKey(host string) string {
	h := strings.ToLower(strings.TrimSpace(host))
	if slices.Contains(dockerHub, h) {
		return "docker.io"
	}
	h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
	return strings.TrimSuffix(h, "/")
}

// credential is what a pull sends the registry, and where it came from.
type credential struct {
	username, password string // secret: password
	identityToken      string // secret
	registryToken      string // secret
	// source names where the credentials came from, for errors and logs:
	// never a secret.
	source string
}

// describe names the credentials' source.
func (c credential) describe() string {
	if c.source == "" {
		return "no credentials"
	}
	return c.source
}

// header is the X-Registry-Auth value for server, "" without credentials.
func (c credential) header(server string) string {
	if c.source == "" {
		return ""
	}
	b, _ := json.Marshal(registry.AuthConfig{
		Username: c.username, Password: c.password, ServerAddress: server,
		IdentityToken: c.identityToken, RegistryToken: c.registryToken,
	})
	return base64.URLEncoding.EncodeToString(b)
}

// redact takes the secrets out of err's text (an engine or helper may
// quote what it was sent); err stays in the chain.
func (c credential) redact(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	text := msg
	for _, s := range []string{c.password, c.identityToken, c.registryToken} {
		if len(s) >= 3 {
			text = strings.ReplaceAll(text, s, "<redacted>")
		}
	}
	if text == msg {
		return err
	}
	return &textError{text: text, err: err}
}

// credentials finds the credentials for registry host: the settings'
// registries first, then the user's files as the engine's own client reads
// them: Docker's config.json ($DOCKER_CONFIG/config.json, else
// ~/.docker/config.json: auths, credsStore, credHelpers, which run the
// docker-credential-* programs) and Podman's auth.json ($REGISTRY_AUTH_FILE,
// else $XDG_RUNTIME_DIR/containers/auth.json), Podman's first on a Podman
// engine. Helper programs run bounded by ctx (runHelper). None found is no credentials (an anonymous pull), not an error.
func (p *Provider) credentials(ctx context.Context, host string) (credential, error) {
	key := registryKey(host)
	if c, ok := p.settings.registries[key]; ok {
		cred := credential{username: c.username, password: c.password, source: "the settings' registries." + key}
		if c.token != "" {
			if c.username != "" {
				cred.password = c.token // a personal access token, sent as the password
			} else {
				cred.registryToken = c.token
			}
		}
		return cred, nil
	}
	for _, file := range credentialFiles(p.settings.runtime == "podman") {
		c, err := fileCredentials(ctx, file, host)
		if err != nil || c.source != "" {
			return c, err
		}
	}
	return credential{}, nil
}

// credentialFiles are the files credentials are looked up in, in order.
func credentialFiles(podmanFirst bool) []string {
	var docker, podman []string
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		docker = append(docker, filepath.Join(d, "config.json"))
	} else if p, err := dockercfg.UserHomeConfigPath(); err == nil {
		docker = append(docker, p)
	}
	if f := os.Getenv("REGISTRY_AUTH_FILE"); f != "" {
		podman = append(podman, f)
	} else if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		podman = append(podman, filepath.Join(d, "containers", "auth.json"))
	}
	if podmanFirst {
		return append(podman, docker...)
	}
	return append(docker, podman...)
}

// fileCredentials reads host's credentials from a config.json or
// auth.json file (the same format, read with dockercfg): an entry of
// credHelpers, else credsStore, else auths. A helper program runs bounded
// by ctx and helperTimeout (runHelper). A missing file, or one without an
// entry for host, gives no credentials.
func fileCredentials(ctx context.Context, file, host string) (credential, error) {
	var cfg dockercfg.Config
	if err := dockercfg.FromFile(file, &cfg); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return credential{}, nil
		}
		return credential{}, fmt.Errorf("credentials for %s: read %s: %w", host, file, err)
	}
	for _, name := range configNames(host) {
		auth, inAuths := cfg.AuthConfigs[name]
		helper, source := cfg.CredentialHelpers[name], ""
		switch {
		case helper != "":
			source = fmt.Sprintf("credential helper docker-credential-%s (credHelpers of %s)", helper, file)
		case cfg.CredentialsStore != "":
			helper = cfg.CredentialsStore
			source = fmt.Sprintf("credential store docker-credential-%s (credsStore of %s)", helper, file)
		case inAuths:
			source = fmt.Sprintf("auths of %s", file)
		default:
			continue
		}
		var user, secret string
		var err error
		if helper != "" {
			user, secret, err = runHelper(ctx, helper, name)
			if err != nil {
				return credential{}, fmt.Errorf("credentials for %s from the %s: %w", host, source, err)
			}
			if user == "" && secret == "" && inAuths && cfg.CredentialHelpers[name] == "" {
				// The store had none: the file's own entry, as docker does.
				source = "auths of " + file
				helper = ""
			}
		}
		if helper == "" {
			switch {
			case auth.IdentityToken != "":
				secret = auth.IdentityToken
			case auth.Username != "" && auth.Password != "":
				user, secret = auth.Username, auth.Password
			default:
				if user, secret, err = dockercfg.DecodeBase64Auth(auth); err != nil {
					return credential{}, fmt.Errorf("credentials for %s from the %s: %w", host, source, err)
				}
			}
		}
		if user == "" && secret == "" {
			continue
		}
		if user == "" {
			return credential{identityToken: secret, source: source}, nil
		}
		return credential{username: user, password: secret, source: source}, nil
	}
	return credential{}, nil
}

// helperTimeout bounds a credential helper program: one that waits for a
// keychain to unlock, or hangs, fails the pull rather than holding it
// (and the callers sharing it) up to pull_timeout.
const helperTimeout = 30 * time.Second

// helperNotFound is what a helper prints when it holds nothing for the
// server (the docker-credential-helpers protocol).
const helperNotFound = "credentials not found in native keychain"

// runHelper asks docker-credential-<helper> for server's credentials with
// the helpers' protocol (`get`, the server on stdin, {ServerURL, Username,
// Secret} on stdout), as dockercfg does but bounded: the program runs in a
// process group of its own, killed with its children when ctx or
// helperTimeout ends. A helper not installed, or holding nothing for
// server, gives no credentials. Errors quote the helper's stderr, never
// its stdout (which may hold the secret).
func runHelper(ctx context.Context, helper, server string) (user, secret string, err error) {
	prog := "docker-credential-" + helper
	path, err := exec.LookPath(prog)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", "", nil
		}
		return "", "", fmt.Errorf("look up %s: %w", prog, err)
	}
	ctx, cancel := context.WithTimeout(ctx, helperTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "get")
	cmd.Stdin = strings.NewReader(server)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	killGroup(cmd)
	// A grandchild that keeps the pipes open does not hold Wait.
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	err = cmd.Run()
	if ctx.Err() != nil {
		return "", "", fmt.Errorf("%s get %s gave no answer within %s (killed; the limit is %s or the pull's): %w",
			prog, server, time.Since(start).Round(100*time.Millisecond), helperTimeout, ctx.Err())
	}
	if err != nil {
		if strings.TrimSpace(stdout.String()) == helperNotFound {
			return "", "", nil
		}
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return "", "", fmt.Errorf("%s get %s: %w (stderr: %q)", prog, server, err, msg)
	}
	var out struct{ Username, Secret string }
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		// Not the output itself: it may hold the secret.
		return "", "", fmt.Errorf("%s get %s: its answer is not the helpers' JSON {ServerURL, Username, Secret}: %w", prog, server, err)
	}
	if out.Username == "<token>" {
		// The helpers' name for an identity token.
		out.Username = ""
	}
	return out.Username, out.Secret, nil
}

// configNames are the keys a registry may have in config.json or
// auth.json: Docker Hub's several names, or host[:port] with or without a
// scheme.
func configNames(host string) []string {
	if registryKey(host) == "docker.io" {
		return []string{"https://index.docker.io/v1/", "docker.io", "index.docker.io", "registry-1.docker.io"}
	}
	return []string{host, "https://" + host, "http://" + host}
}
