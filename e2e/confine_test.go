package e2e_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/internal/confine"
	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/rfb"
)

// The adversarial tests of issue 8: a machine is hostile. Each runs inside a
// real machine that the local driver started for a real session (as root:
// confined), as the uid its browser runs under, or through the viewer's
// VNC connection as a user would.

// requireConfinement skips unless machines are confined here (root, the
// tools the tests use inside a machine); under CI=true it fails.
func requireConfinement(tb testing.TB) {
	tb.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (machines are confined only as root)")
	}
	for _, b := range []string{"nsenter", "setpriv", "python3", "bash", "timeout"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("confinement tests need: %s (CI=true: not skipping)", strings.Join(missing, "; "))
	}
	tb.Skipf("confinement tests need: %s", strings.Join(missing, "; "))
}

// confinedMachine is a running session's machine, confined.
type confinedMachine struct {
	c  *controller
	id string // session id
	s  *mc.Session
	// sec are the machine's secrets, derived from the machine key (the
	// store keeps none).
	sec mc.MachineSecrets
	ms  machineState
}

// startConfined starts a demo session on c and waits until its machine shows
// the sign-in page.
func startConfined(tb testing.TB, c *controller, user string) *confinedMachine {
	tb.Helper()
	cr := c.api.createSession(tb, user, "demo")
	s := testutil.WaitState(tb, c.Store, cr.Session.ID, mc.StateReady, 60*time.Second)
	sec := c.MachineKey.Secrets(s.ID)
	waitDemoPage(tb, c.Store, s.ID, s.Machine.VNCAddr().String(), sec.VNCPassword, 30*time.Second)
	ms := readMachine(tb, c.dataDir, s.Machine.ID)
	if ms.UID < 1000 || ms.Cgroup == 0 || len(ms.CgroupDirs) == 0 {
		tb.Fatalf("machine %s is not confined: uid %d, cgroup version %d", s.ID, ms.UID, ms.Cgroup)
	}
	return &confinedMachine{c: c, id: s.ID, s: s, sec: sec, ms: ms}
}

// run runs script with /bin/sh inside the machine (its mount, PID, network,
// IPC and UTS namespaces) as its browser's uid (the agent's + 1) with no
// capability and no new privileges, in the machine's cgroup when inCgroup,
// and returns its combined output and exit error.
func (m *confinedMachine) run(tb testing.TB, inCgroup bool, script string) (string, error) {
	tb.Helper()
	uid := strconv.Itoa(m.ms.UID + 1)
	args := []string{"--target", strconv.Itoa(m.ms.PID), "--mount", "--pid", "--net", "--uts", "--ipc", "--",
		"setpriv", "--reuid", uid, "--regid", uid, "--clear-groups", "--no-new-privs", "--bounding-set", "-all", "--",
		"/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "HOME=/home/browser", "/bin/sh", "-c", script}
	var cmd *exec.Cmd
	if inCgroup {
		// The shell joins the machine's cgroups, then becomes nsenter.
		var join []string
		for _, d := range m.cgroupDirs() {
			join = append(join, "echo $$ > "+filepath.Join(d, "cgroup.procs"))
		}
		cmd = exec.Command("sh", append([]string{"-c", strings.Join(join, " && ") + ` && exec nsenter "$@"`, "sh"}, args...)...)
	} else {
		cmd = exec.Command("nsenter", args...)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// cgroupDirs are the machine's cgroup directories (v1: memory, pids, cpu).
func (m *confinedMachine) cgroupDirs() []string { return m.ms.CgroupDirs }

// cgroupProcs lists the processes in the machine's cgroup.
func (m *confinedMachine) cgroupProcs() []string {
	b, _ := os.ReadFile(filepath.Join(m.cgroupDirs()[0], "cgroup.procs"))
	return strings.Fields(string(b))
}

// mustFail runs each probe inside the machine and fails the test for each
// that succeeds.
func (m *confinedMachine) mustFail(t *testing.T, probes map[string]string) {
	t.Helper()
	for what, script := range probes {
		out, err := m.run(t, false, script)
		if err == nil {
			t.Errorf("%s: succeeded inside the machine: %s", what, testutil.Tail(out, 300))
		} else {
			t.Logf("%s: refused (%v): %s", what, err, strings.TrimSpace(testutil.Tail(out, 160)))
		}
	}
}

// TestConfinementFiles: as its browser's uid, a machine reads nothing of the
// controller (data directory, vault keys, database), of the host (/root,
// /sys, /etc/shadow, the init's root) or of another machine (home, token),
// writes nothing outside its own tmpfs, and has no file of the controller
// open.
func TestConfinementFiles(t *testing.T) {
	requireConfinement(t)
	c := startController(t, controllerEnv(t, "netns"))
	a := startConfined(t, c, "files-a")
	b := startConfined(t, c, "files-b")
	if _, err := os.Stat(filepath.Join(c.dataDir, "vault.keys")); err != nil {
		t.Fatalf("the controller has no vault.keys to protect: %v", err)
	}
	// First, that probes can succeed at all: the machine's own home.
	if out, err := a.run(t, false, "echo ok > /home/browser/probe && cat /home/browser/probe && id -u"); err != nil ||
		!strings.Contains(out, "ok") || !strings.Contains(out, strconv.Itoa(a.ms.UID+1)) {
		t.Fatalf("probe inside the machine: %v: %s", err, out)
	}
	a.mustFail(t, map[string]string{
		"read vault.keys":               "cat " + filepath.Join(c.dataDir, "vault.keys"),
		"list the data directory":       "ls " + c.dataDir,
		"read the database":             "head -c 16 " + filepath.Join(c.dataDir, "mc.db"),
		"list /root":                    "ls /root",
		"list /proc/1/root":             "ls /proc/1/root/",
		"list /sys":                     "ls /sys/class",
		"read /etc/shadow":              "cat /etc/shadow",
		"read another machine's token":  "cat " + filepath.Join(b.ms.Home, ".mc-agent-token"),
		"read its agent's token":        "cat /run/mc/token",
		"read its VNC password":         "cat /run/mc/vnc-password.vnc",
		"list its agent's home":         "ls /home/mc",
		"list another machine's home":   "ls " + b.ms.Home,
		"see another machine's process": "kill -0 " + strconv.Itoa(b.ms.PID),
		"write to /usr":                 "touch /usr/probe",
		"write to /":                    "touch /probe",
		"write to /etc":                 "echo x >> /etc/passwd",
		"become root":                   "su -c id root </dev/null",
	})
	// The machine's /proc shows its own processes only.
	out, err := a.run(t, false, "ls /proc | grep -c '^[0-9]'")
	if n, _ := strconv.Atoi(strings.TrimSpace(out)); err != nil || n == 0 || n > 60 {
		t.Errorf("processes visible inside the machine: %q (%v), want only the machine's", out, err)
	}
	// No process of the machine holds a file of the controller open (its
	// log, the agent's stdout and stderr, is the only one).
	for _, pid := range a.cgroupProcs() {
		fds, _ := os.ReadDir("/proc/" + pid + "/fd")
		for _, fd := range fds {
			target, err := os.Readlink("/proc/" + pid + "/fd/" + fd.Name())
			if err == nil && strings.HasPrefix(target, c.dataDir) && filepath.Base(target) != "agent.log" {
				t.Errorf("process %s of the machine has %s open as fd %s", pid, target, fd.Name())
			}
		}
	}
}

// TestConfinementNetwork: from inside a netns machine, no connection
// reaches the host (its bridge address, its other addresses, the
// controller's own port) or another machine (VNC, agent, a DevTools
// port); the host still reaches the machine's VNC server.
func TestConfinementNetwork(t *testing.T) {
	requireConfinement(t)
	env := controllerEnv(t, "netns")
	c := startController(t, env)
	a := startConfined(t, c, "net-a")
	b := startConfined(t, c, "net-b")

	// A listener of the host on every address, as any host service could be.
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	network, err := netip.ParsePrefix(env["MC_NETWORK"])
	if err != nil {
		t.Fatal(err)
	}
	gw := network.Addr().Next() // the host on the bridge
	connect := func(host, port string) string {
		return "timeout 3 bash -c 'exec 3<>/dev/tcp/" + host + "/" + port + "'"
	}
	// First, that a connection can succeed at all: the machine's own agent.
	if out, err := a.run(t, false, connect(a.ms.Machine.IP.String(), "8080")); err != nil {
		t.Fatalf("connect to the machine's own agent from inside: %v: %s", err, out)
	}
	probes := map[string]string{
		"the host's bridge address":          connect(gw.String(), port),
		"the controller's API on the bridge": connect(gw.String(), strings.TrimPrefix(c.URL[strings.LastIndex(c.URL, ":"):], ":")),
		"another machine's VNC":              connect(b.ms.Machine.IP.String(), "5900"),
		"another machine's agent":            connect(b.ms.Machine.IP.String(), "8080"),
		"another machine's DevTools port":    connect(b.ms.Machine.IP.String(), "9222"),
		"its own DevTools port":              connect("127.0.0.1", "9222"),
		"the host's 127.0.0.1":               connect("127.0.0.1", port),
	}
	for _, addr := range hostAddrs(t) {
		probes["the host's address "+addr] = connect(addr, port)
	}
	a.mustFail(t, probes)
	// The cross-machine DevTools attack has no port to aim at: each machine
	// listens on its VNC and agent ports only (DevTools is a pipe, and the
	// local pages are served through it).
	for _, m := range []*confinedMachine{a, b} {
		for _, p := range listeningPorts(t, m) {
			if p != 5900 && p != 8080 {
				t.Errorf("machine %s listens on TCP port %d", m.id, p)
			}
		}
	}
	if err := vncBanner(b.s.Machine.VNCAddr().String()); err != nil {
		t.Errorf("the host no longer reaches the machine's VNC: %v", err)
	}
}

// TestConfinementLoopbackDevTools is the cross-machine DevTools attack in
// loopback mode: no machine listens on a DevTools port (DevTools is a pipe),
// so machine A reaches nothing at machine B's old port.
func TestConfinementLoopbackDevTools(t *testing.T) {
	requireConfinement(t)
	env := controllerEnv(t, "loopback")
	c := startController(t, env)
	a := startConfined(t, c, "lo-a")
	b := startConfined(t, c, "lo-b")
	cdpPort := strconv.Itoa(b.ms.Machine.VNCPort + 2) // slot base + 2, where DevTools was
	out, err := a.run(t, false, "timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/"+cdpPort+"'")
	if err == nil {
		t.Errorf("machine A connected to machine B's DevTools port %s: %s", cdpPort, out)
	}
	// Nothing of either machine listens beyond VNC and agent.
	for _, m := range []*confinedMachine{a, b} {
		base := m.ms.Machine.VNCPort
		allowed := map[int]bool{base: true, base + 1: true}
		for _, p := range listeningPorts(t, m) {
			if !allowed[p] {
				t.Errorf("machine %s listens on TCP port %d", m.id, p)
			}
		}
	}
}

// exiting matches the status of a process that has exited (a zombie) or is
// being reaped.
var exiting = regexp.MustCompile(`(?m)^State:\s+[ZX]`)

// TestConfinementBrowserSandbox: Chromium runs with its own sandbox:
// renderers in a user and PID namespace of their own under seccomp-BPF
// (Seccomp: 2), with no new privileges, and no process of the machine has a
// capability or the controller's uid; the browser and the agent have uids
// of their own; the machine's managed policy is in its /etc.
func TestConfinementBrowserSandbox(t *testing.T) {
	requireConfinement(t)
	c := startController(t, controllerEnv(t, defaultMode()))
	m := startConfined(t, c, "sandbox")
	var browserNS string
	renderers := 0
	for _, pid := range m.cgroupProcs() {
		status, err := os.ReadFile("/proc/" + pid + "/status")
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
		if len(cmdline) == 0 {
			// A process on its way out (the renderer of a tab just
			// closed, such as the controller's chrome://sandbox read)
			// has no command line any more: it is let go once it is a
			// zombie or gone; any other is looked at again.
			gone := false
			_ = testutil.Poll(t.Context(), 5*time.Second, func() error {
				st, err := os.ReadFile("/proc/" + pid + "/status")
				if err != nil || exiting.Match(st) {
					gone = true
					return nil
				}
				if cmdline, _ = os.ReadFile("/proc/" + pid + "/cmdline"); len(cmdline) > 0 {
					status = st
					return nil
				}
				return errLeft
			})
			if gone {
				continue
			}
		}
		args := strings.Split(string(cmdline), "\x00")
		field := func(k string) string {
			for _, l := range strings.Split(string(status), "\n") {
				if v, ok := strings.CutPrefix(l, k+":"); ok {
					return strings.TrimSpace(v)
				}
			}
			return ""
		}
		want := m.ms.UID // the agent, Xvnc
		if strings.Contains(args[0], "chrom") {
			want = m.ms.UID + 1 // the browser, a uid of its own
		}
		if f := strings.Fields(field("Uid")); pid != strconv.Itoa(m.ms.PID) && (len(f) < 4 || f[0] != strconv.Itoa(want) || f[1] != f[0] || f[3] != f[0]) {
			t.Errorf("process %s (%s) of the machine has uids %v, want %d", pid, args[0], f, want)
		}
		if pid != strconv.Itoa(m.ms.PID) && field("NoNewPrivs") != "1" {
			t.Errorf("process %s (%s) may gain privileges (NoNewPrivs %s)", pid, args[0], field("NoNewPrivs"))
		}
		userNS, _ := os.Readlink("/proc/" + pid + "/ns/user")
		if strings.Contains(args[0], "chromium") && len(args) > 1 && !strings.Contains(string(cmdline), "--type=") {
			browserNS = userNS
		}
		if strings.Contains(string(cmdline), "--type=renderer") {
			renderers++
			// A renderer that has just forked sets its filter a moment
			// later: look again for a few seconds before failing.
			got := field("Seccomp")
			_ = testutil.Poll(t.Context(), 5*time.Second, func() error {
				b, err := os.ReadFile("/proc/" + pid + "/status")
				if err != nil {
					got = "2" // gone: nothing to check
					return nil
				}
				status = b
				if got = field("Seccomp"); got != "2" {
					return errLeft
				}
				return nil
			})
			if got != "2" {
				t.Errorf("renderer %s: Seccomp %s, want 2 (filter)", pid, got)
			}
			if userNS == "" || userNS == browserNS {
				t.Errorf("renderer %s shares the browser's user namespace %s", pid, userNS)
			}
		}
	}
	if renderers == 0 || browserNS == "" {
		t.Fatalf("found %d renderers and browser namespace %q in the machine's cgroup", renderers, browserNS)
	}
	policy, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(m.ms.PID), "root", "etc/chromium/policies/managed/mc.json"))
	if err != nil || !strings.Contains(string(policy), `"AllowFileSelectionDialogs": false`) || !strings.Contains(string(policy), `"file://*"`) {
		t.Errorf("the machine's managed policy: %v: %s", err, policy)
	}
	// Chromium's own report, chrome://sandbox (which the policy allows, as
	// the only chrome:// page), read by the machine's agent in a
	// background tab: the namespace sandbox, PID and network namespaces,
	// seccomp-BPF with TSYNC, "adequately sandboxed". The user's tab still
	// shows the demo page afterwards.
	t0 := time.Now()
	sb, err := agentproto.NewClient(m.s.Machine.AgentEndpoint(), m.sec.AgentToken, nil).Sandbox(t.Context())
	if err != nil {
		t.Fatalf("GET /sandbox from the machine's agent: %v", err)
	}
	t.Logf("chrome://sandbox read in %v, adequate %v", time.Since(t0).Round(time.Millisecond), sb.Adequate)
	for _, l := range sb.Layers {
		t.Logf("chrome://sandbox: %s: %s", l.Name, l.Status)
	}
	if missing := sb.Missing(); len(missing) > 0 {
		t.Errorf("the machine's Chromium lacks: %s", strings.Join(missing, "; "))
	}
	// The fake driver's machines answer as this one does.
	if err := fake.CheckSandbox(sb, true); err != nil {
		t.Error(err)
	}
	// The controller read it too, when the machine started, and counts it.
	testutil.WaitFor(t, 30*time.Second, "the controller's sandbox check", func() error {
		_, body := testutil.Request(t.Context(), t, "GET", c.api.URL, "/metrics", c.api.Key, nil)
		if !strings.Contains(string(body), `mc_browser_sandbox_checks_total{result="sandboxed"} 1`) {
			return fmt.Errorf("/metrics has no sandboxed check (%d bytes)", len(body))
		}
		return nil
	})
	waitDemoPage(t, c.Store, m.id, m.s.Machine.VNCAddr().String(), m.sec.VNCPassword, 10*time.Second)
}

// TestConfinementFileDialog drives the remote browser through its VNC
// connection as a user would: Ctrl+O, a path and Enter open nothing (the
// screen still shows the page), nor do F12, Ctrl+Shift+I or J (DevTools),
// Ctrl+U (source), Ctrl+P (print), Ctrl+S (save) and Ctrl+N (a window);
// while the keyboard does reach the page (Tab and Enter then sign in).
func TestConfinementFileDialog(t *testing.T) {
	requireConfinement(t)
	c := startController(t, controllerEnv(t, defaultMode()))
	m := startConfined(t, c, "dialog")
	addr, pw := m.s.Machine.VNCAddr().String(), m.sec.VNCPassword
	before, err := vncCapture(addr, pw)
	if err != nil {
		t.Fatal(err)
	}
	const (
		ctrl   = 0xffe3
		enter  = 0xff0d
		tab    = 0xff09
		shift  = 0xffe1
		f12    = 0xffc9
		escape = 0xff1b
	)
	var keys []uint32
	chord := func(mods []uint32, k uint32) {
		keys = append(keys, mods...)
		keys = append(keys, k, k|1<<31)
		for i := len(mods) - 1; i >= 0; i-- {
			keys = append(keys, mods[i]|1<<31)
		}
	}
	press := func(ks ...uint32) {
		for _, k := range ks {
			keys = append(keys, k, k|1<<31)
		}
	}
	ctrlO := func() {
		chord([]uint32{ctrl}, 'o')
		for _, r := range "/etc/passwd" {
			press(uint32(r))
		}
		press(enter)
	}
	// Strict steps must not change the screen at all. DevTools and source
	// may show Chromium's notice that the organization blocked DevTools;
	// Escape closes it, and the page must be back (a DevTools window would
	// stay).
	steps := []struct {
		name   string
		keys   func()
		strict bool
	}{
		{"Ctrl+O, a path, Enter", ctrlO, true},
		{"Ctrl+U", func() { chord([]uint32{ctrl}, 'u') }, false},
		{"Ctrl+P", func() { chord([]uint32{ctrl}, 'p') }, true},
		{"Ctrl+S", func() { chord([]uint32{ctrl}, 's') }, true},
		{"Ctrl+N", func() { chord([]uint32{ctrl}, 'n') }, false},
		{"F12", func() { press(f12) }, false},
		{"Ctrl+Shift+I", func() { chord([]uint32{ctrl, shift}, 'I') }, false},
		{"Ctrl+Shift+J", func() { chord([]uint32{ctrl, shift}, 'J') }, false},
	}
	for _, st := range steps {
		keys = nil
		st.keys()
		if !st.strict {
			press(escape)
		}
		if err := vncKeys(addr, pw, keys); err != nil {
			t.Fatal(err)
		}
		// A dialog or window would take a moment to show: watch the
		// screen for two seconds.
		// A capture that fails (a busy host) is taken again.
		var changed *image.RGBA
		n, shots := 0, 0
		var lastErr error
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) || shots == 0 && time.Now().Before(deadline.Add(10*time.Second)) {
			img, err := vncCapture(addr, pw)
			if err != nil {
				lastErr = err
				continue
			}
			shots++
			if n = changedPixels(before, img); n > 0 {
				changed = img
				if st.strict {
					break
				}
			}
		}
		if shots == 0 {
			t.Fatalf("%s: no screenshot: %v", st.name, lastErr)
		}
		if n > 0 {
			t.Fatalf("%s changed %d pixels of the screen (a dialog or window?): %s", st.name, n, savePNG(changed))
		}
		if changed != nil {
			t.Logf("%s showed a notice for a moment: %s", st.name, savePNG(changed))
		}
	}
	// The keyboard reaches the page: Tab to the button, Enter signs in.
	keys = nil
	press(tab, enter)
	if err := vncKeys(addr, pw, keys); err != nil {
		t.Fatal(err)
	}
	got := testutil.WaitState(t, c.Store, m.id, mc.StateCompleted, 30*time.Second)
	if got.State != mc.StateCompleted {
		t.Fatalf("session after Tab, Enter: %s", got.State)
	}
}

// TestConfinementResources: a process of the machine that allocates past
// its memory limit is killed inside the machine's cgroup only (the other
// machine and the controller go on); a fork bomb stops at the pids limit;
// /tmp fills only to its size; after cancel the cgroup is gone with every
// process, and no mount of the machine is left.
func TestConfinementResources(t *testing.T) {
	requireConfinement(t)
	env := controllerEnv(t, defaultMode())
	env["MC_MACHINE_MEMORY_MB"] = "768"
	env["MC_MACHINE_PIDS"] = "256"
	env["MC_MACHINE_TMP_MB"] = "128"
	c := startController(t, env)
	a := startConfined(t, c, "res-a")
	b := startConfined(t, c, "res-b")

	out, err := a.run(t, true, "python3 -c 'b = bytearray(1); b = b\"x\" * (1200 << 20); print(len(b))'")
	if err == nil {
		t.Errorf("allocating 1200 MiB in a machine of 768 MiB succeeded: %s", out)
	}
	if m := oomKills(a); m == 0 {
		t.Errorf("no OOM kill in the machine's cgroup after an allocation past its limit (%v: %s)", err, out)
	}
	for _, m := range []*confinedMachine{a, b} {
		if s := c.api.session(t, m.id); s.State.Final() {
			t.Errorf("session %s ended (%s %s) after machine A's allocation", m.id, s.State, s.Reason)
		}
	}
	if err := vncBanner(b.s.Machine.VNCAddr().String()); err != nil {
		t.Errorf("machine B's VNC after machine A's OOM: %v", err)
	}

	out, _ = a.run(t, true, "dd if=/dev/zero of=/tmp/fill bs=1M count=300 2>&1; stat -c %s /tmp/fill; rm -f /tmp/fill")
	lines := strings.Fields(out)
	if size, _ := strconv.Atoi(lines[len(lines)-1]); size <= 0 || size > 128<<20 {
		t.Errorf("filling /tmp: %s; want at most 128 MiB written", testutil.Tail(out, 200))
	}

	out, _ = a.run(t, true, "n=0; while [ $n -lt 400 ]; do sleep 20 & n=$((n+1)); done 2>/dev/null; echo started $(jobs -p | wc -l); kill $(jobs -p)")
	if got := pidsEvents(a); got == 0 {
		t.Errorf("a fork loop of 400 in a machine of 256 pids hit no limit: %s", out)
	}

	st := c.api.session(t, a.id)
	if st.State.Final() {
		t.Fatalf("session %s ended early: %s %s", a.id, st.State, st.Reason)
	}
	mntNS, _ := os.Readlink("/proc/" + strconv.Itoa(a.ms.PID) + "/ns/mnt")
	if code := c.api.Do(t, "POST", "/api/v1/sessions/"+a.id+"/cancel", nil, nil); code != http.StatusOK {
		t.Fatalf("cancel: status %d", code)
	}
	err = testutil.Poll(t.Context(), 15*time.Second, func() error {
		for _, d := range a.cgroupDirs() {
			if _, err := os.Stat(d); err == nil {
				return fmt.Errorf("cgroup %s is left (processes %v)", d, a.cgroupProcs())
			}
		}
		if left := leftovers(t, c.Store, a.ms); len(left) > 0 {
			return errors.New(strings.Join(left, "; "))
		}
		if pids := nsMembers(mntNS); len(pids) > 0 {
			return fmt.Errorf("processes %v are left in the machine's mount namespace", pids)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after cancel: %v", err)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), a.ms.Dir) {
		t.Errorf("a mount below %s is left on the host", a.ms.Dir)
	}
}

// TestConfinementMachineOOM: when an OOM inside a machine kills its
// browser (its main process for the user), the machine ends and its session
// ends failed with machine_oom; the other machine keeps running.
func TestConfinementMachineOOM(t *testing.T) {
	requireConfinement(t)
	env := controllerEnv(t, defaultMode())
	env["MC_MACHINE_MEMORY_MB"] = "768"
	c := startController(t, env)
	a := startConfined(t, c, "oom-a")
	b := startConfined(t, c, "oom-b")

	// The kernel picks the victim by oom_score_adj: at 1000, the browser
	// comes before the allocation (0) whatever their sizes. Once the browser
	// is gone, the agent and then the machine's init exit, and the PID
	// namespace (the allocation with it) ends.
	browser := ""
	for _, pid := range a.cgroupProcs() {
		cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
		if args := strings.Split(string(cmdline), "\x00"); filepath.Base(args[0]) == "chromium" && !strings.Contains(string(cmdline), "--type=") {
			browser = pid
		}
	}
	if browser == "" {
		t.Fatalf("no browser process in machine %s's cgroup (%v)", a.id, a.cgroupProcs())
	}
	if err := os.WriteFile("/proc/"+browser+"/oom_score_adj", []byte("1000"), 0); err != nil {
		t.Fatal(err)
	}
	out, err := a.run(t, true, "python3 -c 'b = b\"x\" * (1200 << 20); print(len(b))'")
	if err == nil {
		t.Errorf("allocating 1200 MiB in a machine of 768 MiB succeeded: %s", out)
	}
	if n := oomKills(a); n == 0 {
		t.Errorf("no OOM kill in the machine's cgroup after an allocation past its limit (%v: %s)", err, out)
	}
	got := testutil.WaitState(t, c.Store, a.id, mc.StateFailed, 30*time.Second)
	if got.State != mc.StateFailed || got.Reason != mc.ReasonMachineOOM {
		t.Errorf("session %s after its machine's OOM: %s %s, want failed machine_oom", a.id, got.State, got.Reason)
	}
	if s := c.api.session(t, b.id); s.State.Final() {
		t.Errorf("session %s ended (%s %s) after machine A's OOM", b.id, s.State, s.Reason)
	}
	if err := vncBanner(b.s.Machine.VNCAddr().String()); err != nil {
		t.Errorf("machine B's VNC after machine A's OOM: %v", err)
	}
}

// TestConfinementFileURLBlocked: the machine's visible tab, sent to a
// file:// URL over its DevTools pipe, shows Chromium's "blocked by
// administrator" page (the navigation fails with
// net::ERR_BLOCKED_BY_ADMINISTRATOR): the managed policy blocks it, not
// the agent. A production agent refuses file:// itself, so the machine runs
// a test build of the agent (tag mc_test_file_urls) that passes it on.
func TestConfinementFileURLBlocked(t *testing.T) {
	requireConfinement(t)
	agent := filepath.Join(t.TempDir(), "mc-agent")
	build := exec.Command("go", "build", "-tags", "mc_test_file_urls", "-o", agent, "github.com/master-controller/mc/cmd/mc-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the test agent: %v: %s", err, out)
	}
	if err := os.Chmod(filepath.Dir(agent), 0o755); err != nil {
		t.Fatal(err)
	}
	env := controllerEnv(t, defaultMode())
	env["MC_AGENT_PATH"] = agent
	c := startController(t, env)
	m := startConfined(t, c, "fileurl")
	if out, err := m.run(t, false, "cat "+confine.ChromiumPolicyFile); err != nil || !strings.Contains(out, `"file://*"`) {
		t.Fatalf("the machine's managed policy %s does not block file:// (%v): %s", confine.ChromiumPolicyFile, err, testutil.Tail(out, 300))
	}
	client := agentproto.NewClient(m.s.Machine.AgentEndpoint(), m.sec.AgentToken, nil)
	// The agent's own page opens: the path works.
	if err := client.Open(t.Context(), "local:/demo/signin"); err != nil {
		t.Fatalf("open the agent's sign-in page: %v", err)
	}
	err := client.Open(t.Context(), "file:///etc/passwd")
	if mc.ErrorCode(err) != mc.EUNAVAILABLE {
		t.Fatalf("open file:///etc/passwd in the machine's tab: %v, want the browser's refusal", err)
	}
	log := filepath.Join(m.ms.Dir, "agent.log")
	err = testutil.Poll(t.Context(), 10*time.Second, func() error {
		b, _ := os.ReadFile(log)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "ERR_BLOCKED_BY_ADMINISTRATOR") {
				t.Logf("the machine's browser: %s", l)
				return nil
			}
		}
		return fmt.Errorf("the agent's log has no ERR_BLOCKED_BY_ADMINISTRATOR for file:///etc/passwd: %s", testutil.Tail(string(b), 600))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// oomKills is the OOM kill count of m's memory cgroup.
func oomKills(m *confinedMachine) int {
	f := "memory.oom_control"
	if m.ms.Cgroup == 2 {
		f = "memory.events"
	}
	b, _ := os.ReadFile(filepath.Join(m.cgroupDirs()[0], f))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "oom_kill "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// pidsEvents is how often m's pids limit refused a fork.
func pidsEvents(m *confinedMachine) int {
	dir := m.cgroupDirs()[0]
	if m.ms.Cgroup == 1 {
		dir = m.cgroupDirs()[1]
	}
	b, _ := os.ReadFile(filepath.Join(dir, "pids.events"))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "max "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// nsMembers lists the host's processes in the mount namespace ns
// ("mnt:[…]").
func nsMembers(ns string) []string {
	if ns == "" {
		return nil
	}
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt"); err == nil && l == ns {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// hostAddrs lists the host's IPv4 addresses other than loopback and the
// machine bridges'.
func hostAddrs(tb testing.TB) []string {
	tb.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || strings.HasPrefix(i.Name, "mc") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				out = append(out, ipn.IP.String())
			}
		}
	}
	return out
}

// listeningPorts lists the TCP ports that m's processes listen on (from
// /proc/<pid>/net/tcp of its init, whose network namespace they share, and
// the sockets its processes hold).
func listeningPorts(tb testing.TB, m *confinedMachine) []int {
	tb.Helper()
	var pids []int
	for _, p := range m.cgroupProcs() {
		if pid, err := strconv.Atoi(p); err == nil {
			pids = append(pids, pid)
		}
	}
	own := procfs.SocketInodes(pids)
	ls, err := procfs.TCPListeners(m.ms.PID)
	if err != nil {
		tb.Fatalf("listening sockets of machine %s: %v", m.id, err)
	}
	var ports []int
	for _, l := range ls {
		if own[l.Inode] {
			ports = append(ports, int(l.Addr.Port()))
		}
	}
	return ports
}

// vncBanner dials addr and reads an RFB banner.
func vncBanner(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 12)
	if _, err := io.ReadFull(conn, b); err != nil {
		return err
	}
	if _, ok := rfb.ParseBanner(b); !ok {
		return fmt.Errorf("not an RFB banner: %q", b)
	}
	return nil
}

// vncKeys connects to the VNC server at addr and sends key events: each
// keysym pressed, or released when bit 31 is set.
func vncKeys(addr string, password mc.Secret, keys []uint32) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := rfb.ClientHandshake(conn, password); err != nil {
		return err
	}
	if _, err := conn.Write([]byte{1}); err != nil { // ClientInit, shared
		return err
	}
	var si [24]byte
	if _, err := io.ReadFull(conn, si[:]); err != nil {
		return err
	}
	if _, err := io.CopyN(io.Discard, conn, int64(binary.BigEndian.Uint32(si[20:]))); err != nil {
		return err
	}
	for _, k := range keys {
		msg := []byte{4, 1, 0, 0, 0, 0, 0, 0}
		if k&(1<<31) != 0 {
			msg[1] = 0
		}
		binary.BigEndian.PutUint32(msg[4:], k&^(1<<31))
		if _, err := conn.Write(msg); err != nil {
			return err
		}
	}
	// A round trip, so that every event has been read before the close.
	if _, err := conn.Write([]byte{3, 1, 0, 0, 0, 0, 0, 1, 0, 1}); err != nil {
		return err
	}
	var t [1]byte
	_, err = io.ReadFull(conn, t[:])
	return err
}

// changedPixels counts the pixels in which a and b differ by more than the
// tolerance, outside a 48×48 box at the centre: the X pointer sits there
// (no pointer moves), drawn into the screen, and its shape follows what is
// under it.
func changedPixels(a, b *image.RGBA) int {
	if a.Bounds() != b.Bounds() {
		return a.Bounds().Dx() * a.Bounds().Dy()
	}
	cx, cy := a.Bounds().Dx()/2, a.Bounds().Dy()/2
	n := 0
	for y := a.Bounds().Min.Y; y < a.Bounds().Max.Y; y++ {
		for x := a.Bounds().Min.X; x < a.Bounds().Max.X; x++ {
			if x > cx-24 && x < cx+24 && y > cy-24 && y < cy+24 {
				continue
			}
			if !near(rgba(a, x, y), rgba(b, x, y), tolerance) {
				n++
			}
		}
	}
	return n
}
