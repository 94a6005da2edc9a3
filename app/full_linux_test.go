package app_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/master-controller/mc/storetest"
)

// TestDiskFullAnswers503: with the data directory on a full disk, POST and
// cancel answer 503 unavailable with reason store_full (they were 500
// internal with no reason) and /readyz fails (it said 200); with the space
// back, all three recover (issue 11, item 3).
func TestDiskFullAnswers503(t *testing.T) {
	disk := storetest.TinyDisk(t, "16m", 0, 0) // unmounted after the server stops
	tm := startMain(t, map[string]string{"MC_DATA_DIR": disk, "MC_FAKE_START_DELAY": "1h", "MC_LOG_LEVEL": "warn"})
	type answer struct {
		Session struct {
			ID string `json:"id"`
		} `json:"session"`
		Error struct {
			Code   string `json:"code"`
			Reason string `json:"reason"`
		} `json:"error"`
	}
	var live answer
	if code := tm.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": "live", "provider": "demo"}, &live); code != 201 {
		t.Fatalf("create: status %d", code)
	}
	filler := filepath.Join(disk, "filler")
	storetest.Fill(t, filler)

	// A few writes may still fit in space the database already has.
	for i := 0; ; i++ {
		var a answer
		code := tm.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": fmt.Sprint("u", i), "provider": "demo"}, &a)
		if code == 201 && i < 10000 {
			continue
		}
		if code != 503 || a.Error.Code != "unavailable" || a.Error.Reason != "store_full" {
			t.Fatalf("create on a full disk: got %d %+v, want 503 unavailable store_full", code, a.Error)
		}
		break
	}
	if code := tm.api.Do(t, "GET", "/readyz", nil, nil); code != 503 {
		t.Errorf("readyz on a full disk: got %d, want 503", code)
	}
	var a answer
	if code := tm.api.Do(t, "POST", "/api/v1/sessions/"+live.Session.ID+"/cancel", nil, &a); code != 503 || a.Error.Reason != "store_full" {
		t.Errorf("cancel on a full disk: got %d %+v, want 503 store_full", code, a.Error)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if code := tm.api.Do(t, "GET", "/readyz", nil, nil); code != 200 {
		t.Errorf("readyz with space again: got %d, want 200", code)
	}
	if code := tm.api.Do(t, "POST", "/api/v1/sessions/"+live.Session.ID+"/cancel", nil, nil); code != 200 {
		t.Errorf("cancel with space again: got %d, want 200", code)
	}
	if code := tm.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": "after", "provider": "demo"}, nil); code != 201 {
		t.Errorf("create with space again: got %d, want 201", code)
	}
}
