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

func (o Owner) process() proclive.Process {
	return proclive.Process{PID: o.PID, Started: o.Started, BootID: o.BootID, Machine: o.Machine}
}

// Local reports whether the owner ran on this machine in this boot: only
// then can its death be proven.
func (o Owner) Local() bool { return o.process().Local() }

// Dead reports whether the owner is provably dead: it ran on this machine
// and either the machine rebooted since, or its pid is gone or now belongs to
// a process with another start time. Owners on other machines are never
// judged dead; nor is an empty owner (a record of another tool).
func (o Owner) Dead() bool { return o.process().Dead() }
