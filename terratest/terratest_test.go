package terratest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/brokertest"
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/terratest"

	// Container hosts, as a user's test package imports them.
	_ "github.com/hostbroker/broker/providers/container"
)

const (
	sshdImage    = "brokertest/debian-sshd:12" // built by scripts/build-test-images.sh
	busyboxImage = "brokertest/busybox:1"      // no sshd: driven through the engine
)

// hostFor checks out one host for t from a broker of its own, whose
// directory (BROKER_DIRECTORY) is t's temporary directory.
func hostFor(t *testing.T, req broker.Request) *hostkit.Host {
	t.Helper()
	t.Setenv("BROKER_DIRECTORY", t.TempDir())
	b, err := broker.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return brokertest.Host(t, req, brokertest.WithBroker(b))
}

// requireImage skips t unless the Docker engine has image, or fails it
// when BROKER_TEST_REQUIRE names docker (the root module's
// internal/testenv, which another module cannot import).
func requireImage(t *testing.T, image string) {
	t.Helper()
	out, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", image).CombinedOutput()
	if err == nil {
		return
	}
	why := fmt.Sprintf("docker image %s: %v: %s (build it with: bash scripts/build-test-images.sh)", image, err, strings.TrimSpace(string(out)))
	if required("docker") {
		t.Fatalf("docker is required (BROKER_TEST_REQUIRE=%s) but unavailable: %s", os.Getenv("BROKER_TEST_REQUIRE"), why)
	}
	t.Skipf("skipping: docker unavailable: %s (set BROKER_TEST_REQUIRE=docker to fail instead)", why)
}

// required reports whether BROKER_TEST_REQUIRE names what (or "all").
func required(what string) bool {
	for w := range strings.SplitSeq(os.Getenv("BROKER_TEST_REQUIRE"), ",") {
		if w = strings.TrimSpace(w); strings.EqualFold(w, what) || strings.EqualFold(w, "all") {
			return true
		}
	}
	return false
}

// checkTerratest runs terratest's commands and scp on h, through SSHHost,
// and checks what they did with h's own methods. dir is a directory on h.
// Both forms are checked: the ones the issue names (CheckSshCommandE,
// ScpFileToE, deprecated in terratest 1.0) and their Context successors.
func checkTerratest(t *testing.T, h *hostkit.Host, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	host, err := terratest.SSHHost(h)
	if err != nil {
		t.Fatal(err)
	}
	if host.SshKeyPair == nil {
		t.Errorf("SSHHost(%s): no key pair: %s", h, h.Credentials())
	}
	//lint:ignore SA1019 the form most terratest code uses, named by the issue
	out, err := ssh.CheckSshCommandE(t, host, "echo hi")
	if err != nil || out != "hi\n" {
		t.Fatalf("CheckSshCommandE(echo hi) = %q, %v; want \"hi\\n\"", out, err)
	}
	out, err = ssh.CheckSSHCommandContextE(t, ctx, &host, "echo hi; id -un")
	if want := "hi\n" + host.SshUserName + "\n"; err != nil || out != want {
		t.Fatalf("CheckSSHCommandContextE(echo hi; id -un) = %q, %v; want %q", out, err, want)
	}

	files := map[string]string{
		dir + "/terratest.txt":     "written by terratest's scp\nsecond line\n",
		dir + "/terratest-ctx.txt": "written by SCPFileToContextE\n",
	}
	//lint:ignore SA1019 the form most terratest code uses, named by the issue
	if err := ssh.ScpFileToE(t, host, 0o640, dir+"/terratest.txt", files[dir+"/terratest.txt"]); err != nil {
		t.Fatalf("ScpFileToE(%s): %v", dir+"/terratest.txt", err)
	}
	if err := ssh.SCPFileToContextE(t, ctx, &host, 0o640, dir+"/terratest-ctx.txt", files[dir+"/terratest-ctx.txt"]); err != nil {
		t.Fatalf("SCPFileToContextE(%s): %v", dir+"/terratest-ctx.txt", err)
	}
	for path, contents := range files {
		res, err := h.Execute(ctx, "cat "+hostkit.ShellQuote(path)+" && stat -c %a "+hostkit.ShellQuote(path))
		if err != nil || res.Status != 0 {
			t.Fatalf("cat %s on %s: %v %+v", path, h, err, res)
		}
		if want := contents + "640\n"; res.Stdout != want {
			t.Errorf("%s on %s: contents and mode %q, want %q", path, h, res.Stdout, want)
		}
	}
}

func TestLocal(t *testing.T) {
	h := hostFor(t, broker.Request{})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// A Local host's commands start in its own directory.
	res, err := h.Execute(ctx, "pwd")
	if err != nil || res.Status != 0 {
		t.Fatalf("pwd on %s: %v %+v", h, err, res)
	}
	checkTerratest(t, h, strings.TrimSpace(res.Stdout))
}

func TestContainer(t *testing.T) {
	requireImage(t, sshdImage)
	// ports: "22" publishes sshd on 127.0.0.1, which terratest dials.
	h := hostFor(t, broker.Request{Args: map[string]any{"container_host": sshdImage, "ports": "22"}})
	checkTerratest(t, h, "/tmp")
}

// TestEngineOnlyHost: hosts with no SSH port on 127.0.0.1 are refused with
// the way out: an image without sshd (driven through the engine), and one
// with sshd reached through the engine's exec stream (the default).
func TestEngineOnlyHost(t *testing.T) {
	for _, args := range []map[string]any{
		{"container_host": busyboxImage, "command": []any{"sleep", "3600"}},
		{"container_host": sshdImage},
	} {
		t.Run(args["container_host"].(string), func(t *testing.T) {
			requireImage(t, args["container_host"].(string))
			h := hostFor(t, broker.Request{Args: args})
			_, err := terratest.SSHHost(h)
			if !errors.Is(err, hostkit.ErrNoSSH) || !strings.Contains(err.Error(), `ports: "22"`) || !strings.Contains(err.Error(), h.String()) {
				t.Fatalf("SSHHost of an engine-only host: %v; want hostkit.ErrNoSSH naming the host and ports: \"22\"", err)
			}
		})
	}
}

// nullTransport is a Transport that is never called: SSHHost only looks.
type nullTransport struct{}

func (nullTransport) Execute(context.Context, string, hostkit.ExecOptions) (hostkit.Result, error) {
	return hostkit.Result{}, errors.ErrUnsupported
}
func (nullTransport) Open(context.Context, string) (io.ReadCloser, error) {
	return nil, errors.ErrUnsupported
}
func (nullTransport) Create(context.Context, string, fs.FileMode, io.Reader) error {
	return errors.ErrUnsupported
}
func (nullTransport) Close() error { return nil }

// writeKey writes a new unencrypted ed25519 private key file and returns
// its path and its public key.
func writeKey(t *testing.T) (string, gossh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := gossh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return path, sp
}

func TestSSHHostMapping(t *testing.T) {
	keyFile, pub := writeKey(t)
	const secret = "pw-not-in-errors"
	notKey := filepath.Join(t.TempDir(), "not-a-key")
	if err := os.WriteFile(notKey, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("key file", func(t *testing.T) {
		h := hostkit.New("web", hostkit.Config{Addr: "127.0.0.1:2222", User: "alice", KeyFiles: []string{keyFile}})
		got, err := terratest.SSHHost(h)
		if err != nil {
			t.Fatal(err)
		}
		if got.Hostname != "127.0.0.1" || got.GetPort() != 2222 || got.SshUserName != "alice" || got.Password != "" || got.SshAgent {
			t.Errorf("SSHHost = host %q port %d user %q password set %v agent %v", got.Hostname, got.GetPort(), got.SshUserName, got.Password != "", got.SshAgent)
		}
		if got.SshKeyPair == nil {
			t.Fatal("no key pair")
		}
		want, _ := os.ReadFile(keyFile)
		if got.SshKeyPair.PrivateKey != string(want) {
			t.Error("the key pair's private key is not the key file's PEM")
		}
		k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(got.SshKeyPair.PublicKey))
		if err != nil || string(k.Marshal()) != string(pub.Marshal()) {
			t.Errorf("the key pair's public key %q (%v) is not the key file's", got.SshKeyPair.PublicKey, err)
		}
	})

	t.Run("password and agent, IPv6, default user", func(t *testing.T) {
		h := hostkit.New("web", hostkit.Config{Addr: "[::1]:22", Password: secret, UseAgent: true})
		got, err := terratest.SSHHost(h)
		if err != nil {
			t.Fatal(err)
		}
		if got.Hostname != "::1" || got.GetPort() != 22 || got.SshUserName != "root" || got.Password != secret || !got.SshAgent || got.SshKeyPair != nil {
			t.Errorf("SSHHost = host %q port %d user %q password set %v agent %v key pair %v", got.Hostname, got.GetPort(), got.SshUserName, got.Password != "", got.SshAgent, got.SshKeyPair != nil)
		}
	})

	signer, err := gossh.NewSignerFromKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		h    *hostkit.Host
		want []string // in the error
		is   error
	}{
		{"nil host", nil, []string{"nil host"}, nil},
		{"engine only", hostkit.New("box", hostkit.Config{Transport: nullTransport{}}),
			[]string{"host box", "no TCP SSH address", `ports: "22"`}, hostkit.ErrNoSSH},
		{"bad address", hostkit.New("web", hostkit.Config{Addr: "127.0.0.1", Password: secret}), []string{"web", `"127.0.0.1"`}, nil},
		{"bad port", hostkit.New("web", hostkit.Config{Addr: "127.0.0.1:ssh", Password: secret}), []string{"web", `port "ssh"`}, nil},
		{"in-memory keys only", hostkit.New("web", hostkit.Config{Addr: "127.0.0.1:22", Signers: []gossh.Signer{signer}}),
			[]string{"web", "in-memory keys", "Config.Signers"}, nil},
		{"no authentication", hostkit.New("web", hostkit.Config{Addr: "127.0.0.1:22"}), []string{"web", "no SSH authentication"}, nil},
		{"missing key file", hostkit.New("web", hostkit.Config{Addr: "127.0.0.1:22", KeyFiles: []string{"/nonexistent/id"}, Password: secret}),
			[]string{"web", "/nonexistent/id"}, fs.ErrNotExist},
		{"not a key", hostkit.New("web", hostkit.Config{Addr: "127.0.0.1:22", KeyFiles: []string{notKey}, Password: secret}),
			[]string{"web", "parse private key file " + notKey}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := terratest.SSHHost(c.h)
			if err == nil {
				t.Fatal("SSHHost succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %q is not %v", err, c.is)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}
