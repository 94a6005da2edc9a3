package sqlstore

import (
	"context"
	"database/sql"
	"errors"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/storekit"
)

func credentialNotFound(provider string) error {
	return mc.Errorf(mc.ENOTFOUND, mc.ReasonCredentialNotFound, "No credential of this user for provider %s.", provider)
}

// PutCredential inserts or replaces the record of (UserID, Provider).
func (s *Store) PutCredential(ctx context.Context, c mc.SealedCredential) error {
	if c.UserID == "" || c.Provider == "" {
		return mc.Errorf(mc.EINVALID, mc.ReasonBadCredential, "A credential needs a user id and a provider.")
	}
	if c.CapturedAt.IsZero() {
		c.CapturedAt = s.now()
	}
	return s.write(ctx, func(t tx) error {
		_, err := t.exec(ctx, `INSERT INTO credentials (user_id, provider, session_id, key_id, nonce, ciphertext, captured_at, meta)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (user_id, provider) DO UPDATE SET session_id = excluded.session_id, key_id = excluded.key_id,
				nonce = excluded.nonce, ciphertext = excluded.ciphertext, captured_at = excluded.captured_at, meta = excluded.meta`,
			c.UserID, c.Provider, c.SessionID, c.KeyID, nonNil(c.Nonce), nonNil(c.Ciphertext), s.d.Time(c.CapturedAt), storekit.MetaText(c.Meta))
		return err
	}, "put credential of %s/%s", c.UserID, c.Provider)
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

const credentialCols = `user_id, provider, session_id, key_id, nonce, ciphertext, captured_at, meta`

func scanCredential(row scanner) (mc.SealedCredential, error) {
	var c mc.SealedCredential
	var meta string
	err := row.Scan(&c.UserID, &c.Provider, &c.SessionID, &c.KeyID, &c.Nonce, &c.Ciphertext, timeOf{&c.CapturedAt}, &meta)
	c.Meta = storekit.ParseMeta(meta)
	return c, err
}

// Credential returns the record of (userID, provider).
func (s *Store) Credential(ctx context.Context, userID, provider string) (mc.SealedCredential, error) {
	c, err := scanCredential(s.r.QueryRowContext(ctx, s.q(`SELECT `+credentialCols+` FROM credentials
		WHERE user_id = ? AND provider = ?`), userID, provider))
	if errors.Is(err, sql.ErrNoRows) {
		return mc.SealedCredential{}, credentialNotFound(provider)
	}
	if err != nil {
		return mc.SealedCredential{}, s.err(err, "get credential of %s/%s", userID, provider)
	}
	return c, nil
}

// Credentials lists the records of userID ("" for every user), by user then
// provider.
func (s *Store) Credentials(ctx context.Context, userID string) ([]mc.SealedCredential, error) {
	var list []mc.SealedCredential
	err := s.read(ctx, func(t tx) (err error) {
		list, err = queryAll(ctx, t, scanCredential, `SELECT `+credentialCols+` FROM credentials
			WHERE ? = '' OR user_id = ? ORDER BY user_id, provider`, userID, userID)
		return err
	}, "list credentials of %s", userID)
	return list, err
}

// DeleteCredential removes the record of (userID, provider).
func (s *Store) DeleteCredential(ctx context.Context, userID, provider string) error {
	return s.write(ctx, func(t tx) error {
		deleted, err := affected(t.exec(ctx, `DELETE FROM credentials WHERE user_id = ? AND provider = ?`, userID, provider))
		if err == nil && !deleted {
			err = credentialNotFound(provider)
		}
		return err
	}, "delete credential of %s/%s", userID, provider)
}

// AppendAudit appends an entry to the audit log (At defaults to now).
func (s *Store) AppendAudit(ctx context.Context, e mc.AuditEntry) error {
	if e.At.IsZero() {
		e.At = s.now()
	}
	return s.write(ctx, func(t tx) error {
		_, err := t.exec(ctx, `INSERT INTO audit (at, actor, action, user_id, provider, outcome) VALUES (?, ?, ?, ?, ?, ?)`,
			s.d.Time(e.At), e.Actor, e.Action, e.UserID, e.Provider, e.Outcome)
		return err
	}, "append audit entry")
}

// Audit returns audit entries, newest first, at most f.Limit (50 for 0, 500 at most).
func (s *Store) Audit(ctx context.Context, f mc.AuditFilter) ([]mc.AuditEntry, error) {
	limit, err := storekit.PageSize(f.Limit)
	if err != nil {
		return nil, err
	}
	var list []mc.AuditEntry
	err = s.read(ctx, func(t tx) (err error) {
		list, err = queryAll(ctx, t, func(row scanner) (e mc.AuditEntry, err error) {
			err = row.Scan(&e.ID, timeOf{&e.At}, &e.Actor, &e.Action, &e.UserID, &e.Provider, &e.Outcome)
			return e, err
		}, `SELECT id, at, actor, action, user_id, provider, outcome FROM audit
			WHERE ? = '' OR user_id = ? ORDER BY id DESC LIMIT ?`, f.UserID, f.UserID, limit)
		return err
	}, "list audit entries")
	return list, err
}
