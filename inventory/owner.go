package inventory

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

var (
	machineOnce sync.Once
	machineName string
	bootID      string
)

func machine() (name, boot string) {
	machineOnce.Do(func() {
		machineName, _ = os.Hostname()
		if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
			bootID = strings.TrimSpace(string(b))
		}
	})
	return machineName, bootID
}

// CurrentOwner describes this process as the owner of run.
func CurrentOwner(run string) Owner {
	name, boot := machine()
	pid := os.Getpid()
	started, _ := ProcessStart(pid)
	return Owner{Run: run, PID: pid, Started: started, BootID: boot, Machine: name}
}

// ProcessStart returns the start time of process pid in clock ticks since
// boot (field 22 of /proc/PID/stat), which tells a live process from a later
// one that reused its pid.
func ProcessStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("inventory: parse /proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("inventory: parse /proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// Local reports whether the owner ran on this machine in this boot: only
// then can its death be proven.
func (o Owner) Local() bool {
	name, boot := machine()
	if o.Machine != name || o.PID <= 0 {
		return false
	}
	return o.BootID == "" || boot == "" || o.BootID == boot
}

// Dead reports whether the owner is provably dead: it ran on this machine
// and either the machine rebooted since, or its pid is gone or now belongs to
// a process with another start time. Owners on other machines are never
// judged dead; nor is an empty owner (a record of another tool).
func (o Owner) Dead() bool {
	name, boot := machine()
	if o.Machine == "" || o.Machine != name || o.PID <= 0 {
		return false
	}
	if o.BootID != "" && boot != "" && o.BootID != boot {
		return true
	}
	started, err := ProcessStart(o.PID)
	if err != nil {
		// Gone, unless we may not see it (another pid namespace would not
		// share our boot id and machine name, so ESRCH-like is gone).
		if err := syscall.Kill(o.PID, 0); err == syscall.ESRCH {
			return true
		}
		return os.IsNotExist(err)
	}
	if o.Started != 0 && started != o.Started {
		return true
	}
	// A zombie has exited: its hosts are orphaned.
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(o.PID) + "/stat"); err == nil {
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return true
		}
	}
	return false
}
