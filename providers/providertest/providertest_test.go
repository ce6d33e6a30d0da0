package providertest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/providers"
	"github.com/hostbroker/broker/providers/local"
	"github.com/hostbroker/broker/providers/providertest"
)

// broken is the Local provider with one duty of the contract dropped.
type broken struct {
	*local.Provider
	needsName    bool // Checkin ignores records without a name (intent records)
	pointerData  bool // Progress gets a pointer
	leakPassword bool // the record holds a secret
}

func (b *broken) Checkout(ctx context.Context, req providers.CheckoutRequest) (providers.CheckoutResult, error) {
	if b.pointerData && req.Progress != nil {
		n := 1
		req.Progress(map[string]any{"n": &n})
	}
	res, err := b.Provider.Checkout(ctx, req)
	if err == nil && b.leakPassword {
		res.Data["password"] = "hunter2-secret"
	}
	return res, err
}

func (b *broken) Checkin(ctx context.Context, rec *inventory.Record) error {
	if b.needsName && rec.Name == "" {
		return nil
	}
	return b.Provider.Checkin(ctx, rec)
}

// dupDriver lists an argument key twice and accepts any setting.
type dupDriver struct{ local.Driver }

func (dupDriver) ArgKeys() []string { return []string{"local", "local"} }

// Check passes a provider that keeps the contract, and names the check
// that each broken duty fails.
func TestCheckFindsBreaches(t *testing.T) {
	cfg := providers.Config{Provider: local.Name, Instance: "t"}
	opts := providertest.Options{
		Args:               map[string]any{"local": true},
		Driver:             local.Driver{},
		BadSettings:        map[string]any{"shell": "/no/such/shell"},
		BadSettingsMention: "/no/such/shell",
		Secrets:            []string{"hunter2-secret"},
		Timeout:            time.Minute,
	}
	open := func(mod func(*broken)) func() (providers.Provider, error) {
		return func() (providers.Provider, error) {
			c := cfg
			c.Dir = t.TempDir()
			p, err := local.Open(c)
			if err != nil || mod == nil {
				return p, err
			}
			b := &broken{Provider: p}
			mod(b)
			return b, nil
		}
	}
	opts.Config = cfg
	opts.Config.Dir = t.TempDir()
	if err := providertest.Check(t.Context(), open(nil), opts); err != nil {
		t.Fatalf("the Local provider fails: %v", err)
	}
	for _, c := range []struct {
		name string
		mod  func(*broken)
		want []string
	}{
		{"intent record ignored", func(b *broken) { b.needsName = true }, []string{"CheckinFromIntentRecord: after Checkin of the intent record alone"}},
		{"pointer progress", func(b *broken) { b.pointerData = true }, []string{"CheckoutReachable: provider gave Progress data that is not plain: n: a *int"}},
		{"secret in record", func(b *broken) { b.leakPassword = true }, []string{"CheckoutReachable: the record holds a secret (hun…)"}},
	} {
		err := providertest.Check(t.Context(), open(c.mod), opts)
		if err == nil {
			t.Errorf("%s: Check passed", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error does not mention %q:\n%v", c.name, w, err)
			}
		}
		if strings.Contains(err.Error(), "hunter2-secret") {
			t.Errorf("%s: the error shows the secret", c.name)
		}
	}
	opts.Driver = dupDriver{}
	opts.BadSettings = nil
	err := providertest.Check(t.Context(), open(nil), opts)
	if err == nil || !strings.Contains(err.Error(), `Driver: ArgKeys lists "local" twice`) {
		t.Errorf("duplicate argument keys: %v", err)
	}
}
