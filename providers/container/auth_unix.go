//go:build unix

package container

import (
	"os/exec"
	"syscall"
)

// killGroup makes cmd's cancellation kill its whole process group: a
// helper script's children (a sleep, a keychain prompt) die with it.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
