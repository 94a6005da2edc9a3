package app

import (
	"maps"
	"testing"
)

func TestPoolTargets(t *testing.T) {
	for _, tt := range []struct {
		driver, pool string
		file         map[string]int
		want         map[string]int
	}{
		{"local", "", nil, map[string]int{"demo": 1}},
		{"fake", "", nil, map[string]int{}},
		{"local", "demo=0", nil, map[string]int{}},
		{"local", "", map[string]int{"claude_code": 3}, map[string]int{"demo": 1, "claude_code": 3}},
		{"local", "claude_code=4, demo=2", map[string]int{"claude_code": 3}, map[string]int{"demo": 2, "claude_code": 4}},
	} {
		c := Config{Driver: tt.driver, Pool: tt.pool}
		if got := c.PoolTargets(tt.file); !maps.Equal(got, tt.want) {
			t.Errorf("driver %s, MC_POOL %q, file %v: got %v, want %v", tt.driver, tt.pool, tt.file, got, tt.want)
		}
	}
	for _, bad := range []string{"demo", "demo=x", "demo=-1", "=2", "demo=1,demo=2"} {
		if _, err := ParsePool(bad); err == nil {
			t.Errorf("ParsePool(%q) accepted", bad)
		}
	}
}
