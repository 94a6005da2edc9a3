package kubernetes

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	mc "github.com/master-controller/mc"
)

// Destroy deletes machine id's Pod and Secret and returns once the Pod is
// gone (its containers stopped, its address free). It marks the Pod first,
// so that every replica's Wait reads the deletion as a destroy, not an
// eviction. It is idempotent and works after a partial Create.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	name := PodName(id)
	d.mu.Lock()
	d.destroying[name] = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.destroying, name)
		d.mu.Unlock()
	}()
	pods := d.client.CoreV1().Pods(d.cfg.Namespace)
	if p := d.pod(id); p != nil && p.DeletionTimestamp == nil && p.Annotations[annotDestroying] == "" {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, annotDestroying, d.cfg.Replica)
		if _, err := pods.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("destroy machine %s: mark pod: %w", id, err)
		}
	}
	grace := int64(d.cfg.DestroyGrace.Seconds())
	if err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("destroy machine %s: delete pod: %w", id, err)
	}
	// The Pod owns it, but a Create cut short before that leaves it
	// unowned; either way it goes now, not when the collector gets to it.
	if err := d.client.CoreV1().Secrets(d.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("destroy machine %s: delete secret: %w", id, err)
	}
	return d.waitGone(ctx, id)
}

// cleanup is Destroy after a failed Create, bounded, whatever ctx was.
func (d *Driver) cleanup(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Destroy(ctx, id); err != nil {
		d.log.Warn("remove machine after failed create", mc.LogMachineID, id, mc.LogReason, mc.ReasonDestroyFailed, mc.LogError, err.Error())
	}
}

// waitGone waits until the cache has no Pod of machine id. A Pod still
// there well past its grace period (its node is gone, so no kubelet
// confirms the end of its containers) is deleted at once.
func (d *Driver) waitGone(ctx context.Context, id string) error {
	name := PodName(id)
	force := time.NewTimer(d.cfg.DestroyGrace + 10*time.Second)
	defer force.Stop()
	for {
		ch := d.next(name)
		if d.pod(id) == nil {
			return nil
		}
		select {
		case <-ch:
		case <-force.C:
			zero := int64(0)
			err := d.client.CoreV1().Pods(d.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("destroy machine %s: force the deletion of its pod: %w", id, err)
			}
			d.log.Warn("machine pod outlived its grace period; deleted at once (is its node gone?)", mc.LogMachineID, id,
				mc.LogReason, mc.ReasonDestroyFailed)
		case <-ctx.Done():
			return fmt.Errorf("destroy machine %s: wait for its pod to go: %w", id, ctx.Err())
		}
	}
}

func (d *Driver) isDestroying(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.destroying[name]
}
