package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
)

// Request sends method base+path with body as JSON (when not nil) and,
// unless token is "", the header `Authorization: Bearer <token>`; it returns
// the status code and the answer's body. It fails tb when the request cannot
// be made or the answer not read. ctx bounds the request.
func Request(ctx context.Context, tb testing.TB, method, base, path, token string, body any) (int, []byte) {
	tb.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			tb.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, r)
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	return resp.StatusCode, raw
}

// Client calls a controller's API with an API key.
type Client struct {
	// URL is the controller's base URL (http://host:port).
	URL string
	// Key is the API key.
	Key string
}

// Do sends a JSON request (body, when not nil) with the API key, decodes
// the JSON answer into out (when not nil and the answer is not empty) and
// returns the status code. A request gives up after 30 s; any failure fails
// tb.
func (c Client) Do(tb testing.TB, method, path string, body, out any) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, raw := Request(ctx, tb, method, c.URL, path, c.Key, body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			tb.Fatalf("%s %s: status %d, decode %q: %v", method, path, code, raw, err)
		}
	}
	return code
}

// Watcher is the part of mc.Store that WaitState uses.
type Watcher interface {
	Watch(ctx context.Context, id string) (<-chan *mc.Session, error)
}

// WaitState waits (at most timeout) until the store shows session id in
// state want, and returns it. A final state other than want fails tb at once
// (the store's watch ends with it); so does timeout.
func WaitState(tb testing.TB, st Watcher, id string, want mc.State, timeout time.Duration) *mc.Session {
	tb.Helper()
	return WaitSession(tb, st, id, timeout, "state "+string(want), func(s *mc.Session) bool { return s.State == want })
}

// WaitSession waits (through Watch, no polling) until ok holds for the
// session, and fails the test with what was awaited and the last session
// seen (its login progress included) when timeout passes first.
func WaitSession(tb testing.TB, st Watcher, id string, timeout time.Duration, what string, ok func(*mc.Session) bool) *mc.Session {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ch, err := st.Watch(ctx, id)
	if err != nil {
		tb.Fatalf("watch session %s: %v", id, err)
	}
	var last *mc.Session
	for s := range ch {
		last = s
		if ok(s) {
			return s
		}
	}
	if last == nil {
		tb.Fatalf("session %s: nothing seen within %s, want %s", id, timeout, what)
	}
	var login any
	if last.Login != nil {
		login = *last.Login
	}
	if last.State.Final() {
		tb.Fatalf("session %s ended %s (reason %q), want %s; login %+v", id, last.State, last.Reason, what, login)
	}
	tb.Fatalf("session %s: %s not reached within %s; it is %s, login %+v", id, what, timeout, last.State, login)
	return nil
}
