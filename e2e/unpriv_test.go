package e2e_test

import (
	"crypto/rand"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/master-controller/mc/internal/browsertest"
	"github.com/master-controller/mc/internal/testutil"
)

// TestUnprivilegedViewer: a controller that is not root (under a fresh uid
// when the test runs as root) runs its machines in mode userns, on Unix
// sockets only, and the real viewer page still shows the machine's screen:
// the gateway dials the machine's VNC socket. The session's machine has a
// socket directory and no TCP port.
func TestUnprivilegedViewer(t *testing.T) {
	requireMachines(t, "userns")
	env := controllerEnv(t, "userns")
	uid := os.Getuid()
	if uid == 0 {
		n, _ := rand.Int(rand.Reader, big.NewInt(1<<20))
		uid = 1910000000 + int(n.Int64())
		dir, err := os.MkdirTemp("", "mc-e2e-agent-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		agent := filepath.Join(dir, "mc-agent")
		if err := testutil.CopyFile(agentPath, agent, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(env["MC_DATA_DIR"], uid, uid); err != nil {
			t.Fatal(err)
		}
		// The pages too: the checkout may sit in a directory only root can
		// enter (mktemp -d makes it 0700).
		web := filepath.Join(dir, "web")
		if out, err := exec.Command("cp", "-R", env["MC_WEB_DIR"], web).CombinedOutput(); err != nil {
			t.Fatalf("copy the pages for uid %d: %v: %s", uid, err, out)
		}
		if out, err := exec.Command("chmod", "-R", "a+rX", web).CombinedOutput(); err != nil {
			t.Fatalf("open the pages to uid %d: %v: %s", uid, err, out)
		}
		env["MC_AGENT_PATH"] = agent
		env["MC_WEB_DIR"] = web
		env["HOME"] = env["MC_DATA_DIR"]
	}
	// The default socket directory of this uid.
	t.Cleanup(func() { os.RemoveAll(filepath.Join(os.TempDir(), "mc-sockets-"+strconv.Itoa(uid))) })
	var s *testutil.Server
	if uid == os.Getuid() {
		s = testutil.StartServer(t, env)
	} else {
		s = testutil.StartServerAs(t, env, uid)
	}
	api := client{testutil.Client{URL: s.URL, Key: env["MC_API_KEYS"]}}
	if !strings.Contains(s.Logs.String(), `"mode":"userns"`) {
		t.Fatalf("the controller as uid %d did not start its driver in mode userns: %s", uid, testutil.Tail(s.Logs.String(), 2000))
	}
	cr := api.createSession(t, "unpriv-viewer", "demo")

	b := browsertest.New(t)
	b.Timeout = 60 * time.Second
	b.Open(cr.Viewer.URL)
	b.WaitState("connected")
	b.Timeout = 30 * time.Second
	b.WaitCanvas("the demo sign-in page through the machine's VNC socket", showsDemoPage)

	sess := api.session(t, cr.Session.ID)
	m := sess.Machine
	if m.SocketDir == "" || m.VNCPort != 0 || m.AgentPort != 0 || m.IP.IsValid() {
		t.Errorf("machine of an unprivileged controller = %+v; want a socket directory and no TCP address", m)
	}
	if fi, err := os.Stat(m.SocketDir); err != nil || fi.Mode().Perm() != 0o700 || fi.Sys() == nil {
		t.Errorf("socket dir %s: %v; want mode 0700", m.SocketDir, err)
	}
	if v := readViewer(b); v.State != "connected" {
		t.Errorf("viewer: %+v, want connected", v)
	}
}
