package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/storekit"
)

// querier is what the helpers need of a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const sessionCols = `id, user_id, provider, state, reason, machine_id, machine_driver, machine_ip,
	vnc_port, agent_port, vnc_password, agent_token, created_at, updated_at, ready_at, ended_at,
	expires_at, active_at, viewer, replica, version, login`

const finalStates = `('completed', 'failed', 'cancelled', 'expired')`

func scanSession(row pgx.Row) (*mc.Session, error) {
	var (
		s                                 mc.Session
		state, reason                     string
		ip, vncPassword, agentTok         string
		created, updated, expires, active time.Time
		ready, ended                      *time.Time
		vncPort, agentPort                int32
		login                             string
	)
	err := row.Scan(&s.ID, &s.UserID, &s.Provider, &state, &reason, &s.Machine.ID, &s.Machine.Driver, &ip,
		&vncPort, &agentPort, &vncPassword, &agentTok, &created, &updated, &ready, &ended,
		&expires, &active, &s.Viewer, &s.Replica, &s.Version, &login)
	if err != nil {
		return nil, err
	}
	if s.Login, err = storekit.ParseLogin(s.ID, login); err != nil {
		return nil, err
	}
	s.State, s.Reason = mc.State(state), mc.Reason(reason)
	s.Machine.VNCPort, s.Machine.AgentPort = int(vncPort), int(agentPort)
	if ip != "" {
		if s.Machine.IP, err = netip.ParseAddr(ip); err != nil {
			return nil, fmt.Errorf("session %s: machine ip: %w", s.ID, err)
		}
	}
	s.Secrets = mc.MachineSecrets{VNCPassword: mc.SecretOf(vncPassword), AgentToken: mc.SecretOf(agentTok)}
	s.CreatedAt, s.UpdatedAt, s.ExpiresAt, s.ActiveAt = created.UTC(), updated.UTC(), expires.UTC(), active.UTC()
	s.ReadyAt, s.EndedAt = fromNullTime(ready), fromNullTime(ended)
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
	// A unique violation aborts the transaction; the conflicting session is
	// read after it. If that session ended in between, try once more.
	for attempt := 0; ; attempt++ {
		err := s.createSession(ctx, sess, replica)
		constraint, unique := uniqueViolation(err)
		switch {
		case !unique:
			return err
		case constraint != "sessions_one_active":
			return &mc.Error{Code: mc.ECONFLICT, Reason: "session_exists", SessionID: sess.ID,
				Message: "A session with this id exists."}
		}
		var existing string
		err = s.pool.QueryRow(ctx, `SELECT id FROM sessions WHERE user_id = $1 AND provider = $2
			AND state NOT IN `+finalStates, sess.UserID, sess.Provider).Scan(&existing)
		switch {
		case err == nil:
			return &mc.Error{Code: mc.ECONFLICT, Reason: "active_session", SessionID: existing,
				Message: "The user already has an active session for this provider."}
		case !errors.Is(err, pgx.ErrNoRows):
			return storeErr(err, "create session %s", sess.ID)
		case attempt > 0:
			return &mc.Error{Code: mc.ECONFLICT, Reason: "active_session",
				Message: "The user already has an active session for this provider."}
		}
	}
}

func (s *Store) createSession(ctx context.Context, sess *mc.Session, replica string) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return storeErr(err, "create session %s", sess.ID)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	c, err := createSession(ctx, tx, *sess, replica)
	if _, unique := uniqueViolation(err); unique {
		return err
	}
	if err != nil {
		return storeErr(err, "create session %s", sess.ID)
	}
	if err := tx.Commit(ctx); err != nil {
		return storeErr(err, "create session %s", sess.ID)
	}
	*sess = c
	return nil
}

func createSession(ctx context.Context, tx pgx.Tx, c mc.Session, replica string) (mc.Session, error) {
	c.State, c.Reason, c.Version, c.Viewer, c.Replica = mc.StatePending, "", 1, "", replica
	c.CreatedAt, c.ExpiresAt = storekit.UTC(c.CreatedAt), storekit.UTC(c.ExpiresAt)
	c.ReadyAt, c.EndedAt = time.Time{}, time.Time{}
	c.UpdatedAt, c.ActiveAt = c.CreatedAt, c.CreatedAt
	_, err := tx.Exec(ctx, `INSERT INTO sessions (`+sessionCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL, NULL, $15, $16, $17, $18, $19, '')`,
		c.ID, c.UserID, c.Provider, string(c.State), string(c.Reason), c.Machine.ID, c.Machine.Driver, ipText(c.Machine.IP),
		c.Machine.VNCPort, c.Machine.AgentPort, c.Secrets.VNCPassword.Reveal(), c.Secrets.AgentToken.Reveal(),
		c.CreatedAt, c.UpdatedAt, c.ExpiresAt, c.ActiveAt, c.Viewer, c.Replica, c.Version)
	if err != nil {
		return c, err
	}
	err = appendEvent(ctx, tx, mc.Event{SessionID: c.ID, State: c.State, Replica: replica, At: c.CreatedAt})
	return c, err
}

func appendEvent(ctx context.Context, tx pgx.Tx, e mc.Event) error {
	_, err := tx.Exec(ctx, `INSERT INTO session_events (session_id, seq, from_state, state, reason, message, replica, at)
		SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6, $7 FROM session_events WHERE session_id = $1`,
		e.SessionID, string(e.From), string(e.State), string(e.Reason), e.Message, e.Replica, storekit.UTC(e.At))
	return err
}

// Session returns the session with the given id. A single statement needs no
// explicit transaction: it reads one consistent snapshot.
func (s *Store) Session(ctx context.Context, id string) (*mc.Session, error) {
	sess, err := getSession(ctx, s.pool, id)
	if err != nil {
		return nil, storeErr(err, "get session %s", id)
	}
	return sess, nil
}

func getSession(ctx context.Context, q querier, id string) (*mc.Session, error) {
	if !mc.ValidID(id) {
		return nil, storekit.NotFound(id)
	}
	sess, err := scanSession(q.QueryRow(ctx, `SELECT `+sessionCols+` FROM sessions WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, storekit.NotFound(id)
	}
	return sess, err
}

// Sessions returns one page of sessions, newest first.
func (s *Store) Sessions(ctx context.Context, f mc.SessionFilter) ([]*mc.Session, string, error) {
	list, next, err := listSessions(ctx, s.pool, f)
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
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.UserID != "" {
		where = append(where, "user_id = "+arg(f.UserID))
	}
	if f.Provider != "" {
		where = append(where, "provider = "+arg(f.Provider))
	}
	if f.State != "" {
		if !f.State.Valid() {
			return nil, "", mc.Errorf(mc.EINVALID, "bad_state", "Unknown state %q.", f.State)
		}
		where = append(where, "state = "+arg(string(f.State)))
	}
	if f.Active {
		where = append(where, "state NOT IN "+finalStates)
	}
	if f.Cursor != "" {
		at, id, err := storekit.DecodeCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_at, id) < ("+arg(at)+", "+arg(id)+")")
	}
	query := `SELECT ` + sessionCols + ` FROM sessions`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	query += ` ORDER BY created_at DESC, id DESC LIMIT ` + arg(limit+1)
	rows, err := q.Query(ctx, query, args...)
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

// Transition moves a session from t.From to t.To by compare-and-set. The
// trigger sessions_notify publishes the change at commit.
func (s *Store) Transition(ctx context.Context, t mc.Transition) (*mc.Session, error) {
	if err := storekit.CheckTransition(t); err != nil {
		return nil, err
	}
	if t.At.IsZero() {
		t.At = s.now()
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, storeErr(err, "transition session %s", t.ID)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	sess, err := transition(ctx, tx, t)
	if err != nil {
		return nil, storeErr(err, "transition session %s", t.ID)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, storeErr(err, "transition session %s", t.ID)
	}
	return sess, nil
}

func transition(ctx context.Context, tx pgx.Tx, t mc.Transition) (*mc.Session, error) {
	if !mc.ValidID(t.ID) {
		return nil, storekit.NotFound(t.ID)
	}
	at := storekit.UTC(t.At)
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	set := []string{"state = " + arg(string(t.To)), "version = version + 1", "updated_at = " + arg(at)}
	if t.To == mc.StateReady {
		set = append(set, "ready_at = "+arg(at))
	}
	if t.To.Final() {
		set = append(set, "ended_at = "+arg(at), "reason = "+arg(string(t.Reason)))
	}
	if m := t.Machine; m != nil {
		set = append(set, "machine_id = "+arg(m.ID), "machine_driver = "+arg(m.Driver), "machine_ip = "+arg(ipText(m.IP)),
			"vnc_port = "+arg(m.VNCPort), "agent_port = "+arg(m.AgentPort))
	}
	query := `UPDATE sessions SET ` + strings.Join(set, ", ") + ` WHERE id = ` + arg(t.ID) +
		` AND state = ` + arg(string(t.From)) + ` AND version = ` + arg(t.Version) + ` RETURNING ` + sessionCols
	sess, err := scanSession(tx.QueryRow(ctx, query, args...))
	if errors.Is(err, pgx.ErrNoRows) {
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
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, storeErr(err, "set machine of session %s", id)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	sess, err := setMachine(ctx, tx, id, version, m, secrets, s.now())
	if err != nil {
		return nil, storeErr(err, "set machine of session %s", id)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, storeErr(err, "set machine of session %s", id)
	}
	return sess, nil
}

func setMachine(ctx context.Context, tx pgx.Tx, id string, version int64, m mc.Machine, secrets mc.MachineSecrets, now time.Time) (*mc.Session, error) {
	if !mc.ValidID(id) {
		return nil, storekit.NotFound(id)
	}
	sess, err := scanSession(tx.QueryRow(ctx, `UPDATE sessions SET
		machine_id = $1, machine_driver = $2, machine_ip = $3, vnc_port = $4, agent_port = $5,
		vnc_password = $6, agent_token = $7, version = version + 1, updated_at = $8
		WHERE id = $9 AND version = $10 AND state NOT IN `+finalStates+` RETURNING `+sessionCols,
		m.ID, m.Driver, ipText(m.IP), m.VNCPort, m.AgentPort, secrets.VNCPassword.Reveal(), secrets.AgentToken.Reveal(),
		now, id, version))
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := getSession(ctx, tx, id); err != nil {
			return nil, err
		}
		return nil, storekit.Stale(id)
	}
	return sess, err
}

// Touch records activity at a time; an older time than the stored one is ignored.
func (s *Store) Touch(ctx context.Context, id string, at time.Time) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return storeErr(err, "touch session %s", id)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := touch(ctx, tx, id, at); err != nil {
		return storeErr(err, "touch session %s", id)
	}
	if err := tx.Commit(ctx); err != nil {
		return storeErr(err, "touch session %s", id)
	}
	return nil
}

func touch(ctx context.Context, tx pgx.Tx, id string, at time.Time) error {
	if !mc.ValidID(id) {
		return storekit.NotFound(id)
	}
	tag, err := tx.Exec(ctx, `UPDATE sessions SET active_at = $1 WHERE id = $2 AND active_at < $1`, storekit.UTC(at), id)
	if err != nil || tag.RowsAffected() > 0 {
		return err
	}
	_, err = getSession(ctx, tx, id)
	return err
}

// ClaimViewer records the session's current viewer and publishes the change
// without changing Version.
func (s *Store) ClaimViewer(ctx context.Context, id, viewer string) (*mc.Session, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, storeErr(err, "claim viewer of session %s", id)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	sess, err := claimViewer(ctx, tx, id, viewer)
	if err != nil {
		return nil, storeErr(err, "claim viewer of session %s", id)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, storeErr(err, "claim viewer of session %s", id)
	}
	return sess, nil
}

func claimViewer(ctx context.Context, tx pgx.Tx, id, viewer string) (*mc.Session, error) {
	if !mc.ValidID(id) {
		return nil, storekit.NotFound(id)
	}
	sess, err := scanSession(tx.QueryRow(ctx, `UPDATE sessions SET viewer = $1 WHERE id = $2 RETURNING `+sessionCols, viewer, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, storekit.NotFound(id)
	}
	return sess, err
}

// Events returns a session's event log, oldest first.
func (s *Store) Events(ctx context.Context, id string) ([]mc.Event, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, storeErr(err, "list events of session %s", id)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	events, err := listEvents(ctx, tx, id)
	if err != nil {
		return nil, storeErr(err, "list events of session %s", id)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, storeErr(err, "list events of session %s", id)
	}
	return events, nil
}

func listEvents(ctx context.Context, tx pgx.Tx, id string) ([]mc.Event, error) {
	if !mc.ValidID(id) {
		return nil, storekit.NotFound(id)
	}
	rows, err := tx.Query(ctx, `SELECT session_id, seq, from_state, state, reason, message, replica, at
		FROM session_events WHERE session_id = $1 ORDER BY seq`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var events []mc.Event
	for rows.Next() {
		var (
			e                   mc.Event
			from, state, reason string
		)
		if err := rows.Scan(&e.SessionID, &e.Seq, &from, &state, &reason, &e.Message, &e.Replica, &e.At); err != nil {
			return nil, err
		}
		e.From, e.State, e.Reason, e.At = mc.State(from), mc.State(state), mc.Reason(reason), e.At.UTC()
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
// changing Version; the trigger announces it.
func (s *Store) SetLogin(ctx context.Context, id string, p mc.LoginProgress, replica string) (*mc.Session, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, storeErr(err, "set login of session %s", id)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	sess, err := setLogin(ctx, tx, id, p, replica)
	if err != nil {
		return nil, storeErr(err, "set login of session %s", id)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, storeErr(err, "set login of session %s", id)
	}
	return sess, nil
}

func setLogin(ctx context.Context, tx pgx.Tx, id string, p mc.LoginProgress, replica string) (*mc.Session, error) {
	if !mc.ValidID(id) {
		return nil, storekit.NotFound(id)
	}
	p.UpdatedAt = storekit.UTC(p.UpdatedAt)
	sess, err := scanSession(tx.QueryRow(ctx, `UPDATE sessions SET login = $1
		WHERE id = $2 AND state NOT IN `+finalStates+` RETURNING `+sessionCols, storekit.LoginText(&p), id))
	if errors.Is(err, pgx.ErrNoRows) {
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
