package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/coder/websocket"
)

// cdp talks to Chromium's DevTools endpoint on 127.0.0.1:port: the HTTP
// discovery endpoints and, per call, one WebSocket to a page target.
type cdp struct {
	port   int
	client *http.Client
}

// cdpTarget is one entry of /json/list.
type cdpTarget struct {
	ID                   string `json:"id"`
	Type                 string `json:"type"`
	URL                  string `json:"url"`
	Title                string `json:"title"`
	WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
}

func (c *cdp) base() string { return "http://127.0.0.1:" + strconv.Itoa(c.port) }

func (c *cdp) getJSON(ctx context.Context, method, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base()+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("devtools %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("devtools %s: status %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("devtools %s: decode: %w", path, err)
	}
	return nil
}

// Version asks /json/version; an answer means the browser is alive.
func (c *cdp) Version(ctx context.Context) (map[string]string, error) {
	var v map[string]string
	err := c.getJSON(ctx, http.MethodGet, "/json/version", &v)
	return v, err
}

// Targets lists the browser's targets.
func (c *cdp) Targets(ctx context.Context) ([]cdpTarget, error) {
	var ts []cdpTarget
	err := c.getJSON(ctx, http.MethodGet, "/json/list", &ts)
	return ts, err
}

// Page returns the browser's first page target, creating one when there is
// none (the window may have been closed).
func (c *cdp) Page(ctx context.Context) (cdpTarget, error) {
	ts, err := c.Targets(ctx)
	if err != nil {
		return cdpTarget{}, err
	}
	for _, t := range ts {
		if t.Type == "page" && t.WebSocketDebuggerURL != "" {
			return t, nil
		}
	}
	var t cdpTarget
	err = c.getJSON(ctx, http.MethodPut, "/json/new?about:blank", &t)
	return t, err
}

// Navigate loads url in the page target. A navigation that another one
// (a click, a redirect) aborted is tried again, up to three times in all.
func (c *cdp) Navigate(ctx context.Context, url string) error {
	var err error
	for range 3 {
		if err = c.navigate(ctx, url); !errors.Is(err, errNavigationAborted) {
			return err
		}
	}
	return err
}

// errNavigationAborted is Chromium's net::ERR_ABORTED for a navigation.
var errNavigationAborted = errors.New("navigation aborted")

func (c *cdp) navigate(ctx context.Context, url string) error {
	t, err := c.Page(ctx)
	if err != nil {
		return err
	}
	conn, err := dialCDP(ctx, t.WebSocketDebuggerURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	var res struct {
		ErrorText string `json:"errorText"`
	}
	if err := conn.Call(ctx, "Page.navigate", map[string]any{"url": url}, &res); err != nil {
		return err
	}
	switch res.ErrorText {
	case "":
		return nil
	case "net::ERR_ABORTED":
		return errNavigationAborted
	}
	return fmt.Errorf("navigate: %s", res.ErrorText)
}

// cdpConn is one DevTools WebSocket session; calls are sequential.
type cdpConn struct {
	ws     *websocket.Conn
	nextID atomic.Int64
}

func dialCDP(ctx context.Context, wsURL string) (*cdpConn, error) {
	ws, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		return nil, fmt.Errorf("dial devtools: %w", err)
	}
	ws.SetReadLimit(64 << 20) // screenshots
	return &cdpConn{ws: ws}, nil
}

// Call sends method with params and decodes the matching reply's result into
// result (when non-nil). Events that arrive in between are dropped.
func (c *cdpConn) Call(ctx context.Context, method string, params, result any) error {
	id := c.nextID.Add(1)
	msg, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return err
	}
	if err := c.ws.Write(ctx, websocket.MessageText, msg); err != nil {
		return fmt.Errorf("devtools %s: %w", method, err)
	}
	for {
		_, b, err := c.ws.Read(ctx)
		if err != nil {
			return fmt.Errorf("devtools %s: %w", method, err)
		}
		var reply struct {
			ID     int64           `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(b, &reply); err != nil {
			return fmt.Errorf("devtools %s: decode: %w", method, err)
		}
		if reply.ID != id {
			continue
		}
		if reply.Error != nil {
			return fmt.Errorf("devtools %s: %d %s", method, reply.Error.Code, reply.Error.Message)
		}
		if result != nil {
			return json.Unmarshal(reply.Result, result)
		}
		return nil
	}
}

// Close closes the WebSocket.
func (c *cdpConn) Close() error { return c.ws.Close(websocket.StatusNormalClosure, "") }
