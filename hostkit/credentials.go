package hostkit

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Credentials are how a Host logs in over SSH, for handing the host to
// another SSH client (the terratest adapter, an ssh command line). They hold
// the private key files' paths, never the keys' contents; the password is a
// secret: String, GoString and LogValue leave it out (and JSON drops it).
type Credentials struct {
	User     string       // "root" when Config.User is empty
	KeyFiles []string     // private key files (paths)
	Signers  []ssh.Signer // in-memory keys, which no file holds
	Password string       `json:"-"` // secret: never logged
	UseAgent bool         // the agent at $SSH_AUTH_SOCK
}

// Credentials returns how h logs in over SSH (copies of its Config's
// authentication fields). A host driven only through a Transport has none
// that matter: check Addr first.
func (h *Host) Credentials() Credentials {
	return Credentials{
		User:     h.user(),
		KeyFiles: slices.Clone(h.cfg.KeyFiles),
		Signers:  slices.Clone(h.cfg.Signers),
		Password: h.cfg.Password,
		UseAgent: h.cfg.UseAgent,
	}
}

// String names the user and the methods offered, without the password:
// "user root, key files [/k], password set".
func (c Credentials) String() string {
	parts := []string{"user " + c.User}
	if len(c.KeyFiles) > 0 {
		parts = append(parts, fmt.Sprintf("key files %v", c.KeyFiles))
	}
	if len(c.Signers) > 0 {
		parts = append(parts, fmt.Sprintf("%d in-memory keys", len(c.Signers)))
	}
	if c.Password != "" {
		parts = append(parts, "password set")
	}
	if c.UseAgent {
		parts = append(parts, "ssh agent")
	}
	return strings.Join(parts, ", ")
}

// GoString is String, so that %#v does not print the password either.
func (c Credentials) GoString() string { return "hostkit.Credentials{" + c.String() + "}" }

// LogValue is String, so that slog handlers never see the password.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }
