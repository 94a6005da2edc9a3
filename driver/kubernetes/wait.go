package kubernetes

import (
	"context"

	corev1 "k8s.io/api/core/v1"

	mc "github.com/master-controller/mc"
)

// Wait blocks until machine id's Pod ends or goes, as the watch sees it.
// It returns nil when the machine exited or a controller destroyed it, and
// an EUNAVAILABLE error whose reason says why otherwise: machine_oom (the
// container was OOM-killed), machine_evicted (the Pod was deleted by
// someone else, evicted or preempted), image_pull_failed, unschedulable
// (after UnschedulableWait), start_failed (the runtime cannot create the
// container: a seccomp profile or runtime class missing on the node).
//
// How soon it sees a crash is the kubelet's: it notices a dead container
// on its next relist (every second; containerd 1.6 has no events for the
// kubelet's evented PLEG) and reports it before it tears the sandbox down,
// which Wait does not wait for: 0.2–1.1 s from the kill here (waiting for
// the Pod's final phase took 1.3–1.9 s). A deletion is seen within
// milliseconds.
// Errors: ENOTFOUND, EUNAVAILABLE (machine_oom, machine_evicted,
// image_pull_failed, unschedulable, start_failed).
func (d *Driver) Wait(ctx context.Context, id string) error {
	name := PodName(id)
	var last *corev1.Pod
	for {
		ch := d.next(name)
		p := d.pod(id)
		if p == nil && last == nil {
			// Deleted just before this Wait began by someone else than a
			// controller: its last state says how it ended. Destroyed, it
			// is unknown.
			if last = d.final(name); last == nil || last.Annotations[annotMachineID] != id || last.Annotations[annotDestroying] != "" {
				return mc.Errorf(mc.ENOTFOUND, mc.ReasonMachineNotFound, "wait for machine %s: no pod", id)
			}
		}
		destroyed := d.isDestroying(name)
		if p == nil {
			// Gone: read its last state, which the deletion may have
			// updated (the destroy mark).
			if f := d.final(name); f != nil {
				last = f
			}
			destroyed = destroyed || last.Annotations[annotDestroying] != ""
			if v := d.judge(id, last, destroyed, d.now()); v.ended && v.err != nil {
				return v.err
			}
		}
		v := d.judge(id, p, destroyed, d.now())
		if v.ended {
			return v.err
		}
		last = p
		var err error
		d.waits.Add(1)
		if v.recheck > 0 {
			err = sleep(ctx, ch, v.recheck)
		} else {
			select {
			case <-ch:
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		d.waits.Add(-1)
		if err != nil {
			return err
		}
	}
}
