package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/storekit"
)

// querier is what the helpers need of a *sql.DB or *sql.Tx.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const sessionCols = `id, user_id, provider, state, reason, machine_id, machine_driver, machine_ip,
	vnc_port, agent_port, vnc_password, agent_token, created_at, updated_at, ready_at, ended_at,
	expires_at, active_at, viewer, replica, version, login`

const finalStates = `('completed', 'failed', 'cancelled', 'expired')`

type scanner interface{ Scan(dest ...any) error }

func scanSession(row scanner) (*mc.Session, error) {
	var (
		s                         mc.Session
		ip, vncPassword, agentTok string
		created, updated, expires int64
		active                    int64
		ready, ended              sql.NullInt64
		login                     string
	)
	err := row.Scan(&s.ID, &s.UserID, &s.Provider, &s.State, &s.Reason, &s.Machine.ID, &s.Machine.Driver, &ip,
		&s.Machine.VNCPort, &s.Machine.AgentPort, &vncPassword, &agentTok, &created, &updated, &ready, &ended,
		&expires, &active, &s.Viewer, &s.Replica, &s.Version, &login)
	if err != nil {
		return nil, err
	}
	if s.Login, err = storekit.ParseLogin(s.ID, login); err != nil {
		return nil, err
	}
	if ip != "" {
		if s.Machine.IP, err = netip.ParseAddr(ip); err != nil {
			return nil, fmt.Errorf("session %s: machine ip: %w", s.ID, err)
		}
	}
	s.Secrets = mc.MachineSecrets{VNCPassword: mc.SecretOf(vncPassword), AgentToken: mc.SecretOf(agentTok)}
	s.CreatedAt, s.UpdatedAt, s.ExpiresAt, s.ActiveAt = fromMicros(created), fromMicros(updated), fromMicros(expires), fromMicros(active)
	s.ReadyAt, s.EndedAt = fromNullMicros(ready), fromNullMicros(ended)
	return &s, nil
}

func ipText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// CreateSession inserts s in state pending at version 1, with its first event.
func (s *Store) CreateSession(ctx context.Context, sess *mc.Session, replica string) error {
	if err := storekit.CheckSession(sess); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "create session %s", sess.ID)
	}
	defer tx.Rollback()
	if err := createSession(ctx, tx, sess, replica); err != nil {
		return storeErr(err, "create session %s", sess.ID)
	}
	if err := tx.Commit(); err != nil {
		return storeErr(err, "create session %s", sess.ID)
	}
	return nil
}

func createSession(ctx context.Context, tx *sql.Tx, sess *mc.Session, replica string) error {
	c := *sess
	c.State, c.Reason, c.Version, c.Viewer, c.Replica = mc.StatePending, "", 1, "", replica
	c.CreatedAt, c.ExpiresAt = storekit.UTC(c.CreatedAt), storekit.UTC(c.ExpiresAt)
	c.ReadyAt, c.EndedAt = time.Time{}, time.Time{}
	c.UpdatedAt, c.ActiveAt = c.CreatedAt, c.CreatedAt
	_, err := tx.ExecContext(ctx, `INSERT INTO sessions (`+sessionCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?, ?, '')`,
		c.ID, c.UserID, c.Provider, c.State, c.Reason, c.Machine.ID, c.Machine.Driver, ipText(c.Machine.IP),
		c.Machine.VNCPort, c.Machine.AgentPort, c.Secrets.VNCPassword.Reveal(), c.Secrets.AgentToken.Reveal(),
		micros(c.CreatedAt), micros(c.UpdatedAt), micros(c.ExpiresAt), micros(c.ActiveAt), c.Viewer, c.Replica, c.Version)
	if isUnique(err) {
		// Either the id exists or the user has an active session for the
		// provider (the partial unique index sessions_one_active).
		var existing string
		qerr := tx.QueryRowContext(ctx, `SELECT id FROM sessions
			WHERE user_id = ? AND provider = ? AND state NOT IN `+finalStates, c.UserID, c.Provider).Scan(&existing)
		switch {
		case qerr == nil:
			return &mc.Error{Code: mc.ECONFLICT, Reason: "active_session", SessionID: existing,
				Message: "The user already has an active session for this provider."}
		case errors.Is(qerr, sql.ErrNoRows):
			return &mc.Error{Code: mc.ECONFLICT, Reason: "session_exists", SessionID: c.ID,
				Message: "A session with this id exists."}
		}
		return qerr
	}
	if err != nil {
		return err
	}
	if err := appendEvent(ctx, tx, mc.Event{SessionID: c.ID, State: c.State, Replica: replica, At: c.CreatedAt}); err != nil {
		return err
	}
	*sess = c
	return nil
}

func appendEvent(ctx context.Context, tx *sql.Tx, e mc.Event) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO session_events (session_id, seq, from_state, state, reason, message, replica, at)
		SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ?, ? FROM session_events WHERE session_id = ?`,
		e.SessionID, e.From, e.State, e.Reason, e.Message, e.Replica, micros(e.At), e.SessionID)
	return err
}

// Session returns the session with the given id. A single statement needs no
// explicit transaction: it reads one consistent snapshot.
func (s *Store) Session(ctx context.Context, id string) (*mc.Session, error) {
	sess, err := getSession(ctx, s.reader(ctx), id)
	if err != nil {
		return nil, storeErr(err, "get session %s", id)
	}
	return sess, nil
}

// session is the hub's read.
func (s *Store) session(ctx context.Context, id string) (*mc.Session, error) {
	return s.Session(ctx, id)
}

const getSessionSQL = `SELECT ` + sessionCols + ` FROM sessions WHERE id = ?`

// preparedGet runs the prepared session read whatever query it is given.
type preparedGet struct{ stmt *sql.Stmt }

func (p preparedGet) QueryRowContext(ctx context.Context, _ string, args ...any) *sql.Row {
	return p.stmt.QueryRowContext(ctx, args...)
}

// reader returns the prepared session read, or the read pool when it cannot
// be prepared (yet).
func (s *Store) reader(ctx context.Context) interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
} {
	s.getMu.Lock()
	defer s.getMu.Unlock()
	if s.getStmt == nil {
		stmt, err := s.r.PrepareContext(ctx, getSessionSQL)
		if err != nil {
			return s.r
		}
		s.getStmt = stmt
	}
	return preparedGet{s.getStmt}
}

func getSession(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}, id string) (*mc.Session, error) {
	if !mc.ValidID(id) {
		return nil, storekit.NotFound(id)
	}
	sess, err := scanSession(q.QueryRowContext(ctx, getSessionSQL, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storekit.NotFound(id)
	}
	return sess, err
}

// Sessions returns one page of sessions, newest first.
func (s *Store) Sessions(ctx context.Context, f mc.SessionFilter) ([]*mc.Session, string, error) {
	list, next, err := listSessions(ctx, s.r, f)
	if err != nil {
		return nil, "", storeErr(err, "list sessions")
	}
	return list, next, nil
}

func listSessions(ctx context.Context, q querier, f mc.SessionFilter) ([]*mc.Session, string, error) {
	limit, err := storekit.PageSize(f.Limit)
	if err != nil {
		return nil, "", err
	}
	var (
		where []string
		args  []any
	)
	if f.UserID != "" {
		where, args = append(where, "user_id = ?"), append(args, f.UserID)
	}
	if f.Provider != "" {
		where, args = append(where, "provider = ?"), append(args, f.Provider)
	}
	if f.State != "" {
		if !f.State.Valid() {
			return nil, "", mc.Errorf(mc.EINVALID, "bad_state", "Unknown state %q.", f.State)
		}
		where, args = append(where, "state = ?"), append(args, f.State)
	}
	if f.Active {
		where = append(where, "state NOT IN "+finalStates)
	}
	if f.Cursor != "" {
		at, id, err := storekit.DecodeCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_at < ? OR (created_at = ? AND id < ?))")
		args = append(args, micros(at), micros(at), id)
	}
	query := `SELECT ` + sessionCols + ` FROM sessions`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	query += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, limit+1)
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	list := make([]*mc.Session, 0, limit)
	for rows.Next() {
		sess, err := scanSession(rows)
		if err != nil {
			return nil, "", err
		}
		list = append(list, sess)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(list) > limit {
		list = list[:limit]
		last := list[limit-1]
		next = storekit.EncodeCursor(last.CreatedAt, last.ID)
	}
	return list, next, nil
}

// Transition moves a session from t.From to t.To by compare-and-set.
func (s *Store) Transition(ctx context.Context, t mc.Transition) (*mc.Session, error) {
	if err := storekit.CheckTransition(t); err != nil {
		return nil, err
	}
	if t.At.IsZero() {
		t.At = s.now()
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, storeErr(err, "transition session %s", t.ID)
	}
	defer tx.Rollback()
	sess, err := transition(ctx, tx, t)
	if err != nil {
		return nil, storeErr(err, "transition session %s", t.ID)
	}
	if err := tx.Commit(); err != nil {
		return nil, storeErr(err, "transition session %s", t.ID)
	}
	s.publish(t.ID)
	return sess, nil
}

func transition(ctx context.Context, tx *sql.Tx, t mc.Transition) (*mc.Session, error) {
	at := storekit.UTC(t.At)
	set := []string{"state = ?", "version = version + 1", "updated_at = ?"}
	args := []any{t.To, micros(at)}
	if t.To == mc.StateReady {
		set, args = append(set, "ready_at = ?"), append(args, micros(at))
	}
	if t.To.Final() {
		set = append(set, "ended_at = ?", "reason = ?")
		args = append(args, micros(at), t.Reason)
	}
	if m := t.Machine; m != nil {
		set = append(set, "machine_id = ?", "machine_driver = ?", "machine_ip = ?", "vnc_port = ?", "agent_port = ?")
		args = append(args, m.ID, m.Driver, ipText(m.IP), m.VNCPort, m.AgentPort)
	}
	args = append(args, t.ID, t.From, t.Version)
	sess, err := scanSession(tx.QueryRowContext(ctx, `UPDATE sessions SET `+strings.Join(set, ", ")+`
		WHERE id = ? AND state = ? AND version = ? RETURNING `+sessionCols, args...))
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := getSession(ctx, tx, t.ID); err != nil {
			return nil, err
		}
		return nil, storekit.Stale(t.ID)
	}
	if err != nil {
		return nil, err
	}
	err = appendEvent(ctx, tx, mc.Event{SessionID: t.ID, From: t.From, State: t.To, Reason: t.Reason,
		Message: t.Message, Replica: t.Replica, At: at})
	return sess, err
}

// SetMachine records the machine and its secrets by compare-and-set on version.
func (s *Store) SetMachine(ctx context.Context, id string, version int64, m mc.Machine, secrets mc.MachineSecrets) (*mc.Session, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, storeErr(err, "set machine of session %s", id)
	}
	defer tx.Rollback()
	sess, err := setMachine(ctx, tx, id, version, m, secrets, s.now())
	if err != nil {
		return nil, storeErr(err, "set machine of session %s", id)
	}
	if err := tx.Commit(); err != nil {
		return nil, storeErr(err, "set machine of session %s", id)
	}
	s.publish(id)
	return sess, nil
}

func setMachine(ctx context.Context, tx *sql.Tx, id string, version int64, m mc.Machine, secrets mc.MachineSecrets, now time.Time) (*mc.Session, error) {
	sess, err := scanSession(tx.QueryRowContext(ctx, `UPDATE sessions SET
		machine_id = ?, machine_driver = ?, machine_ip = ?, vnc_port = ?, agent_port = ?,
		vnc_password = ?, agent_token = ?, version = version + 1, updated_at = ?
		WHERE id = ? AND version = ? AND state NOT IN `+finalStates+` RETURNING `+sessionCols,
		m.ID, m.Driver, ipText(m.IP), m.VNCPort, m.AgentPort, secrets.VNCPassword.Reveal(), secrets.AgentToken.Reveal(),
		micros(now), id, version))
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := getSession(ctx, tx, id); err != nil {
			return nil, err
		}
		return nil, storekit.Stale(id)
	}
	return sess, err
}

// Touch records activity at a time; an older time than the stored one is ignored.
func (s *Store) Touch(ctx context.Context, id string, at time.Time) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "touch session %s", id)
	}
	defer tx.Rollback()
	if err := touch(ctx, tx, id, at); err != nil {
		return storeErr(err, "touch session %s", id)
	}
	if err := tx.Commit(); err != nil {
		return storeErr(err, "touch session %s", id)
	}
	return nil
}

func touch(ctx context.Context, tx *sql.Tx, id string, at time.Time) error {
	res, err := tx.ExecContext(ctx, `UPDATE sessions SET active_at = ? WHERE id = ? AND active_at < ?`, micros(at), id, micros(at))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		return err
	}
	_, err = getSession(ctx, tx, id)
	return err
}

// ClaimViewer records the session's current viewer and publishes the change
// without changing Version.
func (s *Store) ClaimViewer(ctx context.Context, id, viewer string) (*mc.Session, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, storeErr(err, "claim viewer of session %s", id)
	}
	defer tx.Rollback()
	sess, err := claimViewer(ctx, tx, id, viewer)
	if err != nil {
		return nil, storeErr(err, "claim viewer of session %s", id)
	}
	if err := tx.Commit(); err != nil {
		return nil, storeErr(err, "claim viewer of session %s", id)
	}
	s.publish(id)
	return sess, nil
}

func claimViewer(ctx context.Context, tx *sql.Tx, id, viewer string) (*mc.Session, error) {
	if !mc.ValidID(id) {
		return nil, storekit.NotFound(id)
	}
	sess, err := scanSession(tx.QueryRowContext(ctx, `UPDATE sessions SET viewer = ? WHERE id = ? RETURNING `+sessionCols, viewer, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storekit.NotFound(id)
	}
	return sess, err
}

// Events returns a session's event log, oldest first.
func (s *Store) Events(ctx context.Context, id string) ([]mc.Event, error) {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, storeErr(err, "list events of session %s", id)
	}
	defer tx.Rollback()
	events, err := listEvents(ctx, tx, id)
	if err != nil {
		return nil, storeErr(err, "list events of session %s", id)
	}
	if err := tx.Commit(); err != nil {
		return nil, storeErr(err, "list events of session %s", id)
	}
	return events, nil
}

func listEvents(ctx context.Context, tx *sql.Tx, id string) ([]mc.Event, error) {
	rows, err := tx.QueryContext(ctx, `SELECT session_id, seq, from_state, state, reason, message, replica, at
		FROM session_events WHERE session_id = ? ORDER BY seq`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var events []mc.Event
	for rows.Next() {
		var (
			e  mc.Event
			at int64
		)
		if err := rows.Scan(&e.SessionID, &e.Seq, &e.From, &e.State, &e.Reason, &e.Message, &e.Replica, &at); err != nil {
			return nil, err
		}
		e.At = fromMicros(at)
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(events) == 0 {
		if _, err := getSession(ctx, tx, id); err != nil {
			return nil, err
		}
	}
	return events, nil
}

// Watch returns a channel of the session's newest value; see mc.SessionStore.
func (s *Store) Watch(ctx context.Context, id string) (<-chan *mc.Session, error) {
	ch, err := s.hub.Watch(ctx, id)
	if err != nil {
		return nil, storeErr(err, "watch session %s", id)
	}
	return ch, nil
}

// SetLogin records a live session's login progress and its event, without
// changing Version, and publishes the change.
func (s *Store) SetLogin(ctx context.Context, id string, p mc.LoginProgress, replica string) (*mc.Session, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, storeErr(err, "set login of session %s", id)
	}
	defer tx.Rollback()
	sess, err := setLogin(ctx, tx, id, p, replica)
	if err != nil {
		return nil, storeErr(err, "set login of session %s", id)
	}
	if err := tx.Commit(); err != nil {
		return nil, storeErr(err, "set login of session %s", id)
	}
	s.publish(id)
	return sess, nil
}

func setLogin(ctx context.Context, tx *sql.Tx, id string, p mc.LoginProgress, replica string) (*mc.Session, error) {
	if !mc.ValidID(id) {
		return nil, storekit.NotFound(id)
	}
	p.UpdatedAt = storekit.UTC(p.UpdatedAt)
	sess, err := scanSession(tx.QueryRowContext(ctx, `UPDATE sessions SET login = ?
		WHERE id = ? AND state NOT IN `+finalStates+` RETURNING `+sessionCols, storekit.LoginText(&p), id))
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := getSession(ctx, tx, id); err != nil {
			return nil, err
		}
		return nil, storekit.Stale(id)
	}
	if err != nil {
		return nil, err
	}
	return sess, appendEvent(ctx, tx, storekit.LoginEvent(sess, p, replica))
}
