//go:build unix

package local

import (
	"fmt"
	"os"
	"runtime"
	"syscall"

	"github.com/creack/pty"
)

// openPTY opens a pseudo-terminal pair: the master, read and written by the
// session, and the slave, the command's terminal (named /dev/pts/N or the
// like).
//
// pty.Open leaves the master in blocking mode (its ioctls go through Fd),
// where a read holds a thread and Close does not stop it; but the session
// closes the master to stop reading output nobody will get, while a
// background process may still hold the slave. On Linux the master is
// therefore reopened pollable, as this package's own pty code opened it.
// Elsewhere it stays as pty.Open made it: kqueue is not known to poll
// every system's ptys.
func openPTY() (master, slave *os.File, err error) {
	master, slave, err = pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	if runtime.GOOS != "linux" {
		return master, slave, nil
	}
	pollable, err := reopenNonblocking(master)
	master.Close()
	if err != nil {
		slave.Close()
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	return pollable, slave, nil
}

// reopenNonblocking returns a new File, in non-blocking mode and so
// registered with the runtime's poller, for a duplicate of f's descriptor.
func reopenNonblocking(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, derr := -1, error(nil)
	// ForkLock: no command may inherit the duplicate before it is
	// close-on-exec.
	syscall.ForkLock.RLock()
	err = rc.Control(func(old uintptr) {
		if fd, derr = syscall.Dup(int(old)); derr == nil {
			syscall.CloseOnExec(fd)
		}
	})
	syscall.ForkLock.RUnlock()
	if err == nil {
		err = derr
	}
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("%s: set non-blocking: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// setWinsize sets the terminal size of the pty whose slave is f.
func setWinsize(f *os.File, cols, rows uint32) error {
	if cols == 0 || rows == 0 || cols > 0xffff || rows > 0xffff {
		return nil // unknown or absurd: keep the kernel's default
	}
	return pty.Setsize(f, &pty.Winsize{Rows: uint16(rows), Cols: uint16(cols)})
}

// resizeTerminal sets the terminal size of a session's pty by its slave's
// name, opened afresh: pty.Setsize goes through Fd, which would turn the
// session's pollable master back to blocking mode.
func resizeTerminal(name string, cols, rows uint32) error {
	f, err := os.OpenFile(name, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return setWinsize(f, cols, rows)
}
