package pidline

import (
	"bytes"
	"strings"
	"testing"
)

func TestWriter(t *testing.T) {
	cases := []struct {
		name    string
		writes  []string
		wantOut string
		wantPID int
	}{
		{"first line", []string{Marker + "42\nerr\n"}, "err\n", 42},
		{"split across writes", []string{"@hostbroker-e", "xec-pid 4", "2\n", "tail"}, "tail", 42},
		{"after start-up lines", []string{"stty: not a tty\n", "warning", ": x\n" + Marker + "7\nrest\n"}, "stty: not a tty\nwarning: x\nrest\n", 7},
		{"not at a line's start", []string{"x" + Marker + "9\n"}, "x" + Marker + "9\n", 0},
		{"only once", []string{Marker + "1\n" + Marker + "2\n"}, Marker + "2\n", 1},
		{"no marker", []string{"plain\n", "@host"}, "plain\n@host", 0},
		{"marker-like", []string{"@hostbroker-other\n"}, "@hostbroker-other\n", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			w := NewWriter(&out)
			for _, s := range c.writes {
				n, err := w.Write([]byte(s))
				if err != nil || n != len(s) {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
			}
			w.Flush()
			if got := out.String(); got != c.wantOut {
				t.Errorf("out = %q, want %q", got, c.wantOut)
			}
			if got := w.PID(); got != c.wantPID {
				t.Errorf("pid = %d, want %d", got, c.wantPID)
			}
			select {
			case <-w.Known():
			default:
				t.Error("Known not closed after Flush")
			}
		})
	}
}

// Past lookFor bytes the pid line is not looked for: output flows on.
func TestWriterGivesUp(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	big := strings.Repeat("x", lookFor) + "\n"
	w.Write([]byte(big))
	w.Write([]byte(Marker + "5\n"))
	select {
	case <-w.Known():
	default:
		t.Fatal("still looking after lookFor bytes")
	}
	if w.PID() != 0 || out.String() != big+Marker+"5\n" {
		t.Errorf("pid %d, out %d bytes", w.PID(), out.Len())
	}
}
