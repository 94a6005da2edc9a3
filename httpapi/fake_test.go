package httpapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/httpapi"
)

// The fakes stand in for the session manager, store, token signer and vault,
// with the behaviour their contracts document; the lead's end-to-end tests run
// the real ones. sqlite_test.go runs part of this suite on a real SQLite store.

// fakeStore is an in-memory store with the documented errors.
type fakeStore struct {
	mu       sync.Mutex
	sessions map[string]*mc.Session
	order    []string
	events   map[string][]mc.Event
	audit    []mc.AuditEntry
	pingErr  error
	failWith error // returned by every read when set (an internal failure)
}

func newFakeStore() *fakeStore {
	return &fakeStore{sessions: map[string]*mc.Session{}, events: map[string][]mc.Event{}}
}

func (f *fakeStore) Session(_ context.Context, id string) (*mc.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		return nil, f.failWith
	}
	s, ok := f.sessions[id]
	if !ok {
		return nil, mc.Errorf(mc.ENOTFOUND, "session_not_found", "no such session")
	}
	c := *s
	return &c, nil
}

func (f *fakeStore) Sessions(_ context.Context, flt mc.SessionFilter) ([]*mc.Session, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failWith != nil {
		return nil, "", f.failWith
	}
	start := 0
	if flt.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(flt.Cursor)
		if err != nil || !slices.Contains(f.order, string(b)) {
			return nil, "", mc.Errorf(mc.EINVALID, "bad_cursor", "the cursor is not valid")
		}
		start = slices.Index(f.order, string(b))
	}
	limit := flt.Limit
	if limit == 0 {
		limit = 50
	}
	var out []*mc.Session
	for i := start; i < len(f.order); i++ {
		s := f.sessions[f.order[i]]
		if (flt.UserID != "" && s.UserID != flt.UserID) || (flt.Provider != "" && s.Provider != flt.Provider) ||
			(flt.State != "" && s.State != flt.State) || (flt.Active && !s.State.Active()) {
			continue
		}
		if len(out) == limit {
			return out, base64.RawURLEncoding.EncodeToString([]byte(s.ID)), nil
		}
		c := *s
		out = append(out, &c)
	}
	return out, "", nil
}

func (f *fakeStore) Events(_ context.Context, id string) ([]mc.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sessions[id]; !ok {
		return nil, mc.Errorf(mc.ENOTFOUND, "session_not_found", "no such session")
	}
	return slices.Clone(f.events[id]), nil
}

func (f *fakeStore) Audit(_ context.Context, flt mc.AuditFilter) ([]mc.AuditEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []mc.AuditEntry
	for i := len(f.audit) - 1; i >= 0; i-- {
		if flt.UserID == "" || f.audit[i].UserID == flt.UserID {
			out = append(out, f.audit[i])
		}
	}
	return out, nil
}

func (f *fakeStore) Ping(context.Context) error { return f.pingErr }

func (f *fakeStore) appendAudit(e mc.AuditEntry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e.ID = int64(len(f.audit) + 1)
	f.audit = append(f.audit, e)
}

// setState moves a session (test set-up only).
func (f *fakeStore) setState(id string, st mc.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sessions[id]
	f.events[id] = append(f.events[id], mc.Event{SessionID: id, Seq: int64(len(f.events[id]) + 1),
		From: s.State, State: st, Replica: "test", At: time.Now().UTC()})
	s.State = st
	s.Version++
}

// fakeSessions is the manager: one active session per (user, provider), a
// capacity, cancel of a final session is a conflict.
type fakeSessions struct {
	store    *fakeStore
	capacity int
}

func (m *fakeSessions) Start(_ context.Context, userID, provider string) (*mc.Session, error) {
	f := m.store
	f.mu.Lock()
	defer f.mu.Unlock()
	active := 0
	for _, s := range f.sessions {
		if !s.State.Active() {
			continue
		}
		active++
		if s.UserID == userID && s.Provider == provider {
			return nil, &mc.Error{Code: mc.ECONFLICT, Reason: "active_session", SessionID: s.ID,
				Message: "an active session exists for this user and provider"}
		}
	}
	if m.capacity > 0 && active >= m.capacity {
		return nil, &mc.Error{Code: mc.EUNAVAILABLE, Reason: "capacity", RetryAfter: 1500 * time.Millisecond,
			Message: "all machines are in use; try again later"}
	}
	now := time.Now().UTC()
	s := &mc.Session{ID: mc.NewID(), UserID: userID, Provider: provider, State: mc.StatePending,
		CreatedAt: now, UpdatedAt: now, ActiveAt: now, ExpiresAt: now.Add(time.Hour), Version: 1}
	f.sessions[s.ID] = s
	f.order = append([]string{s.ID}, f.order...)
	f.events[s.ID] = []mc.Event{{SessionID: s.ID, Seq: 1, State: mc.StatePending, Replica: "test", At: now}}
	c := *s
	return &c, nil
}

func (m *fakeSessions) Cancel(ctx context.Context, id string) (*mc.Session, error) {
	s, err := m.store.Session(ctx, id)
	if err != nil {
		return nil, err
	}
	if s.State.Final() {
		return s, &mc.Error{Code: mc.ECONFLICT, Reason: "session_ended", SessionID: id,
			Message: fmt.Sprintf("the session has already ended (%s)", s.State)}
	}
	m.store.setState(id, mc.StateCancelled)
	return m.store.Session(ctx, id)
}

// fakeTokens issues distinctive tokens, so that a test can search the log
// for them.
type fakeTokens struct {
	mu     sync.Mutex
	issued []string
}

func (t *fakeTokens) Issue(sessionID string, ttl time.Duration) (string, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tok := "v1.TOKEN" + mc.NewID() + "." + sessionID
	t.issued = append(t.issued, tok)
	return tok, time.Now().Add(ttl)
}

type fakeProviders []mc.Provider

func (p fakeProviders) Get(name string) (mc.Provider, bool) {
	for _, v := range p {
		if v.Name == name {
			return v, true
		}
	}
	return mc.Provider{}, false
}

func (p fakeProviders) All() []mc.Provider { return p }

var testProviders = fakeProviders{
	{Name: "demo", DisplayName: "Demo", StartURL: "local:/demo/signin",
		Files:        []mc.CredentialFile{{Path: "~/.demo/credentials.json", RequiredKeys: []string{"access_token"}}},
		LoginTimeout: 15 * time.Minute},
	{Name: "codex", DisplayName: "Codex", Files: []mc.CredentialFile{{Path: "~/.codex/auth.json"}}},
}

// fakeVault keeps opened credentials and audits every call into the store.
type fakeVault struct {
	store *fakeStore
	mu    sync.Mutex
	creds map[[2]string]mc.Credential
}

func (v *fakeVault) audit(action, actor, userID, provider string, err error) {
	outcome := "ok"
	if err != nil {
		outcome = string(mc.ErrorCode(err))
	}
	v.store.appendAudit(mc.AuditEntry{At: time.Now().UTC(), Actor: actor, Action: action,
		UserID: userID, Provider: provider, Outcome: outcome})
}

func (v *fakeVault) Get(_ context.Context, userID, provider, actor string) (mc.Credential, error) {
	v.mu.Lock()
	c, ok := v.creds[[2]string{userID, provider}]
	v.mu.Unlock()
	var err error
	if !ok {
		err = mc.Errorf(mc.ENOTFOUND, "credential_not_found", "no credential for this user and provider")
	}
	v.audit("read", actor, userID, provider, err)
	return c, err
}

func (v *fakeVault) List(_ context.Context, userID, actor string) ([]mc.SealedCredential, error) {
	v.mu.Lock()
	var out []mc.SealedCredential
	for k, c := range v.creds {
		if k[0] == userID {
			out = append(out, mc.SealedCredential{UserID: userID, Provider: k[1], SessionID: c.SessionID,
				KeyID: "k1", Nonce: []byte("nonce"), Ciphertext: []byte("CIPHERTEXT"), CapturedAt: c.CapturedAt})
		}
	}
	v.mu.Unlock()
	v.audit("list", actor, userID, "", nil)
	return out, nil
}

func (v *fakeVault) Delete(_ context.Context, userID, provider, actor string) error {
	v.mu.Lock()
	k := [2]string{userID, provider}
	_, ok := v.creds[k]
	delete(v.creds, k)
	v.mu.Unlock()
	var err error
	if !ok {
		err = mc.Errorf(mc.ENOTFOUND, "credential_not_found", "no credential for this user and provider")
	}
	v.audit("delete", actor, userID, provider, err)
	return err
}

// syncBuffer is a log sink that server goroutines may write at once.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // signalled after each write
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{written: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case b.written <- struct{}{}:
	default:
	}
	return b.b.Write(p)
}

// waitLines waits until the log holds at least n lines, for at most 10 s.
func (b *syncBuffer) waitLines(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	for strings.Count(b.String(), "\n") < n {
		select {
		case <-b.written:
		case <-deadline:
			tb.Fatalf("got %d log lines after 10 s, want %d", strings.Count(b.String(), "\n"), n)
		}
	}
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// upgrade are the headers of a WebSocket upgrade, as e.do takes them.
var upgrade = []string{"Connection", "Upgrade", "Upgrade", "websocket"}

// testAPIKey is the key the test clients use.
const testAPIKey = "mc_test_key_0123456789abcdefSECRET"

// env is one API server on loopback with fakes behind it.
type env struct {
	srv      *httptest.Server
	api      *httpapi.Server
	store    *fakeStore
	sessions *fakeSessions
	tokens   *fakeTokens
	vault    *fakeVault
	logs     *syncBuffer
	reg      *prometheus.Registry
}

// options adjust newEnv.
type options struct {
	cfg  func(*httpapi.Config)
	deps func(*httpapi.Deps)
}

func newEnv(tb testing.TB, opts options) *env {
	tb.Helper()
	e := &env{store: newFakeStore(), tokens: &fakeTokens{}, logs: newSyncBuffer(), reg: prometheus.NewRegistry()}
	e.sessions = &fakeSessions{store: e.store}
	e.vault = &fakeVault{store: e.store, creds: map[[2]string]mc.Credential{}}
	e.srv = httptest.NewUnstartedServer(nil)
	cfg := httpapi.Config{
		PublicURL: "http://" + e.srv.Listener.Addr().String() + "/",
		APIKeys:   []httpapi.KeyHash{httpapi.HashAPIKey("another-key"), httpapi.HashAPIKey(testAPIKey)},
		Replica:   "r1",
	}
	deps := httpapi.Deps{Sessions: e.sessions, Store: e.store, Tokens: e.tokens, Providers: testProviders,
		Credentials: e.vault}
	if opts.cfg != nil {
		opts.cfg(&cfg)
	}
	if opts.deps != nil {
		opts.deps(&deps)
	}
	// The caller's logger carries the replica, as app's does.
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With(mc.LogReplica, cfg.Replica)
	api, err := httpapi.New(cfg, deps, log, e.reg)
	if err != nil {
		tb.Fatalf("new api: %v", err)
	}
	e.api = api
	e.srv.Config.Handler = api
	e.srv.Start()
	tb.Cleanup(e.srv.Close)
	return e
}

// do sends one request with the test API key (unless headers say otherwise)
// and returns the status, the headers and the body.
func (e *env) do(tb testing.TB, method, path, body string, hdr ...string) (int, http.Header, []byte) {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(tb.Context(), method, e.srv.URL+path, rd)
	if err != nil {
		tb.Fatalf("new request: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, resp.Header, b
}

// newSession starts a session through the fake manager.
func (e *env) newSession(tb testing.TB, userID, provider string) *mc.Session {
	tb.Helper()
	s, err := e.sessions.Start(tb.Context(), userID, provider)
	if err != nil {
		tb.Fatalf("start: %v", err)
	}
	return s
}

var errDisk = errors.New("open /var/lib/mc/db: disk on fire SECRETCAUSE")
