// Package terratest hands broker hosts to terratest's ssh module
// (github.com/gruntwork-io/terratest/modules/ssh): SSHHost turns a host from
// brokertest.Host (or Broker.Checkout) into an ssh.Host, so that
// ssh.CheckSshCommandE, ssh.ScpFileToE and the rest work on it.
//
//	h := brokertest.Host(t, broker.Request{}) // a Local host
//	host, err := terratest.SSHHost(h)
//	if err != nil {
//		t.Fatal(err)
//	}
//	out, err := ssh.CheckSSHCommandContextE(t, ctx, &host, "echo hi") // "hi\n"
//	err = ssh.SCPFileToContextE(t, ctx, &host, 0o644, "./motd", "hello\n")
//
// The deprecated forms (ssh.CheckSshCommandE(t, host, cmd),
// ssh.ScpFileToE(t, host, …)) work the same. terratest's scp needs a
// directory in the remote path: "./motd" (in the directory commands start
// in, a Local host's own), not "motd".
//
// It is a module of its own (github.com/hostbroker/broker/terratest), so
// terratest's large module graph never reaches a program that imports only
// broker.
//
// What terratest loses, against the host's own methods (Execute, SFTP, …):
//
//   - Host keys are not verified. terratest's ssh module accepts any host key
//     (its NoOpHostKeyCallback); hostkit checks the key pinned in the host's
//     inventory record. A terratest call could therefore talk to whatever
//     answers at the host's address. Use the hostkit.Host where that matters.
//   - terratest dials the host's TCP address itself, with a new connection
//     for every call: a host reached only through its engine (a container
//     host with no published SSH port, driven over the engine's exec stream)
//     cannot be handed over, and SSHHost says so; request a container host
//     with the argument ports: "22" to publish its SSH port on 127.0.0.1. A
//     dialer the provider gave the host (hostkit.Config.Dial) is bypassed.
//   - The environment a provider sets for each command (hostkit.Config.Env,
//     e.g. a container's env argument) is not set for terratest's commands.
//   - terratest's timeouts (10s to connect, no retries) apply, not the host's.
package terratest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/gruntwork-io/terratest/modules/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/hostkit"
)

// SSHHost returns the terratest ssh.Host for h: its address (hostname and
// port), its user, and how it logs in: the private key of its first key file
// (as SshKeyPair, its PEM and public key; terratest takes one key pair), its
// password and whether it uses the SSH agent at $SSH_AUTH_SOCK.
//
// The ssh.Host returned holds the private key and the password in plain
// fields: do not print or log it.
//
// It does not dial. It fails, wrapping hostkit.ErrNoSSH, for a host with no
// TCP SSH address (one driven through its engine: see the package
// documentation), and for a host whose only way to log in is one terratest
// cannot take (in-memory keys, hostkit.Config.Signers) or whose key file
// cannot be read.
func SSHHost(h *hostkit.Host) (ssh.Host, error) {
	if h == nil {
		return ssh.Host{}, errors.New("terratest: SSHHost: nil host")
	}
	addr := h.Addr()
	if addr == "" {
		return ssh.Host{}, fmt.Errorf("terratest: host %s has no TCP SSH address: it is reached through its provider's transport "+
			"(a container engine's exec stream), and terratest's ssh module dials a TCP address itself; "+
			"for a container of an image with sshd, the request argument ports: \"22\" publishes its SSH port on 127.0.0.1: %w",
			h, hostkit.ErrNoSSH)
	}
	hostname, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return ssh.Host{}, fmt.Errorf("terratest: host %s: SSH address %q: %w", h, addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 1 || port > 65535 {
		return ssh.Host{}, fmt.Errorf("terratest: host %s: SSH address %q: port %q is not a TCP port number", h, addr, portText)
	}
	c := h.Credentials()
	out := ssh.Host{
		Hostname:    hostname,
		CustomPort:  port,
		SshUserName: c.User,
		Password:    c.Password,
		SshAgent:    c.UseAgent,
	}
	if len(c.KeyFiles) > 0 {
		kp, err := keyPair(c.KeyFiles[0])
		if err != nil {
			return ssh.Host{}, fmt.Errorf("terratest: host %s: %w", h, err)
		}
		out.SshKeyPair = kp
	}
	if out.SshKeyPair == nil && out.Password == "" && !out.SshAgent {
		if len(c.Signers) > 0 {
			return ssh.Host{}, fmt.Errorf("terratest: host %s logs in only with in-memory keys (hostkit.Config.Signers), "+
				"which terratest cannot take: give the key as a file (Config.KeyFiles), a password or the agent", h)
		}
		return ssh.Host{}, fmt.Errorf("terratest: host %s has no SSH authentication (key file, password or agent)", h)
	}
	return out, nil
}

// keyPair reads a private key file into terratest's KeyPair: the PEM as
// read, and the public key in authorized_keys form.
func keyPair(path string) (*ssh.KeyPair, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key file: %w", err)
	}
	signer, err := gossh.ParsePrivateKey(pemBytes)
	if err != nil {
		if _, ok := errors.AsType[*gossh.PassphraseMissingError](err); ok {
			return nil, fmt.Errorf("private key file %s is passphrase-protected, which terratest cannot use", path)
		}
		return nil, fmt.Errorf("parse private key file %s: %w", path, err)
	}
	return &ssh.KeyPair{
		PublicKey:  string(gossh.MarshalAuthorizedKey(signer.PublicKey())),
		PrivateKey: string(pemBytes),
	}, nil
}
