package app_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/app"
	"github.com/master-controller/mc/internal/testutil"
)

// testMain is a controller running in-process.
type testMain struct {
	*app.Main
	api  testutil.Client
	logs *testutil.SyncBuffer
}

// startMain runs a controller on a free port with cfg's overrides applied to
// the defaults (data under a temp dir, the fake driver unless set).
func startMain(t testing.TB, env map[string]string) *testMain {
	t.Helper()
	dir := t.TempDir()
	base := map[string]string{
		"MC_LISTEN": "127.0.0.1:0", "MC_DATA_DIR": dir, "MC_DRIVER": "fake", "MC_REPLICA": "test",
		"MC_API_KEYS": "test-key-0123456789abcdef", "MC_DESTROY_GRACE": "10ms", "MC_LOG_LEVEL": "debug",
		"MC_WEB_DIR": "../web",
	}
	for k, v := range env {
		base[k] = v
	}
	var cfg app.Config
	problems := cfg.Flags(flagSet(), func(k string) string { return base[k] })
	problems = append(problems, cfg.Validate()...)
	if len(problems) > 0 {
		t.Fatalf("config: %v", problems)
	}
	logs := &testutil.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	m, err := app.New(ctx, cfg, log, io.Discard)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if err := m.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &testMain{Main: m, api: testutil.Client{URL: m.URL, Key: base["MC_API_KEYS"]}, logs: logs}
}

type created struct {
	Session mc.Session `json:"session"`
	Viewer  struct {
		URL       string    `json:"url"`
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	} `json:"viewer"`
}

type apiError struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		SessionID string `json:"session_id"`
	} `json:"error"`
}

func TestAPIFlow(t *testing.T) {
	tm := startMain(t, nil)
	var c created
	if code := tm.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": "alice", "provider": "demo"}, &c); code != 201 {
		t.Fatalf("create: status %d", code)
	}
	if c.Session.State != mc.StatePending || !mc.ValidID(c.Session.ID) || c.Viewer.Token == "" {
		t.Fatalf("create: %+v", c)
	}
	if !strings.HasPrefix(c.Viewer.URL, tm.Config.PublicURL+"/sessions/"+c.Session.ID+"/view?token=") {
		t.Errorf("viewer url %q", c.Viewer.URL)
	}
	var e apiError
	if code := tm.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": "alice", "provider": "demo"}, &e); code != 409 ||
		e.Error.Code != "conflict" || e.Error.SessionID != c.Session.ID {
		t.Errorf("second create: %d %+v", code, e)
	}
	testutil.WaitState(t, tm.Store, c.Session.ID, mc.StateReady, 30*time.Second)
	var got struct{ Session mc.Session }
	if code := tm.api.Do(t, "GET", "/api/v1/sessions/"+c.Session.ID, nil, &got); code != 200 || got.Session.State != mc.StateReady {
		t.Errorf("get: %d %s", code, got.Session.State)
	}
	var list struct {
		Sessions []mc.Session `json:"sessions"`
	}
	if code := tm.api.Do(t, "GET", "/api/v1/sessions?user_id=alice&state=ready", nil, &list); code != 200 || len(list.Sessions) != 1 {
		t.Errorf("list: %d %+v", code, list)
	}
	var cancelled struct{ Session mc.Session }
	if code := tm.api.Do(t, "POST", "/api/v1/sessions/"+c.Session.ID+"/cancel", nil, &cancelled); code != 200 || cancelled.Session.State != mc.StateCancelled {
		t.Errorf("cancel: %d %s", code, cancelled.Session.State)
	}
	var evs struct {
		Events []mc.Event `json:"events"`
	}
	if code := tm.api.Do(t, "GET", "/api/v1/sessions/"+c.Session.ID+"/events", nil, &evs); code != 200 || len(evs.Events) != 4 {
		t.Errorf("events: %d %+v", code, evs)
	}
	for _, ev := range evs.Events {
		if ev.Replica != "test" {
			t.Errorf("event %+v: replica %q, want test", ev, ev.Replica)
		}
	}
	if strings.Contains(tm.logs.String(), c.Viewer.Token) || strings.Contains(tm.logs.String(), tm.api.Key) {
		t.Error("a secret reached the log")
	}
}
