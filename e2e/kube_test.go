package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/kubernetes"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/vault"
)

// kubeCluster is the real cluster the Kubernetes tests run machines in:
// MC_TEST_KUBECONFIG names its kubeconfig, MC_TEST_K8S_IMAGE the machine
// image already imported on its node (scripts/test.sh sets both under
// CI=true: scripts/k8s/ci.sh).
type kubeCluster struct {
	kubeconfig string
	image      string
	client     k8s.Interface
	podCIDR    netip.Prefix // the node's pod network, which the gateway may dial
	hostIP     netip.Addr   // this host's address as the pods see it
}

// requireKube returns the test cluster, or skips the test (one line) when
// none is named, or fails it under CI=true.
func requireKube(tb testing.TB) *kubeCluster {
	tb.Helper()
	kc, img := os.Getenv("MC_TEST_KUBECONFIG"), os.Getenv("MC_TEST_K8S_IMAGE")
	if kc == "" || img == "" {
		testutil.SkipOrFail(tb, "the Kubernetes e2e tests need MC_TEST_KUBECONFIG and MC_TEST_K8S_IMAGE "+
			"(scripts/k8s/cluster.sh up; scripts/image/build.sh --agent bin/mc-agent; cluster.sh import ARCHIVE)")
	}
	cfg, err := kubernetes.RESTConfig(kc)
	if err != nil {
		tb.Fatalf("kubeconfig %s: %v", kc, err)
	}
	client, err := k8s.NewForConfig(cfg)
	if err != nil {
		tb.Fatalf("kubernetes client: %v", err)
	}
	k := &kubeCluster{kubeconfig: kc, image: img, client: client}
	nodes, err := client.CoreV1().Nodes().List(tb.Context(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		tb.Fatalf("list the cluster's nodes: %v (%d nodes)", err, len(nodes.Items))
	}
	node := nodes.Items[0]
	if k.podCIDR, err = netip.ParsePrefix(node.Spec.PodCIDR); err != nil {
		tb.Fatalf("node %s has no pod CIDR (%q): the controller-manager allocates it (cluster.sh up)", node.Name, node.Spec.PodCIDR)
	}
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			// cluster.sh joins host and node by a /30: the host is .1, the node .2.
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				k.hostIP = ip.Prev()
			}
		}
	}
	return k
}

// namespace makes a namespace of its own for the test's machines (the
// restricted Pod Security Standard, as deploy/kubernetes has it), deleted
// when the test ends.
func (k *kubeCluster) namespace(tb testing.TB) string {
	tb.Helper()
	name := "mc-e2e-" + randomHex(4)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}}
	if _, err := k.client.CoreV1().Namespaces().Create(tb.Context(), ns, metav1.CreateOptions{}); err != nil {
		tb.Fatalf("create namespace %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := k.client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			tb.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return name
}

// kubeEnv returns the MC_* settings of a controller replica with the
// kubernetes driver, its machines in namespace ns, on the PostgreSQL
// database db with vault keys keys (every replica of a test shares both).
func (k *kubeCluster) kubeEnv(tb testing.TB, ns, db, keys, replica string) map[string]string {
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
		"MC_K8S_KUBECONFIG": k.kubeconfig,
		"MC_K8S_NAMESPACE":  ns,
		"MC_K8S_IMAGE":      k.image,
		// Imported on the node, never pulled (no registry here).
		"MC_K8S_IMAGE_PULL_POLICY": "Never",
		// RuntimeDefault refuses the user namespaces of Chromium's own
		// sandbox; cluster.sh installs this profile on the node.
		"MC_K8S_SECCOMP_PROFILE": "mc-chromium.json",
		"MC_K8S_POD_NETWORK":     k.podCIDR.String(),
		// The controllers run on the host, outside the cluster.
		"MC_K8S_CONTROLLER_LABELS": "-",
		"MC_K8S_CONTROLLER_CIDRS":  netip.PrefixFrom(k.hostIP, 32).String(),
		// Small machines: a loaded two-core test node holds ten.
		"MC_K8S_CPU_REQUEST":    "50m",
		"MC_K8S_MEMORY_REQUEST": "128Mi",
	}
}

// kubeFleet is a test's controller replicas on one PostgreSQL database,
// behind one load balancer (as a Service would put them), with their
// machines in one namespace of the test cluster.
type kubeFleet struct {
	k    *kubeCluster
	ns   string
	db   string
	keys string
	lb   *balancer
	api  client // through the balancer
}

// newKubeFleet prepares (but starts no replica of) a fleet.
func newKubeFleet(tb testing.TB) *kubeFleet {
	tb.Helper()
	k := requireKube(tb)
	f := &kubeFleet{k: k, ns: k.namespace(tb), db: pgtest.Start(tb), keys: sharedVaultKeys(tb), lb: newBalancer(tb)}
	f.api = client{testutil.Client{URL: f.lb.URL(), Key: testAPIKey}}
	return f
}

// start starts replica name with env's settings over the fleet's, and
// puts it behind the balancer.
func (f *kubeFleet) start(tb testing.TB, name string, env map[string]string) *server {
	tb.Helper()
	e := f.k.kubeEnv(tb, f.ns, f.db, f.keys, name)
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
	l, err := f.k.client.CoreV1().Pods(f.ns).List(tb.Context(),
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
	if _, err := f.k.client.CoreV1().Pods(f.ns).Get(ctx, pod, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		return fmt.Errorf("pod %s still there (%v)", pod, err)
	}
	if _, err := f.k.client.CoreV1().Secrets(f.ns).Get(ctx, pod, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		return fmt.Errorf("secret %s still there (%v)", pod, err)
	}
	return nil
}
