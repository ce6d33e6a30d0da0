// Package proclive tells whether a process is alive: by pid, the process's
// start time (so that a later process that reused the pid is not taken for
// it), this machine's name and its boot id. A process can be proven dead
// only on the machine it ran on, in the boot it ran in. It reads Linux's
// /proc.
package proclive

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Process identifies a process across pid reuse and reboots.
type Process struct {
	PID     int
	Started uint64 // start time in clock ticks since boot (/proc/PID/stat field 22); 0: unknown
	BootID  string // the kernel's boot id; "": unknown
	Machine string // the host name
}

var (
	machineOnce sync.Once
	machineName string
	bootID      string
)

// Machine returns this machine's host name and boot id ("" when unknown).
func Machine() (name, boot string) {
	machineOnce.Do(func() {
		machineName, _ = os.Hostname()
		if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
			bootID = strings.TrimSpace(string(b))
		}
	})
	return machineName, bootID
}

// Self describes this process.
func Self() Process {
	name, boot := Machine()
	pid := os.Getpid()
	started, _ := Start(pid)
	return Process{PID: pid, Started: started, BootID: boot, Machine: name}
}

// Start returns the start time of process pid in clock ticks since boot
// (field 22 of /proc/PID/stat), which tells a live process from a later
// one that reused its pid.
func Start(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("proclive: parse /proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("proclive: parse /proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// Local reports whether p ran on this machine in this boot: only then can
// its death be proven.
func (p Process) Local() bool {
	name, boot := Machine()
	if p.Machine != name || p.PID <= 0 {
		return false
	}
	return p.BootID == "" || boot == "" || p.BootID == boot
}

// Dead reports whether p is provably dead: it ran on this machine and
// either the machine rebooted since, or its pid is gone, is a zombie, or
// now belongs to a process with another start time. Processes of other
// machines are never judged dead; nor is one without a machine name.
func (p Process) Dead() bool {
	name, boot := Machine()
	if p.Machine == "" || p.Machine != name || p.PID <= 0 {
		return false
	}
	if p.BootID != "" && boot != "" && p.BootID != boot {
		return true
	}
	started, err := Start(p.PID)
	if err != nil {
		// Gone, unless we may not see it (another pid namespace would not
		// share our boot id and machine name, so ESRCH-like is gone).
		if err := syscall.Kill(p.PID, 0); err == syscall.ESRCH {
			return true
		}
		return os.IsNotExist(err)
	}
	if p.Started != 0 && started != p.Started {
		return true
	}
	// A zombie has exited.
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/stat"); err == nil {
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return true
		}
	}
	return false
}
