package codec

import "github.com/hostbroker/broker/internal/proclive"

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
