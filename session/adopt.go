package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/agentproto"
)

// Replicas that outlive each other. Every replica heartbeats in the store.
// With a cluster driver (Capabilities.Cluster) a session's machine outlives
// the replica that drives it, so when that replica stops gracefully (it
// marks itself stopping) or its heartbeat goes stale, another replica adopts
// its live sessions, one compare-and-set on the owner each, and drives them
// on from the state they are in: it watches the machine, polls the login,
// captures the credential and enforces the lifetimes. A replica that finds
// one of its sessions adopted stops driving it (it was taken for dead).
//
// With a host driver the machines die with their host: a graceful stop ends
// the sessions (controller_shutdown) and a crash leaves them to the
// replica's restart, which ends them (controller_restart). Nothing is
// adopted.

// errLost ends the driving of a session that another replica adopted.
var errLost = errors.New("session adopted by another replica")

// adoptAttempts bounds the compare-and-set of one adoption against changes
// that slip in between read and write.
const adoptAttempts = 3

// runReplica records this replica as running and starts its loop: a
// heartbeat every HeartbeatInterval and, with a cluster driver, a look for
// sessions to adopt (the first at once).
func (m *Manager) runReplica(ctx context.Context) {
	m.replicaOn.Store(true)
	if err := m.store.StartReplica(ctx, m.cfg.Replica, m.clock.Now().UTC()); err != nil {
		m.log.Warn("record replica start", mc.LogError, err, mc.LogReason, mc.ReasonHeartbeatFailed)
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			if _, err := m.Adopt(ctx); err != nil && ctx.Err() == nil && m.life.Err() == nil {
				m.log.Warn("adopt sessions", mc.LogError, err, mc.LogReason, mc.ReasonAdoptFailed)
			}
			select {
			case <-ctx.Done():
				return
			case <-m.life.Done():
				return
			case <-m.clock.After(m.cfg.HeartbeatInterval):
			}
			m.beat(ctx)
		}
	}()
}

// beat records this replica's heartbeat; a replica that another forgot, or
// that is still marked stopping, starts again.
func (m *Manager) beat(ctx context.Context) {
	now := m.clock.Now().UTC()
	r, err := m.store.Heartbeat(ctx, m.cfg.Replica, now)
	if mc.ErrorCode(err) == mc.ENOTFOUND || (err == nil && r.State != mc.ReplicaRunning) {
		// Forgotten by another replica, or still marked stopping by an
		// earlier process of this name whose start could not be recorded.
		err = m.store.StartReplica(ctx, m.cfg.Replica, now)
	}
	if err != nil && ctx.Err() == nil && m.life.Err() == nil {
		m.log.Warn("heartbeat", mc.LogError, err, mc.LogReason, mc.ReasonHeartbeatFailed)
		m.metrics.refused.WithLabelValues(string(mc.ReasonHeartbeatFailed)).Inc()
	}
}

// stopReplica marks this replica stopping (Close), once it drives nothing.
func (m *Manager) stopReplica() {
	if !m.replicaOn.Swap(false) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.store.StopReplica(ctx, m.cfg.Replica, m.clock.Now().UTC()); err != nil {
		m.log.Warn("record replica stop", mc.LogError, err, mc.LogReason, mc.ReasonHeartbeatFailed)
		return
	}
	if m.cluster {
		m.log.Info("replica stopping: its live sessions are handed over to the other replicas", mc.LogReason, mc.ReasonReplicaStopping)
	}
}

// Adopt looks once for replicas that stopped or whose heartbeat is older
// than ReplicaTimeout, and adopts their live sessions: of several replicas
// that look at once, exactly one adopts each session. It also removes the
// pooled machines of those replicas, and forgets a replica that has nothing
// left. It returns the ids of the sessions it adopted. With a host driver
// it does nothing: a replica's machines die with its host.
func (m *Manager) Adopt(ctx context.Context) ([]string, error) {
	if !m.cluster {
		return nil, nil
	}
	replicas, err := m.store.Replicas(ctx)
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", err)
	}
	now := m.clock.Now()
	var adopted []string
	for _, r := range replicas {
		if r.ID == m.cfg.Replica {
			continue
		}
		cause := mc.ReasonReplicaStopping
		if r.State != mc.ReplicaStopping {
			if now.Sub(r.HeartbeatAt) <= m.cfg.ReplicaTimeout {
				continue
			}
			cause = mc.ReasonHeartbeatStale
		}
		live, err := m.liveSessions(ctx, r.ID)
		if err != nil {
			return adopted, err
		}
		n := 0
		for _, s := range live {
			if m.adopt(ctx, s, cause) {
				adopted = append(adopted, s.ID)
				n++
			}
		}
		if n > 0 {
			m.log.Warn("adopted the sessions of a replica that stopped driving them", mc.LogFromReplica, r.ID,
				"state", r.State, "heartbeat_at", r.HeartbeatAt, "sessions", n, mc.LogReason, cause)
		}
		m.retirePoolOf(ctx, r.ID)
		if len(live) == 0 {
			if ok, err := m.store.ForgetReplica(ctx, r); err == nil && ok {
				m.log.Info("forgot a replica that stopped", mc.LogFromReplica, r.ID, mc.LogReason, cause)
			}
		}
	}
	return adopted, nil
}

// liveSessions returns the live sessions of replica ("" for every replica).
func (m *Manager) liveSessions(ctx context.Context, replica string) ([]*mc.Session, error) {
	var live []*mc.Session
	cursor := ""
	for {
		page, next, err := m.store.Sessions(ctx, mc.SessionFilter{Active: true, Replica: replica, Limit: 500, Cursor: cursor})
		if err != nil {
			return nil, fmt.Errorf("list active sessions: %w", err)
		}
		live = append(live, page...)
		if next == "" {
			return live, nil
		}
		cursor = next
	}
}

// adopt makes this replica the owner of s, read at s.Version from the
// replica that drove it, and drives it on. It reports whether it adopted
// it; false when another replica was first, or s changed owner or ended.
func (m *Manager) adopt(ctx context.Context, s *mc.Session, cause mc.Reason) bool {
	m.adoptMu.Lock()
	defer m.adoptMu.Unlock()
	from := s.Replica
	if m.life.Err() != nil {
		return false // stopping: what it adopted now, it would not drive
	}
	for range adoptAttempts {
		if m.Driving(s.ID) || s.State.Final() || s.Replica != from {
			return false
		}
		if d := s.Machine.Driver; d != "" && d != m.driver.Name() {
			return false // a machine of another runtime: not this replica's to drive
		}
		ns, err := m.store.AdoptSession(ctx, mc.Adoption{ID: s.ID, From: from, Version: s.Version, To: m.cfg.Replica,
			Message: fmt.Sprintf("adopted from replica %s (%s)", from, cause), At: m.clock.Now().UTC()})
		if mc.ErrorCode(err) == mc.ECONFLICT {
			if s, err = m.store.Session(ctx, s.ID); err != nil {
				return false
			}
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				m.log.Warn("adopt session", mc.LogSessionID, s.ID, mc.LogFromReplica, from, mc.LogError, err, mc.LogReason, mc.ReasonAdoptFailed)
				m.metrics.refused.WithLabelValues(string(mc.ReasonAdoptFailed)).Inc()
			}
			return false
		}
		m.metrics.adoptions.WithLabelValues(string(cause)).Inc()
		m.log.Info("session adopted", mc.LogSessionID, s.ID, mc.LogFromReplica, from, mc.LogToReplica, m.cfg.Replica,
			"state", ns.State, "cause", cause, mc.LogReason, mc.ReasonSessionAdopted)
		m.mu.Lock()
		m.adopted[ns.ID] = true
		m.mu.Unlock()
		m.drive(*ns, false)
		return true
	}
	return false
}

// retirePoolOf removes the pooled machines of a replica that stopped or is
// taken for dead, and has them destroyed: nobody else looks after them.
func (m *Manager) retirePoolOf(ctx context.Context, replica string) {
	list, err := m.store.PooledMachines(ctx, replica)
	if err != nil {
		return
	}
	for _, p := range list {
		if err := m.store.RemovePooled(ctx, p.ID); err != nil {
			continue // claimed or removed meanwhile
		}
		m.log.Info("removed a pooled machine of a replica that stopped", mc.LogMachineID, p.ID, mc.LogFromReplica, replica,
			mc.LogReason, mc.ReasonPoolOrphaned)
		m.retire(p.ID, mc.ReasonPoolOrphaned)
	}
}

// resume drives on an adopted session from the state it is in. A session
// that was not ready yet starts again (the user has seen nothing of it):
// whatever machine the previous replica started for it is destroyed first.
// A ready or capturing session goes on on its machine: the login that runs
// there is polled, not started again.
func (m *Manager) resume(ctx, sctx context.Context, id string, machineID *string, expires time.Time, log *slog.Logger) error {
	s, err := m.readSession(ctx, sctx, id)
	if err != nil {
		return err
	}
	if s.State != mc.StateReady && s.State != mc.StateCapturing {
		m.destroyMachines(ctx, s, log)
		return m.lifecycle(ctx, sctx, s, false, machineID, log)
	}
	prov, ok := m.providers.Get(s.Provider)
	if !ok {
		return failed(mc.ReasonUnknownProvider, fmt.Errorf("provider %q is no longer configured", s.Provider))
	}
	*machineID = s.Machine.ID
	if _, err := m.driver.Inspect(ctx, s.Machine.ID); mc.ErrorCode(err) == mc.ENOTFOUND {
		return failed(mc.ReasonMachineMissing, fmt.Errorf("the machine %s of the adopted session is gone", s.Machine.ID))
	}
	log.Info("driving an adopted session", mc.LogMachineID, s.Machine.ID, "state", s.State)
	agent := newAgentClient(s.Machine, m.machineKey.Secrets(s.ID).AgentToken)
	agent.resumed = true
	agent.gone = m.watchGone(ctx, id, s.Machine.ID, expires)
	return m.serve(ctx, id, expires, prov, agent, log)
}

// takeAdopted reports whether session id was adopted and is yet to be
// driven on, and forgets it.
func (m *Manager) takeAdopted(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	ok := m.adopted[id]
	delete(m.adopted, id)
	return ok
}

// readSession reads session id, retried like the writes that matter until
// sctx ends: a failed read must not send a session down the wrong path.
func (m *Manager) readSession(ctx, sctx context.Context, id string) (*mc.Session, error) {
	var s *mc.Session
	if err := m.persist(sctx, id, "read session", func(c context.Context) (err error) {
		s, err = m.store.Session(c, id)
		return err
	}); err != nil {
		return nil, storeFailed(ctx, "read session", err)
	}
	return s, nil
}

// destroyMachines destroys what the driver has of session s: the machines
// it lists for it and the one the session recorded.
func (m *Manager) destroyMachines(ctx context.Context, s *mc.Session, log *slog.Logger) {
	ids := map[string]bool{}
	if s.Machine.ID != "" {
		ids[s.Machine.ID] = true
	}
	if list, err := m.driver.List(ctx); err == nil {
		for _, ms := range list {
			if ms.SessionID == s.ID {
				ids[ms.ID] = true
			}
		}
	}
	for id := range ids {
		m.teardown(id, log)
	}
}

// startLogin starts the provider's login in the machine's agent. On an
// adopted session's machine the login may run already (or have ended):
// then it is only polled from here. A result that was handed to the
// previous replica, which stopped before sealing it, is lost.
func (m *Manager) startLogin(ctx context.Context, prov mc.Provider, agent *agentClient) error {
	if agent.resumed {
		st, err := agent.LoginStatus(ctx, 0, 0)
		if err != nil {
			return agentFailed(ctx, agent, mc.ReasonAgentError, fmt.Errorf("login status: %w", err))
		}
		switch {
		case st.State == agentproto.StateComplete && st.Delivered:
			return failed(mc.ReasonCaptureFailed, errors.New("the login's result went to a replica that stopped before sealing it"))
		case st.State != agentproto.StateIdle:
			return nil
		}
	}
	if _, err := agent.StartLogin(ctx, prov); err != nil {
		return agentFailed(ctx, agent, mc.ReasonAgentError, fmt.Errorf("start login: %w", err))
	}
	return nil
}
