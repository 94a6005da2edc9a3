package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/master-controller/mc"
)

// Lease takes the lowest free value in [lo, hi] of pool for owner, or
// returns the value owner already holds there.
func (s *Store) Lease(ctx context.Context, pool, owner string, lo, hi int) (int, error) {
	if pool == "" || owner == "" || lo > hi {
		return 0, mc.Errorf(mc.EINVALID, "bad_lease", "A lease needs a pool, an owner and lo <= hi.")
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, storeErr(err, "lease from pool %s for %s", pool, owner)
	}
	defer tx.Rollback()
	v, err := lease(ctx, tx, pool, owner, lo, hi, s.now())
	if err != nil {
		return 0, storeErr(err, "lease from pool %s for %s", pool, owner)
	}
	if err := tx.Commit(); err != nil {
		return 0, storeErr(err, "lease from pool %s for %s", pool, owner)
	}
	return v, nil
}

func lease(ctx context.Context, tx *sql.Tx, pool, owner string, lo, hi int, now time.Time) (int, error) {
	var v int
	err := tx.QueryRowContext(ctx, `SELECT value FROM leases WHERE pool = ? AND owner = ?`, pool, owner).Scan(&v)
	if err == nil || !errors.Is(err, sql.ErrNoRows) {
		return v, err
	}
	free, err := lowestFree(ctx, tx, pool, lo, hi)
	if err != nil {
		return 0, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO leases (pool, value, owner, at) VALUES (?, ?, ?, ?)`, pool, free, owner, micros(now))
	return free, err
}

// lowestFree walks the taken values of [lo, hi] in order and returns the
// first gap. Pools are small (a subnet, a port range).
func lowestFree(ctx context.Context, tx *sql.Tx, pool string, lo, hi int) (int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT value FROM leases WHERE pool = ? AND value BETWEEN ? AND ? ORDER BY value`, pool, lo, hi)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	next := lo
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return 0, err
		}
		if v != next {
			break
		}
		next++
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if next > hi {
		return 0, mc.Errorf(mc.EUNAVAILABLE, "pool_exhausted", "No free value in pool %s.", pool)
	}
	return next, nil
}

// Release frees every lease of owner in pool.
func (s *Store) Release(ctx context.Context, pool, owner string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "release %s in pool %s", owner, pool)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM leases WHERE pool = ? AND owner = ?`, pool, owner); err != nil {
		return storeErr(err, "release %s in pool %s", owner, pool)
	}
	if err := tx.Commit(); err != nil {
		return storeErr(err, "release %s in pool %s", owner, pool)
	}
	return nil
}

// Leases lists the leases of pool ("" for every pool), by pool then value.
func (s *Store) Leases(ctx context.Context, pool string) ([]mc.Lease, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT pool, value, owner, at FROM leases
		WHERE ? = '' OR pool = ? ORDER BY pool, value`, pool, pool)
	if err != nil {
		return nil, storeErr(err, "list leases of pool %s", pool)
	}
	leases, err := scanLeases(rows)
	if err != nil {
		return nil, storeErr(err, "list leases of pool %s", pool)
	}
	return leases, nil
}

// ReclaimLeases frees the leases whose owner is a final session or no
// session at all.
func (s *Store) ReclaimLeases(ctx context.Context) ([]mc.Lease, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, storeErr(err, "reclaim leases")
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `DELETE FROM leases WHERE owner NOT IN
		(SELECT id FROM sessions WHERE state NOT IN `+finalStates+`) RETURNING pool, value, owner, at`)
	if err != nil {
		return nil, storeErr(err, "reclaim leases")
	}
	leases, err := scanLeases(rows)
	if err != nil {
		return nil, storeErr(err, "reclaim leases")
	}
	if err := tx.Commit(); err != nil {
		return nil, storeErr(err, "reclaim leases")
	}
	return leases, nil
}

func scanLeases(rows *sql.Rows) ([]mc.Lease, error) {
	defer rows.Close()
	var leases []mc.Lease
	for rows.Next() {
		var (
			l  mc.Lease
			at int64
		)
		if err := rows.Scan(&l.Pool, &l.Value, &l.Owner, &at); err != nil {
			return nil, err
		}
		l.At = fromMicros(at)
		leases = append(leases, l)
	}
	return leases, rows.Err()
}
