package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/httprec"
)

// The local pages (the demo provider's sign-in, "local:/path" URLs) are
// served without any listening socket: the agent tells the browser, over
// the DevTools pipe, to pause every request for LocalOrigin (browser-wide
// Fetch.enable, which covers every tab, window and frame, present or to
// come), runs the page handler in process on each one and answers it with
// Fetch.fulfillRequest. A machine thus listens on no TCP port for them, and
// no other process, of this machine or another, can reach them.

// LocalOrigin is the origin of the local pages. It names no real site:
// .invalid is reserved (RFC 2606), and Chromium is told to resolve no name
// of it (localResolverRule), so a request for it that the agent did not
// answer fails rather than reach anything else.
const LocalOrigin = "http://" + localHost

const localHost = "mc-agent.invalid"

// localResolverRule is Chromium's --host-resolver-rules value that makes
// LocalOrigin's name unresolvable.
const localResolverRule = "MAP " + localHost + " ~NOTFOUND"

// localPageTimeout bounds the page handler's run on one request; past it
// the browser gets a 502 page.
const localPageTimeout = 20 * time.Second

// localPages answers the browser's requests for LocalOrigin with handler.
type localPages struct {
	c       *cdp
	handler http.Handler
	log     *slog.Logger
	timeout time.Duration // the handler's bound per request
}

// pausedRequest is Fetch.requestPaused's parameters, the parts used.
type pausedRequest struct {
	RequestID string `json:"requestId"`
	Request   struct {
		URL             string            `json:"url"`
		Method          string            `json:"method"`
		Headers         map[string]string `json:"headers"`
		PostData        string            `json:"postData"`
		HasPostData     bool              `json:"hasPostData"`
		PostDataEntries []struct {
			Bytes string `json:"bytes"`
		} `json:"postDataEntries"`
	} `json:"request"`
}

// serveLocalPages starts answering the browser's requests for LocalOrigin
// with handler until ctx ends or the browser is gone. It returns once the
// browser pauses them (within 10 s), so a page opened after it is served.
func serveLocalPages(ctx context.Context, c *cdp, handler http.Handler, log *slog.Logger) error {
	p := &localPages{c: c, handler: handler, log: log, timeout: localPageTimeout}
	return p.start(ctx)
}

func (p *localPages) start(ctx context.Context) error {
	paused := p.c.subscribe("Fetch.requestPaused")
	pattern := map[string]any{"urlPattern": LocalOrigin + "/*", "requestStage": "Request"}
	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.c.call(ectx, "", "Fetch.enable", map[string]any{"patterns": []any{pattern}}, nil); err != nil {
		return fmt.Errorf("serve local pages: %w", err)
	}
	go func() {
		for {
			params, ok := paused.next(ctx)
			if !ok {
				return
			}
			go p.answer(ctx, params)
		}
	}()
	return nil
}

// answer answers one paused request: a local page with the handler's
// response (a 502 page when the handler fails), anything else by letting
// it go on. The request is always answered: the page waits for it.
func (p *localPages) answer(ctx context.Context, params json.RawMessage) {
	var req pausedRequest
	if err := json.Unmarshal(params, &req); err != nil || req.RequestID == "" {
		p.log.Error("local page request undecodable", mc.LogReason, mc.ReasonLocalPageFailed, mc.LogError, err)
		return // without its id there is nothing to answer
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u, err := url.Parse(req.Request.URL)
	if err != nil || u.Scheme != "http" || u.Host != localHost {
		if err := p.c.call(cctx, "", "Fetch.continueRequest", map[string]any{"requestId": req.RequestID}, nil); err != nil {
			p.log.Warn("let a request go on", "url", redactURL(req.Request.URL), mc.LogError, err)
		}
		return
	}
	res, err := p.run(ctx, &req)
	if err != nil {
		p.log.Error("local page failed", "method", req.Request.Method, "url", redactURL(req.Request.URL),
			mc.LogReason, mc.ReasonLocalPageFailed, mc.LogError, err)
		res = failedPage()
	} else {
		p.log.Debug("local page", "method", req.Request.Method, "url", redactURL(req.Request.URL), "status", res.Status)
	}
	if err := p.c.call(cctx, "", "Fetch.fulfillRequest", fulfillParams(req.RequestID, res), nil); err != nil {
		p.log.Error("answer local page", "url", redactURL(req.Request.URL), mc.LogReason, mc.ReasonLocalPageFailed, mc.LogError, err)
		// The page must not wait on: fail the request instead.
		if err := p.c.call(cctx, "", "Fetch.failRequest", map[string]any{"requestId": req.RequestID, "errorReason": "Failed"}, nil); err != nil {
			p.log.Warn("fail local page request", mc.LogError, err)
		}
	}
}

// run runs the handler on req, bounded by p.timeout; a handler that panics
// or overruns is an error.
func (p *localPages) run(ctx context.Context, req *pausedRequest) (*httprec.Recorder, error) {
	body, err := req.body()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	r, err := http.NewRequestWithContext(ctx, req.Request.Method, req.Request.URL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	for k, v := range req.Request.Headers {
		// DevTools joins a repeated header's values with newlines.
		for _, one := range strings.Split(v, "\n") {
			r.Header.Add(k, one)
		}
	}
	r.RemoteAddr = "browser"
	w := &httprec.Recorder{}
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		p.handler.ServeHTTP(w, r)
	}()
	select {
	case v := <-done:
		if v != nil {
			return nil, fmt.Errorf("page handler panicked: %v", v)
		}
		return w, nil
	case <-ctx.Done():
		// The handler goroutine keeps its own response, which nothing reads.
		return nil, fmt.Errorf("page handler: %w", context.Cause(ctx))
	}
}

// body returns the request's body: DevTools gives it base64 in
// postDataEntries (or as a string in postData).
func (req *pausedRequest) body() ([]byte, error) {
	if len(req.Request.PostDataEntries) > 0 {
		var b []byte
		for _, e := range req.Request.PostDataEntries {
			d, err := base64.StdEncoding.DecodeString(e.Bytes)
			if err != nil {
				return nil, fmt.Errorf("decode request body: %w", err)
			}
			b = append(b, d...)
		}
		return b, nil
	}
	if req.Request.PostData != "" {
		return []byte(req.Request.PostData), nil
	}
	if req.Request.HasPostData {
		return nil, fmt.Errorf("request body not given by the browser (a file upload?)")
	}
	return nil, nil
}

// fulfill is Fetch.fulfillRequest's parameters for the response.
func fulfillParams(requestID string, w *httprec.Recorder) map[string]any {
	status := w.Status
	if status == 0 {
		status = http.StatusOK
	}
	headers := []map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(w.Header())) {
		for _, v := range w.Header()[k] {
			headers = append(headers, map[string]string{"name": k, "value": v})
		}
	}
	return map[string]any{
		"requestId":       requestID,
		"responseCode":    status,
		"responseHeaders": headers,
		"body":            base64.StdEncoding.EncodeToString(w.Body.Bytes()),
	}
}

// failedPage is the browser's answer when a local page fails.
func failedPage() *httprec.Recorder {
	w := &httprec.Recorder{}
	writePage(w, http.StatusBadGateway, failedPageHTML)
	return w
}

const failedPageHTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Page unavailable</title></head>
<body><h1>This page could not be shown</h1><p>The machine could not produce it. Reload to try again.</p></body></html>
`
