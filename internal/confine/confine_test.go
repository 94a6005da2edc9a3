package confine

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestChromiumPolicy pins what the managed policy must close: file:// and
// internal pages, the file chooser, downloads, pop-ups; that it keeps
// DevTools usable for the agent's pipe (2 would refuse the agent); and that
// the only exception to the blocklist is chrome://sandbox (the agent's
// GET /sandbox reads it).
func TestChromiumPolicy(t *testing.T) {
	b, err := ChromiumPolicy()
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("policy is not JSON: %v", err)
	}
	strs := func(key string) []string {
		var out []string
		for _, u := range p[key].([]any) {
			out = append(out, u.(string))
		}
		return out
	}
	if got, want := strs("URLBlocklist"), []string{"file://*", "chrome://*", "devtools://*", "chrome-untrusted://*",
		"view-source:*", "chrome-extension://*", "chrome-search://*", "filesystem:*"}; !slices.Equal(got, want) {
		t.Errorf("URLBlocklist = %q, want %q", got, want)
	}
	if got, want := strs("URLAllowlist"), []string{"chrome://sandbox"}; !slices.Equal(got, want) {
		t.Errorf("URLAllowlist = %q, want %q", got, want)
	}
	for k, want := range map[string]any{
		"AllowFileSelectionDialogs": false, "DownloadRestrictions": 3.0, "DefaultPopupsSetting": 2.0,
		"DeveloperToolsAvailability": 1.0, "PrintingEnabled": false, "IncognitoModeAvailability": 1.0,
	} {
		if got := p[k]; got != want {
			t.Errorf("%s = %v, want %v", k, got, want)
		}
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(s Spec) string {
		b, _ := json.Marshal(s)
		p := filepath.Join(dir, "spec.json")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := Spec{Root: "/r", TokenFile: "/t", VNCPasswordFile: "/v", UID: 1000000, GID: 1000000,
		BrowserUID: 1000001, BrowserGID: 1000001, ReadOnlyBinds: []string{"/opt/clis"}}
	got, err := Read(write(good))
	if err != nil || got.Root != "/r" || got.BrowserUID != 1000001 || len(got.ReadOnlyBinds) != 1 {
		t.Errorf("Read(good) = %+v, %v", got, err)
	}
	for name, s := range map[string]Spec{
		"root uid": {Root: "/r", TokenFile: "/t", VNCPasswordFile: "/v", UID: 0, GID: 1},
		"no root":  {TokenFile: "/t", VNCPasswordFile: "/v", UID: 1, GID: 1},
		"no token": {Root: "/r", VNCPasswordFile: "/v", UID: 1, GID: 1},
	} {
		if _, err := Read(write(s)); err == nil || !strings.Contains(err.Error(), "required") {
			t.Errorf("Read(%s) = %v, want a refusal", name, err)
		}
	}
}
