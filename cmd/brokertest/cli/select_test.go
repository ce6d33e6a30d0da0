package cli

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/inventory"
	"github.com/hostbroker/broker/inventory/filter"
)

const pythonInventory = "../../../testdata/inventory/python_broker_inventory.yaml"

func TestSelectRecords(t *testing.T) {
	recs, err := inventory.Open(pythonInventory).Load(context.Background())
	require.NoError(t, err)
	none, _ := filter.Parse("")
	sat, _ := filter.Parse("name{sat")

	got, err := selectRecords(recs, nil, true, none)
	require.NoError(t, err)
	assert.Len(t, got, 3)

	// The filter never widens: --all with a filter is the filtered list.
	got, err = selectRecords(recs, nil, true, sat)
	require.NoError(t, err)
	require.Len(t, got, 1)

	// Local ids index the filtered list.
	got, err = selectRecords(recs, []string{"0"}, false, sat)
	require.NoError(t, err)
	assert.Equal(t, "sat-6.14", got[0].Name)

	got, err = selectRecords(recs, []string{"dhcp-1-2.example.com", "jake_4f3e2d1c", "1"}, false, none)
	require.NoError(t, err)
	assert.Len(t, got, 2, "duplicates are selected once")

	_, err = selectRecords(recs, []string{"3"}, false, none)
	assert.ErrorContains(t, err, "local id 3 out of range")
	_, err = selectRecords(recs, []string{"nope"}, false, none)
	assert.EqualError(t, err, `no host "nope" in the inventory`)
	_, err = selectRecords(recs, []string{"nope"}, false, sat)
	assert.ErrorContains(t, err, `no host "nope"`)
	assert.ErrorContains(t, err, `name{sat`)

	// An expression filter: its list selections apply before the ids.
	ctr, err := filter.Parse(`@inv._broker_provider == "Container" | @inv[0]`)
	require.NoError(t, err)
	got, err = selectRecords(recs, nil, true, ctr)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, "jake_4f3e2d1c", got[0].Name)
	got, err = selectRecords(recs, []string{"0"}, false, ctr)
	require.NoError(t, err)
	assert.Equal(t, "jake_4f3e2d1c", got[0].Name)
	_, err = selectRecords(recs, []string{"sat-6.14"}, false, ctr)
	assert.ErrorContains(t, err, `matching filter "@inv._broker_provider == \"Container\" | @inv[0]"`)

	// A filter that fails on a record selects nothing.
	bad, err := filter.Parse(`@inv.name < 3`)
	require.NoError(t, err)
	_, err = selectRecords(recs, nil, true, bad)
	assert.ErrorContains(t, err, "not supported between str and int")
}
