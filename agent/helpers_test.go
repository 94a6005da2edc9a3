package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	proto "github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/internal/testutil"
)

// testLogger writes to the test log.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// fakeBrowser records the URLs it is asked to open.
type fakeBrowser struct {
	mu     sync.Mutex
	opened []string
	tab    string // the page shown, for TabURLs
	urls   chan string
	err    error
}

func newFakeBrowser() *fakeBrowser { return &fakeBrowser{urls: make(chan string, 16)} }

// SetTab makes u the page the browser shows (as a redirect would).
func (b *fakeBrowser) SetTab(u string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tab = u
}

func (b *fakeBrowser) TabURLs(context.Context) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tab == "" {
		return nil, nil
	}
	return []string{b.tab}, nil
}

func (b *fakeBrowser) Open(ctx context.Context, url string) error {
	if b.err != nil {
		return b.err
	}
	b.mu.Lock()
	b.opened = append(b.opened, url)
	b.tab = url
	b.mu.Unlock()
	b.urls <- url
	return nil
}

// testAPI is the agent API over a fake browser, with a real page server.
type testAPI struct {
	srv     *httptest.Server
	page    *httptest.Server
	token   string
	home    string
	browser *fakeBrowser
	health  proto.Health
	login   *login
	// starting makes the API answer as a machine still starting;
	// sandbox and sandboxErr are what GET /sandbox reads.
	starting   bool
	sandbox    proto.BrowserSandbox
	sandboxErr error
}

func newTestAPI(tb testing.TB) *testAPI {
	tb.Helper()
	home := tb.TempDir()
	log := testLogger(tb)
	t := &testAPI{token: "test-token-1234", home: home, browser: newFakeBrowser(), health: proto.Health{VNC: true, Browser: true}}
	t.page = httptest.NewServer(pageHandler(home, log))
	tb.Cleanup(t.page.Close)
	tmp := filepath.Join(home, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		tb.Fatal(err)
	}
	t.login = newLogin(loginConfig{home: home, tmpDir: tmp, pageBase: t.page.URL,
		openerExe: testutil.BuildBinary(tb, "github.com/master-controller/mc/cmd/mc-agent"), tabPoll: 10 * time.Millisecond}, t.browser, log)
	tb.Cleanup(t.login.Close)
	a := &api{
		tokenHash: sha256.Sum256([]byte(t.token)),
		log:       log,
		health:    func(context.Context) proto.Health { return t.health },
		ready:     func() bool { return !t.starting },
		browser:   t.browser,
		sandbox: func(context.Context) (proto.BrowserSandbox, error) {
			return t.sandbox, t.sandboxErr
		},
		pageBase: t.page.URL,
		login:    t.login,
	}
	t.srv = httptest.NewServer(a.handler())
	tb.Cleanup(t.srv.Close)
	return t
}

// do sends a request with the test token and returns status and body.
func (t *testAPI) do(tb testing.TB, method, path string, body any) (int, []byte) {
	tb.Helper()
	return testutil.Request(context.Background(), tb, method, t.srv.URL, path, t.token, body)
}

func decode[T any](tb testing.TB, b []byte) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		tb.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilt()
	os.Exit(code)
}

var errTestBrowser = errors.New("test: browser gone")

func jsonDecode(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }

func readAll(tb testing.TB, resp *http.Response) string {
	tb.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("%s: status %d: %s", resp.Request.URL, resp.StatusCode, b)
	}
	return string(b)
}
