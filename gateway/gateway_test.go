package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image/color"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/master-controller/mc"
	mctest "github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/internal/wsproto"
	"github.com/master-controller/mc/rfb/rfbtest"
	"github.com/master-controller/mc/rfb/xvnctest"
	"github.com/master-controller/mc/sqlite"
	"github.com/master-controller/mc/token"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var blue = color.RGBA{0x1e, 0x6f, 0xd9, 0xff}

// env is a gateway on a real SQLite store, served over real HTTP.
type env struct {
	store  *sqlite.Store
	key    mc.Secret
	signer *token.Signer
	gw     *Gateway
	srv    *httptest.Server
	reg    *prometheus.Registry
	// Store is what the gateway sees (the SQLite store unless wrapped).
	wrap func(Store) Store
	// passwords are the machines' VNC passwords the gateway is given.
	passwords *passwords
}

// passwords is a test's source of the machines' VNC passwords: the one each
// session's machine was given (a machine key derives them in production).
type passwords struct {
	mu sync.Mutex
	m  map[string]mc.Secret
}

func newPasswords() *passwords { return &passwords{m: map[string]mc.Secret{}} }

func (p *passwords) set(sessionID string, pw mc.Secret) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[sessionID] = pw
}

// Secrets returns the VNC password set for the session, zero if none.
func (p *passwords) Secrets(sessionID string) mc.MachineSecrets {
	p.mu.Lock()
	defer p.mu.Unlock()
	return mc.MachineSecrets{VNCPassword: p.m[sessionID]}
}

func newEnv(tb testing.TB, cfg Config, opts ...func(*env)) *env {
	tb.Helper()
	st, err := sqlite.Open(tb.Context(), filepath.Join(tb.TempDir(), "mc.db"), sqlite.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	key := mc.NewSecret(32)
	e := &env{store: st, key: key, signer: token.NewSigner(key, nil), reg: prometheus.NewRegistry(), passwords: newPasswords()}
	for _, o := range opts {
		o(e)
	}
	var gs Store = st
	if e.wrap != nil {
		gs = e.wrap(st)
	}
	if cfg.LoopbackPortHi == 0 {
		cfg.LoopbackPortLo, cfg.LoopbackPortHi = 1, 65535
	}
	if cfg.DialTries == 0 {
		cfg.DialTries = 2
	}
	log := slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.gw, err = New(cfg, Deps{Store: gs, Tokens: e.signer, Logger: log, Registry: e.reg, MachineKey: e.passwords})
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /api/v1/sessions/{id}/vnc", e.gw)
	e.srv = httptest.NewServer(mux)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.gw.Shutdown(ctx)
		e.srv.Close()
	})
	return e
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// fakeVNC starts a FakeServer on loopback.
func fakeVNC(tb testing.TB, pw mc.Secret) (*rfbtest.FakeServer, netip.AddrPort) {
	tb.Helper()
	f := &rfbtest.FakeServer{Password: pw, Width: 32, Height: 24, Colour: blue}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close(); f.CloseConns() })
	go f.Serve(l)
	return f, netip.MustParseAddrPort(l.Addr().String())
}

// session creates a session and moves it to state, with the machine at addr.
func (e *env) session(tb testing.TB, state mc.State, addr netip.AddrPort, pw mc.Secret) *mc.Session {
	tb.Helper()
	ctx := tb.Context()
	now := time.Now()
	s := &mc.Session{ID: mc.NewID(), UserID: "u-" + mc.NewID(), Provider: "demo", State: mc.StatePending,
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := e.store.CreateSession(ctx, s, "test", mc.Capacity{}); err != nil {
		tb.Fatal(err)
	}
	s, err := e.store.Session(ctx, s.ID)
	if err != nil {
		tb.Fatal(err)
	}
	steps := map[mc.State][]mc.State{
		mc.StatePending:   nil,
		mc.StateStarting:  {mc.StateStarting},
		mc.StateReady:     {mc.StateStarting, mc.StateReady},
		mc.StateCapturing: {mc.StateStarting, mc.StateReady, mc.StateCapturing},
		mc.StateCompleted: {mc.StateStarting, mc.StateReady, mc.StateCapturing, mc.StateCompleted},
		mc.StateCancelled: {mc.StateCancelled},
		mc.StateFailed:    {mc.StateStarting, mc.StateFailed},
	}[state]
	for _, to := range steps {
		if to == mc.StateReady {
			s = e.setMachine(tb, s, addr, pw)
		}
		s = e.transition(tb, s, to)
	}
	return s
}

// setMachine records the session's machine at addr, whose VNC password is pw.
func (e *env) setMachine(tb testing.TB, s *mc.Session, addr netip.AddrPort, pw mc.Secret) *mc.Session {
	tb.Helper()
	m := mc.Machine{ID: s.ID, Driver: "test", IP: addr.Addr(), VNCPort: int(addr.Port()), AgentPort: 1}
	e.passwords.set(s.ID, pw)
	s, err := e.store.SetMachine(tb.Context(), s.ID, s.Version, m)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func (e *env) transition(tb testing.TB, s *mc.Session, to mc.State) *mc.Session {
	tb.Helper()
	reason := mc.Reason("")
	if to.Final() && to != mc.StateCompleted {
		reason = mc.ReasonCancelledByAPI
	}
	s, err := e.store.Transition(tb.Context(), mc.Transition{ID: s.ID, From: s.State, Version: s.Version, To: to,
		Reason: reason, Replica: "test", At: time.Now()})
	if err != nil {
		tb.Fatalf("transition to %s: %v", to, err)
	}
	return s
}

func (e *env) url(id, tok string) string {
	u := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/api/v1/sessions/" + id + "/vnc"
	if tok != "" {
		u += "?token=" + tok
	}
	return u
}

func (e *env) token(id string) string {
	t, _ := e.signer.Issue(id, time.Minute)
	return t
}

type dialOpt struct {
	origin    string
	protocols []string
}

func dial(tb testing.TB, url string, o dialOpt) *websocket.Conn {
	tb.Helper()
	h := http.Header{}
	if o.origin != "" {
		h.Set("Origin", o.origin)
	}
	if o.protocols == nil {
		o.protocols = []string{"binary"}
	}
	c, _, err := websocket.Dial(tb.Context(), url, &websocket.DialOptions{Subprotocols: o.protocols, HTTPHeader: h})
	if err != nil {
		tb.Fatalf("dial %s: %v", url, err)
	}
	tb.Cleanup(func() { c.CloseNow() })
	return c
}

// closeOf reads until the connection ends and returns the close frame.
func closeOf(tb testing.TB, c *websocket.Conn) websocket.CloseError {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 30*time.Second)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			tb.Fatalf("got %v, want a close frame", err)
		}
		return ce
	}
}

func wantClose(tb testing.TB, c *websocket.Conn, code websocket.StatusCode, reason string) {
	tb.Helper()
	ce := closeOf(tb, c)
	if ce.Code != code || ce.Reason != reason {
		tb.Fatalf("got close %d %q, want %d %q", ce.Code, ce.Reason, code, reason)
	}
}

// capture reads the screen through the gateway (security None).
func capture(tb testing.TB, c *websocket.Conn) {
	tb.Helper()
	nc := websocket.NetConn(tb.Context(), c, websocket.MessageBinary)
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	img, err := rfbtest.Capture(nc, mc.Secret{})
	if err != nil {
		tb.Fatalf("capture through the gateway: %v", err)
	}
	if got := img.RGBAAt(5, 5); got != blue {
		tb.Fatalf("got colour %v, want %v", got, blue)
	}
	nc.SetDeadline(time.Time{})
}

func TestBridge(t *testing.T) {
	e := newEnv(t, Config{})
	pw := mc.NewSecret(8)
	fake, addr := fakeVNC(t, pw)
	s := e.session(t, mc.StateReady, addr, pw)
	c := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	if got := c.Subprotocol(); got != "binary" {
		t.Errorf("got subprotocol %q, want binary", got)
	}
	capture(t, c)
	if got := fake.Authenticated.Load(); got != 1 {
		t.Errorf("got %d authenticated connections, want 1", got)
	}
	c.Close(websocket.StatusNormalClosure, "")
	if got := testutil.ToFloat64(e.gw.m.toViewer); got == 0 {
		t.Errorf("got %v bytes to viewer, want > 0", got)
	}
}

func TestTokenInSubprotocol(t *testing.T) {
	e := newEnv(t, Config{})
	pw := mc.NewSecret(8)
	_, addr := fakeVNC(t, pw)
	s := e.session(t, mc.StateReady, addr, pw)
	for _, protos := range [][]string{{"binary", TokenProtocolPrefix + e.token(s.ID)}, {TokenProtocolPrefix + e.token(s.ID)}} {
		c := dial(t, e.url(s.ID, ""), dialOpt{protocols: protos})
		capture(t, c)
		c.Close(websocket.StatusNormalClosure, "")
	}
}

// TestCloseCodes opens one connection per refusal of the contract and checks
// the close code and reason.
func TestCloseCodes(t *testing.T) {
	pw := mc.NewSecret(8)
	_, addr := fakeVNC(t, pw)
	// A closed port: nothing listens.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	// An upstream that is not RFB.
	notRFB := banner(t, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
	// A fake whose password differs from the session's.
	_, otherPW := fakeVNC(t, mc.NewSecret(8))

	e := newEnv(t, Config{ReadyTimeout: 300 * time.Millisecond})
	tests := []struct {
		name   string
		setup  func(t *testing.T) (url string, o dialOpt)
		code   websocket.StatusCode
		reason string
	}{
		{"missing token", func(t *testing.T) (string, dialOpt) {
			s := e.session(t, mc.StateReady, addr, pw)
			return e.url(s.ID, ""), dialOpt{}
		}, 4401, "viewer token missing"},
		{"garbage token", func(t *testing.T) (string, dialOpt) {
			s := e.session(t, mc.StateReady, addr, pw)
			return e.url(s.ID, "v1.abc.def"), dialOpt{}
		}, 4401, "viewer token invalid"},
		{"wrong origin", func(t *testing.T) (string, dialOpt) {
			s := e.session(t, mc.StateReady, addr, pw)
			return e.url(s.ID, e.token(s.ID)), dialOpt{origin: "https://evil.example"}
		}, 4403, "origin not allowed"},
		{"no such session", func(t *testing.T) (string, dialOpt) {
			id := mc.NewID()
			return e.url(id, e.token(id)), dialOpt{}
		}, 4404, "no such session"},
		{"cancelled", func(t *testing.T) (string, dialOpt) {
			s := e.session(t, mc.StateCancelled, addr, pw)
			return e.url(s.ID, e.token(s.ID)), dialOpt{}
		}, 4410, "the session has ended (cancelled)"},
		{"failed", func(t *testing.T) (string, dialOpt) {
			s := e.session(t, mc.StateFailed, addr, pw)
			return e.url(s.ID, e.token(s.ID)), dialOpt{}
		}, 4410, "the session has ended (failed)"},
		{"completed", func(t *testing.T) (string, dialOpt) {
			s := e.session(t, mc.StateCompleted, addr, pw)
			return e.url(s.ID, e.token(s.ID)), dialOpt{}
		}, 1000, "signed in"},
		{"not ready in time", func(t *testing.T) (string, dialOpt) {
			s := e.session(t, mc.StateStarting, addr, pw)
			return e.url(s.ID, e.token(s.ID)), dialOpt{}
		}, 1013, "the machine did not become ready in time; try again later"},
		{"unreachable", func(t *testing.T) (string, dialOpt) {
			s := e.session(t, mc.StateReady, closed, pw)
			return e.url(s.ID, e.token(s.ID)), dialOpt{}
		}, 4502, "the machine's VNC server could not be reached"},
		{"not rfb", func(t *testing.T) (string, dialOpt) {
			s := e.session(t, mc.StateReady, notRFB, pw)
			return e.url(s.ID, e.token(s.ID)), dialOpt{}
		}, 4502, "the machine's VNC server did not answer as a VNC server"},
		{"vnc password refused", func(t *testing.T) (string, dialOpt) {
			s := e.session(t, mc.StateReady, otherPW, pw)
			return e.url(s.ID, e.token(s.ID)), dialOpt{}
		}, 4502, "the machine's VNC server refused the connection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, o := tt.setup(t)
			c := dial(t, url, o)
			wantClose(t, c, tt.code, tt.reason)
		})
	}
}

// tcpServer starts a TCP server on loopback that runs handle on each
// connection, in a goroutine of its own, and then closes the connection. It
// stops accepting when the test ends.
func tcpServer(tb testing.TB, handle func(net.Conn)) netip.AddrPort {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}

// banner starts a TCP server that greets with b and then reads forever.
func banner(tb testing.TB, b string) netip.AddrPort {
	tb.Helper()
	return tcpServer(tb, func(c net.Conn) {
		io.WriteString(c, b)
		io.Copy(io.Discard, c)
	})
}

func TestSecurity(t *testing.T) {
	pw := mc.NewSecret(8)
	fake, addr := fakeVNC(t, pw)
	e := newEnv(t, Config{AllowedOrigins: []string{"app.example.com", "https://*.example.org"},
		Networks:       []netip.Prefix{netip.MustParsePrefix("10.200.0.0/24")},
		LoopbackPortLo: 1, LoopbackPortHi: int(addr.Port()) - 1})
	s := e.session(t, mc.StateReady, addr, pw)
	other := e.session(t, mc.StateReady, addr, pw)
	expiredTok := func() string {
		// Same key as the gateway's signer, issued an hour ago for one minute.
		return issueAt(e, s.ID, time.Now().Add(-time.Hour))
	}
	forged, _ := token.NewSigner(mc.NewSecret(32), nil).Issue(s.ID, time.Minute)
	tests := []struct {
		name   string
		url    string
		origin string
		code   websocket.StatusCode
		reason string
	}{
		{"expired token", e.url(s.ID, expiredTok()), "", 4401, "viewer token expired"},
		{"token for another session", e.url(s.ID, e.token(other.ID)), "", 4403, "viewer token is not for this session"},
		{"token for another, malformed id", e.url("not-an-id", e.token(other.ID)), "", 4403, "viewer token is not for this session"},
		{"forged signature", e.url(s.ID, forged), "", 4401, "viewer token invalid"},
		{"wrong origin", e.url(s.ID, e.token(s.ID)), "https://evil.example", 4403, "origin not allowed"},
		{"wrong origin scheme", e.url(s.ID, e.token(s.ID)), "http://a.example.org", 4403, "origin not allowed"},
		{"address outside the network", e.url(s.ID, e.token(s.ID)), "https://app.example.com", 4502, "the machine's VNC server could not be reached"},
		{"address outside, allowed origin pattern", e.url(s.ID, e.token(s.ID)), "https://x.example.org", 4502, "the machine's VNC server could not be reached"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, tt.url, dialOpt{origin: tt.origin})
			wantClose(t, c, tt.code, tt.reason)
		})
	}
	if got := fake.Accepted.Load(); got != 0 {
		t.Errorf("got %d connections to the VNC listener, want 0", got)
	}
	if got := testutil.ToFloat64(e.gw.m.upgrades.WithLabelValues(string(ReasonAddressNotAllowed))); got != 2 {
		t.Errorf("got %v address_not_allowed outcomes, want 2", got)
	}
}

// issueAt issues a one-minute token with e's key as if at t.
func issueAt(e *env, id string, at time.Time) string {
	tok, _ := token.NewSigner(e.key, mctest.NewClock(at)).Issue(id, time.Minute)
	return tok
}

func TestWaitForReady(t *testing.T) {
	e := newEnv(t, Config{PingInterval: time.Second})
	pw := mc.NewSecret(8)
	_, addr := fakeVNC(t, pw)
	s := e.session(t, mc.StatePending, addr, pw)
	c := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	// Wait until the gateway watches (it has claimed the session).
	waitFor(t, func() bool {
		got, err := e.store.Session(t.Context(), s.ID)
		return err == nil && got.Viewer != ""
	})
	s = e.transition(t, s, mc.StateStarting)
	s = e.setMachine(t, s, addr, pw)
	e.transition(t, s, mc.StateReady)
	capture(t, c)
	if got := testutil.CollectAndCount(e.gw.m.waitReady); got != 1 {
		t.Errorf("got %d wait histograms, want 1", got)
	}
}

// waitFor polls cond with the tests' one poll helper, for up to 20 s.
func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	mctest.WaitFor(tb, 20*time.Second, "condition", func() error {
		if !cond() {
			return errors.New("not met")
		}
		return nil
	})
}

func TestEndsWhileBridging(t *testing.T) {
	pw := mc.NewSecret(8)
	tests := []struct {
		name   string
		end    func(e *env, s *mc.Session, fake *rfbtest.FakeServer)
		code   websocket.StatusCode
		reason string
	}{
		{"completed", func(e *env, s *mc.Session, _ *rfbtest.FakeServer) {
			s = e.transition(t, s, mc.StateCapturing)
			e.transition(t, s, mc.StateCompleted)
		}, 1000, "signed in"},
		{"cancelled", func(e *env, s *mc.Session, _ *rfbtest.FakeServer) {
			e.transition(t, s, mc.StateCancelled)
		}, 4410, "the session has ended (cancelled)"},
		{"machine gone", func(e *env, s *mc.Session, fake *rfbtest.FakeServer) {
			fake.CloseConns()
		}, 4503, "the machine went away"},
		// The cluster takes the machine (a deleted or evicted Pod): the
		// session fails before its stream breaks.
		{"machine evicted", func(e *env, s *mc.Session, _ *rfbtest.FakeServer) {
			if _, err := e.store.Transition(t.Context(), mc.Transition{ID: s.ID, From: s.State, Version: s.Version,
				To: mc.StateFailed, Reason: mc.ReasonMachineEvicted, Replica: "test", At: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}, 4503, "the machine went away (machine_evicted)"},
		{"shutdown", func(e *env, s *mc.Session, _ *rfbtest.FakeServer) {
			go e.gw.Shutdown(context.Background())
		}, 1001, "the server is shutting down; reconnect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			fake, addr := fakeVNC(t, pw)
			s := e.session(t, mc.StateReady, addr, pw)
			c := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
			capture(t, c)
			tt.end(e, s, fake)
			wantClose(t, c, tt.code, tt.reason)
		})
	}
}

func TestShutdownWhileWaiting(t *testing.T) {
	e := newEnv(t, Config{})
	s := e.session(t, mc.StateStarting, netip.AddrPort{}, mc.Secret{})
	c := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	waitFor(t, func() bool { return testutil.ToFloat64(e.gw.m.waiting) == 1 })
	done := make(chan error, 1)
	go func() { done <- e.gw.Shutdown(t.Context()) }()
	wantClose(t, c, 1001, "the server is shutting down; reconnect")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A new connection after shutdown is refused the same way.
	c2 := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	wantClose(t, c2, 1001, "the server is shutting down; reconnect")
}

func TestTakeOver(t *testing.T) {
	e := newEnv(t, Config{})
	pw := mc.NewSecret(8)
	_, addr := fakeVNC(t, pw)
	s := e.session(t, mc.StateReady, addr, pw)
	a := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	capture(t, a)
	b := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	wantClose(t, a, 4409, "another viewer took over this session")
	capture(t, b)
}

func TestTakeOverWhileWaiting(t *testing.T) {
	e := newEnv(t, Config{})
	s := e.session(t, mc.StateStarting, netip.AddrPort{}, mc.Secret{})
	a := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	// Wait until a has claimed the session (the waiting gauge rises after
	// ClaimViewer and Watch), not merely until it is registered: the last
	// claim wins, so a b that claims before a would be the one taken over.
	waitFor(t, func() bool { return testutil.ToFloat64(e.gw.m.waiting) == 1 })
	b := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	wantClose(t, a, 4409, "another viewer took over this session")
	b.Close(websocket.StatusNormalClosure, "")
}

// heldClaimStore holds the first ClaimViewer until a second one has
// returned, as a viewer's goroutine descheduled under load would be.
type heldClaimStore struct {
	Store
	mu      sync.Mutex
	n       int
	entered chan struct{} // closed when the first ClaimViewer has begun
	second  chan struct{} // closed when the second ClaimViewer has returned
}

func (s *heldClaimStore) ClaimViewer(ctx context.Context, id, viewer string) (*mc.Session, error) {
	s.mu.Lock()
	s.n++
	n := s.n
	s.mu.Unlock()
	switch n {
	case 1:
		close(s.entered)
		select {
		case <-s.second:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case 2:
		defer close(s.second)
	}
	return s.Store.ClaimViewer(ctx, id, viewer)
}

// TestTakeOverLastClaimWins pins down that the viewer whose claim lands
// last keeps the session, whatever the order of the connections: a viewer
// that connected first but claimed after a second one takes over from it.
func TestTakeOverLastClaimWins(t *testing.T) {
	held := &heldClaimStore{entered: make(chan struct{}), second: make(chan struct{})}
	e := newEnv(t, Config{}, func(e *env) {
		e.wrap = func(s Store) Store { held.Store = s; return held }
	})
	pw := mc.NewSecret(8)
	_, addr := fakeVNC(t, pw)
	s := e.session(t, mc.StateStarting, netip.AddrPort{}, mc.Secret{})
	a := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	select {
	case <-held.entered: // a's claim is the held one
	case <-t.Context().Done():
		t.Fatal(t.Context().Err())
	}
	b := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	wantClose(t, b, 4409, "another viewer took over this session")
	// a keeps the session: it is bridged once the machine is ready.
	s = e.setMachine(t, s, addr, pw)
	e.transition(t, s, mc.StateReady)
	capture(t, a)
}

func TestSharedViewers(t *testing.T) {
	e := newEnv(t, Config{MaxViewers: 2})
	pw := mc.NewSecret(8)
	_, addr := fakeVNC(t, pw)
	s := e.session(t, mc.StateReady, addr, pw)
	a := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	capture(t, a)
	b := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	capture(t, b) // both connected
	c := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	wantClose(t, a, 4409, "another viewer took over this session")
	capture(t, c)
}

// errStore fails Session with an internal error.
type errStore struct{ Store }

func (errStore) Session(ctx context.Context, id string) (*mc.Session, error) {
	return nil, errors.New("disk on fire")
}

func TestInternalError(t *testing.T) {
	e := newEnv(t, Config{}, func(e *env) { e.wrap = func(s Store) Store { return errStore{s} } })
	id := mc.NewID()
	c := dial(t, e.url(id, e.token(id)), dialOpt{})
	wantClose(t, c, 1011, "internal error")
}

// rawUpgrade opens the viewer WebSocket of session id with a request
// written by hand (extra: more header lines, each ending in CRLF; a Host
// line there replaces the real one) and returns the reader after the 101.
func rawUpgrade(tb testing.TB, e *env, id, extra string) *bufio.Reader {
	tb.Helper()
	u := strings.TrimPrefix(e.srv.URL, "http://")
	conn, err := net.Dial("tcp", u)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	host := "Host: " + u + "\r\n"
	if strings.Contains(extra, "Host:") {
		host = ""
	}
	req := "GET /api/v1/sessions/" + id + "/vnc?token=" + e.token(id) + " HTTP/1.1\r\n" + host + extra +
		"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		tb.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("got %v, %v; want 101", resp, err)
	}
	return br
}

// rawClose reads frames until the close frame and returns its code and text.
func rawClose(tb testing.TB, br *bufio.Reader) (int, string) {
	tb.Helper()
	for {
		op, p := readMessage(tb, br)
		if op == wsproto.OpClose {
			if len(p) < 2 {
				return 1005, ""
			}
			return int(binary.BigEndian.Uint16(p)), string(p[2:])
		}
	}
}

// TestOriginIsNotTheHost checks that the Origin is compared with the public
// URL and the allow-list, never with the request's Host: a page on
// evil.example that reaches the server under that name is refused.
func TestOriginIsNotTheHost(t *testing.T) {
	e := newEnv(t, Config{PublicURL: "https://mc.example.com/base", AllowedOrigins: []string{"app.example.org"}})
	tests := []struct {
		name, headers string
		code          int
	}{
		{"origin and host both evil", "Host: evil.example\r\nOrigin: https://evil.example\r\n", 4403},
		{"origin equal to the real host", "Origin: " + e.srv.URL + "\r\n", 4403},
		{"public origin, any host", "Host: evil.example\r\nOrigin: https://mc.example.com\r\n", 4410},
		{"public origin, default port spelled", "Origin: https://MC.example.com:443\r\n", 4410},
		{"public host, other scheme", "Origin: http://mc.example.com\r\n", 4403},
		{"allow-listed", "Host: evil.example\r\nOrigin: https://app.example.org\r\n", 4410},
		{"no origin: not a browser", "", 4410},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := e.session(t, mc.StateCancelled, netip.AddrPort{}, mc.Secret{})
			code, text := rawClose(t, rawUpgrade(t, e, s.ID, tt.headers))
			if code != tt.code {
				t.Fatalf("got close %d %q, want %d", code, text, tt.code)
			}
		})
	}
}

// TestPingTimeout checks that a viewer whose pongs stop is closed with its
// own code, 4408 ping_timeout (1001 would tell it the replica is stopping),
// without waiting for its close frame.
func TestPingTimeout(t *testing.T) {
	e := newEnv(t, Config{PingInterval: 100 * time.Millisecond})
	s := e.session(t, mc.StateStarting, netip.AddrPort{}, mc.Secret{})
	// A raw client that completes the upgrade and then reads, but never
	// answers a ping.
	br := rawUpgrade(t, e, s.ID, "")
	pings := 0
	for {
		op, p := readMessage(t, br)
		if op == wsproto.OpPing {
			pings++
			continue
		}
		if op != wsproto.OpClose || len(p) < 2 {
			t.Fatalf("got frame %#x %q, want pings then a close", op, p)
		}
		if code, text := binary.BigEndian.Uint16(p), string(p[2:]); code != 4408 || text != "the viewer stopped answering pings" {
			t.Fatalf("got close %d %q, want 4408 %q", code, text, "the viewer stopped answering pings")
		}
		break
	}
	if pings == 0 {
		t.Error("got no ping before the close")
	}
	// The gateway does not wait for the close frame of a viewer that does
	// not answer: it has closed the socket.
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("got %v after the close frame, want EOF", err)
	}
	waitFor(t, func() bool {
		return testutil.ToFloat64(e.gw.m.upgrades.WithLabelValues(string(ReasonPingTimeout))) == 1
	})
}

// TestBridgeXvnc bridges a viewer to a real TigerVNC server with its own
// password; the viewer authenticates with nothing but the token.
func TestBridgeXvnc(t *testing.T) {
	e := newEnv(t, Config{})
	pw := mc.NewSecret(8)
	addr := xvnctest.StartXvnc(t, pw, 320, 200)
	s := e.session(t, mc.StateReady, addr, pw)
	c := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	nc := websocket.NetConn(t.Context(), c, websocket.MessageBinary)
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	img, err := rfbtest.Capture(nc, mc.Secret{})
	if err != nil {
		t.Fatalf("capture through the gateway: %v", err)
	}
	if got := img.Bounds().Dx(); got != 320 {
		t.Errorf("got width %d, want 320", got)
	}
	// A reload takes over and sees the screen again.
	c2 := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	wantClose(t, c, 4409, "another viewer took over this session")
	nc2 := websocket.NetConn(t.Context(), c2, websocket.MessageBinary)
	nc2.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := rfbtest.Capture(nc2, mc.Secret{}); err != nil {
		t.Fatalf("capture after take-over: %v", err)
	}
}

// TestManyViewersWhileStarting is the old controller's failure at the
// gateway: viewers connect while their sessions start; every one must get
// the RFB handshake once its session is ready, none an abnormal closure.
func TestManyViewersWhileStarting(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 20
	}
	e := newEnv(t, Config{})
	pw := mc.NewSecret(8)
	_, addr := fakeVNC(t, pw)
	sessions := make([]*mc.Session, n)
	for i := range sessions {
		sessions[i] = e.session(t, mc.StatePending, addr, pw)
	}
	errs := make(chan error, n)
	for _, s := range sessions {
		go func() {
			c, _, err := websocket.Dial(t.Context(), e.url(s.ID, e.token(s.ID)), &websocket.DialOptions{Subprotocols: []string{"binary"}})
			if err != nil {
				errs <- fmt.Errorf("dial: %w", err)
				return
			}
			defer c.CloseNow()
			nc := websocket.NetConn(t.Context(), c, websocket.MessageBinary)
			nc.SetDeadline(time.Now().Add(60 * time.Second))
			if _, err := rfbtest.Capture(nc, mc.Secret{}); err != nil {
				errs <- fmt.Errorf("session %s: %w (close status %d)", s.ID, err, websocket.CloseStatus(err))
				return
			}
			errs <- c.Close(websocket.StatusNormalClosure, "")
		}()
	}
	// Start the sessions once every viewer waits.
	waitFor(t, func() bool { return testutil.ToFloat64(e.gw.m.waiting) == float64(n) })
	for _, s := range sessions {
		s = e.transition(t, s, mc.StateStarting)
		s = e.setMachine(t, s, addr, pw)
		e.transition(t, s, mc.StateReady)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	// The server records an outcome after the client's close returns:
	// wait for the last ones, then check the count exactly.
	clientGone := e.gw.m.upgrades.WithLabelValues(string(ReasonClientGone))
	waitFor(t, func() bool { return testutil.ToFloat64(clientGone) >= float64(n) })
	if got := testutil.ToFloat64(clientGone); got != float64(n) {
		t.Errorf("got %v viewer-closed outcomes, want %d", got, n)
	}
}
