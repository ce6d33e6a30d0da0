package container

import (
	"log/slog"

	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
)

// EngineTransport is the transport Connect gives a host without sshd.
func (p *Provider) EngineTransport(rec *inventory.Record) hostkit.Transport { return p.transport(rec) }

// Streams is how many exec streams (checkouts' and dials') p has opened.
func (p *Provider) Streams() int64 { return p.streams.Load() }

// SetLogger replaces p's logger.
func (p *Provider) SetLogger(l *slog.Logger) { p.log = l }
