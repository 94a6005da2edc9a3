package agent

import (
	proto "github.com/master-controller/mc/agentproto"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
)

// cliProvider runs the stand-in CLI (testdata/fakecli) as its login.
func cliProvider(tb testing.TB, args ...string) mc.Provider {
	bin := testutil.BuildBinary(tb, "github.com/master-controller/mc/agent/testdata/fakecli")
	return mc.Provider{
		Name:         "fakecli",
		LoginCommand: append([]string{bin, "-out", ".fake/auth.json"}, args...),
		Files:        []mc.CredentialFile{{Path: "~/.fake/auth.json", RequiredKeys: []string{"tokens.access_token", "account"}}},
		LoginTimeout: time.Minute,
	}
}

func TestCLILogin(t *testing.T) {
	a := newTestAPI(t)
	if status, body := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: cliProvider(t)}); status != http.StatusAccepted {
		t.Fatalf("start: %d %s", status, body)
	}
	// The agent read the URL the CLI printed on its terminal and opened it.
	opened := <-a.browser.urls
	u, err := url.Parse(opened)
	if err != nil || u.Host == "" || u.Path != "/oauth" || u.Query().Get("state") == "" || u.Query().Get("client_id") != "fake" {
		t.Fatalf("opened %q, want the CLI's oauth URL", opened)
	}
	_, body := a.do(t, "GET", "/login/status", nil)
	if st := decode[proto.LoginStatus](t, body); st.State != proto.StateRunning || st.URL != opened {
		t.Errorf("status = %+v, want running with url %q", st, opened)
	}
	// Be the browser: follow the URL, which is the CLI's own callback.
	resp, err := http.Get(opened)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	_, body = a.do(t, "GET", "/login/status?wait=30s", nil)
	if st := decode[proto.LoginStatus](t, body); st.State != proto.StateComplete {
		t.Fatalf("status = %+v, want complete", st)
	}
	status, body := a.do(t, "GET", "/login/result", nil)
	if status != http.StatusOK {
		t.Fatalf("result: %d %s", status, body)
	}
	content := decode[proto.LoginResult](t, body).Files["~/.fake/auth.json"]
	if !strings.Contains(content, `"access_token":"fake-`) {
		t.Errorf("result file = %q", content)
	}
}

func TestCLILoginFailures(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want mc.Reason
	}{
		{"command fails", []string{"-fail"}, proto.ReasonCommandFailed},
		{"command exits without files", []string{"-exit-early"}, proto.ReasonCredentialsMissing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAPI(t)
			if status, body := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: cliProvider(t, tt.args...)}); status != http.StatusAccepted {
				t.Fatalf("start: %d %s", status, body)
			}
			_, body := a.do(t, "GET", "/login/status?wait=30s", nil)
			if st := decode[proto.LoginStatus](t, body); st.State != proto.StateFailed || st.Reason != tt.want {
				t.Errorf("status = %+v, want failed %s", st, tt.want)
			}
		})
	}
	t.Run("command missing", func(t *testing.T) {
		a := newTestAPI(t)
		p := cliProvider(t)
		p.LoginCommand = []string{"/nonexistent/cli"}
		a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: p})
		_, body := a.do(t, "GET", "/login/status?wait=30s", nil)
		if st := decode[proto.LoginStatus](t, body); st.State != proto.StateFailed || st.Reason != proto.ReasonCommandFailed {
			t.Errorf("status = %+v, want failed %s", st, proto.ReasonCommandFailed)
		}
	})
}
