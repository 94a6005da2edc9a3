package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/internal/testutil"
)

// pipeBrowser is the browser's end of a DevTools pipe: it answers every
// command (with an error for the methods in fail), hands the commands to
// the test, and sends the events the test gives it.
type pipeBrowser struct {
	toAgent  *io.PipeWriter
	commands chan pipeCommand
	fail     map[string]bool
	wmu      sync.Mutex
}

type pipeCommand struct {
	ID     int64           `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// newPipeBrowser returns the fake browser and the agent's client of it.
func newPipeBrowser(tb testing.TB, fail ...string) (*pipeBrowser, *cdp) {
	tb.Helper()
	cmdR, cmdW := io.Pipe() // agent → browser
	evR, evW := io.Pipe()   // browser → agent
	b := &pipeBrowser{toAgent: evW, commands: make(chan pipeCommand, 1024), fail: map[string]bool{}}
	for _, m := range fail {
		b.fail[m] = true
	}
	c := newCDP(cmdW, evR)
	go func() {
		br := bufio.NewReader(cmdR)
		for {
			msg, err := br.ReadBytes(0)
			if err != nil {
				return
			}
			var cmd pipeCommand
			if err := json.Unmarshal(bytes.TrimSuffix(msg, []byte{0}), &cmd); err != nil {
				tb.Errorf("command %q: %v", msg, err)
				return
			}
			b.commands <- cmd
			reply := map[string]any{"id": cmd.ID, "result": map[string]any{}}
			if b.fail[cmd.Method] {
				reply = map[string]any{"id": cmd.ID, "error": map[string]any{"code": -32000, "message": "refused"}}
			}
			b.send(reply)
		}
	}()
	tb.Cleanup(func() {
		c.Close()
		evW.Close()
	})
	return b, c
}

func (b *pipeBrowser) send(msg any) {
	buf, _ := json.Marshal(msg)
	b.wmu.Lock()
	defer b.wmu.Unlock()
	_, _ = b.toAgent.Write(append(buf, 0))
}

// pause sends a Fetch.requestPaused for a request.
func (b *pipeBrowser) pause(id, method, url string, body []byte) {
	req := map[string]any{"url": url, "method": method, "headers": map[string]string{"Accept": "text/html", "X-Two": "a\nb"}}
	if body != nil {
		req["hasPostData"] = true
		req["postDataEntries"] = []map[string]string{{"bytes": base64.StdEncoding.EncodeToString(body)}}
	}
	b.send(map[string]any{"method": "Fetch.requestPaused", "params": map[string]any{"requestId": id, "request": req}})
}

// next returns the next command of method, skipping others.
func (b *pipeBrowser) next(tb testing.TB, method string) pipeCommand {
	tb.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case c := <-b.commands:
			if c.Method == method {
				return c
			}
		case <-timeout.C:
			tb.Fatalf("no %s from the agent", method)
		}
	}
}

// fulfilled is Fetch.fulfillRequest's parameters, decoded.
type fulfilled struct {
	RequestID string `json:"requestId"`
	Status    int    `json:"responseCode"`
	Headers   []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"responseHeaders"`
	Body string `json:"body"`
}

func (f fulfilled) body(tb testing.TB) string {
	tb.Helper()
	b, err := base64.StdEncoding.DecodeString(f.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func (f fulfilled) header(name string) []string {
	var vs []string
	for _, h := range f.Headers {
		if http.CanonicalHeaderKey(h.Name) == http.CanonicalHeaderKey(name) {
			vs = append(vs, h.Value)
		}
	}
	return vs
}

// answers collects n answers (fulfil, continue or fail) by request id.
func (b *pipeBrowser) answers(tb testing.TB, n int) map[string]pipeCommand {
	tb.Helper()
	got := map[string]pipeCommand{}
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	for len(got) < n {
		select {
		case c := <-b.commands:
			var p struct {
				RequestID string `json:"requestId"`
			}
			switch c.Method {
			case "Fetch.fulfillRequest", "Fetch.continueRequest", "Fetch.failRequest":
				_ = json.Unmarshal(c.Params, &p)
				if prev, dup := got[p.RequestID]; dup {
					tb.Errorf("request %s answered twice: %s, then %s", p.RequestID, prev.Method, c.Method)
				}
				got[p.RequestID] = c
			}
		case <-timeout.C:
			tb.Fatalf("%d of %d requests answered", len(got), n)
		}
	}
	return got
}

func decodeFulfilled(tb testing.TB, c pipeCommand) fulfilled {
	tb.Helper()
	if c.Method != "Fetch.fulfillRequest" {
		tb.Fatalf("answer %s %s, want Fetch.fulfillRequest", c.Method, c.Params)
	}
	var f fulfilled
	if err := json.Unmarshal(c.Params, &f); err != nil {
		tb.Fatal(err)
	}
	return f
}

// startPages serves handler on the fake browser's pipe and checks the
// Fetch.enable it sends.
func startPages(tb testing.TB, b *pipeBrowser, c *cdp, handler http.Handler, timeout time.Duration) {
	tb.Helper()
	p := &localPages{c: c, handler: handler, log: testLogger(tb), timeout: timeout}
	if err := p.start(tb.Context()); err != nil {
		tb.Fatal(err)
	}
	var enable struct {
		Patterns []struct {
			URLPattern   string `json:"urlPattern"`
			RequestStage string `json:"requestStage"`
		} `json:"patterns"`
	}
	if err := json.Unmarshal(b.next(tb, "Fetch.enable").Params, &enable); err != nil {
		tb.Fatal(err)
	}
	if len(enable.Patterns) != 1 || enable.Patterns[0].URLPattern != LocalOrigin+"/*" || enable.Patterns[0].RequestStage != "Request" {
		tb.Errorf("Fetch.enable patterns = %+v, want only %s/* at the request stage", enable.Patterns, LocalOrigin)
	}
}

// TestLocalPagesAnswer: each request the browser pauses gets one answer:
// a local page the handler's response (status, headers, body; the request
// with its method, body and headers), a handler that panics or overruns a
// 502 page, anything else is let go on.
func TestLocalPagesAnswer(t *testing.T) {
	b, c := newPipeBrowser(t)
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			body, _ := io.ReadAll(r.Body)
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			w.Header().Set("Location", "/next")
			w.WriteHeader(http.StatusSeeOther)
			fmt.Fprintf(w, "%s %s %s %q", r.Method, r.Host, body, r.Header.Values("X-Two"))
		case "/panic":
			panic("boom")
		case "/hang":
			<-block
		default:
			http.NotFound(w, r)
		}
	})
	startPages(t, b, c, handler, 200*time.Millisecond)

	b.pause("1", "POST", LocalOrigin+"/echo?x=1", []byte("a=b&c=d"))
	b.pause("2", "GET", LocalOrigin+"/panic", nil)
	b.pause("3", "GET", LocalOrigin+"/hang", nil)
	b.pause("4", "GET", "https://provider.example/authorize", nil)
	b.pause("5", "GET", "http://"+localHost+":8081/demo/signin", nil)
	b.pause("6", "GET", LocalOrigin+"/missing", nil)
	got := b.answers(t, 6)

	echo := decodeFulfilled(t, got["1"])
	if echo.Status != http.StatusSeeOther || echo.body(t) != `POST mc-agent.invalid a=b&c=d ["a" "b"]` ||
		strings.Join(echo.header("Set-Cookie"), ",") != "a=1,b=2" || strings.Join(echo.header("Location"), ",") != "/next" {
		t.Errorf("echo answer = %d %q %+v", echo.Status, echo.body(t), echo.Headers)
	}
	for _, id := range []string{"2", "3"} {
		if f := decodeFulfilled(t, got[id]); f.Status != http.StatusBadGateway || !strings.Contains(f.body(t), "could not be shown") {
			t.Errorf("request %s: answer %d %q, want the 502 page", id, f.Status, f.body(t))
		}
	}
	for _, id := range []string{"4", "5"} {
		if got[id].Method != "Fetch.continueRequest" {
			t.Errorf("request %s (not a local page): %s, want Fetch.continueRequest", id, got[id].Method)
		}
	}
	if f := decodeFulfilled(t, got["6"]); f.Status != http.StatusNotFound {
		t.Errorf("missing page: %d, want 404", f.Status)
	}
}

// TestLocalPagesNeverDropped: requests paused faster than they are
// answered, many more than any buffer, are all answered (a dropped one
// would hang its page).
func TestLocalPagesNeverDropped(t *testing.T) {
	b, c := newPipeBrowser(t)
	release := make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		fmt.Fprint(w, r.URL.Query().Get("n"))
	})
	startPages(t, b, c, handler, time.Minute)
	const n = 500
	for i := range n {
		b.pause(fmt.Sprint(i), "GET", fmt.Sprintf("%s/page?n=%d", LocalOrigin, i), nil)
	}
	close(release)
	got := b.answers(t, n)
	for i := range n {
		if f := decodeFulfilled(t, got[fmt.Sprint(i)]); f.body(t) != fmt.Sprint(i) {
			t.Fatalf("request %d answered %q", i, f.body(t))
		}
	}
}

// TestLocalPagesFulfilFails: when the browser refuses the answer, the
// request is failed rather than left waiting.
func TestLocalPagesFulfilFails(t *testing.T) {
	b, c := newPipeBrowser(t, "Fetch.fulfillRequest")
	startPages(t, b, c, pageHandler(t.TempDir(), testLogger(t)), time.Minute)
	b.pause("1", "GET", LocalOrigin+"/demo/signin", nil)
	b.next(t, "Fetch.fulfillRequest")
	var p struct {
		RequestID string `json:"requestId"`
	}
	if err := json.Unmarshal(b.next(t, "Fetch.failRequest").Params, &p); err != nil || p.RequestID != "1" {
		t.Errorf("Fetch.failRequest for %q (%v), want request 1", p.RequestID, err)
	}
}

// TestLocalPagesChromium: with a real Chromium, the local pages are served
// in the first tab, in a tab opened later and to a page's own requests; a
// form POST and a redirect work; and the local origin is answered by
// nothing else: before the agent serves it, it does not resolve.
func TestLocalPagesChromium(t *testing.T) {
	c, home := startHeadless(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// Nothing answers the origin before the agent does.
	if err := c.Navigate(ctx, LocalOrigin+"/demo/signin"); err == nil || !strings.Contains(err.Error(), "ERR_NAME_NOT_RESOLVED") {
		t.Fatalf("navigate to the local origin before serving it: %v, want ERR_NAME_NOT_RESOLVED", err)
	}

	var hits sync.Map
	pages := pageHandler(home, testLogger(t))
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store(r.Method+" "+r.URL.Path, true)
		switch r.URL.Path {
		case "/go":
			http.Redirect(w, r, "/demo/signin", http.StatusFound)
		case "/api":
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s %d", r.Method, len(body))
		default:
			pages.ServeHTTP(w, r)
		}
	})
	if err := serveLocalPages(t.Context(), c, handler, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	eval := func(expr string) string {
		t.Helper()
		var res struct {
			Result struct {
				Value any `json:"value"`
			} `json:"result"`
			Exception any `json:"exceptionDetails"`
		}
		err := c.Session(ctx, func(call func(string, any, any) error) error {
			return call("Runtime.evaluate", map[string]any{"expression": expr, "awaitPromise": true}, &res)
		})
		if err != nil || res.Exception != nil {
			t.Fatalf("evaluate %s: %v %v", expr, err, res.Exception)
		}
		return fmt.Sprint(res.Result.Value)
	}
	// A redirect to the sign-in page, its form POST, the signed-in page.
	if err := c.Navigate(ctx, LocalOrigin+"/go"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the sign-in page after the redirect", func() error {
		if got := eval("location.href + ' ' + document.title"); got != LocalOrigin+"/demo/signin Demo sign-in" {
			return fmt.Errorf("%q", got)
		}
		return nil
	})
	eval("document.getElementById('signin').click()")
	testutil.WaitFor(t, 20*time.Second, "the signed-in page", func() error {
		if got := eval("document.title"); got != "Signed in" {
			return fmt.Errorf("title %q", got)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(home, DemoCredentialPath)); err != nil {
		t.Errorf("the form POST wrote no credential: %v", err)
	}
	// A page's own request with a body of 1 MiB.
	if got := eval("fetch('/api', {method: 'POST', body: new Uint8Array(1 << 20)}).then(r => r.text())"); got != "POST 1048576" {
		t.Errorf("fetch from the page = %q", got)
	}
	// A tab opened after the agent started serving.
	var created struct {
		TargetID string `json:"targetId"`
	}
	if err := c.call(ctx, "", "Target.createTarget", map[string]any{"url": LocalOrigin + "/second"}, &created); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the second tab's page requested", func() error {
		if _, ok := hits.Load("GET /second"); !ok {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	for _, k := range []string{"GET /go", "GET /demo/signin", "POST /demo/signin", "POST /api"} {
		if _, ok := hits.Load(k); !ok {
			t.Errorf("the handler never saw %s", k)
		}
	}
}

// startHeadless starts a headless Chromium (no X server needed) with
// DevTools on the pipe, as the agent does, and returns its client once it
// has its first tab, and its home.
func startHeadless(tb testing.TB) (*cdp, string) {
	tb.Helper()
	_, chromium := requireMachine(tb)
	home := tb.TempDir()
	cfg := Config{Listen: "127.0.0.1:1", TokenFile: "t", VNCListen: "127.0.0.1:2", VNCPasswordFile: "p",
		Display: 100, Home: home, TmpDir: filepath.Join(home, "t")}
	if err := cfg.Check(); err != nil {
		tb.Fatal(err)
	}
	browserIn, browserOut, c, err := cdpPipes()
	if err != nil {
		tb.Fatal(err)
	}
	// Headless (no X server needed), and without its sandbox because the
	// test runs as root outside any machine, where Chromium refuses it.
	args := append(chromiumArgs(cfg, false, true), "--headless", "--no-sandbox")
	cmd := exec.Command(chromium, args...)
	cmd.Env = chromiumEnv(cfg, "")
	cmd.ExtraFiles = []*os.File{browserIn, browserOut}
	// A process group of its own, so that the cleanup ends every process
	// of this Chromium before its profile directory is removed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := os.MkdirAll(cfg.TmpDir, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	browserIn.Close()
	browserOut.Close()
	tb.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		c.Close()
		// The group's other processes die asynchronously: wait, bounded,
		// until none is left, so that the profile is not written to while
		// it is removed.
		_ = testutil.Poll(context.Background(), 10*time.Second, func() error {
			if len(procfs.GroupMembers(cmd.Process.Pid, 0)) > 0 {
				return errors.New("chromium processes left")
			}
			return nil
		})
	})
	ctx, cancel := context.WithTimeout(tb.Context(), 60*time.Second)
	defer cancel()
	if err := c.waitFirstTab(ctx, nil); err != nil {
		tb.Fatal(err)
	}
	return c, home
}
