package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/master-controller/mc"
)

// Lease takes the lowest free value in [lo, hi] of pool for owner, or
// returns the value owner already holds there. Leases of one pool are
// serialized by a transaction-scoped advisory lock on the pool's name; the
// primary key (pool, value) stays the last line of defence.
func (s *Store) Lease(ctx context.Context, pool, owner string, lo, hi int) (int, error) {
	if pool == "" || owner == "" || lo > hi {
		return 0, mc.Errorf(mc.EINVALID, "bad_lease", "A lease needs a pool, an owner and lo <= hi.")
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, storeErr(err, "lease from pool %s for %s", pool, owner)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	v, err := lease(ctx, tx, pool, owner, lo, hi, s.now())
	if err != nil {
		return 0, storeErr(err, "lease from pool %s for %s", pool, owner)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, storeErr(err, "lease from pool %s for %s", pool, owner)
	}
	return v, nil
}

func lease(ctx context.Context, tx pgx.Tx, pool, owner string, lo, hi int, now time.Time) (int, error) {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('mc_lease:' || $1, 0))`, pool); err != nil {
		return 0, err
	}
	var v int32
	err := tx.QueryRow(ctx, `SELECT value FROM leases WHERE pool = $1 AND owner = $2`, pool, owner).Scan(&v)
	if err == nil || !errors.Is(err, pgx.ErrNoRows) {
		return int(v), err
	}
	// The lowest value in [lo, hi] that no lease holds: lo itself, or one
	// above a held value.
	var free *int32
	err = tx.QueryRow(ctx, `SELECT min(c.v) FROM (
			SELECT $2::integer AS v
			UNION ALL
			SELECT value + 1 FROM leases WHERE pool = $1 AND value >= $2 AND value < $3
		) c
		WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.pool = $1 AND l.value = c.v)`, pool, lo, hi).Scan(&free)
	if err != nil {
		return 0, err
	}
	if free == nil {
		return 0, mc.Errorf(mc.EUNAVAILABLE, "pool_exhausted", "No free value in pool %s.", pool)
	}
	_, err = tx.Exec(ctx, `INSERT INTO leases (pool, value, owner, at) VALUES ($1, $2, $3, $4)`, pool, *free, owner, now)
	return int(*free), err
}

// Release frees every lease of owner in pool.
func (s *Store) Release(ctx context.Context, pool, owner string) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return storeErr(err, "release %s in pool %s", owner, pool)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `DELETE FROM leases WHERE pool = $1 AND owner = $2`, pool, owner); err != nil {
		return storeErr(err, "release %s in pool %s", owner, pool)
	}
	if err := tx.Commit(ctx); err != nil {
		return storeErr(err, "release %s in pool %s", owner, pool)
	}
	return nil
}

// Leases lists the leases of pool ("" for every pool), by pool then value.
func (s *Store) Leases(ctx context.Context, pool string) ([]mc.Lease, error) {
	rows, err := s.pool.Query(ctx, `SELECT pool, value, owner, at FROM leases
		WHERE $1 = '' OR pool = $1 ORDER BY pool, value`, pool)
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
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, storeErr(err, "reclaim leases")
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	rows, err := tx.Query(ctx, `DELETE FROM leases WHERE owner NOT IN
		(SELECT id FROM sessions WHERE state NOT IN `+finalStates+`) RETURNING pool, value, owner, at`)
	if err != nil {
		return nil, storeErr(err, "reclaim leases")
	}
	leases, err := scanLeases(rows)
	if err != nil {
		return nil, storeErr(err, "reclaim leases")
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, storeErr(err, "reclaim leases")
	}
	return leases, nil
}

func scanLeases(rows pgx.Rows) ([]mc.Lease, error) {
	defer rows.Close()
	var leases []mc.Lease
	for rows.Next() {
		var (
			l mc.Lease
			v int32
		)
		if err := rows.Scan(&l.Pool, &v, &l.Owner, &l.At); err != nil {
			return nil, err
		}
		l.Value, l.At = int(v), l.At.UTC()
		leases = append(leases, l)
	}
	return leases, rows.Err()
}
