package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/kubernetes"
	"github.com/master-controller/mc/driver/kubernetes/k8stest"
	"github.com/master-controller/mc/internal/browsertest"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/internal/testutil"
)

// TestKubernetesSignIn is issue 13's end-to-end test: two controller
// replicas (server processes) on PostgreSQL with the kubernetes driver,
// machines as Pods of the real test cluster. A demo session is created
// through one replica; its Pod starts; the viewer (noVNC in headless
// Chromium, through the balancer in front of both replicas) shows the
// sign-in page; a click inside the remote browser completes the session;
// the credential is sealed (the backend reads it, the database holds no
// plaintext); and the Pod and its Secret are gone within 5 s.
func TestKubernetesSignIn(t *testing.T) {
	f := newKubeFleet(t)
	a := f.start(t, "k8s-a", nil)
	f.start(t, "k8s-b", nil)

	user := "k8s-signin"
	cr := a.api.createSession(t, user, "demo")
	id := cr.Session.ID

	b := browsertest.New(t)
	b.Timeout = 120 * time.Second // the first Pod on a node unpacks the image
	b.Open(f.viewerURL(t, cr.Viewer.URL))
	b.WaitState("connected")
	b.Timeout = 30 * time.Second
	b.WaitCanvas("the demo sign-in page", showsDemoPage)

	s := f.api.session(t, id)
	if s.State != mc.StateReady || s.Machine.Driver != kubernetes.Name {
		t.Fatalf("before the click: %+v; want ready on a kubernetes machine", s)
	}
	pods := f.pods(t, id)
	if len(pods) != 1 {
		t.Fatalf("session %s has %d pods, want 1", id, len(pods))
	}
	pod := pods[0]
	if pod.Status.PodIP == "" || s.Machine.IP.String() != pod.Status.PodIP {
		t.Errorf("the machine's address %v is not its pod's IP %q", s.Machine.IP, pod.Status.PodIP)
	}

	s = f.signIn(t, b, id)
	completed := time.Now()
	if s.Reason != mc.ReasonSignedIn {
		t.Errorf("completed with reason %q, want signed_in", s.Reason)
	}
	b.WaitState("signed-in")

	// The Pod and its Secret are gone within 5 s of the completion (the
	// destroy grace is 300 ms).
	if err := testutil.Poll(t.Context(), 5*time.Second, func() error { return f.gone(t.Context(), pod.Name) }); err != nil {
		t.Errorf("%.1f s after completion: %v", time.Since(completed).Seconds(), err)
	}

	// The credential: opened for the backend, sealed in the database.
	var cred mc.Credential
	path := "/api/v1/credentials/" + url.PathEscape(user) + "/demo"
	if code := f.api.Do(t, "GET", path, nil, &cred); code != http.StatusOK {
		t.Fatalf("GET %s: status %d", path, code)
	}
	var dc demoCredential
	for name, content := range cred.Files {
		if strings.HasSuffix(name, ".demo/credentials.json") {
			_ = json.Unmarshal([]byte(content), &dc)
		}
	}
	secret, ok := strings.CutPrefix(dc.AccessToken, "demo-")
	if !ok || len(secret) < 16 || cred.SessionID != id {
		t.Fatalf("credential %+v of session %s: want a demo access token from session %s", dc, cred.SessionID, id)
	}
	dump := pgDump(t, f.db)
	if !bytes.Contains(dump, []byte(user)) {
		t.Error("the pg_dump does not hold the credential's row: the search would prove nothing")
	}
	if bytes.Contains(dump, []byte(secret)) {
		t.Error("the pg_dump holds the credential's plaintext token")
	}
}

// TestKubernetesEviction: a session's Pod deleted as `kubectl delete pod`
// does ends the session failed with reason machine_evicted within 2 s, and
// its viewer is closed with 4503.
func TestKubernetesEviction(t *testing.T) {
	f := newKubeFleet(t)
	f.start(t, "k8s-a", nil)
	f.start(t, "k8s-b", nil)

	cr := f.api.createSession(t, "k8s-evict", "demo")
	id := cr.Session.ID
	b := browsertest.New(t)
	b.Timeout = 120 * time.Second
	b.Open(f.viewerURL(t, cr.Viewer.URL))
	b.WaitState("connected")
	// Every close code the page sees, in order: it reconnects after 4503
	// and then learns that the session has ended (4410).
	b.MustEval(`(() => { window.mcCodes = []; setInterval(() => { const c = window.mcViewer.lastCloseCode;
		if (c != null && window.mcCodes[window.mcCodes.length - 1] !== c) window.mcCodes.push(c); }, 10); return true; })()`, nil)

	pods := f.pods(t, id)
	if len(pods) != 1 {
		t.Fatalf("session %s has %d pods, want 1", id, len(pods))
	}
	// What kubectl delete pod does: a delete with the Pod's own grace period.
	deleted := time.Now()
	if err := f.k.Client.CoreV1().Pods(f.ns).Delete(t.Context(), pods[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete pod %s: %v", pods[0].Name, err)
	}
	var s mc.Session
	err := testutil.Poll(t.Context(), 2*time.Second, func() error {
		if s = f.api.session(t, id); s.State.Final() {
			return nil
		}
		return errorString("state " + string(s.State))
	})
	if err != nil || s.State != mc.StateFailed || s.Reason != mc.ReasonMachineEvicted {
		t.Fatalf("%.1f s after the delete: session %s (reason %q), want failed (machine_evicted) within 2 s",
			time.Since(deleted).Seconds(), s.State, s.Reason)
	}
	b.WaitJS(`window.mcCodes.includes(4503)`)
	var codes []int
	b.MustEval(`window.mcCodes`, &codes)
	if len(codes) == 0 || codes[0] != 4503 {
		t.Errorf("viewer close codes %v, want 4503 first", codes)
	}
}

// TestKubernetesCapacity: with a cluster-wide cap of 5 machines, the sixth
// POST gets 503; and a machine whose requests exceed the node fails its
// session with reason unschedulable after the configured wait.
func TestKubernetesCapacity(t *testing.T) {
	f := newKubeFleet(t)
	env := map[string]string{"MC_MAX_MACHINES": "5"}
	f.start(t, "k8s-a", env)
	f.start(t, "k8s-b", env)
	ids := make([]string, 0, 5)
	for i := range 5 {
		ids = append(ids, f.api.createSession(t, fmt.Sprintf("k8s-cap-%d", i), "demo").Session.ID)
	}
	// The cap counts the cluster's machine Pods: wait until all five exist
	// (each replica learns of the other's through its watch).
	testutil.WaitFor(t, 60*time.Second, "five machine pods", func() error {
		l, err := f.k.Client.CoreV1().Pods(f.ns).List(t.Context(), metav1.ListOptions{})
		if err != nil || len(l.Items) < 5 {
			return fmt.Errorf("%d pods (%v)", len(l.Items), err)
		}
		return nil
	})
	for range 2 { // through each replica
		var e struct {
			Error struct {
				Code   string `json:"code"`
				Reason string `json:"reason"`
			} `json:"error"`
		}
		code := f.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": "k8s-cap-6", "provider": "demo"}, &e)
		if code != http.StatusServiceUnavailable {
			t.Errorf("the sixth POST: status %d (%+v), want 503", code, e)
		}
	}
	for _, id := range ids {
		if code := f.api.Do(t, "POST", "/api/v1/sessions/"+id+"/cancel", nil, nil); code != http.StatusOK {
			t.Errorf("cancel session %s: status %d", id, code)
		}
	}

	// A machine larger than the node (a thousand CPUs): never scheduled.
	big := f.start(t, "k8s-big", map[string]string{"MC_K8S_CPU_REQUEST": "1000", "MC_K8S_CPU_LIMIT": "-",
		"MC_K8S_UNSCHEDULABLE_WAIT": "3s", "MC_MAX_MACHINES": "50"})
	id := big.api.createSession(t, "k8s-unschedulable", "demo").Session.ID
	s := f.waitState(t, id, mc.StateFailed, 60*time.Second)
	if s.Reason != mc.ReasonUnschedulable {
		t.Errorf("session of a machine larger than the node: failed with reason %q, want unschedulable", s.Reason)
	}
}

// TestKubernetesRollingRestart is issue 13's rolling restart: 10 live
// sessions with viewers attached through the balancer; replica A stops
// gracefully (its live sessions are adopted by B) and starts again; then B
// is killed (SIGKILL) and A adopts its sessions once B's heartbeat is
// stale. Every session stays live (each viewer reconnects and sees its
// machine), none fails, and every sign-in afterwards completes.
func TestKubernetesRollingRestart(t *testing.T) {
	const n = 10
	f := newKubeFleet(t)
	// Heartbeats fast enough for a test; the settings are the replicas'.
	env := map[string]string{"MC_HEARTBEAT_INTERVAL": "500ms", "MC_REPLICA_TIMEOUT": "3s"}
	a := f.start(t, "k8s-a", env)
	bsrv := f.start(t, "k8s-b", env)

	b := browsertest.New(t)
	b.Timeout = 180 * time.Second
	ids := make([]string, n)
	tabs := make([]*browsertest.Browser, n)
	for i := range n {
		cr := f.api.createSession(t, fmt.Sprintf("k8s-roll-%d", i), "demo")
		ids[i] = cr.Session.ID
		tabs[i] = b
		if i > 0 {
			tabs[i] = b.NewTab()
		}
		tabs[i].Open(f.viewerURL(t, cr.Viewer.URL))
	}
	for i, tab := range tabs {
		tab.WaitState("connected")
		tab.WaitCanvas(fmt.Sprintf("session %d's sign-in page", i), showsDemoPage)
	}
	// live checks that every session is ready and driven by replica
	// owner ("" for either), and that every viewer is connected and shows
	// its machine's page.
	live := func(when, owner string) {
		t.Helper()
		for i, id := range ids {
			err := testutil.Poll(t.Context(), 30*time.Second, func() error {
				s := f.api.session(t, id)
				if s.State != mc.StateReady {
					t.Fatalf("%s: session %d is %s (reason %q), want ready", when, i, s.State, s.Reason)
				}
				if owner != "" && s.Replica != owner {
					return fmt.Errorf("driven by %q", s.Replica)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s: session %d not driven by %s: %v", when, i, owner, err)
			}
		}
		for i, tab := range tabs {
			tab.WaitState("connected")
			tab.WaitCanvas(fmt.Sprintf("%s: session %d's sign-in page", when, i), showsDemoPage)
		}
	}

	// A rolling update's first step: A leaves the balancer and stops.
	f.lb.remove(a.URL)
	a.Stop(t)
	live("after A stopped", "k8s-b")
	f.start(t, "k8s-a", env)
	live("after A came back", "k8s-b")

	// Then B dies without a word.
	f.lb.remove(bsrv.URL)
	bsrv.Kill()
	live("after B was killed", "k8s-a")
	// Every viewer was on B when it died, so each has reconnected at
	// least once.
	for i, tab := range tabs {
		if v := readViewer(tab); v.ConnectedCount < 2 {
			t.Errorf("viewer %d connected %d times, want a reconnect after B died", i, v.ConnectedCount)
		}
	}

	for i, tab := range tabs {
		s := f.signIn(t, tab, ids[i])
		if s.Reason != mc.ReasonSignedIn {
			t.Errorf("session %d completed with reason %q, want signed_in", i, s.Reason)
		}
	}
}

// BenchmarkKubernetesStartToReady measures, one session after the other on
// one in-process controller with the kubernetes driver, the time from POST
// /api/v1/sessions to ready (as a client watching the store sees it), and
// each machine Pod's memory once its page has rendered (its cgroup's RSS:
// agent, Xvnc, Chromium, pause). Run it, once the image is on the node,
// over 20 sessions with
//
//	go test ./e2e/ -run '^$' -bench KubernetesStartToReady -benchtime 20x
//
// It reports ready-median-s, ready-p90-s, rss-median-MB and rss-max-MB.
func BenchmarkKubernetesStartToReady(b *testing.B) {
	k := k8stest.Get(b)
	env := kubeEnv(b, k, k.Namespace(b), pgtest.Start(b), sharedVaultKeys(b), "k8s-bench")
	c := startController(b, env)
	var ready, mem []float64
	i := 0
	for b.Loop() {
		start := time.Now()
		cr := c.api.createSession(b, fmt.Sprintf("k8s-bench-%d", i), "demo")
		id := cr.Session.ID
		s := testutil.WaitState(b, c.Store, id, mc.StateReady, 120*time.Second)
		ready = append(ready, time.Since(start).Seconds())
		waitDemoPage(b, c.Store, id, s.Machine.VNCAddr().String(), c.MachineKey.Secrets(id).VNCPassword, 30*time.Second)
		if rss, err := podRSS(b, k, env["MC_K8S_NAMESPACE"], id); err == nil {
			mem = append(mem, rss)
		} else {
			b.Logf("memory of session %s's pod: %v", id, err)
		}
		if code := c.api.Do(b, "POST", "/api/v1/sessions/"+id+"/cancel", nil, nil); code != http.StatusOK {
			b.Fatalf("cancel: status %d", code)
		}
		i++
	}
	if len(ready) == 0 {
		return
	}
	b.ReportMetric(quantile(ready, 0.5), "ready-median-s")
	b.ReportMetric(quantile(ready, 0.9), "ready-p90-s")
	if len(mem) > 0 {
		b.ReportMetric(quantile(mem, 0.5), "rss-median-MB")
		b.ReportMetric(slices.Max(mem), "rss-max-MB")
	}
	b.Logf("%d sessions; POST→ready seconds %.3f; pod RSS MB %.0f", len(ready), ready, mem)
}

// podRSS reads the RSS (MB) of session id's machine Pod from its memory
// cgroup on this host (cgroup v1: the kubelet's pod<uid> directory).
func podRSS(tb testing.TB, k *k8stest.Cluster, ns, id string) (float64, error) {
	l, err := k.Client.CoreV1().Pods(ns).List(tb.Context(),
		metav1.ListOptions{LabelSelector: kubernetes.LabelSession + "=" + kubernetes.SessionLabel(id)})
	if err != nil || len(l.Items) != 1 {
		return 0, fmt.Errorf("list the pod: %v (%d pods)", err, len(l.Items))
	}
	pod := "pod" + string(l.Items[0].UID)
	var dirs []string
	for _, pat := range []string{"/sys/fs/cgroup/memory/*/kubepods/*/" + pod, "/sys/fs/cgroup/memory/*/kubepods/" + pod} {
		m, _ := filepath.Glob(pat)
		dirs = append(dirs, m...)
	}
	if len(dirs) != 1 {
		return 0, fmt.Errorf("%d memory cgroups named %s", len(dirs), pod)
	}
	stat, err := os.ReadFile(filepath.Join(dirs[0], "memory.stat"))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(stat), "\n") {
		if v, ok := strings.CutPrefix(l, "total_rss "); ok {
			n, err := strconv.ParseFloat(v, 64)
			return n / (1 << 20), err
		}
	}
	return 0, fmt.Errorf("no total_rss in %s/memory.stat", dirs[0])
}
