package web_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/browsertest"
	"github.com/master-controller/mc/web"
)

// waitTimeout bounds every wait on the server side of these tests.
const waitTimeout = 30 * time.Second

// fakeGateway is the gateway's WebSocket endpoint
// /api/v1/sessions/{id}/vnc as the viewer page sees it: it counts upgrades per
// session, checks the token, and then runs the session's scenario.
type fakeGateway struct {
	token string
	// fallback serves the sessions that have no scenario of their own;
	// without it they get 4404.
	fallback func(ctx context.Context, c *websocket.Conn)

	mu        sync.Mutex
	scenarios map[string]func(ctx context.Context, c *websocket.Conn)
	attempts  map[string]int
	protocols map[string][]string // the negotiated subprotocol of each upgrade
	changed   chan struct{}       // closed and replaced on every upgrade
}

func newFakeGateway(token string) *fakeGateway {
	return &fakeGateway{
		token:     token,
		scenarios: map[string]func(context.Context, *websocket.Conn){},
		attempts:  map[string]int{},
		protocols: map[string][]string{},
		changed:   make(chan struct{}),
	}
}

func (g *fakeGateway) handle(id string, scenario func(ctx context.Context, c *websocket.Conn)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.scenarios[id] = scenario
}

func (g *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"binary"}})
	if err != nil {
		return
	}
	g.mu.Lock()
	g.attempts[id]++
	g.protocols[id] = append(g.protocols[id], c.Subprotocol())
	scenario := g.scenarios[id]
	if scenario == nil {
		scenario = g.fallback
	}
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()

	if r.URL.Query().Get("token") != g.token {
		c.Close(4401, "token missing, invalid or expired")
		return
	}
	if scenario == nil {
		c.Close(4404, "no such session")
		return
	}
	scenario(r.Context(), c)
}

func (g *fakeGateway) count(id string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.attempts[id]
}

// waitAttempts waits until session id has had at least n upgrades.
func (g *fakeGateway) waitAttempts(tb testing.TB, id string, n int) {
	tb.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		g.mu.Lock()
		got, ch := g.attempts[id], g.changed
		g.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			tb.Fatalf("upgrades of %s: got %d, want at least %d", id, got, n)
		}
	}
}

func closeWith(code int, reason string) func(context.Context, *websocket.Conn) {
	return func(_ context.Context, c *websocket.Conn) {
		c.Close(websocket.StatusCode(code), reason)
	}
}

// startViewerServer serves the pages and the fake gateway on loopback.
func startViewerServer(tb testing.TB, g *fakeGateway) *httptest.Server {
	tb.Helper()
	h := newHandler(tb, web.Config{})
	mux := http.NewServeMux()
	mux.Handle("GET /api/v1/sessions/{id}/vnc", g)
	mux.Handle("/", h)
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	return srv
}

func viewURL(srv *httptest.Server, id, token string) string {
	return srv.URL + "/sessions/" + id + "/view?token=" + url.QueryEscape(token)
}

// TestViewerCloseCodes opens the viewer page in headless Chromium against
// a gateway that closes at once with each code of the contract.
func TestViewerCloseCodes(t *testing.T) {
	const token = "v1.test-token.mac"
	g := newFakeGateway(token)
	srv := startViewerServer(t, g)
	browser := browsertest.New(t)

	tests := []struct {
		name      string
		code      int
		reason    string
		fragment  bool   // give the token in the URL's fragment
		wantState string // final or stable state
		wantText  string // in the status line
		final     bool   // no reconnect
	}{
		{name: "ended", code: 4410, reason: "the session has ended", wantState: "ended", wantText: "The session has ended", final: true},
		{name: "ended token in fragment", code: 4410, reason: "the session was cancelled", fragment: true, wantState: "ended", wantText: "The session was cancelled", final: true},
		{name: "bad token", code: 4401, reason: "token missing, invalid or expired", wantState: "ended", wantText: "Token missing, invalid or expired", final: true},
		{name: "forbidden", code: 4403, reason: "origin not allowed", wantState: "ended", wantText: "Origin not allowed", final: true},
		{name: "no such session", code: 4404, reason: "", wantState: "ended", wantText: "No such session", final: true},
		{name: "signed in", code: 1000, reason: "signed in", wantState: "signed-in", wantText: "Signed in — you can close this window", final: true},
		{name: "taken over", code: 4409, reason: "another viewer took over this session", wantState: "taken-over", wantText: "Another viewer took over this session", final: true},
		{name: "try again later", code: 1013, reason: "the machine did not become ready in time", wantState: "reconnecting", wantText: "The machine did not become ready in time — reconnecting in"},
		{name: "machine unreachable", code: 4502, reason: "the machine's VNC server could not be reached", wantState: "reconnecting", wantText: "reconnecting in"},
		{name: "replica shutting down", code: 1001, reason: "", wantState: "reconnecting", wantText: "The server is restarting — reconnecting in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := browser.For(t)
			id := mc.NewID()
			g.handle(id, closeWith(tt.code, tt.reason))
			u := viewURL(srv, id, token)
			if tt.fragment {
				u = srv.URL + "/sessions/" + id + "/view#token=" + url.QueryEscape(token)
			}
			b.Open(u)
			b.WaitState(tt.wantState)
			if got := b.Text("#status"); !strings.Contains(got, tt.wantText) {
				t.Errorf("status line: got %q, want it to contain %q", got, tt.wantText)
			}
			var v struct {
				LastCloseCode   int
				LastCloseReason string
				RetryScheduled  bool
				Attempts        int
				Search, Hash    string
			}
			b.MustEval(`({LastCloseCode: mcViewer.lastCloseCode, LastCloseReason: mcViewer.lastCloseReason,
				RetryScheduled: mcViewer.retryScheduled, Attempts: mcViewer.attempts,
				Search: location.search, Hash: location.hash})`, &v)
			if v.LastCloseCode != tt.code || v.LastCloseReason != tt.reason {
				t.Errorf("mcViewer close: got %d %q, want %d %q", v.LastCloseCode, v.LastCloseReason, tt.code, tt.reason)
			}
			if strings.Contains(v.Search+v.Hash, "token") {
				t.Errorf("address bar still holds the token: %q %q", v.Search, v.Hash)
			}
			if tt.final {
				// The page has no reconnect pending and made one attempt, and
				// the server saw exactly one upgrade.
				if v.RetryScheduled || v.Attempts != 1 {
					t.Errorf("after a final close: retryScheduled %v, attempts %d; want false, 1", v.RetryScheduled, v.Attempts)
				}
				if got := g.count(id); got != 1 {
					t.Errorf("upgrades: got %d, want 1", got)
				}
			} else {
				if !v.RetryScheduled {
					t.Errorf("after close %d: no reconnect scheduled", tt.code)
				}
				g.waitAttempts(t, id, 2)
				b.WaitJS("mcViewer.attempts >= 2")
			}
			switch tt.wantState {
			case "taken-over":
				if !b.Visible("#takeover") {
					t.Fatalf("the Take over button is not visible")
				}
				b.Click("#takeover")
				g.waitAttempts(t, id, 2)
				b.WaitJS("mcViewer.attempts === 2 && mcViewer.state === 'taken-over'")
			case "signed-in", "ended":
				if b.Visible("#takeover") || b.Visible("#retry") {
					t.Errorf("a final state shows the Take over or Reconnect button")
				}
				if !b.Visible("#overlay") {
					t.Errorf("a final state shows no overlay")
				}
			}
			g.mu.Lock()
			for i, p := range g.protocols[id] {
				if p != "binary" {
					t.Errorf("upgrade %d: subprotocol %q, want binary", i+1, p)
				}
			}
			g.mu.Unlock()
		})
	}
}

// TestViewerConnected runs the page against a small RFB server behind the
// fake gateway: it connects, shows the remote pixels, sends clicks at the
// right remote coordinates, carries the clipboard both ways, reconnects on
// reload, hands over on 4409 and ends on 1000.
func TestViewerConnected(t *testing.T) {
	const token = "v1.connected-token.mac"
	g := newFakeGateway(token)
	srv := startViewerServer(t, g)
	rs := &rfbServer{width: 320, height: 200, color: color.RGBA{0x1e, 0x6f, 0xd9, 0xff},
		conns: make(chan *rfbConn, 8)}
	id := mc.NewID()
	g.handle(id, rs.serve)
	b := browsertest.New(t)

	b.Open(viewURL(srv, id, token))
	b.WaitState("connected")
	conn := rs.next(t)
	if got := b.Text("#status"); got != "Connected" {
		t.Errorf("status line: got %q, want Connected", got)
	}
	var search string
	b.MustEval("location.search", &search)
	if search != "" {
		t.Errorf("location.search after load: got %q, want the token removed", search)
	}

	// The canvas holds the remote screen at its own size and colour.
	if w, h := b.CanvasSize(); w != rs.width || h != rs.height {
		t.Errorf("canvas size: got %dx%d, want %dx%d", w, h, rs.width, rs.height)
	}
	b.WaitCanvas("the remote colour", func(img image.Image) bool {
		return color.RGBAModel.Convert(img.At(5, 5)) == rs.color
	})
	img := b.CanvasImage()
	if got := color.RGBAModel.Convert(img.At(160, 100)).(color.RGBA); got != rs.color {
		t.Errorf("canvas pixel (160,100): got %v, want %v", got, rs.color)
	}
	shot := b.Screenshot("#screen canvas")
	if got := color.RGBAModel.Convert(shot.At(shot.Bounds().Dx()/2, shot.Bounds().Dy()/2)).(color.RGBA); got != rs.color {
		t.Errorf("screenshot centre: got %v, want %v", got, rs.color)
	}

	// Full window, no scrollbars: the page fits its viewport.
	var fits bool
	b.MustEval(`document.documentElement.scrollWidth <= innerWidth && document.documentElement.scrollHeight <= innerHeight`, &fits)
	if !fits {
		t.Errorf("the viewer page overflows its window")
	}

	// A click in remote coordinates arrives as RFB pointer events there.
	for _, p := range [][2]int{{100, 50}, {7, 193}} {
		b.ClickCanvas(p[0], p[1])
		conn.waitPointer(t, 1, p[0], p[1])
		conn.waitPointer(t, 0, p[0], p[1])
	}

	// Clipboard: remote → page.
	conn.sendCutText(t, "hello from remote")
	b.WaitJS(`document.getElementById('clipboard').value === 'hello from remote'`)
	// Clipboard: page → remote.
	b.Click("#clipboard-toggle")
	b.SetValue("#clipboard", "from the page")
	b.Click("#clipboard-send")
	conn.waitCutText(t, "from the page")

	// A reload reconnects with the token kept in sessionStorage.
	b.Reload()
	b.WaitState("connected")
	conn = rs.next(t)
	if got := g.count(id); got != 2 {
		t.Errorf("upgrades after reload: got %d, want 2", got)
	}

	// Another viewer takes over: the page offers to take it back.
	conn.close(4409, "another viewer took over this session")
	b.WaitState("taken-over")
	b.Click("#takeover")
	b.WaitState("connected")
	conn = rs.next(t)
	var count int
	b.MustEval("mcViewer.connectedCount", &count)
	if count != 2 {
		t.Errorf("connectedCount after take-over: got %d, want 2", count)
	}

	// A lost connection (the machine went away) reconnects by itself.
	conn.close(4503, "the machine went away")
	b.WaitState("reconnecting")
	b.WaitState("connected")
	conn = rs.next(t)

	// Sign-in completes: the viewer closes with 1000.
	conn.close(1000, "signed in")
	b.WaitState("signed-in")
	if got, want := b.Text("#status"), "Signed in — you can close this window"; got != want {
		t.Errorf("status line: got %q, want %q", got, want)
	}
	if got := g.count(id); got != 4 {
		t.Errorf("upgrades: got %d, want 4", got)
	}
}

// rfbServer is a minimal RFB 3.8 server (security None, raw encoding, one
// solid colour) that records what the client sends.
type rfbServer struct {
	width, height int
	color         color.RGBA
	conns         chan *rfbConn
}

type rfbConn struct {
	ws      *websocket.Conn
	nc      net.Conn
	wmu     sync.Mutex
	pointer chan [3]int // button mask, x, y
	cut     chan string
	done    chan struct{}
}

func (s *rfbServer) next(tb testing.TB) *rfbConn {
	tb.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(waitTimeout):
		tb.Fatalf("no RFB connection")
		return nil
	}
}

func (s *rfbServer) serve(ctx context.Context, ws *websocket.Conn) {
	c := &rfbConn{ws: ws, nc: websocket.NetConn(ctx, ws, websocket.MessageBinary),
		pointer: make(chan [3]int, 256), cut: make(chan string, 16), done: make(chan struct{})}
	defer close(c.done)
	if err := c.run(s); err != nil && !errors.Is(err, io.EOF) && websocket.CloseStatus(err) == -1 && ctx.Err() == nil {
		ws.Close(websocket.StatusInternalError, err.Error())
	}
}

func (c *rfbConn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

func (c *rfbConn) run(s *rfbServer) error {
	r := c.nc
	if err := c.write([]byte("RFB 003.008\n")); err != nil {
		return err
	}
	buf := make([]byte, 12)
	if _, err := io.ReadFull(r, buf); err != nil {
		return err
	}
	if err := c.write([]byte{1, 1}); err != nil { // one security type: None
		return err
	}
	if _, err := io.ReadFull(r, buf[:1]); err != nil || buf[0] != 1 {
		return fmt.Errorf("security type %d: %v", buf[0], err)
	}
	if err := c.write([]byte{0, 0, 0, 0}); err != nil { // SecurityResult OK
		return err
	}
	if _, err := io.ReadFull(r, buf[:1]); err != nil { // ClientInit
		return err
	}
	name := "fake"
	init := binary.BigEndian.AppendUint16(nil, uint16(s.width))
	init = binary.BigEndian.AppendUint16(init, uint16(s.height))
	init = append(init, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0)
	init = binary.BigEndian.AppendUint32(init, uint32(len(name)))
	init = append(init, name...)
	if err := c.write(init); err != nil {
		return err
	}
	shift := [3]uint{16, 8, 0}
	bpp := 32
	announced := false
	for {
		if _, err := io.ReadFull(r, buf[:1]); err != nil {
			return err
		}
		switch buf[0] {
		case 0: // SetPixelFormat
			pf := make([]byte, 19)
			if _, err := io.ReadFull(r, pf); err != nil {
				return err
			}
			bpp = int(pf[3])
			shift = [3]uint{uint(pf[13]), uint(pf[14]), uint(pf[15])}
			if bpp != 32 || pf[5] != 0 {
				return fmt.Errorf("pixel format %v not supported by the test server", pf)
			}
		case 2: // SetEncodings
			if _, err := io.ReadFull(r, buf[:3]); err != nil {
				return err
			}
			n := int(binary.BigEndian.Uint16(buf[1:3]))
			if _, err := io.CopyN(io.Discard, r, int64(4*n)); err != nil {
				return err
			}
		case 3: // FramebufferUpdateRequest
			if _, err := io.ReadFull(r, buf[:9]); err != nil {
				return err
			}
			if buf[0] != 0 { // incremental: nothing changes here
				continue
			}
			px := uint32(s.color.R)<<shift[0] | uint32(s.color.G)<<shift[1] | uint32(s.color.B)<<shift[2]
			msg := []byte{0, 0, 0, 1, 0, 0, 0, 0}
			msg = binary.BigEndian.AppendUint16(msg, uint16(s.width))
			msg = binary.BigEndian.AppendUint16(msg, uint16(s.height))
			msg = append(msg, 0, 0, 0, 0) // raw
			for range s.width * s.height {
				msg = binary.LittleEndian.AppendUint32(msg, px)
			}
			if err := c.write(msg); err != nil {
				return err
			}
			if !announced {
				announced = true
				s.conns <- c
			}
		case 4: // KeyEvent
			if _, err := io.ReadFull(r, buf[:7]); err != nil {
				return err
			}
		case 5: // PointerEvent
			if _, err := io.ReadFull(r, buf[:5]); err != nil {
				return err
			}
			select {
			case c.pointer <- [3]int{int(buf[0]), int(binary.BigEndian.Uint16(buf[1:3])), int(binary.BigEndian.Uint16(buf[3:5]))}:
			default:
			}
		case 6: // ClientCutText
			if _, err := io.ReadFull(r, buf[:7]); err != nil {
				return err
			}
			n := int32(binary.BigEndian.Uint32(buf[3:7]))
			if n < 0 || n > 1<<20 {
				return fmt.Errorf("cut text length %d", n)
			}
			text := make([]byte, n)
			if _, err := io.ReadFull(r, text); err != nil {
				return err
			}
			c.cut <- string(text)
		default:
			return fmt.Errorf("unexpected client message type %d", buf[0])
		}
	}
}

func (c *rfbConn) waitPointer(tb testing.TB, mask, x, y int) {
	tb.Helper()
	deadline := time.After(waitTimeout)
	var seen [][3]int
	for {
		select {
		case p := <-c.pointer:
			if p == [3]int{mask, x, y} {
				return
			}
			seen = append(seen, p)
		case <-deadline:
			tb.Fatalf("pointer event mask %d at (%d,%d): not received; got %v", mask, x, y, seen)
		}
	}
}

func (c *rfbConn) sendCutText(tb testing.TB, text string) {
	tb.Helper()
	msg := []byte{3, 0, 0, 0}
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(text)))
	msg = append(msg, text...)
	if err := c.write(msg); err != nil {
		tb.Fatalf("send ServerCutText: %v", err)
	}
}

func (c *rfbConn) waitCutText(tb testing.TB, want string) {
	tb.Helper()
	select {
	case got := <-c.cut:
		if got != want {
			tb.Errorf("ClientCutText: got %q, want %q", got, want)
		}
	case <-time.After(waitTimeout):
		tb.Fatalf("ClientCutText %q: not received", want)
	}
}

func (c *rfbConn) close(code int, reason string) {
	c.ws.Close(websocket.StatusCode(code), reason)
	<-c.done
}

// TestViewerStartingMachine: while the gateway holds the WebSocket open
// and waits for the machine (no RFB bytes yet), the page says so; when the
// machine answers, it connects.
func TestViewerStartingMachine(t *testing.T) {
	const token = "v1.starting-token.mac"
	g := newFakeGateway(token)
	srv := startViewerServer(t, g)
	rs := &rfbServer{width: 64, height: 48, color: color.RGBA{0, 0x80, 0, 0xff}, conns: make(chan *rfbConn, 1)}
	ready := make(chan struct{})
	id := mc.NewID()
	g.handle(id, func(ctx context.Context, c *websocket.Conn) {
		select {
		case <-ready:
		case <-ctx.Done():
			return
		}
		rs.serve(ctx, c)
	})
	b := browsertest.New(t)
	b.Open(viewURL(srv, id, token))
	b.WaitState("starting")
	if got, want := b.Text("#status"), "Starting machine…"; got != want {
		t.Errorf("status line: got %q, want %q", got, want)
	}
	close(ready)
	b.WaitState("connected")
	rs.next(t)
}

// TestViewerUnderPrefix: behind a proxy that mounts the controller under a
// path prefix, the page finds its scripts, noVNC and the gateway under the
// same prefix.
func TestViewerUnderPrefix(t *testing.T) {
	const token = "v1.prefix-token.mac"
	g := newFakeGateway(token)
	mux := http.NewServeMux()
	mux.Handle("GET /api/v1/sessions/{id}/vnc", g)
	mux.Handle("/", newHandler(t, web.Config{}))
	outer := http.NewServeMux()
	outer.Handle("/mc/", http.StripPrefix("/mc", mux))
	srv := httptest.NewServer(outer)
	t.Cleanup(srv.Close)
	id := mc.NewID()
	g.handle(id, closeWith(4410, "the session has expired"))

	b := browsertest.New(t)
	b.Open(srv.URL + "/mc/sessions/" + id + "/view?token=" + token)
	b.WaitState("ended")
	if got, want := b.Text("#status"), "The session has expired"; got != want {
		t.Errorf("status line: got %q, want %q", got, want)
	}
	b.Open(srv.URL + "/mc/")
	b.WaitJS("document.body.dataset.state === 'ready' && getComputedStyle(document.querySelector('header')).display === 'flex'")
}

// TestViewerRetriesLoadingNoVNC: when noVNC fails to load (a proxy hiccup),
// the page reloads itself and then connects.
func TestViewerRetriesLoadingNoVNC(t *testing.T) {
	const token = "v1.retry-token.mac"
	g := newFakeGateway(token)
	h := newHandler(t, web.Config{})
	var mu sync.Mutex
	failures := 1
	loads := 0
	mux := http.NewServeMux()
	mux.Handle("GET /api/v1/sessions/{id}/vnc", g)
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/core/rfb.js") {
			mu.Lock()
			loads++
			fail := failures > 0
			failures--
			mu.Unlock()
			if fail {
				http.Error(w, "upstream hiccup", http.StatusBadGateway)
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	id := mc.NewID()
	g.handle(id, closeWith(4410, "the session has ended"))

	b := browsertest.New(t)
	b.Open(viewURL(srv, id, token))
	b.WaitState("ended")
	mu.Lock()
	defer mu.Unlock()
	if loads != 2 {
		t.Errorf("loads of rfb.js: got %d, want 2", loads)
	}
	if got := g.count(id); got != 1 {
		t.Errorf("upgrades: got %d, want 1", got)
	}
}
