package awxtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"
)

// LocalEnv is a server whose VMs are Local SSH servers, with the client
// key and the known_hosts file that reach them.
type LocalEnv struct {
	Server     *Server
	VMs        *LocalVMs
	KeyFile    string // private key the VMs accept (unencrypted)
	KnownHosts string // the VMs' host keys are appended here
}

// StartLocal writes a new client key and a known_hosts file under dir,
// makes LocalVMs in dir/vms that accept the key, and starts a server with
// them as opts.VMs. The server and VMs are closed when tb ends.
func StartLocal(tb testing.TB, dir string, opts Options) *LocalEnv {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "awx test user")
	if err != nil {
		tb.Fatal(err)
	}
	e := &LocalEnv{KeyFile: filepath.Join(dir, "id_ed25519"), KnownHosts: filepath.Join(dir, "known_hosts")}
	if err := os.WriteFile(e.KeyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		tb.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	if e.VMs, err = NewLocalVMs(filepath.Join(dir, "vms"), string(ssh.MarshalAuthorizedKey(sshPub)), e.KnownHosts); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.VMs.Close() })
	opts.VMs = e.VMs
	e.Server = Start(tb, opts)
	return e
}
