package filter

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/hostbroker/broker/inventory"
)

// An expression reads _brokertest's fields without building the block
// (Meta.Field); it gives what it gives with the block built first (the
// path it takes for a value only Meta.Map knows).
func TestBrokerFieldAsBuiltBlock(t *testing.T) {
	keep := time.Date(2026, 11, 30, 10, 0, 0, 0, time.FixedZone("", -7200))
	metas := []*inventory.Meta{
		{},
		{ID: "a", State: inventory.StateReady, Owner: inventory.Owner{Run: "r", PID: 42, Started: math.MaxUint64, BootID: "b", Machine: "m"}},
		{ID: "b", KeepUntil: &keep, SSH: &inventory.SSH{Host: "h", Port: 2222, Insecure: true}, Data: map[string]any{"x": 1, "y": []any{"x", nil, math.NaN()}}},
		{ID: "c", Data: map[string]any{"x": map[string]any{"x": time.Date(1999, 1, 2, 3, 4, 5, 500000000, time.UTC)}, "n": uint64(math.MaxUint64), "f": math.Copysign(0, -1)}},
		{ID: "d", Data: map[string]any{"x": []string{"only", "yaml.v3", "writes", "this"}, "i32": int32(7)}},
		{ID: "e", State: "", Test: "TestX/y", RequestKey: "k", Data: map[string]any{}},
	}
	for _, m := range metas {
		r := &inventory.Record{Hostname: "h.example.com", Broker: m}
		for _, src := range []string{
			`@inv._brokertest.state == "ready"`, `@inv._brokertest.owner.pid > 10`, `@inv._brokertest.nope == None`,
			`"x" in @inv._brokertest.data`, `@inv._brokertest.data.x`, `@inv._brokertest.keep_until == None`,
			`@inv._brokertest.ssh.port == 2222`, `@inv._brokertest.data.n > 5`, `@inv._brokertest.owner.started > 0`,
		} {
			f, err := Parse(src)
			if err != nil {
				t.Fatal(err)
			}
			st := f.stages[0]
			got, gotErr := st.cond.eval(&env{rec: r})
			e := &env{rec: r}
			e.bm, _ = m.Map() // the block built first
			want, wantErr := st.cond.eval(e)
			if !reflect.DeepEqual(got, want) || (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("%s on %+v: %v %v, want %v %v", src, m, got, gotErr, want, wantErr)
			}
		}
	}
}
