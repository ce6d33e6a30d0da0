package container

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/internal/safefile"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// sshPort is the container port that marks an sshd image.
const sshPort = "22/tcp"

// runSpec is everything needed to create one container.
type runSpec struct {
	image string
	name  string
	ports []PortSpec
	ssh   bool
	// sshAsked: the argument ssh asked for SSH (an image without sshd is
	// then an error, not a host driven through the engine).
	sshAsked bool
	// tcp: reach sshd through port 22 published, not through the engine's
	// exec stream (the image's sshd cannot run in inetd mode).
	tcp     bool
	env     []string
	cmd     []string
	binds   []string
	network string
	labels  map[string]string
	// keepStdin opens the container's stdin, so an image whose command is
	// a shell (busybox's /bin/sh) keeps running as a host, as `docker run
	// -i` does.
	keepStdin bool
	// beforeStart, when set, is called with the created container's id
	// before it starts (Execute attaches to its output there).
	beforeStart func(cid string) error
}

// Checkout runs a container from the container_host image and returns its
// record. Other arguments: ports, env (or environment; commands run over
// SSH get it too), command, volumes, network, name, auto_map_ports (publish
// the image's exposed ports besides ports), ssh (force or disable the SSH
// setup), labels (or provider_labels: container labels). Any other argument
// is an error, except other tools' marks, whose names start with "_".
func (p *Provider) Checkout(ctx context.Context, req providers.CheckoutRequest) (providers.CheckoutResult, error) {
	rec, err := p.checkout(ctx, req)
	if err != nil {
		return providers.CheckoutResult{}, err
	}
	return providers.ResultOf(rec), nil
}

// checkout is Checkout, giving the container's record.
func (p *Provider) checkout(ctx context.Context, req providers.CheckoutRequest) (_ *inventory.Record, err error) {
	defer p.tidy(&err)
	image, err := argString(req.Args, "container_host")
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	if image == "" {
		if app, _ := argString(req.Args, "container_app"); app != "" {
			return nil, fmt.Errorf("container: checkout needs container_host (an image to run as a host); container_app %q is for Execute", app)
		}
		return nil, fmt.Errorf("container: checkout needs the container_host argument (an image)")
	}
	id := req.ID
	if id == "" {
		id = inventory.NewID()
	}
	if !validID.MatchString(id) {
		return nil, fmt.Errorf("container: checkout id %q: want letters, digits, '-' or '_'", id)
	}
	spec, err := p.spec(ctx, id, image, req.Args, req.Labels)
	if err != nil {
		return nil, err
	}
	for {
		cid, err := p.run(ctx, spec)
		if err != nil {
			return nil, err
		}
		rec, err := p.finish(ctx, id, cid, spec, req.Args)
		var ie *inetdError
		if errors.As(err, &ie) && !spec.tcp {
			// sshd cannot serve the engine's stream: run the container
			// again with port 22 published, for its sshd daemon.
			p.log.Warn("container: the image's sshd does not work in inetd mode (sshd -i); running it again with port 22 published", "image", spec.image, "name", spec.name, "why", ie.msg)
			p.cleanup(cid, "")
			spec.tcp = true
			spec.ports = append(spec.ports, PortSpec{Container: sshPort})
			continue
		}
		if err != nil {
			p.cleanup(cid, id)
			return nil, err
		}
		return rec, nil
	}
}

var validID = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// argNames are the arguments the provider takes (Execute takes timeout
// too). Arguments whose name starts with "_" are other tools' marks (the
// Python broker's _broker_origin, say) and are kept, not read.
var argNames = []string{"auto_map_ports", "command", "container_app", "container_host", "env", "environment",
	"labels", "name", "network", "ports", "provider_labels", "pull_policy", "ssh", "volumes"}

// checkArgNames refuses an argument the provider does not take: a misspelt
// one would otherwise be left out silently.
func checkArgNames(args map[string]any) error {
	for _, k := range slices.Sorted(maps.Keys(args)) {
		if !slices.Contains(argNames, k) && !strings.HasPrefix(k, "_") {
			return fmt.Errorf("container: unknown argument %q (the Container provider takes %s)", k, strings.Join(argNames, ", "))
		}
	}
	return nil
}

// spec reads the image and the arguments into a runSpec.
func (p *Provider) spec(ctx context.Context, id, image string, args map[string]any, reqLabels map[string]string) (*runSpec, error) {
	if err := checkArgNames(args); err != nil {
		return nil, err
	}
	userLabels, err := parseLabels(args)
	if err != nil {
		return nil, fmt.Errorf("container: argument %w", err)
	}
	s := &runSpec{image: image, network: p.settings.network, keepStdin: true}
	if s.ports, s.ssh, err = p.publish(ctx, image, args); err != nil {
		return nil, err
	}
	s.sshAsked = s.ssh && args["ssh"] != nil
	if s.env, err = envOf(args); err != nil {
		return nil, fmt.Errorf("container: argument %w", err)
	}
	if s.cmd, err = parseCommand(args["command"]); err != nil {
		return nil, fmt.Errorf("container: argument %w", err)
	}
	if s.binds, err = parseVolumes(args["volumes"]); err != nil {
		return nil, fmt.Errorf("container: argument %w", err)
	}
	if n, err := argString(args, "network"); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	} else if n != "" {
		s.network = n
	}
	if s.name, err = argString(args, "name"); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	if s.name == "" {
		s.name = p.settings.namePrefix + "_" + randomHex(4)
	}
	s.labels = p.labels(id, args, reqLabels)
	// Every label of broker's is under LabelPrefix: those stay ours.
	for k, v := range userLabels {
		if !strings.HasPrefix(k, LabelPrefix) {
			s.labels[k] = v
		}
	}
	return s, nil
}

// publish returns the ports to publish and whether the container is
// reached over SSH: the ports argument; as the Python broker does, with
// auto_map_ports, every other port the image exposes, except the SSH port
// of a host reached over SSH (through the engine's exec stream: the port is
// published only when ports names it). SSH is the argument ssh, by default
// on when the image exposes the SSH port or ports names it.
func (p *Provider) publish(ctx context.Context, image string, args map[string]any) (ports []PortSpec, ssh bool, err error) {
	policy, err := p.requestPolicy(args)
	if err != nil {
		return nil, false, err
	}
	img, err := p.ensureImage(ctx, image, policy)
	if err != nil {
		return nil, false, err
	}
	exposed := map[string]bool{}
	if img.Config != nil {
		for k := range img.Config.ExposedPorts {
			if n, err := normalizePort(k); err == nil {
				exposed[n] = true
			}
		}
	}
	if ports, err = ParsePorts(args["ports"]); err != nil {
		return nil, false, fmt.Errorf("container: argument %w", err)
	}
	named := map[string]bool{}
	for _, ps := range ports {
		named[ps.Container] = true
	}
	if ssh, err = argBool(args, "ssh", exposed[sshPort] || named[sshPort]); err != nil {
		return nil, false, fmt.Errorf("container: %w", err)
	}
	auto, err := argBool(args, "auto_map_ports", p.settings.autoMapPorts)
	if err != nil {
		return nil, false, fmt.Errorf("container: %w", err)
	}
	if auto {
		for _, port := range sortedKeys(exposed) {
			if !named[port] && !(ssh && port == sshPort) {
				ports = append(ports, PortSpec{Container: port})
			}
		}
	}
	return ports, ssh, nil
}

// labels are the container's labels: the request's under LabelPrefix, then
// ours (which win).
func (p *Provider) labels(id string, args map[string]any, reqLabels map[string]string) map[string]string {
	l := map[string]string{}
	for k, v := range reqLabels {
		l[LabelPrefix+k] = v
	}
	if l[LabelUser] == "" {
		l[LabelUser] = localUser()
	}
	if l[LabelVersion] == "" {
		l[LabelVersion] = "unknown"
	}
	// The broker checks out in its owner process: record what proves that
	// owner's death, for Sync.
	if l[LabelRun] != "" && l[LabelPID] == "" {
		o := inventory.CurrentOwner(l[LabelRun])
		if l[LabelMachine] == "" {
			l[LabelMachine] = o.Machine
		}
		if l[LabelMachine] == o.Machine {
			l[LabelPID] = strconv.Itoa(o.PID)
			if o.Started != 0 {
				l[LabelStarted] = strconv.FormatUint(o.Started, 10)
			}
			if o.BootID != "" {
				l[LabelBootID] = o.BootID
			}
		}
	}
	l[LabelID] = id
	l[LabelInstance] = p.cfg.Instance
	if args != nil {
		l[LabelArgs] = argsJSON(args)
	}
	return l
}

// run creates and starts the container of s and returns its id. A container
// that was created but failed to start is removed.
func (p *Provider) run(ctx context.Context, s *runSpec) (string, error) {
	if s.ssh {
		s.labels[LabelTransport] = TransportStream
		if s.tcp {
			s.labels[LabelTransport] = TransportTCP
		}
	}
	cfg := &container.Config{
		Image:        s.image,
		Env:          s.env,
		Cmd:          s.cmd,
		Labels:       s.labels,
		ExposedPorts: network.PortSet{},
		OpenStdin:    s.keepStdin,
	}
	host := &container.HostConfig{PortBindings: network.PortMap{}, Binds: s.binds}
	for _, ps := range s.ports {
		port, err := network.ParsePort(ps.Container)
		if err != nil {
			return "", fmt.Errorf("container: port %s: %w", ps.Container, err)
		}
		cfg.ExposedPorts[port] = struct{}{}
		hp := ""
		if ps.HostPort != 0 {
			hp = strconv.Itoa(ps.HostPort)
		}
		host.PortBindings[port] = append(host.PortBindings[port], network.PortBinding{HostIP: loopback, HostPort: hp})
	}
	if s.network != "" {
		host.NetworkMode = container.NetworkMode(s.network)
	}
	cctx, cancel := p.callCtx(ctx)
	created, err := p.eng.cli.ContainerCreate(cctx, client.ContainerCreateOptions{Config: cfg, HostConfig: host, Name: s.name})
	cancel()
	if err != nil {
		// A create that timed out on our side may still have happened.
		p.cleanup("", s.labels[LabelID])
		return "", fmt.Errorf("container: create %s from image %q on %s: %w", s.name, s.image, p.eng.uri, err)
	}
	if s.beforeStart != nil {
		if err := s.beforeStart(created.ID); err != nil {
			p.cleanup(created.ID, "")
			return "", fmt.Errorf("container: %s (image %q): %w", s.name, s.image, err)
		}
	}
	cctx, cancel = p.callCtx(ctx)
	_, err = p.eng.cli.ContainerStart(cctx, created.ID, client.ContainerStartOptions{})
	cancel()
	if err != nil {
		p.cleanup(created.ID, "")
		return "", fmt.Errorf("container: start %s (image %q): %w", s.name, s.image, err)
	}
	return created.ID, nil
}

// finish makes the started container a host and returns its record: for
// SSH, one exec through the engine installs a client key, reads the host
// key and becomes the host's first SSH connection (TransportStream); an
// image without sshd is driven through the engine (TransportExec); with
// s.tcp, the container's sshd daemon is awaited on the published port 22
// (TransportTCP). An *inetdError says that sshd cannot run in inetd mode
// and port 22 is not published: the caller runs the container again with
// s.tcp.
func (p *Provider) finish(ctx context.Context, id, cid string, s *runSpec, args map[string]any) (*inventory.Record, error) {
	// With nothing published, the stream's setup tells all an inspect
	// would (the hostname; that the container runs): one call less.
	var rec *inventory.Record
	port := 0
	inspect := func() error {
		cctx, cancel := p.callCtx(ctx)
		ins, err := p.eng.cli.ContainerInspect(cctx, cid, client.ContainerInspectOptions{})
		cancel()
		if err != nil {
			return fmt.Errorf("container: inspect %s: %w", s.name, err)
		}
		if err := notRunning(ins.Container); err != nil {
			return fmt.Errorf("container: %s (image %q): %w%s", s.name, s.image, err, p.exitDetail(ctx, ins.Container))
		}
		rec = p.record(id, ins.Container, args)
		port = publishedPort(ins.Container, sshPort)
		return nil
	}
	if !s.ssh || s.tcp || len(s.ports) > 0 {
		if err := inspect(); err != nil {
			return nil, err
		}
	}
	if !s.ssh {
		rec.Broker.Data["transport"] = TransportExec
		return rec, nil
	}
	keyFile, pub, err := p.newClientKey(id)
	if err != nil {
		return nil, err
	}
	user := p.sshUser()
	if !s.tcp {
		ready, err := p.streamSetup(ctx, cid, user, pub)
		if err == nil {
			if rec == nil {
				rec = p.recordOf(id, cid, s.name, firstNonEmpty(ready.hostname, shortID(cid)), s.image, nil, args)
			}
			p.handovers.put(id, "", ready.conn)
			rec.Broker.Data["transport"] = TransportStream
			rec.Broker.Data["sshd"] = ready.sshd
			rec.Broker.SSH = &inventory.SSH{Transport: TransportStream, User: user, HostKey: ready.hostKey, KeyFile: keyFile,
				ProxyCommand: p.proxyCommand(cid, ready.sshd)}
			if port != 0 {
				// Asked for by the ports argument: other tools can use it.
				rec.Broker.SSH.Host, rec.Broker.SSH.Port = "127.0.0.1", port
			}
			return rec, nil
		}
		if gone := p.ended(ctx, cid); gone != nil {
			return nil, fmt.Errorf("container: %s (image %q): %w", s.name, s.image, gone)
		}
		var ie *inetdError
		switch {
		case errors.Is(err, errNoSSHD) && !s.sshAsked:
			p.log.Info("container: the image has no sshd: the host is driven through the engine", "image", s.image, "name", s.name)
			if err := p.removeKeyDir(id); err != nil {
				return nil, fmt.Errorf("container: %s: remove key dir: %w", s.name, err)
			}
			if rec == nil {
				if err := inspect(); err != nil {
					return nil, err
				}
			}
			rec.Broker.Data["transport"] = TransportExec
			return rec, nil
		case errors.Is(err, errNoSSHD):
			return nil, fmt.Errorf("container: %s (image %q): the argument ssh asks for SSH, but %w", s.name, s.image, err)
		case !errors.As(err, &ie):
			return nil, fmt.Errorf("container: %s: %w", s.name, err)
		case port == 0:
			return nil, err
		}
		p.log.Warn("container: the image's sshd does not work in inetd mode (sshd -i); using its daemon on the published port 22", "image", s.image, "name", s.name, "why", ie.msg)
	}
	if port == 0 {
		return nil, fmt.Errorf("container: %s: port %s is not published on 127.0.0.1", s.name, sshPort)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	alive := func(ctx context.Context) error {
		cctx, cancel := p.callCtx(ctx)
		defer cancel()
		ins, err := p.eng.cli.ContainerInspect(cctx, cid, client.ContainerInspectOptions{})
		if err != nil {
			return fmt.Errorf("inspect: %w", err)
		}
		return notRunning(ins.Container)
	}
	// The key is installed (and the host key read) through the engine while
	// sshd starts: the two waits overlap.
	type installed struct {
		hostKey string
		err     error
	}
	keyDone := make(chan installed, 1)
	go func() {
		hk, err := p.installKey(ctx, cid, user, pub)
		keyDone <- installed{hk, err}
	}()
	conn, bannerErr := waitBanner(ctx, addr, p.settings.sshWait, alive)
	inst := <-keyDone
	if bannerErr != nil {
		if len(s.cmd) > 0 && errors.Is(bannerErr, context.DeadlineExceeded) && ctx.Err() == nil {
			// The container runs, but its port never had sshd behind it.
			return nil, fmt.Errorf("container: %s (image %q): the command %q may have replaced the image's sshd (the argument \"ssh\": false gives a host driven through the engine: exec and files, no SSH): sshd on %s: %w", s.name, s.image, s.cmd, addr, bannerErr)
		}
		return nil, fmt.Errorf("container: %s (image %q): sshd on %s: %w", s.name, s.image, addr, bannerErr)
	}
	if inst.err != nil {
		conn.Close()
		return nil, fmt.Errorf("container: %s: %w", s.name, inst.err)
	}
	p.handovers.put(id, addr, conn)
	rec.Broker.Data["transport"] = TransportTCP
	rec.Broker.SSH = &inventory.SSH{Transport: TransportTCP, Host: "127.0.0.1", Port: port, User: user, HostKey: inst.hostKey, KeyFile: keyFile}
	return rec, nil
}

// ended is why container cid is not running, or nil while it runs (or
// when the engine cannot say).
func (p *Provider) ended(ctx context.Context, cid string) error {
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	ins, err := p.eng.cli.ContainerInspect(cctx, cid, client.ContainerInspectOptions{})
	if err != nil {
		return nil
	}
	if err := notRunning(ins.Container); err != nil {
		return fmt.Errorf("%w%s", err, p.exitDetail(ctx, ins.Container))
	}
	return nil
}

func (p *Provider) sshUser() string {
	if p.settings.username != "" {
		return p.settings.username
	}
	return "root"
}

// record is the inventory record of a container (without its SSH block).
func (p *Provider) record(id string, c container.InspectResponse, args map[string]any) *inventory.Record {
	hostname := shortID(c.ID)
	image := ""
	if c.Config != nil {
		if c.Config.Hostname != "" {
			hostname = c.Config.Hostname
		}
		image = c.Config.Image
	}
	ports := map[string]any{}
	if c.NetworkSettings != nil {
		for port, bs := range c.NetworkSettings.Ports {
			for _, b := range bs {
				if b.HostPort != "" {
					ports[port.String()] = b.HostIP.String() + ":" + b.HostPort
				}
			}
		}
	}
	return p.recordOf(id, c.ID, strings.TrimPrefix(c.Name, "/"), hostname, image, ports, args)
}

// recordOf is the inventory record (without its SSH block) of container
// cid, named name, whose hostname and image are those, publishing ports
// (container port: host address).
func (p *Provider) recordOf(id, cid, name, hostname, image string, ports, args map[string]any) *inventory.Record {
	data := map[string]any{
		"container_id": cid,
		"engine":       p.eng.uri,
		"image":        image,
	}
	if len(ports) > 0 {
		data["ports"] = ports
	}
	if p.settings.runtime != "" {
		data["runtime"] = p.settings.runtime
	}
	var a map[string]any
	if args != nil {
		a = make(map[string]any, len(args))
		for k, v := range args {
			a[k] = v
		}
	}
	return &inventory.Record{
		Hostname: hostname,
		Name:     name,
		Args:     a,
		Broker:   &inventory.Meta{ID: id, Data: data},
	}
}

// notRunning is an error saying how the container ended, or nil while it
// runs.
func notRunning(c container.InspectResponse) error {
	st := c.State
	if st == nil || st.Running {
		return nil
	}
	msg := fmt.Sprintf("container is not running: %s, exit code %d", st.Status, st.ExitCode)
	if st.Error != "" {
		msg += ": " + st.Error
	}
	return errors.New(msg)
}

// publishedPort is the 127.0.0.1 host port of the container port, or 0.
func publishedPort(c container.InspectResponse, port string) int {
	if c.NetworkSettings == nil {
		return 0
	}
	for p, bs := range c.NetworkSettings.Ports {
		if p.String() != port {
			continue
		}
		for _, b := range bs {
			if b.HostIP == loopback || !b.HostIP.IsValid() {
				if n, err := strconv.Atoi(b.HostPort); err == nil && n > 0 {
					return n
				}
			}
		}
	}
	return 0
}

// keyDir is where the client key of host id lives.
func (p *Provider) keyDir(id string) string {
	return filepath.Join(p.settings.dir, "container", id)
}

// removeKeyDir removes host id's key dir, following no link planted on
// the way to it.
func (p *Provider) removeKeyDir(id string) error {
	return safefile.RemoveAll(p.settings.dir, filepath.Join("container", id))
}

// cleanup removes what a failed checkout left: the container (by id, or by
// the id label when the create call's fate is unknown) and the key dir.
func (p *Provider) cleanup(cid, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), p.settings.callTimeout)
	defer cancel()
	if cid != "" {
		if err := p.remove(ctx, cid); err != nil {
			p.log.Warn("container: cleanup after failed checkout", "container", shortID(cid), "err", err)
		}
	}
	if id != "" {
		if err := p.checkinID(ctx, id, ""); err != nil {
			p.log.Warn("container: cleanup after failed checkout", "id", id, "err", err)
		}
	}
}

// Connect builds the host of rec by its transport: SSH through the
// engine's exec stream (TransportStream: the SSH block says so), SSH to
// the published port (an SSH block with a port), else through the engine
// (TransportExec). SSH hosts get host_password from settings when it is
// set.
func (p *Provider) Connect(ctx context.Context, rec *inventory.Record) (*hostkit.Host, error) {
	if rec == nil {
		return nil, fmt.Errorf("container: connect: nil record")
	}
	if s := sshBlock(rec); s != nil && (s.Transport == TransportStream || s.Port != 0) {
		cfg, err := providers.ConfigFromRecord(rec)
		if err != nil {
			return nil, fmt.Errorf("container: connect %s: %w", rec.Name, err)
		}
		if p.settings.password != "" {
			cfg.Password = p.settings.password
		}
		if p.settings.username != "" && s.User == "" {
			cfg.User = p.settings.username
		}
		if t := p.cfg.SSH.ConnectTimeout; t > 0 {
			cfg.ConnectTimeout = t
		}
		if t := p.cfg.SSH.CommandTimeout; t > 0 {
			cfg.CommandTimeout = t
		}
		// sshd's sessions do not inherit the container's environment, which
		// the engine's exec gives: each command gets the env argument.
		env, err := envOf(rec.Args)
		if err != nil {
			return nil, fmt.Errorf("container: connect %s: argument %w", rec.Name, err)
		}
		for _, kv := range env {
			k, v, _ := strings.Cut(kv, "=")
			if cfg.Env == nil {
				cfg.Env = map[string]string{}
			}
			cfg.Env[k] = v
		}
		cfg.Logger = p.log
		via := TransportTCP
		cfg.Dial = p.handovers.dialer(rec.ID())
		if s.Transport == TransportStream {
			// The dialer goes through the engine. The address is port 22
			// published on 127.0.0.1 when the request asked for it (other
			// SSH clients may dial it), else only a name.
			cfg.Dial, via = p.streamDialer(rec), TransportStream
			if s.Host == "" || s.Port == 0 {
				cfg.Addr = net.JoinHostPort(firstNonEmpty(rec.Hostname, rec.Name, "container"), "22")
				cfg.DialOnly = true
			}
		}
		h := hostkit.New(rec.Hostname, cfg)
		h.Name, h.Via = rec.Name, via
		return h, nil
	}
	cfg := hostkit.Config{Logger: p.log, Transport: p.transport(rec)}
	if t := p.cfg.SSH.CommandTimeout; t > 0 {
		cfg.CommandTimeout = t
	}
	h := hostkit.New(rec.Hostname, cfg)
	h.Name, h.Via = rec.Name, TransportExec
	return h, nil
}

// sshBlock is rec's SSH block, or nil.
func sshBlock(rec *inventory.Record) *inventory.SSH {
	if rec.Broker == nil {
		return nil
	}
	return rec.Broker.SSH
}

// transport drives the container of rec through the engine.
func (p *Provider) transport(rec *inventory.Record) *transport {
	return &transport{p: p, user: p.settings.username, resolve: func(ctx context.Context) (string, error) {
		ids, err := p.find(ctx, rec)
		if err != nil {
			return "", err
		}
		if len(ids) == 0 {
			return "", fmt.Errorf("container: host %s (id %s) not found on %s", rec.Name, rec.ID(), p.eng.uri)
		}
		return ids[0], nil
	}}
}

// Checkin removes the container of rec (forced, with its anonymous volumes)
// and its key directory. A container already gone is not an error. rec may
// hold only the broker id (the container is found by its id label), or, for
// records of other tools, only the name.
func (p *Provider) Checkin(ctx context.Context, rec *inventory.Record) (err error) {
	defer p.tidy(&err)
	if rec == nil {
		return nil
	}
	id := rec.ID()
	if id != "" && !validID.MatchString(id) {
		return fmt.Errorf("container: checkin: record id %q is not a broker id", id)
	}
	p.handovers.drop(id)
	// The container id in the record saves a listing; records without one
	// (intent records, other tools) are found by label or name.
	if rec.Broker != nil && rec.Broker.Data != nil {
		if cid, ok := rec.Broker.Data["container_id"].(string); ok && cid != "" && id != "" {
			if err := p.remove(ctx, cid); err != nil {
				return fmt.Errorf("container: checkin %s: %w", id, err)
			}
			if err := p.removeKeyDir(id); err != nil {
				return fmt.Errorf("container: checkin %s: remove key dir: %w", id, err)
			}
			return nil
		}
	}
	return p.checkinID(ctx, id, p.nameOf(rec))
}

// nameOf is the container name to look for when a record has no id.
func (p *Provider) nameOf(rec *inventory.Record) string {
	if rec.ID() != "" {
		return ""
	}
	return rec.Name
}

func (p *Provider) checkinID(ctx context.Context, id, name string) error {
	ids, err := p.findBy(ctx, id, name)
	if err != nil {
		return fmt.Errorf("container: checkin %s: %w", firstNonEmpty(id, name), err)
	}
	var errs []string
	for _, cid := range ids {
		if err := p.remove(ctx, cid); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if id != "" {
		if err := p.removeKeyDir(id); err != nil {
			errs = append(errs, fmt.Sprintf("remove key dir: %v", err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("container: checkin %s: %s", firstNonEmpty(id, name), strings.Join(errs, "; "))
	}
	return nil
}

// removalWait bounds the wait for a removal that another call started.
const removalWait = time.Minute

// remove force-removes container cid with its anonymous volumes; a
// container already gone is not an error. When another call is removing it
// (the engine answers 409 "removal already in progress": a check-in of a
// process that is dying, or of the signal handler, got there first) it
// waits until the container is gone, since the engine finishes that
// removal even if its caller has died. A container that is listed but
// "not found" for removal is still being created (a create call cut short
// by its caller completes at the engine): it is asked for again until the
// creation has ended one way or the other.
func (p *Provider) remove(ctx context.Context, cid string) error {
	cctx, cancel := p.callCtx(ctx)
	_, err := p.eng.cli.ContainerRemove(cctx, cid, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	cancel()
	if err == nil {
		return nil
	}
	start := time.Now()
	for delay := 50 * time.Millisecond; ; delay = min(delay*2, time.Second) {
		// Gone meanwhile (another check-in, or a removal in progress)?
		cctx, cancel = p.callCtx(ctx)
		res, lerr := p.eng.cli.ContainerList(cctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("id", cid)})
		cancel()
		if lerr == nil && len(res.Items) == 0 {
			return nil
		}
		creating := cerrdefs.IsNotFound(err)
		if !(creating || cerrdefs.IsConflict(err)) || time.Since(start) > removalWait {
			return fmt.Errorf("remove container %s: %w", shortID(cid), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove container %s: %w (waiting for a removal or creation in progress: %w)", shortID(cid), err, ctx.Err())
		case <-time.After(delay):
		}
		if creating || time.Since(start) > 10*time.Second {
			// Ask again: a removal that failed leaves the container, and
			// ours may then succeed.
			cctx, cancel = p.callCtx(ctx)
			_, err = p.eng.cli.ContainerRemove(cctx, cid, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			cancel()
			if err == nil {
				return nil
			}
		}
	}
}

// find returns the ids of the containers of rec.
func (p *Provider) find(ctx context.Context, rec *inventory.Record) ([]string, error) {
	if rec.Broker != nil && rec.Broker.Data != nil {
		if cid, ok := rec.Broker.Data["container_id"].(string); ok && cid != "" {
			return []string{cid}, nil
		}
	}
	return p.findBy(ctx, rec.ID(), p.nameOf(rec))
}

// findBy lists containers by id label, or by exact name when id is empty.
func (p *Provider) findBy(ctx context.Context, id, name string) ([]string, error) {
	f := client.Filters{}
	switch {
	case id != "":
		f.Add("label", LabelID+"="+id)
	case name != "":
		f.Add("name", "^/?"+regexp.QuoteMeta(name)+"$")
	default:
		return nil, nil
	}
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	res, err := p.eng.cli.ContainerList(cctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers on %s: %w", p.eng.uri, err)
	}
	var ids []string
	for _, c := range res.Items {
		if id != "" && c.Labels[LabelID] != id {
			continue // engines whose filter is looser than asked
		}
		if id == "" && !hasName(c.Names, name) {
			continue
		}
		ids = append(ids, c.ID)
	}
	return ids, nil
}

func hasName(names []string, name string) bool {
	for _, n := range names {
		if strings.TrimPrefix(n, "/") == name {
			return true
		}
	}
	return false
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
