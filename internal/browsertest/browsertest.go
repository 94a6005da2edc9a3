// Package browsertest drives a real headless Chromium (Debian's
// /usr/bin/chromium) from tests, through the Chrome DevTools protocol
// (chromedp). It is made for the viewer page: wait for its state, look at the
// remote screen's pixels, and click in the remote screen with real mouse
// events, so that noVNC sends RFB pointer events as it would for a person.
//
// Typical use:
//
//	b := browsertest.New(t)
//	b.Open(srv.URL + "/sessions/" + id + "/view?token=" + tok)
//	b.WaitState("connected")
//	img := b.CanvasImage()   // the remote framebuffer, pixel for pixel
//	b.ClickCanvas(640, 400)  // in remote-screen coordinates
//
// Every method fails the test (tb.Fatal) on error, so tests read straight;
// in a subtest, use b.For(t). When Chromium is missing the test is skipped
// with one line, except under CI=true, where it fails.
//
// Chromium runs headless with a fresh profile in tb.TempDir, a viewport of
// Options.Width×Height CSS pixels (default 1280×800) at device pixel ratio 1,
// and, as root, in a network namespace of its own that holds only a loopback
// interface. That keeps it blind to the host's interfaces changing (machines'
// veth pairs and bridges come and go during tests, and Chromium fails
// connections being set up at that moment with net::ERR_NETWORK_CHANGED).
// The loopback address of every URL given to Open or Navigate is forwarded
// from the namespace to the same address on the host, so URLs, Host and
// Origin stay as they are; a page that uses another loopback server needs
// b.Forward("127.0.0.1:PORT"). Only loopback addresses can be forwarded.
//
// Coordinates: CanvasImage, CanvasSize, ClickCanvas and MoveCanvas use the
// canvas's own pixels, which for noVNC are the remote screen's pixels
// whatever the page's scaling (noVNC's canvas backing store is the remote
// framebuffer; ClickCanvas maps a remote pixel to the centre of its place on
// the page).
package browsertest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/master-controller/mc/internal/testutil"
)

// DefaultChromium is where Debian installs Chromium. The environment
// variable MC_CHROMIUM overrides it.
const DefaultChromium = "/usr/bin/chromium"

// Options configure the browser. The zero value is the default.
type Options struct {
	// ExecPath is the Chromium binary. Default: $MC_CHROMIUM, else
	// /usr/bin/chromium, else "chromium" on PATH.
	ExecPath string
	// Width and Height are the size of the page's viewport (innerWidth,
	// innerHeight) in CSS pixels, at device pixel ratio 1. Default 1280×800.
	Width, Height int
	// Timeout bounds each wait. Default 30 s.
	Timeout time.Duration
	// HostNetwork makes the browser share the host's network namespace.
	// By default, as root, it gets a namespace of its own with only a
	// loopback interface (see Browser.Forward); without root it always
	// shares the host's.
	HostNetwork bool
}

// Browser is one tab of a headless Chromium that belongs to one test. Tabs
// made with NewTab share the browser process.
type Browser struct {
	tb  testing.TB
	ctx context.Context // the tab's chromedp context

	// Timeout bounds each wait (WaitJS, WaitState, Open).
	Timeout time.Duration
	// Canvas is the CSS selector of the canvas that CanvasImage,
	// CanvasSize and ClickCanvas use. Default "#screen canvas" (the viewer
	// page's noVNC canvas), falling back to the first canvas of the page.
	Canvas string

	shared *shared
}

// shared is what the tabs of one browser share.
type shared struct {
	width, height int64      // the viewport
	iso           *isolation // nil: the host's network

	mu     sync.Mutex
	logs   []string     // console messages and exceptions, all tabs
	output bytes.Buffer // Chromium's own stdout and stderr
}

func (s *shared) log(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.logs) < 2000 {
		s.logs = append(s.logs, line)
	}
}

func (s *shared) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.output.Len() < 1<<20 {
		s.output.Write(p)
	}
	return len(p), nil
}

// ChromiumPath returns the Chromium binary to use, or "" when there is none.
func ChromiumPath() string {
	if p := os.Getenv("MC_CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat(DefaultChromium); err == nil {
		return DefaultChromium
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	return ""
}

// New starts a headless Chromium with a fresh profile in tb.TempDir and
// returns its first tab. The browser stops when the test ends. If the test
// fails, the page's console messages are logged.
func New(tb testing.TB) *Browser {
	tb.Helper()
	return NewWith(tb, Options{})
}

// NewWith is New with options.
func NewWith(tb testing.TB, opt Options) *Browser {
	tb.Helper()
	if opt.ExecPath == "" {
		opt.ExecPath = ChromiumPath()
	}
	if opt.ExecPath == "" {
		testutil.SkipOrFail(tb, "browsertest: chromium not found (%s, $MC_CHROMIUM or PATH)", DefaultChromium)
	}
	if opt.Width == 0 || opt.Height == 0 {
		opt.Width, opt.Height = 1280, 800
	}
	if opt.Timeout == 0 {
		opt.Timeout = 30 * time.Second
	}
	sh := &shared{width: int64(opt.Width), height: int64(opt.Height)}
	flags := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(opt.ExecPath),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.Flag("headless", "new"),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.WindowSize(opt.Width, opt.Height),
		chromedp.CombinedOutput(sh),
	}
	isolate := !opt.HostNetwork && os.Geteuid() == 0 && runtime.GOOS == "linux"
	if os.Geteuid() == 0 {
		flags = append(flags, chromedp.NoSandbox)
	}
	if isolate {
		flags = append(flags, chromedp.ModifyCmdFunc(isolateCmd))
	}
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), flags...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	tb.Cleanup(func() {
		if tb.Failed() {
			sh.mu.Lock()
			if len(sh.logs) > 0 {
				tb.Logf("browser console:\n  %s", strings.Join(sh.logs, "\n  "))
			}
			sh.mu.Unlock()
		}
		_ = chromedp.Cancel(ctx) // closes the browser gracefully
		cancel()
		allocCancel() // waits for the process to exit, before TempDir is removed
		if sh.iso != nil {
			sh.iso.close()
		}
	})
	b := &Browser{tb: tb, ctx: ctx, Timeout: opt.Timeout, Canvas: "#screen canvas", shared: sh}
	// The first action starts the browser; it runs on the tab's own context,
	// since cancelling a context derived from it would close the browser.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(sh.width, sh.height)); err != nil {
		sh.mu.Lock()
		out := sh.output.String()
		sh.mu.Unlock()
		tb.Fatalf("browsertest: start %s: %v\n%s", opt.ExecPath, err, out)
	}
	if isolate {
		iso, err := newIsolation(chromedp.FromContext(ctx).Browser.Process().Pid)
		if err != nil {
			tb.Fatalf("browsertest: isolate the browser's network: %v", err)
		}
		sh.iso = iso
	}
	b.listen()
	return b
}

// listen records the tab's console messages and uncaught exceptions until
// the tab closes.
func (b *Browser) listen() {
	messages := chromedp.Console(b.ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			b.shared.log(m.String())
		}
	}()
}

// For returns this tab bound to tb, for use in a subtest: failures then
// stop the subtest (calling Fatal on a parent test from a subtest is not
// allowed). The tab and the browser stay those of the test that made them.
func (b *Browser) For(tb testing.TB) *Browser {
	nb := *b
	nb.tb = tb
	return &nb
}

// Context returns the tab's chromedp context, for anything that the helpers
// do not cover: chromedp.Run(b.Context(), …).
func (b *Browser) Context() context.Context { return b.ctx }

// ConsoleLogs returns the console messages and exceptions seen so far in
// every tab of this browser.
func (b *Browser) ConsoleLogs() []string {
	b.shared.mu.Lock()
	defer b.shared.mu.Unlock()
	return append([]string(nil), b.shared.logs...)
}

// NewTab opens another tab (a window of its own, so that it renders) in the
// same browser, sharing its profile (and so its cookies, but not its
// sessionStorage). It closes when the test ends.
func (b *Browser) NewTab() *Browser {
	b.tb.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.tb.Cleanup(cancel)
	nb := &Browser{tb: b.tb, ctx: ctx, Timeout: b.Timeout, Canvas: b.Canvas, shared: b.shared}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(b.shared.width, b.shared.height)); err != nil {
		b.tb.Fatalf("browsertest: open a tab: %v", err)
	}
	nb.listen()
	return nb
}

// do runs steps with the tab's wait deadline.
func (b *Browser) do(steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.Timeout)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// Navigate loads url and waits for its load event. A loopback URL is
// forwarded into the browser's network namespace first (see Forward).
func (b *Browser) Navigate(url string) error {
	if err := b.forwardURL(url); err != nil {
		return err
	}
	return b.do(chromedp.Navigate(url))
}

// Forward makes a loopback address (host:port, such as a test server's
// "127.0.0.1:41234") reachable by the browser. The browser runs in a
// network namespace of its own (as root; see Options.HostNetwork), where
// only addresses forwarded this way lead to the host, each to the same
// address there. Navigate forwards its URL's address itself; call Forward
// for any other loopback server that a page uses. Without a namespace of its
// own, Forward does nothing.
func (b *Browser) Forward(addr string) {
	b.tb.Helper()
	if b.shared.iso == nil {
		return
	}
	if err := b.shared.iso.forward(addr); err != nil {
		b.tb.Fatalf("browsertest: forward %s: %v", addr, err)
	}
}

// Isolated reports whether the browser runs in a network namespace of its
// own.
func (b *Browser) Isolated() bool { return b.shared.iso != nil }

// forwardURL forwards the address of a loopback http(s) or ws(s) URL.
func (b *Browser) forwardURL(raw string) error {
	if b.shared.iso == nil {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil // about:blank, data: and the like
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		switch u.Scheme {
		case "http", "ws":
			port = "80"
		case "https", "wss":
			port = "443"
		default:
			return nil
		}
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil
	}
	return b.shared.iso.forward(net.JoinHostPort(host, port))
}

// Open is Navigate that fails the test on error. The URL is not logged:
// viewer URLs hold tokens.
func (b *Browser) Open(url string) {
	b.tb.Helper()
	if err := b.Navigate(url); err != nil {
		b.tb.Fatalf("browsertest: open page: %v", err)
	}
}

// Reload reloads the page and waits for its load event.
func (b *Browser) Reload() {
	b.tb.Helper()
	if err := b.do(chromedp.Reload()); err != nil {
		b.tb.Fatalf("browsertest: reload: %v", err)
	}
}

// Eval evaluates a JavaScript expression in the page and stores its value
// (JSON-decoded) in out, which may be nil. A promise is awaited.
func (b *Browser) Eval(expr string, out any) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.Timeout)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		return fmt.Errorf("evaluate %q: %w", expr, err)
	}
	if out == nil || len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode result of %q: %w", expr, err)
	}
	return nil
}

// MustEval is Eval that fails the test on error.
func (b *Browser) MustEval(expr string, out any) {
	b.tb.Helper()
	if err := b.Eval(expr, out); err != nil {
		b.tb.Fatalf("browsertest: %v", err)
	}
}

// waitJS evaluates expr until it is truthy or the deadline passes. It
// survives navigations (an expression that throws, or a page that is being
// replaced, counts as false).
func (b *Browser) waitJS(expr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	wrapped := "(() => { try { return !!(" + expr + "); } catch (e) { return false; } })()"
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](wrapped))
		if err == nil && ok {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil && !errors.Is(lastErr, context.DeadlineExceeded) {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// WaitJS waits until the JavaScript expression expr is truthy, for at most
// b.Timeout; on timeout it fails the test and says what the page shows.
func (b *Browser) WaitJS(expr string) {
	b.tb.Helper()
	if err := b.waitJS(expr, b.Timeout); err != nil {
		b.tb.Fatalf("browsertest: wait for %s: %v; page: %s", expr, err, b.describe())
	}
}

// WaitState waits until the page's <body data-state> is state (the viewer
// page's states: connecting, starting, connected, reconnecting, taken-over,
// signed-in, ended, error).
func (b *Browser) WaitState(state string) {
	b.tb.Helper()
	q, _ := json.Marshal(state)
	b.WaitJS("document.body && document.body.dataset.state === " + string(q))
}

// describe says what the page shows, for failure messages.
func (b *Browser) describe() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		url: location.pathname,
		state: document.body && document.body.dataset.state,
		viewer: window.mcViewer ? Object.fromEntries(Object.entries(window.mcViewer).filter(([k]) => k !== 'rfb')) : undefined,
	})`))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return s
}

// Text returns the text content of the first element that matches the CSS
// selector sel.
func (b *Browser) Text(sel string) string {
	b.tb.Helper()
	var s string
	q, _ := json.Marshal(sel)
	b.MustEval("(document.querySelector("+string(q)+") || {}).textContent || ''", &s)
	return s
}

// Visible reports whether the first element that matches sel exists and is
// rendered (not hidden, not display:none).
func (b *Browser) Visible(sel string) bool {
	b.tb.Helper()
	var ok bool
	q, _ := json.Marshal(sel)
	b.MustEval("(() => { const e = document.querySelector("+string(q)+"); return !!e && e.getClientRects().length > 0; })()", &ok)
	return ok
}

// Click clicks the centre of the first element that matches sel with real
// mouse events, after waiting until it is visible.
func (b *Browser) Click(sel string) {
	b.tb.Helper()
	if err := b.do(chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible)); err != nil {
		b.tb.Fatalf("browsertest: click %s: %v; page: %s", sel, err, b.describe())
	}
}

// SetValue sets the value of the form field that matches sel.
func (b *Browser) SetValue(sel, value string) {
	b.tb.Helper()
	if err := b.do(chromedp.SetValue(chromedp.CSS(sel), value)); err != nil {
		b.tb.Fatalf("browsertest: set value of %s: %v", sel, err)
	}
}

// SendKeys types text into the focused element with real key events (for
// the viewer: into the remote browser, once the canvas has focus, for
// example after ClickCanvas).
func (b *Browser) SendKeys(text string) {
	b.tb.Helper()
	if err := b.do(chromedp.KeyEvent(text)); err != nil {
		b.tb.Fatalf("browsertest: send keys: %v", err)
	}
}

// Screenshot captures what the page shows of the first element that matches
// sel (device pixels: scaled as the page scales it).
func (b *Browser) Screenshot(sel string) image.Image {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, b.Timeout)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(sel), chromedp.NodeVisible))
	if err != nil {
		b.tb.Fatalf("browsertest: screenshot %s: %v", sel, err)
	}
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil {
		b.tb.Fatalf("browsertest: decode screenshot of %s: %v", sel, err)
	}
	return img
}

// canvasJS is an expression for the canvas element.
func (b *Browser) canvasJS() string {
	q, _ := json.Marshal(b.Canvas)
	return "(document.querySelector(" + string(q) + ") || document.querySelector('canvas'))"
}

// CanvasSize returns the size of the canvas's backing store. For noVNC it
// is the remote framebuffer's size, whatever the scaling on the page.
func (b *Browser) CanvasSize() (w, h int) {
	b.tb.Helper()
	var s struct{ W, H int }
	b.MustEval("(() => { const c = "+b.canvasJS()+"; return c ? {W: c.width, H: c.height} : {W: 0, H: 0}; })()", &s)
	return s.W, s.H
}

// CanvasImage returns the canvas's pixels at its own resolution: for noVNC,
// the remote screen pixel for pixel, without the page's scaling.
func (b *Browser) CanvasImage() image.Image {
	b.tb.Helper()
	var url string
	b.MustEval("(() => { const c = "+b.canvasJS()+"; return c ? c.toDataURL('image/png') : ''; })()", &url)
	img, err := decodeDataURL(url)
	if err != nil {
		b.tb.Fatalf("browsertest: canvas %q: %v; page: %s", b.Canvas, err, b.describe())
	}
	return img
}

// WaitCanvas waits until ok accepts the canvas's pixels (see CanvasImage),
// for at most b.Timeout, and returns the image that it accepted; what says
// what is awaited, for the failure message. For example, wait until the
// remote screen shows a page's background colour at its centre.
func (b *Browser) WaitCanvas(what string, ok func(image.Image) bool) image.Image {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, b.Timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	expr := "(() => { const c = " + b.canvasJS() + "; return c && c.width ? c.toDataURL('image/png') : ''; })()"
	for {
		url, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err == nil {
			if img, derr := decodeDataURL(url); derr == nil && ok(img) {
				return img
			}
		}
		select {
		case <-ctx.Done():
			b.tb.Fatalf("browsertest: wait for the canvas to show %s: %v; page: %s", what, ctx.Err(), b.describe())
			return nil
		case <-tick.C:
		}
	}
}

func decodeDataURL(url string) (image.Image, error) {
	data, ok := strings.CutPrefix(url, "data:image/png;base64,")
	if !ok {
		return nil, errors.New("no canvas")
	}
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return nil, fmt.Errorf("decode canvas data URL: %w", err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("decode canvas PNG: %w", err)
	}
	return img, nil
}

// CanvasPoint maps a point of the canvas's own coordinates (for noVNC: the
// remote screen) to the page's CSS coordinates, through the canvas's place
// and scale on the page. The point lands in the centre of the pixel.
func (b *Browser) CanvasPoint(x, y int) (px, py float64) {
	b.tb.Helper()
	var p struct {
		X, Y float64
		OK   bool
	}
	b.MustEval(fmt.Sprintf(`(() => {
		const c = %s;
		if (!c || !c.width || !c.height) return {X: 0, Y: 0, OK: false};
		const r = c.getBoundingClientRect();
		return {X: r.left + (%d + 0.5) * r.width / c.width, Y: r.top + (%d + 0.5) * r.height / c.height, OK: true};
	})()`, b.canvasJS(), x, y), &p)
	if !p.OK {
		b.tb.Fatalf("browsertest: no sized canvas %q on the page; page: %s", b.Canvas, b.describe())
	}
	return p.X, p.Y
}

// ClickCanvas clicks the left button at (x, y) in the canvas's own
// coordinates (for noVNC: remote-screen pixels; see CanvasPoint). It sends
// real mouse events through CDP (Input.dispatchMouseEvent): a move, a press
// and a release, so that noVNC sends the RFB pointer events of a click.
func (b *Browser) ClickCanvas(x, y int) {
	b.tb.Helper()
	px, py := b.CanvasPoint(x, y)
	b.MouseClick(px, py)
}

// MoveCanvas moves the mouse to (x, y) in the canvas's own coordinates.
func (b *Browser) MoveCanvas(x, y int) {
	b.tb.Helper()
	px, py := b.CanvasPoint(x, y)
	if err := b.do(chromedp.MouseEvent(chromedp.MouseMoved, px, py)); err != nil {
		b.tb.Fatalf("browsertest: move mouse: %v", err)
	}
}

// MouseClick clicks the left button at page CSS coordinates (px, py).
func (b *Browser) MouseClick(px, py float64) {
	b.tb.Helper()
	buttons := func(n int64) chromedp.MouseOption {
		return func(p *input.DispatchMouseEventParams) { p.Buttons = n }
	}
	err := b.do(
		chromedp.MouseEvent(chromedp.MouseMoved, px, py),
		chromedp.MouseEvent(chromedp.MousePressed, px, py, chromedp.ButtonLeft, chromedp.ClickCount(1), buttons(1)),
		chromedp.MouseEvent(chromedp.MouseReleased, px, py, chromedp.ButtonLeft, chromedp.ClickCount(1), buttons(0)),
	)
	if err != nil {
		b.tb.Fatalf("browsertest: click at (%.1f, %.1f): %v", px, py, err)
	}
}
