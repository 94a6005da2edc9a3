package local

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/agent"
	"github.com/master-controller/mc/driver/drivertest"
	"github.com/master-controller/mc/internal/confine"
	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/netpool"
)

var modes = []string{ModeNetns, ModeLoopback}

func TestConformance(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			env := newEnv(t, mode)
			d := env.driver(t)
			drivertest.Run(t, func(t *testing.T) mc.Driver { return d }, drivertest.Options{
				Kill:      env.kill,
				Leftovers: env.specLeftovers,
			})
		})
	}
}

func TestConfig(t *testing.T) {
	lo, _ := ephemeralPorts()
	tests := []struct {
		name   string
		cfg    Config
		code   mc.Code
		reason mc.Reason
	}{
		{"bad mode", Config{Mode: "vm"}, mc.EINVALID, "bad_mode"},
		{"bad geometry", Config{Mode: ModeLoopback, Geometry: "big"}, mc.EINVALID, "bad_geometry"},
		{"bad port base", Config{Mode: ModeLoopback, PortBase: 80}, mc.EINVALID, "bad_port_base"},
		{"port base in the ephemeral range", Config{Mode: ModeLoopback, PortBase: lo}, mc.EINVALID, "port_base_ephemeral"},
		{"slot 0 reaches the ephemeral range", Config{Mode: ModeLoopback, PortBase: lo - 3}, mc.EINVALID, "port_base_ephemeral"},
		{"tmp dir too long", Config{Mode: ModeLoopback, TmpDir: "/" + strings.Repeat("t", MaxTmpDirLen)}, mc.EINVALID, "tmp_dir_too_long"},
		{"loopback", Config{Mode: ModeLoopback}, "", ""},
		{"long data dir", Config{Mode: ModeLoopback, DataDir: filepath.Join(t.TempDir(), strings.Repeat("d", 200))}, "", ""},
		{"longest tmp dir", Config{Mode: ModeLoopback, TmpDir: longestTmpDir(t)}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.DataDir == "" {
				tt.cfg.DataDir = t.TempDir()
			}
			d, err := New(tt.cfg, &netpoolLeases{}, nil)
			if got := mc.ErrorCode(err); got != tt.code || mc.ErrorReason(err) != tt.reason {
				t.Fatalf("New: %q/%q (%v), want %q/%q", got, mc.ErrorReason(err), err, tt.code, tt.reason)
			}
			if err != nil {
				return
			}
			c := d.Capabilities()
			if tt.cfg.PortBase == 0 && (c.Isolation != ModeLoopback || c.PortLo != 21000 || c.PortHi != 21000+4*c.MaxMachines-1) {
				t.Errorf("Capabilities = %+v, want loopback from port 21000", c)
			}
			if want := min(max(1, int(memTotal()/(500<<20))), (lo-c.PortLo)/4); c.MaxMachines != want {
				t.Errorf("MaxMachines = %d, want min(MemTotal/500MB, slots below port %d) = %d", c.MaxMachines, lo, want)
			}
		})
	}
}

// longestTmpDir returns a new directory path of exactly MaxTmpDirLen bytes
// (New creates it).
func longestTmpDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "mct")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir + "/" + strings.Repeat("t", MaxTmpDirLen-len(dir)-1)
}

// TestPortRange: however many machines are asked for, the loopback ports
// end below the ephemeral port range.
func TestPortRange(t *testing.T) {
	lo, _ := ephemeralPorts()
	tests := []struct {
		base, max int
		want      int
	}{
		{DefaultPortBase, 100000, (lo - DefaultPortBase) / 4},
		{DefaultPortBase, 10, 10},
		{lo - 4, 100000, 1},
		{lo - 9, 100000, 2},
	}
	for _, tt := range tests {
		d, err := New(Config{Mode: ModeLoopback, DataDir: t.TempDir(), PortBase: tt.base, MaxMachines: tt.max}, &netpoolLeases{}, nil)
		if err != nil {
			t.Fatalf("New(base %d): %v", tt.base, err)
		}
		c := d.Capabilities()
		if c.MaxMachines != tt.want || c.PortHi >= lo {
			t.Errorf("base %d, max %d: MaxMachines %d, ports %d-%d; want %d machines, ports below %d",
				tt.base, tt.max, c.MaxMachines, c.PortLo, c.PortHi, tt.want, lo)
		}
	}
}

// TestTmpDirLimit: the driver's limit is the agent's, less the
// per-machine name.
func TestTmpDirLimit(t *testing.T) {
	if got, want := MaxTmpDirLen, agent.MaxTmpDirLen-len("/mc-01234567"); got != want {
		t.Errorf("MaxTmpDirLen = %d, want %d", got, want)
	}
}

// TestSweepTmpDirs: Sweep removes a machine temporary directory whose
// machine directory is gone, and leaves a live machine's, another driver's
// and one without an owner.
func TestSweepTmpDirs(t *testing.T) {
	tmp := t.TempDir()
	d, err := New(Config{Mode: ModeLoopback, DataDir: t.TempDir(), TmpDir: tmp}, &netpoolLeases{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name, owner string) string {
		dir := filepath.Join(tmp, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(dir, tmpOwnerFile), []byte(owner+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	orphan := mk("mc-0000000a", filepath.Join(d.machinesDir(), "0000000a"))
	live := mk("mc-0000000b", filepath.Join(d.machinesDir(), "0000000b"))
	if err := os.Mkdir(filepath.Join(d.machinesDir(), "0000000b"), 0o700); err != nil {
		t.Fatal(err)
	}
	other := mk("mc-0000000c", "/elsewhere/machines/0000000c")
	unowned := mk("mc-0000000d", "")
	removed, err := d.Sweep(t.Context())
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if want := []string{orphan}; !slices.Equal(removed, want) {
		t.Errorf("Sweep removed %v, want %v", removed, want)
	}
	for _, dir := range []string{live, other, unowned} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("Sweep removed %s: %v", filepath.Base(dir), err)
		}
	}
}

func TestCreateInvalid(t *testing.T) {
	d, err := New(Config{Mode: ModeLoopback, DataDir: t.TempDir()}, &netpoolLeases{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	good := newSpec()
	tests := []struct {
		name   string
		change func(*mc.MachineSpec)
	}{
		{"bad id", func(s *mc.MachineSpec) { s.ID = "../etc" }},
		{"no token", func(s *mc.MachineSpec) { s.Secrets.AgentToken = mc.Secret{} }},
		{"no vnc password", func(s *mc.MachineSpec) { s.Secrets.VNCPassword = mc.Secret{} }},
		{"tiny screen", func(s *mc.MachineSpec) { s.Width, s.Height = 10, 10 }},
	}
	for _, tt := range tests {
		spec := good
		tt.change(&spec)
		if _, err := d.Create(t.Context(), spec); mc.ErrorCode(err) != mc.EINVALID {
			t.Errorf("%s: Create = %v, want invalid", tt.name, err)
		}
	}
	if err := d.Destroy(t.Context(), "../etc"); err != nil {
		t.Errorf("Destroy of a bad id = %v, want nil", err)
	}
}

// TestPrivateFiles checks modes of the home and the secret files, that no
// secret is in the agent's argv, environment or state file, and that
// Create refuses a second machine with a running id.
func TestPrivateFiles(t *testing.T) {
	env := newEnv(t, ModeLoopback)
	d := env.driver(t)
	spec := newSpec()
	destroyLater(t, d, spec.ID)
	m, err := d.Create(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	drivertest.WaitHealth(t, m.AgentEndpoint().String(), spec.Secrets.AgentToken, 60*time.Second)
	dir := d.MachineDir(spec.ID)
	st := env.state(t, spec.ID)
	// A confined machine's temporary directory is in its own /tmp, seen
	// here through its first process's root.
	tmpDir, browserTmp := d.MachineTmpDir(spec.ID), d.MachineTmpDir(spec.ID)
	if d.Confined() {
		tmpDir = filepath.Join("/proc", itoa(st.PID), "root", confine.TmpDir)
		browserTmp = filepath.Join("/proc", itoa(st.PID), "root", confine.BrowserTmpDir)
		if _, err := os.Stat(d.MachineTmpDir(spec.ID)); err == nil {
			t.Errorf("confined machine has a temporary directory on the host: %s", d.MachineTmpDir(spec.ID))
		}
	}
	for path, want := range map[string]os.FileMode{
		dir:                                   0o700,
		filepath.Join(dir, "home"):            0o700,
		filepath.Join(dir, "home", tokenFile): 0o600,
		filepath.Join(dir, "home", vncPasswordFile): 0o600,
		filepath.Join(dir, stateFile):               0o600,
		tmpDir:                                      0o700,
		browserTmp:                                  0o700,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("stat %s: %v", path, err)
			continue
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %v, want %v", filepath.Base(path), got, want)
		}
	}
	// DataDir is a t.TempDir(); Chromium's singleton socket is in the
	// machine's short temporary directory.
	if socks, _ := filepath.Glob(filepath.Join(browserTmp, "org.chromium.Chromium.*", "SingletonSocket")); len(socks) != 1 {
		t.Errorf("singleton sockets in %s: %v, want one", browserTmp, socks)
	}
	for _, f := range []string{"cmdline", "environ"} {
		b, err := os.ReadFile(filepath.Join("/proc", itoa(st.PID), f))
		if err != nil {
			t.Fatalf("read agent %s: %v", f, err)
		}
		for _, s := range []mc.Secret{spec.Secrets.AgentToken, spec.Secrets.VNCPassword} {
			if strings.Contains(string(b), s.Reveal()) {
				t.Errorf("agent %s holds a secret", f)
			}
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, stateFile))
	if strings.Contains(string(b), spec.Secrets.AgentToken.Reveal()) || strings.Contains(string(b), spec.Secrets.VNCPassword.Reveal()) {
		t.Errorf("machine.json holds a secret")
	}
	if _, err := d.Create(t.Context(), spec); mc.ErrorCode(err) != mc.ECONFLICT {
		t.Errorf("second Create of a running id = %v, want conflict", err)
	}
}

// TestIsolation: from inside machine A's namespace B's ports are
// unreachable, while the host reaches both.
func TestIsolation(t *testing.T) {
	env := newEnv(t, ModeNetns)
	d := env.driver(t)
	var ms [2]mc.Machine
	var nss [2]string
	for i := range ms {
		spec := newSpec()
		destroyLater(t, d, spec.ID)
		m, err := d.Create(t.Context(), spec)
		if err != nil {
			t.Fatal(err)
		}
		ms[i] = m
		nss[i], _ = netpool.Names(spec.ID)
	}
	for _, m := range ms {
		drivertest.WaitRFB(t, m.VNCEndpoint().String(), 60*time.Second)
	}
	for _, m := range ms {
		for _, a := range []string{m.VNCAddr().String(), m.AgentAddr().String()} {
			c, err := net.DialTimeout("tcp", a, 2*time.Second)
			if err != nil {
				t.Errorf("host dial %s: %v, want success", a, err)
				continue
			}
			c.Close()
		}
	}
	tests := []struct {
		from   int
		to     string
		reach  bool
		reason string
	}{
		{0, ms[1].VNCAddr().String(), false, "A to B's VNC"},
		{0, ms[1].AgentAddr().String(), false, "A to B's agent"},
		{1, ms[0].VNCAddr().String(), false, "B to A's VNC"},
		{0, ms[0].VNCAddr().String(), true, "A to its own VNC"},
	}
	for _, tt := range tests {
		err := netpool.Do(nss[tt.from], func() error {
			c, err := net.DialTimeout("tcp", tt.to, 500*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		if got := err == nil; got != tt.reach {
			t.Errorf("%s (%s): connected %v (%v), want %v", tt.reason, tt.to, got, err, tt.reach)
		}
	}
}

// TestDestroyGone: Destroy of a running machine, and Create cancelled at the
// lease, leave no namespace, process, directory or lease, within 2 s.
func TestDestroyGone(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode+"/destroy", func(t *testing.T) {
			env := newEnv(t, mode)
			d := env.driver(t)
			spec := newSpec()
			destroyLater(t, d, spec.ID)
			m, err := d.Create(t.Context(), spec)
			if err != nil {
				t.Fatal(err)
			}
			drivertest.WaitRFB(t, m.VNCEndpoint().String(), 60*time.Second)
			drivertest.WaitHealth(t, m.AgentEndpoint().String(), spec.Secrets.AgentToken, 60*time.Second)
			st := env.state(t, spec.ID)
			if n := len(procfs.GroupMembers(st.PGID, st.StartTicks)); n < 3 {
				t.Errorf("process group %d has %d processes, want agent, Xvnc and Chromium (≥ 3)", st.PGID, n)
			}
			start := time.Now()
			if err := d.Destroy(t.Context(), spec.ID); err != nil {
				t.Fatal(err)
			}
			t.Logf("Destroy took %v (BenchmarkReady reports destroy-ms-median)", time.Since(start))
			if left := env.leftovers(t, spec.ID); len(left) > 0 {
				t.Errorf("left after Destroy: %v", left)
			}
			if pids := procfs.GroupMembers(st.PGID, st.StartTicks); len(pids) > 0 {
				t.Errorf("process group %d still has %v", st.PGID, pids)
			}
		})
		t.Run(mode+"/cancel", func(t *testing.T) {
			env := newEnv(t, mode)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			// The store cancels the caller's ctx once the slot is leased:
			// Create must notice and undo.
			env.store = &netpoolLeases{afterLease: cancel}
			d := env.driver(t)
			spec := newSpec()
			destroyLater(t, d, spec.ID)
			start := time.Now()
			_, err := d.Create(ctx, spec)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Create with ctx cancelled after the lease = %v, want context.Canceled", err)
			}
			if left := env.leftovers(t, spec.ID); len(left) > 0 {
				t.Errorf("left after cancelled Create (no Destroy): %v", left)
			}
			t.Logf("cancelled Create took %v", time.Since(start))
		})
	}
}

// TestOrphans: a controller process creates machines and is SIGKILLed; a
// fresh driver's List finds them running, Wait sees an adopted machine die,
// and Destroy removes everything (processes, namespaces, directories,
// leases).
func TestOrphans(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			env := newEnv(t, mode)
			env.driver(t) // sets up the bridge before the child uses it

			// The child is this test binary running orphanController.
			cfg, err := json.Marshal(env.cfg)
			if err != nil {
				t.Fatal(err)
			}
			child := exec.Command(os.Args[0])
			child.Env = append(os.Environ(), "MC_ORPHAN_CONTROLLER="+string(cfg))
			child.Stderr = os.Stderr
			out, err := child.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := child.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
			var ids []string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) == 1 && f[0] == "ready" {
					break
				}
				if len(f) == 3 && f[0] == "machine" {
					// The lease store is shared with the dead controller,
					// as a SQLite file or PostgreSQL would be.
					slot, _ := strconv.Atoi(f[2])
					if _, err := env.store.Lease(t.Context(), "local/"+env.cfg.Bridge, f[1], slot, slot); err != nil {
						t.Fatal(err)
					}
					ids = append(ids, f[1])
					// Whatever happens below, the machine goes.
					destroyLater(t, env.driver(t), f[1])
				}
			}
			if len(ids) != 2 {
				t.Fatalf("child controller reported machines %v, want 2 (scan: %v)", ids, sc.Err())
			}
			// SIGKILL the controller: no Destroy, no cleanup.
			if err := child.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = child.Wait()
			t.Cleanup(func() {
				for _, id := range ids {
					if left := env.leftovers(t, id); len(left) > 0 {
						t.Errorf("left of orphan %s: %v", id, left)
					}
				}
			})

			d := env.driver(t)
			for _, id := range ids {
				destroyLater(t, d, id)
			}
			list, err := d.List(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range list {
				if !s.Running {
					t.Errorf("orphan %s: running false (%s), want true", s.ID, s.Detail)
				}
				got = append(got, s.ID)
			}
			sort.Strings(got)
			want := slices.Sorted(slices.Values(ids))
			if !slices.Equal(got, want) {
				t.Fatalf("List = %v, want %v", got, want)
			}
			for _, s := range list {
				drivertest.WaitRFB(t, s.Machine.VNCEndpoint().String(), 10*time.Second)
			}

			// Wait on an adopted machine (not a child of this process) sees
			// it die from outside.
			waited := make(chan error, 1)
			go func() { waited <- d.Wait(t.Context(), ids[0]) }()
			xsock := fmt.Sprintf("/tmp/.X11-unix/X%d", env.cfg.DisplayBase+env.state(t, ids[0]).Slot)
			env.kill(t, ids[0])
			killed := time.Now()
			select {
			case err := <-waited:
				if err != nil {
					t.Errorf("Wait on killed orphan = %v, want nil", err)
				}
				t.Logf("Wait on adopted machine returned %v after the kill", time.Since(killed))
			case <-time.After(2 * time.Second):
				t.Errorf("Wait on killed orphan has not returned after 2 s")
			}
			var wg sync.WaitGroup
			for _, id := range ids {
				wg.Go(func() {
					if err := d.Destroy(t.Context(), id); err != nil {
						t.Errorf("Destroy(%s): %v", id, err)
					}
				})
			}
			wg.Wait()
			for _, id := range ids {
				if left := env.leftovers(t, id); len(left) > 0 {
					t.Errorf("after Destroy of orphan %s: %v", id, left)
				}
			}
			if list, _ := d.List(t.Context()); len(list) != 0 {
				t.Errorf("List after Destroy = %+v, want empty", list)
			}
			// Its Xvnc was SIGKILLed and could not remove its socket.
			if _, err := os.Lstat(xsock); !os.IsNotExist(err) {
				t.Errorf("X socket %s of the killed machine: %v, want removed", xsock, err)
			}
		})
	}
}

// orphanController is the controller process of TestOrphans (TestMain runs
// it when MC_ORPHAN_CONTROLLER holds a Config). It creates two machines,
// reports their ids and slots on stdout, and waits to be killed.
func orphanController(raw string) error {
	var cfg Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return err
	}
	d, err := New(cfg, &netpoolLeases{}, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	for range 2 {
		spec := newSpec()
		m, err := d.Create(context.Background(), spec)
		if err != nil {
			return err
		}
		if err := drivertest.DialRFB(context.Background(), m.VNCAddr().String(), 60*time.Second); err != nil {
			return err
		}
		st, err := d.readState(spec.ID)
		if err != nil || st == nil {
			return fmt.Errorf("read state: %v", err)
		}
		fmt.Printf("machine %s %d\n", spec.ID, st.Slot)
	}
	fmt.Println("ready")
	select {} // until SIGKILL
}

// BenchmarkReady measures Create → RFB banner and Create → agent /health,
// the PSS of one machine's process group, and Destroy. Run with
// go test -run '^$' -bench Ready -benchtime 10x ./driver/local/
// BenchmarkReady measures Create to RFB banner and to agent health, Destroy,
// and the PSS of a machine. As root it runs netns and loopback (both
// confined); as another user, userns (confined without root) beside
// loopback (unconfined, InsecureSharedHost): the cost of each confinement
// side by side with the same machine without it.
func BenchmarkReady(b *testing.B) {
	ms := modes
	if os.Geteuid() != 0 {
		ms = []string{ModeUserns, ModeLoopback}
	}
	for _, mode := range ms {
		b.Run(mode, func(b *testing.B) {
			env := newEnv(b, mode)
			if mode == ModeUserns {
				env.cfg.InsecureSharedHost = false
				env.cfg.SocketDir = filepath.Join(b.TempDir(), "s")
			}
			d := env.driver(b)
			var rfb, health, destroy []time.Duration
			// From the machine's log: init building the confined root,
			// the agent's start to Xvnc ready and to Chromium answering.
			var confineMS, xvncMS, chromiumMS, agentMS []float64
			var pssTotal int64
			var nProcs int
			for b.Loop() {
				spec := newSpec()
				destroyLater(b, d, spec.ID)
				start := time.Now()
				m, err := d.Create(b.Context(), spec)
				if err != nil {
					b.Fatal(err)
				}
				if err := drivertest.DialRFB(b.Context(), m.VNCEndpoint().String(), 60*time.Second); err != nil {
					b.Fatal(err)
				}
				rfb = append(rfb, time.Since(start))
				if err := drivertest.PollHealth(b.Context(), m.AgentEndpoint().String(), spec.Secrets.AgentToken, 60*time.Second); err != nil {
					b.Fatal(err)
				}
				health = append(health, time.Since(start))
				b.StopTimer()
				st := env.state(b, spec.ID)
				if log, err := os.ReadFile(filepath.Join(d.MachineDir(spec.ID), agentLogFile)); err == nil {
					for _, x := range []struct {
						to       *[]float64
						msg, key string
					}{{&confineMS, "machine confined", "took_ms"}, {&xvncMS, "machine agent ready", "xvnc_ms"}, {&chromiumMS, "machine agent ready", "chromium_ms"}, {&agentMS, "machine agent ready", "ready_ms"}} {
						if v, ok := testutil.LogNumber(log, x.msg, x.key); ok {
							*x.to = append(*x.to, v)
						}
					}
				}
				p, n := procfs.PSS(procfs.GroupMembers(st.PGID, 0))
				pssTotal += p
				nProcs = n
				destroyStart := time.Now()
				if err := d.Destroy(b.Context(), spec.ID); err != nil {
					b.Fatal(err)
				}
				destroy = append(destroy, time.Since(destroyStart))
				b.StartTimer()
			}
			b.ReportMetric(float64(testutil.Median(rfb).Milliseconds()), "rfb-ms-median")
			b.ReportMetric(float64(testutil.Median(health).Milliseconds()), "health-ms-median")
			b.ReportMetric(float64(testutil.Median(destroy).Milliseconds()), "destroy-ms-median")
			b.ReportMetric(float64(pssTotal)/float64(len(rfb))/(1<<20), "pss-MB")
			b.ReportMetric(float64(nProcs), "procs")
			for name, xs := range map[string][]float64{"confine-ms-median": confineMS, "xvnc-ms-median": xvncMS, "chromium-ms-median": chromiumMS, "agent-ready-ms-median": agentMS} {
				if len(xs) > 0 {
					slices.Sort(xs)
					b.ReportMetric(xs[len(xs)/2], name)
				}
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestSweep removes a namespace and veth on the driver's bridge that no
// machine directory names, with a process inside, and leaves a live
// machine alone.
func TestSweep(t *testing.T) {
	env := newEnv(t, ModeNetns)
	d := env.driver(t)
	spec := newSpec()
	destroyLater(t, d, spec.ID)
	m, err := d.Create(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	lost := mc.NewID()
	t.Cleanup(func() { _ = netpool.Detach(context.Background(), lost) })
	if _, err := d.pool.Attach(t.Context(), lost, 5); err != nil {
		t.Fatal(err)
	}
	ns, veth := netpool.Names(lost)
	sleeper := exec.Command("ip", "netns", "exec", ns, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = sleeper.Wait(); close(exited) }()
	t.Cleanup(func() { _ = sleeper.Process.Kill(); <-exited })
	inside := func() bool { pids, _ := netpool.Pids(ns); return slices.Contains(pids, sleeper.Process.Pid) }
	if !waitFor(t.Context(), 5*time.Second, inside) {
		t.Fatalf("sleep did not enter namespace %s", ns)
	}

	removed, err := d.Sweep(t.Context())
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if want := []string{veth, ns}; !slices.Equal(removed, want) {
		t.Errorf("Sweep removed %v, want %v", removed, want)
	}
	if hasNS, hasVeth := netpool.Exists(lost); hasNS || hasVeth {
		t.Errorf("after Sweep: namespace %v, veth %v; want neither", hasNS, hasVeth)
	}
	select {
	case <-exited:
	case <-time.After(2 * time.Second):
		t.Errorf("process in the swept namespace still runs")
	}
	if st, err := d.Inspect(t.Context(), spec.ID); err != nil || st.Machine != m {
		t.Errorf("live machine after Sweep: %+v, %v", st, err)
	}
	if hasNS, hasVeth := netpool.Exists(spec.ID); !hasNS || !hasVeth {
		t.Errorf("live machine's network after Sweep: namespace %v, veth %v; want both", hasNS, hasVeth)
	}
}

// TestCheckMissing names what is missing and its package, in one line.
func TestCheckMissing(t *testing.T) {
	d, err := New(Config{Mode: ModeLoopback, DataDir: t.TempDir(), AgentPath: "/nonexistent/mc-agent",
		XvncPath: "/nonexistent/Xvnc", ChromiumPath: "/nonexistent/chromium"}, &netpoolLeases{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = d.Check(t.Context())
	if err == nil {
		t.Fatal("Check with missing binaries = nil, want an error")
	}
	msg := err.Error()
	for _, want := range []string{"mc-agent", "tigervnc-standalone-server", "Debian package chromium"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Check = %q, want it to name %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("Check = %q, want one line", msg)
	}
}

// TestCapacity: beyond MaxMachines, Create is unavailable (pool exhausted)
// and leaves nothing; after a Destroy the slot is free again.
func TestCapacity(t *testing.T) {
	env := newEnv(t, ModeLoopback)
	env.cfg.MaxMachines = 1
	d := env.driver(t)
	if got := d.Capabilities().MaxMachines; got != 1 {
		t.Fatalf("MaxMachines = %d, want 1", got)
	}
	first, second := newSpec(), newSpec()
	destroyLater(t, d, first.ID)
	destroyLater(t, d, second.ID)
	if _, err := d.Create(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	_, err := d.Create(t.Context(), second)
	if got := mc.ErrorCode(err); got != mc.EUNAVAILABLE || mc.ErrorReason(err) != "pool_exhausted" {
		t.Fatalf("Create beyond capacity = %v, want unavailable (pool_exhausted)", err)
	}
	if left := env.leftovers(t, second.ID); len(left) > 0 {
		t.Errorf("refused Create left %v", left)
	}
	if err := d.Destroy(t.Context(), first.ID); err != nil {
		t.Fatal(err)
	}
	m, err := d.Create(t.Context(), second)
	if err != nil {
		t.Fatalf("Create after Destroy freed the slot: %v", err)
	}
	if m.VNCPort != env.cfg.PortBase {
		t.Errorf("VNC port = %d, want slot 0's %d", m.VNCPort, env.cfg.PortBase)
	}
}

// TestBridgeInUse: a netns driver uses its bridge for as long as it runs,
// so "master-controller network down" refuses to remove it from under it.
func TestBridgeInUse(t *testing.T) {
	env := newEnv(t, ModeNetns)
	_ = env.driver(t)
	p, err := netpool.New(netpool.Config{Bridge: env.cfg.Bridge, Network: env.cfg.Network}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Down(t.Context()); mc.ErrorReason(err) != mc.ReasonBridgeInUse {
		t.Fatalf("Down under a running driver: %v; want bridge_in_use", err)
	}
	if _, err := os.Stat("/sys/class/net/" + env.cfg.Bridge); err != nil {
		t.Errorf("the bridge is gone: %v", err)
	}
}
