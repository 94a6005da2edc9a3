package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/storekit"
)

func credentialNotFound(provider string) error {
	return mc.Errorf(mc.ENOTFOUND, "credential_not_found", "No credential of this user for provider %s.", provider)
}

// PutCredential inserts or replaces the record of (UserID, Provider).
func (s *Store) PutCredential(ctx context.Context, c mc.SealedCredential) error {
	if c.UserID == "" || c.Provider == "" {
		return mc.Errorf(mc.EINVALID, "bad_credential", "A credential needs a user id and a provider.")
	}
	if c.CapturedAt.IsZero() {
		c.CapturedAt = s.now()
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return storeErr(err, "put credential of %s/%s", c.UserID, c.Provider)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	_, err = tx.Exec(ctx, `INSERT INTO credentials (user_id, provider, session_id, key_id, nonce, ciphertext, captured_at, meta)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (user_id, provider) DO UPDATE SET session_id = excluded.session_id, key_id = excluded.key_id,
			nonce = excluded.nonce, ciphertext = excluded.ciphertext, captured_at = excluded.captured_at, meta = excluded.meta`,
		c.UserID, c.Provider, c.SessionID, c.KeyID, nonNil(c.Nonce), nonNil(c.Ciphertext), storekit.UTC(c.CapturedAt), storekit.MetaText(c.Meta))
	if err != nil {
		return storeErr(err, "put credential of %s/%s", c.UserID, c.Provider)
	}
	if err := tx.Commit(ctx); err != nil {
		return storeErr(err, "put credential of %s/%s", c.UserID, c.Provider)
	}
	return nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

const credentialCols = `user_id, provider, session_id, key_id, nonce, ciphertext, captured_at, meta`

func scanCredential(row pgx.Row) (mc.SealedCredential, error) {
	var c mc.SealedCredential
	var meta string
	err := row.Scan(&c.UserID, &c.Provider, &c.SessionID, &c.KeyID, &c.Nonce, &c.Ciphertext, &c.CapturedAt, &meta)
	c.CapturedAt = c.CapturedAt.UTC()
	c.Meta = storekit.ParseMeta(meta)
	return c, err
}

// Credential returns the record of (userID, provider).
func (s *Store) Credential(ctx context.Context, userID, provider string) (mc.SealedCredential, error) {
	c, err := scanCredential(s.pool.QueryRow(ctx, `SELECT `+credentialCols+` FROM credentials
		WHERE user_id = $1 AND provider = $2`, userID, provider))
	if errors.Is(err, pgx.ErrNoRows) {
		return mc.SealedCredential{}, credentialNotFound(provider)
	}
	if err != nil {
		return mc.SealedCredential{}, storeErr(err, "get credential of %s/%s", userID, provider)
	}
	return c, nil
}

// Credentials lists the records of userID ("" for every user), by user then
// provider.
func (s *Store) Credentials(ctx context.Context, userID string) ([]mc.SealedCredential, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+credentialCols+` FROM credentials
		WHERE $1 = '' OR user_id = $1 ORDER BY user_id, provider`, userID)
	if err != nil {
		return nil, storeErr(err, "list credentials of %s", userID)
	}
	defer rows.Close()
	var list []mc.SealedCredential
	for rows.Next() {
		c, err := scanCredential(rows)
		if err != nil {
			return nil, storeErr(err, "list credentials of %s", userID)
		}
		list = append(list, c)
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr(err, "list credentials of %s", userID)
	}
	return list, nil
}

// DeleteCredential removes the record of (userID, provider).
func (s *Store) DeleteCredential(ctx context.Context, userID, provider string) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return storeErr(err, "delete credential of %s/%s", userID, provider)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	tag, err := tx.Exec(ctx, `DELETE FROM credentials WHERE user_id = $1 AND provider = $2`, userID, provider)
	if err != nil {
		return storeErr(err, "delete credential of %s/%s", userID, provider)
	}
	if tag.RowsAffected() == 0 {
		return credentialNotFound(provider)
	}
	if err := tx.Commit(ctx); err != nil {
		return storeErr(err, "delete credential of %s/%s", userID, provider)
	}
	return nil
}

// AppendAudit appends an entry to the audit log (At defaults to now).
func (s *Store) AppendAudit(ctx context.Context, e mc.AuditEntry) error {
	if e.At.IsZero() {
		e.At = s.now()
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return storeErr(err, "append audit entry")
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `INSERT INTO audit (at, actor, action, user_id, provider, outcome) VALUES ($1, $2, $3, $4, $5, $6)`,
		storekit.UTC(e.At), e.Actor, e.Action, e.UserID, e.Provider, e.Outcome); err != nil {
		return storeErr(err, "append audit entry")
	}
	if err := tx.Commit(ctx); err != nil {
		return storeErr(err, "append audit entry")
	}
	return nil
}

// Audit returns audit entries, newest first, at most f.Limit (50 for 0, 500 at most).
func (s *Store) Audit(ctx context.Context, f mc.AuditFilter) ([]mc.AuditEntry, error) {
	limit, err := storekit.PageSize(f.Limit)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT id, at, actor, action, user_id, provider, outcome FROM audit
		WHERE $1 = '' OR user_id = $1 ORDER BY id DESC LIMIT $2`, f.UserID, limit)
	if err != nil {
		return nil, storeErr(err, "list audit entries")
	}
	defer rows.Close()
	var list []mc.AuditEntry
	for rows.Next() {
		var e mc.AuditEntry
		if err := rows.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.UserID, &e.Provider, &e.Outcome); err != nil {
			return nil, storeErr(err, "list audit entries")
		}
		e.At = e.At.UTC()
		list = append(list, e)
	}
	if err := rows.Err(); err != nil {
		return nil, storeErr(err, "list audit entries")
	}
	return list, nil
}

// EnsureSecret returns the secret stored under name, storing value first when
// there is none (the first writer wins).
func (s *Store) EnsureSecret(ctx context.Context, name string, value mc.Secret) (mc.Secret, error) {
	if name == "" || value.IsZero() {
		return mc.Secret{}, mc.Errorf(mc.EINVALID, "bad_secret", "A secret needs a name and a value.")
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return mc.Secret{}, storeErr(err, "ensure secret %s", name)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// ON CONFLICT waits for a concurrent first writer, so the SELECT after it
	// sees the winner's value (read committed).
	if _, err := tx.Exec(ctx, `INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO NOTHING`, name, value.Reveal(), s.now()); err != nil {
		return mc.Secret{}, storeErr(err, "ensure secret %s", name)
	}
	var v string
	if err := tx.QueryRow(ctx, `SELECT value FROM secrets WHERE name = $1`, name).Scan(&v); err != nil {
		return mc.Secret{}, storeErr(err, "ensure secret %s", name)
	}
	if err := tx.Commit(ctx); err != nil {
		return mc.Secret{}, storeErr(err, "ensure secret %s", name)
	}
	return mc.SecretOf(v), nil
}
