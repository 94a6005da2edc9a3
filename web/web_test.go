package web_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/web"
)

// newHandler returns the pages served from this directory's node_modules.
// Without them (no `npm ci --prefix web` yet) the test is skipped, except
// under CI=true.
func newHandler(tb testing.TB, cfg web.Config) http.Handler {
	tb.Helper()
	if cfg.Dir == "" {
		cfg.Dir = "."
	}
	h, err := web.New(cfg)
	if err != nil {
		if _, statErr := os.Stat(filepath.Join(cfg.Dir, "node_modules")); statErr != nil {
			testutil.SkipOrFail(tb, "web: node_modules missing; run `npm ci --prefix web` (%v)", err)
		}
		tb.Fatalf("web.New: %v", err)
	}
	return h
}

func TestNewRefusesMissingOrWrongNoVNC(t *testing.T) {
	wrong := t.TempDir()
	pkg := filepath.Join(wrong, "node_modules", "@novnc", "novnc")
	if err := os.MkdirAll(filepath.Join(pkg, "core"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pkg, "package.json"), []byte(`{"version":"0.0.1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	noCore := t.TempDir()
	pkg2 := filepath.Join(noCore, "node_modules", "@novnc", "novnc")
	if err := os.MkdirAll(pkg2, 0o755); err != nil {
		t.Fatal(err)
	}
	pinned := pinnedVersion(t)
	if err := os.WriteFile(filepath.Join(pkg2, "package.json"), []byte(`{"version":"`+pinned+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		cfg  web.Config
		want []string
	}{
		{"missing", web.Config{Dir: filepath.Join(t.TempDir(), "web")}, []string{"not installed", "npm ci --prefix "}},
		{"wrong version", web.Config{Dir: wrong}, []string{"0.0.1", "pins " + pinned, "npm ci --prefix " + wrong}},
		{"no core", web.Config{Dir: noCore}, []string{"core/rfb.js", "npm ci --prefix " + noCore}},
		{"bad frame ancestor", web.Config{Dir: ".", FrameAncestors: []string{"https://a.example; script-src *"}}, []string{"frame ancestor"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := web.New(tt.cfg)
			if err == nil {
				t.Fatalf("New: got handler %T, want an error", h)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New: got error %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func pinnedVersion(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile("package.json")
	if err != nil {
		tb.Fatal(err)
	}
	const key = `"@novnc/novnc": "`
	_, rest, ok := strings.Cut(string(b), key)
	if !ok {
		tb.Fatalf("package.json does not pin %s", web.NoVNCPackage)
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

func TestHeaders(t *testing.T) {
	h := newHandler(t, web.Config{})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	embedded := httptest.NewServer(newHandler(t, web.Config{FrameAncestors: []string{"'self'", "https://app.example.com"}}))
	t.Cleanup(embedded.Close)
	id := mc.NewID()
	v := pinnedVersion(t)

	tests := []struct {
		name       string
		base       string
		path       string
		status     int
		ctype      string
		cache      string
		csp        []string // substrings of Content-Security-Policy
		bodyHas    string
		bodyHasNot string
	}{
		{name: "viewer", base: srv.URL, path: "/sessions/" + id + "/view?token=v1.secret-token.mac", status: 200,
			ctype: "text/html", cache: "no-store",
			csp:     []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "img-src 'self' data:", "frame-ancestors *"},
			bodyHas: `data-session-id="` + id + `"`, bodyHasNot: "secret-token"},
		{name: "viewer with frame ancestors", base: embedded.URL, path: "/sessions/" + id + "/view", status: 200,
			ctype: "text/html", cache: "no-store", csp: []string{"frame-ancestors 'self' https://app.example.com"}},
		{name: "viewer bad id", base: srv.URL, path: "/sessions/not-an-id/view?token=x", status: 404},
		{name: "dashboard", base: srv.URL, path: "/", status: 200, ctype: "text/html", cache: "no-store",
			csp: []string{"frame-ancestors 'self'", "frame-src 'self'"}, bodyHas: "API key"},
		{name: "static js", base: srv.URL, path: "/static/viewer.js", status: 200, ctype: "text/javascript", cache: "no-cache"},
		{name: "static css", base: srv.URL, path: "/static/viewer.css", status: 200, ctype: "text/css", cache: "no-cache"},
		{name: "static missing", base: srv.URL, path: "/static/nope.js", status: 404},
		{name: "novnc versioned", base: srv.URL, path: "/novnc/" + v + "/core/rfb.js", status: 200,
			ctype: "text/javascript", cache: "immutable", bodyHas: "export default class RFB"},
		{name: "novnc vendor", base: srv.URL, path: "/novnc/" + v + "/vendor/pako/lib/zlib/inflate.js", status: 200, ctype: "text/javascript"},
		{name: "novnc unversioned", base: srv.URL, path: "/novnc/core/rfb.js", status: 200, ctype: "text/javascript", cache: "no-cache"},
		{name: "novnc no listing", base: srv.URL, path: "/novnc/" + v + "/core/", status: 404},
		{name: "novnc no docs", base: srv.URL, path: "/novnc/" + v + "/README.md", status: 404},
		{name: "novnc other version", base: srv.URL, path: "/novnc/0.0.1/core/rfb.js", status: 404},
		{name: "novnc traversal", base: srv.URL, path: "/novnc/" + v + "/core/../../../package.json", status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := http.Get(tt.base + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body := new(bytes.Buffer)
			if _, err := body.ReadFrom(res.Body); err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.status {
				t.Fatalf("GET %s: got status %d, want %d", tt.path, res.StatusCode, tt.status)
			}
			if got := res.Header.Get("Referrer-Policy"); got != "no-referrer" {
				t.Errorf("Referrer-Policy: got %q, want no-referrer", got)
			}
			if got := res.Header.Get("X-Frame-Options"); got != "" {
				t.Errorf("X-Frame-Options: got %q, want none (the viewer embeds in iframes)", got)
			}
			if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options: got %q, want nosniff", got)
			}
			if tt.status != 200 {
				return
			}
			if got := res.Header.Get("Content-Type"); !strings.HasPrefix(got, tt.ctype) {
				t.Errorf("Content-Type: got %q, want %s…", got, tt.ctype)
			}
			if got := res.Header.Get("Cache-Control"); !strings.Contains(got, tt.cache) {
				t.Errorf("Cache-Control: got %q, want it to contain %q", got, tt.cache)
			}
			csp := res.Header.Get("Content-Security-Policy")
			for _, c := range tt.csp {
				if !strings.Contains(csp, c) {
					t.Errorf("Content-Security-Policy: got %q, want it to contain %q", csp, c)
				}
			}
			if tt.bodyHas != "" && !strings.Contains(body.String(), tt.bodyHas) {
				t.Errorf("body: want it to contain %q", tt.bodyHas)
			}
			if tt.bodyHasNot != "" && strings.Contains(body.String(), tt.bodyHasNot) {
				t.Errorf("body: contains %q, want not", tt.bodyHasNot)
			}
		})
	}
}

// TestStaticVersionedURLs checks that the pages reference their own assets
// with content hashes, which are then cached for good.
func TestStaticVersionedURLs(t *testing.T) {
	srv := httptest.NewServer(newHandler(t, web.Config{}))
	t.Cleanup(srv.Close)
	res, err := http.Get(srv.URL + "/sessions/" + mc.NewID() + "/view")
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	if _, err := body.ReadFrom(res.Body); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	_, rest, ok := strings.Cut(body.String(), `src="../../static/viewer.js?v=`)
	if !ok {
		t.Fatalf("viewer page does not load ../../static/viewer.js?v=…")
	}
	v, _, _ := strings.Cut(rest, `"`)
	res, err = http.Get(srv.URL + "/static/viewer.js?v=" + v)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Cache-Control"); !strings.Contains(got, "immutable") {
		t.Errorf("Cache-Control of the versioned URL: got %q, want immutable", got)
	}
	if got, want := res.Header.Get("ETag"), `"`+v+`"`; got != want {
		t.Errorf("ETag: got %s, want %s", got, want)
	}
}
