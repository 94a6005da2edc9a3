// Package sqlite is the embedded store: a single SQLite file in WAL mode,
// pure Go (modernc.org/sqlite), for one host and one process.
//
// Writes go through a pool of one connection (SQLite allows one writer at a
// time; serializing them in Go avoids lock contention and SQLITE_BUSY), reads
// through a separate pool of several connections that WAL lets run beside
// the writer.
//
// Watch is served by an in-process broadcaster. Two Stores opened on the same
// file in one process share it (keyed by the file's absolute path), so a
// change made through one wakes the watchers of the other. Several processes
// on one SQLite file are not a supported deployment: their watchers would not
// see each other's changes. Use PostgreSQL for replicas.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/storekit"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var _ mc.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// Options configure a Store. The zero value is usable.
type Options struct {
	// Clock gives the times the store sets itself (UpdatedAt of SetMachine,
	// lease and secret times, default event and audit times).
	Clock mc.Clock
	// Logger receives the store's few warnings. Default: discard.
	Logger *slog.Logger
	// NoMigrate leaves the schema alone at Open; call Migrate instead.
	NoMigrate bool
	// BusyTimeout is how long a statement waits for a lock held by another
	// connection (another Store on the same file). Default: 5 s.
	BusyTimeout time.Duration
	// ReadConns is the size of the read pool. Default: max(4, GOMAXPROCS).
	ReadConns int
}

// Store is an mc.Store on a SQLite file.
type Store struct {
	w, r  *sql.DB
	clock mc.Clock
	log   *slog.Logger
	hub   *storekit.Hub
	key   string // the file's absolute path, the key of the shared broadcaster
	once  sync.Once

	// getStmt is the prepared read of one session, the hottest query (every
	// API read, every Watch delivery); prepared on first use, since the
	// schema may not exist at Open with NoMigrate.
	getMu   sync.Mutex
	getStmt *sql.Stmt
}

// Open opens (creating if needed) the SQLite database at path and, unless
// opts.NoMigrate, brings its schema up to date.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, mc.Errorf(mc.EINVALID, "bad_store_path", "The SQLite store needs a plain file path.")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, storeErr(err, "open sqlite %s", path)
	}
	if d, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(d, filepath.Base(abs))
	}
	if opts.Clock == nil {
		opts.Clock = mc.SystemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = 5 * time.Second
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = max(4, runtime.GOMAXPROCS(0))
	}
	s := &Store{clock: opts.Clock, log: opts.Logger, key: abs}

	dsn := func(extra ...string) string {
		q := url.Values{}
		q.Add("_pragma", "busy_timeout("+strconv.FormatInt(opts.BusyTimeout.Milliseconds(), 10)+")")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "foreign_keys(1)")
		q.Add("_pragma", "synchronous(NORMAL)")
		for i := 0; i+1 < len(extra); i += 2 {
			q.Add(extra[i], extra[i+1])
		}
		return "file:" + (&url.URL{Path: abs}).EscapedPath() + "?" + q.Encode()
	}
	// The writer takes its lock at BEGIN (IMMEDIATE), so a transaction never
	// fails half-way on upgrading a read lock.
	s.w, err = sql.Open("sqlite", dsn("_txlock", "immediate"))
	if err != nil {
		return nil, storeErr(err, "open sqlite %s", path)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	if err := s.w.PingContext(ctx); err != nil {
		s.w.Close()
		return nil, storeErr(err, "open sqlite %s", path)
	}
	if !opts.NoMigrate {
		if err := s.Migrate(ctx); err != nil {
			s.w.Close()
			return nil, err
		}
	}
	s.r, err = sql.Open("sqlite", dsn("_pragma", "query_only(1)"))
	if err != nil {
		s.w.Close()
		return nil, storeErr(err, "open sqlite %s", path)
	}
	s.r.SetMaxOpenConns(opts.ReadConns)
	s.r.SetMaxIdleConns(opts.ReadConns)
	s.r.SetConnMaxIdleTime(0)
	s.hub = storekit.NewHub(s.session, s.log)
	joinBus(s.key, s.hub)
	return s, nil
}

// Close stops every watcher and closes the database.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		leaveBus(s.key, s.hub)
		s.hub.Close()
		s.getMu.Lock()
		if s.getStmt != nil {
			s.getStmt.Close()
		}
		s.getMu.Unlock()
		err = errors.Join(s.r.Close(), s.w.Close())
	})
	return err
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.r.PingContext(ctx); err != nil {
		return storeErr(err, "ping sqlite")
	}
	return nil
}

// Migrate applies the embedded migrations that the database has not had yet,
// each in its own transaction, and records them in schema_migrations. It is
// idempotent.
func (s *Store) Migrate(ctx context.Context) error {
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return storeErr(err, "create schema_migrations")
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return storeErr(err, "list migrations")
	}
	sort.Strings(names)
	for _, name := range names {
		base := filepath.Base(name)
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return storeErr(err, "migration %s: name must start with a number", base)
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return storeErr(err, "read migration %s", base)
		}
		if err := s.migrate(ctx, v, base, string(body)); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) migrate(ctx context.Context, version int, name, body string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return storeErr(err, "migrate %s", name)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
		return storeErr(err, "migrate %s", name)
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, body); err != nil {
		return storeErr(err, "migrate %s", name)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		version, name, micros(s.now())); err != nil {
		return storeErr(err, "migrate %s", name)
	}
	if err := tx.Commit(); err != nil {
		return storeErr(err, "migrate %s", name)
	}
	s.log.Info("applied migration", "migration", name)
	return nil
}

func (s *Store) now() time.Time { return storekit.UTC(s.clock.Now()) }

// storeErr turns a storage error into a domain error: an *mc.Error passes
// through; a busy database is EUNAVAILABLE; anything else is EINTERNAL, with
// the cause kept for the log only.
func storeErr(err error, format string, args ...any) error {
	var me *mc.Error
	if errors.As(err, &me) {
		return err
	}
	cause := fmt.Errorf(format+": %w", append(args, err)...)
	var se *sqlite.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: "store_timeout", Message: "The store did not answer in time.", Err: cause}
	case errors.As(err, &se) && (se.Code()&0xff == sqlite3.SQLITE_BUSY || se.Code()&0xff == sqlite3.SQLITE_LOCKED):
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: "store_busy", Message: "The store is busy; try again.",
			RetryAfter: time.Second, Err: cause}
	case errors.Is(err, sql.ErrConnDone), strings.Contains(err.Error(), "database is closed"),
		strings.Contains(err.Error(), "statement is closed"):
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: "store_closed", Message: "The store is closed.", Err: cause}
	}
	return &mc.Error{Code: mc.EINTERNAL, Reason: "store_error", Message: "internal error", Err: cause}
}

// isUnique reports whether err is a violation of a UNIQUE or PRIMARY KEY
// constraint.
func isUnique(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && (se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

// Times are stored as Unix microseconds, UTC; NULL for a zero time.
func micros(t time.Time) int64 { return storekit.UTC(t).UnixMicro() }

func fromMicros(n int64) time.Time { return time.UnixMicro(n).UTC() }

func fromNullMicros(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromMicros(n.Int64)
}

// bus connects the hubs of the Stores opened on one file in this process.
var bus = struct {
	mu   sync.Mutex
	hubs map[string]map[*storekit.Hub]struct{}
}{hubs: make(map[string]map[*storekit.Hub]struct{})}

func joinBus(key string, h *storekit.Hub) {
	bus.mu.Lock()
	defer bus.mu.Unlock()
	if bus.hubs[key] == nil {
		bus.hubs[key] = make(map[*storekit.Hub]struct{})
	}
	bus.hubs[key][h] = struct{}{}
}

func leaveBus(key string, h *storekit.Hub) {
	bus.mu.Lock()
	defer bus.mu.Unlock()
	delete(bus.hubs[key], h)
	if len(bus.hubs[key]) == 0 {
		delete(bus.hubs, key)
	}
}

// publish announces a change of session id to every Store on the file.
func (s *Store) publish(id string) {
	bus.mu.Lock()
	hs := make([]*storekit.Hub, 0, len(bus.hubs[s.key]))
	for h := range bus.hubs[s.key] {
		hs = append(hs, h)
	}
	bus.mu.Unlock()
	for _, h := range hs {
		h.Notify(id)
	}
}
