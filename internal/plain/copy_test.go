package plain

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCopyIsDeep(t *testing.T) {
	orig := map[string]any{
		"list":  []any{1, map[string]any{"k": "v"}},
		"map":   map[string]any{"inner": []any{"a"}},
		"typed": map[string]string{"x": "y"},
		"ints":  []int{1, 2},
		"any":   map[any]any{1: []any{"z"}},
	}
	c := CopyMap(orig)
	assert.Equal(t, orig, c)

	// Changing every level of the copy leaves the original as it was.
	c["list"].([]any)[1].(map[string]any)["k"] = "changed"
	c["map"].(map[string]any)["inner"].([]any)[0] = "changed"
	c["typed"].(map[string]string)["x"] = "changed"
	c["ints"].([]int)[0] = 9
	c["any"].(map[any]any)[1].([]any)[0] = "changed"
	assert.Equal(t, "v", orig["list"].([]any)[1].(map[string]any)["k"])
	assert.Equal(t, "a", orig["map"].(map[string]any)["inner"].([]any)[0])
	assert.Equal(t, "y", orig["typed"].(map[string]string)["x"])
	assert.Equal(t, 1, orig["ints"].([]int)[0])
	assert.Equal(t, "z", orig["any"].(map[any]any)[1].([]any)[0])

	assert.Nil(t, CopyMap(nil))
	assert.Nil(t, Copy(nil))
}
