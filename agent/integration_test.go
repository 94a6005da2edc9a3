package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/master-controller/mc/rfb"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	proto "github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/internal/testutil"
)

// realAgent is the mc-agent binary running with real Xvnc and Chromium on
// loopback ports.
type realAgent struct {
	cmd         *exec.Cmd
	base        string // agent API URL
	token       string
	vncAddr     string
	vncPassword string
	home        string
	tmpDir      string
	display     int
	W, H        int
	startedAt   time.Time
	exited      chan struct{}
	exitErr     error
	logs        *testutil.SyncBuffer
}

func requireMachine(tb testing.TB) (xvnc, chromium string) {
	tb.Helper()
	xvnc, err := exec.LookPath("Xvnc")
	if err != nil {
		testutil.SkipOrFail(tb, "Xvnc not installed (package tigervnc-standalone-server)")
	}
	chromium, err = exec.LookPath("chromium")
	if err != nil {
		testutil.SkipOrFail(tb, "chromium not installed (package chromium)")
	}
	return xvnc, chromium
}

// freePort returns a loopback port that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// freeDisplay returns a random X display number with no lock or socket.
func freeDisplay(tb testing.TB) int {
	tb.Helper()
	for range 100 {
		n := 300 + rand.IntN(600)
		_, e1 := os.Stat(fmt.Sprintf("/tmp/.X%d-lock", n))
		_, e2 := os.Stat(fmt.Sprintf("/tmp/.X11-unix/X%d", n))
		if os.IsNotExist(e1) && os.IsNotExist(e2) {
			return n
		}
	}
	tb.Fatal("no free X display")
	return 0
}

// netnsTarget, when set, runs the agent inside a network namespace with
// the agent API and VNC on ip, as the local driver's namespace mode does.
type netnsTarget struct {
	name string
	ip   string
}

func startRealAgent(tb testing.TB, ns *netnsTarget) *realAgent {
	tb.Helper()
	xvnc, chromium := requireMachine(tb)
	// These tests run the agent as root on the host, outside any machine,
	// where Chromium refuses its sandbox: a test build (mc_test_no_sandbox)
	// starts it with --no-sandbox. The local driver's tests and e2e run
	// production agents, sandbox on.
	bin := testutil.BuildTagged(tb, "github.com/master-controller/mc/cmd/mc-agent", "mc_test_no_sandbox")
	dir := tb.TempDir()
	// A home far too long for a Unix socket below it, and a TMPDIR of
	// exactly the longest length that the agent accepts (the agent creates
	// it): Chromium must start with both.
	short, err := os.MkdirTemp("", "mca")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(short) })
	tmpDir := short + "/" + strings.Repeat("t", MaxTmpDirLen-len(short)-1)
	a := &realAgent{
		token:       "tok-" + strconv.FormatUint(rand.Uint64(), 36),
		vncPassword: "pw" + strconv.FormatUint(rand.Uint64(), 36)[:6],
		home:        filepath.Join(dir, strings.Repeat("h", 120), "home"),
		tmpDir:      tmpDir,
		W:           1024, H: 640,
		exited: make(chan struct{}),
		logs:   &testutil.SyncBuffer{},
	}
	a.display = freeDisplay(tb)
	var listen string
	if ns == nil {
		a.vncAddr = fmt.Sprintf("127.0.0.1:%d", freePort(tb))
		listen = fmt.Sprintf("127.0.0.1:%d", freePort(tb))
	} else {
		a.vncAddr, listen = ns.ip+":5900", ns.ip+":8080"
	}
	a.base = "http://" + listen
	for name, v := range map[string]string{"token": a.token, "vnc-password": a.vncPassword + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	args := []string{
		"--listen", listen,
		"--token-file", filepath.Join(dir, "token"),
		"--vnc-listen", a.vncAddr,
		"--vnc-password-file", filepath.Join(dir, "vnc-password"),
		"--display", strconv.Itoa(a.display),
		"--home", a.home,
		"--tmp-dir", a.tmpDir,
		"--start-url", "local:/demo/signin",
		"--geometry", fmt.Sprintf("%dx%d", a.W, a.H),
		"--xvnc", xvnc, "--chromium", chromium,
		"--log-level", "debug",
	}
	if ns == nil {
		a.cmd = exec.Command(bin, args...)
	} else {
		// ip netns exec execs the agent, so the pid is the agent's.
		a.cmd = exec.Command("ip", append([]string{"netns", "exec", ns.name, bin}, args...)...)
	}
	a.cmd.Stdout, a.cmd.Stderr = a.logs, a.logs
	// Its own process group, as the local driver does, so the test can check
	// that nothing of it is left.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	a.startedAt = time.Now()
	if err := a.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		a.exitErr = a.cmd.Wait()
		close(a.exited)
	}()
	tb.Cleanup(func() {
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.exited
		if tb.Failed() {
			tb.Logf("agent log:\n%s", filterLog(a.logs.String()))
		}
	})
	return a
}

// filterLog drops Xvnc's chatter.
func filterLog(s string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if !strings.Contains(line, `"msg":"xvnc"`) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// waitHealthy waits for /health 200 and returns how long it took from start.
func (a *realAgent) waitHealthy(tb testing.TB) time.Duration {
	tb.Helper()
	testutil.WaitFor(tb, 60*time.Second, "agent healthy", func() error {
		select {
		case <-a.exited:
			tb.Fatalf("agent exited before healthy: %v", a.exitErr)
		default:
		}
		req, _ := http.NewRequest("GET", a.base+"/health", nil)
		req.Header.Set("Authorization", "Bearer "+a.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/health: status %d", resp.StatusCode)
		}
		return nil
	})
	return time.Since(a.startedAt)
}

func (a *realAgent) do(tb testing.TB, method, path string, body any) (int, []byte) {
	tb.Helper()
	return testutil.Request(context.Background(), tb, method, a.base, path, a.token, body)
}

// waitFor retries cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, timeout time.Duration, cond func() (bool, string)) {
	tb.Helper()
	waitForOr(tb, what, timeout, cond, nil)
}

// waitForOr is waitFor with a diagnosis run before failing.
func waitForOr(tb testing.TB, what string, timeout time.Duration, cond func() (bool, string), diagnose func()) {
	tb.Helper()
	err := testutil.Poll(tb.Context(), timeout, func() error {
		if ok, detail := cond(); !ok {
			return errors.New(detail)
		}
		return nil
	})
	if err == nil {
		return
	}
	if diagnose != nil {
		diagnose()
	}
	tb.Fatalf("%s: %v", what, err)
}

// groupProcesses lists the processes of process group pgid.
func groupProcesses(pgid int) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces): state ppid pgrp.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) {
			out = append(out, fmt.Sprintf("%d %s", pid, s[strings.IndexByte(s, '(')+1:strings.LastIndexByte(s, ')')]))
		}
	}
	return out
}

// childPID returns the pid of the agent's child named comm.
func childPID(tb testing.TB, parent int, comm string) int {
	tb.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", parent))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for f := range strings.FieldsSeq(string(b)) {
			c, _ := os.ReadFile("/proc/" + f + "/comm")
			if strings.TrimSpace(string(c)) == comm {
				pid, _ := strconv.Atoi(f)
				return pid
			}
		}
	}
	tb.Fatalf("no child %s of %d", comm, parent)
	return 0
}

func TestAgentIntegration(t *testing.T) {
	a := startRealAgent(t, nil)
	took := a.waitHealthy(t)
	t.Logf("agent start → /health 200: %v", took)
	step := func(what string) { t.Logf("%7v %s", time.Since(a.startedAt).Round(time.Millisecond), what) }

	// proto.Health's shape and the auth in front of it, on the real binary.
	status, body := a.do(t, "GET", "/health", nil)
	if h := decode[proto.Health](t, body); status != http.StatusOK || !h.VNC || !h.Browser {
		t.Fatalf("health = %d %s", status, body)
	}
	if status, _ := testutil.Request(t.Context(), t, "GET", a.base, "/health", "", nil); status != http.StatusUnauthorized {
		t.Errorf("health without token: %d, want 401", status)
	}

	// The RFB banner, many times (readiness and health probes must not get
	// the prober's address blacklisted), then a VNC-authenticated session
	// with the password from the plaintext file.
	for range 8 {
		if err := rfb.Probe(t.Context(), mc.Endpoint{Network: "tcp", Address: a.vncAddr}); err != nil {
			t.Fatalf("rfb banner: %v", err)
		}
	}
	vnc := dialRFB(t, a.vncAddr, a.vncPassword)
	if vnc.W != a.W || vnc.H != a.H {
		t.Errorf("screen %dx%d, want %dx%d", vnc.W, vnc.H, a.W, a.H)
	}
	screenShows := func(corner, centre string) func() (bool, string) { return screenShows(t, vnc, corner, centre) }
	saveScreen := func() { saveScreen(t, vnc) }
	waitForOr(t, "sign-in page on the VNC screen", 20*time.Second, screenShows(DemoSignInColor, "#ffffff"), saveScreen)

	step("start page on the VNC screen")
	a.checkPaths(t)
	// The agent's process group listens on the agent API and VNC only: the
	// local pages it shows have no socket.
	if got, want := a.listeners(t, true), []string{a.base[len("http://"):], a.vncAddr}; !sameSet(got, want) {
		t.Errorf("TCP listeners of the agent's processes = %v, want %v", got, want)
	}

	// GET /sandbox reads chrome://sandbox in a background tab: this test
	// build runs Chromium without its sandbox, and the answer says so; the
	// visible tab still shows the sign-in page, and the kiosk closed
	// nothing.
	status, body = a.do(t, "GET", proto.PathSandbox, nil)
	if sb := decode[proto.BrowserSandbox](t, body); status != http.StatusOK || sb.Adequate || len(sb.Layers) == 0 {
		t.Errorf("sandbox = %d %s; want 200, not adequate (--no-sandbox)", status, body)
	} else if l, _ := sb.Layer(proto.SandboxLayer1); l.Status != "None" {
		t.Errorf("sandbox layer 1 = %+v, want None (--no-sandbox)", l)
	}
	waitForOr(t, "sign-in page after /sandbox", 20*time.Second, screenShows(DemoSignInColor, "#ffffff"), saveScreen)
	if strings.Contains(a.logs.String(), "closed a second browser window") {
		t.Errorf("the kiosk closed a window while the agent read its sandbox")
	}
	step("/sandbox read")

	// POST /open navigates through DevTools on the pipe: it answers once
	// the navigation has committed.
	if status, body := a.do(t, "POST", "/open", proto.OpenRequest{URL: "local:/demo/signin?via=open"}); status != http.StatusOK {
		t.Fatalf("open: %d %s", status, body)
	}
	waitForOr(t, "sign-in page after /open", 20*time.Second, screenShows(DemoSignInColor, "#ffffff"), saveScreen)

	step("/open done")
	// The demo login, clicked through VNC at the screen's centre.
	cred := clickDemoSignIn(t, a, vnc)
	step("demo result fetched")
	if strings.Contains(a.logs.String(), cred.AccessToken) {
		t.Error("the agent's log holds the credential")
	}

	// The CLI path with the real browser: the agent runs the stand-in CLI
	// under a terminal; the CLI runs $BROWSER (the opener, mc-agent under
	// another name), the agent opens the page in Chromium, the stand-in
	// provider redirects Chromium to the CLI's callback, and the CLI writes
	// its file.
	prov := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cb, err := url.Parse(r.URL.Query().Get("redirect_uri"))
		if err != nil || r.URL.Path != "/authorize" {
			http.NotFound(w, r)
			return
		}
		cb.RawQuery = url.Values{"code": {"c0de"}, "state": {r.URL.Query().Get("state")}}.Encode()
		http.Redirect(w, r, cb.String(), http.StatusFound)
	}))
	defer prov.Close()
	if status, body := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: cliProvider(t, "-provider", prov.URL)}); status != http.StatusAccepted {
		t.Fatalf("cli login start: %d %s", status, body)
	}
	_, body = a.do(t, "GET", "/login/status?wait=30s", nil)
	if st := decode[proto.LoginStatus](t, body); st.State != proto.StateComplete || st.URL != prov.URL+"/authorize" {
		t.Fatalf("cli login status = %+v, want complete after %s/authorize", st, prov.URL)
	}
	if status, body := a.do(t, "GET", "/login/result", nil); status != http.StatusOK || !bytes.Contains(body, []byte("fake-")) {
		t.Errorf("cli result: %d %s", status, body)
	}

	step("CLI login complete")
	// Xvnc dies: the agent exits non-zero and leaves no process behind.
	if err := syscall.Kill(childPID(t, a.cmd.Process.Pid, "Xvnc"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	a.waitExit(t, "Xvnc was killed", 1)
	a.waitGone(t)
	step("agent exited, group empty")
	for _, f := range []string{fmt.Sprintf("/tmp/.X%d-lock", a.display), fmt.Sprintf("/tmp/.X11-unix/X%d", a.display)} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("X file %s of the killed Xvnc: %v, want removed", f, err)
		}
	}
	for _, f := range []string{"vnc-password.vnc", "vnc-password.xauth"} {
		if _, err := os.Stat(filepath.Join(filepath.Dir(a.home), f)); !os.IsNotExist(err) {
			t.Errorf("%s after exit: %v, want removed", f, err)
		}
	}
}

// checkPaths checks where a running agent's sockets are: Chromium's
// singleton socket below --tmp-dir, at the longest length the agent allows,
// and Xvnc's socket in /tmp/.X11-unix whatever --tmp-dir is. It also checks
// that the only processes of the machine (HOME is its home) outside the
// agent's process group are Chromium's crash handlers (see chromiumArgs).
func (a *realAgent) checkPaths(tb testing.TB) {
	tb.Helper()
	socks, _ := filepath.Glob(filepath.Join(a.tmpDir, "org.chromium.Chromium.*", "SingletonSocket"))
	if len(socks) != 1 {
		tb.Errorf("singleton sockets below --tmp-dir: %v, want one", socks)
	} else if fi, err := os.Lstat(socks[0]); err != nil || fi.Mode().Type() != os.ModeSocket || len(socks[0]) != 107 {
		tb.Errorf("singleton socket %s (%d bytes): %v, want a socket of 107 bytes", socks[0], len(socks[0]), err)
	}
	if fi, err := os.Stat(fmt.Sprintf("/tmp/.X11-unix/X%d", a.display)); err != nil || fi.Mode().Type() != os.ModeSocket {
		tb.Errorf("X server socket: %v, want a socket", err)
	}
	pgid := a.cmd.Process.Pid
	for _, pid := range procfs.HomePids(a.home) {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		name := strings.TrimSpace(string(comm))
		if g, err := syscall.Getpgid(pid); err == nil && g != pgid && name != "chrome_crashpad" {
			tb.Errorf("process %d (%s) of the machine is outside the agent's group %d (in %d)", pid, name, pgid, g)
		}
	}
}

// listeners lists the listening TCP sockets (ip:port) in the agent's
// network namespace, all of them, or with ownOnly those that the agent's
// process group holds.
func (a *realAgent) listeners(tb testing.TB, ownOnly bool) []string {
	tb.Helper()
	ls, err := procfs.TCPListeners(a.cmd.Process.Pid)
	if err != nil {
		tb.Fatal(err)
	}
	own := procfs.SocketInodes(procfs.GroupMembers(a.cmd.Process.Pid, 0))
	var out []string
	for _, l := range ls {
		if !ownOnly || own[l.Inode] {
			out = append(out, l.Addr.String())
		}
	}
	return out
}

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// waitExit waits up to 20 s for the agent to exit after cause (such as
// "SIGTERM") and checks its exit status.
func (a *realAgent) waitExit(tb testing.TB, cause string, want int) {
	tb.Helper()
	select {
	case <-a.exited:
	case <-time.After(20 * time.Second):
		tb.Fatalf("agent still running 20s after %s", cause)
	}
	if want == 0 {
		if a.exitErr != nil {
			tb.Errorf("agent exit = %v, want 0", a.exitErr)
		}
		return
	}
	var exitErr *exec.ExitError
	if !errors.As(a.exitErr, &exitErr) || exitErr.ExitCode() != want {
		tb.Errorf("agent exit = %v, want exit status %d", a.exitErr, want)
	}
}

// waitGone waits up to 10 s until no process is left in the exited agent's
// process group, and checks that no process carries the machine's HOME (the
// crash handler left the group; the agent kills it on its way out).
func (a *realAgent) waitGone(tb testing.TB) {
	tb.Helper()
	pgid := a.cmd.Process.Pid
	waitFor(tb, "no process left in the agent's group", 10*time.Second, func() (bool, string) {
		ps := groupProcesses(pgid)
		return len(ps) == 0, strings.Join(ps, ", ")
	})
	if pids := procfs.HomePids(a.home); len(pids) > 0 {
		tb.Errorf("processes with the machine's HOME after the agent exited: %v", pids)
	}
}

// stop sends SIGTERM, as the driver does, and checks that the agent exits 0
// and leaves no process behind.
func (a *realAgent) stop(tb testing.TB) {
	tb.Helper()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		tb.Fatal(err)
	}
	a.waitExit(tb, "SIGTERM", 0)
	a.waitGone(tb)
}

// TestAgentSIGTERM: the driver's stop. The agent stops its children and
// exits 0.
func TestAgentSIGTERM(t *testing.T) {
	a := startRealAgent(t, nil)
	t.Logf("agent start → /health 200: %v", a.waitHealthy(t))
	a.stop(t)
}

// TestAgentExitsWhenChromiumDies: the other supervised child.
func TestAgentExitsWhenChromiumDies(t *testing.T) {
	a := startRealAgent(t, nil)
	a.waitHealthy(t)
	if err := syscall.Kill(childPID(t, a.cmd.Process.Pid, "chromium"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	a.waitExit(t, "Chromium was killed", 1)
}

// screenShows reports whether the screen's corners have the colour corner
// and the middle (the demo's button, left and right of its label and below
// it; the X cursor sits at the very centre) the colour centre.
func screenShows(tb testing.TB, vnc *rfbClient, corner, centre string) func() (bool, string) {
	return func() (bool, string) {
		if err := vnc.Refresh(); err != nil {
			tb.Fatalf("framebuffer: %v", err)
		}
		W, H := vnc.W, vnc.H
		got := [7]string{vnc.Pixel(0, 0), vnc.Pixel(W-1, 0), vnc.Pixel(0, H-1), vnc.Pixel(W-1, H-1),
			vnc.Pixel(W/2-160, H/2), vnc.Pixel(W/2+160, H/2), vnc.Pixel(W/2, H/2+50)}
		want := [7]string{corner, corner, corner, corner, centre, centre, centre}
		return got == want, fmt.Sprint(got)
	}
}

func saveScreen(tb testing.TB, vnc *rfbClient) {
	p := filepath.Join(os.TempDir(), "mc-agent-"+strings.ReplaceAll(tb.Name(), "/", "_")+".png")
	if err := vnc.SavePNG(p); err == nil {
		tb.Logf("screen saved to %s", p)
	}
}

// clickDemoSignIn runs the demo login as a user would: the agent opens the
// sign-in page, the user clicks the middle of the screen through VNC; then
// it fetches the result (once: the second fetch is 410 and the file is gone).
func clickDemoSignIn(tb testing.TB, a *realAgent, vnc *rfbClient) DemoCredential {
	tb.Helper()
	// A blank page first, so that the sign-in page seen next is the one the
	// login opened.
	if status, body := a.do(tb, "POST", "/open", proto.OpenRequest{URL: "about:blank"}); status != http.StatusOK {
		tb.Fatalf("open about:blank: %d %s", status, body)
	}
	waitForOr(tb, "blank page on the VNC screen", 20*time.Second, screenShows(tb, vnc, "#ffffff", "#ffffff"), func() { saveScreen(tb, vnc) })
	if status, body := a.do(tb, "POST", "/login/start", proto.LoginStartRequest{Provider: demoProvider(time.Minute)}); status != http.StatusAccepted {
		tb.Fatalf("login start: %d %s", status, body)
	}
	// Click only once the login's own navigation has returned: a click on
	// a sign-in page still being painted by it can submit the form and then
	// lose the answer page to that navigation's commit.
	waitFor(tb, "the login's start page opened", 20*time.Second, func() (bool, string) {
		return strings.Contains(a.logs.String(), `"opened start url"`), "not yet"
	})
	waitForOr(tb, "sign-in page on the VNC screen", 20*time.Second, screenShows(tb, vnc, DemoSignInColor, "#ffffff"), func() { saveScreen(tb, vnc) })
	// The page may still be (re)loading when the first click lands; a click
	// on the signed-in page does nothing, so clicking again is safe.
	waitFor(tb, "login complete after a click", 30*time.Second, func() (bool, string) {
		if err := vnc.Click(vnc.W/2, vnc.H/2); err != nil {
			tb.Fatal(err)
		}
		_, body := a.do(tb, "GET", "/login/status?wait=3s", nil)
		st := decode[proto.LoginStatus](tb, body)
		if st.State == proto.StateFailed {
			tb.Fatalf("login failed: %+v", st)
		}
		return st.State == proto.StateComplete, fmt.Sprintf("%+v", st)
	})
	waitForOr(tb, "signed-in page on the VNC screen", 10*time.Second, screenShows(tb, vnc, DemoSignedInColor, DemoSignedInColor), func() { saveScreen(tb, vnc) })
	status, body := a.do(tb, "GET", "/login/result", nil)
	if status != http.StatusOK {
		tb.Fatalf("result: %d %s", status, body)
	}
	cred := decode[DemoCredential](tb, []byte(decode[proto.LoginResult](tb, body).Files["~/"+DemoCredentialPath]))
	if !strings.HasPrefix(cred.AccessToken, "demo-") || cred.User != "demo" {
		tb.Errorf("credential = %+v", cred)
	}
	if status, _ := a.do(tb, "GET", "/login/result", nil); status != http.StatusGone {
		tb.Errorf("second result: %d, want 410", status)
	}
	if _, err := os.Stat(filepath.Join(a.home, DemoCredentialPath)); !os.IsNotExist(err) {
		tb.Errorf("credential file after delivery: %v, want deleted", err)
	}
	return cred
}

// TestAgentInNetns runs the agent as the local driver's namespace mode does:
// inside a network namespace of its own (loopback left down: the agent brings
// it up), the API and VNC on the namespace's IP, reached from the host over a
// veth pair; DevTools and the page server stay inside.
func TestAgentInNetns(t *testing.T) {
	requireMachine(t)
	if os.Geteuid() != 0 {
		testutil.SkipOrFail(t, "not root: network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testutil.SkipOrFail(t, "ip not installed (package iproute2)")
	}
	suffix := strconv.FormatUint(rand.Uint64()%(1<<24), 16)
	ns, hostIf, nsIf := "mcagt-"+suffix, "mcah"+suffix, "mcan"+suffix
	// A random /30 in 10.254.0.0/16, away from the driver's default network.
	base := rand.IntN(1<<14) * 4
	hostIP := fmt.Sprintf("10.254.%d.%d", base>>8, base&0xff+1)
	nsIP := fmt.Sprintf("10.254.%d.%d", base>>8, base&0xff+2)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", ns).Run()
		_ = exec.Command("ip", "link", "del", hostIf).Run()
	})
	run("link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	run("link", "set", nsIf, "netns", ns)
	run("addr", "add", hostIP+"/30", "dev", hostIf)
	run("link", "set", hostIf, "up")
	run("-n", ns, "addr", "add", nsIP+"/30", "dev", nsIf)
	run("-n", ns, "link", "set", nsIf, "up")

	a := startRealAgent(t, &netnsTarget{name: ns, ip: nsIP})
	t.Logf("agent start → /health 200 (namespace): %v", a.waitHealthy(t))
	if err := rfb.Probe(t.Context(), mc.Endpoint{Network: "tcp", Address: a.vncAddr}); err != nil {
		t.Fatalf("rfb banner from the host: %v", err)
	}
	// Nothing in the namespace listens on TCP but VNC and the agent API:
	// DevTools is a pipe, the local pages are served through it.
	if got, want := a.listeners(t, false), []string{nsIP + ":5900", nsIP + ":8080"}; !sameSet(got, want) {
		t.Errorf("TCP listeners in the machine's namespace = %v, want %v", got, want)
	}
	if c, err := net.DialTimeout("tcp", nsIP+":9222", time.Second); err == nil {
		c.Close()
		t.Errorf("%s:9222 (DevTools) reachable from the host", nsIP)
	}
	vnc := dialRFB(t, a.vncAddr, a.vncPassword)
	clickDemoSignIn(t, a, vnc)

	a.stop(t)
}

// BenchmarkAgentStart measures the agent's start: process start to the first
// RFB banner and to /health 200 (Xvnc up, Chromium's DevTools answering),
// then a SIGTERM stop.
func BenchmarkAgentStart(b *testing.B) {
	var banner, health, stop time.Duration
	for b.Loop() {
		a := startRealAgent(b, nil)
		testutil.WaitFor(b, 60*time.Second, "RFB banner", func() error { return rfb.Probe(b.Context(), mc.Endpoint{Network: "tcp", Address: a.vncAddr}) })
		banner += time.Since(a.startedAt)
		health += a.waitHealthy(b)
		t0 := time.Now()
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		<-a.exited
		stop += time.Since(t0)
	}
	n := float64(b.N)
	b.ReportMetric(float64(banner.Milliseconds())/n, "ms-to-banner/op")
	b.ReportMetric(float64(health.Milliseconds())/n, "ms-to-health/op")
	b.ReportMetric(float64(stop.Milliseconds())/n, "ms-to-stop/op")
}

// TestLaunchStartURLOpenedOnce: an agent launched on the provider's start
// URL (a cold start) shows it already when the login starts, and the login
// does not navigate to it a second time: that reload could swallow the
// user's first click (seen as a flake of e2e's TestSignIn under load).
func TestLaunchStartURLOpenedOnce(t *testing.T) {
	a := startRealAgent(t, nil) // --start-url local:/demo/signin
	a.waitHealthy(t)
	if status, body := a.do(t, "POST", "/login/start", proto.LoginStartRequest{Provider: demoProvider(time.Minute)}); status != http.StatusAccepted {
		t.Fatalf("login start: %d %s", status, body)
	}
	waitFor(t, "the login waiting for the user", 20*time.Second, func() (bool, string) {
		_, body := a.do(t, "GET", "/login/status", nil)
		st := decode[proto.LoginStatus](t, body)
		return st.Phase == mc.PhaseWaitingForUser, fmt.Sprintf("%+v", st)
	})
	waitFor(t, "the login's start page dealt with", 20*time.Second, func() (bool, string) {
		logs := a.logs.String()
		return strings.Contains(logs, `"start url already shown"`) || strings.Contains(logs, `"opened start url"`), "not yet"
	})
	if strings.Contains(a.logs.String(), `"opened start url"`) {
		t.Errorf("the login navigated to the start URL that the launch had opened")
	}
}
