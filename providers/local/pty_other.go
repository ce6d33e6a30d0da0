//go:build unix && !linux

package local

import (
	"errors"
	"os"
	"syscall"
)

func openPTY() (master, slave *os.File, err error) {
	return nil, nil, errors.New("pty: not supported on this system")
}

func setWinsize(f *os.File, cols, rows uint32) error { return nil }

func groupAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func ttyAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true, Setctty: true} }

// killMarked is not available without /proc: only the process groups this
// process started are killed.
func killMarked(id string) int { return 0 }
