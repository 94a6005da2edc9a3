package kubernetes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
)

// These tests use client-go's fake clientset, only for what the real
// cluster of cluster_test.go cannot be made to do on demand: a kubelet
// eviction under node pressure, a preemption, a replica's Wait across
// another replica's Destroy whose deletion it sees only once the Pod is
// gone, the cap over Pods that other replicas made and that ended. The
// other rows of TestWaitReasons (OOM kill, missing image, container that
// cannot be created) also run against the real cluster (TestOOM,
// TestImageMissing, TestSeccompProfileMissing); here they pin the status
// each reason is read from. The rendered Pod is a golden file.

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func fakeDriver(t *testing.T) (*Driver, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset()
	d, err := NewWithClient(t.Context(), Config{
		Namespace: "mc-machines", Image: "mc-machine:test", Replica: "r1",
		Network: netip.MustParsePrefix("10.244.0.0/24"), Controller: Peers{Namespace: "master-controller"},
	}, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, client
}

func testSpec() mc.MachineSpec {
	return mc.MachineSpec{ID: "m-AAAAAAAAAAAAAAAAAAAAAA", SessionID: "BBBBBBBBBBBBBBBBBBBBB_", Provider: "demo",
		StartURL: "local:/demo", Secrets: mc.NewMachineSecrets()}
}

// running puts machine spec's Pod, running at 10.244.0.7, into the fake
// cluster, as a replica's Create and the kubelet would.
func running(t *testing.T, d *Driver, client *fake.Clientset, spec mc.MachineSpec) *corev1.Pod {
	t.Helper()
	p := d.podFor(spec, 1280, 800)
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.7", ContainerStatuses: []corev1.ContainerStatus{{
		Name: containerName, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}}}
	p, err := client.CoreV1().Pods(d.cfg.Namespace).Create(t.Context(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.waitGoneOrThere(t, spec.ID, true); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitGoneOrThere waits until the watch has (or has not) the Pod of id.
func (d *Driver) waitGoneOrThere(t *testing.T, id string, there bool) error {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for {
		ch := d.next(PodName(id))
		if (d.pod(id) != nil) == there {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func TestWaitReasons(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status func(*corev1.PodStatus)
		want   mc.Reason // "" for nil
	}{
		{"evicted by the kubelet", func(s *corev1.PodStatus) {
			s.Phase, s.Reason = corev1.PodFailed, "Evicted"
		}, mc.ReasonMachineEvicted},
		{"preempted", func(s *corev1.PodStatus) {
			s.Phase, s.Reason = corev1.PodFailed, "Preempting"
		}, mc.ReasonMachineEvicted},
		{"OOM-killed", func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}
		}, mc.ReasonMachineOOM},
		{"exited", func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}
		}, ""},
		{"container ended, sandbox not yet down", func(s *corev1.PodStatus) {
			s.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "Error"}}
		}, ""},
		{"image gone", func(s *corev1.PodStatus) {
			s.Phase = corev1.PodPending
			s.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}
		}, mc.ReasonImagePullFailed},
		{"no seccomp profile on the node", func(s *corev1.PodStatus) {
			s.Phase = corev1.PodPending
			s.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerError",
				Message: "cannot load seccomp profile"}}
		}, mc.ReasonStartFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, client := fakeDriver(t)
			spec := testSpec()
			p := running(t, d, client, spec)
			waited := make(chan error, 1)
			go func() { waited <- d.Wait(t.Context(), spec.ID) }()
			tt.status(&p.Status)
			if _, err := client.CoreV1().Pods(d.cfg.Namespace).UpdateStatus(t.Context(), p, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-waited:
				if got := reasonOf(err); got != tt.want {
					t.Errorf("Wait = %v, reason %q; want %q", err, got, tt.want)
				}
				if err != nil && mc.ErrorCode(err) != mc.EUNAVAILABLE {
					t.Errorf("Wait = %v, want code unavailable", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Wait has not returned 5 s after the status changed")
			}
		})
	}
}

func reasonOf(err error) mc.Reason {
	if err == nil {
		return ""
	}
	return mc.ErrorReason(err)
}

// TestWaitDestroyedByAnotherReplica: a Pod that another replica destroys
// (it marks the Pod before deleting it) ends this replica's Wait with nil,
// not machine_evicted, even when the deletion is seen only once the Pod is
// gone.
func TestWaitDestroyedByAnotherReplica(t *testing.T) {
	d, client := fakeDriver(t)
	spec := testSpec()
	p := running(t, d, client, spec)
	waited := make(chan error, 1)
	go func() { waited <- d.Wait(t.Context(), spec.ID) }()
	// The mark and the deletion come once Wait waits on the Pod (a Wait that
	// begins after the deletion finds no Pod: ENOTFOUND).
	if err := testutil.Poll(t.Context(), 5*time.Second, func() error {
		if d.waits.Load() == 0 {
			return errors.New("Wait is not waiting yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p.Annotations[annotDestroying] = "r2"
	pods := client.CoreV1().Pods(d.cfg.Namespace)
	if _, err := pods.Update(t.Context(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(t.Context(), p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("Wait across another replica's Destroy = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait has not returned")
	}
}

// TestCapCountsOtherReplicas: the cap counts the namespace's machine Pods
// of every replica, but not ended ones.
func TestCapCountsOtherReplicas(t *testing.T) {
	d, client := fakeDriver(t)
	d.cfg.MaxMachines = 2
	a, b := testSpec(), testSpec()
	a.ID, b.ID = "m-other1", "m-other2"
	pa := running(t, d, client, a)
	running(t, d, client, b)
	_, err := d.Create(t.Context(), testSpec())
	if mc.ErrorCode(err) != mc.EUNAVAILABLE || mc.ErrorReason(err) != mc.ReasonNoCapacity {
		t.Fatalf("Create at the cap = %v, want unavailable no_capacity", err)
	}
	pa.Status.Phase = corev1.PodSucceeded
	if _, err := client.CoreV1().Pods(d.cfg.Namespace).UpdateStatus(t.Context(), pa, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for d.live() != 1 {
		select {
		case <-d.next(pa.Name):
		case <-ctx.Done():
			t.Fatalf("live() = %d after one machine ended, want 1", d.live())
		}
	}
}

// TestPodGolden: the Pod and Secret a machine is made of.
func TestPodGolden(t *testing.T) {
	d, _ := fakeDriver(t)
	spec := testSpec()
	spec.Secrets = mc.MachineSecrets{VNCPassword: mc.SecretOf("vncpass1"), AgentToken: mc.SecretOf("agent-token-0123456789")}
	d.cfg.RuntimeClassName = "gvisor"
	d.cfg.SeccompProfile = "mc-chromium.json"
	got, err := json.MarshalIndent(map[string]any{"pod": d.podFor(spec, 1280, 800), "secret": d.secretFor(spec), "policy": d.policy()}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "machine.golden.json")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the machine's objects differ from %s (run with -update if the change is meant):\n%s", path, got)
	}
}

func TestLabelValue(t *testing.T) {
	for in, want := range map[string]string{
		"replica-1":     "replica-1",
		"-_x_-":         "x",
		"host.example/": "host.example",
		"a b":           "a_b",
	} {
		if got := labelValue(in); got != want {
			t.Errorf("labelValue(%q) = %q, want %q", in, got, want)
		}
	}
}
