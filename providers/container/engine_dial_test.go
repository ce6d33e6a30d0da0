package container

import (
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hostbroker/broker/providers"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestDialSSHArgs: what ssh is run with for an ssh:// engine address: batch
// mode, a connect timeout within the dial's, no forwarding, the address's
// user and port, the configured ssh_config and key, and the remote
// command for the address (with a socket path: a sh line that relays it).
func TestDialSSHArgs(t *testing.T) {
	for _, tc := range []struct {
		uri     string
		o       engineOptions
		timeout time.Duration
		want    []string // in order, as a subsequence
		remote  string   // the remote command, joined
	}{
		{"ssh://bighost", engineOptions{}, time.Minute,
			[]string{"-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "--", "bighost"}, "docker system dial-stdio"},
		{"ssh://qa@bighost:2222", engineOptions{sshConfig: "/etc/broker/ssh_config", sshKey: "/k"}, 1500 * time.Millisecond,
			[]string{"ConnectTimeout=2", "-F", "/etc/broker/ssh_config", "-i", "/k", "-p", "2222", "-l", "qa", "--", "bighost"}, "docker system dial-stdio"},
		{"ssh://qa@bighost/", engineOptions{}, 10 * time.Millisecond, []string{"ConnectTimeout=1", "-l", "qa", "--", "bighost"}, "docker system dial-stdio"},
		{"ssh://qa@bighost/run/user/1000/podman/podman.sock", engineOptions{}, time.Minute, []string{"--", "bighost", "sh", "-c"},
			"sh -c 'if command -v docker >/dev/null 2>&1; then exec docker --host unix:///run/user/1000/podman/podman.sock system dial-stdio;" +
				" elif command -v podman >/dev/null 2>&1; then exec podman --url unix:///run/user/1000/podman/podman.sock system dial-stdio;" +
				" elif command -v socat >/dev/null 2>&1; then exec socat -t 86400 - UNIX-CONNECT:/run/user/1000/podman/podman.sock;" +
				" elif command -v nc >/dev/null 2>&1; then exec nc -U /run/user/1000/podman/podman.sock;" +
				` else echo "none of docker, podman, socat, nc found on the engine host to reach /run/user/1000/podman/podman.sock" >&2; exit 127; fi'`},
		{"ssh://bighost", engineOptions{runtime: "podman"}, time.Minute, []string{"--", "bighost"},
			"sh -c 'if command -v podman >/dev/null 2>&1; then exec podman --url unix:///run/podman/podman.sock system dial-stdio;"},
	} {
		tg, err := newSSHTarget(mustURL(t, tc.uri), tc.o)
		if err != nil {
			t.Errorf("%s: %v", tc.uri, err)
			continue
		}
		args := tg.args(tc.timeout)
		i := 0
		for _, a := range args {
			if i < len(tc.want) && a == tc.want[i] {
				i++
			}
		}
		if i < len(tc.want) {
			t.Errorf("%s: ssh %q lacks %q (in this order)", tc.uri, args, tc.want)
		}
		for _, no := range []string{"-A", "-X", "ForwardAgent=yes"} {
			if slices.Contains(args, no) {
				t.Errorf("%s: ssh %q forwards (%s)", tc.uri, args, no)
			}
		}
		remote := strings.Join(tg.remoteCommand(), " ")
		if !strings.HasPrefix(remote, tc.remote) {
			t.Errorf("%s: remote command\n%s\nwant (prefix)\n%s", tc.uri, remote, tc.remote)
		}
	}
}

// TestDialSSHRefusesAddresses: addresses that could be read as ssh
// options, carry a password (ssh runs in batch mode) or a socket path the
// remote shell would interpret are refused before ssh runs.
func TestDialSSHRefusesAddresses(t *testing.T) {
	for uri, want := range map[string]string{
		"ssh://-oProxyCommand=x":             "may not begin with '-'",
		"ssh://-l@bighost":                   "may not begin with '-'",
		"ssh://u:pw@bighost":                 "password",
		"ssh://bighost/run/$(reboot).sock":   "socket path",
		"ssh://bighost/run/a;b.sock":         "socket path",
		"ssh://bighost/run/it's/podman.sock": "socket path",
		"ssh:///run/podman.sock":             "no host",
	} {
		_, err := newSSHTarget(mustURL(t, uri), engineOptions{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want an error saying %q", uri, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("%s: error %q shows the password", uri, err)
		}
	}
}

// TestDialRemoteScriptWithoutTools: the remote command for a socket path
// runs in a real sh; on a host with none of the tools it fails saying so
// (which the dial's error then quotes).
func TestDialRemoteScriptWithoutTools(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("no sh: %v", err)
	}
	tg, err := newSSHTarget(mustURL(t, "ssh://h/run/x.sock"), engineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc := tg.remoteCommand()
	script := strings.TrimSuffix(strings.TrimPrefix(rc[2], "'"), "'")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sh, "-c", script)
	cmd.Env = []string{"PATH=" + t.TempDir()} // no tools at all
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 127 || !strings.Contains(string(out), "none of docker, podman, socat, nc found on the engine host to reach /run/x.sock") {
		t.Errorf("script without tools: %v, %q; want exit 127 naming the tools and the socket", err, out)
	}
}

// TestDialTailBuffer: ssh's stderr is kept to its last bytes.
func TestDialTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 8}
	b.Write([]byte("abc"))
	b.Write([]byte("defgh"))
	if b.String() != "abcdefgh" {
		t.Errorf("%q", b.String())
	}
	b.Write([]byte("ij"))
	if b.String() != "cdefghij" {
		t.Errorf("%q", b.String())
	}
	if n, _ := b.Write([]byte("0123456789")); n != 10 || b.String() != "23456789" {
		t.Errorf("%d %q", n, b.String())
	}
	e := &commandError{desc: "ssh h", exit: &exec.ExitError{}, stderr: "\nWarning: x\r\nh: Permission denied (publickey).\n"}
	if got := e.Error(); !strings.HasSuffix(got, ": Warning: x; h: Permission denied (publickey).") {
		t.Errorf("commandError: %q", got)
	}
}

// TestEngineSettingsPythonHost: the Python broker's host setting, a host
// name, is the engine reached over ssh as host_username (default root) on
// host_port, at Podman's rootful socket for the podman runtime.
func TestEngineSettingsPythonHost(t *testing.T) {
	for _, tc := range []struct {
		settings map[string]any
		want     string
	}{
		{map[string]any{"host": "localhost"}, ""},
		{map[string]any{"host": "bighost"}, "ssh://root@bighost"},
		{map[string]any{"host": "bighost", "host_username": "qa", "host_port": 2222}, "ssh://qa@bighost:2222"},
		{map[string]any{"host": "bighost", "host_port": "22", "runtime": "podman"}, "ssh://root@bighost:22/run/podman/podman.sock"},
		{map[string]any{"host": "/run/docker.sock"}, "/run/docker.sock"},
		{map[string]any{"host_uri": "tcp://bighost:2376", "host_port": 22}, "tcp://bighost:2376"},
	} {
		s, err := parseSettings(providers.Config{Settings: tc.settings})
		if err != nil || s.hostURI != tc.want {
			t.Errorf("%v: host %q, %v; want %q", tc.settings, s.hostURI, err, tc.want)
		}
	}
	t.Setenv("HOME", "/home/qa")
	s, err := parseSettings(providers.Config{Settings: map[string]any{"engine_ssh_config": "~/.ssh/broker", "tls_cert_path": "~/certs"}})
	if err != nil || s.engineSSHConfig != "/home/qa/.ssh/broker" || s.tlsCertPath != "/home/qa/certs" {
		t.Errorf("~/ paths: %q, %q, %v", s.engineSSHConfig, s.tlsCertPath, err)
	}
	_, err = parseSettings(providers.Config{Settings: map[string]any{"host": "bighost", "host_port": "ssh"}})
	if se, ok := errors.AsType[*providers.SettingError](err); !ok || se.Key != "host_port" {
		t.Errorf("host_port ssh: %v; want a SettingError for host_port", err)
	}
	for _, key := range []string{"tls", "tls_verify"} {
		_, err := parseSettings(providers.Config{Settings: map[string]any{key: "perhaps"}})
		if se, ok := errors.AsType[*providers.SettingError](err); !ok || se.Key != key {
			t.Errorf("%s perhaps: %v; want a SettingError for %s", key, err, key)
		}
	}
}

// TestEngineSettingsTLS: how the docker CLI's variables and the settings
// that override them decide TLS for tcp:// engines.
func TestEngineSettingsTLS(t *testing.T) {
	yes, no := true, false
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("DOCKER_CONFIG", "")
	for _, tc := range []struct {
		name                string
		env                 map[string]string // DOCKER_TLS, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH
		s                   settings
		enabled, verify     bool
		certPath, certPathF string
	}{
		{"nothing", nil, settings{}, false, true, filepath.Join(home, ".docker"), "the docker CLI's default"},
		{"DOCKER_TLS_VERIFY", map[string]string{"DOCKER_TLS_VERIFY": "1"}, settings{}, true, true, filepath.Join(home, ".docker"), "the docker CLI's default"},
		{"DOCKER_TLS (the CLI's --tls)", map[string]string{"DOCKER_TLS": "1"}, settings{}, true, false, filepath.Join(home, ".docker"), "the docker CLI's default"},
		{"DOCKER_CERT_PATH alone", map[string]string{"DOCKER_CERT_PATH": "/certs"}, settings{}, true, true, "/certs", "DOCKER_CERT_PATH"},
		{"setting over variable", map[string]string{"DOCKER_CERT_PATH": "/certs"}, settings{tlsCertPath: "/mine"}, true, true, "/mine", "setting tls_cert_path"},
		{"tls_verify false", map[string]string{"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/certs"}, settings{tlsVerify: &no}, true, false, "/certs", "DOCKER_CERT_PATH"},
		{"tls_verify false alone", nil, settings{tlsVerify: &no}, false, false, filepath.Join(home, ".docker"), "the docker CLI's default"},
		{"tls and tls_verify", nil, settings{tls: &yes, tlsVerify: &yes}, true, true, filepath.Join(home, ".docker"), "the docker CLI's default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"DOCKER_TLS", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"} {
				t.Setenv(k, tc.env[k])
			}
			o := resolveTLS(tc.s)
			if o.enabled != tc.enabled || (o.enabled && o.verify != tc.verify) || o.certPath != tc.certPath || o.from != tc.certPathF {
				t.Errorf("resolveTLS = %+v; want enabled %v, verify %v, cert path %s from %s", o, tc.enabled, tc.verify, tc.certPath, tc.certPathF)
			}
		})
	}
	// A missing explicit directory is an error naming where it came from.
	t.Setenv("DOCKER_CERT_PATH", filepath.Join(home, "nonexistent"))
	if _, _, err := resolveTLS(settings{}).config("h"); err == nil || !strings.Contains(err.Error(), "DOCKER_CERT_PATH") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing DOCKER_CERT_PATH: %v", err)
	}
	// The default directory may be missing: the system's CAs, no client
	// certificate.
	t.Setenv("DOCKER_CERT_PATH", "")
	t.Setenv("DOCKER_TLS_VERIFY", "1")
	cfg, trust, err := resolveTLS(settings{}).config("h")
	if err != nil || cfg.RootCAs != nil || len(cfg.Certificates) != 0 || cfg.InsecureSkipVerify || trust != "the system's CAs" {
		t.Errorf("default directory missing: %+v, %q, %v", cfg, trust, err)
	}
}

// TestEngineSettingsCandidates: CONTAINER_SSHKEY is ssh's key for the
// engine named by CONTAINER_HOST (as Podman reads it), for no other.
func TestEngineSettingsCandidates(t *testing.T) {
	t.Setenv("DOCKER_HOST", "ssh://a")
	t.Setenv("CONTAINER_HOST", "ssh://b/run/podman/podman.sock")
	t.Setenv("CONTAINER_SSHKEY", "/keys/podman")
	s := settings{engineSSHConfig: "/cfg"}
	for _, c := range candidates(s) {
		o := engineOptionsFor(s, c)
		if o.sshConfig != "/cfg" {
			t.Errorf("%s: ssh config %q", c.uri, o.sshConfig)
		}
		if want := map[bool]string{true: "/keys/podman"}[c.from == "CONTAINER_HOST"]; o.sshKey != want {
			t.Errorf("%s (%s): ssh key %q, want %q", c.uri, c.from, o.sshKey, want)
		}
	}
}
