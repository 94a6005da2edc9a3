package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/app"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/netpool/netpooltest"
)

// Binaries built (or named by the environment) for this test run.
var (
	repoRoot  string // the module's root directory
	agentPath string // mc-agent ("" when setupErr says why)
	setupErr  error  // why the agent is missing
)

// testAPIKey is the API key of every controller in these tests.
const testAPIKey = "e2e-test-key-0123456789abcdef"

func TestMain(m *testing.M) {
	code := run(m)
	os.Exit(code)
}

func run(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	repoRoot = filepath.Dir(wd)
	defer testutil.RemoveBuilt()
	if p := os.Getenv("MC_TEST_AGENT"); p != "" {
		agentPath = p
	} else {
		agentPath, setupErr = testutil.Build("github.com/master-controller/mc/cmd/mc-agent")
	}
	return m.Run()
}

// requireMachines skips the test (one line) unless the local runtime can run
// here: the agent, Xvnc, Chromium, ip, and root for network namespaces.
// Under CI=true it fails instead.
func requireMachines(tb testing.TB, mode string) {
	tb.Helper()
	var missing []string
	if setupErr != nil {
		missing = append(missing, setupErr.Error())
	}
	for _, b := range []string{"Xvnc", "chromium", "ip"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if mode == "netns" && os.Geteuid() != 0 {
		missing = append(missing, "root (for network namespaces)")
	}
	if runtime.GOOS != "linux" {
		missing = append(missing, "Linux")
	}
	if len(missing) == 0 {
		return
	}
	testutil.SkipOrFail(tb, "e2e needs: %s", strings.Join(missing, "; "))
}

// defaultMode is the local driver's mode when nothing forces one: netns as
// root, else loopback.
func defaultMode() string {
	if os.Geteuid() == 0 {
		return "netns"
	}
	return "loopback"
}

// shortTempDir returns a new directory directly under /tmp, removed when
// the test ends. The local driver's data directory must be short: Chromium
// puts a Unix socket (at most 107 bytes of path) a long way below it.
func shortTempDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("/tmp", "e2e")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			tb.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// controllerEnv returns the MC_* settings of a controller with the local
// driver in mode ("netns" or "loopback"): a private short data directory, a
// unique bridge and network (removed after the test), a random loopback port
// range, the built agent and the repository's web directory.
func controllerEnv(tb testing.TB, mode string) map[string]string {
	tb.Helper()
	requireMachines(tb, mode)
	nc := netpooltest.Config(tb)
	p, _ := rand.Int(rand.Reader, big.NewInt(200))
	return map[string]string{
		"MC_LISTEN":        "127.0.0.1:0",
		"MC_DATA_DIR":      shortTempDir(tb),
		"MC_DRIVER":        "local",
		"MC_LOCAL_MODE":    mode,
		"MC_BRIDGE":        nc.Bridge,
		"MC_NETWORK":       nc.Network.String(),
		"MC_PORT_BASE":     strconv.Itoa(12000 + 40*int(p.Int64())), // below the ephemeral range
		"MC_AGENT_PATH":    agentPath,
		"MC_WEB_DIR":       filepath.Join(repoRoot, "web"),
		"MC_API_KEYS":      testAPIKey,
		"MC_REPLICA":       "e2e-" + randomHex(4),
		"MC_DESTROY_GRACE": "300ms",
		"MC_LOG_LEVEL":     "debug",
		"MC_LOG_FORMAT":    "json",
		"MC_MAX_MACHINES":  "8",
		"MC_POOL":          "demo=0", // tests that want a warm pool set it
	}
}

// controller is a controller running in-process.
type controller struct {
	*app.Main
	api     client
	logs    *testutil.SyncBuffer // every line the controller logged (debug level)
	out     *testutil.SyncBuffer // what it printed for people
	dataDir string
	pool    string // the local driver's lease pool
}

// startController runs app.New and Run in-process with env (MC_* settings,
// see controllerEnv) and stops it when the test ends.
func startController(tb testing.TB, env map[string]string) *controller {
	tb.Helper()
	cfg := config(tb, env)
	logs, out := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	log := app.NewLogger(logs, cfg.LogLevel, cfg.LogFormat)
	ctx, cancel := context.WithCancel(context.Background())
	m, err := app.New(ctx, cfg, log, out)
	if err != nil {
		cancel()
		tb.Fatalf("start controller: %v\nlog:\n%s", err, logs.String())
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("run: %v", err)
		}
		if err := m.Close(); err != nil {
			tb.Errorf("close controller: %v", err)
		}
		if tb.Failed() {
			tb.Logf("controller log (last 8 KiB):\n%s", testutil.Tail(logs.String(), 8<<10))
		}
	})
	return &controller{Main: m, api: client{testutil.Client{URL: m.URL, Key: testAPIKey}}, logs: logs, out: out,
		dataDir: cfg.DataDir, pool: "local/" + cfg.Bridge}
}

// config turns env into a validated app.Config.
func config(tb testing.TB, env map[string]string) app.Config {
	tb.Helper()
	var cfg app.Config
	fs := newFlagSet()
	problems := cfg.Flags(fs, func(k string) string { return env[k] })
	problems = append(problems, cfg.Validate()...)
	if len(problems) > 0 {
		tb.Fatalf("config: %v", problems)
	}
	return cfg
}

// client calls a controller's API with the API key.
type client struct{ testutil.Client }

// created is the answer to POST /api/v1/sessions.
type created struct {
	Session mc.Session `json:"session"`
	Viewer  struct {
		URL       string    `json:"url"`
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	} `json:"viewer"`
}

// createSession starts a session for (user, provider) through the API.
func (c client) createSession(tb testing.TB, user, provider string) created {
	tb.Helper()
	var cr created
	if code := c.Do(tb, "POST", "/api/v1/sessions", map[string]string{"user_id": user, "provider": provider}, &cr); code != http.StatusCreated {
		tb.Fatalf("POST /api/v1/sessions: status %d, want 201", code)
	}
	if !mc.ValidID(cr.Session.ID) || cr.Viewer.URL == "" {
		tb.Fatalf("POST /api/v1/sessions: answer %+v has no session id or viewer URL", cr)
	}
	return cr
}

// session returns the session as the API shows it.
func (c client) session(tb testing.TB, id string) mc.Session {
	tb.Helper()
	var got struct {
		Session mc.Session `json:"session"`
	}
	if code := c.Do(tb, "GET", "/api/v1/sessions/"+id, nil, &got); code != http.StatusOK {
		tb.Fatalf("GET session %s: status %d", id, code)
	}
	return got.Session
}

// errLeft says that a machine still has something on the host.
var errLeft = errorString("something is left")

// errorString is an error made of a constant string.
type errorString string

func (e errorString) Error() string { return string(e) }

func newFlagSet() *flag.FlagSet { return flag.NewFlagSet("serve", flag.ContinueOnError) }

// quietLogger discards everything (for stores opened by the test itself).
func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
