package app_test

import (
	"strings"
	"testing"

	"github.com/master-controller/mc/app"
)

// TestReplicaSettings: the heartbeat and the replica timeout have defaults,
// and a timeout shorter than two heartbeats (a live replica taken for dead
// between two of its heartbeats) is refused with the setting's name.
func TestReplicaSettings(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		env  map[string]string
		want string // a problem that names it, or "" for none
	}{
		{"defaults", nil, ""},
		{"set", map[string]string{"MC_HEARTBEAT_INTERVAL": "5s", "MC_REPLICA_TIMEOUT": "20s"}, ""},
		{"timeout too short", map[string]string{"MC_HEARTBEAT_INTERVAL": "5s", "MC_REPLICA_TIMEOUT": "9s"}, "MC_REPLICA_TIMEOUT"},
		{"no heartbeat", map[string]string{"MC_HEARTBEAT_INTERVAL": "0s"}, "MC_HEARTBEAT_INTERVAL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var cfg app.Config
			problems := cfg.Flags(flagSet(), func(k string) string { return tt.env[k] })
			problems = append(problems, cfg.Validate()...)
			var found []string
			for _, p := range problems {
				if s := p; strings.Contains(s, "MC_HEARTBEAT_INTERVAL") || strings.Contains(s, "MC_REPLICA_TIMEOUT") {
					found = append(found, s)
				}
			}
			switch {
			case tt.want == "" && len(found) > 0:
				t.Errorf("problems %v, want none about the replica settings", found)
			case tt.want != "" && (len(found) != 1 || !strings.Contains(found[0], tt.want)):
				t.Errorf("problems %v, want one naming %s", found, tt.want)
			}
			if tt.name == "defaults" && cfg.Heartbeat.String() != "2s" {
				t.Errorf("default heartbeat %s, want 2s", cfg.Heartbeat)
			}
		})
	}
}
