package e2e_test

import (
	"image"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/browsertest"
)

// showsDemoPage accepts a canvas image that shows the demo sign-in page.
func showsDemoPage(img image.Image) bool { return demoPageProblem(img) == "" }

// viewerState is what the viewer page publishes as window.mcViewer.
type viewerState struct {
	State           string `json:"state"`
	Status          string `json:"status"`
	LastCloseCode   *int   `json:"lastCloseCode"`
	LastCloseReason string `json:"lastCloseReason"`
	ConnectedCount  int    `json:"connectedCount"`
}

func readViewer(b *browsertest.Browser) viewerState {
	var v viewerState
	b.MustEval(`(() => { const v = window.mcViewer; return {state: v.state, status: v.status,
		lastCloseCode: v.lastCloseCode, lastCloseReason: v.lastCloseReason, connectedCount: v.connectedCount}; })()`, &v)
	return v
}

// TestViewerNoVNC is issue 4's browser test: the real noVNC client of the
// viewer page, in headless Chromium, opened at the viewer URL that POST
// /api/v1/sessions returned (while the machine is still starting). It
// connects and shows the machine's page; a reload reconnects, taking the
// session over, and shows the page again; a second tab takes over from the
// first, which says so (close code 4409).
func TestViewerNoVNC(t *testing.T) {
	c := startController(t, controllerEnv(t, defaultMode()))
	cr := c.api.createSession(t, "viewer-user", "demo")
	id := cr.Session.ID

	b := browsertest.New(t)
	b.Timeout = 60 * time.Second
	b.Open(cr.Viewer.URL)
	b.WaitState("connected")
	b.Timeout = 30 * time.Second
	if w, h := b.CanvasSize(); w != 1280 || h != 800 {
		t.Errorf("canvas is %dx%d, want the remote screen's 1280x800", w, h)
	}
	b.WaitCanvas("the demo sign-in page", showsDemoPage)
	s1, err := c.Store.Session(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if s1.State != mc.StateReady || s1.Viewer == "" {
		t.Fatalf("session with a viewer: state %s, viewer %q; want ready with a viewer id", s1.State, s1.Viewer)
	}

	// Reload: the page keeps its token (sessionStorage), reconnects and
	// takes the session over from its own previous connection.
	b.Reload()
	b.WaitState("connected")
	b.WaitCanvas("the demo sign-in page after a reload", showsDemoPage)
	if v := readViewer(b); v.ConnectedCount != 1 || v.State != "connected" {
		t.Errorf("after reload: viewer %+v, want connected once", v)
	}
	s2, err := c.Store.Session(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Viewer == "" || s2.Viewer == s1.Viewer {
		t.Errorf("after reload the session's viewer is %q (before: %q), want a new one", s2.Viewer, s1.Viewer)
	}

	// Another tab takes over; the first says so and does not reconnect.
	b2 := b.NewTab()
	b2.Open(cr.Viewer.URL)
	b2.WaitState("connected")
	b2.WaitCanvas("the demo sign-in page in the second tab", showsDemoPage)
	b.WaitState("taken-over")
	if v := readViewer(b); v.LastCloseCode == nil || *v.LastCloseCode != 4409 {
		t.Errorf("first tab after take-over: %+v, want close code 4409", v)
	}
	if s, _ := c.Store.Session(t.Context(), id); s == nil || s.State != mc.StateReady {
		t.Errorf("session after the viewers came and went: %+v, want still ready", s)
	}
}
