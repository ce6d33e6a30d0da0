package reaper

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/hostbroker/broker/inventory"
)

// CheckinLeft checks in the hosts a process left in t's inventory, limit at
// a time; who ("reaper watcher", "reaper sweep", "signal") starts its log
// lines. A host whose creation was asked for may still appear at the
// provider after the first pass removed its record (a create call in flight
// when the process died or was interrupted): those are checked in again, by
// id, after Grace, as are the hosts whose check-in failed and whose record
// is still there (a provider busy with a removal the dead process started,
// say). Check-in is idempotent.
func CheckinLeft(ctx context.Context, t Target, left []*inventory.Record, who string, limit int) error {
	firstErr := t.Checkin(ctx, limit, left...)
	if firstErr != nil {
		t.Logger.Error(who+": checkin", "err", firstErr)
	}
	again := creatingOnly(left)
	if firstErr != nil {
		again = append(again, stillRecorded(ctx, t.Store, left, again)...)
	}
	if len(again) == 0 {
		return firstErr
	}
	select {
	case <-time.After(Grace):
	case <-ctx.Done():
		return errors.Join(firstErr, ctx.Err())
	}
	t.Logger.Info(who+": second pass over hosts being created or not checked in", "hosts", len(again))
	if err := t.Checkin(ctx, limit, again...); err != nil {
		t.Logger.Error(who+": checkin", "err", err)
		return errors.Join(firstErr, err)
	}
	return nil
}

// stillRecorded returns the records of left that the inventory still
// holds, as it holds them, leaving out those in skip.
func stillRecorded(ctx context.Context, store *inventory.Store, left, skip []*inventory.Record) []*inventory.Record {
	recs, err := store.Load(ctx)
	if err != nil {
		return nil
	}
	var out []*inventory.Record
	for _, r := range recs {
		if slices.ContainsFunc(left, func(l *inventory.Record) bool { return inventory.Same(l, r) }) &&
			!slices.ContainsFunc(skip, func(s *inventory.Record) bool { return inventory.Same(s, r) }) {
			out = append(out, r)
		}
	}
	return out
}

// Left returns the records of the hosts owner still holds in store.
func Left(ctx context.Context, store *inventory.Store, owner inventory.Owner) ([]*inventory.Record, error) {
	recs, err := store.Load(ctx)
	return OwnedBy(recs, owner), err
}

// OwnedBy returns the records of hosts the owner process holds (whatever
// its run ids); hosts kept on purpose (for reuse or inspection) are left
// alone.
func OwnedBy(recs []*inventory.Record, owner inventory.Owner) []*inventory.Record {
	var out []*inventory.Record
	for _, r := range recs {
		if r.Broker == nil {
			continue
		}
		o := r.Broker.Owner
		if o.PID != owner.PID || o.Started != owner.Started || o.BootID != owner.BootID || o.Machine != owner.Machine {
			continue
		}
		switch r.Broker.State {
		case inventory.StateFree, inventory.StateKept:
			continue
		}
		out = append(out, r)
	}
	return out
}

func creatingOnly(recs []*inventory.Record) []*inventory.Record {
	var out []*inventory.Record
	for _, r := range recs {
		if r.Broker.State == inventory.StateCreating {
			out = append(out, r)
		}
	}
	return out
}

// Orphaned reports whether rec's host was left by a process that is
// provably dead on this machine, and is not kept on purpose: neither kept
// for a person to inspect (state kept) nor kept until a time (a pool's
// hosts kept free for reuse, and hosts kept with a keep time, are checked
// in once that time has passed, by the pool or "brokertest cleanup
// --stale"). These are the hosts the sweep checks in, and with the expired
// ones those of "brokertest cleanup --stale".
func Orphaned(rec *inventory.Record) bool {
	m := rec.Broker
	return m != nil && m.KeepUntil == nil && m.State != inventory.StateKept && m.Owner.Dead()
}
