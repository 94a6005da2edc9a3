// Command soak runs the controller (fake driver, PostgreSQL store) under
// mixed load for a while — create, view, cancel, complete, abandon — while
// PostgreSQL is restarted at intervals and its data disk is filled and freed
// once, then checks that nothing leaked and prints a markdown summary table.
// It exits 1 when an invariant fails. It needs root (a tmpfs mount) and
// PostgreSQL's initdb/pg_ctl; every connection stays on loopback.
//
// Usage: bench/soak.sh [--duration 30m] [flags] (see --help)
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/app"
	"github.com/master-controller/mc/driver/fake"
	"github.com/master-controller/mc/internal/pgtest"
	"github.com/master-controller/mc/rfb/rfbtest"
)

// options are the command's flags.
type options struct {
	duration     time.Duration
	restartEvery time.Duration
	down         time.Duration
	fillAt       time.Duration
	fillFor      time.Duration
	disk         string
	workers      int
	users        int
	maxOps       int
	lifetime     time.Duration
	idle         time.Duration
	reconcile    time.Duration
	settle       time.Duration
	keep         bool
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.DurationVar(&o.duration, "duration", 30*time.Minute, "how long the load runs")
	fs.DurationVar(&o.restartEvery, "restart-every", 5*time.Minute, "restart PostgreSQL (pg_ctl stop -m fast, then start) this often (0: never)")
	fs.DurationVar(&o.down, "down", 5*time.Second, "how long PostgreSQL stays down at each restart")
	fs.DurationVar(&o.fillAt, "fill-at", 12*time.Minute, "when to fill the data disk, from the start (negative: never; past --duration: never)")
	fs.DurationVar(&o.fillFor, "fill-for", time.Minute, "how long the disk stays full before the filler file is removed")
	fs.StringVar(&o.disk, "disk", "256m", "size of the tmpfs that holds the database's tablespace")
	fs.IntVar(&o.workers, "workers", 4, "concurrent load workers")
	fs.IntVar(&o.users, "users", 40, "distinct user ids the load cycles through")
	fs.IntVar(&o.maxOps, "max-ops", 100000, "stop the load after this many sessions created or refused, even before --duration")
	fs.DurationVar(&o.lifetime, "max-lifetime", 2*time.Minute, "the controller's MC_MAX_LIFETIME (abandoned sessions end by it)")
	fs.DurationVar(&o.idle, "idle-timeout", time.Minute, "the controller's MC_IDLE_TIMEOUT")
	fs.DurationVar(&o.reconcile, "reconcile-interval", 15*time.Second, "the controller's MC_RECONCILE_INTERVAL")
	fs.DurationVar(&o.settle, "settle", 45*time.Second, "wait after the load before the checks (a session counts as stuck if it is live this long past its expiry)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (controller log, PostgreSQL log) after the run")
	fs.Usage = func() {
		fmt.Fprintf(out, `Usage: soak [flags]

Runs master-controller in-process (fake driver, PostgreSQL store on a
throwaway cluster whose database lives on a small tmpfs) under mixed load:
create, view (viewer WebSocket through the RFB handshake, then cancel or
complete while it is open), cancel, complete (the fake agent's login
finishes), abandon (left to idle/lifetime expiry). PostgreSQL is restarted
every --restart-every; the disk is filled once at --fill-at for --fill-for.
Afterwards it checks: no live session past its expiry, no fake machine or
lease or pool row without a live owner, slot counts that match, no HTTP 500,
every viewer closed with a typed close code. Prints a markdown summary and
exits 1 if a check fails. Needs root and PostgreSQL (initdb, pg_ctl).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.duration <= 0 || o.workers <= 0 || o.users <= 0 || o.maxOps <= 0 {
		return o, errors.New("--duration, --workers, --users and --max-ops must be positive")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	ok, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s soak: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// env is the set-up the load runs against.
type env struct {
	pg     *pgtest.Cluster
	dbURL  string
	disk   string // tmpfs mount point (the tablespace's directory)
	main   *app.Main
	drv    *fake.Driver
	apiKey string
	base   string
	stats  *stats
	cancel context.CancelFunc
	done   chan error
}

func run(o options) (bool, error) {
	if os.Geteuid() != 0 {
		return false, errors.New("needs root (it mounts a tmpfs for the data disk)")
	}
	work, err := os.MkdirTemp("", "mc-soak-")
	if err != nil {
		return false, err
	}
	if err := os.Chmod(work, 0o755); err != nil {
		return false, err
	}
	e := &env{stats: newStats()}
	defer func() {
		if !o.keep {
			os.RemoveAll(work)
		} else {
			logf("work directory kept: %s", work)
		}
	}()
	if err := e.setup(o, work); err != nil {
		e.teardown()
		return false, err
	}
	logf("controller at %s, database on a %s tmpfs at %s; load for %v", e.base, o.disk, e.disk, o.duration)

	// Ctrl-C (or SIGTERM) ends the load early; the checks and the clean-up
	// still run.
	sctx, sstop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer sstop()
	ctx, stop := context.WithTimeout(sctx, o.duration)
	defer stop()
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() { e.faults(ctx, o, start) })
	var ops countdown
	ops.left.Store(int64(o.maxOps))
	for i := range o.workers {
		wg.Go(func() { e.worker(ctx, o, i, &ops) })
	}
	wg.Wait()
	loadTime := time.Since(start)
	logf("load done after %v; settling %v", loadTime.Round(time.Second), o.settle)
	select {
	case <-sctx.Done():
	case <-time.After(o.settle):
	}
	inv := e.check(o)
	e.teardown()
	ok := e.stats.print(os.Stdout, o, loadTime, inv)
	return ok, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// setup mounts the disk, starts PostgreSQL with a database on it, and starts
// the controller in-process.
func (e *env) setup(o options, work string) error {
	pg, err := pgtest.NewCluster()
	if err != nil {
		return err
	}
	e.pg = pg
	e.disk = filepath.Join(work, "disk")
	if err := os.Mkdir(e.disk, 0o700); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", e.disk, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+o.disk+",mode=0700"); err != nil {
		e.disk = ""
		return fmt.Errorf("mount tmpfs: %w", err)
	}
	uid, gid := pg.Owner()
	if err := os.Chown(e.disk, uid, gid); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, stmt := range []string{
		"CREATE TABLESPACE soakdisk LOCATION '" + e.disk + "'",
		"CREATE DATABASE soak TABLESPACE soakdisk",
	} {
		if err := pg.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	e.dbURL = pg.URL("soak")
	e.apiKey = "soak-" + randomHex(16)
	settings := map[string]string{
		"MC_LISTEN": "127.0.0.1:0", "MC_DATA_DIR": filepath.Join(work, "data"), "MC_DRIVER": "fake",
		"MC_REPLICA": "soak", "MC_API_KEYS": e.apiKey, "MC_DATABASE_URL": e.dbURL,
		"MC_FAKE_START_DELAY": "300ms", "MC_MAX_MACHINES": "60", "MC_DESTROY_GRACE": "100ms",
		"MC_MAX_LIFETIME": o.lifetime.String(), "MC_IDLE_TIMEOUT": o.idle.String(),
		"MC_RECONCILE_INTERVAL": o.reconcile.String(), "MC_READY_WAIT": "30s",
	}
	var cfg app.Config
	problems := cfg.Flags(flag.NewFlagSet("mc", flag.ContinueOnError), func(k string) string { return settings[k] })
	problems = append(problems, cfg.Validate()...)
	if len(problems) > 0 {
		return fmt.Errorf("controller config: %s", strings.Join(problems, "; "))
	}
	logFile, err := os.Create(filepath.Join(work, "controller.log"))
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))
	m, err := app.New(ctx, cfg, log, io.Discard)
	if err != nil {
		return fmt.Errorf("start controller: %w", err)
	}
	e.main = m
	drv, ok := m.Driver.(*fake.Driver)
	if !ok {
		return fmt.Errorf("driver is %T, want the fake driver", m.Driver)
	}
	e.drv = drv
	e.base = m.URL
	rctx, rcancel := context.WithCancel(context.Background())
	e.cancel, e.done = rcancel, make(chan error, 1)
	go func() { e.done <- m.Run(rctx) }()
	return nil
}

// teardown stops what setup started, in reverse.
func (e *env) teardown() {
	if e.main != nil {
		e.cancel()
		<-e.done
		if err := e.main.Close(); err != nil {
			logf("close controller: %v", err)
		}
	}
	if e.pg != nil {
		if err := e.pg.Stop(); err != nil {
			logf("stop postgres: %v", err)
		}
	}
	if e.disk != "" {
		if err := syscall.Unmount(e.disk, syscall.MNT_DETACH); err != nil {
			logf("unmount %s: %v", e.disk, err)
		}
	}
}

// faults restarts PostgreSQL every o.restartEvery and fills the disk once at
// o.fillAt, until ctx ends.
func (e *env) faults(ctx context.Context, o options, start time.Time) {
	var restart <-chan time.Time
	if o.restartEvery > 0 {
		t := time.NewTicker(o.restartEvery)
		defer t.Stop()
		restart = t.C
	}
	var fill <-chan time.Time
	if o.fillAt >= 0 && o.fillAt < o.duration {
		fill = time.After(time.Until(start.Add(o.fillAt)))
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-restart:
			e.restart(o)
		case <-fill:
			e.fillDisk(ctx, o)
		}
	}
}

func (e *env) restart(o options) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	if err := e.pg.Down(ctx); err != nil {
		e.stats.fault("restart: %v", err)
		return
	}
	time.Sleep(o.down)
	if err := e.pg.Up(ctx); err != nil {
		e.stats.fault("restart: %v", err)
		return
	}
	e.stats.mu.Lock()
	e.stats.restarts++
	e.stats.mu.Unlock()
	logf("postgres restarted (down %v)", time.Since(t0).Round(100*time.Millisecond))
}

func (e *env) fillDisk(ctx context.Context, o options) {
	path := filepath.Join(e.disk, "filler")
	f, err := os.Create(path)
	if err != nil {
		e.stats.fault("fill: %v", err)
		return
	}
	block := make([]byte, 1<<16)
	var n int64
	for {
		w, err := f.Write(block)
		n += int64(w)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				e.stats.fault("fill: %v", err)
			}
			break
		}
	}
	f.Close()
	e.stats.diskFull(true)
	logf("disk full (%d MiB written); freeing in %v", n>>20, o.fillFor)
	select {
	case <-ctx.Done():
	case <-time.After(o.fillFor):
	}
	if err := os.Remove(path); err != nil {
		e.stats.fault("free: %v", err)
	}
	e.stats.diskFull(false)
	logf("disk freed")
}

// countdown bounds the number of operations across workers.
type countdown struct {
	left atomic.Int64
}

// worker runs operations until ctx ends or the count is used up.
func (e *env) worker(ctx context.Context, o options, n int, ops *countdown) {
	r := mrand.New(mrand.NewPCG(uint64(n), uint64(time.Now().UnixNano())))
	for ctx.Err() == nil && ops.left.Add(-1) >= 0 {
		user := fmt.Sprintf("soak-%d", r.IntN(o.users))
		e.op(ctx, r, user)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(50+r.IntN(250)) * time.Millisecond):
		}
	}
}

// createReply is the part of the POST reply the load uses.
type createReply struct {
	Session mc.Session `json:"session"`
	Viewer  struct {
		Token string `json:"token"`
	} `json:"viewer"`
}

// op is one session's life: create, then one of view, cancel, complete or
// abandon.
func (e *env) op(ctx context.Context, r *mrand.Rand, user string) {
	var c createReply
	code := e.call("create", http.MethodPost, "/api/v1/sessions", map[string]string{"user_id": user, "provider": "demo"}, &c)
	if code != http.StatusCreated {
		return
	}
	id := c.Session.ID
	switch p := r.IntN(100); {
	case p < 40:
		e.view(ctx, r, id, c.Viewer.Token)
	case p < 60:
		e.endSession(id)
	case p < 90:
		if !e.complete(ctx, id) {
			e.endSession(id)
		}
	default:
		e.stats.count("abandon")
	}
}

// complete waits (bounded) for the session's machine, then finishes its login
// in the fake agent, as a user signing in would.
func (e *env) complete(ctx context.Context, id string) bool {
	e.stats.count("complete")
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var got struct {
			Session mc.Session `json:"session"`
		}
		code := e.call("get", http.MethodGet, "/api/v1/sessions/"+id, nil, &got)
		if code == http.StatusOK {
			if got.Session.State.Final() {
				e.stats.count("complete: ended first")
				return true
			}
			if got.Session.State == mc.StateReady && got.Session.Machine.ID != "" {
				if e.drv.CompleteLogin(got.Session.Machine.ID, map[string]string{"~/.demo/credentials.json": `{"token":"soak"}`}) {
					e.stats.count("complete: login finished")
					return true
				}
				e.stats.count("complete: machine gone")
				return false
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	e.stats.count("complete: not ready within 45 s")
	return false
}

// view opens the viewer WebSocket, reads the RFB handshake and a frame, then
// ends the session (cancel or complete) and waits (bounded) for the close
// code.
func (e *env) view(ctx context.Context, r *mrand.Rand, id, tok string) {
	e.stats.count("view")
	u := strings.Replace(e.base, "http://", "ws://", 1) + "/api/v1/sessions/" + id + "/vnc?token=" + url.QueryEscape(tok)
	dctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{Subprotocols: []string{"binary"}})
	if err != nil {
		if resp != nil {
			e.stats.status("viewer-dial", resp.StatusCode, "")
			e.stats.count("view: refused")
		} else {
			e.stats.count("view: dial error")
			e.stats.fault("viewer dial %s: %v", id, err)
		}
		e.endSession(id)
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 24)
	// The session's end (below, or an expiry, or a store outage) closes the
	// viewer: read until it does, bounded by rctx.
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer rcancel()
	closed := make(chan struct{})
	closeCode := -1
	go func() {
		defer close(closed)
		ws := &wsStream{ctx: rctx, c: c}
		if _, err := rfbtest.Capture(ws, mc.Secret{}); err == nil {
			e.stats.count("view: saw the screen")
		}
		buf := make([]byte, 32<<10)
		for {
			if _, err := ws.Read(buf); err != nil {
				var ce websocket.CloseError
				if errors.As(err, &ce) {
					closeCode = int(ce.Code)
				} else {
					e.stats.fault("viewer %s: no close frame: %v", id, err)
				}
				return
			}
		}
	}()
	select {
	case <-closed:
	case <-time.After(time.Duration(500+r.IntN(2000)) * time.Millisecond):
		if r.IntN(2) == 0 || !e.complete(ctx, id) {
			e.endSession(id)
		}
		select {
		case <-closed:
		case <-time.After(60 * time.Second):
			e.stats.fault("viewer %s: still open 60 s after its session ended", id)
			rcancel()
			<-closed
			closeCode = -2
		}
	}
	e.stats.closeCode(closeCode)
}

// endSession cancels a session, retrying (bounded) while the store is out.
func (e *env) endSession(id string) {
	e.stats.count("cancel")
	for range 60 {
		code := e.call("cancel", http.MethodPost, "/api/v1/sessions/"+id+"/cancel", nil, nil)
		if code != 0 && code != http.StatusServiceUnavailable && code != http.StatusInternalServerError {
			return
		}
		time.Sleep(time.Second)
	}
	e.stats.fault("cancel %s: no answer but 503 for a minute", id)
}

// wsStream reads and writes binary WebSocket messages as one byte stream,
// returning the library's errors as they are (a close frame is a
// websocket.CloseError whatever its code; NetConn turns 1000 into io.EOF).
type wsStream struct {
	ctx context.Context
	c   *websocket.Conn
	r   io.Reader
	err error // the first error of Reader: every later Read returns it
}

func (w *wsStream) Read(p []byte) (int, error) {
	for {
		if w.err != nil {
			return 0, w.err
		}
		if w.r == nil {
			_, r, err := w.c.Reader(w.ctx)
			if err != nil {
				w.err = err
				return 0, err
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if errors.Is(err, io.EOF) {
			w.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (w *wsStream) Write(p []byte) (int, error) {
	if err := w.c.Write(w.ctx, websocket.MessageBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// call makes one API request and records its status (and the error reason
// of a 503); it returns the status, 0 when there was no answer.
func (e *env) call(what, method, path string, body, out any) int {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, rd)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.apiKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.stats.status(what, 0, "")
		e.stats.fault("%s %s: %v", method, path, err)
		return 0
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var reason string
	if resp.StatusCode >= 400 {
		var eb struct {
			Error struct {
				Code   string `json:"code"`
				Reason string `json:"reason"`
			} `json:"error"`
		}
		_ = json.Unmarshal(raw, &eb)
		reason = eb.Error.Code
		if eb.Error.Reason != "" {
			reason += "/" + eb.Error.Reason
		}
	}
	e.stats.status(what, resp.StatusCode, reason)
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
		e.stats.fault("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			e.stats.fault("%s %s: decode: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

// invariant is one end-of-run check.
type invariant struct {
	name   string
	value  int
	detail string
}

// check runs the end-of-run checks through the database and the driver.
func (e *env) check(o options) []invariant {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var inv []invariant
	add := func(name string, v int, detail string) { inv = append(inv, invariant{name, v, detail}) }
	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		add("database reachable at the end", 1, err.Error())
		return inv
	}
	defer conn.Close(context.Background())
	final := `('completed', 'failed', 'cancelled', 'expired')`
	count := func(name, q string, args ...any) {
		var n int
		var detail string
		if err := conn.QueryRow(ctx, q, args...).Scan(&n, &detail); err != nil {
			add(name, 1, "query: "+err.Error())
			return
		}
		add(name, n, detail)
	}
	grace := o.settle.Seconds()
	count("live sessions past their expiry (+settle)",
		`SELECT count(*), coalesce(string_agg(id || ':' || state, ' '), '') FROM sessions
		 WHERE state NOT IN `+final+` AND expires_at < now() - make_interval(secs => $1)`, grace)
	count("leases without a live owner",
		`SELECT count(*), coalesce(string_agg(pool || '/' || owner, ' '), '') FROM leases l
		 WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.state NOT IN `+final+` AND (s.id = l.owner OR s.machine_id = l.owner))
		   AND NOT EXISTS (SELECT 1 FROM pool_machines p WHERE p.id = l.owner OR p.machine_id = l.owner)`)
	count("pool rows (no pool configured)", `SELECT count(*), coalesce(string_agg(id, ' '), '') FROM pool_machines`)
	count("slot count ≠ live sessions",
		`SELECT abs(coalesce((SELECT active FROM slots WHERE scope = '*'), 0)
		  - (SELECT count(*) FROM sessions WHERE state NOT IN `+final+`)
		  - (SELECT count(*) FROM pool_machines))::int,
		 'slots=' || coalesce((SELECT active FROM slots WHERE scope = '*'), 0)
		  || ' live=' || (SELECT count(*) FROM sessions WHERE state NOT IN `+final+`)`)

	// Machines the fake driver still runs that no live session owns.
	live := map[string]bool{}
	rows, err := conn.Query(ctx, `SELECT machine_id FROM sessions WHERE state NOT IN `+final+` AND machine_id <> ''`)
	if err == nil {
		for rows.Next() {
			var id string
			if rows.Scan(&id) == nil {
				live[id] = true
			}
		}
		rows.Close()
	}
	machines, err := e.drv.List(ctx)
	if err != nil || rows.Err() != nil {
		add("leaked fake machines", 1, fmt.Sprint("list: ", err, rows.Err()))
	} else {
		var leaked []string
		for _, m := range machines {
			if !live[m.ID] {
				leaked = append(leaked, m.ID)
			}
		}
		add("leaked fake machines", len(leaked), strings.Join(leaked, " "))
	}
	var liveNow int
	_ = conn.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE state NOT IN `+final).Scan(&liveNow)
	e.stats.mu.Lock()
	e.stats.liveAtEnd, e.stats.machinesAtEnd = liveNow, len(machines)
	e.stats.mu.Unlock()

	s := e.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	n500 := 0
	for k, v := range s.statuses {
		if k.code == http.StatusInternalServerError {
			n500 += v
		}
	}
	add("HTTP 500 answers", n500, "")
	untyped := 0
	for code, v := range s.closes {
		if !typedClose[code] {
			untyped += v
		}
	}
	add("viewers closed without a typed code", untyped, "")
	return inv
}

// typedClose holds the close codes of the gateway's contract (DESIGN.md).
var typedClose = map[int]bool{1000: true, 1001: true, 1011: true, 1013: true, 4401: true, 4403: true,
	4404: true, 4408: true, 4409: true, 4410: true, 4502: true, 4503: true}

// statusKey is one row of the status histogram.
type statusKey struct {
	what   string
	code   int
	reason string
}

// stats is what the run counted.
type stats struct {
	mu            sync.Mutex
	counts        map[string]int
	statuses      map[statusKey]int
	closes        map[int]int
	faults        []string
	nfaults       int
	restarts      int
	full          bool
	episodes      []int // store_full answers per disk-full episode
	liveAtEnd     int
	machinesAtEnd int
}

func newStats() *stats {
	return &stats{counts: map[string]int{}, statuses: map[statusKey]int{}, closes: map[int]int{}}
}

func (s *stats) count(what string) {
	s.mu.Lock()
	s.counts[what]++
	s.mu.Unlock()
}

func (s *stats) status(what string, code int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statuses[statusKey{what, code, reason}]++
	if s.full && strings.HasSuffix(reason, "/store_full") {
		s.episodes[len(s.episodes)-1]++
	}
}

func (s *stats) closeCode(code int) {
	s.mu.Lock()
	s.closes[code]++
	s.mu.Unlock()
}

func (s *stats) diskFull(full bool) {
	s.mu.Lock()
	s.full = full
	if full {
		s.episodes = append(s.episodes, 0)
	}
	s.mu.Unlock()
}

// fault records something unexpected that is not itself an invariant (a
// client-side timeout, a viewer without a close frame); the first few are
// printed.
func (s *stats) fault(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.nfaults++
	if len(s.faults) < 20 {
		s.faults = append(s.faults, time.Now().UTC().Format("15:04:05")+" "+msg)
	}
	s.mu.Unlock()
	logf("%s", msg)
}

// print writes the markdown summary and reports whether every invariant held.
func (s *stats) print(w io.Writer, o options, load time.Duration, inv []invariant) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(w, "### Soak run (%s UTC)\n\n", time.Now().UTC().Format("2006-01-02 15:04"))
	restarts, fill := "never restarted", "never filled"
	if o.restartEvery > 0 {
		restarts = fmt.Sprintf("restarted every %v (down %v)", o.restartEvery, o.down)
	}
	if o.fillAt >= 0 && o.fillAt < o.duration {
		fill = fmt.Sprintf("filled at %v for %v", o.fillAt, o.fillFor)
	}
	fmt.Fprintf(w, "Load %v, %d workers, %d users; PostgreSQL %s; disk %s; "+
		"MC_MAX_LIFETIME %v, MC_IDLE_TIMEOUT %v, MC_RECONCILE_INTERVAL %v.\n\n",
		load.Round(time.Second), o.workers, o.users, restarts, fill, o.lifetime, o.idle, o.reconcile)
	fmt.Fprintln(w, "| operation | count |\n| --- | ---: |")
	for _, k := range slices.Sorted(maps.Keys(s.counts)) {
		fmt.Fprintf(w, "| %s | %d |\n", k, s.counts[k])
	}
	creates := 0
	for k, v := range s.statuses {
		if k.what == "create" {
			creates += v
		}
	}
	fmt.Fprintf(w, "| create (requests) | %d |\n", creates)
	fmt.Fprintf(w, "| PostgreSQL restarts | %d |\n", s.restarts)
	for i, n := range s.episodes {
		fmt.Fprintf(w, "| disk-full episode %d: 503 store_full answers | %d |\n", i+1, n)
	}
	fmt.Fprintf(w, "| live sessions at the end (not yet expired) | %d |\n", s.liveAtEnd)
	fmt.Fprintf(w, "| fake machines at the end | %d |\n", s.machinesAtEnd)
	fmt.Fprintf(w, "| client-side faults (timeouts, no close frame) | %d |\n", s.nfaults)

	fmt.Fprintln(w, "\n| request | status | error code/reason | count |\n| --- | ---: | --- | ---: |")
	keys := slices.SortedFunc(maps.Keys(s.statuses), func(a, b statusKey) int {
		if c := strings.Compare(a.what, b.what); c != 0 {
			return c
		}
		if a.code != b.code {
			return a.code - b.code
		}
		return strings.Compare(a.reason, b.reason)
	})
	for _, k := range keys {
		code := fmt.Sprint(k.code)
		if k.code == 0 {
			code = "no answer"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d |\n", k.what, code, k.reason, s.statuses[k])
	}

	fmt.Fprintln(w, "\n| viewer close code | count |\n| --- | ---: |")
	for _, c := range slices.Sorted(maps.Keys(s.closes)) {
		label := fmt.Sprint(c)
		switch c {
		case -1:
			label = "none (connection dropped)"
		case -2:
			label = "none (still open 60 s after the end)"
		}
		fmt.Fprintf(w, "| %s | %d |\n", label, s.closes[c])
	}

	ok := true
	fmt.Fprintln(w, "\n| invariant | found | result |\n| --- | ---: | --- |")
	for _, i := range inv {
		res := "ok"
		if i.value != 0 {
			res, ok = "**FAIL**", false
		}
		fmt.Fprintf(w, "| %s | %d | %s |\n", i.name, i.value, res)
	}
	for _, i := range inv {
		if i.value != 0 && i.detail != "" {
			fmt.Fprintf(w, "\n%s: %s\n", i.name, truncate(i.detail, 2000))
		}
	}
	if len(s.faults) > 0 {
		fmt.Fprintln(w, "\nFirst client-side faults:")
		for _, f := range s.faults {
			fmt.Fprintln(w, "-", truncate(f, 300))
		}
	}
	return ok
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
