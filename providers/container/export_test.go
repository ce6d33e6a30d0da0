package container

import (
	"github.com/hostbroker/broker/hostkit"
	"github.com/hostbroker/broker/inventory"
)

// EngineTransport is the transport Connect gives a host without sshd.
func (p *Provider) EngineTransport(rec *inventory.Record) hostkit.Transport { return p.transport(rec) }
