package session

import (
	"context"
	"fmt"
	"time"

	mc "github.com/master-controller/mc"
)

// Report says what one reconcile pass found and did.
type Report struct {
	// Destroyed are machines that no live session owned.
	Destroyed []string `json:"destroyed"`
	// Failed are sessions of this replica that nothing drives any more, or
	// whose machine was gone.
	Failed []string `json:"failed"`
	// Reclaimed counts leases freed because their owner had ended.
	Reclaimed int `json:"reclaimed"`
	// Adopted are pooled machines left running by an earlier process that
	// the pool keeps.
	Adopted []string `json:"adopted,omitempty"`
}

// Run reconciles once at once, then every ReconcileInterval, until ctx ends
// or the manager is closed.
func (m *Manager) Run(ctx context.Context) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(m.cfg.ReconcileInterval)
		defer t.Stop()
		first := true
		for {
			if _, err := m.Reconcile(ctx); err != nil && ctx.Err() == nil {
				m.log.Error("reconcile", "error", err, mc.LogReason, "reconcile_failed")
			}
			if first {
				// The pool fills once the first pass has adopted what an
				// earlier process left.
				first = false
				m.runPool(ctx)
			}
			select {
			case <-ctx.Done():
				return
			case <-m.life.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Reconcile compares what the driver finds on the host with the sessions in
// the store: it destroys machines that no live session owns, ends this
// replica's live sessions that no goroutine drives (left by a crash: reason
// controller_restart) or whose machine is gone (machine_missing), and
// reclaims leases whose owner ended.
func (m *Manager) Reconcile(ctx context.Context) (Report, error) {
	var rep Report
	machines, err := m.driver.List(ctx)
	if err != nil {
		return rep, fmt.Errorf("list machines: %w", err)
	}
	onHost := make(map[string]mc.MachineStatus, len(machines))
	for _, ms := range machines {
		onHost[ms.ID] = ms
	}
	pooled, err := m.reconcilePool(ctx, onHost, &rep)
	if err != nil {
		return rep, err
	}
	for _, ms := range machines {
		if m.pool.tracks(ms.ID) || pooled[ms.ID] {
			continue // pooled: looked after by this process, or another replica's
		}
		owner := ms.SessionID
		if owner == "" {
			owner = ms.ID
		}
		s, err := m.store.Session(ctx, owner)
		switch {
		case mc.ErrorCode(err) == mc.ENOTFOUND:
		case err != nil:
			return rep, fmt.Errorf("look up owner of machine %s: %w", ms.ID, err)
		case s.State.Active() && (s.Replica != m.cfg.Replica || m.Driving(s.ID)):
			continue // owned by a live session that someone drives
		case s.State.Active():
			// Ours, live, but nothing drives it: left by a crash.
			if _, err := m.end(ctx, s.ID, mc.StateFailed, mc.ReasonControllerRestart,
				"the controller restarted while the session was live"); err == nil {
				rep.Failed = append(rep.Failed, s.ID)
			}
		}
		if m.Driving(owner) {
			continue // its own goroutine tears it down
		}
		if err := m.driver.Destroy(ctx, ms.ID); err != nil {
			m.log.Error("destroy orphaned machine", mc.LogMachineID, ms.ID, "error", err, mc.LogReason, "destroy_failed")
			continue
		}
		rep.Destroyed = append(rep.Destroyed, ms.ID)
		m.log.Warn("destroyed orphaned machine", mc.LogMachineID, ms.ID, mc.LogReason, "orphaned_machine")
	}

	cursor := ""
	for {
		page, next, err := m.store.Sessions(ctx, mc.SessionFilter{Active: true, Limit: 500, Cursor: cursor})
		if err != nil {
			return rep, fmt.Errorf("list active sessions: %w", err)
		}
		for _, s := range page {
			if s.Replica != m.cfg.Replica {
				continue
			}
			switch {
			case !m.Driving(s.ID):
				if _, err := m.end(ctx, s.ID, mc.StateFailed, mc.ReasonControllerRestart,
					"the controller restarted while the session was live"); err == nil {
					rep.Failed = append(rep.Failed, s.ID)
					_ = m.driver.Destroy(ctx, s.ID)
				}
			case s.Machine.ID != "" && (s.State == mc.StateReady || s.State == mc.StateCapturing):
				if _, ok := onHost[s.Machine.ID]; !ok {
					if _, err := m.end(ctx, s.ID, mc.StateFailed, mc.ReasonMachineMissing,
						"the machine is no longer on the host"); err == nil {
						rep.Failed = append(rep.Failed, s.ID)
					}
				}
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}

	leases, err := m.store.ReclaimLeases(ctx)
	if err != nil {
		return rep, fmt.Errorf("reclaim leases: %w", err)
	}
	rep.Reclaimed = len(leases)
	if len(rep.Destroyed)+len(rep.Failed)+rep.Reclaimed+len(rep.Adopted) > 0 {
		m.log.Info("reconciled", "destroyed", len(rep.Destroyed), "failed", len(rep.Failed), "reclaimed", rep.Reclaimed,
			"adopted", len(rep.Adopted))
	}
	return rep, nil
}
