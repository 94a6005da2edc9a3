// Package web serves the pages that people see: the viewer of one session
// (noVNC connected to the gateway's WebSocket) and a minimal dashboard.
//
// The page assets (templates, JavaScript, CSS) are embedded in the binary.
// noVNC is not: it comes from the npm registry, pinned in package.json and
// package-lock.json, installed by `npm ci --prefix web` into
// web/node_modules, and served from there as plain ES modules (the published
// @novnc/novnc package ships core/ and vendor/ as ES modules, so the browser
// loads them without a bundler).
//
// Routes:
//
//	GET /                               the dashboard
//	GET /sessions/{id}/view?token=…     the viewer of one session
//	GET /static/…                       the pages' own JavaScript and CSS
//	GET /novnc/{version}/…              noVNC, immutable (what the pages use)
//	GET /novnc/…                        noVNC, revalidated on every use
//
// The viewer's token is read by the page's script from its own URL, kept in
// the tab's sessionStorage (so that a reload reconnects) and removed from
// the address bar; the server never reads, echoes or logs it. The token may
// also be given in the fragment (#token=…), which never reaches any server.
//
// The viewer opens wss://<same host>/api/v1/sessions/{id}/vnc?token=… itself
// (subprotocol "binary") and hands the WebSocket to noVNC's RFB, so that it
// sees each close frame's code and reason. It reconnects with exponential
// backoff and jitter (0.5 s doubling to 15 s, ±30 %), except after the final
// codes 1000 (signed in), 4401, 4403, 4404 and 4410; after 4409 it offers a
// "Take over" button instead. Programs read its state from
// window.mcViewer and <body data-state> (connecting, starting, connected,
// reconnecting, taken-over, signed-in, ended, error).
//
// Embedding: the viewer fills its iframe, for example
//
//	<iframe src="https://mc.example.com/sessions/ID/view?token=…"
//	        allow="clipboard-read; clipboard-write"></iframe>
//
// and posts {type: "mc-viewer", state, status, code, reason} to the parent
// window on every change of state (no token, no session id), so that the
// embedding page can react to "signed-in".
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/master-controller/mc"
)

// NoVNCPackage is the npm package that the viewer uses.
const NoVNCPackage = "@novnc/novnc"

//go:embed package.json view.html index.html static
var assets embed.FS

// Config configures the pages.
type Config struct {
	// Dir is the web directory: the one that holds package.json and, after
	// `npm ci --prefix <Dir>`, node_modules/@novnc/novnc. Default "web".
	Dir string
	// FrameAncestors are the CSP frame-ancestors sources allowed to embed the
	// viewer page in an iframe (for example "'self'",
	// "https://app.example.com"). Default "*": any http(s) page may embed the
	// viewer. That is safe enough by itself, because the viewer shows nothing
	// without a viewer token, which only the backend that created the session
	// holds; restrict it to the embedding sites when they are known (the same
	// list as the gateway's Origin allow-list is a good choice). The
	// dashboard is never embeddable by other sites (frame-ancestors 'self').
	FrameAncestors []string
}

// Security headers that every response carries.
const (
	referrerPolicy = "no-referrer" // the viewer URL holds a token
	// dashboardCSP also allows frames from this origin: the dashboard
	// embeds the viewer.
	dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
	// viewerCSP: noVNC sets element styles from script (allowed by
	// style-src 'self'), draws its cursor as a data: URL and talks to the
	// gateway over a WebSocket of the same host ('self' covers ws: and wss:
	// of the page's host in CSP Level 3).
	viewerCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors "
)

// Cache policies.
const (
	cacheNever     = "no-store"                            // pages: the viewer URL holds a token
	cacheImmutable = "public, max-age=31536000, immutable" // versioned URLs
	cacheRevalid   = "no-cache"                            // unversioned URLs: revalidate
)

type handler struct {
	mux       *http.ServeMux
	view      *template.Template
	dashboard []byte
	viewCSP   string
	version   string // noVNC version installed (== pinned)
	novncFS   http.FileSystem
	novnc     http.Handler
	static    map[string]asset
}

type asset struct {
	body  []byte
	etag  string
	ctype string
	mod   time.Time
}

// New returns the handler of the pages. It fails when noVNC is not installed
// in cfg.Dir/node_modules or is not the version pinned in package.json; the
// error names the command that installs it.
func New(cfg Config) (http.Handler, error) {
	if cfg.Dir == "" {
		cfg.Dir = "web"
	}
	if len(cfg.FrameAncestors) == 0 {
		cfg.FrameAncestors = []string{"*"}
	}
	for _, s := range cfg.FrameAncestors {
		if s == "" || strings.ContainsAny(s, ";,\r\n") {
			return nil, fmt.Errorf("web: invalid frame ancestor %q", s)
		}
	}
	pinned, err := pinnedVersion()
	if err != nil {
		return nil, err
	}
	root := filepath.Join(cfg.Dir, "node_modules", filepath.FromSlash(NoVNCPackage))
	installed, err := installedVersion(root)
	if err != nil {
		return nil, fmt.Errorf("web: noVNC is not installed in %s; run `npm ci --prefix %s`: %w", root, cfg.Dir, err)
	}
	if installed != pinned {
		return nil, fmt.Errorf("web: noVNC %s is installed in %s but package.json pins %s; run `npm ci --prefix %s`",
			installed, root, pinned, cfg.Dir)
	}
	if _, err := os.Stat(filepath.Join(root, "core", "rfb.js")); err != nil {
		return nil, fmt.Errorf("web: noVNC in %s has no core/rfb.js; run `npm ci --prefix %s`: %w", root, cfg.Dir, err)
	}

	h := &handler{
		mux:     http.NewServeMux(),
		viewCSP: viewerCSP + strings.Join(cfg.FrameAncestors, " "),
		version: installed,
		novncFS: noDirs{http.Dir(root)},
		static:  map[string]asset{},
	}
	h.novnc = http.FileServer(h.novncFS)
	if err := h.loadAssets(); err != nil {
		return nil, err
	}
	h.mux.HandleFunc("GET /{$}", h.serveDashboard)
	h.mux.HandleFunc("GET /sessions/{id}/view", h.serveView)
	h.mux.HandleFunc("GET /static/{name}", h.serveStatic)
	h.mux.HandleFunc("GET /novnc/", h.serveNoVNC)
	return h, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Referrer-Policy", referrerPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	h.mux.ServeHTTP(w, r)
}

func pinnedVersion() (string, error) {
	b, err := assets.ReadFile("package.json")
	if err != nil {
		return "", fmt.Errorf("web: read embedded package.json: %w", err)
	}
	var p struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return "", fmt.Errorf("web: parse embedded package.json: %w", err)
	}
	v := p.Dependencies[NoVNCPackage]
	if v == "" {
		return "", fmt.Errorf("web: package.json does not depend on %s", NoVNCPackage)
	}
	return v, nil
}

func installedVersion(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "package.json"))
	if err != nil {
		return "", err
	}
	var p struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return "", fmt.Errorf("parse package.json: %w", err)
	}
	if p.Version == "" {
		return "", errors.New("package.json has no version")
	}
	return p.Version, nil
}

// loadAssets reads the embedded pages and static files once.
func (h *handler) loadAssets() error {
	mod := time.Now()
	entries, err := assets.ReadDir("static")
	if err != nil {
		return fmt.Errorf("web: read embedded static: %w", err)
	}
	for _, e := range entries {
		b, err := assets.ReadFile("static/" + e.Name())
		if err != nil {
			return fmt.Errorf("web: read embedded %s: %w", e.Name(), err)
		}
		ctype := "application/octet-stream"
		switch path.Ext(e.Name()) {
		case ".js":
			ctype = "text/javascript; charset=utf-8"
		case ".css":
			ctype = "text/css; charset=utf-8"
		case ".svg":
			ctype = "image/svg+xml"
		}
		h.static[e.Name()] = asset{body: b, etag: hash(b), ctype: ctype, mod: mod}
	}
	url := func(name string) (string, error) {
		a, ok := h.static[name]
		if !ok {
			return "", fmt.Errorf("no static asset %s", name)
		}
		return "static/" + name + "?v=" + a.etag, nil
	}
	// The pages use relative URLs, so that they work behind a proxy that
	// mounts the controller under a path prefix.
	funcs := template.FuncMap{"static": url, "novnc": func() string { return "novnc/" + h.version }}
	h.view, err = template.New("view.html").Funcs(funcs).ParseFS(assets, "view.html")
	if err != nil {
		return fmt.Errorf("web: parse view.html: %w", err)
	}
	dash, err := template.New("index.html").Funcs(funcs).ParseFS(assets, "index.html")
	if err != nil {
		return fmt.Errorf("web: parse index.html: %w", err)
	}
	var buf bytes.Buffer
	if err := dash.Execute(&buf, nil); err != nil {
		return fmt.Errorf("web: render index.html: %w", err)
	}
	h.dashboard = buf.Bytes()
	return nil
}

func hash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

func (h *handler) serveDashboard(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", dashboardCSP)
	hd.Set("Cache-Control", cacheNever)
	hd.Set("Content-Type", "text/html; charset=utf-8")
	w.Write(h.dashboard)
}

func (h *handler) serveView(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !mc.ValidID(id) {
		// Refused before any look-up; the reply says nothing more.
		http.NotFound(w, r)
		return
	}
	var buf bytes.Buffer
	if err := h.view.Execute(&buf, struct{ ID string }{id}); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Security-Policy", h.viewCSP)
	hd.Set("Cache-Control", cacheNever)
	hd.Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

func (h *handler) serveStatic(w http.ResponseWriter, r *http.Request) {
	a, ok := h.static[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.ctype)
	hd.Set("ETag", `"`+a.etag+`"`)
	if r.URL.Query().Get("v") == a.etag {
		hd.Set("Cache-Control", cacheImmutable)
	} else {
		hd.Set("Cache-Control", cacheRevalid)
	}
	http.ServeContent(w, r, "", a.mod, bytes.NewReader(a.body))
}

// serveNoVNC serves the installed noVNC package: under /novnc/<version>/
// for ever (the version is in the URL), under /novnc/ with revalidation.
func (h *handler) serveNoVNC(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, "/novnc")
	cache := cacheRevalid
	if v := "/" + h.version + "/"; strings.HasPrefix(rest, v) {
		rest = rest[len(v)-1:]
		cache = cacheImmutable
	}
	// Only the code and its licence are served, not README or docs.
	if !strings.HasPrefix(rest, "/core/") && !strings.HasPrefix(rest, "/vendor/") && rest != "/LICENSE.txt" {
		http.NotFound(w, r)
		return
	}
	f, err := h.novncFS.Open(rest)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	f.Close()
	w.Header().Set("Cache-Control", cache)
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.Path = rest
	u.RawPath = ""
	r2.URL = &u
	h.novnc.ServeHTTP(w, r2)
}

// noDirs refuses directories, so that the file server lists nothing.
type noDirs struct{ fs http.FileSystem }

func (d noDirs) Open(name string) (http.File, error) {
	f, err := d.fs.Open(name)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.IsDir() {
		f.Close()
		return nil, fs.ErrNotExist
	}
	return f, nil
}
