package agentproto

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/master-controller/mc"
)

// CallTimeout bounds one call, beyond the time a long poll may be held.
const CallTimeout = 10 * time.Second

// Client calls one machine agent's API.
//
// Errors are *mc.Error: the agent's own code and reason for a refusal (410
// Gone becomes ENOTFOUND with reason "result_delivered"), EUNAVAILABLE with
// reason "agent_unreachable" when the agent cannot be reached, and
// EUNAVAILABLE with reason "machine_unhealthy" from Health when the machine
// answers but is not healthy. No error holds the agent's address or token.
type Client struct {
	base  string
	token mc.Secret
	http  *http.Client
}

// directHTTP is the client of NewClient's callers that bring none: a
// machine's agent is never reached through a proxy (the environment's
// HTTP_PROXY would get its token and could not reach the machine), and a
// connection is not kept for a machine that may be gone at the next call.
var directHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// NewClient returns a client for the agent at ep (a TCP address or a Unix
// socket: mc.Machine.AgentEndpoint). A nil hc means a client without proxy
// or kept connections; for a socket, hc's transport is cloned to dial the
// socket. Every call is bounded by CallTimeout (plus the wait of a long
// poll) whatever hc's own timeout.
func NewClient(ep mc.Endpoint, token mc.Secret, hc *http.Client) *Client {
	if hc == nil {
		hc = directHTTP
	}
	if ep.Network != "unix" {
		return &Client{base: "http://" + ep.Address, token: token, http: hc}
	}
	tr, ok := hc.Transport.(*http.Transport)
	if !ok || tr == nil {
		tr = http.DefaultTransport.(*http.Transport)
	}
	tr = tr.Clone()
	tr.Proxy = nil
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) { return ep.Dial(ctx, 0) }
	uc := *hc
	uc.Transport = tr
	return &Client{base: "http://agent", token: token, http: &uc}
}

// Health returns the agent's health. A machine that answers but is not
// healthy returns its Health and an EUNAVAILABLE error.
func (c *Client) Health(ctx context.Context) (Health, error) {
	return c.WaitHealth(ctx, 0)
}

// WaitHealth is Health as a long poll: an agent whose machine is still
// starting answers once its Xvnc and Chromium run, or after wait (at most
// MaxStatusWait). An agent that does not know the wait answers at once.
func (c *Client) WaitHealth(ctx context.Context, wait time.Duration) (Health, error) {
	path := PathHealth
	wait = min(wait, MaxStatusWait)
	if wait > 0 {
		path += "?wait=" + url.QueryEscape(wait.String())
	}
	var h Health
	err := c.call(ctx, http.MethodGet, path, wait, nil, &h)
	return h, err
}

// Open navigates the machine's browser to rawURL (http(s), about:blank or
// local:/path).
func (c *Client) Open(ctx context.Context, rawURL string) error {
	return c.call(ctx, http.MethodPost, PathOpen, 0, OpenRequest{URL: rawURL}, nil)
}

// StartLogin starts p's login in the machine.
func (c *Client) StartLogin(ctx context.Context, p mc.Provider) (LoginStatus, error) {
	var s LoginStatus
	err := c.call(ctx, http.MethodPost, PathLoginStart, 0, LoginStartRequest{Provider: p}, &s)
	return s, err
}

// LoginStatus returns the login's status. With wait > 0 the agent answers
// once the status's Seq differs from since (at once if it already does), or
// after wait (at most MaxStatusWait).
func (c *Client) LoginStatus(ctx context.Context, since int64, wait time.Duration) (LoginStatus, error) {
	path := PathLoginStatus
	wait = min(wait, MaxStatusWait)
	if wait > 0 {
		path += "?wait=" + url.QueryEscape(wait.String()) + "&since=" + strconv.FormatInt(since, 10)
	}
	var s LoginStatus
	err := c.call(ctx, http.MethodGet, path, wait, nil, &s)
	return s, err
}

// LoginResult fetches a complete login's files; the agent then deletes its
// copy, so a second call fails with reason "result_delivered".
func (c *Client) LoginResult(ctx context.Context) (LoginResult, error) {
	var r LoginResult
	err := c.call(ctx, http.MethodGet, PathLoginResult, 0, nil, &r)
	return r, err
}

// Sandbox returns what the machine's Chromium reports of its own sandbox
// (chrome://sandbox, read in a background tab): EUNAVAILABLE with reason
// "machine_starting" before the browser runs, "browser_unavailable" when
// the page could not be read.
func (c *Client) Sandbox(ctx context.Context) (BrowserSandbox, error) {
	var s BrowserSandbox
	err := c.call(ctx, http.MethodGet, PathSandbox, 0, nil, &s)
	return s, err
}

func unreachable(method, path string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // without the URL: it holds the machine's address
	}
	return &mc.Error{Code: mc.EUNAVAILABLE, Reason: mc.ReasonAgentUnreachable, Message: "the machine agent did not answer",
		Err: fmt.Errorf("agent %s %s: %w", method, path, err)}
}

func (c *Client) call(ctx context.Context, method, path string, wait time.Duration, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout+wait)
	defer cancel()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode agent request %s: %w", path, err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return fmt.Errorf("agent request %s: %w", path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token.Reveal())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return unreachable(method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return unreachable(method, path, err)
	}
	if resp.StatusCode == http.StatusServiceUnavailable && path == PathHealth {
		_ = json.Unmarshal(b, out)
		return mc.Errorf(mc.EUNAVAILABLE, mc.ReasonMachineUnhealthy, "the machine is not healthy")
	}
	if resp.StatusCode >= 300 {
		var e ErrorBody
		_ = json.Unmarshal(b, &e)
		code := e.Code
		switch {
		case resp.StatusCode == http.StatusGone:
			code = mc.ENOTFOUND
		case code == "":
			code = mc.EINTERNAL
		}
		return &mc.Error{Code: code, Reason: e.Reason, Message: e.Message, Err: fmt.Errorf("agent %s %s: status %d", method, path, resp.StatusCode)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode agent reply %s: %w", path, err)
		}
	}
	return nil
}
