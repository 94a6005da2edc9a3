// Package sqlstore is the one SQL layer of both stores: every mc.Store
// method, its queries and its row mapping, written once over database/sql.
// An adapter (sqlite, postgres) opens the database, describes its SQL in a
// Dialect, embeds *Store and adds only what is its own: opening, error
// classification and the change feed (an in-process broadcaster, or
// LISTEN/NOTIFY).
//
// Queries are written with ? placeholders; a dialect with numbered
// placeholders gets them rewritten to $1, $2, … once per query text.
//
// Every write runs in one transaction through Store.write: begin, a private
// helper that takes the transaction, commit, and one error mapping. A write
// that fails because the disk is full marks the store full: Ping then fails
// with reason store_full (so /readyz fails while writes fail) until the
// dialect's probe, a write that needs new space, succeeds. (A write that
// happens to fit in space the database already has proves nothing.)
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/storekit"
)

// Class is what a dialect makes of a driver error.
type Class int

// The classes of driver errors. Each becomes one reason of EUNAVAILABLE, or
// EINTERNAL for ClassOther.
const (
	// ClassOther is any error the dialect does not know: EINTERNAL.
	ClassOther Class = iota
	// ClassBusy: a lock, a conflict or overload; retrying soon helps.
	ClassBusy
	// ClassUnreachable: the database cannot be reached.
	ClassUnreachable
	// ClassClosed: the store has been closed.
	ClassClosed
	// ClassFull: the disk (or the database's space) is full.
	ClassFull
)

// Dialect is what differs between the SQL databases.
type Dialect struct {
	// Name names the database in error causes ("sqlite", "postgres").
	Name string
	// Numbered rewrites ? placeholders to $1, $2, ….
	Numbered bool
	// Time encodes a time for a column; the zero time must become nil (NULL).
	// Scanning accepts what either encoding reads back (Unix microseconds or
	// a time.Time).
	Time func(time.Time) any
	// Types replaces the {{words}} of the shared migrations with the
	// dialect's column types and table options.
	Types map[string]string
	// Migrations holds the dialect's additions to the shared migrations, as
	// *.sql files at its root: a file named like a shared one (0001_init.sql)
	// is appended to the shared text of that version; another is a version
	// of its own. Optional.
	Migrations fs.FS
	// MigrateLock, when set, runs first in the migration transaction (an
	// advisory lock, so replicas that start together migrate once).
	MigrateLock string
	// LeaseLock, when set, runs first in a lease transaction with the pool
	// name as its one argument (serializing leases of a pool across
	// connections; SQLite's single writer needs none).
	LeaseLock string
	// SkipLocked, when set, ends a SELECT of rows to claim (" FOR UPDATE
	// SKIP LOCKED"), so that concurrent claims of pooled machines pick
	// different rows; SQLite's single writer needs none.
	SkipLocked string
	// Classify sorts a driver error into a Class.
	Classify func(error) Class
	// Publish announces a change of session id after its commit; nil when
	// the database announces changes itself (a trigger and NOTIFY).
	Publish func(id string)
	// Probe tries a write that needs new space, to learn whether a full
	// store has room again.
	Probe func(ctx context.Context, db *sql.DB) error
}

// Options configure New.
type Options struct {
	// Clock gives the times the store sets itself.
	Clock mc.Clock
	// Logger receives the store's few warnings.
	Logger *slog.Logger
}

// Store implements mc.Store (less Migrate, which adapters call with their
// migrations) over database/sql. Adapters embed it.
type Store struct {
	d     Dialect
	w, r  *sql.DB
	clock mc.Clock
	log   *slog.Logger
	hub   *storekit.Hub
	full  atomic.Bool

	queries sync.Map // query text → its rebound text

	// get is the prepared read of one session, the hottest query (every
	// API read, every Watch delivery); prepared on first use, since the
	// schema may not exist when the store is made.
	getMu sync.Mutex
	get   *sql.Stmt
}

// New returns a Store that writes through w and reads through r (the same
// pool, or SQLite's single writer beside a pool of readers). The caller
// closes w and r after Store.Close.
func New(d Dialect, w, r *sql.DB, opts Options) *Store {
	if opts.Clock == nil {
		opts.Clock = mc.SystemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{d: d, w: w, r: r, clock: opts.Clock, log: opts.Logger}
	s.hub = storekit.NewHub(s.Session, s.log)
	return s
}

// Hub returns the store's watcher hub, which the adapter's change feed
// notifies.
func (s *Store) Hub() *storekit.Hub { return s.hub }

// Close stops every watcher and releases the prepared statements; the caller
// closes the databases.
func (s *Store) Close() {
	s.hub.Close()
	s.getMu.Lock()
	defer s.getMu.Unlock()
	if s.get != nil {
		s.get.Close()
		s.get = nil
	}
}

// Ping checks that the database answers and, after a write failed for a
// full disk, that it can write again.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.r.PingContext(ctx); err != nil {
		return s.err(err, "ping %s", s.d.Name)
	}
	if !s.full.Load() {
		return nil
	}
	if err := s.d.Probe(ctx, s.w); err != nil {
		return s.err(err, "probe %s for space", s.d.Name)
	}
	s.full.Store(false)
	return nil
}

func (s *Store) now() time.Time { return storekit.UTC(s.clock.Now()) }

// q returns query with the dialect's placeholders.
func (s *Store) q(query string) string {
	if !s.d.Numbered {
		return query
	}
	if v, ok := s.queries.Load(query); ok {
		return v.(string)
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	s.queries.Store(query, b.String())
	return b.String()
}

// conn is what the private helpers need of a *sql.Tx or *sql.DB.
type conn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// tx is what the private helpers use: a transaction (or, for reads, the
// pool) that rewrites placeholders.
type tx struct {
	s  *Store
	tx conn
}

func (t tx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.s.q(query), args...)
}

func (t tx) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.s.q(query), args...)
}

func (t tx) row(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.s.q(query), args...)
}

// write runs fn in a transaction on the writer and commits it. Errors are
// mapped once, here, with the action format/args in the cause.
func (s *Store) write(ctx context.Context, fn func(tx) error, format string, args ...any) error {
	t, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.err(err, format, args...)
	}
	defer t.Rollback()
	if err := fn(tx{s, t}); err != nil {
		return s.err(err, format, args...)
	}
	if err := t.Commit(); err != nil {
		return s.err(err, format, args...)
	}
	return nil
}

// read runs fn on the readers, without a transaction: each of its
// statements reads one consistent snapshot.
func (s *Store) read(ctx context.Context, fn func(tx) error, format string, args ...any) error {
	if err := fn(tx{s, s.r}); err != nil {
		return s.err(err, format, args...)
	}
	return nil
}

// err maps a storage error as MapErr does, and marks the store full when
// the disk is.
func (s *Store) err(err error, format string, args ...any) error {
	err = MapErr(s.d.Classify, err, format, args...)
	if mc.ErrorReason(err) == "store_full" {
		s.full.Store(true)
	}
	return err
}

// MapErr turns a storage error into a domain error: an *mc.Error passes
// through; what classify knows becomes EUNAVAILABLE with one reason;
// anything else is EINTERNAL, with the cause kept for the log only. The
// adapters use it for their own operations (opening, the change feed).
func MapErr(classify func(error) Class, err error, format string, args ...any) error {
	var me *mc.Error
	if errors.As(err, &me) {
		return err
	}
	cause := fmt.Errorf(format+": %w", append(args, err)...)
	class := classify(err)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: mc.ReasonStoreTimeout, Message: "The store did not answer in time.", Err: cause}
	case class == ClassFull:
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: mc.ReasonStoreFull, Message: "The store is out of space; try again later.",
			RetryAfter: 30 * time.Second, Err: cause}
	case class == ClassBusy:
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: mc.ReasonStoreBusy, Message: "The store is busy; try again.",
			RetryAfter: time.Second, Err: cause}
	case class == ClassUnreachable:
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: mc.ReasonStoreUnreachable, Message: "The store cannot be reached.",
			RetryAfter: time.Second, Err: cause}
	case class == ClassClosed, errors.Is(err, sql.ErrConnDone), strings.Contains(err.Error(), "database is closed"):
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: mc.ReasonStoreClosed, Message: "The store is closed.", Err: cause}
	}
	return &mc.Error{Code: mc.EINTERNAL, Reason: mc.ReasonStoreError, Message: "internal error", Err: cause}
}

// queryAll runs a query and scans every row with scan.
func queryAll[T any](ctx context.Context, t tx, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := t.query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var list []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
	}
	return list, rows.Err()
}

// published announces a committed change of session id.
func (s *Store) published(id string) {
	if s.d.Publish != nil {
		s.d.Publish(id)
	}
}

// timeOf is a scan destination for a time column in either encoding:
// Unix microseconds (SQLite) or a time (PostgreSQL); NULL is the zero time.
type timeOf struct{ t *time.Time }

func (v timeOf) Scan(src any) error {
	switch x := src.(type) {
	case nil:
		*v.t = time.Time{}
	case int64:
		*v.t = time.UnixMicro(x).UTC()
	case time.Time:
		*v.t = x.UTC()
	default:
		return fmt.Errorf("scan time: unexpected %T", src)
	}
	return nil
}

// MicrosTime is the Time of a dialect that keeps Unix microseconds, UTC.
func MicrosTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return storekit.UTC(t).UnixMicro()
}

// NativeTime is the Time of a dialect with a time type of its own.
func NativeTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return storekit.UTC(t)
}
