package app_test

import (
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/jsonkey"
	"github.com/master-controller/mc/internal/testutil"
)

// TestLogKeysOnce runs a session's whole life through the controller and
// checks that no JSON log line holds a key twice: the replica is added once,
// by the composition root, and by no layer under it again.
func TestLogKeysOnce(t *testing.T) {
	tm := startMain(t, nil)
	var c created
	if code := tm.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": "alice", "provider": "demo"}, &c); code != 201 {
		t.Fatalf("create: status %d", code)
	}
	testutil.WaitState(t, tm.Store, c.Session.ID, mc.StateReady, 30*time.Second)
	if code := tm.api.Do(t, "POST", "/api/v1/sessions/"+c.Session.ID+"/cancel", nil, nil); code != 200 {
		t.Fatalf("cancel: status %d", code)
	}
	tm.api.Do(t, "GET", "/api/v1/nothing", nil, nil)

	lines, http := 0, 0
	for line := range strings.Lines(tm.logs.String()) {
		lines++
		if strings.Contains(line, `"msg":"http request"`) {
			http++
		}
		if k, dup := jsonkey.Duplicate([]byte(line)); dup {
			t.Errorf("log line holds %q twice: %s", k, line)
		}
		if !strings.Contains(line, `"replica":"test"`) {
			t.Errorf("log line without the replica: %s", line)
		}
	}
	if http < 3 {
		t.Errorf("got %d access log lines of %d lines, want at least 3", http, lines)
	}
}
