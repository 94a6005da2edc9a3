package session

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
	"time"

	mc "github.com/master-controller/mc"
)

// agentClient talks to the machine agent of one machine over HTTP with the
// machine's own token.
type agentClient struct {
	http  *http.Client
	base  string
	token mc.Secret
	// gone tells when the machine's processes have exited, and why.
	gone *machineGone
}

func newAgentClient(hc *http.Client, m mc.Machine, token mc.Secret) *agentClient {
	return &agentClient{http: hc, base: "http://" + m.AgentAddr().String(), token: token}
}

// loginStatus is the agent's GET /login/status answer.
type loginStatus struct {
	State   string `json:"state"` // idle, running, complete, failed
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	URL     string `json:"url,omitempty"`
}

// loginResult is the agent's GET /login/result answer.
type loginResult struct {
	Files map[string]string `json:"files"`
}

// agentTimeout bounds one agent request (beyond a long poll's own wait).
const agentTimeout = 10 * time.Second

func (a *agentClient) do(ctx context.Context, method, path string, in, out any) error {
	return a.doWait(ctx, method, path, 0, in, out)
}

// doWait sends one request, bounded by agentTimeout plus wait (the time the
// agent may hold a long poll).
func (a *agentClient) doWait(ctx context.Context, method, path string, wait time.Duration, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, agentTimeout+wait)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token.Reveal())
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL: it holds the machine's address
		}
		return fmt.Errorf("agent %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("agent %s %s: status %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(msg))
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out); err != nil {
		return fmt.Errorf("agent %s %s: decode: %w", method, path, err)
	}
	return nil
}

func (a *agentClient) health(ctx context.Context) error {
	return a.do(ctx, http.MethodGet, "/health", nil, nil)
}

func (a *agentClient) loginStart(ctx context.Context, p mc.Provider) error {
	return a.do(ctx, http.MethodPost, "/login/start", map[string]any{"provider": p}, nil)
}

// loginStatus asks for the login's status; with wait > 0 the agent holds
// the request until the status changes or wait passes (a long poll).
func (a *agentClient) loginStatus(ctx context.Context, wait time.Duration) (loginStatus, error) {
	var st loginStatus
	path := "/login/status"
	if wait > 0 {
		path += "?wait=" + wait.String()
	}
	err := a.doWait(ctx, http.MethodGet, path, wait, nil, &st)
	return st, err
}

func (a *agentClient) loginResult(ctx context.Context) (loginResult, error) {
	var r loginResult
	err := a.do(ctx, http.MethodGet, "/login/result", nil, &r)
	return r, err
}

// rfbBanner dials addr and reads the RFB protocol banner ("RFB 003.008\n").
func rfbBanner(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(2 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetReadDeadline(deadline)
	var b [12]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("read RFB banner: %w", err)
	}
	if !bytes.HasPrefix(b[:], []byte("RFB 003.")) {
		return fmt.Errorf("not an RFB server: %q", b[:4])
	}
	return nil
}
