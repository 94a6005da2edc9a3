package local

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net"
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
	"github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/driver/drivertest"
	"github.com/master-controller/mc/internal/confine"
	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/rfb"
	"golang.org/x/sys/unix"
)

// childEnv marks a test binary that TestUserns re-ran under a uid that is
// not root.
const childEnv = "MC_TEST_USERNS_CHILD"

// asUnprivileged runs the test named by t in this test binary again under a
// fresh uid that is not root (when the test runs as root, as CI does), so
// that the driver's unprivileged mode is covered there too; it reports
// whether the caller is the child that should run the test's body. Each of
// setup runs first, as root, with the child's uid, and may add to the
// child's environment.
func asUnprivileged(t *testing.T, setup ...func(uid int, env map[string]string)) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		return true
	}
	requireMachines(t)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<20))
	uid := 1900000000 + int(n.Int64()) // no user of the host has it
	// Everything the child runs must be reachable by it: the build
	// directories of go test and testutil are root's (0700).
	dir, err := os.MkdirTemp("", "mc-userns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, agent := filepath.Join(dir, "local.test"), filepath.Join(dir, "mc-agent")
	for src, dst := range map[string]string{self: bin, agentPath: agent} {
		if err := testutil.CopyFile(src, dst, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, uid, uid); err != nil {
		t.Fatal(err)
	}
	args := []string{bin, "-test.run", "^" + t.Name() + "$", "-test.v", "-test.count=1", "-test.timeout=10m"}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
	if fi, err := os.Stat(tunDevice); err == nil && fi.Mode().Perm()&0o006 != 0o006 {
		// This host's /dev/net/tun is root's only (udev would make it
		// 0666): the child gets a 0666 node of the same device in a mount
		// namespace of its own, so that slirp4netns can run; the host's
		// node is left as it is.
		node := filepath.Join(dir, "tun")
		if err := syscall.Mknod(node, syscall.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(node, 0o666); err != nil {
			t.Fatal(err)
		}
		u := strconv.Itoa(uid)
		cmd = exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c",
			`n=$1; u=$2; shift 2; mount --bind "$n" ` + tunDevice + ` && exec setpriv --reuid "$u" --regid "$u" --clear-groups "$@"`,
			"sh", node, u}, args...)...)
	}
	cmd.Dir = home
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home,
		"TMPDIR=" + home, "MC_AGENT=" + agent, childEnv + "=1", "CI=" + os.Getenv("CI")}
	extra := map[string]string{}
	for _, f := range setup {
		f(uid, extra)
	}
	for k, v := range extra {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		t.Log("uid " + strconv.Itoa(uid) + ": " + sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s as uid %d: %v", t.Name(), uid, err)
	}
	return false
}

// usernsEnv is newEnv for mode userns, with a short socket directory of the
// test's own.
func usernsEnv(t *testing.T) *testEnv {
	t.Helper()
	if err := userNSCheck(); err != nil {
		testutil.SkipOrFail(t, "unprivileged mode: %v", err)
	}
	env := newEnv(t, ModeUserns)
	env.cfg.InsecureSharedHost = false
	sd, err := os.MkdirTemp("", "s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sd) })
	env.cfg.SocketDir = filepath.Join(sd, "m")
	return env
}

// TestUsernsConformance: the conformance suite, in unprivileged mode.
func TestUsernsConformance(t *testing.T) {
	if !asUnprivileged(t) {
		return
	}
	env := usernsEnv(t)
	d := env.driver(t)
	if c := d.Capabilities(); c.Isolation != ModeUserns || c.SocketDir != env.cfg.SocketDir {
		t.Fatalf("Capabilities = %+v, want userns with socket dir %s", c, env.cfg.SocketDir)
	}
	drivertest.Run(t, func(t *testing.T) mc.Driver { return d }, drivertest.Options{
		Kill:      env.kill,
		Leftovers: env.specLeftovers,
	})
}

// TestUsernsAttacker: from inside an unprivileged machine, as its own uid
// (the uid its browser runs under), nothing of the controller, the host or
// another machine can be read or reached, and no machine has a TCP port
// outside its own network namespace; the controller still reaches the
// machine's VNC server through its socket.
func TestUsernsAttacker(t *testing.T) {
	if !asUnprivileged(t) {
		return
	}
	for _, b := range []string{"nsenter", "bash", "timeout"} {
		if _, err := exec.LookPath(b); err != nil {
			testutil.SkipOrFail(t, "the attacker test needs %s", b)
		}
	}
	env := usernsEnv(t)
	d := env.driver(t)
	// What a controller keeps: a key file beside the machines' data.
	keys := filepath.Join(env.cfg.DataDir, "vault.keys")
	if err := os.WriteFile(keys, []byte("secret key material\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A service on the host's loopback, as the controller's API would be.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	hostPort := ln.Addr().(*net.TCPAddr).Port

	var specs [2]mc.MachineSpec
	var ms [2]mc.Machine
	for i := range specs {
		specs[i] = newSpec()
		destroyLater(t, d, specs[i].ID)
		m, err := d.Create(t.Context(), specs[i])
		if err != nil {
			t.Fatal(err)
		}
		ms[i] = m
	}
	for i, m := range ms {
		drivertest.WaitRFB(t, m.VNCEndpoint().String(), 60*time.Second)
		drivertest.WaitHealth(t, m.AgentEndpoint().String(), specs[i].Secrets.AgentToken, 60*time.Second)
	}
	// The controller reaches VNC through the socket, with the machine's
	// password, as the gateway does.
	ep := ms[0].VNCEndpoint()
	c, err := net.DialTimeout(ep.Network, ep.Address, 2*time.Second)
	if err != nil {
		t.Fatalf("dial VNC socket: %v", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := rfb.ClientHandshake(c, specs[0].Secrets.VNCPassword); err != nil {
		t.Errorf("RFB handshake through the socket: %v", err)
	}
	c.Close()
	for _, f := range []string{ms[0].SocketDir, d.cfg.SocketDir} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("socket dir %s: %v, %v; want mode 0700", f, fi.Mode(), err)
		}
	}

	a, b := env.state(t, specs[0].ID), env.state(t, specs[1].ID)
	// No process of either machine is in the host's network namespace:
	// whatever they listen on is in their own.
	hostNet, _ := os.Readlink("/proc/self/ns/net")
	for _, st := range []*state{a, b} {
		for _, pid := range machinePids(st.PGID) {
			if ns, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns/net")); err == nil && ns == hostNet {
				t.Errorf("process %d of machine %s is in the host's network namespace", pid, st.ID)
			}
		}
	}
	// And the host's own listening TCP sockets (ss -ltn on the host) hold
	// none of theirs.
	hostListen, err := procfs.TCPListeners(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	sockets := 0
	for _, st := range []*state{a, b} {
		theirs := procfs.SocketInodes(machinePids(st.PGID))
		sockets += len(theirs)
		for _, l := range hostListen {
			if theirs[l.Inode] {
				t.Errorf("machine %s listens on %v, a TCP port of the host", st.ID, l.Addr)
			}
		}
	}
	if sockets == 0 {
		t.Errorf("found no socket of the machines' processes to check")
	}
	// Inside either machine (ss -ltn in its network namespace), nothing
	// listens on TCP at all: VNC and the agent API are Unix sockets,
	// DevTools is a pipe, and the local pages are served through it.
	for _, st := range []*state{a, b} {
		ls, err := procfs.TCPListeners(st.PID)
		if err != nil {
			t.Fatalf("listening sockets in machine %s: %v", st.ID, err)
		}
		for _, l := range ls {
			t.Errorf("machine %s listens on TCP %v; want no TCP listener", st.ID, l.Addr)
		}
		out, err := inMachine(t, st.PID, "tr '\\0' ' ' < /proc/$(pgrep -o -x chromium)/cmdline")
		if err != nil {
			t.Fatalf("read Chromium's command line in the machine: %v (%s)", err, out)
		}
		if !strings.Contains(out, "--remote-debugging-pipe") || strings.Contains(out, "--remote-debugging-port") {
			t.Errorf("machine %s's Chromium: %q; want DevTools on a pipe only", st.ID, out)
		}
	}
	otherHome := filepath.Join(d.MachineDir(specs[1].ID), "home")
	probes := map[string]string{
		"the controller's data directory":   "ls " + env.cfg.DataDir,
		"vault.keys":                        "cat " + keys,
		"/root":                             "ls /root",
		"/proc/1/root of the host":          "ls /proc/1/root/etc/shadow && cat /proc/1/root/etc/shadow",
		"/sys":                              "ls /sys/class/net",
		"another machine's home":            "ls " + otherHome,
		"another machine's token":           "cat " + filepath.Join(otherHome, tokenFile),
		"another machine's socket dir":      "ls " + b.SocketDir,
		"another machine's VNC socket":      "test -S " + filepath.Join(b.SocketDir, mc.VNCSocket),
		"the host's loopback service":       "exec 3<>/dev/tcp/127.0.0.1/" + strconv.Itoa(hostPort),
		"the host's other addresses":        hostDials(hostPort),
		"the host's data dir via /proc":     "ls /proc/*/root" + env.cfg.DataDir,
		"a setuid way back to the host uid": "test -u /usr/bin/su && su -c true",
		// The cross-machine DevTools attack: where DevTools used to listen
		// (9222, or a loopback slot's base+2), nothing does.
		"a DevTools port":               "exec 3<>/dev/tcp/127.0.0.1/9222",
		"machine B's old DevTools port": "exec 3<>/dev/tcp/127.0.0.1/" + strconv.Itoa(env.cfg.PortBase+4*b.Slot+2),
	}
	// The same means work on what is the machine's own: the probes fail
	// for what they reach, not for how they try.
	controls := map[string]string{
		"its own socket": "test -S " + confine.SocketDir + "/" + mc.VNCSocket,
		"its own home":   "ls " + confine.Home,
		// A port of its own loopback that a process of its own listens
		// on (perl, of Debian's essential perl-base) for this probe.
		"a port it listens on itself": `perl -MIO::Socket::INET -e '$l = IO::Socket::INET->new(LocalAddr => "127.0.0.1:7001", Listen => 1) or die $!; $l->accept' &
			for i in $(seq 40); do timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/7001' 2>/dev/null && exit 0; sleep 0.1; done; exit 1`,
		"/usr": "cat /usr/lib/os-release",
	}
	for what, script := range controls {
		if out, err := inMachine(t, a.PID, script); err != nil {
			t.Errorf("from machine A, %s: %v (%q); want success", what, err, out)
		}
	}
	for what, script := range probes {
		out, err := inMachine(t, a.PID, script)
		if err == nil {
			t.Errorf("from machine A, %s: succeeded (%q); want a failure", what, out)
		} else if testing.Verbose() {
			t.Logf("from machine A, %s: %v", what, err)
		}
	}
	var out string
	// Chromium keeps its sandbox in the machine: its renderers run under
	// seccomp-BPF with no new privileges.
	out, err = inMachine(t, a.PID, `for p in /proc/[0-9]*; do
		[ "$(cat $p/comm 2>/dev/null)" = chromium ] || continue
		if tr '\0' ' ' < $p/cmdline 2>/dev/null | grep -q -- --type=renderer; then
			grep -E '^(Seccomp|NoNewPrivs):' $p/status | tr '\n\t' '  '; echo
		fi
	done`)
	renderers := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || out == "" {
		t.Errorf("renderers of machine A: %q, %v; want at least one", out, err)
	}
	for _, r := range renderers {
		if !strings.Contains(r, "Seccomp: 2") || !strings.Contains(r, "NoNewPrivs: 1") {
			t.Errorf("a renderer of machine A runs without its sandbox: %q", r)
		}
	}
	// And Chromium says so itself: chrome://sandbox, read by machine A's
	// agent through its socket, shows the namespace sandbox, PID and
	// network namespaces and seccomp-BPF with TSYNC, "adequately
	// sandboxed".
	sb, err := agentproto.NewClient(ms[0].AgentEndpoint(), specs[0].Secrets.AgentToken, nil).Sandbox(t.Context())
	if err != nil {
		t.Errorf("GET /sandbox from machine A's agent: %v", err)
	} else if missing := sb.Missing(); len(missing) > 0 {
		t.Errorf("machine A's Chromium lacks: %s (%+v)", strings.Join(missing, "; "), sb.Layers)
	}
	// The machine's own uid maps to the controller's, and nothing else is
	// mapped: no way to any other uid of the host.
	if out, err := inMachine(t, a.PID, "cat /proc/self/uid_map"); err != nil || len(strings.Fields(out)) != 3 ||
		strings.Fields(out)[0] != strconv.Itoa(confine.UserNSID) || strings.Fields(out)[2] != "1" {
		t.Errorf("uid map in the machine = %q, %v; want one id, %d", out, err, confine.UserNSID)
	}
	// The agent and what it starts run without any capability in the
	// machine's user namespace (Chromium's sandbox holds some in a nested
	// namespace of its own, over nothing of the machine's).
	caps := `u=$(readlink /proc/self/ns/user); for p in /proc/[0-9]*; do
		[ "${p#/proc/}" = 1 ] && continue
		[ "$(readlink $p/ns/user 2>/dev/null)" = "$u" ] || continue
		echo "$(grep ^Name: $p/status | cut -f2) $(grep ^CapEff: $p/status | cut -f2)"
	done`
	out, err = inMachine(t, a.PID, caps)
	if err != nil || !strings.Contains(out, "mc-agent") {
		t.Errorf("capabilities of the machine's processes: %q, %v", out, err)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasSuffix(l, " 0000000000000000") {
			t.Errorf("a process of the machine has capabilities: %s", l)
		}
	}
}

// hostDials is a script that connects to port on each of the host's own
// non-loopback IPv4 addresses; it succeeds if any connects (and fails when
// the host has none, which is also what the probe wants).
func hostDials(port int) string {
	var s []string
	for _, r := range prohibitedRanges() {
		if ip, ok := strings.CutSuffix(r, "/32"); ok {
			s = append(s, "timeout 2 bash -c 'exec 3<>/dev/tcp/"+ip+"/"+strconv.Itoa(port)+"'")
		}
	}
	if len(s) == 0 {
		return "false"
	}
	return strings.Join(s, " || ")
}

// inMachine runs script with bash inside the machine whose init is pid, in
// all its namespaces, as the machine's uid without capabilities (as its
// browser runs).
func inMachine(tb testing.TB, pid int, script string) (string, error) {
	tb.Helper()
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(pid), "--user", "--mount", "--pid", "--net", "--uts", "--ipc",
		"--preserve-credentials", "--root", "--wd=/", "timeout", "5", "bash", "-c", script)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), err
}

// machinePids are the processes of process group pgid.
func machinePids(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestUsernsRefused: without root, on a host that gives no user namespaces,
// New refuses in one line with its reason, unless InsecureSharedHost says
// that unconfined machines are acceptable.
func TestUsernsRefused(t *testing.T) {
	if !asUnprivileged(t) {
		return
	}
	defer func(f func() error) { userNSCheck = f }(userNSCheck)
	userNSCheck = func() error { return errors.New("this host allows no unprivileged user namespaces (test)") }
	env := newEnv(t, "")
	env.cfg.InsecureSharedHost = false
	_, err := New(env.cfg, env.store, nil)
	if mc.ErrorReason(err) != mc.ReasonNoUserNamespaces || strings.Contains(err.Error(), "\n") {
		t.Fatalf("New without user namespaces = %v; want one line, reason %s", err, mc.ReasonNoUserNamespaces)
	}
	t.Log(err)
	env.cfg.InsecureSharedHost = true
	d, err := New(env.cfg, env.store, nil)
	if err != nil || d.Mode() != ModeLoopback || d.Confined() {
		t.Fatalf("New with --insecure-shared-host = %v; want unconfined loopback", err)
	}
	env.cfg.Mode = ModeUserns
	if _, err := New(env.cfg, env.store, nil); mc.ErrorReason(err) != mc.ReasonNoUserNamespaces {
		t.Fatalf("New in mode userns without user namespaces = %v; want reason %s", err, mc.ReasonNoUserNamespaces)
	}
}

// TestUsernsEgress: with egress on, a userns machine has slirp4netns's
// interface and a default route, yet the host's loopback (slirp's gateway),
// the host's own addresses and the private ranges stay out of reach; its
// slirp4netns ends with the machine. No packet leaves the host: every
// probe is refused on the way.
func TestUsernsEgress(t *testing.T) {
	if !asUnprivileged(t) {
		return
	}
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		testutil.SkipOrFail(t, "egress needs slirp4netns (Debian package slirp4netns)")
	}
	if err := tunCheck(); err != nil {
		testutil.SkipOrFail(t, "egress: %v", err)
	}
	env := usernsEnv(t)
	env.cfg.Egress = true
	d := env.driver(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	spec := newSpec()
	m, err := d.Create(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	drivertest.WaitHealth(t, m.AgentEndpoint().String(), spec.Secrets.AgentToken, 60*time.Second)
	st := env.state(t, spec.ID)
	if out, err := inMachine(t, st.PID, "ip -4 addr show "+slirpTap+" && ip -4 route show default && cat /etc/resolv.conf"); err != nil ||
		!strings.Contains(out, "10.0.2.100") || !strings.Contains(out, "default via 10.0.2.2") || !strings.Contains(out, slirpDNS) {
		t.Fatalf("egress interface in the machine: %q, %v; want %s with a default route and slirp's DNS", out, err, slirpTap)
	}
	// The routes nowhere are in place before any probe aims at a private
	// address, so that no probe could leave the host.
	if out, err := inMachine(t, st.PID, "ip -4 route show type prohibit"); err != nil ||
		!strings.Contains(out, "192.168.0.0/16") || !strings.Contains(out, "172.16.0.0/12") || !strings.Contains(out, "169.254.0.0/16") {
		t.Fatalf("prohibit routes in the machine: %q, %v", out, err)
	}
	probes := map[string]string{
		"the host's loopback through slirp's gateway": "exec 3<>/dev/tcp/10.0.2.2/" + port,
		"a private range":             "exec 3<>/dev/tcp/192.168.1.1/80",
		"another private range":       "exec 3<>/dev/tcp/172.16.0.1/80",
		"link-local (cloud metadata)": "exec 3<>/dev/tcp/169.254.169.254/80",
		"the host's other addresses":  hostDials(ln.Addr().(*net.TCPAddr).Port),
	}
	for what, script := range probes {
		if out, err := inMachine(t, st.PID, "timeout 3 bash -c '"+script+"'"); err == nil {
			t.Errorf("with egress, %s: connected (%q); want a failure", what, out)
		}
	}
	slirps := func() []int {
		var ps []int
		for _, pid := range machinePids(st.PGID) {
			if b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm")); strings.TrimSpace(string(b)) == "slirp4netns" {
				ps = append(ps, pid)
			}
		}
		return ps
	}
	if len(slirps()) != 1 {
		t.Errorf("slirp4netns processes in the machine's group: %v, want one", slirps())
	}
	if err := d.Destroy(t.Context(), spec.ID); err != nil {
		t.Fatal(err)
	}
	if ps := slirps(); len(ps) != 0 {
		t.Errorf("slirp4netns %v outlives its machine", ps)
	}
}

// TestUsernsSweep: Sweep removes a socket directory whose machine is gone
// and leaves a live machine's.
func TestUsernsSweep(t *testing.T) {
	if !asUnprivileged(t) {
		return
	}
	env := usernsEnv(t)
	d := env.driver(t)
	spec := newSpec()
	destroyLater(t, d, spec.ID)
	m, err := d.Create(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(env.cfg.SocketDir, "0badf00d")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	removed, err := d.Sweep(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, stale) {
		t.Errorf("Sweep removed %v, want %s", removed, stale)
	}
	if _, err := os.Stat(m.SocketDir); err != nil {
		t.Errorf("Sweep removed the live machine's socket dir: %v", err)
	}
}

// cgroupParentEnv names the cgroup parent that the root parent of a test
// delegated to the test's uid.
const cgroupParentEnv = "MC_TEST_DELEGATED_CGROUP"

// delegateCgroups makes, as root, a cgroup parent in each v1 hierarchy
// (memory, pids, cpu) owned by uid, as an administrator delegates one to the
// controller's user, and removes it (with what the test left in it) at the
// end.
func delegateCgroups(t *testing.T) func(uid int, env map[string]string) {
	return func(uid int, env map[string]string) {
		if CgroupVersion() != 1 {
			return // the unified hierarchy: not this host's, not tested here
		}
		n, _ := rand.Int(rand.Reader, big.NewInt(1<<30))
		name := "mc-test-deleg-" + strconv.Itoa(int(n.Int64()))
		for _, c := range []string{"memory", "pids", "cpu"} {
			dir := filepath.Join(CgroupRoot, c, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				subs, _ := os.ReadDir(dir)
				for _, s := range subs {
					if s.IsDir() {
						_ = os.Remove(filepath.Join(dir, s.Name()))
					}
				}
				_ = os.Remove(dir)
			})
			for _, f := range []string{"", "cgroup.procs"} {
				if err := os.Chown(filepath.Join(dir, f), uid, uid); err != nil {
					t.Fatal(err)
				}
			}
		}
		env[cgroupParentEnv] = name
	}
}

// TestUsernsDelegatedCgroup: where root delegated a cgroup parent to the
// controller's user, userns machines get a cgroup of their own below it,
// with the memory and process limits, and Destroy removes it.
func TestUsernsDelegatedCgroup(t *testing.T) {
	if !asUnprivileged(t, delegateCgroups(t)) {
		return
	}
	parent := os.Getenv(cgroupParentEnv)
	if parent == "" {
		testutil.SkipOrFail(t, "no delegated cgroup parent (run as root on a cgroup v1 host)")
	}
	env := usernsEnv(t)
	env.cfg.CgroupParent = parent
	env.cfg.Limits.Memory = 768 << 20
	d := env.driver(t)
	if d.cgroupV != 1 {
		t.Fatalf("cgroup version %d with a delegated v1 parent, want 1", d.cgroupV)
	}
	spec := newSpec()
	m, err := d.Create(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	drivertest.WaitHealth(t, m.AgentEndpoint().String(), spec.Secrets.AgentToken, 60*time.Second)
	st := env.state(t, spec.ID)
	cg := &cgroup{version: st.Cgroup, dirs: st.CgroupDirs}
	if len(cg.dirs) != 3 || !slices.Contains(cg.procs(), st.PID) || len(cg.procs()) < 4 {
		t.Errorf("machine cgroup %v holds %v; want the init %d and the machine's processes", cg.dirs, cg.procs(), st.PID)
	}
	if b, err := os.ReadFile(filepath.Join(cg.dirs[0], "memory.limit_in_bytes")); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(768<<20) {
		t.Errorf("memory limit %q, %v; want %d", b, err, 768<<20)
	}
	if err := d.Destroy(t.Context(), spec.ID); err != nil {
		t.Fatal(err)
	}
	for _, dir := range cg.dirs {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("cgroup %s left after Destroy", dir)
		}
	}
}

// TestUsernsPidsPerMachine: RLIMIT_NPROC bounds each machine on its own
// (the kernel counts it per user namespace), not all machines of the
// controller's uid together: three machines whose tasks add up to more
// than the limit all start, and each machine's init carries the limit.
func TestUsernsPidsPerMachine(t *testing.T) {
	if !asUnprivileged(t) {
		return
	}
	env := usernsEnv(t)
	env.cfg.Limits.Pids = 200
	d := env.driver(t)
	total := 0
	for range 3 {
		spec := newSpec()
		destroyLater(t, d, spec.ID)
		m, err := d.Create(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		drivertest.WaitHealth(t, m.AgentEndpoint().String(), spec.Secrets.AgentToken, 60*time.Second)
		st := env.state(t, spec.ID)
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(st.PID), "limits"))
		if err != nil || !strings.Contains(string(b), "Max processes             200                  200") {
			t.Errorf("limits of machine %s's init: %v\n%s", spec.ID, err, b)
		}
		for _, pid := range machinePids(st.PGID) {
			if ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task")); err == nil {
				total += len(ents)
			}
		}
	}
	if total <= 200 {
		t.Logf("the three machines have %d tasks, not more than the limit: the test shows nothing on this host", total)
	}
}
