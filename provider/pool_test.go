package provider_test

import (
	"maps"
	"testing"

	"github.com/master-controller/mc/provider"
)

func TestPoolSetting(t *testing.T) {
	r, err := provider.Parse([]byte(`{"providers": [{"name": "demo", "pool": 3}, {"name": "codex", "pool": 0}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Pools(), map[string]int{"demo": 3, "codex": 0}; !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := provider.New().Pools(); len(got) != 0 {
		t.Errorf("built-ins set pools %v, want none", got)
	}
	if _, err := provider.Parse([]byte(`{"providers": [{"name": "demo", "pool": -1}]}`)); err == nil {
		t.Error("a negative pool was accepted")
	}
}
