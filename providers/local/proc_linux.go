//go:build linux

package local

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// killMarked kills every process whose environment carries this host's
// marker (markerVar=id): the commands of a host and everything they started,
// even those that left its process groups (setsid daemons, job-control
// groups) or whose server ran in a process that has died. It repeats while
// it finds some, since a dying shell may still fork. It returns how many it
// killed.
func killMarked(id string) int {
	want := []byte(markerVar + "=" + id)
	self := os.Getpid()
	total := 0
	for range 5 {
		n := 0
		ents, err := os.ReadDir("/proc")
		if err != nil {
			return total
		}
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
			if err != nil || len(env) == 0 {
				continue
			}
			for kv := range bytes.SplitSeq(env, []byte{0}) {
				if bytes.Equal(kv, want) {
					if syscall.Kill(pid, syscall.SIGKILL) == nil {
						n++
					}
					break
				}
			}
		}
		total += n
		if n == 0 {
			break
		}
	}
	return total
}

// groupAttr runs a command in a process group of its own, so that the whole
// group can be killed; the leader is killed too if this process dies
// (Pdeathsig), and its other members are swept by their marker.
func groupAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// ttyAttr runs a command as the leader of a new session whose controlling
// terminal is its standard input (a pty); the session id is its process
// group id, so the group can be killed alike.
func ttyAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Pdeathsig: syscall.SIGKILL}
}
