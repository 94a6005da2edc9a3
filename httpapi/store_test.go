package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/httpapi"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/postgres"
	"github.com/master-controller/mc/sqlite"
	"github.com/master-controller/mc/vault"
)

// These tests run the API on the real stores, SQLite and a throwaway
// PostgreSQL (and the real vault over them). The manager is a thin stand-in that creates and cancels sessions in the
// store the way session.Manager does, without starting machines.

func openSQLite(tb testing.TB) *sqlite.Store {
	tb.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "mc.db"), sqlite.Options{})
	if err != nil {
		tb.Fatalf("open sqlite: %v", err)
	}
	tb.Cleanup(func() {
		if err := st.Close(); err != nil {
			tb.Errorf("close sqlite: %v", err)
		}
	})
	return st
}

var _ httpapi.Credentials = (*vault.Service)(nil)

// storeSessions starts and cancels sessions directly in a store.
type storeSessions struct{ st mc.Store }

func (m storeSessions) Start(ctx context.Context, userID, provider string) (*mc.Session, error) {
	now := time.Now().UTC()
	s := &mc.Session{ID: mc.NewID(), UserID: userID, Provider: provider, CreatedAt: now,
		ExpiresAt: now.Add(time.Hour)}
	if err := m.st.CreateSession(ctx, s, "test", mc.Capacity{}); err != nil {
		return nil, err
	}
	return m.st.Session(ctx, s.ID)
}

func (m storeSessions) Cancel(ctx context.Context, id string) (*mc.Session, error) {
	s, err := m.st.Session(ctx, id)
	if err != nil {
		return nil, err
	}
	if s.State.Final() {
		return s, &mc.Error{Code: mc.ECONFLICT, Reason: "session_ended", SessionID: id, Message: "the session has already ended"}
	}
	return m.st.Transition(ctx, mc.Transition{ID: id, From: s.State, Version: s.Version, To: mc.StateCancelled,
		Reason: mc.ReasonCancelledByAPI, Replica: "test", At: time.Now().UTC()})
}

func TestMain(m *testing.M) { pgtest.Main(m) }

func openPostgres(tb testing.TB) *postgres.Store {
	tb.Helper()
	st, err := postgres.Open(context.Background(), pgtest.Shared(tb), postgres.Options{})
	if err != nil {
		tb.Fatalf("open postgres: %v", err)
	}
	tb.Cleanup(func() {
		if err := st.Close(); err != nil {
			tb.Errorf("close postgres: %v", err)
		}
	})
	return st
}

// stores opens each real store for a test.
var stores = []struct {
	name string
	open func(testing.TB) mc.Store
}{
	{"sqlite", func(tb testing.TB) mc.Store { return openSQLite(tb) }},
	{"postgres", func(tb testing.TB) mc.Store { return openPostgres(tb) }},
}

func newStoreEnv(tb testing.TB, st mc.Store) (*env, *vault.Service) {
	tb.Helper()
	kr, err := vault.NewKeyring("k1")
	if err != nil {
		tb.Fatalf("new keyring: %v", err)
	}
	svc := vault.NewService(vault.New(kr), st, vault.Options{})
	e := newEnv(tb, options{deps: func(d *httpapi.Deps) {
		d.Store, d.Sessions, d.Credentials = st, storeSessions{st}, svc
	}})
	return e, svc
}

func TestStores(t *testing.T) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			st := s.open(t)
			e, svc := newStoreEnv(t, st)
			testStore(t, e, st, svc)
		})
	}
}

func testStore(t *testing.T, e *env, st mc.Store, svc *vault.Service) {

	status, _, body := e.do(t, "POST", "/api/v1/sessions", `{"user_id":"alice","provider":"demo"}`)
	if status != 201 {
		t.Fatalf("create: got %d %s", status, body)
	}
	id := decode[httpapi.CreateSessionResponse](t, body).Session.ID

	status, _, body = e.do(t, "POST", "/api/v1/sessions", `{"user_id":"alice","provider":"demo"}`)
	if d := decodeError(t, body); status != 409 || d.Code != mc.ECONFLICT || d.SessionID != id {
		t.Errorf("second create: got %d %+v, want 409 naming %s", status, d, id)
	}

	status, _, body = e.do(t, "GET", "/api/v1/sessions/"+id, "")
	if s := decode[httpapi.SessionResponse](t, body).Session; status != 200 || s.ID != id || s.State != mc.StatePending || s.Version != 1 {
		t.Errorf("get: got %d %s", status, body)
	}
	if status, _, body := e.do(t, "GET", "/api/v1/sessions/"+mc.NewID(), ""); status != 404 || decodeError(t, body).Code != mc.ENOTFOUND {
		t.Errorf("get unknown: got %d %s, want 404 not_found", status, body)
	}

	for i := range 4 {
		e.do(t, "POST", "/api/v1/sessions", fmt.Sprintf(`{"user_id":"user%d","provider":"demo"}`, i))
	}
	var seen int
	cursor := ""
	for range 10 {
		status, _, body := e.do(t, "GET", "/api/v1/sessions?limit=2&cursor="+url.QueryEscape(cursor), "")
		if status != 200 {
			t.Fatalf("list: got %d %s", status, body)
		}
		page := decode[httpapi.SessionsResponse](t, body)
		seen += len(page.Sessions)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if seen != 5 {
		t.Errorf("list: got %d sessions over all pages, want 5", seen)
	}
	status, _, body = e.do(t, "GET", "/api/v1/sessions?cursor=not-a-cursor", "")
	if d := decodeError(t, body); status != 400 || d.Code != mc.EINVALID || d.Reason != "bad_cursor" {
		t.Errorf("bad cursor: got %d %+v, want 400 invalid bad_cursor", status, d)
	}

	status, _, body = e.do(t, "POST", "/api/v1/sessions/"+id+"/cancel", "")
	if s := decode[httpapi.SessionResponse](t, body).Session; status != 200 || s.State != mc.StateCancelled {
		t.Errorf("cancel: got %d %s", status, body)
	}
	status, _, body = e.do(t, "GET", "/api/v1/sessions/"+id+"/events", "")
	if evs := decode[httpapi.EventsResponse](t, body).Events; status != 200 || len(evs) != 2 || evs[1].State != mc.StateCancelled {
		t.Errorf("events: got %d %s", status, body)
	}
	status, _, body = e.do(t, "POST", "/api/v1/sessions/"+id+"/viewer-token", "")
	if d := decodeError(t, body); status != 409 || d.Reason != "session_ended" {
		t.Errorf("viewer-token of a cancelled session: got %d %+v", status, d)
	}

	// Credentials through the real vault; the audit log through the store.
	c := mc.Credential{UserID: "alice", Provider: "demo", SessionID: id, CapturedAt: time.Now().UTC(),
		Files: map[string]string{"~/.demo/credentials.json": `{"access_token":"demo-xyz"}`}}
	if err := svc.Put(t.Context(), c); err != nil {
		t.Fatalf("put credential: %v", err)
	}
	status, _, body = e.do(t, "GET", "/api/v1/credentials/alice/demo", "")
	if got := decode[mc.Credential](t, body); status != 200 || got.Files["~/.demo/credentials.json"] != c.Files["~/.demo/credentials.json"] {
		t.Errorf("get credential: got %d %s", status, body)
	}
	status, _, body = e.do(t, "GET", "/api/v1/credentials/alice", "")
	if got := decode[httpapi.CredentialsResponse](t, body); status != 200 || len(got.Credentials) != 1 || got.Credentials[0].SessionID != id {
		t.Errorf("list credentials: got %d %s", status, body)
	}
	if status, _, body := e.do(t, "DELETE", "/api/v1/credentials/alice/demo", ""); status != 204 {
		t.Errorf("delete credential: got %d %s", status, body)
	}
	status, _, body = e.do(t, "GET", "/api/v1/audit?user_id=alice", "")
	entries := decode[httpapi.AuditResponse](t, body).Entries
	actor := httpapi.HashAPIKey(testAPIKey).ID()
	if status != 200 || len(entries) != 3 || entries[0].Action != "delete" || entries[0].Actor != actor {
		t.Errorf("audit: got %d %s, want 3 entries by %s, newest (delete) first", status, body, actor)
	}
	if err := st.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if status, _, body := e.do(t, "GET", "/readyz", ""); status != 200 {
		t.Errorf("readyz: got %d %s", status, body)
	}
}

// BenchmarkGetSession measures GET /api/v1/sessions/{id} over loopback HTTP
// with a real client (keep-alive), through the whole middleware, on SQLite,
// on PostgreSQL, and on the in-memory fake (which isolates the API's own
// cost).
func BenchmarkGetSession(b *testing.B) {
	for _, s := range stores {
		b.Run(s.name, func(b *testing.B) {
			e, _ := newStoreEnv(b, s.open(b))
			benchGetSession(b, e)
		})
	}
	b.Run("fake", func(b *testing.B) {
		benchGetSession(b, newEnv(b, options{}))
	})
}

func benchGetSession(b *testing.B, e *env) {
	status, _, body := e.do(b, "POST", "/api/v1/sessions", `{"user_id":"bench","provider":"demo"}`)
	if status != 201 {
		b.Fatalf("create: got %d %s", status, body)
	}
	id := decode[httpapi.CreateSessionResponse](b, body).Session.ID
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(client.CloseIdleConnections)
	u := e.srv.URL + "/api/v1/sessions/" + id
	get := func() error {
		req, err := http.NewRequest("GET", u, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out httpapi.SessionResponse
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 || out.Session.ID != id {
			return fmt.Errorf("got %d", resp.StatusCode)
		}
		return nil
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := get(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := get(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
