// Package postgres is the store for several replicas: PostgreSQL through a
// pgx connection pool.
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
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/storekit"
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
	// lease and secret times, default event and audit times).
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
	pool  *pgxpool.Pool
	lcfg  *pgx.ConnConfig
	clock mc.Clock
	log   *slog.Logger
	hub   *storekit.Hub

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Open connects to the database at url, brings its schema up to date (unless
// opts.NoMigrate) and starts listening for session changes. The URL is never
// logged or put in an error: it may hold a password.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	if opts.Clock == nil {
		opts.Clock = mc.SystemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message can quote the URL; keep it out.
		return nil, mc.Errorf(mc.EINVALID, "bad_store_url", "The PostgreSQL URL is not valid.")
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	lcfg := cfg.ConnConfig.Copy()
	lcfg.RuntimeParams["application_name"] = ListenerApplicationName
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, storeErr(err, "open postgres")
	}
	s := &Store{pool: pool, lcfg: lcfg, clock: opts.Clock, log: opts.Logger, done: make(chan struct{})}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, storeErr(err, "open postgres")
	}
	if !opts.NoMigrate {
		if err := s.Migrate(ctx); err != nil {
			pool.Close()
			return nil, err
		}
	}
	s.hub = storekit.NewHub(s.Session, s.log)
	// Listen before returning, so that every change committed after Open
	// reaches this Store's watchers.
	conn, err := s.connectListener(ctx)
	if err != nil {
		pool.Close()
		return nil, storeErr(err, "listen on postgres")
	}
	lctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.listen(lctx, conn)
	return s, nil
}

// Close stops the listener and every watcher and closes the pool.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.cancel()
		<-s.done
		s.hub.Close()
		s.pool.Close()
	})
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return storeErr(err, "ping postgres")
	}
	return nil
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
		s.log.Warn("postgres listener lost; reconnecting", mc.LogReason, "listener_lost", "err", err)
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
			s.log.Warn("postgres listener reconnect", mc.LogReason, "listener_reconnect", "attempt", attempt+1, "err", err)
		}
		s.log.Info("postgres listener reconnected")
		s.hub.NotifyAll()
	}
}

func (s *Store) receive(ctx context.Context, conn *pgx.Conn) error {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel == channel {
			s.hub.Notify(n.Payload)
		}
	}
}

// Migrate applies the embedded migrations that the database has not had yet
// and records them in schema_migrations, in one transaction under an advisory
// lock, so replicas that start together apply each migration once. It is
// idempotent.
func (s *Store) Migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return storeErr(err, "migrate")
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := migrate(ctx, tx, s.now(), s.log); err != nil {
		return storeErr(err, "migrate")
	}
	if err := tx.Commit(ctx); err != nil {
		return storeErr(err, "migrate")
	}
	return nil
}

// migrationLock is the advisory lock key of Migrate ("mc" in ASCII).
const migrationLock = 0x6d63

func migrate(ctx context.Context, tx pgx.Tx, now time.Time, log *slog.Logger) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer     PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL
	)`); err != nil {
		return err
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		base := filepath.Base(name)
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with a number: %w", base, err)
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, v).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		// No arguments: the simple protocol, which runs several statements.
		if _, err := tx.Exec(ctx, string(body)); err != nil {
			return fmt.Errorf("apply migration %s: %w", base, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`, v, base, now); err != nil {
			return err
		}
		log.Info("applied migration", "migration", base)
	}
	return nil
}

func (s *Store) now() time.Time { return storekit.UTC(s.clock.Now()) }

// storeErr turns a storage error into a domain error: an *mc.Error passes
// through; an unreachable or busy database is EUNAVAILABLE; anything else is
// EINTERNAL, with the cause kept for the log only.
func storeErr(err error, format string, args ...any) error {
	var me *mc.Error
	if errors.As(err, &me) {
		return err
	}
	cause := fmt.Errorf(format+": %w", append(args, err)...)
	var (
		pe *pgconn.PgError
		ne net.Error
		ce *pgconn.ConnectError
	)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: "store_timeout", Message: "The store did not answer in time.", Err: cause}
	case errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01" || pe.Code == "55P03" ||
		strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "53") || strings.HasPrefix(pe.Code, "57")):
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: "store_busy", Message: "The store is busy; try again.",
			RetryAfter: time.Second, Err: cause}
	case errors.As(err, &ce), errors.As(err, &ne), pgconn.SafeToRetry(err), pgconn.Timeout(err):
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: "store_unreachable", Message: "The store cannot be reached.",
			RetryAfter: time.Second, Err: cause}
	case strings.Contains(err.Error(), "closed pool"):
		return &mc.Error{Code: mc.EUNAVAILABLE, Reason: "store_closed", Message: "The store is closed.", Err: cause}
	}
	return &mc.Error{Code: mc.EINTERNAL, Reason: "store_error", Message: "internal error", Err: cause}
}

// uniqueViolation returns the constraint of a unique violation, or "".
func uniqueViolation(err error) (string, bool) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return pe.ConstraintName, true
	}
	return "", false
}

func fromNullTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}
