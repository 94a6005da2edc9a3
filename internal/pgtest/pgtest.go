// Package pgtest starts throwaway PostgreSQL clusters for tests, with the
// machine's own initdb and pg_ctl (there is no Docker engine here).
//
// Start gives a test a cluster of its own. Shared gives it a fresh database
// on one cluster per test binary, which is much faster; a package that uses
// Shared stops that cluster after its tests with Main:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// When the binaries are missing, the test is skipped with one line, or fails
// when CI=true (under CI nothing may be skipped for lack of a component).
//
// As root, the cluster runs as the user postgres (PostgreSQL refuses to run as
// root) in a directory under os.TempDir that the user owns. The server listens
// on 127.0.0.1 at a free port and on a Unix socket in that directory only,
// with fsync off (a test's data need not survive a crash).
//
// A test binary killed before its clusters are stopped (a -timeout panic)
// leaves them running; `pg_ctl stop -D /tmp/pgtest-*/data` as user postgres
// ends them.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/master-controller/mc/internal/testutil"
)

// cluster is one running PostgreSQL cluster.
type cluster struct {
	dir  string // the cluster's temp dir (data, socket, log)
	port int
	bin  string
	cred *syscall.Credential // nil unless running as root
	opts string              // the server options of pg_ctl start -o
}

// URL returns the connection URL of database db (superuser postgres, no
// password, TCP on 127.0.0.1).
func (c *cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// Start starts a cluster of the test's own and returns the URL of its
// database "postgres". The cluster is stopped and removed in tb.Cleanup.
func Start(tb testing.TB) string {
	tb.Helper()
	c := start(tb)
	tb.Cleanup(func() {
		if err := c.Stop(); err != nil {
			tb.Errorf("stop postgres: %v", err)
		}
	})
	return c.URL("postgres")
}

var shared struct {
	mu      sync.Mutex
	main    bool // Main is running the tests
	cluster *cluster
	err     error
	skip    string
	// ready holds databases made ahead of time, so that making the next
	// one overlaps with the test that runs now.
	ready chan prepared
	stop  chan struct{}
	bg    sync.WaitGroup // the maker and the drops of used databases
}

type prepared struct {
	name string
	err  error
}

// Shared returns the URL of a new, empty database on the test binary's shared
// cluster, starting the cluster on first use. The database is dropped after
// the test. The package's TestMain must call Main, which stops the cluster.
func Shared(tb testing.TB) string {
	tb.Helper()
	shared.mu.Lock()
	if !shared.main {
		shared.mu.Unlock()
		tb.Fatal("pgtest.Shared needs func TestMain(m *testing.M) { pgtest.Main(m) } in the package")
	}
	if shared.cluster == nil && shared.err == nil && shared.skip == "" {
		shared.cluster, shared.skip, shared.err = startCluster()
		if shared.cluster != nil {
			shared.ready, shared.stop = make(chan prepared, 1), make(chan struct{})
			shared.bg.Go(func() { makeDatabases(shared.cluster, shared.ready, shared.stop) })
		}
	}
	c, skip, err, ready := shared.cluster, shared.skip, shared.err, shared.ready
	shared.mu.Unlock()
	if skip != "" {
		testutil.SkipOrFail(tb, "%s", skip)
	}
	if err != nil {
		tb.Fatalf("start postgres: %v", err)
	}
	p := <-ready
	if p.err != nil {
		tb.Fatalf("create database %s: %v", p.name, p.err)
	}
	tb.Cleanup(func() {
		shared.bg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.exec(ctx, "DROP DATABASE "+p.name+" WITH (FORCE)"); err != nil {
				fmt.Fprintf(os.Stderr, "pgtest: drop database %s: %v\n", p.name, err)
			}
		})
	})
	return c.URL(p.name)
}

// makeDatabases creates databases one ahead of their use until stop closes.
func makeDatabases(c *cluster, ready chan<- prepared, stop <-chan struct{}) {
	for {
		name := "t_" + randomHex(8)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := c.exec(ctx, "CREATE DATABASE "+name)
		cancel()
		select {
		case ready <- prepared{name, err}:
		case <-stop:
			return // the cluster and its databases are removed
		}
	}
}

// Main runs the tests of a package that uses Shared, stops the shared cluster
// (if one was started) and exits with the tests' status.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit, for a TestMain that has more to clean up:
// it runs the tests, stops the shared cluster and returns the status.
func Run(m *testing.M) int {
	shared.mu.Lock()
	shared.main = true
	shared.mu.Unlock()
	code := m.Run()
	shared.mu.Lock()
	c := shared.cluster
	shared.cluster = nil
	if shared.stop != nil {
		close(shared.stop)
	}
	shared.mu.Unlock()
	shared.bg.Wait()
	if c != nil {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop shared cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

func start(tb testing.TB) *cluster {
	tb.Helper()
	c, skip, err := startCluster()
	if skip != "" {
		testutil.SkipOrFail(tb, "%s", skip)
	}
	if err != nil {
		tb.Fatalf("start postgres: %v", err)
	}
	return c
}

// binDir finds the directory that holds initdb and pg_ctl: PATH first, then
// the Debian location of PostgreSQL 15.
func binDir() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("pg_ctl"); err == nil {
			if r, err := filepath.EvalSymlinks(p); err == nil {
				return filepath.Dir(r)
			}
			return filepath.Dir(p)
		}
	}
	for _, d := range []string{"/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"} {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

// startCluster returns a running cluster, or a reason to skip, or an error.
func startCluster() (*cluster, string, error) {
	bin := binDir()
	if bin == "" {
		return nil, "pgtest: PostgreSQL not installed (no initdb/pg_ctl in PATH or /usr/lib/postgresql/15/bin; apt-get install postgresql)", nil
	}
	c := &cluster{bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, "pgtest: running as root and there is no user postgres to run PostgreSQL as", nil
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, "", fmt.Errorf("make cluster dir: %w", err)
	}
	c.dir = dir
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, "", c.fail(fmt.Errorf("chmod cluster dir: %w", err))
	}
	if c.cred != nil {
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return nil, "", c.fail(fmt.Errorf("chown cluster dir: %w", err))
		}
		if err := traversable(filepath.Dir(dir)); err != nil {
			return nil, "", c.fail(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := c.run(ctx, "initdb", "-D", c.data(), "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return nil, "", c.fail(fmt.Errorf("initdb: %w: %s", err, out))
	}
	// A free port can be taken between the probe and the server's bind; try
	// a few.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, "", c.fail(err)
		}
		c.port = port
		c.opts = strings.Join([]string{
			"-p " + strconv.Itoa(port),
			"-c listen_addresses=127.0.0.1",
			"-c unix_socket_directories=" + c.dir,
			"-c fsync=off",
			"-c synchronous_commit=off",
			"-c full_page_writes=off",
			"-c max_connections=200",
			"-c shared_buffers=32MB",
		}, " ")
		out, err := c.pgStart(ctx)
		if err == nil {
			return c, "", nil
		}
		log, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
		lastErr = fmt.Errorf("pg_ctl start: %w: %s %s", err, out, tail(log))
		if !strings.Contains(string(log), "already in use") {
			break
		}
	}
	return nil, "", c.fail(lastErr)
}

// pgStart runs pg_ctl start with the cluster's options and waits until the
// server accepts connections.
func (c *cluster) pgStart(ctx context.Context) ([]byte, error) {
	return c.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", c.data(),
		"-l", filepath.Join(c.dir, "server.log"), "-o", c.opts)
}

// Cluster is a throwaway cluster for a program that is not a test (the
// soak test in bench/): the same cluster that Start gives a test, which the
// program restarts and stops itself.
type Cluster struct{ c *cluster }

// NewCluster starts a cluster; the caller must Stop it.
func NewCluster() (*Cluster, error) {
	c, skip, err := startCluster()
	if skip != "" {
		return nil, errors.New(skip)
	}
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	return &Cluster{c}, nil
}

// URL returns the connection URL of database db.
func (c *Cluster) URL(db string) string { return c.c.URL(db) }

// Exec runs one statement on the database postgres.
func (c *Cluster) Exec(ctx context.Context, sql string) error { return c.c.exec(ctx, sql) }

// Owner returns the uid and gid the server runs as (this process's when
// not root): a tablespace directory must belong to them.
func (c *Cluster) Owner() (uid, gid int) {
	if c.c.cred == nil {
		return os.Getuid(), os.Getgid()
	}
	return int(c.c.cred.Uid), int(c.c.cred.Gid)
}

// Down stops the server (pg_ctl stop -m fast: sessions are cut at once,
// but what was committed is kept; an immediate stop would lose commits
// here, where synchronous_commit is off). Up starts it again on the same
// port.
func (c *Cluster) Down(ctx context.Context) error {
	if out, err := c.c.run(ctx, "pg_ctl", "stop", "-w", "-m", "fast", "-D", c.c.data()); err != nil {
		return fmt.Errorf("pg_ctl stop: %w: %s", err, out)
	}
	return nil
}

// Up starts the server stopped by Down and waits until it accepts
// connections.
func (c *Cluster) Up(ctx context.Context) error {
	if out, err := c.c.pgStart(ctx); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.c.dir, "server.log"))
		return fmt.Errorf("pg_ctl start: %w: %s %s", err, out, tail(log))
	}
	return nil
}

// Stop stops the cluster at once and removes its directory.
func (c *Cluster) Stop() error { return c.c.Stop() }

// Stop stops the cluster at once and removes its directory.
func (c *cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if out, err := c.run(ctx, "pg_ctl", "stop", "-w", "-m", "immediate", "-D", c.data()); err != nil {
		errs = append(errs, fmt.Errorf("pg_ctl stop: %w: %s", err, out))
	}
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove cluster dir: %w", err))
	}
	return errors.Join(errs...)
}

func (c *cluster) fail(err error) error {
	if rmErr := os.RemoveAll(c.dir); rmErr != nil {
		return errors.Join(err, rmErr)
	}
	return err
}

func (c *cluster) data() string { return filepath.Join(c.dir, "data") }

func (c *cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		cmd.Env = append(cmd.Env, "HOME="+c.dir, "USER=postgres", "LOGNAME=postgres")
	}
	return cmd.CombinedOutput()
}

// exec runs one statement on the database postgres.
func (c *cluster) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// traversable checks that user postgres can reach into dir: every directory
// from the root down must be searchable by others (os.TempDir is usually
// /tmp, mode 1777; a TMPDIR under /root is not).
func traversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("check %s: %w", d, err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("user postgres cannot enter %s (mode %v); set TMPDIR to a directory it can reach, such as /tmp", d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(b []byte) string {
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
