package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/storekit"
)

func replicaNotFound(id string) error {
	return mc.Errorf(mc.ENOTFOUND, mc.ReasonReplicaNotFound, "No replica %q.", id)
}

func scanReplica(row scanner) (r mc.Replica, err error) {
	err = row.Scan(&r.ID, &r.State, timeOf{&r.StartedAt}, timeOf{&r.HeartbeatAt})
	return r, err
}

// StartReplica records a replica as running, started and heartbeating at at.
func (s *Store) StartReplica(ctx context.Context, id string, at time.Time) error {
	if id == "" {
		return replicaNotFound(id)
	}
	at = storekit.UTC(at)
	return s.write(ctx, func(t tx) error {
		_, err := t.exec(ctx, `INSERT INTO replicas (id, state, started_at, heartbeat_at) VALUES (?, 'running', ?, ?)
			ON CONFLICT (id) DO UPDATE SET state = 'running', started_at = excluded.started_at,
				heartbeat_at = excluded.heartbeat_at`, id, s.d.Time(at), s.d.Time(at))
		return err
	}, "start replica %s", id)
}

// Heartbeat records that a replica is alive at at; an older time is ignored.
func (s *Store) Heartbeat(ctx context.Context, id string, at time.Time) (mc.Replica, error) {
	at = storekit.UTC(at)
	var r mc.Replica
	err := s.write(ctx, func(t tx) (err error) {
		if _, err := t.exec(ctx, `UPDATE replicas SET heartbeat_at = ? WHERE id = ? AND heartbeat_at < ?`,
			s.d.Time(at), id, s.d.Time(at)); err != nil {
			return err
		}
		r, err = scanReplica(t.row(ctx, `SELECT id, state, started_at, heartbeat_at FROM replicas WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return replicaNotFound(id)
		}
		return err
	}, "heartbeat of replica %s", id)
	return r, err
}

// StopReplica marks a replica stopping.
func (s *Store) StopReplica(ctx context.Context, id string, at time.Time) error {
	return s.write(ctx, func(t tx) error {
		_, err := t.exec(ctx, `UPDATE replicas SET state = 'stopping', heartbeat_at = ? WHERE id = ?`,
			s.d.Time(storekit.UTC(at)), id)
		return err
	}, "stop replica %s", id)
}

// Replicas lists every replica, ordered by id.
func (s *Store) Replicas(ctx context.Context) ([]mc.Replica, error) {
	var list []mc.Replica
	err := s.read(ctx, func(t tx) (err error) {
		list, err = queryAll(ctx, t, scanReplica, `SELECT id, state, started_at, heartbeat_at FROM replicas ORDER BY id`)
		return err
	}, "list replicas")
	if err != nil {
		return nil, err
	}
	if list == nil {
		list = []mc.Replica{}
	}
	return list, nil
}

// ForgetReplica removes a replica that did not come back and owns nothing.
func (s *Store) ForgetReplica(ctx context.Context, r mc.Replica) (bool, error) {
	var removed bool
	err := s.write(ctx, func(t tx) (err error) {
		removed, err = affected(t.exec(ctx, `DELETE FROM replicas
			WHERE id = ? AND state = ? AND started_at = ? AND heartbeat_at = ?
			AND NOT EXISTS (SELECT 1 FROM sessions WHERE replica = ? AND state NOT IN `+finalStates+`)
			AND NOT EXISTS (SELECT 1 FROM pool_machines WHERE replica = ?)`,
			r.ID, string(r.State), s.d.Time(storekit.UTC(r.StartedAt)), s.d.Time(storekit.UTC(r.HeartbeatAt)), r.ID, r.ID))
		return err
	}, "forget replica %s", r.ID)
	return removed, err
}

// AdoptSession moves a live session to another replica by compare-and-set
// on its owner and version, with its slot and an event.
func (s *Store) AdoptSession(ctx context.Context, a mc.Adoption) (*mc.Session, error) {
	if a.To == "" {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadSession, "An adoption needs the adopting replica.")
	}
	if a.At.IsZero() {
		a.At = s.now()
	}
	a.At = storekit.UTC(a.At)
	return s.change(ctx, a.ID, func(t tx) (*mc.Session, error) {
		sess, err := scanSession(t.row(ctx, `UPDATE sessions SET replica = ?, version = version + 1, updated_at = ?
			WHERE id = ? AND replica = ? AND version = ? AND state NOT IN `+finalStates+` RETURNING `+sessionCols,
			a.To, s.d.Time(a.At), a.ID, a.From, a.Version))
		if errors.Is(err, sql.ErrNoRows) {
			return nil, stale(ctx, t, a.ID)
		}
		if err != nil {
			return nil, err
		}
		if err := appendEvent(ctx, t, mc.Event{SessionID: a.ID, From: sess.State, State: sess.State,
			Reason: mc.ReasonSessionAdopted, Message: a.Message, Replica: a.To, At: a.At}); err != nil {
			return nil, err
		}
		return sess, moveSlot(ctx, t, a.From, a.To)
	}, "adopt session %s", a.ID)
}
