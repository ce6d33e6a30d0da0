package settings_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hostbroker/broker/internal/settings"
)

// An oversized settings file is refused from its size, before it is read
// or parsed: the error names the file and the limit, and reading it costs
// next to no memory. A named pipe of more than the limit is cut off at it.
// A file just under the limit loads.
func TestOversizedFileRefused(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, settings.FileName)
	// 50 MB of a valid document: a key and a long comment, sparse on disk.
	f, err := os.Create(file)
	noErr(t, err)
	_, err = f.WriteString("ssh:\n  host_username: x\n#")
	noErr(t, err)
	noErr(t, f.Truncate(50<<20))
	noErr(t, f.Close())

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = settings.Load(settings.Options{Dir: dir, Environ: []string{}})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, settings.ErrTooLarge) {
		t.Fatalf("Load of a 50 MB file: %v, want ErrTooLarge", err)
	}
	for _, want := range []string{file, "52428800 bytes", strconv.Itoa(settings.MaxFileSize)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("a 50 MB file refused having allocated %d bytes", alloc)
	if alloc > 4<<20 {
		t.Errorf("refusing it allocated %d bytes; it must not read the file", alloc)
	}

	// Just under the limit: loads.
	head := "ssh:\n  host_username: x\n#"
	noErr(t, os.WriteFile(file, []byte(head+strings.Repeat("x", settings.MaxFileSize-len(head)-1)+"\n"), 0o600))
	s, err := settings.Load(settings.Options{Dir: dir, Environ: []string{}})
	noErr(t, err, "a file under the limit")
	eq(t, s.SSH.Username, "x")

	// A pipe has no size: what is read is bounded.
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no named pipe:", err)
	}
	go func() {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer w.Close()
		chunk := []byte(strings.Repeat("#", 64<<10) + "\n")
		for range 50 << 20 / len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return // the reader stopped at the limit
			}
		}
	}()
	_, err = settings.Load(settings.Options{Dir: dir, File: fifo, Environ: []string{}})
	if !errors.Is(err, settings.ErrTooLarge) || !strings.Contains(err.Error(), fifo) {
		t.Fatalf("Load of an endless pipe: %v, want ErrTooLarge naming it", err)
	}
}
