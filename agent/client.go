package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/master-controller/mc"
)

// Client calls one machine agent's API, for the controller.
//
// Errors are *mc.Error: the agent's own code and reason for a refusal
// (410 Gone becomes ENOTFOUND with reason "result_delivered"), EUNAVAILABLE
// with reason "agent_unreachable" when the agent cannot be reached.
type Client struct {
	base  string
	token mc.Secret
	http  *http.Client
}

// NewClient returns a client for the agent at addr. A nil hc means a client
// with a 90 s timeout (long enough for a long-polled status).
func NewClient(addr netip.AddrPort, token mc.Secret, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 90 * time.Second}
	}
	return &Client{base: "http://" + addr.String(), token: token, http: hc}
}

// Health returns the agent's health. A machine that answers but is not
// healthy returns its Health and an EUNAVAILABLE error.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.call(ctx, http.MethodGet, "/health", nil, &h)
	return h, err
}

// Open navigates the machine's browser to rawURL (http(s), about:blank or
// local:/path).
func (c *Client) Open(ctx context.Context, rawURL string) error {
	return c.call(ctx, http.MethodPost, "/open", OpenRequest{URL: rawURL}, nil)
}

// StartLogin starts p's login in the machine.
func (c *Client) StartLogin(ctx context.Context, p mc.Provider) (LoginStatus, error) {
	var s LoginStatus
	err := c.call(ctx, http.MethodPost, "/login/start", LoginStartRequest{Provider: p}, &s)
	return s, err
}

// LoginStatus returns the login's status. With wait > 0 the agent answers
// once a running login changes state, or after wait (at most a minute).
func (c *Client) LoginStatus(ctx context.Context, wait time.Duration) (LoginStatus, error) {
	path := "/login/status"
	if wait > 0 {
		path += "?wait=" + url.QueryEscape(wait.String())
	}
	var s LoginStatus
	err := c.call(ctx, http.MethodGet, path, nil, &s)
	return s, err
}

// LoginResult fetches a complete login's files; the agent then deletes its
// copy, so a second call fails with reason "result_delivered".
func (c *Client) LoginResult(ctx context.Context) (LoginResult, error) {
	var r LoginResult
	err := c.call(ctx, http.MethodGet, "/login/result", nil, &r)
	return r, err
}

func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
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
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: "agent_unreachable", Message: "the machine agent did not answer", Err: fmt.Errorf("%s %s: %w", method, path, err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: "agent_unreachable", Message: "the machine agent did not answer", Err: fmt.Errorf("read %s: %w", path, err)}
	}
	if resp.StatusCode == http.StatusServiceUnavailable && path == "/health" {
		_ = json.Unmarshal(b, out)
		return mc.Errorf(mc.EUNAVAILABLE, "machine_unhealthy", "the machine is not healthy")
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
