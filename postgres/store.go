// Package postgres is the store for several replicas: PostgreSQL through
// pgx's database/sql driver. Its queries are internal/sqlstore's; this
// package opens the database, adds its part of the schema (the notify
// trigger), classifies PostgreSQL's errors and carries the change feed.
//
// Watch uses LISTEN/NOTIFY: a trigger on sessions announces every change of
// state, version or viewer on channel mc_session when its transaction
// commits. Each Store keeps one dedicated connection that listens and fans
// the announcements out to its watchers; when that connection drops, it
// reconnects and then re-reads every watched session, since a change may have
// been missed meanwhile.
package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/sqlstore"
)

var _ mc.Store = (*Store)(nil)

//go:embed migrations/*.sql
var migrations embed.FS

// channel is the NOTIFY channel of session changes.
const channel = "mc_session"

// ListenerApplicationName is the application_name of each Store's listening
// connection (visible in pg_stat_activity).
const ListenerApplicationName = "mc_listener"

// Options configure a Store. The zero value is usable.
type Options struct {
	// Clock gives the times the store sets itself (UpdatedAt of SetMachine,
	// lease times, default event and audit times).
	Clock mc.Clock
	// Logger receives the listener's reconnects and the store's warnings.
	// Default: discard.
	Logger *slog.Logger
	// NoMigrate leaves the schema alone at Open; call Migrate instead.
	NoMigrate bool
	// MaxConns bounds the pool (0: pgx's default, or pool_max_conns in the URL).
	MaxConns int32
}

// Store is an mc.Store on PostgreSQL.
type Store struct {
	*sqlstore.Store
	db   *sql.DB
	lcfg *pgx.ConnConfig
	log  *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// migrationLock is the advisory lock key of Migrate ("mc" in ASCII).
const migrationLock = "27747"

// dialect is PostgreSQL's SQL: numbered placeholders, timestamptz, bytewise
// ids, advisory locks for migrations and leases; the trigger publishes.
func dialect() sqlstore.Dialect {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists
	}
	return sqlstore.Dialect{
		Name:     "postgres",
		Numbered: true,
		Time:     sqlstore.NativeTime,
		Types: map[string]string{
			"time": "timestamptz", "int64": "bigint", "bytes": "bytea", "id": `text COLLATE "C"`,
			"serial": "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "strict": "",
		},
		Migrations:  sub,
		MigrateLock: "SELECT pg_advisory_xact_lock(" + migrationLock + ")",
		LeaseLock:   "SELECT pg_advisory_xact_lock(hashtextextended('mc_lease:' || ?, 0))",
		SkipLocked:  " FOR UPDATE SKIP LOCKED",
		Classify:    classify,
		// A new relation's first page is a new block of the default
		// tablespace: it fails as inserts do while the disk is full. The
		// transaction is rolled back, so nothing stays.
		Probe: func(ctx context.Context, db *sql.DB) error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			_, err = tx.ExecContext(ctx, `CREATE TABLE mc_probe (b bytea); INSERT INTO mc_probe VALUES ('\x00')`)
			return err
		},
	}
}

// Open connects to the database at url, brings its schema up to date (unless
// opts.NoMigrate) and starts listening for session changes. The URL is never
// logged or put in an error: it may hold a password.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// pgxpool's parser knows the pool_* parameters of the URL.
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message can quote the URL; keep it out.
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadStoreURL, "The PostgreSQL URL is not valid.")
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	lcfg := cfg.ConnConfig.Copy()
	lcfg.RuntimeParams["application_name"] = ListenerApplicationName
	db := stdlib.OpenDB(*cfg.ConnConfig)
	db.SetMaxOpenConns(int(cfg.MaxConns))
	db.SetMaxIdleConns(int(cfg.MaxConns))
	db.SetConnMaxLifetime(cfg.MaxConnLifetime)
	db.SetConnMaxIdleTime(cfg.MaxConnIdleTime)
	s := &Store{db: db, lcfg: lcfg, log: opts.Logger, done: make(chan struct{})}
	s.Store = sqlstore.New(dialect(), db, db, sqlstore.Options{Clock: opts.Clock, Logger: opts.Logger})
	fail := func(err error) (*Store, error) {
		s.Store.Close()
		db.Close()
		return nil, err
	}
	if err := db.PingContext(ctx); err != nil {
		return fail(sqlstore.MapErr(classify, err, "open postgres"))
	}
	if !opts.NoMigrate {
		if err := s.Migrate(ctx); err != nil {
			return fail(err)
		}
	}
	// Listen before returning, so that every change committed after Open
	// reaches this Store's watchers.
	conn, err := s.connectListener(ctx)
	if err != nil {
		return fail(sqlstore.MapErr(classify, err, "listen on postgres"))
	}
	lctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.listen(lctx, conn)
	return s, nil
}

// Close stops the listener and every watcher and closes the pool.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		<-s.done
		s.Store.Close()
		err = s.db.Close()
	})
	return err
}

func (s *Store) connectListener(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.lcfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return conn, nil
}

// listen hands every notification to the hub; when the connection drops it
// reconnects with a short linear backoff and re-delivers every watched
// session.
func (s *Store) listen(ctx context.Context, conn *pgx.Conn) {
	defer close(s.done)
	for {
		err := s.receive(ctx, conn)
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn.Close(closeCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("postgres listener lost; reconnecting", mc.LogReason, mc.ReasonListenerLost, mc.LogError, err)
		for attempt := 0; ; attempt++ {
			delay := min(time.Duration(attempt)*100*time.Millisecond, 2*time.Second)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			conn, err = s.connectListener(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("postgres listener reconnect", mc.LogReason, mc.ReasonListenerReconnect, "attempt", attempt+1, mc.LogError, err)
		}
		s.log.Info("postgres listener reconnected")
		s.Hub().NotifyAll()
	}
}

func (s *Store) receive(ctx context.Context, conn *pgx.Conn) error {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel == channel {
			s.Hub().Notify(n.Payload)
		}
	}
}

// classify sorts PostgreSQL's errors: a full disk (53100), a serialization
// failure, deadlock, lock timeout, lack of resources or a server shutting
// down (busy), a connection that cannot be made or was lost (unreachable).
func classify(err error) sqlstore.Class {
	var (
		pe *pgconn.PgError
		ne net.Error
		ce *pgconn.ConnectError
	)
	switch {
	case errors.As(err, &pe) && pe.Code == "53100":
		return sqlstore.ClassFull
	case errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01" || pe.Code == "55P03" ||
		strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "53") || strings.HasPrefix(pe.Code, "57")):
		return sqlstore.ClassBusy
	case errors.As(err, &ce), errors.As(err, &ne), errors.Is(err, driver.ErrBadConn),
		pgconn.SafeToRetry(err), pgconn.Timeout(err),
		// The server went away mid-query (a restart): pgx reports the
		// cut connection as an unexpected EOF, sometimes while
		// deallocating cached statements.
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return sqlstore.ClassUnreachable
	}
	return sqlstore.ClassOther
}
