package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"slices"

	"github.com/master-controller/mc"
)

// Lease takes the lowest free value in [lo, hi] of pool for owner, or
// returns the value owner already holds there. Leases of one pool are
// serialized (the dialect's LeaseLock, or SQLite's single writer); the
// primary key (pool, value) stays the last line of defence.
func (s *Store) Lease(ctx context.Context, pool, owner string, lo, hi int) (int, error) {
	if pool == "" || owner == "" || lo > hi {
		return 0, mc.Errorf(mc.EINVALID, mc.ReasonBadLease, "A lease needs a pool, an owner and lo <= hi.")
	}
	var v int
	err := s.write(ctx, func(t tx) (err error) {
		v, err = s.lease(ctx, t, pool, owner, lo, hi)
		return err
	}, "lease from pool %s for %s", pool, owner)
	return v, err
}

func (s *Store) lease(ctx context.Context, t tx, pool, owner string, lo, hi int) (int, error) {
	if s.d.LeaseLock != "" {
		if _, err := t.exec(ctx, s.d.LeaseLock, pool); err != nil {
			return 0, err
		}
	}
	var v int
	err := t.row(ctx, `SELECT value FROM leases WHERE pool = ? AND owner = ?`, pool, owner).Scan(&v)
	if err == nil || !errors.Is(err, sql.ErrNoRows) {
		return v, err
	}
	// The lowest value in [lo, hi] that no lease holds: lo itself, or one
	// above a held value.
	var free sql.NullInt64
	err = t.row(ctx, `SELECT min(c.v) FROM (
			SELECT CAST(? AS INTEGER) AS v
			UNION ALL
			SELECT value + 1 FROM leases WHERE pool = ? AND value >= ? AND value < ?
		) c
		WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.pool = ? AND l.value = c.v)`,
		lo, pool, lo, hi, pool).Scan(&free)
	if err != nil {
		return 0, err
	}
	if !free.Valid {
		return 0, mc.Errorf(mc.EUNAVAILABLE, mc.ReasonPoolExhausted, "No free value in pool %s.", pool)
	}
	_, err = t.exec(ctx, `INSERT INTO leases (pool, value, owner, at) VALUES (?, ?, ?, ?)`, pool, free.Int64, owner, s.d.Time(s.now()))
	return int(free.Int64), err
}

// Release frees every lease of owner in pool.
func (s *Store) Release(ctx context.Context, pool, owner string) error {
	return s.write(ctx, func(t tx) error {
		_, err := t.exec(ctx, `DELETE FROM leases WHERE pool = ? AND owner = ?`, pool, owner)
		return err
	}, "release %s in pool %s", owner, pool)
}

// Leases lists the leases of pool ("" for every pool), by pool then value.
func (s *Store) Leases(ctx context.Context, pool string) ([]mc.Lease, error) {
	var leases []mc.Lease
	err := s.read(ctx, func(t tx) (err error) {
		leases, err = queryAll(ctx, t, scanLease, `SELECT pool, value, owner, at FROM leases
			WHERE ? = '' OR pool = ? ORDER BY pool, value`, pool, pool)
		return err
	}, "list leases of pool %s", pool)
	return leases, err
}

// ReclaimLeases frees the leases whose owner is a final session or no
// session at all, but for the owners in keep; a pooled machine's leases
// stay.
func (s *Store) ReclaimLeases(ctx context.Context, keep []string) ([]mc.Lease, error) {
	var leases []mc.Lease
	err := s.write(ctx, func(t tx) error {
		leases = nil
		found, err := queryAll(ctx, t, scanLease, `SELECT pool, value, owner, at FROM leases WHERE owner NOT IN
			(SELECT id FROM sessions WHERE state NOT IN `+finalStates+`)
			AND owner NOT IN (SELECT id FROM pool_machines)`)
		if err != nil {
			return err
		}
		for _, l := range found {
			if slices.Contains(keep, l.Owner) {
				continue
			}
			if _, err := t.exec(ctx, `DELETE FROM leases WHERE pool = ? AND value = ? AND owner = ?`, l.Pool, l.Value, l.Owner); err != nil {
				return err
			}
			leases = append(leases, l)
		}
		return nil
	}, "reclaim leases")
	return leases, err
}

func scanLease(row scanner) (l mc.Lease, err error) {
	err = row.Scan(&l.Pool, &l.Value, &l.Owner, timeOf{&l.At})
	return l, err
}
