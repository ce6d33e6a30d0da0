package hostkit_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/hostkit"
)

// TestNudgeAfterServerRequest: when the server sends a global request that
// wants no reply (as sshd does with hostkeys-00@openssh.com right after
// authentication) and the client has nothing to say, the client still
// sends a packet, so that the server's delayed packets are ACKed at once.
// The peer is an in-process x/crypto/ssh server, the only way to see the
// packet.
func TestNudgeAfterServerRequest(t *testing.T) {
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	require.NoError(t, err)
	_, userPriv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	userSigner, err := ssh.NewSignerFromKey(userPriv)
	require.NoError(t, err)

	serverCfg := &ssh.ServerConfig{NoClientAuth: true}
	serverCfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 8)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		conn, _, reqs, err := ssh.NewServerConn(c, serverCfg)
		if err != nil {
			return
		}
		defer conn.Close()
		_, _, _ = conn.SendRequest("hostkeys-00@openssh.com", false, nil)
		for r := range reqs {
			got <- r.Type
		}
	}()

	h := hostkit.New("nudged", hostkit.Config{
		Addr: ln.Addr().String(), User: "u", Signers: []ssh.Signer{userSigner},
		HostKeys: []ssh.PublicKey{hostSigner.PublicKey()},
	})
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = h.SSHClient(ctx)
	require.NoError(t, err)

	select {
	case typ := <-got:
		require.Equal(t, "keepalive@openssh.com", typ)
	case <-ctx.Done():
		t.Fatal("the client sent no keepalive")
	}
}
