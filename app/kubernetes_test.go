package app_test

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/driver/kubernetes"
	"github.com/master-controller/mc/driver/kubernetes/k8stest"
	"github.com/master-controller/mc/internal/testutil"
)

// TestKubernetesDriver wires MC_DRIVER=kubernetes to the real test cluster
// (see package k8stest): a session's machine is a Pod that becomes ready,
// POST past MC_MAX_MACHINES answers 503, and a Pod deleted by someone else
// fails its session machine_evicted.
func TestKubernetesDriver(t *testing.T) {
	c := k8stest.Get(t)
	ns := c.Namespace(t)
	tm := startMain(t, map[string]string{
		"MC_DRIVER": "kubernetes", "MC_K8S_KUBECONFIG": c.Kubeconfig, "MC_K8S_NAMESPACE": ns,
		"MC_K8S_IMAGE": c.Image, "MC_K8S_IMAGE_PULL_POLICY": "Never", "MC_K8S_POD_NETWORK": c.PodNetwork.String(),
		"MC_K8S_SECCOMP_PROFILE": k8stest.SeccompProfile, "MC_K8S_CPU_REQUEST": "10m", "MC_K8S_MEMORY_REQUEST": "64Mi",
		"MC_K8S_CONTROLLER_LABELS": "-", "MC_K8S_CONTROLLER_CIDRS": c.HostNetwork.String(),
		"MC_MAX_MACHINES": "2", "MC_START_TIMEOUT": "90s",
	})
	if caps := tm.Driver.Capabilities(); !caps.Cluster || caps.MaxMachines != 2 || caps.Network != c.PodNetwork {
		t.Errorf("Capabilities = %+v, want a cluster driver on %v", caps, c.PodNetwork)
	}
	var a, b created
	if code := tm.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": "alice", "provider": "demo"}, &a); code != 201 {
		t.Fatalf("create alice: status %d", code)
	}
	if code := tm.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": "bob", "provider": "demo"}, &b); code != 201 {
		t.Fatalf("create bob: status %d", code)
	}
	var e struct {
		Error struct {
			Reason mc.Reason `json:"reason"`
		} `json:"error"`
	}
	if code := tm.api.Do(t, "POST", "/api/v1/sessions", map[string]string{"user_id": "carol", "provider": "demo"}, &e); code != 503 ||
		e.Error.Reason != mc.ReasonCapacity {
		t.Errorf("third create past MC_MAX_MACHINES=2: %d %+v, want 503 capacity", code, e)
	}
	s := testutil.WaitState(t, tm.Store, a.Session.ID, mc.StateReady, 90*time.Second)
	if !c.PodNetwork.Contains(s.Machine.IP) || s.Machine.Driver != kubernetes.Name {
		t.Errorf("machine %+v, want a pod in %v", s.Machine, c.PodNetwork)
	}
	if err := c.Client.CoreV1().Pods(ns).Delete(t.Context(), kubernetes.PodName(s.Machine.ID), metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete pod: %v", err)
	}
	deleted := time.Now()
	s = testutil.WaitState(t, tm.Store, a.Session.ID, mc.StateFailed, 5*time.Second)
	if s.Reason != mc.ReasonMachineEvicted {
		t.Errorf("session after its pod's deletion: %s %s, want failed machine_evicted", s.State, s.Reason)
	}
	t.Logf("session failed %v after its pod's deletion", time.Since(deleted))
}
