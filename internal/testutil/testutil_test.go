package testutil_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/sqlite"
	"github.com/master-controller/mc/storetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilt()
	os.Exit(code)
}

func TestSyncBuffer(t *testing.T) {
	var b testutil.SyncBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
			}
		})
	}
	wg.Wait()
	if got, want := strings.Count(b.String(), "\n"), 800; got != want {
		t.Errorf("lines = %d, want %d", got, want)
	}
}

func TestTail(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"", 3, ""},
		{"abc", 3, "abc"},
		{"abcdef", 3, "…def"},
	}
	for _, tt := range tests {
		if got := testutil.Tail(tt.s, tt.n); got != tt.want {
			t.Errorf("Tail(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

// echo is what the echo server saw of a request.
type echo struct {
	Method, Path, Auth, ContentType, Body string
}

func echoServer(tb testing.TB) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/empty" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusTeapot)
		_ = json.NewEncoder(w).Encode(echo{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)})
	}))
	tb.Cleanup(srv.Close)
	return srv
}

func TestRequest(t *testing.T) {
	srv := echoServer(t)
	tests := []struct {
		name  string
		token string
		body  any
		want  echo
	}{
		{"no token, no body", "", nil, echo{Method: "GET", Path: "/x"}},
		{"token and body", "tok", map[string]int{"a": 1}, echo{"GET", "/x", "Bearer tok", "application/json", `{"a":1}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, raw := testutil.Request(t.Context(), t, "GET", srv.URL, "/x", tt.token, tt.body)
			var got echo
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatalf("answer %q: %v", raw, err)
			}
			if code != http.StatusTeapot || got != tt.want {
				t.Errorf("got %d %+v, want %d %+v", code, got, http.StatusTeapot, tt.want)
			}
		})
	}
}

func TestClientDo(t *testing.T) {
	srv := echoServer(t)
	c := testutil.Client{URL: srv.URL, Key: "key"}
	var got echo
	if code := c.Do(t, "POST", "/sessions", map[string]string{"user_id": "u"}, &got); code != http.StatusTeapot {
		t.Errorf("status %d, want %d", code, http.StatusTeapot)
	}
	if want := (echo{"POST", "/sessions", "Bearer key", "application/json", `{"user_id":"u"}`}); got != want {
		t.Errorf("server saw %+v, want %+v", got, want)
	}
	// An empty answer leaves out as it is.
	kept := echo{Method: "kept"}
	if code := c.Do(t, "GET", "/empty", nil, &kept); code != http.StatusNoContent || kept != (echo{Method: "kept"}) {
		t.Errorf("empty answer: %d %+v, want %d and out untouched", code, kept, http.StatusNoContent)
	}
}

// fatalTB records the first Fatalf and ends the goroutine like testing does.
type fatalTB struct {
	testing.TB
	msg chan string
}

func (f fatalTB) Helper() {}

func (f fatalTB) Fatalf(format string, args ...any) {
	f.msg <- fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestWaitState(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "mc.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := storetest.NewSession("u", "demo", time.Time{})
	if err := st.CreateSession(t.Context(), s, "r1", mc.Capacity{}); err != nil {
		t.Fatal(err)
	}
	step := func(from, to mc.State, version int64) {
		if _, err := st.Transition(context.Background(), mc.Transition{ID: s.ID, From: from, Version: version, To: to, At: time.Now()}); err != nil {
			t.Errorf("transition %s → %s: %v", from, to, err)
		}
	}
	go step(mc.StatePending, mc.StateStarting, 1)
	if got := testutil.WaitState(t, st, s.ID, mc.StateStarting, 30*time.Second); got.State != mc.StateStarting || got.ID != s.ID {
		t.Fatalf("WaitState = %s %s, want %s starting", got.ID, got.State, s.ID)
	}

	// A final state other than the one wanted fails at once, not at the
	// timeout.
	step(mc.StateStarting, mc.StateCancelled, 2)
	tb := fatalTB{TB: t, msg: make(chan string, 1)}
	start := time.Now()
	go testutil.WaitState(tb, st, s.ID, mc.StateReady, time.Hour)
	select {
	case msg := <-tb.msg:
		if !strings.Contains(msg, "ended cancelled") {
			t.Errorf("WaitState failed with %q, want it to say the session ended cancelled", msg)
		}
	case <-time.After(time.Minute):
		t.Fatalf("WaitState for ready of a cancelled session still waiting after %s", time.Since(start))
	}
}

func TestBuildBinary(t *testing.T) {
	t.Parallel()
	const pkg = "github.com/master-controller/mc/internal/testutil/testdata/hello"
	first := testutil.BuildBinary(t, pkg)
	if second := testutil.BuildBinary(t, pkg); second != first {
		t.Errorf("second build at %s, want the first %s", second, first)
	}
	out, err := exec.Command(first).Output()
	if err != nil || string(out) != "hello\n" {
		t.Errorf("built binary says %q, %v; want hello", out, err)
	}
	if _, err := testutil.Build(pkg + "/missing"); err == nil {
		t.Error("Build of a missing package: no error")
	}
}
