package hostkit

// TEMPORARY skeleton: replaced by the real implementation.

import (
	"context"
	"io/fs"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/hostbroker/broker/inventory"
)

// Host is a machine reached over SSH (or a Transport).
type Host struct {
	Hostname string // the name users see
	Name     string // the provider's name for it

	cfg       Config
	rec       *inventory.Record
	transport Transport
	mu        sync.Mutex
	client    *ssh.Client
}

// New returns a host that dials cfg on first use.
func New(hostname string, cfg Config, opts ...Option) *Host {
	h := &Host{Hostname: hostname, cfg: cfg}
	for _, o := range opts {
		o(h)
	}
	return h
}

func (h *Host) Execute(ctx context.Context, cmd string, opts ...ExecOption) (Result, error) {
	panic("todo")
}
func (h *Host) ReadFile(ctx context.Context, path string) ([]byte, error) { panic("todo") }
func (h *Host) WriteFile(ctx context.Context, path string, data []byte, perm fs.FileMode) error {
	panic("todo")
}
func (h *Host) Close() error { return nil }
