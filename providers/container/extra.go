package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

var (
	_ providers.Executor  = (*Provider)(nil)
	_ providers.Syncer    = (*Provider)(nil)
	_ providers.Describer = (*Provider)(nil)
)

// Execute runs a one-shot container from the container_app (or
// container_host) image with the command, env and volumes arguments, waits
// for it to exit, removes it and returns a hostkit.Result: its exit status
// and its output. A non-zero status is a result, not an error. The
// argument timeout (seconds) bounds the run, over ctx.
func (p *Provider) Execute(ctx context.Context, args map[string]any) (_ any, err error) {
	defer p.tidy(&err)
	image, err := argString(args, "container_app")
	if err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	if image == "" {
		if image, err = argString(args, "container_host"); err != nil {
			return nil, fmt.Errorf("container: %w", err)
		}
	}
	if image == "" {
		return nil, fmt.Errorf("container: execute needs the container_app argument (an image)")
	}
	if v, ok := args["timeout"]; ok {
		d, err := providers.Seconds(v)
		if err != nil {
			return nil, fmt.Errorf("container: argument timeout: %w", err)
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	id := inventory.NewID()
	a := make(map[string]any, len(args))
	for k, v := range args {
		a[k] = v
	}
	a["container_host"] = image
	a["auto_map_ports"] = false
	a["ssh"] = false
	delete(a, "ports")
	delete(a, "timeout")
	spec, err := p.spec(ctx, id, image, a, nil)
	if err != nil {
		return nil, err
	}
	spec.labels[LabelOneShot] = "true"
	spec.keepStdin = false // it must end by itself
	spec.labels[LabelArgs] = argsJSON(args)
	// Attached before it starts, as `docker run` is: its logs afterwards
	// would hold only what the engine's log rotation kept.
	var out client.ContainerAttachResult
	spec.beforeStart = func(cid string) error {
		cctx, cancel := p.callCtx(ctx)
		defer cancel()
		var err error
		out, err = p.eng.cli.ContainerAttach(cctx, cid, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
		if err != nil {
			return fmt.Errorf("attach: %w", err)
		}
		return nil
	}
	cid, err := p.run(ctx, spec)
	if out.Conn != nil {
		defer out.Close()
	}
	if err != nil {
		return nil, err
	}
	defer p.cleanup(cid, "")
	res, err := p.outcome(ctx, image, cid, out)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// outcome waits for the one-shot container cid of image to end, and
// returns its exit status and its output, read from out (its attached
// streams) while it ran.
func (p *Provider) outcome(ctx context.Context, image, cid string, out client.ContainerAttachResult) (hostkit.Result, error) {
	stop := context.AfterFunc(ctx, out.Close) // ends the copy below
	defer stop()
	var stdout, stderr bytes.Buffer
	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(&stdout, &stderr, out.Reader)
		copied <- err
	}()

	wait := p.eng.cli.ContainerWait(ctx, cid, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	var status int
	select {
	case r := <-wait.Result:
		status = int(r.StatusCode)
		if r.Error != nil && r.Error.Message != "" {
			return hostkit.Result{}, fmt.Errorf("container: execute %s: %s", image, r.Error.Message)
		}
	case err := <-wait.Error:
		return hostkit.Result{}, fmt.Errorf("container: execute %s: wait: %w", image, err)
	case <-ctx.Done():
		return hostkit.Result{}, fmt.Errorf("container: execute %s: %w", image, ctx.Err())
	}
	// The output ends with the container; bounded by ctx (see stop).
	if err := <-copied; err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return hostkit.Result{}, fmt.Errorf("container: execute %s: reading its output: %w", image, err)
	}
	return hostkit.Result{Status: status, Stdout: stdout.String(), Stderr: stderr.String()}, nil
}

// Sync lists the hosts this instance holds on its engine for user (""
// means the local user): containers labelled with that user and this
// instance, one-shot containers excepted. Records have the shape
// Checkout's have; the SSH block is rebuilt from the published port, the key
// file (when still present) and the host key read through the engine, and
// the owner block (state ready, run, machine, test, pid, start time, boot
// id) from the labels Checkout set.
func (p *Provider) Sync(ctx context.Context, user string) (_ []*inventory.Record, err error) {
	defer p.tidy(&err)
	if user == "" {
		user = localUser()
	}
	cctx, cancel := p.callCtx(ctx)
	res, err := p.eng.cli.ContainerList(cctx, client.ContainerListOptions{All: true, Filters: client.Filters{}.Add("label", LabelUser+"="+user)})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("container: sync: list containers on %s: %w", p.eng.uri, err)
	}
	var recs []*inventory.Record
	for _, c := range res.Items {
		if c.Labels[LabelUser] != user || c.Labels[LabelInstance] != p.cfg.Instance || c.Labels[LabelOneShot] == "true" {
			continue
		}
		id := c.Labels[LabelID]
		if id == "" || !validID.MatchString(id) {
			continue
		}
		cctx, cancel := p.callCtx(ctx)
		ins, err := p.eng.cli.ContainerInspect(cctx, c.ID, client.ContainerInspectOptions{})
		cancel()
		if err != nil {
			continue // removed meanwhile
		}
		var args map[string]any
		if j := c.Labels[LabelArgs]; j != "" {
			_ = json.Unmarshal([]byte(j), &args)
		}
		rec := p.record(id, ins.Container, args)
		ownerFromLabels(rec.Broker, c.Labels)
		p.syncSSH(ctx, rec, ins.Container, c.Labels[LabelTransport])
		if ins.Container.State != nil && ins.Container.State.StartedAt != "" {
			if t, err := time.Parse(time.RFC3339Nano, ins.Container.State.StartedAt); err == nil {
				rec.Broker.CheckedOut = t.UTC().Truncate(time.Second)
			}
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// syncSSH rebuilds the SSH block of a synced record (and the data's
// transport) from the container: by the transport its label names (none
// on containers of older versions: SSH on the published port 22, if any),
// the key file when it is still present and the host key read through the
// engine.
func (p *Provider) syncSSH(ctx context.Context, rec *inventory.Record, c container.InspectResponse, transport string) {
	running := c.State != nil && c.State.Running
	port := publishedPort(c, sshPort)
	var s *inventory.SSH
	switch {
	case transport == TransportStream:
		s = &inventory.SSH{Transport: TransportStream, User: p.sshUser()}
		if running {
			hk, sshd, err := p.readSSHD(ctx, c.ID)
			if errors.Is(err, errNoSSHD) {
				// Checkout found no sshd: driven through the engine.
				rec.Broker.Data["transport"] = TransportExec
				return
			}
			if err == nil {
				s.HostKey = hk
				rec.Broker.Data["sshd"] = sshd
				s.ProxyCommand = p.proxyCommand(c.ID, sshd)
			}
		}
		if port != 0 {
			s.Host, s.Port = "127.0.0.1", port
		}
	case port != 0:
		s = &inventory.SSH{Host: "127.0.0.1", Port: port, User: p.sshUser()}
		if transport == TransportTCP {
			s.Transport = TransportTCP
		}
		if running {
			if hk, _, err := p.readSSHD(ctx, c.ID); err == nil {
				s.HostKey = hk
			}
		}
	default:
		rec.Broker.Data["transport"] = TransportExec
		return
	}
	if kf := filepath.Join(p.keyDir(rec.ID()), "client_key"); fileExists(kf) {
		s.KeyFile = kf
	}
	rec.Broker.Data["transport"] = firstNonEmpty(s.Transport, TransportTCP)
	rec.Broker.SSH = s
}

// ownerFromLabels fills a synced record's owner, test and state from the
// container's labels. A container of a broker run is in use by that run
// (ready); its owner is dead, and the host stale, once the labelled process
// is gone.
func ownerFromLabels(m *inventory.Meta, labels map[string]string) {
	run := labels[LabelRun]
	if run == "" {
		return
	}
	m.State = inventory.StateReady
	m.Test = labels[LabelTest]
	m.Owner = inventory.Owner{Run: run, Machine: labels[LabelMachine], BootID: labels[LabelBootID]}
	if pid, err := strconv.Atoi(labels[LabelPID]); err == nil && pid > 0 {
		m.Owner.PID = pid
	}
	if st, err := strconv.ParseUint(labels[LabelStarted], 10, 64); err == nil {
		m.Owner.Started = st
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Describe lists the engine's tagged images (topic ""), or describes one
// image (topic = its name): exposed ports, command, whether it runs sshd.
func (p *Provider) Describe(ctx context.Context, topic string) (_ string, err error) {
	defer p.tidy(&err)
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	var b strings.Builder
	if topic == "" {
		res, err := p.eng.cli.ImageList(cctx, client.ImageListOptions{})
		if err != nil {
			return "", fmt.Errorf("container: list images on %s: %w", p.eng.uri, err)
		}
		var tags []string
		for _, img := range res.Items {
			for _, t := range img.RepoTags {
				if t != "<none>:<none>" {
					tags = append(tags, t)
				}
			}
		}
		sort.Strings(tags)
		fmt.Fprintf(&b, "Container provider (engine %s)\n", p.eng.uri)
		fmt.Fprintf(&b, "Arguments: container_host (image to run as a host), container_app (image for execute),\n")
		fmt.Fprintf(&b, "  ports, env, command, volumes, network, name, auto_map_ports, ssh, pull_policy\n")
		fmt.Fprintf(&b, "Images:\n")
		for _, t := range tags {
			fmt.Fprintf(&b, "  %s\n", t)
		}
		return b.String(), nil
	}
	img, err := p.eng.cli.ImageInspect(cctx, topic)
	if err != nil {
		return "", imageError(topic, p.eng.uri, err)
	}
	fmt.Fprintf(&b, "Image %s\n", topic)
	fmt.Fprintf(&b, "  tags: %s\n", strings.Join(img.RepoTags, ", "))
	fmt.Fprintf(&b, "  size: %d bytes\n", img.Size)
	if img.Config != nil {
		var ports []string
		for k := range img.Config.ExposedPorts {
			ports = append(ports, k)
		}
		sort.Strings(ports)
		_, ssh := img.Config.ExposedPorts[sshPort]
		fmt.Fprintf(&b, "  exposed ports: %s\n", strings.Join(ports, " "))
		fmt.Fprintf(&b, "  entrypoint: %q\n  cmd: %q\n", img.Config.Entrypoint, img.Config.Cmd)
		fmt.Fprintf(&b, "  ssh: %v\n", ssh)
	}
	return b.String(), nil
}
