package app_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/master-controller/mc/gateway"
)

// TestViewerOrigin checks the wiring of the Origin check: the gateway admits
// browsers on MC_PUBLIC_URL's origin (by default the listening address, and
// then localhost too) and MC_ALLOWED_ORIGINS, and never trusts the request's
// own host.
func TestViewerOrigin(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		origin func(tm *testMain) string
		ok     bool
	}{
		{"default public URL", nil, func(tm *testMain) string { return tm.URL }, true},
		{"localhost for a loopback listener", nil, func(tm *testMain) string {
			return strings.Replace(tm.URL, "127.0.0.1", "localhost", 1)
		}, true},
		{"another site", nil, func(*testMain) string { return "http://evil.example" }, false},
		{"configured public URL", map[string]string{"MC_PUBLIC_URL": "https://mc.example.com"},
			func(*testMain) string { return "https://mc.example.com" }, true},
		{"the request's host is not the public URL", map[string]string{"MC_PUBLIC_URL": "https://mc.example.com"},
			func(tm *testMain) string { return tm.URL }, false},
		{"allow-listed", map[string]string{"MC_ALLOWED_ORIGINS": "https://app.example.org"},
			func(*testMain) string { return "https://app.example.org" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tm := startMain(t, tt.env)
			var c created
			if code := tm.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": "o", "provider": "demo"}, &c); code != 201 {
				t.Fatalf("create: status %d", code)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			u := strings.Replace(tm.URL, "http://", "ws://", 1) + "/api/v1/sessions/" + c.Session.ID + "/vnc?token=" + url.QueryEscape(c.Viewer.Token)
			h := http.Header{"Origin": {tt.origin(tm)}}
			ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: []string{"binary"}, HTTPHeader: h})
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer ws.CloseNow()
			// Admitted: the first message is the RFB banner. Refused: 4403.
			_, msg, err := ws.Read(ctx)
			if tt.ok && (err != nil || string(msg) != "RFB 003.008\n") {
				t.Fatalf("got %q, %v; want the RFB banner", msg, err)
			}
			if !tt.ok && websocket.CloseStatus(err) != gateway.CodeForbidden {
				t.Fatalf("got %q, %v; want close %d", msg, err, gateway.CodeForbidden)
			}
		})
	}
}
