package filter_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/inventory/filter"
)

const pythonInventory = "../../testdata/inventory/python_broker_inventory.yaml"

func TestFilter(t *testing.T) {
	recs, err := inventory.Open(pythonInventory).Load(context.Background())
	require.NoError(t, err)
	names := func(rs []*inventory.Record) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Name)
		}
		return strings.Join(out, " ")
	}
	cases := []struct{ filter, want string }{
		{"", "jake-rhel8-abc jake_4f3e2d1c sat-6.14"},
		{"hostname<example", "jake-rhel8-abc sat-6.14"},
		{"name<jake", "jake-rhel8-abc jake_4f3e2d1c"},
		{"name!<jake", "sat-6.14"},
		{"_broker_args.template{deploy-sat", "sat-6.14"},
		{"_broker_args.template!{deploy-sat", "jake-rhel8-abc jake_4f3e2d1c"},
		{"name}abc", "jake-rhel8-abc"},
		{"name!}abc", "jake_4f3e2d1c sat-6.14"},
		{"name<jake,_broker_args.provider!=RHEV", "jake_4f3e2d1c"},
		// A missing property: positive false, negated true.
		{"release=6.14", "sat-6.14"},
		{"release!=6.14", "jake-rhel8-abc jake_4f3e2d1c"},
		// Values compare as text: the float 8.6 and the string '8.6'.
		{"os_distribution_version=8.6", "jake-rhel8-abc"},
		{"_broker_facts.os_distribution_version=8.6", "jake-rhel8-abc"},
		// Members of lists, keys of maps, nested.
		{"_broker_args.tags<capsule", "sat-6.14"},
		{"_broker_args.tags<caps", ""},
		{"reported_devices.nics<eth1", "jake-rhel8-abc"},
		{"reported_devices<nics", "jake-rhel8-abc"},
		{"_broker_provider=Container", "jake_4f3e2d1c"},
		{"_broker_provider_instance{prod", "sat-6.14"},
		// A path through a scalar is missing.
		{"name.x=1", ""},
		{"name.x!=1", "jake-rhel8-abc jake_4f3e2d1c sat-6.14"},
	}
	for _, c := range cases {
		f, err := filter.Parse(c.filter)
		require.NoError(t, err, c.filter)
		assert.Equal(t, c.want, names(f.Apply(recs)), "filter %q", c.filter)
	}
}

func TestFilterOnBrokerBlock(t *testing.T) {
	recs := []*inventory.Record{
		{Hostname: "a", Broker: &inventory.Meta{ID: "1", State: inventory.StateReady, Test: "TestA/sub", Owner: inventory.Owner{PID: 42}}},
		{Hostname: "b", Broker: &inventory.Meta{ID: "2", State: inventory.StateKept}},
	}
	for src, want := range map[string]int{
		"_brokertest.state=kept":   1,
		"_brokertest.test{TestA":   1,
		"_brokertest.owner.pid=42": 1,
		"_brokertest.id!=1":        1,
	} {
		f, err := filter.Parse(src)
		require.NoError(t, err)
		assert.Len(t, f.Apply(recs), want, src)
	}
}

func TestFilterErrors(t *testing.T) {
	for src, mention := range map[string]string{
		"hostname":          `"hostname" has no condition`,
		"name<a,hostname":   `"hostname" has no condition`,
		"=x":                `"=x" has an empty property`,
		"!=x":               `"!=x" has an empty property`,
		"_broker_args..a=b": `empty part`,
	} {
		_, err := filter.Parse(src)
		require.Error(t, err, src)
		assert.Contains(t, err.Error(), mention, src)
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"", "name<test", "name<a,_broker_args.provider!=RHEV", "x{y", "x}y", "a.b.c!<d", "=", "!", ",", "a..b=c", "a!!=b"} {
		f.Add(s)
	}
	// The @inv expression form.
	for _, s := range []string{
		`"test" in @inv.hostname`,
		`@inv._broker_provider == "AnsibleTower"`,
		`@inv._broker_args.template.startswith("deploy-sat")`,
		`@inv[-1]`, `@inv[3:7]`, `@inv[:2]`, `@inv[::-2]`, `@inv[-9223372036854775808::-9223372036854775808]`,
		`"test" in @inv.name | @inv._broker_args.provider != "RHV"`,
		`not (@inv.os_distribution_version < 9.0 or @inv["release"] in ["6.14", None, True])`,
		`@inv.name.lower().strip(" x").endswith(("abc", 'c\x41\u00e9'))`,
		`1 < @inv._broker_args.cpu <= 8 and @inv.reported_devices.nics[-1] not in "eth0|eth1"`,
		`@inv.name == "unterminated`, `@inv. == 1`, `@inv.a =~ 1`, `@inv.a == 1 | name<x`, `@inv[1:2:0]`, `@inv`, `((@inv))`,
	} {
		f.Add(s)
	}
	recs, err := inventory.Open(pythonInventory).Load(context.Background())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := filter.Parse(s)
		if err != nil {
			if !strings.Contains(err.Error(), "filter term") && !strings.Contains(err.Error(), "filter expression") {
				t.Fatalf("error %q does not name the term or expression", err)
			}
			return
		}
		got, _ := flt.ApplyErr(recs)
		if len(got) > len(recs) {
			t.Fatalf("filter widened the selection")
		}
		if again := flt.Apply(recs); len(again) != len(got) {
			t.Fatalf("Apply and ApplyErr differ: %d and %d records", len(again), len(got))
		}
		for _, r := range recs {
			flt.Match(r)
		}
	})
}
