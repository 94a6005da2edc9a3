package agent

import (
	"github.com/master-controller/mc"

	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// cdp talks to Chromium's DevTools protocol over the pipe that
// --remote-debugging-pipe opens: Chromium reads commands from its fd 3 and
// writes replies and events to its fd 4, each message a JSON object ended by
// a NUL byte. There is no TCP debugging port, so no other process (another
// machine's page included) can reach the browser's DevTools.
//
// Page commands go to a page target through a flattened session
// (Target.attachToTarget with flatten), one per call.
type cdp struct {
	w io.WriteCloser // Chromium's fd 3

	wmu    sync.Mutex // one message at a time on w
	mu     sync.Mutex
	nextID int64
	calls  map[int64]chan cdpReply
	closed chan struct{} // closed when the read side ends
	err    error         // why it ended, set before closed is closed
	// queues hold the browser-level events (not a page session's) of
	// the methods subscribed to; the others are ignored.
	queues map[string]*eventQueue
	// own are the targets that the agent created for itself (see
	// createOwnTarget): not the user's, so neither a tab to navigate nor a
	// window for the kiosk to close. ownMu is held for writing from
	// before such a target is created until its id is in own, so that
	// nobody who has heard of the target (Target.targetCreated,
	// Target.getTargets) looks it up before then.
	ownMu sync.RWMutex
	own   map[string]bool
}

// eventQueue holds the parameters of one method's events, oldest first,
// without a bound: an event is never dropped (a Fetch.requestPaused left
// unanswered hangs its page for good). Its reader takes them with next.
type eventQueue struct {
	closed <-chan struct{} // the client's
	mu     sync.Mutex
	params []json.RawMessage
	wake   chan struct{} // holds a value once params has grown
}

func (q *eventQueue) push(p json.RawMessage) {
	q.mu.Lock()
	q.params = append(q.params, p)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// next returns the oldest event's parameters, waiting for one until ctx
// ends or the browser's end of the pipe closes (then ok is false).
func (q *eventQueue) next(ctx context.Context) (params json.RawMessage, ok bool) {
	for {
		q.mu.Lock()
		if len(q.params) > 0 {
			p := q.params[0]
			q.params[0] = nil
			q.params = q.params[1:]
			q.mu.Unlock()
			return p, true
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-q.closed:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
}

// subscribe returns the queue of the browser-level events named method,
// which collects them from now on. Each method has one queue, and so one
// reader.
func (c *cdp) subscribe(method string) *eventQueue {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queues[method]
	if q == nil {
		q = &eventQueue{closed: c.closed, wake: make(chan struct{}, 1)}
		c.queues[method] = q
	}
	return q
}

// cdpTarget is one entry of Target.getTargets.
type cdpTarget struct {
	ID    string `json:"targetId"`
	Type  string `json:"type"`
	URL   string `json:"url"`
	Title string `json:"title"`
}

// cdpReply is one reply from the browser.
type cdpReply struct {
	ID     int64           `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// errCDPClosed says that the browser's end of the pipe is gone.
var errCDPClosed = errors.New("devtools pipe closed")

// cdpPipes returns the two pipes of --remote-debugging-pipe: the files that
// Chromium gets as fd 3 (it reads) and fd 4 (it writes), and the agent's
// ends. The caller closes Chromium's ends once it has started.
func cdpPipes() (browserIn, browserOut *os.File, c *cdp, err error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("devtools pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, nil, nil, fmt.Errorf("devtools pipe: %w", err)
	}
	return inR, outW, newCDP(inW, outR), nil
}

// newCDP returns a client that writes commands to w and reads replies from
// r until r ends.
func newCDP(w io.WriteCloser, r io.ReadCloser) *cdp {
	c := &cdp{w: w, calls: map[int64]chan cdpReply{}, closed: make(chan struct{}), queues: map[string]*eventQueue{},
		own: map[string]bool{}}
	go c.read(r)
	return c
}

func (c *cdp) read(r io.ReadCloser) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 64<<10)
	var err error
	for {
		var msg []byte
		msg, err = br.ReadBytes(0)
		if err != nil {
			break
		}
		msg = bytes.TrimSuffix(msg, []byte{0})
		var rep cdpReply
		if json.Unmarshal(msg, &rep) != nil {
			continue
		}
		if rep.ID == 0 {
			var ev struct {
				Method    string          `json:"method"`
				Params    json.RawMessage `json:"params"`
				SessionID string          `json:"sessionId"`
			}
			if json.Unmarshal(msg, &ev) != nil || ev.SessionID != "" || ev.Method == "" {
				continue
			}
			c.mu.Lock()
			q := c.queues[ev.Method]
			c.mu.Unlock()
			if q != nil {
				q.push(ev.Params)
			}
			continue
		}
		c.mu.Lock()
		ch := c.calls[rep.ID]
		delete(c.calls, rep.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %v", errCDPClosed, err)
	c.mu.Unlock()
	close(c.closed)
}

// Close closes the agent's write end; the browser then sees end of input.
func (c *cdp) Close() error { return c.w.Close() }

// call sends method (to session when not "") and decodes the reply's result
// into result when non-nil.
func (c *cdp) call(ctx context.Context, session, method string, params, result any) error {
	if params == nil {
		params = struct{}{}
	}
	ch := make(chan cdpReply, 1)
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.calls[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.calls, id)
		c.mu.Unlock()
	}()
	m := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		m["sessionId"] = session
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("devtools %s: %w", method, err)
	}
	c.wmu.Lock()
	_, err = c.w.Write(append(b, 0))
	c.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("devtools %s: %w", method, err)
	}
	select {
	case rep := <-ch:
		if rep.Error != nil {
			return fmt.Errorf("devtools %s: %d %s", method, rep.Error.Code, rep.Error.Message)
		}
		if result != nil {
			if err := json.Unmarshal(rep.Result, result); err != nil {
				return fmt.Errorf("devtools %s: decode: %w", method, err)
			}
		}
		return nil
	case <-c.closed:
		return fmt.Errorf("devtools %s: %w", method, c.err)
	case <-ctx.Done():
		return fmt.Errorf("devtools %s: %w", method, ctx.Err())
	}
}

// Version asks Browser.getVersion; an answer means the browser is alive.
func (c *cdp) Version(ctx context.Context) (map[string]string, error) {
	var v map[string]string
	err := c.call(ctx, "", "Browser.getVersion", nil, &v)
	return v, err
}

// Targets lists the browser's targets but the agent's own (see
// createOwnTarget): Chromium lists the newest first, and a background tab
// of the agent's must never be taken for the user's.
func (c *cdp) Targets(ctx context.Context) ([]cdpTarget, error) {
	var res struct {
		TargetInfos []cdpTarget `json:"targetInfos"`
	}
	if err := c.call(ctx, "", "Target.getTargets", nil, &res); err != nil {
		return nil, err
	}
	c.ownMu.RLock()
	defer c.ownMu.RUnlock()
	ts := res.TargetInfos[:0]
	for _, t := range res.TargetInfos {
		if !c.own[t.ID] {
			ts = append(ts, t)
		}
	}
	return ts, nil
}

// isOwn reports whether id is a target that the agent created for itself,
// waiting for one being created to be recorded first.
func (c *cdp) isOwn(id string) bool {
	c.ownMu.RLock()
	defer c.ownMu.RUnlock()
	return c.own[id]
}

// createOwnTarget creates a target for the agent's own use
// (Target.createTarget with params) and records it as the agent's, so that
// KeepOneWindow leaves it open and Targets leaves it out. The caller closes
// it with closeOwnTarget.
func (c *cdp) createOwnTarget(ctx context.Context, params map[string]any) (string, error) {
	c.ownMu.Lock()
	defer c.ownMu.Unlock()
	var res struct {
		TargetID string `json:"targetId"`
	}
	if err := c.call(ctx, "", "Target.createTarget", params, &res); err != nil {
		return "", err
	}
	c.own[res.TargetID] = true
	return res.TargetID, nil
}

// closeOwnTarget closes a target of createOwnTarget's, even when ctx has
// ended (with at most two seconds of its own). Its id stays recorded as
// the agent's: KeepOneWindow may read the event of its creation only now
// (an id is 32 bytes, and the agent creates one per GET /sandbox).
func (c *cdp) closeOwnTarget(ctx context.Context, id string) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	return c.call(cctx, "", "Target.closeTarget", map[string]any{"targetId": id}, nil)
}

// isTab reports whether t is a tab of the browser's window: a page target
// that is not part of Chromium's own interface. Chromium 156 lists hidden
// pages of its own, such as chrome://omnibox-popup.top-chrome/, among the
// page targets, often before the tab: a navigation sent there is never seen.
func (t cdpTarget) isTab() bool {
	if t.Type != "page" {
		return false
	}
	for _, p := range []string{"chrome://", "chrome-untrusted://", "devtools://"} {
		if strings.HasPrefix(t.URL, p) {
			return false
		}
	}
	return true
}

// isWindow reports whether t may be a window of its own that the kiosk must
// close: any page target but Chromium's hidden pages of its own interface
// (chrome://…top-chrome/). A new window's tab may be chrome://newtab/ at
// first, so this is wider than isTab.
func (t cdpTarget) isWindow() bool {
	return t.Type == "page" && !(strings.HasPrefix(t.URL, "chrome://") && strings.Contains(t.URL, ".top-chrome"))
}

// Page returns the browser's first tab, creating one when there is none
// (the window may have been closed).
func (c *cdp) Page(ctx context.Context) (cdpTarget, error) {
	ts, err := c.Targets(ctx)
	if err != nil {
		return cdpTarget{}, err
	}
	for _, t := range ts {
		if t.isTab() {
			return t, nil
		}
	}
	var res struct {
		TargetID string `json:"targetId"`
	}
	if err := c.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &res); err != nil {
		return cdpTarget{}, err
	}
	return cdpTarget{ID: res.TargetID, Type: "page", URL: "about:blank"}, nil
}

// Session runs fn with a flattened DevTools session attached to the page
// target, detached afterwards; call sends page commands through it.
func (c *cdp) Session(ctx context.Context, fn func(call func(method string, params, result any) error) error) error {
	t, err := c.Page(ctx)
	if err != nil {
		return err
	}
	return c.attach(ctx, t.ID, fn)
}

// attach runs fn with a flattened DevTools session attached to the target
// id, detached afterwards (even when ctx has ended).
func (c *cdp) attach(ctx context.Context, id string, fn func(call func(method string, params, result any) error) error) error {
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := c.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": id, "flatten": true}, &att); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = c.call(dctx, "", "Target.detachFromTarget", map[string]any{"sessionId": att.SessionID}, nil)
	}()
	return fn(func(method string, params, result any) error {
		return c.call(ctx, att.SessionID, method, params, result)
	})
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
	var res struct {
		ErrorText string `json:"errorText"`
	}
	err := c.Session(ctx, func(call func(string, any, any) error) error {
		return call("Page.navigate", map[string]any{"url": url}, &res)
	})
	if err != nil {
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

// waitTab returns once the browser's first tab shows url, or with the
// error that ended the wait.
func (c *cdp) waitTab(ctx context.Context, url string) error {
	err := c.waitFirstTab(ctx, func(u string) bool { return sameURL(u, url) })
	if ctx.Err() != nil {
		return fmt.Errorf("wait for the tab to show %s: %w", redactURL(url), err)
	}
	return err
}

// waitFirstTab returns once the browser lists its first tab (Chromium's
// hidden pages of its own do not count) and shows is nil or true of its
// URL, polling every 20 ms; or with the error that ended the wait.
func (c *cdp) waitFirstTab(ctx context.Context, shows func(url string) bool) error {
	for {
		ts, err := c.Targets(ctx)
		if err != nil {
			return err
		}
		for _, t := range ts {
			if t.isTab() {
				if shows == nil || shows(t.URL) {
					return nil
				}
				break
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// KeepOneWindow closes every page target that the browser creates from now
// on (Ctrl+N, a pop-up, a link to a new window) while the tab it keeps is
// still there: the machine is a kiosk of one tab, and a second window would
// cover it. Targets that exist when it starts are left alone, and so are
// the agent's own (createOwnTarget); the tab kept is the first page among
// the first, or else the first one created, and when it is gone the next
// one created takes its place. It returns when ctx ends or the browser is
// gone.
func (c *cdp) KeepOneWindow(ctx context.Context, log *slog.Logger) error {
	ts, err := c.Targets(ctx)
	if err != nil {
		return err
	}
	var kept string
	existing := map[string]bool{}
	for _, t := range ts {
		existing[t.ID] = true
		if t.isTab() && kept == "" {
			kept = t.ID
		}
	}
	created := c.subscribe("Target.targetCreated")
	// This announces every existing target as created too.
	if err := c.call(ctx, "", "Target.setDiscoverTargets", map[string]any{"discover": true}, nil); err != nil {
		return err
	}
	log.Debug("kiosk watches for new windows")
	for {
		params, ok := created.next(ctx)
		if !ok {
			return nil
		}
		var p struct {
			TargetInfo cdpTarget `json:"targetInfo"`
		}
		if json.Unmarshal(params, &p) != nil ||
			!p.TargetInfo.isWindow() || existing[p.TargetInfo.ID] || p.TargetInfo.ID == kept || c.isOwn(p.TargetInfo.ID) {
			continue
		}
		if !c.hasTarget(ctx, kept) {
			kept = p.TargetInfo.ID
			continue
		}
		if err := c.call(ctx, "", "Target.closeTarget", map[string]any{"targetId": p.TargetInfo.ID}, nil); err != nil {
			log.Warn("close a second browser window", mc.LogError, err)
			continue
		}
		log.Info("closed a second browser window")
	}
}

// hasTarget reports whether the browser lists a target with id.
func (c *cdp) hasTarget(ctx context.Context, id string) bool {
	if id == "" {
		return false
	}
	ts, err := c.Targets(ctx)
	if err != nil {
		return false
	}
	for _, t := range ts {
		if t.ID == id {
			return true
		}
	}
	return false
}
