package agent

import "testing"

// TestIsTab: the navigation target is the window's tab, never one of
// Chromium's own hidden pages, which it lists among the page targets (a
// navigation sent to chrome://omnibox-popup.top-chrome/ is never seen).
func TestIsTab(t *testing.T) {
	for _, tt := range []struct {
		target cdpTarget
		want   bool
	}{
		{cdpTarget{Type: "page", URL: "about:blank"}, true},
		{cdpTarget{Type: "page", URL: LocalOrigin + "/demo/signin"}, true},
		{cdpTarget{Type: "page", URL: "https://auth.openai.com/oauth/authorize"}, true},
		{cdpTarget{Type: "page", URL: "chrome://omnibox-popup.top-chrome/"}, false},
		{cdpTarget{Type: "page", URL: "chrome://omnibox-popup.top-chrome/omnibox_popup_aim.html"}, false},
		{cdpTarget{Type: "page", URL: "chrome-untrusted://compose/"}, false},
		{cdpTarget{Type: "page", URL: "devtools://devtools/bundled/inspector.html"}, false},
		{cdpTarget{Type: "service_worker", URL: "https://example.test/sw.js"}, false},
		{cdpTarget{Type: "iframe", URL: "https://example.test/"}, false},
	} {
		if got := tt.target.isTab(); got != tt.want {
			t.Errorf("%s %s: got %v, want %v", tt.target.Type, tt.target.URL, got, tt.want)
		}
	}
}

// TestIsWindow: a window the kiosk closes may open on a chrome:// page (Ctrl+N
// shows chrome://newtab/), but Chromium's own hidden pages are left alone.
func TestIsWindow(t *testing.T) {
	for _, tt := range []struct {
		target cdpTarget
		want   bool
	}{
		{cdpTarget{Type: "page", URL: "chrome://newtab/"}, true},
		{cdpTarget{Type: "page", URL: ""}, true},
		{cdpTarget{Type: "page", URL: "https://example.test/popup"}, true},
		{cdpTarget{Type: "page", URL: "chrome://omnibox-popup.top-chrome/"}, false},
		{cdpTarget{Type: "worker", URL: "https://example.test/w.js"}, false},
	} {
		if got := tt.target.isWindow(); got != tt.want {
			t.Errorf("%s %q: got %v, want %v", tt.target.Type, tt.target.URL, got, tt.want)
		}
	}
}
