package container_test

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	pcontainer "github.com/hostbroker/broker/providers/container"
)

// BenchmarkCheckoutCheckin is the cost of one host for a test: checkout of
// debian-sshd (start; one exec installs the key, reads and pins the host
// key and becomes sshd -i), one command over SSH through that exec stream,
// check-in.
func BenchmarkCheckoutCheckin(b *testing.B) {
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			p := open(b, e, nil)
			for b.Loop() {
				benchCycle(b, p, sshdImage)
			}
		})
	}
}

// BenchmarkCheckoutCheckinBusybox is the same through the engine transport.
func BenchmarkCheckoutCheckinBusybox(b *testing.B) {
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			p := open(b, e, nil)
			for b.Loop() {
				benchCycle(b, p, busyboxImage)
			}
		})
	}
}

func benchCycle(b *testing.B, p *pcontainer.Provider, image string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := inventory.NewID()
	made, err := p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"container_host": image}})
	if err != nil {
		_ = p.Checkin(ctx, &inventory.Record{Broker: &inventory.Meta{ID: id}})
		b.Fatal(err)
	}
	rec := made.Record(id)
	h, err := p.Connect(ctx, rec)
	if err != nil {
		b.Fatal(err)
	}
	res, err := h.Execute(ctx, "echo hi")
	h.Close()
	if err != nil || res.Stdout != "hi\n" {
		b.Fatalf("Execute: %+v, %v", res, err)
	}
	if err := p.Checkin(ctx, rec); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRawEngine is the floor: create, start, one exec, remove of the
// debian-sshd image with the same client, no SSH.
func BenchmarkRawEngine(b *testing.B) { benchRaw(b, false) }

// BenchmarkRawEnginePublished is BenchmarkRawEngine with port 22 published
// on 127.0.0.1, as an SSH host reached through its published port (ports
// "22", or an sshd without inetd mode) has it: the engine's port proxy and
// forwarding rules are made at start and undone at removal.
func BenchmarkRawEnginePublished(b *testing.B) { benchRaw(b, true) }

func benchRaw(b *testing.B, publish bool) {
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			p := open(b, e, nil)
			cli := p.Client()
			cfg := &container.Config{Image: sshdImage, Labels: map[string]string{pcontainer.LabelOneShot: "true"}}
			hostCfg := &container.HostConfig{}
			if publish {
				port22 := network.MustParsePort("22/tcp")
				cfg.ExposedPorts = network.PortSet{port22: {}}
				hostCfg.PortBindings = network.PortMap{port22: {{HostIP: netip.MustParseAddr("127.0.0.1")}}}
			}
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: hostCfg})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
					b.Fatal(err)
				}
				ex, err := cli.ExecCreate(ctx, c.ID, client.ExecCreateOptions{Cmd: []string{"echo", "hi"}, AttachStdout: true, AttachStderr: true})
				if err != nil {
					b.Fatal(err)
				}
				att, err := cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
				if err != nil {
					b.Fatal(err)
				}
				var out bytes.Buffer
				_, err = stdcopy.StdCopy(&out, &out, att.Reader)
				att.Close()
				if err != nil || out.String() != "hi\n" {
					b.Fatalf("exec: %q, %v", out.String(), err)
				}
				if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
					b.Fatal(err)
				}
				cancel()
			}
		})
	}
}

// BenchmarkEngineWriteFileSmall replaces a small file on a host without
// sshd: the archive API's copy of a temporary, then an exec of mv.
func BenchmarkEngineWriteFileSmall(b *testing.B) {
	for _, e := range engines {
		b.Run(e.name, func(b *testing.B) {
			p := open(b, e, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			id := inventory.NewID()
			b.Cleanup(func() { p.Checkin(context.Background(), &inventory.Record{Broker: &inventory.Meta{ID: id}}) })
			made, err := p.Checkout(ctx, providers.CheckoutRequest{ID: id, Args: map[string]any{"container_host": busyboxImage, "command": []any{"sleep", "3600"}}})
			if err != nil {
				b.Fatal(err)
			}
			h, err := p.Connect(ctx, made.Record(id))
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			data := []byte("a small file\n")
			for b.Loop() {
				if err := h.WriteFile(ctx, "/tmp/f", data, 0o644); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
