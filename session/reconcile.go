package session

import (
	"context"
	"fmt"
	"slices"
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
	// AdoptedSessions are live sessions whose machines outlived the
	// process that drove them (a cluster driver), driven on from here: this
	// replica's own, left by its earlier process, and those of replicas
	// the store has no heartbeat of.
	AdoptedSessions []string `json:"adopted_sessions,omitempty"`
}

// Run reconciles once at once, then every ReconcileInterval, until ctx ends
// or the manager is closed.
func (m *Manager) Run(ctx context.Context) {
	m.runReplica(ctx)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(m.cfg.ReconcileInterval)
		defer t.Stop()
		first := true
		for {
			if _, err := m.Reconcile(ctx); err != nil && ctx.Err() == nil {
				m.log.Error("reconcile", mc.LogError, err, mc.LogReason, mc.ReasonReconcileFailed)
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
// controller_restart, or max_lifetime past their lifetime) or whose machine
// is gone (machine_missing), and reclaims leases whose owner ended.
//
// With a cluster driver the machines outlive the process: this replica's
// live sessions that nothing drives are adopted and driven on instead of
// ended, and so are those of replicas that the store has no heartbeat of.
// A cluster driver lists every replica's machines: a machine of another
// replica's live session is left alone, and so is one whose session that
// replica ended moments ago (it destroys it after the destroy grace).
//
// The view is consistent: the live sessions are read first and the host's
// machines after, so a session seen ready had its machine before the host
// was listed; a session is ended only at the version that was read (a
// session that changed meanwhile is left to the next pass); and a session
// younger than the start timeout is never ended if this process may be
// starting it (created, not yet driven; driven, machine not yet listed).
// Sessions created before this manager began are no one's start in flight:
// an earlier process left them, and they end at once.
func (m *Manager) Reconcile(ctx context.Context) (Report, error) {
	var rep Report
	live, err := m.liveSessions(ctx, "")
	if err != nil {
		return rep, err
	}
	machines, err := m.driver.List(ctx)
	if err != nil {
		return rep, fmt.Errorf("list machines: %w", err)
	}

	onHost := make(map[string]mc.MachineStatus, len(machines))
	ofSession := make(map[string][]string) // session id → its machines' ids on the host
	for _, ms := range machines {
		onHost[ms.ID] = ms
	}
	pooled, err := m.reconcilePool(ctx, onHost, &rep)
	if err != nil {
		return rep, err
	}
	for _, ms := range machines {
		if !has(onHost, ms.ID) {
			continue // destroyed with its pool row above
		}
		if m.pool.tracks(ms.ID) || pooled[ms.ID] {
			continue // pooled: looked after by this process, or another replica's
		}
		owner := ms.SessionID
		if owner == "" {
			owner = ms.ID
		}
		ofSession[owner] = append(ofSession[owner], ms.ID)
		if m.Driving(owner) {
			continue // its own goroutine tears it down
		}
		s, err := m.store.Session(ctx, owner)
		noSession := mc.ErrorCode(err) == mc.ENOTFOUND
		switch {
		case noSession:
		case err != nil:
			return rep, fmt.Errorf("look up owner of machine %s: %w", ms.ID, err)
		case s.State.Active():
			continue // a live session owns it; the sessions below are checked next
		case m.cluster && s.Replica != m.cfg.Replica && m.clock.Now().Sub(s.EndedAt) < m.cfg.DestroyGrace+teardownTimeout:
			continue // its replica destroys it after the destroy grace
		}
		if err := m.driver.Destroy(ctx, ms.ID); err != nil {
			m.log.Error("destroy orphaned machine", mc.LogMachineID, ms.ID, mc.LogError, err, mc.LogReason, mc.ReasonDestroyFailed)
			continue
		}
		rep.Destroyed = append(rep.Destroyed, ms.ID)
		if ms.Pooled && noSession {
			// Started for the pool, never claimed, and no longer in it: a
			// process stopped between taking its row out and destroying it.
			m.pool.retired.WithLabelValues(string(mc.ReasonPoolOrphaned)).Inc()
			m.log.Warn("destroyed pooled machine left by an earlier process", mc.LogMachineID, ms.ID, mc.LogReason, mc.ReasonPoolOrphaned)
			continue
		}
		m.log.Warn("destroyed orphaned machine", mc.LogMachineID, ms.ID, mc.LogReason, mc.ReasonOrphanedMachine)
	}

	known, err := m.knownReplicas(ctx)
	if err != nil {
		return rep, err
	}
	now := m.clock.Now()
	for _, s := range live {
		if s.Replica != m.cfg.Replica {
			// A cluster's session whose replica has no heartbeat at all
			// (forgotten, or from before replicas heartbeat).
			if m.cluster && !known[s.Replica] && now.Sub(s.CreatedAt) > m.cfg.ReplicaTimeout &&
				m.adopt(ctx, s, mc.ReasonHeartbeatStale) {
				rep.AdoptedSessions = append(rep.AdoptedSessions, s.ID)
			}
			continue
		}
		if !s.CreatedAt.Before(m.began) && now.Sub(s.CreatedAt) < m.cfg.StartTimeout {
			continue // this process may be starting it (created, not yet driven)
		}
		switch {
		case !m.Driving(s.ID) && m.cluster:
			// Ours, live, nothing drives it, but its machine outlived the
			// process that did: driven on.
			if m.adopt(ctx, s, mc.ReasonReplicaRestarted) {
				rep.AdoptedSessions = append(rep.AdoptedSessions, s.ID)
			}
		case !m.Driving(s.ID):
			// Ours, live, but nothing drives it: left by a crash.
			to, reason, msg := mc.StateFailed, mc.ReasonControllerRestart, "the controller restarted while the session was live"
			if !now.Before(s.ExpiresAt) {
				to, reason, msg = mc.StateExpired, mc.ReasonMaxLifetime, "the session reached its maximum lifetime"
			}
			if m.endAt(ctx, s, to, reason, msg) {
				rep.Failed = append(rep.Failed, s.ID)
				// The machines the host lists for the session, and the one
				// it recorded (Destroy is idempotent).
				ids := ofSession[s.ID]
				if s.Machine.ID != "" && !slices.Contains(ids, s.Machine.ID) {
					ids = append(ids, s.Machine.ID)
				}
				for _, mid := range ids {
					if err := m.driver.Destroy(ctx, mid); err != nil {
						m.log.Error("destroy machine", mc.LogMachineID, mid, mc.LogSessionID, s.ID, mc.LogError, err, mc.LogReason, mc.ReasonDestroyFailed)
					} else if has(onHost, mid) {
						rep.Destroyed = append(rep.Destroyed, mid)
					}
				}
			}
		case s.Machine.ID != "" && (s.State == mc.StateReady || s.State == mc.StateCapturing) && !has(onHost, s.Machine.ID):
			if m.endAt(ctx, s, mc.StateFailed, mc.ReasonMachineMissing, "the machine is no longer on the host") {
				rep.Failed = append(rep.Failed, s.ID)
			}
		}
	}

	// What the host still has keeps its leases, though its session ended:
	// its Destroy, in flight, releases them once it is gone.
	var keep []string
	for _, ms := range machines {
		if slices.Contains(rep.Destroyed, ms.ID) {
			continue
		}
		keep = append(keep, ms.ID)
		if ms.SessionID != "" {
			keep = append(keep, ms.SessionID)
		}
	}
	leases, err := m.store.ReclaimLeases(ctx, keep)
	if err != nil {
		return rep, fmt.Errorf("reclaim leases: %w", err)
	}
	rep.Reclaimed = len(leases)
	if len(rep.Destroyed)+len(rep.Failed)+rep.Reclaimed+len(rep.Adopted)+len(rep.AdoptedSessions) > 0 {
		m.log.Info("reconciled", "destroyed", len(rep.Destroyed), "failed", len(rep.Failed), "reclaimed", rep.Reclaimed,
			"adopted", len(rep.Adopted), "adopted_sessions", len(rep.AdoptedSessions))
	}
	return rep, nil
}

// endAt ends s only if it is still at the state and version that were read
// (compare-and-set, no retry): a session that changed meanwhile is someone
// else's to decide. It reports whether it ended the session.
func (m *Manager) endAt(ctx context.Context, s *mc.Session, to mc.State, reason mc.Reason, msg string) bool {
	_, err := m.store.Transition(ctx, mc.Transition{ID: s.ID, From: s.State, Version: s.Version,
		To: to, Reason: reason, Message: msg, Replica: m.cfg.Replica, At: m.clock.Now().UTC()})
	if err != nil {
		if mc.ErrorCode(err) != mc.ECONFLICT && ctx.Err() == nil {
			m.log.Error("reconcile end session", mc.LogSessionID, s.ID, mc.LogError, err, mc.LogReason, mc.ErrorReason(err))
		}
		return false
	}
	m.transitions(to, reason)
	m.log.Warn("session ended", mc.LogSessionID, s.ID, "state", to, mc.LogReason, reason, "message", msg)
	return true
}

// knownReplicas returns the replicas the store has a heartbeat of (only
// with a cluster driver, which adopts the sessions of the others).
func (m *Manager) knownReplicas(ctx context.Context) (map[string]bool, error) {
	known := map[string]bool{m.cfg.Replica: true}
	if !m.cluster {
		return known, nil
	}
	list, err := m.store.Replicas(ctx)
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	for _, r := range list {
		known[r.ID] = true
	}
	return known, nil
}

// has reports whether the host has machine id.
func has(onHost map[string]mc.MachineStatus, id string) bool {
	_, ok := onHost[id]
	return ok
}
