package app_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/master-controller/mc/internal/testutil"
)

// TestMetricsAndReadyzExposure checks what an unauthenticated client sees:
// /metrics needs the API key unless it is on MC_METRICS_LISTEN, and /readyz
// gives its checks' details only to a caller with the key.
func TestMetricsAndReadyzExposure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	get := func(base, path, key string) (int, string) {
		t.Helper()
		code, body := testutil.Request(ctx, t, "GET", base, path, key, nil)
		return code, string(body)
	}

	t.Run("on the main address", func(t *testing.T) {
		tm := startMain(t, nil)
		if code, _ := get(tm.URL, "/metrics", ""); code != 401 {
			t.Errorf("/metrics without a key: got %d, want 401", code)
		}
		if code, body := get(tm.URL, "/metrics", tm.api.Key); code != 200 || !strings.Contains(body, "process_open_fds") {
			t.Errorf("/metrics with the key: got %d, want 200 with process_open_fds", code)
		}
		code, body := get(tm.URL, "/readyz", "")
		var r struct {
			Status string            `json:"status"`
			Checks map[string]string `json:"checks"`
		}
		if err := json.Unmarshal([]byte(body), &r); err != nil || code != 200 || r.Status != "ok" || r.Checks != nil {
			t.Errorf("/readyz without a key: got %d %s, want 200 with the status only", code, body)
		}
		code, body = get(tm.URL, "/readyz", tm.api.Key)
		if err := json.Unmarshal([]byte(body), &r); err != nil || code != 200 || r.Checks["store"] != "ok" {
			t.Errorf("/readyz with the key: got %d %s, want the checks", code, body)
		}
	})
	t.Run("on MC_METRICS_LISTEN", func(t *testing.T) {
		tm := startMain(t, map[string]string{"MC_METRICS_LISTEN": "127.0.0.1:0"})
		if tm.MetricsURL == "" || tm.MetricsURL == tm.URL {
			t.Fatalf("got metrics URL %q, want an address of its own", tm.MetricsURL)
		}
		if code, body := get(tm.MetricsURL, "/metrics", ""); code != 200 || !strings.Contains(body, "mc_http_connections") {
			t.Errorf("/metrics on its own address: got %d, want 200 without a key", code)
		}
		if code, _ := get(tm.MetricsURL, "/readyz", ""); code != 404 {
			t.Errorf("/readyz on the metrics address: got %d, want 404", code)
		}
		if code, _ := get(tm.URL, "/metrics", tm.api.Key); code != 404 {
			t.Errorf("/metrics on the main address: got %d, want 404 (it is on the metrics address only)", code)
		}
	})
}
