package agent

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/master-controller/mc"
	proto "github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/internal/testutil"
)

// demoProvider is the demo provider as the controller sends it.
func demoProvider(timeout time.Duration) mc.Provider {
	return mc.Provider{
		Name:     "demo",
		StartURL: "local:/demo/signin",
		Files: []mc.CredentialFile{{
			Path:         "~/" + DemoCredentialPath,
			RequiredKeys: []string{"access_token", "token_type", "user"},
		}},
		LoginTimeout: timeout,
	}
}

func TestAuth(t *testing.T) {
	a := newTestAPI(t)
	tests := []struct {
		name, method, path, auth string
		want                     int
	}{
		{"health without token", "GET", "/health", "", http.StatusUnauthorized},
		{"health wrong token", "GET", "/health", "Bearer nope", http.StatusUnauthorized},
		{"health token prefix", "GET", "/health", "Bearer " + a.token[:5], http.StatusUnauthorized},
		{"health basic scheme", "GET", "/health", "Basic " + a.token, http.StatusUnauthorized},
		{"open without token", "POST", "/open", "", http.StatusUnauthorized},
		{"result without token", "GET", "/login/result", "", http.StatusUnauthorized},
		{"unknown path without token", "GET", "/nope", "", http.StatusUnauthorized},
		{"health with token", "GET", "/health", "Bearer " + a.token, http.StatusOK},
		{"unknown path with token", "GET", "/nope", "Bearer " + a.token, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, a.srv.URL+tt.path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.want == http.StatusUnauthorized {
				if got := resp.Header.Get("Content-Type"); got != "application/json" {
					t.Errorf("content type = %q, want application/json", got)
				}
				var body proto.ErrorBody
				if err := jsonDecode(resp, &body); err != nil {
					t.Fatal(err)
				}
				if body.Code != mc.EUNAUTHORIZED {
					t.Errorf("code = %q, want %q", body.Code, mc.EUNAUTHORIZED)
				}
			}
		})
	}
}

func TestHealth(t *testing.T) {
	a := newTestAPI(t)
	tests := []struct {
		h    proto.Health
		want int
	}{
		{proto.Health{VNC: true, Browser: true}, http.StatusOK},
		{proto.Health{VNC: false, Browser: true}, http.StatusServiceUnavailable},
		{proto.Health{VNC: true, Browser: false}, http.StatusServiceUnavailable},
		{proto.Health{}, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		a.health = tt.h
		status, body := a.do(t, "GET", "/health", nil)
		if status != tt.want {
			t.Errorf("%+v: status = %d, want %d", tt.h, status, tt.want)
		}
		// The same shape either way: exactly the two booleans.
		got := decode[map[string]any](t, body)
		if len(got) != 2 || got["vnc"] != tt.h.VNC || got["browser"] != tt.h.Browser {
			t.Errorf("%+v: body = %s", tt.h, body)
		}
	}
}

func TestOpen(t *testing.T) {
	a := newTestAPI(t)
	tests := []struct {
		url, want string
		status    int
	}{
		{"https://example.com/x?y=1", "https://example.com/x?y=1", http.StatusOK},
		{"local:/demo/signin", a.page.URL + "/demo/signin", http.StatusOK},
		{"about:blank", "about:blank", http.StatusOK},
		{"javascript:alert(1)", "", http.StatusBadRequest},
		{"file:///etc/passwd", "", http.StatusBadRequest},
		{"", "", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			status, body := a.do(t, "POST", "/open", proto.OpenRequest{URL: tt.url})
			if status != tt.status {
				t.Fatalf("status = %d, want %d (%s)", status, tt.status, body)
			}
			if tt.status != http.StatusOK {
				return
			}
			if got := <-a.browser.urls; got != tt.want {
				t.Errorf("opened %q, want %q", got, tt.want)
			}
		})
	}
	req, _ := http.NewRequest("POST", a.srv.URL+"/open", strings.NewReader(`{"url":`))
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("truncated JSON: status = %d, want 400", resp.StatusCode)
	}
}

func TestDemoLogin(t *testing.T) {
	a := newTestAPI(t)
	if status, body := a.do(t, "GET", "/login/status", nil); status != http.StatusOK || decode[proto.LoginStatus](t, body).State != proto.StateIdle {
		t.Fatalf("status before start: %d %s", status, body)
	}
	if status, _ := a.do(t, "GET", "/login/result", nil); status != http.StatusNotFound {
		t.Errorf("result before start: status = %d, want 404", status)
	}
	status, body := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: demoProvider(time.Minute)})
	if status != http.StatusAccepted {
		t.Fatalf("start: status = %d, want 202 (%s)", status, body)
	}
	opened := <-a.browser.urls
	if want := a.page.URL + "/demo/signin"; opened != want {
		t.Fatalf("opened %q, want %q", opened, want)
	}
	if status, _ := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: demoProvider(time.Minute)}); status != http.StatusConflict {
		t.Errorf("second start: status = %d, want 409", status)
	}
	if status, _ := a.do(t, "GET", "/login/result", nil); status != http.StatusConflict {
		t.Errorf("result while running: status = %d, want 409", status)
	}

	// The browser's part: the page, then the form's submit.
	resp, err := http.Get(opened)
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, resp)
	for _, want := range []string{"Demo sign-in", "Sign in", DemoSignInColor, `method="post"`} {
		if !strings.Contains(page, want) {
			t.Errorf("sign-in page lacks %q", want)
		}
	}
	written := time.Now()
	resp, err = http.Post(opened, "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	if page := readAll(t, resp); !strings.Contains(page, "Signed in") || !strings.Contains(page, DemoSignedInColor) {
		t.Errorf("signed-in page = %q", page)
	}

	status, body = a.do(t, "GET", "/login/status?wait=30s", nil)
	st := decode[proto.LoginStatus](t, body)
	t.Logf("file written → status complete in %v", time.Since(written))
	if status != http.StatusOK || st.State != proto.StateComplete {
		t.Fatalf("status = %d %+v, want complete", status, st)
	}
	if st.URL != opened {
		t.Errorf("status url = %q, want %q", st.URL, opened)
	}

	credPath := filepath.Join(a.home, DemoCredentialPath)
	fi, err := os.Stat(credPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("credential mode = %v, want 0600", got)
	}
	status, body = a.do(t, "GET", "/login/result", nil)
	if status != http.StatusOK {
		t.Fatalf("result: status = %d (%s)", status, body)
	}
	res := decode[proto.LoginResult](t, body)
	cred := decode[DemoCredential](t, []byte(res.Files["~/"+DemoCredentialPath]))
	if !strings.HasPrefix(cred.AccessToken, "demo-") || len(cred.AccessToken) != len("demo-")+32 || cred.TokenType != "Bearer" || cred.User != "demo" {
		t.Errorf("credential = %+v", cred)
	}
	if _, err := os.Stat(credPath); !os.IsNotExist(err) {
		t.Errorf("credential file after result: %v, want it deleted", err)
	}
	status, body = a.do(t, "GET", "/login/result", nil)
	if status != http.StatusGone {
		t.Errorf("second result: status = %d, want 410", status)
	}
	if strings.Contains(string(body), cred.AccessToken) {
		t.Error("second result holds the credential")
	}
	// A new login may start once the result is delivered.
	if status, _ := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: demoProvider(time.Minute)}); status != http.StatusAccepted {
		t.Errorf("start after delivery: status = %d, want 202", status)
	}
}

func TestLoginTimeout(t *testing.T) {
	a := newTestAPI(t)
	if status, body := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: demoProvider(50 * time.Millisecond)}); status != http.StatusAccepted {
		t.Fatalf("start: %d %s", status, body)
	}
	_, body := a.do(t, "GET", "/login/status?wait=30s", nil)
	st := decode[proto.LoginStatus](t, body)
	if st.State != proto.StateFailed || st.Reason != mc.ReasonLoginTimeout {
		t.Fatalf("status = %+v, want failed with reason %s", st, mc.ReasonLoginTimeout)
	}
	if status, _ := a.do(t, "GET", "/login/result", nil); status != http.StatusConflict {
		t.Errorf("result after timeout: status = %d, want 409", status)
	}
	// A failed login may be started again.
	if status, _ := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: demoProvider(time.Minute)}); status != http.StatusAccepted {
		t.Errorf("restart: status = %d, want 202", status)
	}
}

func TestLoginStartInvalid(t *testing.T) {
	a := newTestAPI(t)
	tests := []struct {
		name string
		p    mc.Provider
	}{
		{"no files", mc.Provider{Name: "x", StartURL: "local:/demo/signin"}},
		{"absolute file", mc.Provider{Name: "x", Files: []mc.CredentialFile{{Path: "/etc/shadow"}}}},
		{"escaping file", mc.Provider{Name: "x", Files: []mc.CredentialFile{{Path: "~/../../etc/shadow"}}}},
		{"bad start url", mc.Provider{Name: "x", StartURL: "file:///etc/passwd", Files: []mc.CredentialFile{{Path: "~/a.json"}}}},
		{"empty command", mc.Provider{Name: "x", LoginCommand: []string{""}, Files: []mc.CredentialFile{{Path: "~/a.json"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: tt.p})
			if status != http.StatusBadRequest {
				t.Fatalf("status = %d, want 400 (%s)", status, body)
			}
			if got := decode[proto.ErrorBody](t, body).Code; got != mc.EINVALID {
				t.Errorf("code = %q, want %q", got, mc.EINVALID)
			}
		})
	}
	status, _ := a.do(t, "GET", "/login/status?wait=forever", nil)
	if status != http.StatusBadRequest {
		t.Errorf("bad wait: status = %d, want 400", status)
	}
}

func TestBrowserErrorFailsLogin(t *testing.T) {
	a := newTestAPI(t)
	a.browser.err = errTestBrowser
	a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: demoProvider(time.Minute)})
	_, body := a.do(t, "GET", "/login/status?wait=30s", nil)
	if st := decode[proto.LoginStatus](t, body); st.State != proto.StateFailed || st.Reason != proto.ReasonBrowserError {
		t.Errorf("status = %+v, want failed %s", st, proto.ReasonBrowserError)
	}
}

// TestStartURLAlreadyShown: a machine launched on the provider's start URL
// shows it already when the login starts; the login does not open it again
// (a second navigation reloads the page under the user's first click). A
// tab that shows another page is navigated once, and so is the tab of a
// second login, which shows what the first one left.
func TestStartURLAlreadyShown(t *testing.T) {
	for _, tt := range []struct {
		name, tab string
		opens     int
	}{
		{"blank tab", "about:blank", 1},
		{"start url shown", "/demo/signin", 0},
		{"another page", "/demo/other", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAPI(t)
			tab := tt.tab
			if strings.HasPrefix(tab, "/") {
				tab = a.page.URL + tab
			}
			a.browser.SetTab(tab)
			if status, body := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: demoProvider(time.Minute)}); status != http.StatusAccepted {
				t.Fatalf("start: status = %d (%s)", status, body)
			}
			// The user signs in on the page; the credential files are
			// watched only once the start URL has been dealt with, so the
			// login completes after any navigation it made.
			page := a.page.URL + "/demo/signin"
			testutil.WaitFor(t, 10*time.Second, "the login waiting for the user", func() error {
				_, body := a.do(t, "GET", "/login/status", nil)
				if st := decode[proto.LoginStatus](t, body); st.Phase != mc.PhaseWaitingForUser || st.URL != page {
					return fmt.Errorf("status %+v", st)
				}
				return nil
			})
			resp, err := http.Post(page, "application/x-www-form-urlencoded", nil)
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			_, body := a.do(t, "GET", "/login/status?wait=30s", nil)
			if st := decode[proto.LoginStatus](t, body); st.State != proto.StateComplete {
				t.Fatalf("status %+v, want complete", st)
			}
			a.browser.mu.Lock()
			opened := slices.Clone(a.browser.opened)
			a.browser.mu.Unlock()
			if len(opened) != tt.opens {
				t.Errorf("opened %q, want %d navigation(s)", opened, tt.opens)
			}

			// A second login on the machine opens its start URL again.
			if status, body := a.do(t, "GET", "/login/result", nil); status != http.StatusOK {
				t.Fatalf("result: status = %d (%s)", status, body)
			}
			for range tt.opens {
				<-a.browser.urls
			}
			if status, body := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: demoProvider(time.Minute)}); status != http.StatusAccepted {
				t.Fatalf("second start: status = %d (%s)", status, body)
			}
			select {
			case u := <-a.browser.urls:
				if u != page {
					t.Errorf("second login opened %q, want %q", u, page)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("the second login did not open its start URL")
			}
		})
	}
}

// TestHealthWait: GET /health?wait= answers the moment Xvnc and Chromium
// run (up), after the wait when they never do, at once when the agent
// stops, and 400 bad_wait for a wait that is not a duration.
func TestHealthWait(t *testing.T) {
	const token = "test-token-1234"
	newAPI := func(healthy *atomic.Bool, up, stop chan struct{}) http.Handler {
		a := &api{tokenHash: sha256.Sum256([]byte(token)), log: testLogger(t), up: up, stop: stop,
			health: func(context.Context) proto.Health {
				return proto.Health{VNC: healthy.Load(), Browser: healthy.Load()}
			}}
		return a.handler()
	}
	// get serves one request in the background; the recorder's result is
	// sent once the handler returns.
	get := func(h http.Handler, path string) <-chan *http.Response {
		done := make(chan *http.Response, 1)
		go func() {
			r := httptest.NewRequest("GET", path, nil)
			r.Header.Set("Authorization", "Bearer "+token)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			done <- w.Result()
		}()
		return done
	}
	// answered is the response once the handler has returned, or nil.
	answered := func(res <-chan *http.Response) *http.Response {
		select {
		case r := <-res:
			return r
		default:
			return nil
		}
	}
	synctest.Test(t, func(t *testing.T) {
		var healthy atomic.Bool
		up, stop := make(chan struct{}), make(chan struct{})
		h := newAPI(&healthy, up, stop)
		res := get(h, "/health?wait=5s")
		// The bubble's clock: 4 s of the 5 s wait pass at once.
		time.Sleep(4 * time.Second)
		synctest.Wait()
		if r := answered(res); r != nil {
			t.Fatalf("answered %d before the machine was up", r.StatusCode)
		}
		healthy.Store(true)
		close(up)
		synctest.Wait()
		if r := answered(res); r == nil {
			t.Fatal("no answer once the machine was up")
		} else if r.StatusCode != http.StatusOK {
			t.Errorf("up: status %d, want 200", r.StatusCode)
		}
		if r := <-get(h, "/health?wait=5s"); r.StatusCode != http.StatusOK {
			t.Errorf("already up: status %d, want 200", r.StatusCode)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		var healthy atomic.Bool
		h := newAPI(&healthy, make(chan struct{}), make(chan struct{}))
		start := time.Now()
		r := <-get(h, "/health?wait=3s")
		if r.StatusCode != http.StatusServiceUnavailable || time.Since(start) != 3*time.Second {
			t.Errorf("never up: status %d after %s, want 503 after 3s", r.StatusCode, time.Since(start))
		}
		start = time.Now()
		r = <-get(h, "/health?wait=10m")
		if r.StatusCode != http.StatusServiceUnavailable || time.Since(start) != proto.MaxStatusWait {
			t.Errorf("a wait of 10m answered %d after %s, want 503 after the cap %s", r.StatusCode, time.Since(start), proto.MaxStatusWait)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		var healthy atomic.Bool
		stop := make(chan struct{})
		h := newAPI(&healthy, make(chan struct{}), stop)
		res := get(h, "/health?wait=30s")
		close(stop)
		synctest.Wait()
		if r := answered(res); r == nil {
			t.Fatal("a wait held while the agent stops")
		} else if r.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("stopping: status %d, want 503", r.StatusCode)
		}
	})
	var healthy atomic.Bool
	r := <-get(newAPI(&healthy, nil, nil), "/health?wait=soon")
	var body proto.ErrorBody
	if err := jsonDecode(r, &body); err != nil || r.StatusCode != http.StatusBadRequest || body.Reason != mc.ReasonBadWait {
		t.Errorf("wait=soon: status %d, body %+v (%v), want 400 %s", r.StatusCode, body, err, mc.ReasonBadWait)
	}
}
