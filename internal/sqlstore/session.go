package sqlstore

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

// column is one column of sessions: the value a session stores in it and
// where a read puts it back. The list below is the one place that names a
// session's columns: SELECT, INSERT and scanning all follow it, so a new
// column is one line here and one migration.
type column struct {
	name string
	val  func(d *Dialect, s *mc.Session) any
	dst  func(s *mc.Session) any
}

var sessionColumns = []column{
	{"id", func(_ *Dialect, s *mc.Session) any { return s.ID }, func(s *mc.Session) any { return &s.ID }},
	{"user_id", func(_ *Dialect, s *mc.Session) any { return s.UserID }, func(s *mc.Session) any { return &s.UserID }},
	{"provider", func(_ *Dialect, s *mc.Session) any { return s.Provider }, func(s *mc.Session) any { return &s.Provider }},
	{"state", func(_ *Dialect, s *mc.Session) any { return string(s.State) }, func(s *mc.Session) any { return &s.State }},
	{"reason", func(_ *Dialect, s *mc.Session) any { return string(s.Reason) }, func(s *mc.Session) any { return &s.Reason }},
	{"machine_id", func(_ *Dialect, s *mc.Session) any { return s.Machine.ID }, func(s *mc.Session) any { return &s.Machine.ID }},
	{"machine_driver", func(_ *Dialect, s *mc.Session) any { return s.Machine.Driver }, func(s *mc.Session) any { return &s.Machine.Driver }},
	{"machine_ip", func(_ *Dialect, s *mc.Session) any { return ipText(s.Machine.IP) }, func(s *mc.Session) any { return ipOf{&s.Machine.IP} }},
	{"vnc_port", func(_ *Dialect, s *mc.Session) any { return s.Machine.VNCPort }, func(s *mc.Session) any { return &s.Machine.VNCPort }},
	{"agent_port", func(_ *Dialect, s *mc.Session) any { return s.Machine.AgentPort }, func(s *mc.Session) any { return &s.Machine.AgentPort }},
	{"machine_socket_dir", func(_ *Dialect, s *mc.Session) any { return s.Machine.SocketDir }, func(s *mc.Session) any { return &s.Machine.SocketDir }},
	{"machine_pooled", func(_ *Dialect, s *mc.Session) any { return boolInt(s.Machine.Pooled) }, func(s *mc.Session) any { return &s.Machine.Pooled }},
	{"created_at", func(d *Dialect, s *mc.Session) any { return d.Time(s.CreatedAt) }, func(s *mc.Session) any { return timeOf{&s.CreatedAt} }},
	{"updated_at", func(d *Dialect, s *mc.Session) any { return d.Time(s.UpdatedAt) }, func(s *mc.Session) any { return timeOf{&s.UpdatedAt} }},
	{"ready_at", func(d *Dialect, s *mc.Session) any { return d.Time(s.ReadyAt) }, func(s *mc.Session) any { return timeOf{&s.ReadyAt} }},
	{"ended_at", func(d *Dialect, s *mc.Session) any { return d.Time(s.EndedAt) }, func(s *mc.Session) any { return timeOf{&s.EndedAt} }},
	{"expires_at", func(d *Dialect, s *mc.Session) any { return d.Time(s.ExpiresAt) }, func(s *mc.Session) any { return timeOf{&s.ExpiresAt} }},
	{"active_at", func(d *Dialect, s *mc.Session) any { return d.Time(s.ActiveAt) }, func(s *mc.Session) any { return timeOf{&s.ActiveAt} }},
	{"viewer", func(_ *Dialect, s *mc.Session) any { return s.Viewer }, func(s *mc.Session) any { return &s.Viewer }},
	{"replica", func(_ *Dialect, s *mc.Session) any { return s.Replica }, func(s *mc.Session) any { return &s.Replica }},
	{"version", func(_ *Dialect, s *mc.Session) any { return s.Version }, func(s *mc.Session) any { return &s.Version }},
	{"login", func(_ *Dialect, s *mc.Session) any { return storekit.LoginText(s.Login) }, func(s *mc.Session) any { return loginOf{&s.Login} }},
}

var (
	sessionCols = func() string {
		names := make([]string, len(sessionColumns))
		for i, c := range sessionColumns {
			names[i] = c.name
		}
		return strings.Join(names, ", ")
	}()
	insertSession = `INSERT INTO sessions (` + sessionCols + `) VALUES (?` +
		strings.Repeat(", ?", len(sessionColumns)-1) + `) ON CONFLICT DO NOTHING`
	getSessionSQL = `SELECT ` + sessionCols + ` FROM sessions WHERE id = ?`
)

// finalStates is the SQL list of the final states.
const finalStates = `('completed', 'failed', 'cancelled', 'expired')`

type scanner interface{ Scan(dest ...any) error }

func scanSession(row scanner) (*mc.Session, error) {
	var s mc.Session
	dst := make([]any, len(sessionColumns))
	for i, c := range sessionColumns {
		dst[i] = c.dst(&s)
	}
	if err := row.Scan(dst...); err != nil {
		return nil, err
	}
	return &s, nil
}

func ipText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// ipOf scans a text column into an address ("" is the zero address).
type ipOf struct{ a *netip.Addr }

// textOf is a text column's value ("" for NULL).
func textOf(src any, what string) (string, error) {
	switch x := src.(type) {
	case string:
		return x, nil
	case []byte:
		return string(x), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("scan %s: unexpected %T", what, src)
}

func (v ipOf) Scan(src any) error {
	text, err := textOf(src, "ip")
	if err != nil {
		return err
	}
	*v.a = netip.Addr{}
	if text == "" {
		return nil
	}
	a, err := netip.ParseAddr(text)
	if err != nil {
		return fmt.Errorf("scan ip: %w", err)
	}
	*v.a = a
	return nil
}

// loginOf scans the login column (JSON text, "" before the login starts).
type loginOf struct{ p **mc.LoginProgress }

func (v loginOf) Scan(src any) error {
	text, err := textOf(src, "login")
	if err != nil {
		return err
	}
	p, err := storekit.ParseLogin("", text)
	*v.p = p
	return err
}

// CreateSession inserts s in state pending at version 1, with its first
// event, and takes its capacity slot, in one transaction.
func (s *Store) CreateSession(ctx context.Context, sess *mc.Session, replica string, c mc.Capacity) error {
	if err := storekit.CheckSession(sess); err != nil {
		return err
	}
	row := *sess
	prepareRow(&row, replica)
	err := s.write(ctx, func(t tx) error { return s.createSession(ctx, t, &row, c) }, "create session %s", sess.ID)
	if err != nil {
		return err
	}
	*sess = row
	return nil
}

// prepareRow sets what the store sets on a new session: state pending at
// version 1, of replica, times in UTC.
func prepareRow(row *mc.Session, replica string) {
	row.State, row.Reason, row.Version, row.Viewer, row.Replica = mc.StatePending, "", 1, "", replica
	row.CreatedAt, row.ExpiresAt = storekit.UTC(row.CreatedAt), storekit.UTC(row.ExpiresAt)
	row.ReadyAt, row.EndedAt = time.Time{}, time.Time{}
	row.UpdatedAt, row.ActiveAt = row.CreatedAt, row.CreatedAt
}

// createSession inserts a pending session with its first event and takes
// its slot.
func (s *Store) createSession(ctx context.Context, t tx, sess *mc.Session, c mc.Capacity) error {
	err := s.insertSession(ctx, t, sess, []mc.Event{{SessionID: sess.ID, State: sess.State, Replica: sess.Replica, At: sess.CreatedAt}})
	if err != nil {
		return err
	}
	return s.takeSlot(ctx, t, sess.Replica, c)
}

// insertSession inserts sess and its first events. It settles a conflict
// inside the transaction: the insert does nothing on a unique violation
// (which would abort a PostgreSQL transaction), and the conflicting row is
// looked up. When that row has ended in between, the insert is tried again.
func (s *Store) insertSession(ctx context.Context, t tx, sess *mc.Session, first []mc.Event) error {
	args := make([]any, len(sessionColumns))
	for i, col := range sessionColumns {
		args[i] = col.val(&s.d, sess)
	}
	for attempt := 0; ; attempt++ {
		inserted, err := affected(t.exec(ctx, insertSession, args...))
		if err != nil {
			return err
		}
		if inserted {
			break
		}
		var existing string
		err = t.row(ctx, `SELECT id FROM sessions WHERE user_id = ? AND provider = ? AND state NOT IN `+finalStates,
			sess.UserID, sess.Provider).Scan(&existing)
		switch {
		case err == nil:
			return &mc.Error{Code: mc.ECONFLICT, Reason: mc.ReasonActiveSession, SessionID: existing,
				Message: "The user already has an active session for this provider."}
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if err := t.row(ctx, `SELECT id FROM sessions WHERE id = ?`, sess.ID).Scan(&existing); err == nil {
			return &mc.Error{Code: mc.ECONFLICT, Reason: mc.ReasonSessionExists, SessionID: sess.ID,
				Message: "A session with this id exists."}
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if attempt == 2 {
			return &mc.Error{Code: mc.ECONFLICT, Reason: mc.ReasonActiveSession,
				Message: "The user already has an active session for this provider."}
		}
	}
	for _, e := range first {
		if err := appendEvent(ctx, t, e); err != nil {
			return err
		}
	}
	return nil
}

func appendEvent(ctx context.Context, t tx, e mc.Event) error {
	_, err := t.exec(ctx, `INSERT INTO session_events (session_id, seq, from_state, state, reason, message, replica, at)
		SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ?, ? FROM session_events WHERE session_id = ?`,
		e.SessionID, string(e.From), string(e.State), string(e.Reason), e.Message, e.Replica, t.s.d.Time(e.At), e.SessionID)
	return err
}

// Session returns the session with the given id. A single statement needs no
// explicit transaction: it reads one consistent snapshot.
func (s *Store) Session(ctx context.Context, id string) (*mc.Session, error) {
	if !mc.ValidID(id) {
		return nil, storekit.NotFound(id)
	}
	stmt, err := s.getStmt(ctx)
	if err != nil {
		return nil, s.err(err, "get session %s", id)
	}
	sess, err := scanSession(stmt.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storekit.NotFound(id)
	}
	if err != nil {
		return nil, s.err(err, "get session %s", id)
	}
	return sess, nil
}

func (s *Store) getStmt(ctx context.Context) (*sql.Stmt, error) {
	s.getMu.Lock()
	defer s.getMu.Unlock()
	if s.get == nil {
		stmt, err := s.r.PrepareContext(ctx, s.q(getSessionSQL))
		if err != nil {
			return nil, err
		}
		s.get = stmt
	}
	return s.get, nil
}

// getSession reads a session inside a transaction.
func getSession(ctx context.Context, t tx, id string) (*mc.Session, error) {
	sess, err := scanSession(t.row(ctx, getSessionSQL, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storekit.NotFound(id)
	}
	return sess, err
}

// Sessions returns one page of sessions, newest first.
func (s *Store) Sessions(ctx context.Context, f mc.SessionFilter) ([]*mc.Session, string, error) {
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
	if f.Replica != "" {
		where, args = append(where, "replica = ?"), append(args, f.Replica)
	}
	if f.State != "" {
		if !f.State.Valid() {
			return nil, "", mc.Errorf(mc.EINVALID, mc.ReasonBadState, "Unknown state %q.", f.State)
		}
		where, args = append(where, "state = ?"), append(args, string(f.State))
	}
	if f.Active {
		where = append(where, "state NOT IN "+finalStates)
	}
	if f.Cursor != "" {
		at, id, err := storekit.DecodeCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		where, args = append(where, "(created_at, id) < (?, ?)"), append(args, s.d.Time(at), id)
	}
	query := `SELECT ` + sessionCols + ` FROM sessions`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	query += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, limit+1)
	var list []*mc.Session
	err = s.read(ctx, func(t tx) (err error) {
		list, err = queryAll(ctx, t, scanSession, query, args...)
		return err
	}, "list sessions")
	if err != nil {
		return nil, "", err
	}
	if list == nil {
		list = []*mc.Session{}
	}
	next := ""
	if len(list) > limit {
		list = list[:limit]
		last := list[limit-1]
		next = storekit.EncodeCursor(last.CreatedAt, last.ID)
	}
	return list, next, nil
}

// Transition moves a session from t.From to t.To by compare-and-set, and
// frees its capacity slot when t.To is final.
func (s *Store) Transition(ctx context.Context, t mc.Transition) (*mc.Session, error) {
	if err := storekit.CheckTransition(t); err != nil {
		return nil, err
	}
	if t.At.IsZero() {
		t.At = s.now()
	}
	return s.change(ctx, t.ID, func(x tx) (*mc.Session, error) { return s.transition(ctx, x, t) },
		"transition session %s", t.ID)
}

// change runs a write that changes session id and returns it, and publishes
// the change after the commit.
func (s *Store) change(ctx context.Context, id string, fn func(tx) (*mc.Session, error), format string, args ...any) (*mc.Session, error) {
	if !mc.ValidID(id) {
		return nil, storekit.NotFound(id)
	}
	var sess *mc.Session
	err := s.write(ctx, func(t tx) (err error) {
		sess, err = fn(t)
		return err
	}, format, args...)
	if err != nil {
		return nil, err
	}
	s.published(id)
	return sess, nil
}

// stale is the error of a compare-and-set that changed no row: the session
// is missing, or it changed since it was read.
func stale(ctx context.Context, t tx, id string) error {
	if _, err := getSession(ctx, t, id); err != nil {
		return err
	}
	return storekit.Stale(id)
}

func (s *Store) transition(ctx context.Context, x tx, t mc.Transition) (*mc.Session, error) {
	at := s.d.Time(t.At)
	set := []string{"state = ?", "version = version + 1", "updated_at = ?"}
	args := []any{string(t.To), at}
	if t.To == mc.StateReady {
		set, args = append(set, "ready_at = ?"), append(args, at)
	}
	if t.To.Final() {
		set = append(set, "ended_at = ?", "reason = ?")
		args = append(args, at, string(t.Reason))
	}
	if m := t.Machine; m != nil {
		set = append(set, "machine_id = ?", "machine_driver = ?", "machine_ip = ?", "vnc_port = ?", "agent_port = ?", "machine_socket_dir = ?")
		args = append(args, m.ID, m.Driver, ipText(m.IP), m.VNCPort, m.AgentPort, m.SocketDir)
	}
	args = append(args, t.ID, string(t.From), t.Version)
	sess, err := scanSession(x.row(ctx, `UPDATE sessions SET `+strings.Join(set, ", ")+`
		WHERE id = ? AND state = ? AND version = ? RETURNING `+sessionCols, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, stale(ctx, x, t.ID)
	}
	if err != nil {
		return nil, err
	}
	err = appendEvent(ctx, x, mc.Event{SessionID: t.ID, From: t.From, State: t.To, Reason: t.Reason,
		Message: t.Message, Replica: t.Replica, At: t.At})
	if err == nil && t.To.Final() {
		err = freeSlot(ctx, x, sess.Replica)
	}
	return sess, err
}

// SetMachine records the machine by compare-and-set on version.
func (s *Store) SetMachine(ctx context.Context, id string, version int64, m mc.Machine) (*mc.Session, error) {
	return s.change(ctx, id, func(t tx) (*mc.Session, error) {
		sess, err := scanSession(t.row(ctx, `UPDATE sessions SET
			machine_id = ?, machine_driver = ?, machine_ip = ?, vnc_port = ?, agent_port = ?, machine_socket_dir = ?,
			version = version + 1, updated_at = ?
			WHERE id = ? AND version = ? AND state NOT IN `+finalStates+` RETURNING `+sessionCols,
			m.ID, m.Driver, ipText(m.IP), m.VNCPort, m.AgentPort, m.SocketDir,
			s.d.Time(s.now()), id, version))
		if errors.Is(err, sql.ErrNoRows) {
			return nil, stale(ctx, t, id)
		}
		return sess, err
	}, "set machine of session %s", id)
}

// Touch records activity at a time; an older time than the stored one is ignored.
func (s *Store) Touch(ctx context.Context, id string, at time.Time) error {
	if !mc.ValidID(id) {
		return storekit.NotFound(id)
	}
	return s.write(ctx, func(t tx) error {
		changed, err := affected(t.exec(ctx, `UPDATE sessions SET active_at = ? WHERE id = ? AND active_at < ?`,
			s.d.Time(at), id, s.d.Time(at)))
		if err != nil || changed {
			return err
		}
		_, err = getSession(ctx, t, id)
		return err
	}, "touch session %s", id)
}

// ClaimViewer records the session's current viewer and publishes the change
// without changing Version.
func (s *Store) ClaimViewer(ctx context.Context, id, viewer string) (*mc.Session, error) {
	return s.change(ctx, id, func(t tx) (*mc.Session, error) {
		sess, err := scanSession(t.row(ctx, `UPDATE sessions SET viewer = ? WHERE id = ? RETURNING `+sessionCols, viewer, id))
		if errors.Is(err, sql.ErrNoRows) {
			return nil, storekit.NotFound(id)
		}
		return sess, err
	}, "claim viewer of session %s", id)
}

// SetLogin records a live session's login progress and its event, without
// changing Version, and publishes the change.
func (s *Store) SetLogin(ctx context.Context, id string, p mc.LoginProgress, replica string) (*mc.Session, error) {
	p.UpdatedAt = storekit.UTC(p.UpdatedAt)
	return s.change(ctx, id, func(t tx) (*mc.Session, error) {
		sess, err := scanSession(t.row(ctx, `UPDATE sessions SET login = ?
			WHERE id = ? AND state NOT IN `+finalStates+` RETURNING `+sessionCols, storekit.LoginText(&p), id))
		if errors.Is(err, sql.ErrNoRows) {
			return nil, stale(ctx, t, id)
		}
		if err != nil {
			return nil, err
		}
		return sess, appendEvent(ctx, t, storekit.LoginEvent(sess, p, replica))
	}, "set login of session %s", id)
}

// Events returns a session's event log, oldest first.
func (s *Store) Events(ctx context.Context, id string) ([]mc.Event, error) {
	if !mc.ValidID(id) {
		return nil, storekit.NotFound(id)
	}
	var events []mc.Event
	err := s.read(ctx, func(t tx) (err error) {
		events, err = queryAll(ctx, t, func(row scanner) (e mc.Event, err error) {
			err = row.Scan(&e.SessionID, &e.Seq, &e.From, &e.State, &e.Reason, &e.Message, &e.Replica, timeOf{&e.At})
			return e, err
		}, `SELECT session_id, seq, from_state, state, reason, message, replica, at
			FROM session_events WHERE session_id = ? ORDER BY seq`, id)
		if err == nil && len(events) == 0 {
			_, err = getSession(ctx, t, id)
		}
		return err
	}, "list events of session %s", id)
	if err != nil {
		return nil, err
	}
	return events, nil
}

// Watch returns a channel of the session's newest value; see mc.SessionStore.
func (s *Store) Watch(ctx context.Context, id string) (<-chan *mc.Session, error) {
	ch, err := s.hub.Watch(ctx, id)
	if err != nil {
		return nil, s.err(err, "watch session %s", id)
	}
	return ch, nil
}

// affected reports whether a statement changed any row.
func affected(res sql.Result, err error) (bool, error) {
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}
