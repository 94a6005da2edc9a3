package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/storekit"
)

const poolCols = `id, provider, replica, state, machine_id, machine_driver, machine_ip, vnc_port, agent_port,
	machine_socket_dir, created_at, ready_at`

func scanPooled(row scanner) (p mc.PooledMachine, err error) {
	err = row.Scan(&p.ID, &p.Provider, &p.Replica, &p.State, &p.Machine.ID, &p.Machine.Driver, ipOf{&p.Machine.IP},
		&p.Machine.VNCPort, &p.Machine.AgentPort, &p.Machine.SocketDir,
		timeOf{&p.CreatedAt}, timeOf{&p.ReadyAt})
	return p, err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func pooledNotFound(id string) error {
	return mc.Errorf(mc.ENOTFOUND, mc.ReasonNotPooled, "Machine %s is not in the pool.", id)
}

// AddPooled records a starting pooled machine and takes its capacity slot.
func (s *Store) AddPooled(ctx context.Context, p mc.PooledMachine, c mc.Capacity) error {
	switch {
	case !mc.ValidID(p.ID):
		return mc.Errorf(mc.EINVALID, mc.ReasonBadPooled, "The pooled machine's id is not valid.")
	case p.Provider == "" || p.CreatedAt.IsZero():
		return mc.Errorf(mc.EINVALID, mc.ReasonBadPooled, "A pooled machine needs a provider and a creation time.")
	}
	return s.write(ctx, func(t tx) error {
		inserted, err := affected(t.exec(ctx, `INSERT INTO pool_machines (`+poolCols+`)
			VALUES (?, ?, ?, 'starting', '', '', '', 0, 0, '', ?, NULL) ON CONFLICT DO NOTHING`,
			p.ID, p.Provider, p.Replica,
			s.d.Time(storekit.UTC(p.CreatedAt))))
		if err != nil {
			return err
		}
		if !inserted {
			return mc.Errorf(mc.ECONFLICT, mc.ReasonPooledExists, "A pooled machine with this id exists.")
		}
		return s.takeSlot(ctx, t, p.Replica, c)
	}, "add pooled machine %s", p.ID)
}

// PooledReady records the machine of a starting pooled machine.
func (s *Store) PooledReady(ctx context.Context, id string, m mc.Machine, at time.Time) error {
	return s.write(ctx, func(t tx) error {
		ok, err := affected(t.exec(ctx, `UPDATE pool_machines SET state = 'ready', machine_id = ?, machine_driver = ?,
			machine_ip = ?, vnc_port = ?, agent_port = ?, machine_socket_dir = ?, ready_at = ? WHERE id = ?`,
			m.ID, m.Driver, ipText(m.IP), m.VNCPort, m.AgentPort, m.SocketDir, s.d.Time(storekit.UTC(at)), id))
		if err == nil && !ok {
			err = pooledNotFound(id)
		}
		return err
	}, "mark pooled machine %s ready", id)
}

// RemovePooled takes a machine out of the pool and frees its slot.
func (s *Store) RemovePooled(ctx context.Context, id string) error {
	return s.write(ctx, func(t tx) error {
		var replica string
		err := t.row(ctx, `DELETE FROM pool_machines WHERE id = ? RETURNING replica`, id).Scan(&replica)
		if errors.Is(err, sql.ErrNoRows) {
			return pooledNotFound(id)
		}
		if err != nil {
			return err
		}
		return freeSlot(ctx, t, replica)
	}, "remove pooled machine %s", id)
}

// PooledMachines lists the pool of replica ("" for all), oldest first.
func (s *Store) PooledMachines(ctx context.Context, replica string) ([]mc.PooledMachine, error) {
	var list []mc.PooledMachine
	err := s.read(ctx, func(t tx) (err error) {
		list, err = queryAll(ctx, t, scanPooled, `SELECT `+poolCols+` FROM pool_machines
			WHERE ? = '' OR replica = ? ORDER BY created_at, id`, replica, replica)
		return err
	}, "list pooled machines of %q", replica)
	return list, err
}

// CreateSessionFromPool creates a session on a pooled machine when one is
// ready, else as CreateSession does, evicting a pooled machine when full.
func (s *Store) CreateSessionFromPool(ctx context.Context, sess *mc.Session, replica string, c mc.Capacity) (mc.Claim, error) {
	if err := storekit.CheckSession(sess); err != nil {
		return mc.Claim{}, err
	}
	var claim mc.Claim
	var row mc.Session
	err := s.write(ctx, func(t tx) error {
		claim, row = mc.Claim{}, *sess
		p, ok, err := s.claimPooled(ctx, t, sess.Provider, replica, c)
		if err != nil {
			return err
		}
		if !ok {
			prepareRow(&row, replica)
			return s.createSessionEvicting(ctx, t, &row, c, &claim)
		}
		claim.Pooled = true
		row.ID, row.Machine = p.ID, p.Machine
		row.Machine.Pooled = true
		prepareRow(&row, replica)
		row.State, row.ReadyAt, row.Version = mc.StateReady, row.CreatedAt, 2
		// The slot passes from the pool to the session: moved between
		// replica scopes when another replica's machine was claimed.
		if p.Replica != replica {
			if _, err := t.exec(ctx, `UPDATE slots SET active = active - 1 WHERE scope = ? AND active > 0`,
				replicaScope(p.Replica)); err != nil {
				return err
			}
			if _, err := t.exec(ctx, `INSERT INTO slots (scope, active) VALUES (?, 1)
				ON CONFLICT (scope) DO UPDATE SET active = slots.active + 1`, replicaScope(replica)); err != nil {
				return err
			}
		}
		return s.insertSession(ctx, t, &row, []mc.Event{
			{SessionID: row.ID, State: mc.StatePending, Replica: replica, At: row.CreatedAt},
			{SessionID: row.ID, From: mc.StatePending, State: mc.StateReady, Reason: mc.ReasonPooled,
				Message: "a pooled machine was ready", Replica: replica, At: row.CreatedAt},
		})
	}, "create session %s from the pool", sess.ID)
	if err != nil {
		return mc.Claim{}, err
	}
	*sess = row
	return claim, nil
}

// claimPooled deletes one ready pooled machine of provider and returns it.
// Candidates locked by another claim are skipped where the dialect can; else
// the DELETE of a row another transaction took waits for it and then
// changes nothing, and the next candidate is tried, until none is left.
func (s *Store) claimPooled(ctx context.Context, t tx, provider, replica string, c mc.Capacity) (mc.PooledMachine, bool, error) {
	scope := ""
	if c.PerReplica {
		scope = replica
	}
	skip := s.d.SkipLocked
	for range 100 {
		cands, err := queryAll(ctx, t, func(r scanner) (id string, err error) { return id, r.Scan(&id) },
			`SELECT id FROM pool_machines WHERE provider = ? AND state = 'ready' AND (? = '' OR replica = ?)
			ORDER BY ready_at, id LIMIT 4`+skip, provider, scope, scope)
		if err == nil && len(cands) == 0 && skip != "" {
			// Every candidate is locked by another claim, which may yet
			// roll back: wait for them rather than miss.
			skip = ""
			continue
		}
		if err != nil || len(cands) == 0 {
			return mc.PooledMachine{}, false, err
		}
		for _, id := range cands {
			p, err := scanPooled(t.row(ctx, `DELETE FROM pool_machines WHERE id = ? AND state = 'ready'
				RETURNING `+poolCols, id))
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			return p, err == nil, err
		}
	}
	return mc.PooledMachine{}, false, nil
}

// createSessionEvicting creates a cold session; when the bounded scope is
// full it first removes one pooled machine of that scope (another
// provider's first, then the youngest), whose slot the session takes.
func (s *Store) createSessionEvicting(ctx context.Context, t tx, row *mc.Session, c mc.Capacity, claim *mc.Claim) error {
	if c.Max > 0 {
		scope, pscope := allScope, ""
		if c.PerReplica {
			scope, pscope = replicaScope(row.Replica), row.Replica
		}
		var n int64
		err := t.row(ctx, `SELECT active FROM slots WHERE scope = ?`, scope).Scan(&n)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if n >= int64(c.Max) {
			victim, err := scanPooled(t.row(ctx, `DELETE FROM pool_machines WHERE id = (
					SELECT id FROM pool_machines WHERE (? = '' OR replica = ?)
					ORDER BY CASE WHEN provider = ? THEN 1 ELSE 0 END, created_at DESC, id LIMIT 1)
				RETURNING `+poolCols, pscope, pscope, row.Provider))
			switch {
			case err == nil:
				if err := freeSlot(ctx, t, victim.Replica); err != nil {
					return err
				}
				claim.Evicted = append(claim.Evicted, victim)
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
		}
	}
	return s.createSession(ctx, t, row, c)
}
