package inventory

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/hostbroker/broker/internal/proclive"
)

// NewID returns a new record id: 12 random hex digits.
func NewID() string { return randomHex(6) }

// NewRunID returns a new run id: 16 random hex digits.
func NewRunID() string { return randomHex(8) }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("inventory: crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// CurrentOwner describes this process as the owner of run.
func CurrentOwner(run string) Owner {
	p := proclive.Self()
	return Owner{Run: run, PID: p.PID, Started: p.Started, BootID: p.BootID, Machine: p.Machine}
}
