package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/kubernetes"
	"github.com/master-controller/mc/driver/kubernetes/k8stest"
	"github.com/master-controller/mc/internal/browsertest"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/vault"
)

// kubeEnv returns the MC_* settings of a controller replica with the
// kubernetes driver, its machines in namespace ns, on the PostgreSQL
// database db with vault keys keys (every replica of a test shares both).
func kubeEnv(tb testing.TB, k *k8stest.Cluster, ns, db, keys, replica string) map[string]string {
	tb.Helper()
	return map[string]string{
		"MC_LISTEN":         "127.0.0.1:0",
		"MC_DATA_DIR":       tb.TempDir(),
		"MC_DATABASE_URL":   db,
		"MC_VAULT_KEYS":     keys,
		"MC_API_KEYS":       testAPIKey,
		"MC_REPLICA":        replica,
		"MC_WEB_DIR":        filepath.Join(repoRoot, "web"),
		"MC_LOG_LEVEL":      "debug",
		"MC_LOG_FORMAT":     "json",
		"MC_DESTROY_GRACE":  "300ms",
		"MC_POOL":           "demo=0",
		"MC_DRIVER":         kubernetes.Name,
		"MC_K8S_KUBECONFIG": k.Kubeconfig,
		"MC_K8S_NAMESPACE":  ns,
		"MC_K8S_IMAGE":      k.Image,
		// Imported on the node, never pulled (no registry here).
		"MC_K8S_IMAGE_PULL_POLICY": "Never",
		// RuntimeDefault refuses the user namespaces of Chromium's own
		// sandbox; cluster.sh installs this profile on the node.
		"MC_K8S_SECCOMP_PROFILE": k8stest.SeccompProfile,
		"MC_K8S_POD_NETWORK":     k.PodNetwork.String(),
		// The controllers run on the host, outside the cluster.
		"MC_K8S_CONTROLLER_LABELS": "-",
		"MC_K8S_CONTROLLER_CIDRS":  k.HostNetwork.String(),
		// Small machines: a loaded two-core test node holds ten.
		"MC_K8S_CPU_REQUEST":    "50m",
		"MC_K8S_MEMORY_REQUEST": "128Mi",
	}
}

// kubeFleet is a test's controller replicas on one PostgreSQL database,
// behind one load balancer (as a Service would put them), with their
// machines in one namespace of the test cluster.
type kubeFleet struct {
	k    *k8stest.Cluster
	ns   string
	db   string
	keys string
	lb   *balancer
	api  client // through the balancer
}

// newKubeFleet prepares (but starts no replica of) a fleet.
func newKubeFleet(tb testing.TB) *kubeFleet {
	tb.Helper()
	k := k8stest.Get(tb)
	f := &kubeFleet{k: k, ns: k.Namespace(tb), db: pgtest.Start(tb), keys: sharedVaultKeys(tb), lb: newBalancer(tb)}
	f.api = client{testutil.Client{URL: f.lb.URL(), Key: testAPIKey}}
	return f
}

// start starts replica name with env's settings over the fleet's, and
// puts it behind the balancer.
func (f *kubeFleet) start(tb testing.TB, name string, env map[string]string) *server {
	tb.Helper()
	e := kubeEnv(tb, f.k, f.ns, f.db, f.keys, name)
	// The replica prints (and links viewers to) its public URL, so that is
	// left unset: the test reaches each replica directly, and sends
	// browsers through the balancer (viewerURL), whose Origin it admits.
	e["MC_ALLOWED_ORIGINS"] = f.lb.URL()
	for k, v := range env {
		e[k] = v
	}
	s := startServer(tb, e)
	f.lb.add(s.URL)
	return s
}

// viewerURL is a viewer URL that a replica returned, through the balancer
// instead.
func (f *kubeFleet) viewerURL(tb testing.TB, raw string) string {
	tb.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		tb.Fatalf("viewer URL %q: %v", raw, err)
	}
	u.Host = strings.TrimPrefix(f.lb.URL(), "http://")
	return u.String()
}

// pods returns the machine Pods of session id.
func (f *kubeFleet) pods(tb testing.TB, id string) []corev1.Pod {
	tb.Helper()
	l, err := f.k.Client.CoreV1().Pods(f.ns).List(tb.Context(),
		metav1.ListOptions{LabelSelector: kubernetes.LabelSession + "=" + kubernetes.SessionLabel(id)})
	if err != nil {
		tb.Fatalf("list pods of session %s: %v", id, err)
	}
	return l.Items
}

// waitState polls the API (through the balancer) until session id is in
// state want, for at most timeout; a final state other than want fails at
// once.
func (f *kubeFleet) waitState(tb testing.TB, id string, want mc.State, timeout time.Duration) mc.Session {
	tb.Helper()
	var s mc.Session
	err := testutil.Poll(tb.Context(), timeout, func() error {
		s = f.api.session(tb, id)
		if s.State == want || s.State.Final() {
			return nil
		}
		return errorString("state " + string(s.State))
	})
	if err != nil || s.State != want {
		tb.Fatalf("session %s: %s (reason %q), want %s (%v)", id, s.State, s.Reason, want, err)
	}
	return s
}

// waitLogin waits until session id's login is waiting for the user (the
// sign-in page is open in the machine's browser, its navigation done): a
// click before that can land on a page about to be replaced.
func (f *kubeFleet) waitLogin(tb testing.TB, id string) {
	tb.Helper()
	testutil.WaitFor(tb, 60*time.Second, "session "+id+"'s login waiting for the user", func() error {
		s := f.api.session(tb, id)
		if s.Login == nil || s.Login.Phase != mc.PhaseWaitingForUser {
			return fmt.Errorf("state %s, login %+v", s.State, s.Login)
		}
		return nil
	})
}

// signIn clicks the demo sign-in button at the centre of tab's remote
// screen (noVNC's pointer events) once the login waits for the user, and
// waits until session id is completed. On this loaded test host about one
// click in four was lost (the session stayed ready, the page unchanged), so
// a click that has not completed the session within 10 s is repeated, up to
// three times; a click on a completed session's page does nothing.
func (f *kubeFleet) signIn(tb testing.TB, tab *browsertest.Browser, id string) mc.Session {
	tb.Helper()
	f.waitLogin(tb, id)
	tab.WaitCanvas("the demo sign-in page", showsDemoPage)
	w, h := tab.CanvasSize()
	var s mc.Session
	for try := 1; ; try++ {
		tab.ClickCanvas(w/2, h/2)
		err := testutil.Poll(tb.Context(), 10*time.Second, func() error {
			if s = f.api.session(tb, id); s.State == mc.StateReady || s.State == mc.StateCapturing {
				return errorString("state " + string(s.State))
			}
			return nil
		})
		if err == nil || try == 3 {
			break
		}
		tb.Logf("session %s: still %s 10 s after click %d; clicking again", id, s.State, try)
	}
	if s.State != mc.StateCompleted {
		s = f.waitState(tb, id, mc.StateCompleted, 30*time.Second)
	}
	return s
}

// sharedVaultKeys returns MC_VAULT_KEYS for replicas that share a store:
// the viewer-token signing key is derived from the vault keys.
func sharedVaultKeys(tb testing.TB) string {
	tb.Helper()
	kr, err := vault.GenerateKeyring()
	if err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSpace(kr.Encode())
}

// balancer is a TCP load balancer on loopback: each connection goes to the
// next backend that accepts it, round robin, as a Service's would.
type balancer struct {
	ln       net.Listener
	mu       sync.Mutex
	backends []string // host:port
	next     int
}

func newBalancer(tb testing.TB) *balancer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &balancer{ln: ln}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	})
	return b
}

// URL is the balancer's base URL.
func (b *balancer) URL() string { return "http://" + b.ln.Addr().String() }

// add puts a replica (its base URL) behind the balancer.
func (b *balancer) add(url string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = append(b.backends, strings.TrimPrefix(url, "http://"))
}

// remove takes a replica out, as an endpoint leaves a Service when its Pod
// terminates; its open connections stay.
func (b *balancer) remove(url string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	addr := strings.TrimPrefix(url, "http://")
	for i, a := range b.backends {
		if a == addr {
			b.backends = append(b.backends[:i], b.backends[i+1:]...)
			return
		}
	}
}

func (b *balancer) serve(c net.Conn) {
	defer c.Close()
	b.mu.Lock()
	order := make([]string, 0, len(b.backends))
	for i := range b.backends {
		order = append(order, b.backends[(b.next+i)%len(b.backends)])
	}
	b.next++
	b.mu.Unlock()
	for _, a := range order {
		u, err := net.DialTimeout("tcp", a, 2*time.Second)
		if err != nil {
			continue
		}
		defer u.Close()
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
		go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
		<-done
		return
	}
}

// gone reports whether session id's Pod and Secret no longer exist.
func (f *kubeFleet) gone(ctx context.Context, pod string) error {
	if _, err := f.k.Client.CoreV1().Pods(f.ns).Get(ctx, pod, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		return fmt.Errorf("pod %s still there (%v)", pod, err)
	}
	if _, err := f.k.Client.CoreV1().Secrets(f.ns).Get(ctx, pod, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		return fmt.Errorf("secret %s still there (%v)", pod, err)
	}
	return nil
}
