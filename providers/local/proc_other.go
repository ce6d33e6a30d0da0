//go:build unix && !linux

package local

import "syscall"

func groupAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func ttyAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true, Setctty: true} }

// killMarked is not available without /proc: only the process groups this
// process started are killed.
func killMarked(id string) int { return 0 }
