package providers_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker/providers"
)

func TestSeconds(t *testing.T) {
	for _, c := range []struct {
		in   any
		want time.Duration
	}{
		{60, time.Minute}, {int64(2), 2 * time.Second}, {uint64(3), 3 * time.Second},
		{0.25, 250 * time.Millisecond}, {" 1.5 ", 1500 * time.Millisecond},
	} {
		got, err := providers.Seconds(c.in)
		require.NoError(t, err, "%v", c.in)
		assert.Equal(t, c.want, got, "%v", c.in)
	}
	for _, bad := range []any{0, -1, "ten", "", true, nil, []any{1}, math.NaN(), math.Inf(1), 1e12} {
		_, err := providers.Seconds(bad)
		assert.Error(t, err, "%v", bad)
	}
	_, err := providers.Seconds("ten")
	assert.ErrorContains(t, err, `"ten"`)
}

func TestSetting(t *testing.T) {
	m := map[string]any{"Base_URL": "u", "token": nil, "TIMEOUT": 3}
	v, k, ok := providers.Setting(m, "base_url")
	assert.True(t, ok)
	assert.Equal(t, "u", v)
	assert.Equal(t, "Base_URL", k, "the key as written, for error messages")
	_, _, ok = providers.Setting(m, "token")
	assert.False(t, ok, "a null value is not set")
	v, k, ok = providers.Setting(m, "call_timeout", "timeout")
	assert.True(t, ok)
	assert.Equal(t, 3, v)
	assert.Equal(t, "TIMEOUT", k, "the first key set wins")
	_, _, ok = providers.Setting(m, "missing")
	assert.False(t, ok)
}
