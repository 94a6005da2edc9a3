package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/master-controller/mc"
)

// The scopes of the slots table: every replica's live sessions, and one
// replica's. A live session counts under the replica column it was created
// with; whatever changes that column of a live session (adoption by another
// replica) must move its count in the same transaction.
const allScope = "*"

func replicaScope(replica string) string { return "replica:" + replica }

// takeSlot counts a new live session in both scopes, refusing when the
// scope that c bounds is full. Both counters are taken in one order (all,
// then the replica's), as freeSlot does, so that two transactions never wait
// on each other in a cycle. It runs last in CreateSession's transaction, so
// the counter rows stay locked (PostgreSQL) for the commit only.
func (s *Store) takeSlot(ctx context.Context, t tx, replica string, c mc.Capacity) error {
	bounded := allScope
	if c.PerReplica {
		bounded = replicaScope(replica)
	}
	for _, scope := range []string{allScope, replicaScope(replica)} {
		limit := int64(math.MaxInt64)
		if scope == bounded && c.Max > 0 {
			limit = int64(c.Max)
		}
		var n int64
		err := t.row(ctx, `INSERT INTO slots (scope, active) VALUES (?, 1)
			ON CONFLICT (scope) DO UPDATE SET active = slots.active + 1 WHERE slots.active < ?
			RETURNING active`, scope, limit).Scan(&n)
		if errors.Is(err, sql.ErrNoRows) {
			return &mc.Error{Code: mc.EUNAVAILABLE, Reason: mc.ReasonCapacity, RetryAfter: 30 * time.Second,
				Message: fmt.Sprintf("All %d machines are in use; try again later.", c.Max)}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// freeSlot uncounts a session that has reached a final state.
func freeSlot(ctx context.Context, t tx, replica string) error {
	for _, scope := range []string{allScope, replicaScope(replica)} {
		if _, err := t.exec(ctx, `UPDATE slots SET active = active - 1 WHERE scope = ? AND active > 0`, scope); err != nil {
			return err
		}
	}
	return nil
}

// moveSlot moves a live session's count from one replica's scope to
// another's (an adoption), without a bound: the session is counted already.
// The two rows are updated in the order of their names, so that two
// adoptions never wait on each other in a cycle.
func moveSlot(ctx context.Context, t tx, from, to string) error {
	if from == to {
		return nil
	}
	steps := []struct {
		scope string
		delta int
	}{{replicaScope(from), -1}, {replicaScope(to), 1}}
	if steps[1].scope < steps[0].scope {
		steps[0], steps[1] = steps[1], steps[0]
	}
	for _, st := range steps {
		var err error
		if st.delta < 0 {
			_, err = t.exec(ctx, `UPDATE slots SET active = active - 1 WHERE scope = ? AND active > 0`, st.scope)
		} else {
			_, err = t.exec(ctx, `INSERT INTO slots (scope, active) VALUES (?, 1)
				ON CONFLICT (scope) DO UPDATE SET active = slots.active + 1`, st.scope)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// CountActive returns the number of live sessions of every replica ("") or
// of one: one row read, whatever the number of sessions, less the pooled
// machines (a few rows) that hold slots too.
func (s *Store) CountActive(ctx context.Context, replica string) (int, error) {
	scope := allScope
	if replica != "" {
		scope = replicaScope(replica)
	}
	var n int64
	err := s.r.QueryRowContext(ctx, s.q(`SELECT active - (SELECT count(*) FROM pool_machines WHERE ? = '' OR replica = ?)
		FROM slots WHERE scope = ?`), replica, replica, scope).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, s.err(err, "count active sessions of %q", replica)
	}
	return int(n), nil
}
