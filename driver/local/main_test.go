package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/netpool"
	"github.com/master-controller/mc/netpool/netpooltest"
)

// agentPath is the mc-agent built for this test run ("" when the build
// failed; agentErr says why).
var agentPath, agentErr = "", error(nil)

func TestMain(m *testing.M) {
	if raw := os.Getenv("MC_ORPHAN_CONTROLLER"); raw != "" {
		err := orphanController(raw)
		fmt.Fprintln(os.Stderr, "orphan controller:", err)
		os.Exit(1)
	}
	if p := os.Getenv("MC_AGENT"); p != "" {
		agentPath = p
	} else {
		agentPath, agentErr = testutil.Build("github.com/master-controller/mc/cmd/mc-agent")
	}
	code := m.Run()
	testutil.RemoveBuilt()
	os.Exit(code)
}

// requireMachines skips (one line) unless the agent, Xvnc and Chromium are
// at hand; under CI=true it fails instead.
func requireMachines(tb testing.TB) {
	tb.Helper()
	var missing []string
	if agentErr != nil {
		missing = append(missing, agentErr.Error())
	}
	for _, b := range []string{"Xvnc", "chromium"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return
	}
	testutil.SkipOrFail(tb, "machines need: %s", strings.Join(missing, "; "))
}

// testEnv is one driver configuration with its lease store.
type testEnv struct {
	cfg   Config
	store *netpoolLeases
}

// netpoolLeases is the in-memory lease store with a hook after each lease.
type netpoolLeases struct {
	mem        netpooltest.Leases
	afterLease func()
}

var _ mc.LeaseStore = (*netpoolLeases)(nil)

func (s *netpoolLeases) Lease(ctx context.Context, pool, owner string, lo, hi int) (int, error) {
	v, err := s.mem.Lease(ctx, pool, owner, lo, hi)
	if s.afterLease != nil {
		s.afterLease()
	}
	return v, err
}

func (s *netpoolLeases) Release(ctx context.Context, pool, owner string) error {
	return s.mem.Release(ctx, pool, owner)
}

func (s *netpoolLeases) Leases(ctx context.Context, pool string) ([]mc.Lease, error) {
	return s.mem.Leases(ctx, pool)
}

func (s *netpoolLeases) ReclaimLeases(ctx context.Context, keep []string) ([]mc.Lease, error) {
	return s.mem.ReclaimLeases(ctx, keep)
}

// newEnv returns a configuration for mode with a private data dir (a long
// path below t.TempDir()), a unique
// bridge and network, and random display and port bases, so that tests and
// other packages' machines never collide.
func newEnv(tb testing.TB, mode string) *testEnv {
	tb.Helper()
	requireMachines(tb)
	if mode == ModeNetns {
		netpooltest.Root(tb)
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(400))
	p, _ := rand.Int(rand.Reader, big.NewInt(590)) // below the ephemeral range (32768-)
	nc := netpooltest.Config(tb)
	tb.Cleanup(func() {
		// The test's cgroup parents, empty once its machines are gone.
		for _, d := range []string{"memory", "pids", "cpu", ""} {
			_ = os.Remove(filepath.Join(CgroupRoot, d, "mc-test-"+nc.Bridge))
		}
	})
	return &testEnv{
		cfg: Config{
			// Far longer than a Unix socket path may be: no socket is
			// below DataDir.
			DataDir:     filepath.Join(tb.TempDir(), strings.Repeat("d", 80), "data"),
			AgentPath:   agentPath,
			Mode:        mode,
			Bridge:      nc.Bridge,
			Network:     nc.Network,
			DisplayBase: 1000 + 20*int(n.Int64()),
			PortBase:    20000 + 20*int(p.Int64()),
			MaxMachines: 8,
			// A uid range of the test's own: tests in parallel packages
			// lease from stores of their own.
			UIDBase:            2000000 + 1000*int(n.Int64()),
			CgroupParent:       "mc-test-" + nc.Bridge,
			InsecureSharedHost: os.Geteuid() != 0,
		},
		store: &netpoolLeases{},
	}
}

// driver returns a fresh Driver over the environment's host state.
func (e *testEnv) driver(tb testing.TB) *Driver {
	tb.Helper()
	w := &testWriter{tb: tb}
	tb.Cleanup(func() { w.mu.Lock(); w.closed = true; w.mu.Unlock() })
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := New(e.cfg, e.store, log)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	if d.Mode() != e.cfg.Mode {
		tb.Fatalf("Mode = %q, want %q", d.Mode(), e.cfg.Mode)
	}
	return d
}

// kill SIGKILLs machine id's process group from outside, as a crash would.
func (e *testEnv) kill(tb testing.TB, id string) {
	tb.Helper()
	st := e.state(tb, id)
	if err := syscall.Kill(-st.PGID, syscall.SIGKILL); err != nil {
		tb.Fatalf("kill group %d: %v", st.PGID, err)
	}
}

func (e *testEnv) state(tb testing.TB, id string) *state {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(e.cfg.DataDir, "machines", netpool.Hash(id), stateFile))
	if err != nil {
		tb.Fatalf("read state of %s: %v", id, err)
	}
	d := &Driver{cfg: e.cfg}
	st, err := d.readState(id)
	if err != nil || st == nil || len(b) == 0 {
		tb.Fatalf("read state of %s: %v", id, err)
	}
	return st
}

// specLeftovers is leftovers for the conformance suite, whose machines have
// ids of their own: their lease belongs to their session.
func (e *testEnv) specLeftovers(tb testing.TB, spec mc.MachineSpec) []string {
	return append(e.leftovers(tb, spec.ID), e.leasesOf(spec.SessionID)...)
}

// leasesOf lists the leases owner holds.
func (e *testEnv) leasesOf(owner string) []string {
	var left []string
	leases, _ := e.store.Leases(context.Background(), "")
	for _, l := range leases {
		if l.Owner == owner {
			left = append(left, fmt.Sprintf("lease %s/%d", l.Pool, l.Value))
		}
	}
	return left
}

// leftovers lists what the host still has of machine id: its directory,
// temporary directory, namespace, veth, lease, and any process whose command
// line names either directory or whose HOME is its home.
func (e *testEnv) leftovers(tb testing.TB, id string) []string {
	tb.Helper()
	var left []string
	dir := filepath.Join(e.cfg.DataDir, "machines", netpool.Hash(id))
	if _, err := os.Stat(dir); err == nil {
		left = append(left, "directory "+dir)
	}
	tmp := filepath.Join(e.cfg.TmpDir, machineTmpPrefix+netpool.Hash(id))
	if e.cfg.TmpDir == "" {
		tmp = filepath.Join("/tmp", machineTmpPrefix+netpool.Hash(id))
	}
	if _, err := os.Lstat(tmp); err == nil {
		left = append(left, "tmp dir "+tmp)
	}
	hasNS, hasVeth := netpool.Exists(id)
	ns, veth := netpool.Names(id)
	if hasNS {
		left = append(left, "namespace "+ns)
	}
	if hasVeth {
		left = append(left, "veth "+veth)
	}
	left = append(left, e.leasesOf(id)...)
	pids := append(pidsMentioning(dir), pidsMentioning(tmp)...)
	pids = append(pids, procfs.HomePids(filepath.Join(dir, "home"))...)
	slices.Sort(pids)
	for _, pid := range slices.Compact(pids) {
		left = append(left, "process "+strconv.Itoa(pid))
	}
	return left
}

// pidsMentioning lists live processes whose command line contains s.
func pidsMentioning(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(s)) && procfs.Alive(pid, 0) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// spec returns a spec with fresh secrets.
func newSpec() mc.MachineSpec {
	id := mc.NewID()
	return mc.MachineSpec{ID: id, SessionID: id, Provider: "demo", Secrets: mc.NewMachineSecrets(), Width: 1024, Height: 768}
}

// testWriter sends log output to t.Log until the test ends (agent exits
// are logged from goroutines that may outlive it).
type testWriter struct {
	tb     testing.TB
	mu     sync.Mutex
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// destroyLater registers Destroy of id at the end of the test.
func destroyLater(tb testing.TB, d *Driver, id string) {
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Destroy(ctx, id); err != nil {
			tb.Errorf("cleanup Destroy(%s): %v", id, err)
		}
	})
}
