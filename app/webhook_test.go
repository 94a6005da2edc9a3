package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/webhook"
)

// TestWebhookOnFinalState: a configured webhook receives one signed event
// when a session ends, without any secret of the session.
func TestWebhookOnFinalState(t *testing.T) {
	type delivery struct {
		body []byte
		sig  string
	}
	got := make(chan delivery, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- delivery{b, r.Header.Get("X-MC-Signature")}
	}))
	defer hook.Close()
	const secret = "hook-secret-0123456789"
	tm := startMain(t, map[string]string{"MC_WEBHOOK_URL": hook.URL + "/hook", "MC_WEBHOOK_SECRET": secret})

	var c created
	if code := tm.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": "hook-user", "provider": "demo"}, &c); code != 201 {
		t.Fatalf("create: %d", code)
	}
	s := testutil.WaitState(t, tm.Store, c.Session.ID, mc.StateReady, 30*time.Second)
	var out struct{ Session mc.Session }
	if code := tm.api.Do(t, "POST", "/api/v1/sessions/"+c.Session.ID+"/cancel", nil, &out); code != 200 {
		t.Fatalf("cancel: %d", code)
	}
	var d delivery
	select {
	case d = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook delivery")
	}
	if !webhook.Verify(mc.SecretOf(secret), d.body, d.sig) {
		t.Errorf("signature %q does not verify", d.sig)
	}
	var ev webhook.Event
	if err := json.Unmarshal(d.body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.SessionID != c.Session.ID || ev.State != mc.StateCancelled || ev.Reason != mc.ReasonCancelledByAPI || ev.UserID != "hook-user" {
		t.Errorf("event %+v", ev)
	}
	sec := tm.MachineKey.Secrets(s.ID)
	for _, secret := range []string{sec.VNCPassword.Reveal(), sec.AgentToken.Reveal(), c.Viewer.Token} {
		if secret != "" && strings.Contains(string(d.body), secret) {
			t.Error("the webhook body holds a session secret")
		}
	}
}
