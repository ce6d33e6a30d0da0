package hostkit_test

import (
	"context"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/sshtest"
)

// BenchmarkExecute runs "true" through Host.Execute: a new session per
// command over the host's one connection.
func BenchmarkExecute(b *testing.B) {
	srv := sshtest.Start(b)
	h := newHost(b, srv.Config())
	ctx := context.Background()
	if _, err := h.Execute(ctx, "true"); err != nil { // connect outside the timing
		b.Fatal(err)
	}
	for b.Loop() {
		res, err := h.Execute(ctx, "true")
		if err != nil || res.Status != 0 {
			b.Fatal(res, err)
		}
	}
}

// BenchmarkRawSSH is the floor for BenchmarkExecute: a bare x/crypto/ssh
// client, a new session per command.
func BenchmarkRawSSH(b *testing.B) {
	srv := sshtest.Start(b)
	c, err := ssh.Dial("tcp", srv.Addr, &ssh.ClientConfig{
		User:            srv.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(srv.Signer)},
		HostKeyCallback: ssh.FixedHostKey(srv.HostKey),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for b.Loop() {
		s, err := c.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Run("true"); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

// BenchmarkExecuteParallel runs "true" from many goroutines on one host.
func BenchmarkExecuteParallel(b *testing.B) {
	srv := sshtest.Start(b)
	h := newHost(b, srv.Config())
	ctx := context.Background()
	if _, err := h.Execute(ctx, "true"); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Execute(ctx, "true"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// benchDir makes a directory on h, removed at b's cleanup.
func benchDir(b *testing.B, h *hostkit.Host) string {
	res, err := h.Execute(context.Background(), "mktemp -d")
	if err != nil || res.Status != 0 {
		b.Fatal(res, err)
	}
	dir := res.Stdout[:len(res.Stdout)-1]
	b.Cleanup(func() { h.Execute(context.Background(), "rm -rf "+hostkit.ShellQuote(dir)) })
	return dir
}

func benchmarkTransfer(b *testing.B, upload bool) {
	srv := sshtest.Start(b)
	h := newHost(b, srv.Config())
	ctx := context.Background()
	dir := benchDir(b, h)
	const size = 64 << 20
	local := randomFile(b, size, 0o644)
	remote := dir + "/bench.bin"
	if err := h.Upload(ctx, local, remote); err != nil {
		b.Fatal(err)
	}
	back := filepath.Join(b.TempDir(), "back.bin")
	b.SetBytes(size)
	for b.Loop() {
		var err error
		if upload {
			err = h.Upload(ctx, local, remote)
		} else {
			err = h.Download(ctx, remote, back)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpload uploads a 64 MiB file over SFTP.
func BenchmarkUpload(b *testing.B) { benchmarkTransfer(b, true) }

// BenchmarkDownload downloads a 64 MiB file over SFTP.
func BenchmarkDownload(b *testing.B) { benchmarkTransfer(b, false) }

// BenchmarkWriteFileSmall replaces a small file over SFTP: the round trips
// of a whole-file write (look at the destination, open the temporary,
// chmod, write, close, rename), which a small file's time is made of.
func BenchmarkWriteFileSmall(b *testing.B) {
	srv := sshtest.Start(b)
	h := newHost(b, srv.Config())
	ctx := context.Background()
	dir := benchDir(b, h)
	data := []byte("a small file\n")
	if err := h.WriteFile(ctx, dir+"/f", data, 0o644); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := h.WriteFile(ctx, dir+"/f", data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}
