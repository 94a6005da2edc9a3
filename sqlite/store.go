// Package sqlite is the embedded store: a single SQLite file in WAL mode,
// pure Go (modernc.org/sqlite), for one host and one process. Its queries
// are internal/sqlstore's; this package opens the file, classifies SQLite's
// errors and carries the change feed.
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
	"io/fs"
	"log/slog"
	"net/url"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/sqlstore"
	"github.com/master-controller/mc/internal/storekit"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var _ mc.Store = (*Store)(nil)

// migrations are SQLite's parts of the schema's versions, beside the shared
// ones of internal/sqlstore.
//
//go:embed migrations/*.sql
var migrations embed.FS

// Options configure a Store. The zero value is usable.
type Options struct {
	// Clock gives the times the store sets itself (UpdatedAt of SetMachine,
	// lease times, default event and audit times).
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
	*sqlstore.Store
	w, r *sql.DB
	key  string // the file's absolute path, the key of the shared broadcaster
	once sync.Once
}

// dialect is SQLite's SQL: ? placeholders, times as Unix microseconds in
// STRICT tables, and the in-process broadcaster of the file key.
func dialect(key string) sqlstore.Dialect {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists
	}
	return sqlstore.Dialect{
		Name: "sqlite",
		Time: sqlstore.MicrosTime,
		Types: map[string]string{
			"time": "INTEGER", "int64": "INTEGER", "bytes": "BLOB", "id": "TEXT",
			"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "strict": " STRICT",
		},
		Migrations: sub,
		Classify:   classify,
		Publish:    func(id string) { publish(key, id) },
		Probe:      probe,
	}
}

// probe commits a write of 256 KiB (a row of space_probe written and deleted
// again), more than the WAL can hold in pages left over from a write that
// failed: it succeeds when the disk has room for many ordinary writes again.
func probe(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO space_probe (value) VALUES (hex(zeroblob(131072)))`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM space_probe`); err != nil {
		return err
	}
	return tx.Commit()
}

// Open opens (creating if needed) the SQLite database at path and, unless
// opts.NoMigrate, brings its schema up to date.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadStorePath, "The SQLite store needs a plain file path.")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, openErr(err, path)
	}
	if d, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(d, filepath.Base(abs))
	}
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = 5 * time.Second
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = max(4, runtime.GOMAXPROCS(0))
	}
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
	s := &Store{key: abs}
	// The writer takes its lock at BEGIN (IMMEDIATE), so a transaction never
	// fails half-way on upgrading a read lock.
	if s.w, err = sql.Open("sqlite", dsn("_txlock", "immediate")); err != nil {
		return nil, openErr(err, path)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	if err := s.w.PingContext(ctx); err != nil {
		s.w.Close()
		return nil, openErr(err, path)
	}
	if s.r, err = sql.Open("sqlite", dsn("_pragma", "query_only(1)")); err != nil {
		s.w.Close()
		return nil, openErr(err, path)
	}
	s.r.SetMaxOpenConns(opts.ReadConns)
	s.r.SetMaxIdleConns(opts.ReadConns)
	s.r.SetConnMaxIdleTime(0)
	s.Store = sqlstore.New(dialect(abs), s.w, s.r, sqlstore.Options{Clock: opts.Clock, Logger: opts.Logger})
	if !opts.NoMigrate {
		if err := s.Migrate(ctx); err != nil {
			s.Store.Close()
			s.r.Close()
			s.w.Close()
			return nil, err
		}
	}
	joinBus(s.key, s.Hub())
	return s, nil
}

// openErr maps an error of opening the file.
func openErr(err error, path string) error {
	return sqlstore.MapErr(classify, err, "open sqlite %s", path)
}

// Close stops every watcher and closes the database.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		leaveBus(s.key, s.Hub())
		s.Store.Close()
		err = errors.Join(s.r.Close(), s.w.Close())
	})
	return err
}

// classify sorts SQLite's errors: a full disk (or database at its page
// limit), a lock held by another connection, a closed handle.
func classify(err error) sqlstore.Class {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_FULL:
			return sqlstore.ClassFull
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return sqlstore.ClassBusy
		}
	}
	if strings.Contains(err.Error(), "statement is closed") {
		return sqlstore.ClassClosed
	}
	return sqlstore.ClassOther
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
func publish(key, id string) {
	bus.mu.Lock()
	hs := make([]*storekit.Hub, 0, len(bus.hubs[key]))
	for h := range bus.hubs[key] {
		hs = append(hs, h)
	}
	bus.mu.Unlock()
	for _, h := range hs {
		h.Notify(id)
	}
}
