package httpapi_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/httpapi"
	"github.com/master-controller/mc/internal/testutil"
)

// connEnv is the API behind the http.Server and listener that HTTPServer
// builds, as app serves it.
type connEnv struct {
	addr string
	reg  *prometheus.Registry
	logs *syncBuffer
}

func newConnEnv(tb testing.TB, edit func(*httpapi.Config), deps func(*httpapi.Deps)) *connEnv {
	tb.Helper()
	store := newFakeStore()
	cfg := httpapi.Config{APIKeys: []httpapi.KeyHash{httpapi.HashAPIKey(testAPIKey)}}
	if edit != nil {
		edit(&cfg)
	}
	d := httpapi.Deps{Sessions: &fakeSessions{store: store}, Store: store, Tokens: &fakeTokens{}, Providers: testProviders}
	if deps != nil {
		deps(&d)
	}
	e := &connEnv{reg: prometheus.NewRegistry(), logs: newSyncBuffer()}
	api, err := httpapi.New(cfg, d, slog.New(slog.NewJSONHandler(e.logs, nil)), e.reg)
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv, sl := api.HTTPServer(l, nil)
	go func() { _ = srv.Serve(sl) }()
	tb.Cleanup(func() { _ = srv.Close() })
	e.addr = l.Addr().String()
	return e
}

// dial opens a connection to the server that fails the test when it is not
// answered within 10 s (a bound against a hang, not a speed claim).
func (e *connEnv) dial(tb testing.TB) net.Conn {
	tb.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// roundTrip writes a raw request on c and reads the response.
func roundTrip(tb testing.TB, c net.Conn, raw string) (*http.Response, string) {
	tb.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		tb.Fatalf("write: %v", err)
	}
	return readResponse(tb, c)
}

func readResponse(tb testing.TB, c net.Conn) (*http.Response, string) {
	tb.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		tb.Fatalf("read response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// waitFor waits for a signal on c, for at most 10 s.
func waitFor(tb testing.TB, c <-chan struct{}) {
	tb.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		tb.Fatal("no signal after 10 s")
	}
}

// gauge returns the value of a gauge without labels.
func (e *connEnv) gauge(tb testing.TB, name string) float64 {
	tb.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

func (e *connEnv) metric(tb testing.TB, name string, labels ...string) float64 {
	tb.Helper()
	return (&env{reg: e.reg}).metric(tb, name, labels...)
}

// TestBodyNeverArrives: a request that announces a body and sends none (or
// sends it a byte at a time) is answered, not held: without a key at once
// with 401, since authentication comes before the body is read; with a key
// after BodyTimeout with 400 body_timeout.
func TestBodyNeverArrives(t *testing.T) {
	t.Run("no key", func(t *testing.T) {
		// A body timeout far beyond the test's bound: the 401 must not wait for it.
		e := newConnEnv(t, func(c *httpapi.Config) { c.BodyTimeout = time.Hour }, nil)
		c := e.dial(t)
		resp, body := roundTrip(t, c, "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
		if d := decodeError(t, []byte(body)); resp.StatusCode != 401 || d.Reason != "missing_api_key" {
			t.Errorf("got %d %s, want 401 missing_api_key", resp.StatusCode, body)
		}
		if !resp.Close {
			t.Errorf("got a connection kept open with a body unread, want Connection: close")
		}
	})
	t.Run("key", func(t *testing.T) {
		e := newConnEnv(t, func(c *httpapi.Config) { c.BodyTimeout = 50 * time.Millisecond }, nil)
		c := e.dial(t)
		resp, body := roundTrip(t, c, "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+testAPIKey+
			"\r\nContent-Length: 1000\r\n\r\n{\"user_id\"")
		if d := decodeError(t, []byte(body)); resp.StatusCode != 400 || d.Reason != httpapi.ReasonBodyTimeout {
			t.Errorf("got %d %s, want 400 body_timeout", resp.StatusCode, body)
		}
	})
	t.Run("trickled", func(t *testing.T) {
		e := newConnEnv(t, func(c *httpapi.Config) { c.BodyTimeout = 200 * time.Millisecond }, nil)
		c := e.dial(t)
		if _, err := io.WriteString(c, "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+testAPIKey+
			"\r\nContent-Length: 1000\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		}()
		resp, body := readResponse(t, c)
		if d := decodeError(t, []byte(body)); resp.StatusCode != 400 || d.Reason != httpapi.ReasonBodyTimeout {
			t.Errorf("got %d %s, want 400 body_timeout", resp.StatusCode, body)
		}
	})
	t.Run("whole body keeps the connection", func(t *testing.T) {
		e := newConnEnv(t, nil, nil)
		c := e.dial(t)
		body := `{"user_id":"al","provider":"demo"}`
		req := "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testAPIKey +
			"\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
		for i, want := range []int{201, 409} {
			resp, body := roundTrip(t, c, req)
			if resp.StatusCode != want || resp.Close {
				t.Errorf("request %d: got %d (close %v) %s, want %d on a kept connection", i, resp.StatusCode, resp.Close, body, want)
			}
		}
	})
}

// TestIdleTimeout: a keep-alive connection idle past IdleTimeout is closed.
func TestIdleTimeout(t *testing.T) {
	e := newConnEnv(t, func(c *httpapi.Config) { c.IdleTimeout = 50 * time.Millisecond }, nil)
	c := e.dial(t)
	if resp, _ := roundTrip(t, c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("got %d, want 200", resp.StatusCode)
	}
	// The server closes the connection; a read ends (bounded by the dial's 10 s).
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("got %d bytes and no error, want the connection closed", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("got a timeout: the idle connection was never closed")
	}
}

// TestConnectionCap: at MaxConnections, a new connection closes the one
// idle longest; when none is idle it is refused with a 503 JSON answer.
func TestConnectionCap(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	entered := make(chan struct{}, 10)
	web := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})
	e := newConnEnv(t, func(c *httpapi.Config) { c.MaxConnections = 3 }, func(d *httpapi.Deps) { d.Web = web })
	var idle []net.Conn
	for range 3 {
		idle = append(idle, e.dial(t))
	}
	// Each new client is served; the oldest idle connection makes room.
	// The clients stay connected (keep-alive), idle in their turn.
	for i := range 3 {
		c := e.dial(t)
		if resp, body := roundTrip(t, c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 {
			t.Fatalf("client %d: got %d %s, want 200", i, resp.StatusCode, body)
		}
		if _, err := idle[i].Read(make([]byte, 1)); err == nil {
			t.Errorf("idle connection %d: still open, want it closed to make room", i)
		}
	}
	if got := e.metric(t, "mc_http_idle_connections_evicted_total"); got != 3 {
		t.Errorf("got %v evictions, want 3", got)
	}
	// The clients are idle once their answers are sent: wait for that, bounded.
	testutil.WaitFor(t, 10*time.Second, "3 idle connections", func() error {
		if got := e.gauge(t, "mc_http_idle_connections"); got != 3 {
			return fmt.Errorf("got %v idle connections", got)
		}
		return nil
	})
	// Three busy connections (each makes room by closing an idle client):
	// nothing is left to evict, so the next is refused.
	for range 3 {
		c := e.dial(t)
		if _, err := io.WriteString(c, "GET /static/x HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, entered)
	}
	resp, body := readResponse(t, e.dial(t))
	if d := decodeError(t, []byte(body)); resp.StatusCode != 503 || d.Code != mc.EUNAVAILABLE ||
		d.Reason != httpapi.ReasonTooManyConnections || resp.Header.Get("Retry-After") == "" {
		t.Errorf("got %d %v %s, want 503 too_many_connections with Retry-After", resp.StatusCode, resp.Header, body)
	}
	if got := e.metric(t, "mc_http_connections_refused_total", "reason", "too_many_connections"); got != 1 {
		t.Errorf("got %v refusals counted, want 1", got)
	}
	if !strings.Contains(e.logs.String(), `"reason":"too_many_connections"`) {
		t.Errorf("got no log line with the reason: %s", e.logs.String())
	}
}

// TestViewerCap: past MaxViewerConnections a viewer is answered 503
// too_many_viewers before the upgrade; a place that frees is taken again.
func TestViewerCap(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	vnc := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		w.WriteHeader(http.StatusNoContent)
	})
	e := newConnEnv(t, func(c *httpapi.Config) { c.MaxViewerConnections = 1 }, func(d *httpapi.Deps) { d.VNC = vnc })
	id := mc.NewID()
	req := "GET /api/v1/sessions/" + id + "/vnc?token=t HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	first := e.dial(t)
	if _, err := io.WriteString(first, req); err != nil {
		t.Fatal(err)
	}
	waitFor(t, entered)
	resp, body := roundTrip(t, e.dial(t), req)
	if d := decodeError(t, []byte(body)); resp.StatusCode != 503 || d.Reason != httpapi.ReasonTooManyViewers {
		t.Errorf("second viewer: got %d %s, want 503 too_many_viewers", resp.StatusCode, body)
	}
	if got := e.metric(t, "mc_http_connections_refused_total", "reason", "too_many_viewers"); got != 1 {
		t.Errorf("got %v refusals counted, want 1", got)
	}
	close(release)
	if resp, _ := readResponse(t, first); resp.StatusCode != 204 {
		t.Errorf("first viewer: got %d, want 204", resp.StatusCode)
	}
	// The first viewer's place frees when its handler has returned, just
	// after its answer: poll, within a bound.
	testutil.WaitFor(t, 10*time.Second, "third viewer admitted after the first left", func() error {
		resp, body := roundTrip(t, e.dial(t), req)
		if resp.StatusCode != 204 {
			return fmt.Errorf("got %d %s, want 204", resp.StatusCode, body)
		}
		return nil
	})
}

// TestHijackedConn: the gateway gets the listener's own connection (a
// *net.TCPConn, which it can splice into), and a WebSocket leaves the count
// of HTTP connections.
func TestHijackedConn(t *testing.T) {
	got := make(chan string, 1)
	hold := make(chan struct{})
	defer close(hold)
	vnc := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		_, ok := c.(*net.TCPConn)
		got <- strconv.FormatBool(ok)
		<-hold
	})
	e := newConnEnv(t, func(c *httpapi.Config) { c.MaxConnections = 10 }, func(d *httpapi.Deps) { d.VNC = vnc })
	c := e.dial(t)
	if _, err := io.WriteString(c, "GET /api/v1/sessions/"+mc.NewID()+"/vnc HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "true" {
			t.Errorf("hijacked connection is a *net.TCPConn: got %s, want true", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never ran")
	}
	if n := e.gauge(t, "mc_http_connections"); n != 0 {
		t.Errorf("got %v HTTP connections counted with one WebSocket open, want 0", n)
	}
}
