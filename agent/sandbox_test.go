package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/master-controller/mc"
	proto "github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/internal/testutil"
)

// The rows of chrome://sandbox as Chromium 156 renders them, read from the
// page with sandboxScript: run as root with --no-sandbox (as the agent's
// tests run it), and sandboxed as an unprivileged user.
var (
	unsandboxedRows = [][]string{{"Layer 1 Sandbox", "None"}, {"PID namespaces", "No"}, {"Network namespaces", "No"},
		{"Seccomp-BPF sandbox", "No"}, {"Seccomp-BPF sandbox supports TSYNC", "No"},
		{"Ptrace Protection with Yama LSM (Broker)", "No"}, {"Ptrace Protection with Yama LSM (Non-broker)", "No"}}
	sandboxedRows = [][]string{{"Layer 1 Sandbox", "Namespace"}, {"PID namespaces", "Yes"}, {"Network namespaces", "Yes"},
		{"Seccomp-BPF sandbox", "Yes"}, {"Seccomp-BPF sandbox supports TSYNC", "Yes"},
		{"Ptrace Protection with Yama LSM (Broker)", "No"}, {"Ptrace Protection with Yama LSM (Non-broker)", "No"}}
)

// TestParseSandboxPage: the page is reported as it is, and a page that does
// not look as expected is an error rather than a guess.
func TestParseSandboxPage(t *testing.T) {
	for _, tt := range []struct {
		name        string
		page        sandboxPage
		wantErr     string
		adequate    bool
		missing     int // len(Missing())
		layer1, pid string
	}{
		{name: "sandboxed", page: sandboxPage{Rows: sandboxedRows, Verdict: "You are adequately sandboxed."},
			adequate: true, missing: 0, layer1: "Namespace", pid: "Yes"},
		{name: "no sandbox", page: sandboxPage{Rows: unsandboxedRows, Verdict: "You are NOT adequately sandboxed."},
			adequate: false, missing: 6, layer1: "None", pid: "No"},
		{name: "setuid sandbox", page: sandboxPage{Rows: append([][]string{{"Layer 1 Sandbox", "SUID"}}, sandboxedRows[1:]...),
			Verdict: "You are adequately sandboxed."}, adequate: true, missing: 1, layer1: "SUID", pid: "Yes"},
		{name: "refused", page: sandboxPage{Refused: "chrome-error://chromewebdata/"}, wantErr: "refused"},
		{name: "no rows", page: sandboxPage{Verdict: "You are adequately sandboxed."}, wantErr: "no rows"},
		{name: "odd row", page: sandboxPage{Rows: [][]string{{"Layer 1 Sandbox"}}, Verdict: "You are adequately sandboxed."}, wantErr: "not a name and a status"},
		{name: "odd verdict", page: sandboxPage{Rows: sandboxedRows, Verdict: "Sandboxed, kind of."}, wantErr: "unknown verdict"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := parseSandboxPage(tt.page)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Adequate != tt.adequate || len(s.Layers) != len(tt.page.Rows) {
				t.Errorf("adequate %v with %d layers, want %v with %d", s.Adequate, len(s.Layers), tt.adequate, len(tt.page.Rows))
			}
			if l, _ := s.Layer(proto.SandboxLayer1); l.Status != tt.layer1 || l.On != (tt.layer1 != "None") {
				t.Errorf("layer 1 = %+v, want status %s", l, tt.layer1)
			}
			if l, _ := s.Layer(proto.SandboxPIDNamespaces); l.Status != tt.pid || l.On != (tt.pid == "Yes") {
				t.Errorf("PID namespaces = %+v, want status %s", l, tt.pid)
			}
			if m := s.Missing(); len(m) != tt.missing {
				t.Errorf("missing = %q, want %d items", m, tt.missing)
			}
		})
	}
}

// TestSandboxChromium reads chrome://sandbox of a real Chromium while the
// kiosk watches for windows: the page is reported as it is (this test runs
// Chromium as root without its sandbox, so the layers are off and the
// verdict is "not adequately sandboxed"); the kiosk leaves the agent's tab
// alone, which is closed afterwards; the user's tab stays as it was; and
// the kiosk still closes a user's second window.
func TestSandboxChromium(t *testing.T) {
	c, _ := startHeadless(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	logs := &testutil.SyncBuffer{}
	kiosk, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.KeepOneWindow(kiosk, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}()
	defer func() {
		stop()
		<-done
		if t.Failed() {
			t.Logf("kiosk log:\n%s", logs.String())
		}
	}()
	testutil.WaitFor(t, 20*time.Second, "the kiosk watching", func() error {
		if !strings.Contains(logs.String(), "kiosk watches for new windows") {
			return errNotYet
		}
		return nil
	})
	tab, err := c.Page(ctx)
	if err != nil {
		t.Fatal(err)
	}

	s, err := c.Sandbox(ctx)
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	t.Logf("chrome://sandbox: %+v", s)
	var names []string
	for _, l := range s.Layers {
		names = append(names, l.Name)
		if l.On {
			t.Errorf("layer %+v is on in a Chromium with --no-sandbox", l)
		}
	}
	for _, want := range []string{proto.SandboxLayer1, proto.SandboxPIDNamespaces, proto.SandboxNetworkNamespaces,
		proto.SandboxSeccompBPF, proto.SandboxSeccompTSYNC} {
		if !slices.Contains(names, want) {
			t.Errorf("layers %q lack %q", names, want)
		}
	}
	if s.Adequate || len(s.Missing()) == 0 {
		t.Errorf("adequate = %v, missing %q: want not adequate without the sandbox", s.Adequate, s.Missing())
	}
	// The fake driver's unsandboxed machines answer as this browser does.
	if err := fake.CheckSandbox(s, false); err != nil {
		t.Error(err)
	}

	// The agent's tab is gone again, and the user's tab is the same page.
	testutil.WaitFor(t, 10*time.Second, "the agent's chrome://sandbox tab closed", func() error {
		var res struct {
			TargetInfos []cdpTarget `json:"targetInfos"`
		}
		if err := c.call(ctx, "", "Target.getTargets", nil, &res); err != nil {
			return err
		}
		for _, t := range res.TargetInfos {
			if strings.HasPrefix(t.URL, sandboxURL) {
				return errNotYet
			}
		}
		return nil
	})
	if after, err := c.Page(ctx); err != nil || after.ID != tab.ID || after.URL != tab.URL {
		t.Errorf("user's tab after reading the sandbox = %+v, %v; want %+v", after, err, tab)
	}

	// A window of the user's is still closed (its creation is announced
	// after the agent's tab's: the kiosk has dealt with that one by then).
	var w struct {
		TargetID string `json:"targetId"`
	}
	if err := c.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank", "newWindow": true}, &w); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the user's second window closed", func() error {
		if c.hasTarget(ctx, w.TargetID) {
			return errNotYet
		}
		return nil
	})
	if n := strings.Count(logs.String(), `"msg":"closed a second browser window"`); n != 1 {
		t.Errorf("the kiosk closed %d windows, want 1 (the user's, not the agent's tab)", n)
	}
	if strings.Contains(logs.String(), `"msg":"close a second browser window"`) {
		t.Errorf("the kiosk tried to close a window and failed")
	}
}

// errNotYet is a bounded poll's "look again".
var errNotYet = errors.New("not yet")

// TestSandboxAPI: GET /sandbox through the client: the page as read, 503
// machine_starting before the browser runs, 503 browser_unavailable when
// the page cannot be read (the cause stays in the agent's log), and 401
// without the token.
func TestSandboxAPI(t *testing.T) {
	a := newTestAPI(t)
	ep := mc.Endpoint{Network: "tcp", Address: strings.TrimPrefix(a.srv.URL, "http://")}
	client := proto.NewClient(ep, mc.SecretOf(a.token), nil)
	page, err := parseSandboxPage(sandboxPage{Rows: sandboxedRows, Verdict: sandboxAdequate})
	if err != nil {
		t.Fatal(err)
	}
	a.sandbox = page
	got, err := client.Sandbox(t.Context())
	if err != nil || !reflect.DeepEqual(got, page) {
		t.Errorf("sandbox = %+v, %v; want %+v", got, err, page)
	}

	a.sandboxErr = errors.New("devtools Runtime.evaluate: the secret cause")
	_, err = client.Sandbox(t.Context())
	if mc.ErrorCode(err) != mc.EUNAVAILABLE || mc.ErrorReason(err) != mc.ReasonBrowserUnavailable {
		t.Errorf("unreadable page: %v (code %s, reason %s), want %s %s", err, mc.ErrorCode(err), mc.ErrorReason(err), mc.EUNAVAILABLE, mc.ReasonBrowserUnavailable)
	}
	if status, body := a.do(t, "GET", proto.PathSandbox, nil); status != http.StatusServiceUnavailable || strings.Contains(string(body), "secret cause") {
		t.Errorf("unreadable page: %d %s; want 503 without the cause", status, body)
	}

	a.starting = true
	if _, err := client.Sandbox(t.Context()); mc.ErrorReason(err) != mc.ReasonMachineStarting {
		t.Errorf("while starting: %v (reason %s), want %s", err, mc.ErrorReason(err), mc.ReasonMachineStarting)
	}
	if _, err := proto.NewClient(ep, mc.SecretOf("wrong"), nil).Sandbox(t.Context()); mc.ErrorCode(err) != mc.EUNAUTHORIZED {
		t.Errorf("wrong token: %v, want %s", err, mc.EUNAUTHORIZED)
	}
}
