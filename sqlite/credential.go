package sqlite

import (
	"context"
	"database/sql"
	"errors"

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
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "put credential of %s/%s", c.UserID, c.Provider)
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO credentials (user_id, provider, session_id, key_id, nonce, ciphertext, captured_at, meta)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (user_id, provider) DO UPDATE SET session_id = excluded.session_id, key_id = excluded.key_id,
			nonce = excluded.nonce, ciphertext = excluded.ciphertext, captured_at = excluded.captured_at, meta = excluded.meta`,
		c.UserID, c.Provider, c.SessionID, c.KeyID, nonNil(c.Nonce), nonNil(c.Ciphertext), micros(c.CapturedAt), storekit.MetaText(c.Meta))
	if err != nil {
		return storeErr(err, "put credential of %s/%s", c.UserID, c.Provider)
	}
	if err := tx.Commit(); err != nil {
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

func scanCredential(row scanner) (mc.SealedCredential, error) {
	var (
		c    mc.SealedCredential
		at   int64
		meta string
	)
	err := row.Scan(&c.UserID, &c.Provider, &c.SessionID, &c.KeyID, &c.Nonce, &c.Ciphertext, &at, &meta)
	c.CapturedAt = fromMicros(at)
	c.Meta = storekit.ParseMeta(meta)
	return c, err
}

// Credential returns the record of (userID, provider).
func (s *Store) Credential(ctx context.Context, userID, provider string) (mc.SealedCredential, error) {
	c, err := scanCredential(s.r.QueryRowContext(ctx, `SELECT `+credentialCols+` FROM credentials
		WHERE user_id = ? AND provider = ?`, userID, provider))
	if errors.Is(err, sql.ErrNoRows) {
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
	rows, err := s.r.QueryContext(ctx, `SELECT `+credentialCols+` FROM credentials
		WHERE ? = '' OR user_id = ? ORDER BY user_id, provider`, userID, userID)
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
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "delete credential of %s/%s", userID, provider)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM credentials WHERE user_id = ? AND provider = ?`, userID, provider)
	if err != nil {
		return storeErr(err, "delete credential of %s/%s", userID, provider)
	}
	if n, err := res.RowsAffected(); err != nil {
		return storeErr(err, "delete credential of %s/%s", userID, provider)
	} else if n == 0 {
		return credentialNotFound(provider)
	}
	if err := tx.Commit(); err != nil {
		return storeErr(err, "delete credential of %s/%s", userID, provider)
	}
	return nil
}

// AppendAudit appends an entry to the audit log (At defaults to now).
func (s *Store) AppendAudit(ctx context.Context, e mc.AuditEntry) error {
	if e.At.IsZero() {
		e.At = s.now()
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "append audit entry")
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit (at, actor, action, user_id, provider, outcome) VALUES (?, ?, ?, ?, ?, ?)`,
		micros(e.At), e.Actor, e.Action, e.UserID, e.Provider, e.Outcome); err != nil {
		return storeErr(err, "append audit entry")
	}
	if err := tx.Commit(); err != nil {
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
	rows, err := s.r.QueryContext(ctx, `SELECT id, at, actor, action, user_id, provider, outcome FROM audit
		WHERE ? = '' OR user_id = ? ORDER BY id DESC LIMIT ?`, f.UserID, f.UserID, limit)
	if err != nil {
		return nil, storeErr(err, "list audit entries")
	}
	defer rows.Close()
	var list []mc.AuditEntry
	for rows.Next() {
		var (
			e  mc.AuditEntry
			at int64
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.UserID, &e.Provider, &e.Outcome); err != nil {
			return nil, storeErr(err, "list audit entries")
		}
		e.At = fromMicros(at)
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
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return mc.Secret{}, storeErr(err, "ensure secret %s", name)
	}
	defer tx.Rollback()
	var v string
	if _, err := tx.ExecContext(ctx, `INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO NOTHING`, name, value.Reveal(), micros(s.now())); err != nil {
		return mc.Secret{}, storeErr(err, "ensure secret %s", name)
	}
	if err := tx.QueryRowContext(ctx, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v); err != nil {
		return mc.Secret{}, storeErr(err, "ensure secret %s", name)
	}
	if err := tx.Commit(); err != nil {
		return mc.Secret{}, storeErr(err, "ensure secret %s", name)
	}
	return mc.SecretOf(v), nil
}
