package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// The errors of 40 hosts that differ only in ids make one line with the
// count and the hosts; other errors a line each; every error stays
// reachable with errors.Is; a huge error is cut to one bounded line.
func TestJoinCheckoutErrors(t *testing.T) {
	errs := make([]error, 40)
	for i := range errs {
		id := fmt.Sprintf("%08x", 0x58fea6dd+i*7919)
		cid := strings.Repeat(id, 8)
		errs[i] = fmt.Errorf("container: start root_%s (image %q): POST /v1.41/containers/%s/start on unix:///var/run/docker.sock: %w",
			id, "brokertest/debian-sshd:12", cid, context.DeadlineExceeded)
	}
	errs[11] = fmt.Errorf("container: root_e7e40072: sshd -i in container 0e49c63bcac5: %w", context.DeadlineExceeded)
	errs[30] = nil // succeeded
	errs[39] = errors.New(strings.Repeat("x", 8000) + "\nsecond line")
	err := joinCheckoutErrors(errs, errors.New("checking in the hosts that succeeded: boom"))
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4:\n%v", len(lines), err)
	}
	for i, want := range []string{
		"37 of 40 hosts (1-11, 13-30, 32-39): container: start root_58fea6dd",
		"host 12 of 40: container: root_e7e40072: sshd -i",
		"host 40 of 40: xxx",
		"checking in the hosts that succeeded: boom",
	} {
		if !strings.HasPrefix(lines[i], want) {
			t.Errorf("line %d: %.120s…, want it to start with %q", i+1, lines[i], want)
		}
	}
	if len(lines[2]) > maxErrorLine+100 || !strings.Contains(lines[2], "bytes more") {
		t.Errorf("the 8 KB error's line: %d bytes, want it cut to about %d", len(lines[2]), maxErrorLine)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Error("errors.Is(err, context.DeadlineExceeded) = false")
	}
	if joinCheckoutErrors(make([]error, 3), nil) != nil {
		t.Error("no error joined to a non-nil error")
	}
}
