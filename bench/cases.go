package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/sshtest"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/inventory/filter"
	"github.com/hostbroker/broker/providers"
	_ "github.com/hostbroker/broker/providers/container"
)

// Image is the image every container case uses (built by
// scripts/build-test-images.sh).
const Image = "brokertest/debian-sshd:12"

// Env is what the cases share: a scratch directory and an engine client.
type Env struct {
	Dir    string
	Engine *client.Client
	Rounds int // samples per contender
}

// interleave runs each contender once per round, rotating who goes first,
// and returns the samples in contender order.
func interleave(rounds int, names []string, run func(name string) (float64, error)) ([][]float64, error) {
	out := make([][]float64, len(names))
	for r := range rounds {
		for k := range names {
			i := (r + k) % len(names)
			v, err := run(names[i])
			if err != nil {
				return nil, fmt.Errorf("%s, round %d: %w", names[i], r+1, err)
			}
			out[i] = append(out[i], v)
		}
	}
	return out, nil
}

func series(names []string, unit string, samples [][]float64) []Series {
	out := make([]Series, len(names))
	for i, n := range names {
		out[i] = Series{Name: n, Unit: unit, Samples: samples[i]}
	}
	return out
}

func seconds(start time.Time) float64 { return time.Since(start).Seconds() }

// newBroker opens a broker in a directory of its own, with no reaper.
func (e *Env) newBroker() (*broker.Broker, error) {
	dir, err := os.MkdirTemp(e.Dir, "broker-")
	if err != nil {
		return nil, err
	}
	return broker.New(broker.WithDirectory(dir), broker.WithSettingsEnv([]string{}), broker.WithReaper(false))
}

// Lifecycle: checkout → one command → check-in, three ways.
func (e *Env) Lifecycle(ctx context.Context) (Case, error) {
	b, err := e.newBroker()
	if err != nil {
		return Case{}, err
	}
	defer b.Close()
	names := []string{"broker (Checkout, Execute over SSH through the engine, Checkin)", "testcontainers-go (Run, Exec, Terminate)", "raw Engine API (create, start, exec, remove)", "testcontainers-go for SSH (port 22 exposed, wait.ForLog)", "raw Engine API + x/crypto/ssh, SSH-ready by hand", "raw Engine API, port 22 published on 127.0.0.1", "broker, engine exec (Checkout with ssh and auto_map_ports false, Execute, Checkin)", "raw Engine API + sshd -i in an exec + x/crypto/ssh, by hand"}
	signer, err := newSigner()
	if err != nil {
		return Case{}, err
	}
	samples, err := interleave(e.Rounds, names, func(name string) (float64, error) {
		start := time.Now()
		var err error
		switch name {
		case names[0]:
			err = brokerLifecycle(ctx, b, true)
		case names[6]:
			err = brokerLifecycle(ctx, b, false)
		case names[1]:
			err = tcLifecycle(ctx)
		case names[3]:
			err = tcLifecycle(ctx, sshdReady()...)
		case names[4]:
			err = rawSSHLifecycle(ctx, e.Engine, signer)
		case names[5]:
			err = rawLifecycle(ctx, e.Engine, true)
		case names[7]:
			err = rawStreamLifecycle(ctx, e.Engine, signer)
		default:
			err = rawLifecycle(ctx, e.Engine, false)
		}
		return seconds(start), err
	})
	if err != nil {
		return Case{}, err
	}
	c := Case{
		Title:  "Container lifecycle",
		What:   "Checkout → one command (`echo hi`) → check-in of `" + Image + "`, default settings (`Args{\"container_host\": \"" + Image + "\"}`). broker publishes nothing: one exec installs its key, reads and pins the host key and becomes the image's `sshd -i`, over whose stream (the engine's own) the command then runs over SSH; testcontainers-go (Ryuk off: no image can be pulled here) runs the command through the engine's exec, as does the raw sequence. Three more rows without goals: testcontainers-go used as a user who needs SSH would, port 22 exposed (its default publishes it on every host address) and a wait until sshd listens (log polled every 10 ms); the steps of SSH over a published port done by hand on the raw API and a bare x/crypto/ssh client: port 22 published on 127.0.0.1, one exec that appends the key and prints the host key, SSH dialled (every 5 ms until sshd answers) with that key pinned, one session, remove; and the raw sequence with port 22 published on 127.0.0.1 (the engine's port proxy and forwarding rules, made at start and undone at removal: what SSH over a published port costs before any SSH). Then broker with no SSH at all: the same image checked out with `ssh: false` and `auto_map_ports: false`, the command through the engine's exec. The last row is the floor of broker's own transport, done by hand: nothing published, one exec that appends the key, prints the host key and becomes `sshd -i`, a bare x/crypto/ssh client over that exec's stream with the key pinned, one session, remove.",
		Series: series(names, "s", samples),
	}
	c.RatioOf("broker / testcontainers-go (time)", names[0], names[1], 1, true)
	c.RatioOf("broker / raw Engine API (time)", names[0], names[2], 1.15, true)
	c.RatioOf("broker / testcontainers-go for SSH (time)", names[0], names[3], 0, true)
	c.RatioOf("broker / raw Engine API + x/crypto/ssh by hand (time)", names[0], names[4], 0, true)
	c.RatioOf("raw Engine API, port published / raw Engine API (time)", names[5], names[2], 0, true)
	c.RatioOf("broker / raw Engine API, port published (time)", names[0], names[5], 0, true)
	c.RatioOf("broker engine exec / testcontainers-go (time)", names[6], names[1], 0.8, true)
	c.RatioOf("broker engine exec / raw Engine API (time)", names[6], names[2], 1.1, true)
	c.RatioOf("raw + sshd -i by hand / raw Engine API (time)", names[7], names[2], 0, true)
	c.RatioOf("broker / raw + sshd -i by hand (time)", names[0], names[7], 0, true)
	return c, nil
}

// streamScript, run with the client's public key as $1, installs it for
// root, prints the host key, and becomes the image's sshd in inetd mode:
// the least a by-hand SSH through the engine's exec stream needs.
const streamScript = `mkdir -p /root/.ssh /run/sshd && printf '%s\n' "$1" >>/root/.ssh/authorized_keys && cat /etc/ssh/ssh_host_ed25519_key.pub && exec /usr/sbin/sshd -i -e`

// rawStreamLifecycle is the floor of broker's default transport: create
// and start with nothing published, one exec of streamScript whose
// stdout and stdin carry SSH, a bare x/crypto/ssh client with the printed
// host key pinned, one session, remove.
func rawStreamLifecycle(ctx context.Context, cli *client.Client, signer ssh.Signer) (err error) {
	id, remove, err := rawStart(ctx, cli, false)
	defer func() { err = errors.Join(err, remove()) }()
	if err != nil {
		return err
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	ex, err := cli.ExecCreate(ctx, id, client.ExecCreateOptions{Cmd: []string{"/bin/sh", "-c", streamScript, "sh", pub},
		AttachStdin: true, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return err
	}
	att, err := cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return err
	}
	conn := &stdoutConn{Conn: att.Conn, r: att.Reader}
	defer conn.Close()
	line, err := conn.readLine()
	if err != nil {
		return fmt.Errorf("raw stream: host key: %w (stderr %q)", err, conn.stderr.String())
	}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey(line)
	if err != nil {
		return fmt.Errorf("raw stream: host key %q: %w", line, err)
	}
	cfg := &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.FixedHostKey(hostKey),
		HostKeyAlgorithms: []string{hostKey.Type()}}
	sconn, chans, reqs, err := ssh.NewClientConn(conn, "container:22", cfg)
	if err != nil {
		return fmt.Errorf("raw stream: ssh: %w (stderr %q)", err, conn.stderr.String())
	}
	sc := ssh.NewClient(sconn, chans, reqs)
	defer sc.Close()
	return echoHi(sc)
}

// stdoutConn is an exec's hijacked stream as a net.Conn: reads give the
// payload of the engine's stdout frames (stderr's is kept aside), writes
// go to the exec's stdin.
type stdoutConn struct {
	net.Conn
	r      io.Reader
	left   int // stdout bytes left in the current frame
	stderr bytes.Buffer
}

func (c *stdoutConn) Read(p []byte) (int, error) {
	for c.left == 0 {
		var hdr [8]byte
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			return 0, err
		}
		n := int(hdr[4])<<24 | int(hdr[5])<<16 | int(hdr[6])<<8 | int(hdr[7])
		if hdr[0] != 1 { // not stdout
			if _, err := io.CopyN(&c.stderr, c.r, int64(n)); err != nil {
				return 0, err
			}
			continue
		}
		c.left = n
	}
	n, err := c.r.Read(p[:min(len(p), c.left)])
	c.left -= n
	return n, err
}

// readLine reads one line of stdout, a byte at a time so that nothing
// after it is taken from the SSH stream.
func (c *stdoutConn) readLine() ([]byte, error) {
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			return line, err
		}
		if b[0] == '\n' {
			return line, nil
		}
		line = append(line, b[0])
	}
}

func newSigner() (ssh.Signer, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(key)
}

// rawSSHLifecycle makes an SSH-ready container the way a careful user of
// the raw API would, with the steps broker takes, and runs one command.
func rawSSHLifecycle(ctx context.Context, cli *client.Client, signer ssh.Signer) (err error) {
	id, remove, err := rawStart(ctx, cli, true)
	defer func() { err = errors.Join(err, remove()) }()
	if err != nil {
		return err
	}
	ins, err := cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return err
	}
	bindings := ins.Container.NetworkSettings.Ports[port22]
	if len(bindings) == 0 {
		return fmt.Errorf("raw: port 22 not published")
	}
	addr := net.JoinHostPort("127.0.0.1", bindings[0].HostPort)
	// Install the key and read the host key in one exec.
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	out, errOut, err := rawExec(ctx, cli, id, "/bin/sh", "-c", `mkdir -p ~/.ssh && printf '%s\n' "$1" >>~/.ssh/authorized_keys && cat /etc/ssh/ssh_host_ed25519_key.pub`, "sh", pub)
	if err != nil {
		return err
	}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(out))
	if err != nil {
		return fmt.Errorf("raw: host key: %w (%s)", err, errOut)
	}
	cfg := &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.FixedHostKey(hostKey), Timeout: 5 * time.Second}
	var sc *ssh.Client
	for deadline := time.Now().Add(30 * time.Second); ; {
		if sc, err = ssh.Dial("tcp", addr, cfg); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("raw: ssh: %w", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	defer sc.Close()
	return echoHi(sc)
}

// brokerLifecycle checks out one host of Image, over SSH or, without
// useSSH, driven through the engine's exec as testcontainers-go's is.
func brokerLifecycle(ctx context.Context, b *broker.Broker, useSSH bool) error {
	args := map[string]any{"container_host": Image}
	if !useSSH {
		args["ssh"], args["auto_map_ports"] = false, false
	}
	hosts, err := b.Checkout(ctx, broker.Request{Args: args})
	if err != nil {
		return err
	}
	res, err := hosts[0].Execute(ctx, "echo hi")
	if err == nil && res.Stdout != "hi\n" {
		err = fmt.Errorf("broker: got %+v", res)
	}
	return errors.Join(err, b.Checkin(ctx, hosts...))
}

// sshdReady is testcontainers-go used for an SSH host: port 22 exposed (its
// default publishes it on every host address) and a wait until the image's
// sshd listens.
func sshdReady() []testcontainers.ContainerCustomizer {
	return []testcontainers.ContainerCustomizer{
		testcontainers.WithExposedPorts("22/tcp"),
		testcontainers.WithWaitStrategy(wait.ForLog("Server listening").WithPollInterval(10 * time.Millisecond)),
	}
}

func tcLifecycle(ctx context.Context, opts ...testcontainers.ContainerCustomizer) error {
	return tcImageLifecycle(ctx, Image, opts...)
}

// tcImageLifecycle is testcontainers-go's Run of image, one Exec of echo
// hi, Terminate.
func tcImageLifecycle(ctx context.Context, image string, opts ...testcontainers.ContainerCustomizer) error {
	c, err := testcontainers.Run(ctx, image, opts...)
	if err != nil {
		return err
	}
	code, out, err := c.Exec(ctx, []string{"echo", "hi"})
	if err == nil {
		var data []byte
		data, err = io.ReadAll(out)
		if err == nil && (code != 0 || !bytes.Contains(data, []byte("hi\n"))) {
			err = fmt.Errorf("testcontainers: exit %d, %q", code, data)
		}
	}
	return errors.Join(err, c.Terminate(ctx))
}

var port22 = network.MustParsePort("22/tcp")

// rawCreate creates a container of image, with port 22 published on a free
// port of 127.0.0.1 when publish is set.
func rawCreate(ctx context.Context, cli *client.Client, image string, publish bool) (client.ContainerCreateResult, error) {
	opts := client.ContainerCreateOptions{Config: &container.Config{Image: image}}
	if publish {
		opts.Config.ExposedPorts = network.PortSet{port22: {}}
		opts.HostConfig = &container.HostConfig{PortBindings: network.PortMap{port22: {{HostIP: netip.MustParseAddr("127.0.0.1")}}}}
	}
	return cli.ContainerCreate(ctx, opts)
}

// rawStart creates and starts a container of Image, publish as in
// rawCreate; remove force-removes it (nothing when there is none) and is
// to be called whatever err.
func rawStart(ctx context.Context, cli *client.Client, publish bool) (id string, remove func() error, err error) {
	return rawStartImage(ctx, cli, Image, publish)
}

// rawStartImage is rawStart of image.
func rawStartImage(ctx context.Context, cli *client.Client, image string, publish bool) (id string, remove func() error, err error) {
	remove = func() error { return nil }
	c, err := rawCreate(ctx, cli, image, publish)
	if err != nil {
		return "", remove, err
	}
	remove = func() error {
		_, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		return err
	}
	_, err = cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{})
	return c.ID, remove, err
}

// echoHi runs "echo hi" in a new session of sc.
func echoHi(sc *ssh.Client) error {
	sess, err := sc.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	got, err := sess.Output("echo hi")
	if err == nil && string(got) != "hi\n" {
		err = fmt.Errorf("ssh echo hi: %q", got)
	}
	return err
}

// rawLifecycle: create, start, one exec, remove; publish as in rawCreate.
func rawLifecycle(ctx context.Context, cli *client.Client, publish bool) error {
	return rawImageLifecycle(ctx, cli, Image, publish)
}

// rawImageLifecycle is rawLifecycle of image.
func rawImageLifecycle(ctx context.Context, cli *client.Client, image string, publish bool) error {
	id, remove, err := rawStartImage(ctx, cli, image, publish)
	if err != nil {
		return errors.Join(err, remove())
	}
	stdout, stderr, err := rawExec(ctx, cli, id, "echo", "hi")
	if err == nil && stdout+stderr != "hi\n" {
		err = fmt.Errorf("raw: %q", stdout+stderr)
	}
	return errors.Join(err, remove())
}

// rawExec runs cmd in container id through the engine's exec and returns
// its output.
func rawExec(ctx context.Context, cli *client.Client, id string, cmd ...string) (stdout, stderr string, err error) {
	ex, err := cli.ExecCreate(ctx, id, client.ExecCreateOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return "", "", err
	}
	att, err := cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return "", "", err
	}
	defer att.Close()
	var out, errOut bytes.Buffer
	_, err = stdcopy.StdCopy(&out, &errOut, att.Reader)
	return out.String(), errOut.String(), err
}

// Twenty: 20 containers at once, made and removed.
func (e *Env) Twenty(ctx context.Context) (Case, error) {
	b, err := e.newBroker()
	if err != nil {
		return Case{}, err
	}
	defer b.Close()
	names := []string{"broker (Count: 20)", "testcontainers-go (20 goroutines)", "testcontainers-go for SSH (20 goroutines)"}
	samples, err := interleave(e.Rounds, names, func(name string) (float64, error) {
		start := time.Now()
		if name == names[0] {
			hosts, err := b.Checkout(ctx, broker.Request{Count: 20, Args: map[string]any{"container_host": Image}})
			if err != nil {
				return 0, err
			}
			err = b.Checkin(ctx, hosts...)
			return seconds(start), err
		}
		var opts []testcontainers.ContainerCustomizer
		if name == names[2] {
			opts = append(opts, sshdReady()...)
		}
		err := tcRunMany(ctx, 20, Image, opts...)
		return seconds(start), err
	})
	if err != nil {
		return Case{}, err
	}
	c := Case{
		Title:  "20 containers at once",
		What:   "20 `" + Image + "` containers made concurrently, then removed concurrently; the time covers both. broker's hosts (default settings: SSH through the engine's exec stream, nothing published) are SSH-ready (key installed, host key pinned, `sshd -i` answered) when Checkout returns; plain testcontainers-go's are started; the last row is testcontainers-go used for SSH: port 22 exposed and a wait until sshd listens.",
		Series: series(names, "s", samples),
	}
	c.RatioOf("broker / testcontainers-go (time)", names[0], names[1], 1, true)
	c.RatioOf("broker / testcontainers-go for SSH (time)", names[0], names[2], 0, true)
	return c, nil
}

// tcRunMany runs n containers of image with testcontainers-go
// concurrently, then terminates them concurrently.
func tcRunMany(ctx context.Context, n int, image string, opts ...testcontainers.ContainerCustomizer) error {
	var g errgroup.Group
	cs := make([]*testcontainers.DockerContainer, n)
	for i := range cs {
		g.Go(func() (err error) { cs[i], err = testcontainers.Run(ctx, image, opts...); return err })
	}
	err := g.Wait()
	var t errgroup.Group
	for _, c := range cs {
		if c != nil {
			t.Go(func() error { return c.Terminate(ctx) })
		}
	}
	return errors.Join(err, t.Wait())
}

// Stream: command throughput and SFTP to one container, through the
// engine's exec stream and through port 22 published.
func (e *Env) Stream(ctx context.Context, perRound int, size int64) (_ Case, err error) {
	b, err := e.newBroker()
	if err != nil {
		return Case{}, err
	}
	defer b.Close()
	hosts, err := b.Checkout(ctx, broker.Request{Args: map[string]any{"container_host": Image, "ports": "22"}})
	if err != nil {
		return Case{}, err
	}
	defer func() { err = errors.Join(err, b.Checkin(context.WithoutCancel(ctx), hosts...)) }()
	stream, rec := hosts[0], b.Record(hosts[0])
	if s := rec.Broker.SSH; s == nil || s.Transport != "engine-stream" || s.Port == 0 {
		return Case{}, fmt.Errorf("stream: host %s: SSH block %+v, want the engine stream and port 22 published", stream, s)
	}
	cfg, err := providers.ConfigFromRecord(rec)
	if err != nil {
		return Case{}, err
	}
	cfg.ConnectRetries = 20 // the image's daemon may still be starting
	tcp := hostkit.New(rec.Hostname, cfg)
	tcp.Via = "tcp"
	defer tcp.Close()
	hs := map[string]*hostkit.Host{}
	for _, h := range []*hostkit.Host{stream, tcp} {
		if res, err := h.Execute(ctx, "true"); err != nil || res.Status != 0 {
			return Case{}, fmt.Errorf("stream: %s: %+v, %v", h, res, err)
		}
	}
	names := []string{"hostkit Execute, engine stream", "hostkit Execute, TCP (port 22 published)",
		"hostkit Upload, engine stream", "hostkit Upload, TCP", "hostkit Download, engine stream", "hostkit Download, TCP"}
	hs[names[0]], hs[names[1]] = stream, tcp
	cmds, err := interleave(e.Rounds, names[:2], func(name string) (float64, error) {
		start := time.Now()
		for range perRound {
			res, err := hs[name].Execute(ctx, "true")
			if err == nil && res.Status != 0 {
				err = fmt.Errorf("status %d", res.Status)
			}
			if err != nil {
				return 0, err
			}
		}
		return float64(perRound) / seconds(start), nil
	})
	if err != nil {
		return Case{}, err
	}
	localDir, err := os.MkdirTemp(MemDir, "brokerbench-")
	if err != nil {
		return Case{}, fmt.Errorf("files in memory: %w", err)
	}
	defer os.RemoveAll(localDir)
	local, back := filepath.Join(localDir, "payload"), filepath.Join(localDir, "payload.back")
	if err := writeRandom(local, size); err != nil {
		return Case{}, err
	}
	// The container's /dev/shm: a tmpfs (64 MiB by default), as the local end.
	remote := "/dev/shm/brokertest-bench"
	mb := float64(size) / 1e6
	xfer := make([][]float64, 4)
	for r := range e.Rounds {
		for k := range 2 {
			i := (r + k) % 2 // 0: stream, 1: TCP
			h := []*hostkit.Host{stream, tcp}[i]
			if _, err := h.Execute(ctx, "rm -f "+remote); err != nil {
				return Case{}, err
			}
			start := time.Now()
			if err := h.Upload(ctx, local, remote); err != nil {
				return Case{}, fmt.Errorf("%s, round %d: %w", names[2+i], r+1, err)
			}
			xfer[i] = append(xfer[i], mb/seconds(start))
			if err := os.Remove(back); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return Case{}, err
			}
			start = time.Now()
			if err := h.Download(ctx, remote, back); err != nil {
				return Case{}, fmt.Errorf("%s, round %d: %w", names[4+i], r+1, err)
			}
			xfer[2+i] = append(xfer[2+i], mb/seconds(start))
			if err := sameSize(local, back); err != nil {
				return Case{}, fmt.Errorf("%s: %w", names[4+i], err)
			}
		}
	}
	_, _ = stream.Execute(ctx, "rm -f "+remote)
	c := Case{
		Title:  "SSH through the engine's exec stream against port 22 published",
		What:   fmt.Sprintf("One `%s` host checked out with `ports: \"22\"`, reached two ways at once: broker's own connection, through the engine's exec stream (`sshd -i` in an exec; the engine's unix socket, the daemon and the exec's pipes carry every byte), and a second hostkit host dialling the published port on 127.0.0.1 (the image's sshd daemon, through the engine's port proxy), both with the record's key and pinned host key. %d sequential `true` commands per run over each, interleaved; then a %d MiB file uploaded and downloaded over SFTP by each in turn, files in memory at both ends (this machine's %s, the container's /dev/shm).", Image, perRound, size>>20, MemDir),
		Series: append(series(names[:2], "cmd/s", cmds), series(names[2:], "MB/s", [][]float64{xfer[0], xfer[1], xfer[2], xfer[3]})...),
	}
	c.RatioOf("engine stream / TCP, commands (throughput)", names[0], names[1], 0.9, false)
	c.RatioOf("engine stream / TCP, upload (throughput)", names[2], names[3], 0, false)
	c.RatioOf("engine stream / TCP, download (throughput)", names[4], names[5], 0, false)
	return c, nil
}

// sshd starts a real OpenSSH sshd for the SSH cases.
func (e *Env) sshd() (*sshtest.Server, error) {
	dir, err := os.MkdirTemp(e.Dir, "sshd-")
	if err != nil {
		return nil, err
	}
	return sshtest.New(dir, sshtest.Options{})
}

// openSSHArgs are the ssh/scp/sftp options that reach srv with its key and
// a known_hosts file holding its host key.
func openSSHArgs(srv *sshtest.Server, portFlag string) ([]string, error) {
	kh := filepath.Join(srv.Dir, "bench_known_hosts")
	_, port, _ := net.SplitHostPort(srv.Addr)
	if err := os.WriteFile(kh, fmt.Appendf(nil, "[127.0.0.1]:%s %s\n", port, srv.HostKeyLine), 0o600); err != nil {
		return nil, err
	}
	return []string{portFlag, port, "-i", srv.KeyFile, "-o", "UserKnownHostsFile=" + kh, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"}, nil
}

// Exec: command throughput on one host.
func (e *Env) Exec(ctx context.Context, perRound int) (Case, error) {
	srv, err := e.sshd()
	if err != nil {
		return Case{}, err
	}
	defer srv.Close()
	h := hostkit.New("127.0.0.1", srv.Config())
	defer h.Close()
	raw, err := ssh.Dial("tcp", srv.Addr, &ssh.ClientConfig{
		User: srv.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(srv.Signer)},
		HostKeyCallback: ssh.FixedHostKey(srv.HostKey), Timeout: 10 * time.Second,
	})
	if err != nil {
		return Case{}, err
	}
	defer raw.Close()
	args, err := openSSHArgs(srv, "-p")
	if err != nil {
		return Case{}, err
	}
	sock := filepath.Join(srv.Dir, "cm.sock")
	target := srv.User + "@127.0.0.1"
	master := exec.CommandContext(ctx, "ssh", append(append([]string{"-M", "-S", sock, "-o", "ControlPersist=yes", "-fN"}, args...), target)...)
	if out, err := master.CombinedOutput(); err != nil {
		return Case{}, fmt.Errorf("ssh ControlMaster: %v: %s", err, out)
	}
	defer exec.Command("ssh", "-S", sock, "-O", "exit", target).Run()

	names := []string{"broker hostkit Host.Execute", "raw x/crypto/ssh (session per command)", "OpenSSH ssh with ControlMaster"}
	samples, err := interleave(e.Rounds, names, func(name string) (float64, error) {
		start := time.Now()
		for range perRound {
			var err error
			switch name {
			case names[0]:
				var res hostkit.Result
				res, err = h.Execute(ctx, "true")
				if err == nil && res.Status != 0 {
					err = fmt.Errorf("status %d", res.Status)
				}
			case names[1]:
				var s *ssh.Session
				if s, err = raw.NewSession(); err == nil {
					var out, errOut bytes.Buffer
					s.Stdout, s.Stderr = &out, &errOut
					err = s.Run("true")
					s.Close()
				}
			default:
				cmd := exec.CommandContext(ctx, "ssh", append(append([]string{"-S", sock}, args...), target, "true")...)
				if out, cerr := cmd.CombinedOutput(); cerr != nil {
					err = fmt.Errorf("%v: %s", cerr, out)
				}
			}
			if err != nil {
				return 0, err
			}
		}
		return float64(perRound) / seconds(start), nil
	})
	if err != nil {
		return Case{}, err
	}
	c := Case{
		Title:  "Command throughput on one host",
		What:   fmt.Sprintf("%d sequential `true` commands per run against one real OpenSSH sshd on 127.0.0.1, each in a new session over one connection: broker's hostkit, a bare x/crypto/ssh loop, and the OpenSSH client multiplexed over a ControlMaster (a new `ssh` process per command).", perRound),
		Series: series(names, "cmd/s", samples),
	}
	c.RatioOf("hostkit / raw x/crypto/ssh (throughput)", names[0], names[1], 0.9, false)
	c.RatioOf("hostkit / OpenSSH ControlMaster (throughput)", names[0], names[2], 2, false)
	return c, nil
}

// MemDir is a tmpfs every user may write to, for Transfer in memory.
const MemDir = "/dev/shm"

// Transfer: upload and download of one big file. With inMemory, the files
// at both ends are in MemDir, so the clients are measured rather than the
// disk's writeback; otherwise in e.Dir and /tmp.
func (e *Env) Transfer(ctx context.Context, size int64, inMemory bool) (Case, error) {
	srv, err := e.sshd()
	if err != nil {
		return Case{}, err
	}
	defer srv.Close()
	h := hostkit.New("127.0.0.1", srv.Config())
	defer h.Close()
	localDir, remoteDir, where := e.Dir, "/tmp", "on disk"
	if inMemory {
		if localDir, err = os.MkdirTemp(MemDir, "brokerbench-"); err != nil {
			return Case{}, fmt.Errorf("files in memory: %w", err)
		}
		defer os.RemoveAll(localDir)
		remoteDir, where = MemDir, "in memory ("+MemDir+")"
	}
	local := filepath.Join(localDir, "payload")
	if err := writeRandom(local, size); err != nil {
		return Case{}, err
	}
	defer os.Remove(local)
	back := filepath.Join(localDir, "payload.back")
	defer os.Remove(back)
	remote := remoteDir + "/brokertest-bench-" + inventory.NewID()
	defer h.Execute(context.Background(), "rm -f "+remote)
	scpArgs, err := openSSHArgs(srv, "-P")
	if err != nil {
		return Case{}, err
	}
	target := srv.User + "@127.0.0.1"
	batch := func(line string) error {
		f := filepath.Join(e.Dir, "sftp.batch")
		if err := os.WriteFile(f, []byte(line+"\n"), 0o600); err != nil {
			return err
		}
		// sftp takes -P for the port, as scp does.
		cmd := exec.CommandContext(ctx, "sftp", append(append([]string{"-b", f}, scpArgs...), target)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("sftp %s: %v: %s", line, err, out)
		}
		return nil
	}
	scp := func(from, to string) error {
		cmd := exec.CommandContext(ctx, "scp", append(append([]string{"-q"}, scpArgs...), from, to)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("scp: %v: %s", err, out)
		}
		return nil
	}
	names := []string{"broker hostkit Upload", "broker hostkit Download", "scp upload", "scp download", "sftp -b put", "sftp -b get"}
	mb := float64(size) / 1e6
	// Each download reads what the upload just before it wrote; the three
	// tools take turns going first.
	out := make([][]float64, len(names))
	for r := range e.Rounds {
		pairs := [][2]int{{0, 1}, {2, 3}, {4, 5}}
		for k := range pairs {
			p := pairs[(r+k)%len(pairs)]
			for _, i := range p {
				// Each copy goes to a new file, as into a test's t.TempDir:
				// rewriting one would time ext4's truncate and flush, the same
				// for every client, rather than the client.
				var err error
				if i%2 == 0 {
					_, err = h.Execute(ctx, "rm -f "+remote)
				} else {
					err = os.Remove(back)
				}
				if err != nil && !errors.Is(err, fs.ErrNotExist) {
					return Case{}, fmt.Errorf("%s, round %d: removing the last copy: %w", names[i], r+1, err)
				}
				start := time.Now()
				switch i {
				case 0:
					err = h.Upload(ctx, local, remote)
				case 1:
					err = h.Download(ctx, remote, back)
				case 2:
					err = scp(local, target+":"+remote)
				case 3:
					err = scp(target+":"+remote, back)
				case 4:
					err = batch(fmt.Sprintf("put %s %s", local, remote))
				case 5:
					err = batch(fmt.Sprintf("get %s %s", remote, back))
				}
				if err != nil {
					return Case{}, fmt.Errorf("%s, round %d: %w", names[i], r+1, err)
				}
				out[i] = append(out[i], mb/seconds(start))
				if i%2 == 1 {
					if err := sameSize(local, back); err != nil {
						return Case{}, fmt.Errorf("%s: %w", names[i], err)
					}
				}
			}
		}
	}
	c := Case{
		Title:  fmt.Sprintf("%d MiB upload and download, files %s", size>>20, where),
		What:   "One file of random bytes to and from a real OpenSSH sshd on 127.0.0.1, files " + where + " at both ends, each copy to a new file (as into a test's t.TempDir): broker's hostkit (SFTP via pkg/sftp, concurrent requests) against the OpenSSH `scp` (SFTP protocol in OpenSSH 9) and `sftp -b` clients (new process and connection each).",
		Series: series(names, "MB/s", out),
	}
	c.RatioOf("hostkit / scp upload (throughput)", names[0], names[2], 1.5, false)
	c.RatioOf("hostkit / scp download (throughput)", names[1], names[3], 1.5, false)
	return c, nil
}

func writeRandom(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sameSize(a, b string) error {
	sa, err := os.Stat(a)
	if err != nil {
		return err
	}
	sb, err := os.Stat(b)
	if err != nil {
		return err
	}
	if sa.Size() != sb.Size() {
		return fmt.Errorf("copy has %d bytes, want %d", sb.Size(), sa.Size())
	}
	return nil
}

// Pool: 64 holders on a pool of 4 hosts against 64 fresh containers.
func (e *Env) Pool(ctx context.Context) (Case, error) {
	req := broker.Request{Args: map[string]any{"container_host": Image}}
	run := func(h *hostkit.Host) error {
		res, err := h.Execute(ctx, "hostname")
		if err == nil && res.Status != 0 {
			err = fmt.Errorf("status %d", res.Status)
		}
		return err
	}
	names := []string{"broker pool of 4, 64 holders", "64 fresh containers (Count: 64)", "ideal: 4 checkouts + 16 Executes"}
	var checkouts []int
	out := make([][]float64, 3)
	for r := range e.Rounds {
		for k := range 2 {
			which := (r + k) % 2
			b, err := e.newBroker()
			if err != nil {
				return Case{}, err
			}
			start := time.Now()
			if which == 0 {
				p, err := b.NewPool(ctx, req, 4, broker.PoolOptions{})
				if err != nil {
					return Case{}, err
				}
				var g errgroup.Group
				for range 64 {
					g.Go(func() error {
						h, err := p.Acquire(ctx)
						if err != nil {
							return err
						}
						return errors.Join(run(h), p.Release(ctx, h, true))
					})
				}
				err = g.Wait()
				out[0] = append(out[0], seconds(start))
				n, _ := p.Stats()
				checkouts = append(checkouts, n)
				if err := errors.Join(err, p.Close(ctx)); err != nil {
					return Case{}, err
				}
				// The ideal, measured in the same round.
				t0 := time.Now()
				hosts, err := b.Checkout(ctx, broker.Request{Count: 4, Args: req.Args})
				if err != nil {
					return Case{}, err
				}
				for range 16 {
					if err := run(hosts[0]); err != nil {
						return Case{}, err
					}
				}
				out[2] = append(out[2], seconds(t0))
				if err := b.Checkin(ctx, hosts...); err != nil {
					return Case{}, err
				}
			} else {
				hosts, err := b.Checkout(ctx, broker.Request{Count: 64, Args: req.Args})
				if err != nil {
					return Case{}, err
				}
				var g errgroup.Group
				for _, h := range hosts {
					g.Go(func() error { return run(h) })
				}
				err = g.Wait()
				out[1] = append(out[1], seconds(start))
				if err := errors.Join(err, b.Checkin(ctx, hosts...)); err != nil {
					return Case{}, err
				}
			}
			b.Close()
		}
	}
	c := Case{
		Title:  "Pool: 64 parallel holders on 4 hosts",
		What:   "64 concurrent holders each run one `hostname` on a host leased from a pool of 4 `" + Image + "` containers, against 64 fresh containers checked out at once (wall time to the last command; check-in not timed). The ideal is measured in the same round.",
		Series: series(names, "s", out),
		Notes:  []string{fmt.Sprintf("Checkouts per pool run: %v (goal: exactly 4).", checkouts)},
	}
	c.RatioOf("pool / ideal (time)", names[0], names[2], 1.2, true)
	c.RatioOf("pool / 64 fresh (time)", names[0], names[1], 1, true)
	return c, nil
}

// InventoryChildEnv marks a process started by Inventory to write records.
const InventoryChildEnv = "BROKER_BENCH_INVENTORY_WRITER"

// InventoryWriter is the child's work: ops locked writes, like a test run's
// (hosts come and go, so the file stays small): it puts new records and
// removes every other one again. It prints "kept <id>" and "removed <id>"
// for the driver to check that no write was lost.
func InventoryWriter(path string, ops int, out io.Writer) error {
	s := inventory.Open(path)
	var recs []*inventory.Record
	removed := map[*inventory.Record]bool{}
	for k, done := 0, 0; done < ops; k++ {
		rec := &inventory.Record{Hostname: fmt.Sprintf("p%d-%d.example.test", os.Getpid(), k), Name: fmt.Sprintf("p%d-%d", os.Getpid(), k), Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateReady}}
		if err := s.Put(context.Background(), rec); err != nil {
			return err
		}
		recs = append(recs, rec)
		done++
		if k%2 == 1 && done < ops {
			if err := s.Remove(context.Background(), recs[k-1]); err != nil {
				return err
			}
			removed[recs[k-1]] = true
			done++
		}
	}
	for _, r := range recs {
		if removed[r] {
			fmt.Fprintln(out, "removed", r.ID())
		} else {
			fmt.Fprintln(out, "kept", r.ID())
		}
	}
	return nil
}

// Inventory: list+filter over 10,000 records; 8 processes × 200 writes.
func (e *Env) Inventory(ctx context.Context, self string) (Case, error) {
	dir, err := os.MkdirTemp(e.Dir, "inventory-")
	if err != nil {
		return Case{}, err
	}
	big := filepath.Join(dir, "big.yaml")
	recs := make([]*inventory.Record, 10000)
	for i := range recs {
		recs[i] = &inventory.Record{
			Hostname: fmt.Sprintf("host-%d.example.com", i), Name: fmt.Sprintf("host-%d", i),
			Provider: "Container", Args: map[string]any{"container_host": Image, "n": i},
			Broker: &inventory.Meta{ID: inventory.NewID(), State: inventory.StateReady, SSH: &inventory.SSH{Port: 2000 + i%1000}},
		}
	}
	if err := inventory.Open(big).Update(ctx, func([]*inventory.Record) ([]*inventory.Record, error) { return recs, nil }); err != nil {
		return Case{}, err
	}
	flt, err := filter.Parse("name<host-99,_broker_args.container_host{brokertest")
	if err != nil {
		return Case{}, err
	}
	const procs, ops = 8, 200
	var lost []int
	names := []string{"load + filter, 10,000 records", fmt.Sprintf("%d processes × %d locked writes", procs, ops)}
	out := make([][]float64, 2)
	for r := range e.Rounds {
		start := time.Now()
		got, err := inventory.Open(big).Load(ctx)
		if err != nil {
			return Case{}, err
		}
		if n := len(flt.Apply(got)); n != 111 {
			return Case{}, fmt.Errorf("filter matched %d, want 111", n)
		}
		out[0] = append(out[0], seconds(start)*1000)

		path := filepath.Join(dir, fmt.Sprintf("shared-%d.yaml", r))
		start = time.Now()
		var (
			wg   sync.WaitGroup
			errs = make([]error, procs)
			outs = make([][]byte, procs)
		)
		for i := range procs {
			wg.Go(func() {
				cmd := exec.CommandContext(ctx, self)
				cmd.Env = append(os.Environ(), InventoryChildEnv+"="+path+":"+strconv.Itoa(ops))
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				if outs[i], errs[i] = cmd.Output(); errs[i] != nil {
					errs[i] = fmt.Errorf("writer: %w: %s", errs[i], stderr.Bytes())
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return Case{}, err
		}
		out[1] = append(out[1], procs*ops/seconds(start))
		final, err := inventory.Open(path).Load(ctx)
		if err != nil {
			return Case{}, err
		}
		lost = append(lost, lostWrites(final, outs))
	}
	total := 0
	for _, l := range lost {
		total += l
	}
	c := Case{
		Title: "Inventory",
		What:  "Loading a 10,000-record inventory and applying a two-term filter (ms); 8 processes each making 200 locked read-modify-writes of one shared inventory at once, as test runs do: records put and every other one removed again (writes/s, each a flock, a full rewrite, fsync and rename). A write is lost when a kept record is missing at the end or a removed one is back.",
		Series: []Series{
			{Name: names[0], Unit: "ms", Samples: out[0]},
			{Name: names[1], Unit: "writes/s", Samples: out[1]},
		},
		Notes: []string{fmt.Sprintf("Records lost over %d rounds of %d concurrent writes: **%d**.", e.Rounds, procs*ops, total)},
	}
	return c, nil
}

// lostWrites counts the writers' kept records missing from final and their
// removed records present in it.
func lostWrites(final []*inventory.Record, outs [][]byte) int {
	have := map[string]bool{}
	for _, r := range final {
		have[r.ID()] = true
	}
	lost := 0
	for _, o := range outs {
		for line := range strings.Lines(string(o)) {
			what, id, _ := strings.Cut(strings.TrimSpace(line), " ")
			if (what == "kept") != have[id] {
				lost++
			}
		}
	}
	return lost
}
