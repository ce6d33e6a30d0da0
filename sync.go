package broker

import (
	"context"
	"fmt"
	"strings"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
)

// SyncResult says what Sync changed in the inventory.
type SyncResult struct {
	Provider string              // "Provider::instance" synced
	Added    []*inventory.Record // found at the provider, not in the inventory
	Dropped  []*inventory.Record // in the inventory, gone at the provider
	Kept     int                 // in both
}

// ParseSyncSpec splits the Python broker's "Provider[:user][::instance]".
func ParseSyncSpec(spec string) (provider, user, instance string, err error) {
	rest := spec
	if i := strings.Index(rest, "::"); i >= 0 {
		rest, instance = rest[:i], rest[i+2:]
		if instance == "" {
			return "", "", "", fmt.Errorf("broker: sync %q: empty instance after '::'", spec)
		}
	}
	provider, user, _ = strings.Cut(rest, ":")
	if provider == "" {
		return "", "", "", fmt.Errorf("broker: sync %q: no provider (want Provider[:user][::instance])", spec)
	}
	return provider, user, instance, nil
}

// Sync reconciles the inventory with what a provider instance says exists
// (spec is "Provider[:user][::instance]"): hosts it reports that the
// inventory lacks are added, and this instance's records it no longer has are
// dropped. Records of other providers or instances are never touched, and
// records still being created by a live owner are kept.
//
// With a user ("Container:jake"), only that user's records are replaced:
// those whose _brokertest.user is the user (the hosts a sync for the user
// added, and the hosts the user checked out on this machine); the hosts
// added are marked as the user's (a new _brokertest block when the
// provider's record has none). Without a user, or with AnsibleTower's
// "@ll", every record of the instance is, as in the Python broker.
func (b *Broker) Sync(ctx context.Context, spec string) (_ SyncResult, err error) {
	defer b.logFailure("sync", &err, "spec", spec)
	provName, user, instance, err := ParseSyncSpec(spec)
	if err != nil {
		return SyncResult{}, err
	}
	p, provName, instName, err := b.provider(ctx, provName, instance)
	if err != nil {
		return SyncResult{}, err
	}
	res := SyncResult{Provider: describe(provName, instName)}
	s, ok := p.(providers.Syncer)
	if !ok {
		return res, fmt.Errorf("broker: provider %s cannot sync", provName)
	}
	found, err := s.Sync(ctx, user)
	if err != nil {
		return res, fmt.Errorf("broker: sync %s: %w", res.Provider, err)
	}
	for _, r := range found {
		r.Provider, r.Instance = provName, instName
	}
	byUser := user != "" && user != "@ll"
	err = b.store.Update(ctx, func(recs []*inventory.Record) ([]*inventory.Record, error) {
		res.Added, res.Dropped, res.Kept = nil, nil, 0
		out := recs[:0:0]
		for _, rec := range recs {
			if !strings.EqualFold(rec.Provider, provName) || rec.Instance != instName && rec.Instance != "" ||
				byUser && (rec.Broker == nil || rec.Broker.User != user) {
				out = append(out, rec)
				continue
			}
			if indexOf(found, rec) >= 0 || creatingByLiveOwner(rec) {
				res.Kept++
				out = append(out, rec)
				continue
			}
			res.Dropped = append(res.Dropped, rec)
		}
		for _, f := range found {
			if indexOf(recs, f) < 0 {
				if byUser {
					f = f.Clone() // found stays as the provider said, should fn run again
					if f.Broker == nil {
						f.Broker = &inventory.Meta{ID: inventory.NewID(), State: inventory.StateReady}
					}
					f.Broker.User = user
				}
				res.Added = append(res.Added, f)
				out = append(out, f)
			}
		}
		return out, nil
	})
	if err != nil {
		return res, fmt.Errorf("broker: sync %s: %w", res.Provider, err)
	}
	return res, nil
}

// sameHost matches a provider's report with a record: by id when both have
// one, else by name and hostname (never by an empty hostname).
func sameHost(a, b *inventory.Record) bool {
	if a.ID() != "" && b.ID() != "" {
		return a.ID() == b.ID()
	}
	return a.Hostname != "" && a.Hostname == b.Hostname && a.Name == b.Name
}

func indexOf(recs []*inventory.Record, r *inventory.Record) int {
	for i, rec := range recs {
		if sameHost(rec, r) {
			return i
		}
	}
	return -1
}

func creatingByLiveOwner(rec *inventory.Record) bool {
	return rec.Broker != nil && rec.Broker.State == inventory.StateCreating && !rec.Broker.Owner.Dead()
}
