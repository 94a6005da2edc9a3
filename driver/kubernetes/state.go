package kubernetes

import (
	"context"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"

	mc "github.com/master-controller/mc"
)

// imagePullReasons are the container waiting reasons of an image that
// cannot be had.
var imagePullReasons = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "ErrImageNeverPull": true,
	"InvalidImageName": true, "ImageInspectError": true, "RegistryUnavailable": true,
}

// startReasons are the container waiting reasons of a container that
// cannot be made as its Pod says (a seccomp profile missing on the node, a
// runtime class without a handler): the kubelet would retry for ever.
var startReasons = map[string]bool{
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// verdict is what a Pod says of its machine.
type verdict struct {
	// ended: the machine is gone or going; err is why (nil: it exited,
	// or this controller destroyed it).
	ended bool
	err   error
	// recheck, when positive, is when the verdict changes without an
	// event (an unschedulable Pod's wait ends).
	recheck time.Duration
}

// judge reads p (nil: the Pod is gone) as of now. destroyed says that a
// controller deleted it (not an eviction).
func (d *Driver) judge(id string, p *corev1.Pod, destroyed bool, now time.Time) verdict {
	if p == nil {
		if destroyed {
			return verdict{ended: true}
		}
		return verdict{ended: true, err: evicted(id, "its pod was deleted")}
	}
	if p.DeletionTimestamp != nil {
		if destroyed || p.Annotations[annotDestroying] != "" {
			return verdict{ended: true}
		}
		return verdict{ended: true, err: evicted(id, "its pod is being deleted")}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.Reason == "OOMKilled" {
			return verdict{ended: true, err: mc.MachineOOMError(id)}
		}
		// The kubelet reports the container's end before it has torn the
		// Pod's sandbox down and made the Pod's phase final.
		if cs.State.Terminated != nil && cs.Name == containerName {
			return verdict{ended: true}
		}
		if w := cs.State.Waiting; w != nil && imagePullReasons[w.Reason] {
			return verdict{ended: true, err: mc.Errorf(mc.EUNAVAILABLE, mc.ReasonImagePullFailed,
				"machine %s: its image cannot be pulled (%s)", id, w.Reason)}
		}
		if w := cs.State.Waiting; w != nil && startReasons[w.Reason] {
			return verdict{ended: true, err: mc.Errorf(mc.EUNAVAILABLE, mc.ReasonStartFailed,
				"machine %s: its container cannot start (%s): %s", id, w.Reason, w.Message)}
		}
	}
	switch p.Status.Phase {
	case corev1.PodFailed:
		if p.Status.Reason == "Evicted" || p.Status.Reason == "Preempting" || p.Status.Reason == "DeadlineExceeded" {
			return verdict{ended: true, err: evicted(id, "its pod was "+p.Status.Reason)}
		}
		return verdict{ended: true}
	case corev1.PodSucceeded:
		return verdict{ended: true}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			// The API keeps whole seconds: the Pod was made within the
			// second after its timestamp, and the wait is never short.
			since := p.CreationTimestamp.Add(time.Second)
			if left := since.Add(d.cfg.UnschedulableWait).Sub(now); left > 0 {
				return verdict{recheck: left}
			}
			return verdict{ended: true, err: mc.Errorf(mc.EUNAVAILABLE, mc.ReasonUnschedulable,
				"machine %s: no node can take its pod after %v: %s", id, d.cfg.UnschedulableWait, c.Message)}
		}
	}
	return verdict{}
}

func evicted(id, why string) error {
	return mc.Errorf(mc.EUNAVAILABLE, mc.ReasonMachineEvicted, "machine %s ended: %s", id, why)
}

// status is the MachineStatus of Pod p.
func (d *Driver) status(p *corev1.Pod) mc.MachineStatus {
	id := p.Annotations[annotMachineID]
	st := mc.MachineStatus{ID: id, SessionID: p.Annotations[annotSessionID], Machine: d.machine(id, p),
		Pooled: p.Annotations[annotPooled] == "true"}
	for _, cs := range p.Status.ContainerStatuses {
		if r := cs.State.Running; r != nil && cs.Name == containerName {
			st.Running = p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning
			st.StartedAt = r.StartedAt.Time
		}
	}
	if st.StartedAt.IsZero() {
		st.StartedAt = p.CreationTimestamp.Time
	}
	if !st.Running {
		st.Detail = "pod " + string(p.Status.Phase)
		if p.Status.Reason != "" {
			st.Detail += " (" + p.Status.Reason + ")"
		}
		if p.DeletionTimestamp != nil {
			st.Detail += ", being deleted"
		}
	}
	return st
}

// machine is the Machine of Pod p (its IP once it has one).
func (d *Driver) machine(id string, p *corev1.Pod) mc.Machine {
	m := mc.Machine{ID: id, Driver: Name, VNCPort: VNCPort, AgentPort: AgentPort}
	if ip, err := netip.ParseAddr(p.Status.PodIP); err == nil {
		m.IP = ip
	}
	return m
}

// Inspect reports on machine id from the watch's cache.
// Errors: ENOTFOUND when the namespace has no Pod of it.
func (d *Driver) Inspect(_ context.Context, id string) (mc.MachineStatus, error) {
	p := d.pod(id)
	if p == nil {
		return mc.MachineStatus{}, mc.Errorf(mc.ENOTFOUND, mc.ReasonMachineNotFound, "machine %s: no pod", id)
	}
	return d.status(p), nil
}

// List reports every machine Pod of the namespace, every replica's (the
// cluster is shared: reconcile matches them to sessions in the store).
func (d *Driver) List(context.Context) ([]mc.MachineStatus, error) {
	var out []mc.MachineStatus
	for _, obj := range d.informer.GetStore().List() {
		if p, ok := obj.(*corev1.Pod); ok && p.Annotations[annotMachineID] != "" {
			out = append(out, d.status(p))
		}
	}
	return out, nil
}

// live counts the machine Pods that hold capacity (neither deleted nor
// ended: a Pending one counts, it is waiting for room), with the ones being
// created that the cache has not seen yet.
func (d *Driver) live() int {
	n := 0
	seen := map[string]bool{}
	for _, obj := range d.informer.GetStore().List() {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			continue
		}
		seen[p.Name] = true
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded {
			n++
		}
	}
	d.mu.Lock()
	for name := range d.creating {
		if !seen[name] {
			n++
		}
	}
	d.mu.Unlock()
	return n
}
