package web_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/browsertest"
	"github.com/master-controller/mc/web"
)

// fakeAPI is the part of the HTTP API (httpapi) that the dashboard uses,
// with its shapes: {sessions: […]}, {session, viewer: {url, token}},
// POST …/viewer-token → {url, token}, POST …/cancel → {session}.
type fakeAPI struct {
	key   string
	token string

	mu            sync.Mutex
	sessions      []*mc.Session
	authz         []string // every Authorization header seen
	tokenRequests int
}

func (a *fakeAPI) authorized(w http.ResponseWriter, r *http.Request) bool {
	a.mu.Lock()
	a.authz = append(a.authz, r.Header.Get("Authorization"))
	a.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+a.key {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "unauthorized", "message": "API key missing or invalid"}})
		return false
	}
	return true
}

func (a *fakeAPI) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/pool", func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(w, r) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(mc.PoolStatus{Replica: "r1", Providers: []mc.PoolProvider{{Provider: "demo", Target: 2, Ready: 1, Starting: 1}}})
	})
	mux.HandleFunc("GET /api/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(w, r) {
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		list := append([]*mc.Session{}, a.sessions...)
		json.NewEncoder(w).Encode(map[string]any{"sessions": list})
	})
	mux.HandleFunc("POST /api/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(w, r) {
			return
		}
		var req struct {
			UserID   string `json:"user_id"`
			Provider string `json:"provider"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s := &mc.Session{ID: mc.NewID(), UserID: req.UserID, Provider: req.Provider, State: mc.StatePending, CreatedAt: time.Now()}
		a.mu.Lock()
		a.sessions = append(a.sessions, s)
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{
			"session": s,
			"viewer":  map[string]string{"url": "/sessions/" + s.ID + "/view?token=" + a.token, "token": a.token},
		})
	})
	mux.HandleFunc("POST /api/v1/sessions/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(w, r) {
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, s := range a.sessions {
			if s.ID == r.PathValue("id") {
				s.State, s.Reason = mc.StateCancelled, mc.ReasonCancelledByAPI
				w.Header().Set("Content-Type", "application/json")
				json.NewEncoder(w).Encode(map[string]any{"session": s})
				return
			}
		}
		http.NotFound(w, r)
	})
	mux.HandleFunc("POST /api/v1/sessions/{id}/viewer-token", func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(w, r) {
			return
		}
		a.mu.Lock()
		a.tokenRequests++
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"url": "/sessions/" + r.PathValue("id") + "/view?token=" + a.token, "token": a.token})
	})
}

// TestDashboard drives the dashboard in headless Chromium: enter the key,
// start a session, see its viewer embedded, cancel it.
func TestDashboard(t *testing.T) {
	const token = "v1.dash-token.mac"
	api := &fakeAPI{key: "key-123", token: token}
	g := newFakeGateway(token)
	g.fallback = closeWith(1000, "signed in") // every session signs in at once
	mux := http.NewServeMux()
	api.register(mux)
	mux.Handle("GET /api/v1/sessions/{id}/vnc", g)
	mux.Handle("/", newHandler(t, web.Config{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b := browsertest.New(t)

	b.Open(srv.URL + "/")
	b.SetValue("#api-key", "key-123")
	b.Click("#key-form button[type=submit]")
	b.WaitJS(`document.getElementById('rows').textContent.includes('No sessions.')`)
	b.WaitJS(`document.querySelector('#pool-rows tr[data-provider=demo]').textContent === 'demo211'`)
	var stored string
	b.MustEval(`sessionStorage.getItem('mc.apiKey') + '|' + document.getElementById('api-key').value`, &stored)
	if stored != "key-123|" {
		t.Errorf("key in sessionStorage | field: got %q, want %q", stored, "key-123|")
	}

	// The new session's viewer opens embedded and signs in.
	b.SetValue("#user-id", "alice")
	b.Click("#start-btn")
	b.WaitJS(`document.getElementById('viewer-frame').contentWindow.mcViewer.state === 'signed-in'`)
	b.WaitJS(`document.querySelector('#rows tr[data-id]').textContent.includes('alice')`)

	// View asks for a fresh viewer token and opens the viewer again.
	b.MustEval(`document.getElementById('viewer-close').click()`, nil)
	b.WaitJS(`document.getElementById('viewer-panel').hidden`)
	// A click in the page itself: the rows are redrawn as the list refreshes,
	// and a node found a moment earlier may be gone by the click.
	b.MustEval(`document.querySelector('#rows tr[data-id] button.secondary').click()`, nil)
	b.WaitJS(`!document.getElementById('viewer-panel').hidden && document.getElementById('viewer-frame').contentWindow.mcViewer && document.getElementById('viewer-frame').contentWindow.mcViewer.state === 'signed-in'`)

	b.MustEval(`document.querySelector('#rows tr[data-id] button.danger').click()`, nil)
	b.WaitJS(`document.querySelector('#rows tr[data-id]').textContent.includes('cancelled')`)

	api.mu.Lock()
	defer api.mu.Unlock()
	if api.tokenRequests != 1 {
		t.Errorf("viewer-token requests: got %d, want 1", api.tokenRequests)
	}
	if len(api.sessions) != 1 || api.sessions[0].UserID != "alice" || api.sessions[0].Provider != "demo" {
		t.Errorf("sessions created: got %+v, want one for alice, demo", api.sessions)
	}
	for i, a := range api.authz {
		if a != "Bearer key-123" {
			t.Errorf("request %d: Authorization %q, want the Bearer key", i, a)
		}
	}
}
