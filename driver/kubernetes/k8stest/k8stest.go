// Package k8stest finds the real Kubernetes cluster that tests run against
// and makes each test a namespace of its own in it.
//
// The cluster is the one scripts/k8s/cluster.sh up starts, with the machine
// image of scripts/image/build.sh imported into its node (cluster.sh
// import). Tests find it through the environment:
//
//	MC_TEST_KUBECONFIG  its admin kubeconfig (cluster.sh env prints it)
//	MC_TEST_K8S_IMAGE   the machine image's reference
//	MC_K8S_POD_CIDR     its pod network (default 10.244.0.0/24, cluster.sh's)
//
// Without the first two a test skips, and fails under CI=true
// (testutil.SkipOrFail). The node holds deploy/kubernetes/seccomp/
// mc-chromium.json (cluster.sh up installs it): machine Pods name it.
package k8stest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/master-controller/mc/driver/kubernetes"
	"github.com/master-controller/mc/internal/testutil"
)

// SeccompProfile is the Localhost profile machine Pods use in tests.
const SeccompProfile = "mc-chromium.json"

// Cluster is the test cluster.
type Cluster struct {
	Kubeconfig string
	Image      string
	PodNetwork netip.Prefix
	// HostNetwork is where the host (the controller in tests) reaches the
	// cluster from, which the NetworkPolicy must admit: cluster.sh's
	// MC_K8S_HOST_NET.
	HostNetwork netip.Prefix
	Client      k8s.Interface
}

// Get returns the test cluster, or skips tb (fails it under CI=true).
func Get(tb testing.TB) *Cluster {
	tb.Helper()
	c := &Cluster{Kubeconfig: os.Getenv("MC_TEST_KUBECONFIG"), Image: os.Getenv("MC_TEST_K8S_IMAGE")}
	if c.Kubeconfig == "" || c.Image == "" {
		testutil.SkipOrFail(tb, "no test cluster: set MC_TEST_KUBECONFIG and MC_TEST_K8S_IMAGE "+
			"(scripts/k8s/cluster.sh up, scripts/image/build.sh, cluster.sh import)")
	}
	cidr := os.Getenv("MC_K8S_POD_CIDR")
	if cidr == "" {
		cidr = "10.244.0.0/24"
	}
	var err error
	if c.PodNetwork, err = netip.ParsePrefix(cidr); err != nil {
		tb.Fatalf("MC_K8S_POD_CIDR: %v", err)
	}
	host := os.Getenv("MC_K8S_HOST_NET")
	if host == "" {
		host = "10.244.254.0/30" // cluster.sh's default
	}
	if c.HostNetwork, err = netip.ParsePrefix(host); err != nil {
		tb.Fatalf("MC_K8S_HOST_NET: %v", err)
	}
	rc, err := kubernetes.RESTConfig(c.Kubeconfig)
	if err != nil {
		tb.Fatal(err)
	}
	if c.Client, err = k8s.NewForConfig(rc); err != nil {
		tb.Fatal(err)
	}
	return c
}

// Namespace makes a namespace for tb (restricted Pod Security), deleted (with whatever it holds)
// when tb ends.
func (c *Cluster) Namespace(tb testing.TB) string {
	tb.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	ns := "mc-test-" + hex.EncodeToString(b[:])
	// Like deploy/kubernetes's mc-machines, it enforces the restricted Pod
	// Security Standard: a machine Pod that breaks it is refused.
	obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted"}}}
	if _, err := c.Client.CoreV1().Namespaces().Create(tb.Context(), obj, metav1.CreateOptions{}); err != nil {
		tb.Fatalf("create namespace: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		zero := int64(0)
		_ = c.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	return ns
}
