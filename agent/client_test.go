package agent

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/master-controller/mc"
	proto "github.com/master-controller/mc/agentproto"
)

func testClient(tb testing.TB, a *testAPI, token string) *proto.Client {
	tb.Helper()
	u, err := url.Parse(a.srv.URL)
	if err != nil {
		tb.Fatal(err)
	}
	return proto.NewClient(mc.Endpoint{Network: "tcp", Address: u.Host}, mc.SecretOf(token), nil)
}

func TestClient(t *testing.T) {
	a := newTestAPI(t)
	c := testClient(t, a, a.token)
	ctx := t.Context()

	if h, err := c.Health(ctx); err != nil || !h.VNC || !h.Browser {
		t.Errorf("proto.Health = %+v, %v", h, err)
	}
	a.health = proto.Health{VNC: true}
	if h, err := c.Health(ctx); mc.ErrorCode(err) != mc.EUNAVAILABLE || !h.VNC || h.Browser {
		t.Errorf("unhealthy proto.Health = %+v, %v; want vnc only and EUNAVAILABLE", h, err)
	}
	// Another page than the login's start URL, which the login then opens
	// (a tab that shows it already is left as it is).
	if err := c.Open(ctx, "local:/demo/other"); err != nil {
		t.Fatal(err)
	}
	if u := <-a.browser.urls; u != a.page.URL+"/demo/other" {
		t.Errorf("opened %q, want the page server's /demo/other", u)
	}
	if err := c.Open(ctx, "file:///etc/passwd"); mc.ErrorCode(err) != mc.EINVALID {
		t.Errorf("Open(file:) = %v, want EINVALID", err)
	}

	st, err := c.StartLogin(ctx, demoProvider(time.Minute))
	if err != nil || st.State != proto.StateRunning {
		t.Fatalf("StartLogin = %+v, %v", st, err)
	}
	opened := <-a.browser.urls
	if _, err := c.LoginResult(ctx); mc.ErrorCode(err) != mc.ECONFLICT {
		t.Errorf("proto.LoginResult while running = %v, want ECONFLICT", err)
	}
	resp, err := http.Post(opened, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	// Each long poll answers with the next change (Seq), until the end.
	for seen := st.Seq; st.State == proto.StateRunning; seen = st.Seq {
		if st, err = c.LoginStatus(ctx, seen, 30*time.Second); err != nil || st.Seq <= seen && st.State == proto.StateRunning {
			t.Fatalf("LoginStatus(since %d) = %+v, %v; want a later Seq", seen, st, err)
		}
	}
	if st.State != proto.StateComplete {
		t.Fatalf("LoginStatus = %+v, want complete", st)
	}
	res, err := c.LoginResult(ctx)
	if err != nil || len(res.Files) != 1 {
		t.Fatalf("proto.LoginResult = %+v, %v", res, err)
	}
	_, err = c.LoginResult(ctx)
	if mc.ErrorCode(err) != mc.ENOTFOUND || mc.ErrorReason(err) != "result_delivered" {
		t.Errorf("second proto.LoginResult = %v, want ENOTFOUND result_delivered", err)
	}

	bad := testClient(t, a, "wrong")
	if _, err := bad.Health(ctx); mc.ErrorCode(err) != mc.EUNAUTHORIZED {
		t.Errorf("proto.Health with a wrong token = %v, want EUNAUTHORIZED", err)
	}
	a.srv.Close()
	if _, err := c.Health(ctx); mc.ErrorCode(err) != mc.EUNAVAILABLE || mc.ErrorReason(err) != "agent_unreachable" {
		t.Errorf("proto.Health of a closed agent = %v, want EUNAVAILABLE agent_unreachable", err)
	}
}
