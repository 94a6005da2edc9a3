package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/master-controller/mc"
	proto "github.com/master-controller/mc/agentproto"
)

// api is the agent's HTTP API.
type api struct {
	tokenHash [32]byte
	log       *slog.Logger
	health    func(ctx context.Context) proto.Health
	// ready reports whether Xvnc and Chromium run; calls that need the
	// browser answer 503 before.
	ready func() bool
	// up is closed once Xvnc and Chromium run, and stop when the agent
	// stops: GET /health?wait= waits for either (nil: it does not wait).
	up, stop <-chan struct{}
	browser  Browser
	// sandbox reads chrome://sandbox (chromiumBrowser.Sandbox).
	sandbox  func(ctx context.Context) (proto.BrowserSandbox, error)
	pageBase string // LocalOrigin (a test's server in tests), for local: URLs
	login    *login
}

// handler returns the API behind Bearer-token authentication; every path,
// known or not, is refused with 401 before anything else without the token.
func (a *api) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", a.handleHealth)
	mux.Handle("POST /open", a.wrap(a.handleOpen))
	mux.Handle("POST /login/start", a.wrap(a.handleLoginStart))
	mux.Handle("GET /login/status", a.wrap(a.handleLoginStatus))
	mux.Handle("GET /login/result", a.wrap(a.handleLoginResult))
	mux.Handle("GET /sandbox", a.wrap(a.handleSandbox))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mc-agent"`)
			a.writeError(w, r, mc.Errorf(mc.EUNAUTHORIZED, mc.ReasonBadAgentToken, "missing or invalid agent token"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// authorized compares the Bearer token in constant time (over hashes, so
// that the length does not leak either).
func (a *api) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return false
	}
	h := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(h[:], a.tokenHash[:]) == 1
}

// wrap turns a handler that returns an error into an http.Handler.
func (a *api) wrap(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

// statusOf maps an error to its HTTP status; the one table for the agent.
func statusOf(err error) int {
	if errors.Is(err, errGone) {
		return http.StatusGone
	}
	switch mc.ErrorCode(err) {
	case mc.EINVALID:
		return http.StatusBadRequest
	case mc.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case mc.EFORBIDDEN:
		return http.StatusForbidden
	case mc.ENOTFOUND:
		return http.StatusNotFound
	case mc.ECONFLICT:
		return http.StatusConflict
	case mc.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (a *api) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	code := mc.ErrorCode(err)
	if status == http.StatusGone {
		code = "gone"
	}
	if status >= 500 {
		a.log.Error("agent request", "method", r.Method, "path", r.URL.Path, mc.LogReason, mc.ErrorReason(err), mc.LogError, err)
	} else {
		a.log.Info("agent request refused", "method", r.Method, "path", r.URL.Path, mc.LogReason, mc.ErrorReason(err))
	}
	writeJSON(w, status, proto.ErrorBody{Code: code, Reason: mc.ErrorReason(err), Message: mc.ErrorMessage(err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func decodeBody(r *http.Request, v any) error {
	// Unknown fields are accepted: an agent baked into a VM image may be
	// older than the controller that calls it.
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err := dec.Decode(v); err != nil {
		e := mc.Errorf(mc.EINVALID, mc.ReasonBadJSON, "request body is not valid JSON for this call")
		e.Err = err
		return e
	}
	return nil
}

// handleHealth answers with the machine's health: at once, or with
// ?wait=DURATION (at most proto.MaxStatusWait) once Xvnc and Chromium run,
// so that the controller learns that the machine is ready the moment it is
// rather than at its next probe.
func (a *api) handleHealth(w http.ResponseWriter, r *http.Request) {
	wait, err := waitParam(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if wait > 0 && a.up != nil {
		t := time.NewTimer(wait)
		select {
		case <-a.up:
		case <-a.stop:
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	h := a.health(ctx)
	status := http.StatusOK
	if !h.VNC || !h.Browser {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
}

// waitParam is the ?wait=DURATION of a long poll, capped at
// proto.MaxStatusWait; 0 without one.
func waitParam(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, mc.Errorf(mc.EINVALID, mc.ReasonBadWait, "wait must be a duration such as 30s")
	}
	return min(d, proto.MaxStatusWait), nil
}

// errStarting refuses calls that need the browser while the machine starts.
var errStarting = &mc.Error{Code: mc.EUNAVAILABLE, Reason: mc.ReasonMachineStarting, Message: "the machine is still starting", RetryAfter: time.Second}

func (a *api) handleOpen(w http.ResponseWriter, r *http.Request) error {
	if !a.ready() {
		return errStarting
	}
	var req proto.OpenRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	u, err := resolveURL(req.URL, a.pageBase)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := a.browser.Open(ctx, u); err != nil {
		e := mc.Errorf(mc.EUNAVAILABLE, mc.ReasonBrowserUnavailable, "the browser could not open the page")
		e.Err = err
		return e
	}
	a.log.Info("opened url", "url", redactURL(u))
	writeJSON(w, http.StatusOK, proto.OpenRequest{URL: u})
	return nil
}

func (a *api) handleLoginStart(w http.ResponseWriter, r *http.Request) error {
	if !a.ready() {
		return errStarting
	}
	var req proto.LoginStartRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if err := a.login.Start(req.Provider); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, a.login.Status(r.Context(), 0, 0))
	return nil
}

// handleLoginStatus answers at once, or with ?wait=DURATION (at most a
// minute) once a running login has changed state, so the controller need not
// poll.
func (a *api) handleLoginStatus(w http.ResponseWriter, r *http.Request) error {
	wait, err := waitParam(r)
	if err != nil {
		return err
	}
	since := int64(-1) // without since: until the login ends
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return mc.Errorf(mc.EINVALID, mc.ReasonBadSince, "since must be a status seq such as 3")
		}
		since = n
	}
	writeJSON(w, http.StatusOK, a.login.Status(r.Context(), since, wait))
	return nil
}

func (a *api) handleLoginResult(w http.ResponseWriter, r *http.Request) error {
	res, err := a.login.Result()
	if err != nil {
		return err
	}
	a.log.Info("login result delivered", "files", len(res.Files))
	writeJSON(w, http.StatusOK, res)
	return nil
}

// handleSandbox answers what the browser's chrome://sandbox shows. The
// page is read in a background tab: the user's tab does not change.
func (a *api) handleSandbox(w http.ResponseWriter, r *http.Request) error {
	if !a.ready() {
		return errStarting
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	s, err := a.sandbox(ctx)
	if err != nil {
		e := mc.Errorf(mc.EUNAVAILABLE, mc.ReasonBrowserUnavailable, "the browser's sandbox page could not be read")
		e.Err = err
		return e
	}
	a.log.Info("browser sandbox read", "adequate", s.Adequate, "missing", len(s.Missing()))
	writeJSON(w, http.StatusOK, s)
	return nil
}
