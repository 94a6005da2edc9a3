package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/driver/drivertest"
	"github.com/master-controller/mc/driver/kubernetes"
	"github.com/master-controller/mc/driver/kubernetes/k8stest"
	"github.com/master-controller/mc/internal/confine"
	"github.com/master-controller/mc/internal/testutil"
)

// cluster is the test cluster (see package k8stest).
type cluster struct{ *k8stest.Cluster }

func testCluster(tb testing.TB) cluster { return cluster{k8stest.Get(tb)} }

// config is a driver configuration for namespace ns of c.
func (c cluster) config(ns string) kubernetes.Config {
	return kubernetes.Config{
		Kubeconfig: c.Kubeconfig, Namespace: ns, Image: c.Image, ImagePullPolicy: corev1.PullNever,
		SeccompProfile: k8stest.SeccompProfile, Replica: "test", Network: c.PodNetwork,
		MaxMachines: 10, UnschedulableWait: 2 * time.Second, DestroyGrace: 2 * time.Second,
		CPURequest: "10m", MemoryRequest: "64Mi",
		Controller: kubernetes.Peers{Labels: "-", CIDRs: []netip.Prefix{c.HostNetwork}},
	}
}

func (c cluster) driver(t testing.TB, cfg kubernetes.Config) *kubernetes.Driver {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := kubernetes.New(t.Context(), cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestConformance(t *testing.T) {
	c := testCluster(t)
	ns := c.Namespace(t)
	d := c.driver(t, c.config(ns))
	drivertest.Run(t, func(*testing.T) mc.Driver { return d }, drivertest.Options{
		Kill: func(t testing.TB, id string) { c.kill(t, ns, id) },
		Leftovers: func(t testing.TB, spec mc.MachineSpec) []string {
			return c.leftovers(t, ns, spec.ID)
		},
	})
}

// kill SIGKILLs every process of machine id's container from the host (the
// node runs here), as a crash would, without telling the driver or the API.
func (c cluster) kill(t testing.TB, ns, id string) {
	t.Helper()
	p, err := c.Client.CoreV1().Pods(ns).Get(context.Background(), kubernetes.PodName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("kill: get pod: %v", err)
	}
	pids := containerPIDs(t, p)
	if len(pids) == 0 {
		t.Fatalf("kill: no process of pod %s found on this host", p.Name)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Logf("kill %d: %v", pid, err)
		}
	}
	t.Logf("killed %d processes of pod %s: %v", len(pids), p.Name, pids)
}

// containerPIDs are the processes of p's machine container, from its cgroup
// (any v1 hierarchy names the container's id).
func containerPIDs(t testing.TB, p *corev1.Pod) []int {
	t.Helper()
	var cid string
	for _, cs := range p.Status.ContainerStatuses {
		_, cid, _ = strings.Cut(cs.ContainerID, "://")
	}
	if cid == "" {
		t.Fatalf("pod %s has no container id yet", p.Name)
	}
	var pids []int
	_ = filepath.WalkDir("/sys/fs/cgroup/pids", func(path string, e os.DirEntry, err error) error {
		if err != nil || !e.IsDir() || !strings.Contains(e.Name(), cid) {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return filepath.SkipDir
	})
	return pids
}

// leftovers lists what the API server still has of machine id.
func (c cluster) leftovers(t testing.TB, ns, id string) []string {
	var left []string
	ctx := context.Background()
	name := kubernetes.PodName(id)
	if _, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		left = append(left, fmt.Sprintf("pod %s (%v)", name, err))
	}
	if _, err := c.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		left = append(left, fmt.Sprintf("secret %s (%v)", name, err))
	}
	return left
}

func spec() mc.MachineSpec {
	return mc.MachineSpec{ID: mc.NewMachineID(), SessionID: mc.NewID(), Provider: "demo", Secrets: mc.NewMachineSecrets(), Width: 1024, Height: 768}
}

// create makes a machine and registers its destruction.
func create(t *testing.T, d mc.Driver, s mc.MachineSpec) mc.Machine {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Destroy(ctx, s.ID); err != nil {
			t.Errorf("cleanup: Destroy: %v", err)
		}
	})
	m, err := d.Create(t.Context(), s)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return m
}

// TestEvicted: a machine's Pod deleted by someone else (kubectl delete pod,
// with its default grace period) ends the machine machine_evicted at once.
func TestEvicted(t *testing.T) {
	c := testCluster(t)
	ns := c.Namespace(t)
	d := c.driver(t, c.config(ns))
	s := spec()
	m := create(t, d, s)
	drivertest.WaitRFB(t, m.VNCAddr().String(), 60*time.Second)
	waited := make(chan error, 1)
	go func() { waited <- d.Wait(t.Context(), s.ID) }()
	if err := c.Client.CoreV1().Pods(ns).Delete(t.Context(), kubernetes.PodName(s.ID), metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete pod: %v", err)
	}
	deleted := time.Now()
	select {
	case err := <-waited:
		if mc.ErrorCode(err) != mc.EUNAVAILABLE || mc.ErrorReason(err) != mc.ReasonMachineEvicted {
			t.Errorf("Wait after the pod's deletion = %v, want unavailable machine_evicted", err)
		}
		t.Logf("Wait returned %v after the deletion", time.Since(deleted))
	case <-time.After(2 * time.Second):
		t.Fatal("Wait has not returned 2 s after the pod's deletion")
	}
}

// TestUnschedulable: a Pod whose requests no node can meet fails Create
// "unschedulable" once the configured wait has passed, and is removed.
func TestUnschedulable(t *testing.T) {
	c := testCluster(t)
	ns := c.Namespace(t)
	cfg := c.config(ns)
	cfg.CPURequest, cfg.CPULimit = "1000", "1000" // more CPUs than the node has
	d := c.driver(t, cfg)
	s := spec()
	t0 := time.Now()
	_, err := d.Create(t.Context(), s)
	took := time.Since(t0)
	if mc.ErrorCode(err) != mc.EUNAVAILABLE || mc.ErrorReason(err) != mc.ReasonUnschedulable {
		t.Fatalf("Create of an unschedulable machine = %v, want unavailable unschedulable", err)
	}
	if took < cfg.UnschedulableWait {
		t.Errorf("Create failed after %v, before the configured wait of %v", took, cfg.UnschedulableWait)
	}
	t.Logf("Create failed after %v: %v", took, err)
	if left := c.leftovers(t, ns, s.ID); len(left) > 0 {
		t.Errorf("after the failed Create the cluster still has: %s", strings.Join(left, "; "))
	}
}

// TestImageMissing: a machine whose image the node does not have (and may
// not pull) ends image_pull_failed: Create fails (and removes it) when the
// kubelet says so before the Pod has an address, else Wait returns it.
func TestImageMissing(t *testing.T) {
	failsToStart(t, "a missing image", mc.ReasonImagePullFailed, func(cfg *kubernetes.Config) {
		cfg.Image = "docker.io/library/mc-machine:no-such-tag"
	})
}

// TestSeccompProfileMissing: a node without the configured seccomp profile
// cannot create the machine's container: the machine ends start_failed at
// once (the kubelet would retry for ever).
func TestSeccompProfileMissing(t *testing.T) {
	failsToStart(t, "its seccomp profile missing", mc.ReasonStartFailed, func(cfg *kubernetes.Config) {
		cfg.SeccompProfile = "no-such-profile.json"
	})
}

// failsToStart checks that a machine under a configuration that broke
// (what) ends unavailable with reason, from Create or else from Wait, and
// leaves nothing in the cluster.
func failsToStart(t *testing.T, what string, reason mc.Reason, broke func(*kubernetes.Config)) {
	t.Helper()
	c := testCluster(t)
	ns := c.Namespace(t)
	cfg := c.config(ns)
	broke(&cfg)
	d := c.driver(t, cfg)
	s := spec()
	_, err := d.Create(t.Context(), s)
	if err == nil {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		err = d.Wait(ctx, s.ID)
		cancel()
		if derr := d.Destroy(t.Context(), s.ID); derr != nil {
			t.Fatal(derr)
		}
	}
	if mc.ErrorCode(err) != mc.EUNAVAILABLE || mc.ErrorReason(err) != reason {
		t.Fatalf("machine with %s: %v, want unavailable %s", what, err, reason)
	}
	if left := c.leftovers(t, ns, s.ID); len(left) > 0 {
		t.Errorf("after the failed Create the cluster still has: %s", strings.Join(left, "; "))
	}
	t.Logf("%v", err)
}

// TestOOM: a machine whose memory limit Chromium cannot live in ends
// machine_oom.
func TestOOM(t *testing.T) {
	c := testCluster(t)
	ns := c.Namespace(t)
	cfg := c.config(ns)
	cfg.MemoryRequest, cfg.MemoryLimit = "64Mi", "100Mi"
	d := c.driver(t, cfg)
	s := spec()
	create(t, d, s)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	err := d.Wait(ctx, s.ID)
	if mc.ErrorCode(err) != mc.EUNAVAILABLE || mc.ErrorReason(err) != mc.ReasonMachineOOM {
		t.Fatalf("Wait on a machine without the memory it needs = %v, want unavailable machine_oom", err)
	}
}

// TestCap: past MaxMachines (counted over every replica's Pods), Create
// refuses with EUNAVAILABLE no_capacity, and a freed slot is usable again.
func TestCap(t *testing.T) {
	c := testCluster(t)
	ns := c.Namespace(t)
	cfg := c.config(ns)
	cfg.MaxMachines = 2
	d := c.driver(t, cfg)
	// Another replica's driver on the same namespace holds one machine.
	other := cfg
	other.Replica = "other"
	o := c.driver(t, other)
	s0 := spec()
	create(t, o, s0)
	s1 := spec()
	create(t, d, s1)
	_, err := d.Create(t.Context(), spec())
	if mc.ErrorCode(err) != mc.EUNAVAILABLE || mc.ErrorReason(err) != mc.ReasonNoCapacity {
		t.Fatalf("Create past the cap = %v, want unavailable no_capacity", err)
	}
	if err := o.Destroy(t.Context(), s0.ID); err != nil {
		t.Fatal(err)
	}
	// This replica's watch sees the other's machine go: the slot is free.
	testutil.WaitFor(t, 10*time.Second, "a free slot", func() error {
		if _, err := d.Inspect(t.Context(), s0.ID); mc.ErrorCode(err) != mc.ENOTFOUND {
			return errors.New("the other replica's pod is still listed")
		}
		return nil
	})
	create(t, d, spec())
}

// TestPodSecurity: the Pod runs as the image's user with the profile and
// settings the driver promises, its Chromium has the machine's policy and
// reports the namespace and seccomp layers of its sandbox, and its Secret
// goes with it.
func TestPodSecurity(t *testing.T) {
	c := testCluster(t)
	ns := c.Namespace(t)
	d := c.driver(t, c.config(ns))
	s := spec()
	m := create(t, d, s)
	drivertest.WaitHealth(t, m.AgentAddr().String(), s.Secrets.AgentToken, 60*time.Second)
	p, err := c.Client.CoreV1().Pods(ns).Get(t.Context(), kubernetes.PodName(s.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The image has the machine's managed policy (read through a process
	// of the container), which lets exactly one chrome:// page through,
	// chrome://sandbox, where the browser reports its own sandbox.
	want, err := confine.ChromiumPolicy()
	if err != nil {
		t.Fatal(err)
	}
	if pids := containerPIDs(t, p); len(pids) == 0 {
		t.Error("no process of the container found")
	} else if got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", pids[0], confine.ChromiumPolicyFile)); err != nil || !bytes.Equal(got, want) {
		t.Errorf("the container's %s: %v, %d bytes, want the machine's policy (%d bytes)", confine.ChromiumPolicyFile, err, len(got), len(want))
	}
	sctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	sb, err := agentproto.NewClient(m.AgentEndpoint(), s.Secrets.AgentToken, nil).Sandbox(sctx)
	cancel()
	if err != nil {
		t.Fatalf("chrome://sandbox in the pod (is the machine's policy in the image?): %v", err)
	}
	if missing := sb.Missing(); len(missing) > 0 {
		t.Errorf("the pod's Chromium lacks %v of its sandbox (layers %+v)", missing, sb.Layers)
	} else {
		t.Logf("chrome://sandbox in the pod: %+v", sb.Layers)
	}
	// Chromium keeps its own sandbox: its zygote and renderers run in
	// user namespaces of their own, below the container's.
	testutil.WaitFor(t, 30*time.Second, "a Chromium process in a user namespace of its own", func() error {
		pids := containerPIDs(t, p)
		userns := map[string][]string{}
		for _, pid := range pids {
			ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid))
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err == nil {
				// Chromium rewrites its command line: keep the type.
				name, args, _ := strings.Cut(strings.ReplaceAll(string(cmd), "\x00", " "), " ")
				if _, typ, ok := strings.Cut(args, "--type="); ok {
					name, _, _ = strings.Cut(typ, " ")
				}
				userns[ns] = append(userns[ns], filepath.Base(name))
			}
		}
		if len(userns) < 2 {
			return fmt.Errorf("%d processes in user namespaces %v", len(pids), userns)
		}
		t.Logf("the machine's processes by user namespace: %v", userns)
		return nil
	})
	sc := p.Spec.Containers[0].SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil ||
		!*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("container security context = %+v", sc)
	}
	if p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token")
	}
	sec, err := c.Client.CoreV1().Secrets(ns).Get(t.Context(), p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the secret owned by the pod", func() error {
		sec, err = c.Client.CoreV1().Secrets(ns).Get(t.Context(), p.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != p.UID {
			return fmt.Errorf("owners %+v", sec.OwnerReferences)
		}
		return nil
	})
	if string(sec.Data["agent-token"]) != s.Secrets.AgentToken.Reveal() {
		t.Error("the secret does not hold the agent token")
	}
	pol, err := c.Client.NetworkingV1().NetworkPolicies(ns).Get(t.Context(), kubernetes.PolicyName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("network policy: %v", err)
	}
	if len(pol.Spec.Ingress) != 1 || len(pol.Spec.Ingress[0].Ports) != 2 || pol.Spec.Ingress[0].From[0].IPBlock == nil {
		t.Errorf("network policy ingress = %+v, want the controller's block to two ports", pol.Spec.Ingress)
	}
}

// BenchmarkStart measures a machine's start on the real cluster, from
// Create to an RFB banner and a healthy agent (what a session's POST waits
// for), one machine after another, all kept until the end; then the memory
// each machine's Pod holds (its cgroup). Run it with -benchtime=10x.
func BenchmarkStart(b *testing.B) {
	c := testCluster(b)
	ns := c.Namespace(b)
	cfg := c.config(ns)
	cfg.MaxMachines = 100
	d, err := kubernetes.New(b.Context(), cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	var took, created []time.Duration
	var pods []string
	for b.Loop() {
		s := spec()
		b.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = d.Destroy(ctx, s.ID)
		})
		t0 := time.Now()
		m, err := d.Create(b.Context(), s)
		if err != nil {
			b.Fatal(err)
		}
		created = append(created, time.Since(t0))
		drivertest.WaitRFB(b, m.VNCAddr().String(), 60*time.Second)
		drivertest.WaitHealth(b, m.AgentAddr().String(), s.Secrets.AgentToken, 60*time.Second)
		took = append(took, time.Since(t0))
		pods = append(pods, kubernetes.PodName(s.ID))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(testutil.Median(took).Milliseconds()), "ms-median-ready")
	b.ReportMetric(float64(took[len(took)*9/10].Milliseconds()), "ms-p90-ready")
	b.ReportMetric(float64(testutil.Median(created).Milliseconds()), "ms-median-create")
	b.Logf("Create → RFB banner + agent health: %v (Create alone, to the pod's IP: %v)", took, created)
	var mem []int64
	for _, name := range pods {
		p, err := c.Client.CoreV1().Pods(ns).Get(b.Context(), name, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if n := podMemory(p); n > 0 {
			mem = append(mem, n)
		}
	}
	if len(mem) > 0 {
		slices.Sort(mem)
		b.ReportMetric(float64(mem[len(mem)/2])/(1<<20), "MiB-median-pod")
		b.Logf("working set per pod (MiB): %v", func() (out []int64) {
			for _, m := range mem {
				out = append(out, m>>20)
			}
			return
		}())
	}
}

// podMemory is Pod p's working set from its memory cgroup (v1): usage less
// inactive file pages, as the kubelet counts it; 0 if not found here.
func podMemory(p *corev1.Pod) int64 {
	var n int64
	_ = filepath.WalkDir("/sys/fs/cgroup/memory", func(path string, e os.DirEntry, err error) error {
		if err != nil || !e.IsDir() || n > 0 {
			return nil
		}
		if !strings.HasSuffix(e.Name(), string(p.UID)) && !strings.HasSuffix(e.Name(), strings.ReplaceAll(string(p.UID), "-", "_")) {
			return nil
		}
		usage, err1 := os.ReadFile(filepath.Join(path, "memory.usage_in_bytes"))
		stat, err2 := os.ReadFile(filepath.Join(path, "memory.stat"))
		if err1 != nil || err2 != nil {
			return filepath.SkipDir
		}
		u, _ := strconv.ParseInt(strings.TrimSpace(string(usage)), 10, 64)
		var inactive int64
		for _, line := range strings.Split(string(stat), "\n") {
			if v, ok := strings.CutPrefix(line, "total_inactive_file "); ok {
				inactive, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		n = u - inactive
		return filepath.SkipDir
	})
	return n
}
