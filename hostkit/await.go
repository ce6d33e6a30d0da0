package hostkit

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// stuckAfter is how long a call given up on (its context ended) may keep
// waiting for the peer before the peer is asked whether it still answers,
// and how long it has to answer (see closeIfStuck). Host.stuckAfter,
// shorter in tests.
const stuckAfter = 10 * time.Second

// Why: x/crypto/ssh (channel opens, requests, Session.Wait) and pkg/sftp
// (every request but a few) take no context and wait for the peer's answer
// forever, so a paused host or a frozen sshd left callers blocked past
// their deadline, and Host.Close too. Each such call runs under await.

// await runs op, a call that waits for the peer at the other end of c and
// takes no context, and returns what op returns, or ctx's error as soon as
// ctx ends (op is not run when ctx is already done).
//
// An op given up on goes on aside: undo, if not nil, releases what op
// returns without error (a session, a file handle), so giving up on a call
// to a peer that answers costs the connection's other users nothing. While
// op (undo included) is still waiting, closeIfStuck closes c once the peer
// stops answering, which ends op.
//
// op must not write to memory its caller still uses once await returns:
// give it buffers of its own.
func await[T any](ctx context.Context, h *Host, c *ssh.Client, op func() (T, error), undo func(T)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	type result struct {
		v   T
		err error
	}
	const (
		running int32 = iota
		delivered
		abandoned
	)
	var state atomic.Int32
	ch := make(chan result, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		v, err := op()
		if state.CompareAndSwap(running, delivered) {
			ch <- result{v, err}
		} else if err == nil && undo != nil {
			undo(v)
		}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
	}
	if !state.CompareAndSwap(running, abandoned) {
		r := <-ch // op finished as ctx ended: its result stands
		return r.v, r.err
	}
	h.closeIfStuck(c, done)
	return zero, ctx.Err()
}

// awaitErr is await for an op that returns only an error.
func awaitErr(ctx context.Context, h *Host, c *ssh.Client, op func() error) error {
	_, err := await(ctx, h, c, func() (struct{}, error) { return struct{}{}, op() }, nil)
	return err
}

// aside runs op, a call that waits for the peer at the other end of c,
// without waiting for it, e.g. to release a handle once the caller's
// context is done; c is closed if op is stuck (see closeIfStuck).
func (h *Host) aside(c *ssh.Client, op func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		op()
	}()
	h.closeIfStuck(c, done)
}

// closeIfStuck watches a call given up on until done is closed: each
// stuckAfter that it is still waiting, the peer is asked for a keepalive,
// and c is closed when that goes unanswered for stuckAfter too. A peer that
// stops answering (a paused host, a frozen sshd) leaves no other way to end
// the calls waiting on it; the next call on h dials again. A peer that
// answers keeps its connection, and its other sessions, whatever the call
// waits for (e.g. a killed command whose children hold its output open).
func (h *Host) closeIfStuck(c *ssh.Client, done <-chan struct{}) {
	var check func()
	check = func() {
		select {
		case <-done:
			return
		default:
		}
		if h.answers(c) {
			time.AfterFunc(h.stuckAfter, check)
			return
		}
		h.log.Warn("hostkit: peer not answering, closing the ssh connection", "host", h.Hostname, "after", h.stuckAfter)
		h.forget(c) // ends the calls waiting on c, the keepalive too
	}
	time.AfterFunc(h.stuckAfter, check)
}

// answers reports whether the peer at the other end of c answers a
// keepalive within stuckAfter (sshd answers it with a failure, which will
// do).
func (h *Host) answers(c *ssh.Client) bool {
	reply := make(chan error, 1)
	go func() {
		_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
		reply <- err
	}()
	t := time.NewTimer(h.stuckAfter)
	defer t.Stop()
	select {
	case err := <-reply:
		return err == nil
	case <-t.C:
		return false
	}
}
