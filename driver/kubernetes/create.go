package kubernetes

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	mc "github.com/master-controller/mc"
)

// Create makes machine spec's Secret and Pod and returns once the Pod has
// an IP (its sandbox runs; the agent and Xvnc start after). A Pod that
// stays unschedulable for UnschedulableWait, cannot pull its image, or
// ends before it has an address fails Create, and Create removes it.
// Errors: EINVALID (bad_spec, no_machine_secrets), ECONFLICT
// (machine_exists), EUNAVAILABLE (no_capacity past MaxMachines,
// unschedulable, image_pull_failed, start_failed, machine_evicted,
// machine_exited), EINTERNAL.
func (d *Driver) Create(ctx context.Context, spec mc.MachineSpec) (mc.Machine, error) {
	if spec.ID == "" || spec.SessionID == "" {
		return mc.Machine{}, mc.Errorf(mc.EINVALID, mc.ReasonBadSpec, "create machine: spec needs an id and a session id")
	}
	if spec.Secrets.AgentToken.IsZero() || spec.Secrets.VNCPassword.IsZero() {
		return mc.Machine{}, mc.Errorf(mc.EINVALID, mc.ReasonNoMachineSecrets, "create machine %s: spec has no secrets", spec.ID)
	}
	w, h := spec.Width, spec.Height
	if w == 0 && h == 0 {
		w, h = 1280, 800
	}
	if w < 64 || h < 64 || w > 8192 || h > 8192 {
		return mc.Machine{}, mc.Errorf(mc.EINVALID, mc.ReasonBadGeometry, "create machine %s: geometry %dx%d out of range", spec.ID, w, h)
	}
	name := PodName(spec.ID)
	if err := d.reserve(spec.ID, name); err != nil {
		return mc.Machine{}, err
	}
	defer d.release(name)
	if err := ctx.Err(); err != nil {
		return mc.Machine{}, fmt.Errorf("create machine %s: %w", spec.ID, err)
	}

	t0 := time.Now()
	pods := d.client.CoreV1().Pods(d.cfg.Namespace)
	secrets := d.client.CoreV1().Secrets(d.cfg.Namespace)
	if _, err := secrets.Create(ctx, d.secretFor(spec), metav1.CreateOptions{}); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			// A request cut short may still have made it.
			d.cleanup(spec.ID)
		}
		return mc.Machine{}, d.apiErr(spec.ID, "create secret", err)
	}
	pod, err := pods.Create(ctx, d.podFor(spec, w, h), metav1.CreateOptions{})
	if err != nil {
		d.cleanup(spec.ID)
		return mc.Machine{}, d.apiErr(spec.ID, "create pod", err)
	}
	// The Secret goes with its Pod: the owner is known only now. Destroy
	// deletes it by name too, so a failure here leaks nothing.
	owned := make(chan struct{})
	go func() {
		defer close(owned)
		d.own(context.WithoutCancel(ctx), spec.ID, pod)
	}()
	m, err := d.waitAddress(ctx, spec.ID)
	<-owned
	if err != nil {
		d.cleanup(spec.ID)
		return mc.Machine{}, err
	}
	d.log.Debug("machine pod has an address", mc.LogMachineID, spec.ID, mc.LogSessionID, spec.SessionID,
		"pod", name, "ip", m.IP.String(), "seconds", time.Since(t0).Seconds())
	return m, nil
}

// reserve takes a slot of the cap for Pod name, or refuses past it.
func (d *Driver) reserve(id, name string) error {
	d.capMu.Lock()
	defer d.capMu.Unlock()
	if p := d.pod(id); p != nil {
		return mc.Errorf(mc.ECONFLICT, mc.ReasonMachineExists, "create machine %s: its pod exists", id)
	}
	if n := d.live(); n >= d.cfg.MaxMachines {
		return mc.Errorf(mc.EUNAVAILABLE, mc.ReasonNoCapacity,
			"create machine %s: the cluster holds %d machines, the cap (MC_MAX_MACHINES) is %d", id, n, d.cfg.MaxMachines)
	}
	d.mu.Lock()
	d.creating[name] = true
	d.mu.Unlock()
	return nil
}

func (d *Driver) release(name string) {
	d.mu.Lock()
	delete(d.creating, name)
	d.mu.Unlock()
}

// own makes Pod pod the owner of its Secret.
func (d *Driver) own(ctx context.Context, id string, pod *corev1.Pod) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	patch := fmt.Sprintf(`{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"Pod","name":%q,"uid":%q,"blockOwnerDeletion":false}]}}`,
		pod.Name, pod.UID)
	if _, err := d.client.CoreV1().Secrets(d.cfg.Namespace).Patch(ctx, pod.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil &&
		!apierrors.IsNotFound(err) {
		d.log.Warn("secret of machine pod not owned by it (Destroy deletes it by name)", mc.LogMachineID, id, mc.LogError, err.Error())
	}
}

// waitAddress waits until machine id's Pod has an IP, or says why it never
// will.
func (d *Driver) waitAddress(ctx context.Context, id string) (mc.Machine, error) {
	name := PodName(id)
	for {
		ch := d.next(name)
		p := d.pod(id)
		if p != nil {
			v := d.judge(id, p, d.isDestroying(name), d.now())
			if v.ended {
				if v.err == nil {
					v.err = mc.Errorf(mc.EUNAVAILABLE, mc.ReasonMachineExited, "machine %s: its pod ended before it had an address (%s)", id, p.Status.Phase)
				}
				return mc.Machine{}, fmt.Errorf("create machine %s: %w", id, v.err)
			}
			if m := d.machine(id, p); m.IP.IsValid() {
				if !d.cfg.Network.Contains(m.IP) {
					return mc.Machine{}, mc.Errorf(mc.EINTERNAL, mc.ReasonBadNetwork,
						"create machine %s: pod IP %v is outside the configured pod network %v", id, m.IP, d.cfg.Network)
				}
				return m, nil
			}
			if v.recheck > 0 {
				if err := sleep(ctx, ch, v.recheck); err != nil {
					return mc.Machine{}, fmt.Errorf("create machine %s: %w", id, err)
				}
				continue
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return mc.Machine{}, fmt.Errorf("create machine %s: %w", id, ctx.Err())
		}
	}
}

// sleep waits for ch, d or ctx, whichever first.
func sleep(ctx context.Context, ch <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// apiErr classifies an API server error of a request about machine id.
func (d *Driver) apiErr(id, what string, err error) error {
	switch {
	case apierrors.IsAlreadyExists(err):
		return mc.Errorf(mc.ECONFLICT, mc.ReasonMachineExists, "create machine %s: %s: %v", id, what, err)
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return mc.Errorf(mc.EINVALID, mc.ReasonBadSpec, "create machine %s: %s: %v", id, what, err)
	case apierrors.IsForbidden(err) && apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause),
		apierrors.IsTooManyRequests(err), apierrors.IsServerTimeout(err), apierrors.IsServiceUnavailable(err):
		return mc.Errorf(mc.EUNAVAILABLE, mc.ReasonNoCapacity, "create machine %s: %s: %v", id, what, err)
	case apierrors.IsForbidden(err):
		// A ResourceQuota of the namespace, or RBAC.
		return mc.Errorf(mc.EUNAVAILABLE, mc.ReasonNoCapacity, "create machine %s: %s: %v", id, what, err)
	}
	return fmt.Errorf("create machine %s: %s: %w", id, what, err)
}
