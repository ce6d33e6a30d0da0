//go:build unix

package local

import (
	"errors"
	"io"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPTY(t *testing.T) {
	master, slave, err := openPTY()
	require.NoError(t, err)
	defer master.Close()
	defer slave.Close()

	// What the command writes to its terminal reaches the master.
	_, err = slave.Write([]byte("hi\n"))
	require.NoError(t, err)
	buf := make([]byte, 16)
	n, err := io.ReadAtLeast(master, buf, 4)
	require.NoError(t, err)
	assert.Equal(t, "hi\r\n", string(buf[:n]))

	require.NoError(t, setWinsize(slave, 100, 40))
	require.NoError(t, resizeTerminal(slave.Name(), 101, 41))
	rows, cols, err := pty.Getsize(slave)
	require.NoError(t, err)
	assert.Equal(t, [2]int{41, 101}, [2]int{rows, cols})
	require.NoError(t, setWinsize(slave, 0, 0), "an unknown size is no error")
	rows, cols, err = pty.Getsize(slave)
	require.NoError(t, err)
	assert.Equal(t, [2]int{41, 101}, [2]int{rows, cols}, "and changes nothing")
}

// The session closes the master to stop reading output nobody will get,
// while a background process may hold the terminal: the close must end
// the read, which it does only on a master the runtime polls (on one that
// pty.Open left blocking, neither a deadline nor a close ends a read).
func TestPTYMasterCloseEndsRead(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the master is pollable on Linux only")
	}
	master, slave, err := openPTY()
	require.NoError(t, err)
	defer slave.Close()

	require.NoError(t, master.SetReadDeadline(time.Now().Add(time.Millisecond)))
	require.ErrorIs(t, readEnds(t, master, func() {}), os.ErrDeadlineExceeded)
	require.NoError(t, master.SetReadDeadline(time.Time{}))

	err = readEnds(t, master, func() { require.NoError(t, master.Close()) })
	assert.True(t, errors.Is(err, os.ErrClosed), "read ended by: %v", err)
}

// readEnds reads from f while it calls do, and returns the read's error; it
// fails the test if the read has not ended a minute later.
func readEnds(t *testing.T, f *os.File, do func()) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := f.Read(make([]byte, 1))
		done <- err
	}()
	do()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("the read of the pty master did not end")
		return nil
	}
}
