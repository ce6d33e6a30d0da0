package container

import (
	"bytes"
	"context"
	"fmt"
	"strings"
)

// Why temporaries: the archive API writes a file under its name as the
// bytes arrive (and removes what was there first), so an upload cut short
// (a container killed or paused past the deadline) left a truncated file
// under the destination's name. Create now sends the file under a
// temporary name beside it (hostkit.TempName) and renames it over the
// destination once complete; the archive API has no rename, so an exec of
// mv does it.

// replace renames tmp over dst in container id: mv as root (the archive
// API writes as root too), within one directory: rename(2), atomic. -T: a
// directory at dst is an error, not a place to move into. On failure tmp
// is discarded.
func (t *transport) replace(ctx context.Context, id, tmp, dst string) error {
	if err := t.run(ctx, id, "mv", "-f", "-T", "--", tmp, dst); err != nil {
		t.discard(ctx, id, tmp)
		return fmt.Errorf("rename %s to %s in container %s: %w", tmp, dst, shortID(id), t.exited(ctx, id, err))
	}
	return nil
}

// run runs cmd (no shell) as root in container id; a non-zero exit is an
// error with cmd's stderr.
func (t *transport) run(ctx context.Context, id string, cmd ...string) error {
	var stderr bytes.Buffer
	status, err := t.p.eng.exec(ctx, id, execRequest{Cmd: cmd, User: "0", Stderr: &stderr})
	if err != nil {
		return err
	}
	if status != 0 {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return fmt.Errorf("%s: exit status %d: %s", cmd[0], status, msg)
		}
		return fmt.Errorf("%s: exit status %d", cmd[0], status)
	}
	return nil
}

// discard removes tmp, the temporary of a write that failed: now when it
// can (also once ctx is done, for a moment), and again before the
// transport's next command or write, since the engine may still be
// writing it (a copy cut short) or not run rm yet (a paused or stopped
// container).
func (t *transport) discard(ctx context.Context, id, tmp string) {
	t.leftMu.Lock()
	t.leftovers = append(t.leftovers, tmp)
	t.leftMu.Unlock()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(killWait, t.p.settings.callTimeout))
	defer cancel()
	if err := t.run(rctx, id, "rm", "-f", "--", tmp); err != nil {
		t.p.log.Debug("container: temporary file of a failed write not removed yet", "container", shortID(id), "path", tmp, "error", err)
	}
}

// sweep removes the temporaries of earlier failed writes; those it cannot
// remove yet stay listed.
func (t *transport) sweep(ctx context.Context, id string) {
	t.leftMu.Lock()
	left := t.leftovers
	t.leftovers = nil
	t.leftMu.Unlock()
	if len(left) == 0 {
		return
	}
	if err := t.run(ctx, id, append([]string{"rm", "-f", "--"}, left...)...); err != nil {
		t.leftMu.Lock()
		t.leftovers = append(t.leftovers, left...)
		t.leftMu.Unlock()
	}
}
