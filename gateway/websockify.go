package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/wsproto"
	"github.com/prometheus/client_golang/prometheus"
)

// Websockify is a websockify-compatible handler: it bridges each WebSocket
// (any path) plainly to a TCP target, without RFB termination, with the same
// copy code as the Gateway. Requests that are not WebSocket upgrades get the
// static files of Web. Set the fields before the first request.
type Websockify struct {
	// Target is the TCP address (host:port) every connection goes to, unless
	// TokenFile is set.
	Target string
	// TokenFile is a file, or a directory of files, in websockify's token
	// plugin format: lines "token: host:port" ('#' starts a comment). The
	// token comes from the "token" query parameter. It is read on every
	// connection, so edits apply at once.
	TokenFile string
	// Web is a directory served for plain HTTP requests ("" serves nothing).
	Web string
	// PingInterval between WebSocket pings; a ping unanswered for as long
	// closes the connection. Default 20 s; negative disables pings.
	PingInterval time.Duration
	// DialTimeout bounds the dial of the target. Default 5 s.
	DialTimeout time.Duration
	// BufferSize is the size of the pooled copy buffers. Default 64 KiB.
	BufferSize int
	// MaxMessageSize is the largest message accepted from a client. Default 4 MiB.
	MaxMessageSize int64
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Registry receives the mc_gateway_* metrics; nil registers them nowhere.
	Registry prometheus.Registerer

	once    sync.Once
	initErr error
	m       *metrics
	pool    *bufPool
	files   http.Handler

	mu      sync.Mutex
	closing bool
	conns   map[*stopper]struct{}
	wg      sync.WaitGroup
}

func (w *Websockify) init() error {
	w.once.Do(func() {
		if w.PingInterval == 0 {
			w.PingInterval = 20 * time.Second
		}
		if w.DialTimeout <= 0 {
			w.DialTimeout = 5 * time.Second
		}
		if w.BufferSize <= 0 {
			w.BufferSize = 64 << 10
		}
		if w.MaxMessageSize <= 0 {
			w.MaxMessageSize = 4 << 20
		}
		if w.Logger == nil {
			w.Logger = slog.New(slog.DiscardHandler)
		}
		w.pool = newBufPool(w.BufferSize)
		w.conns = map[*stopper]struct{}{}
		if w.Web != "" {
			w.files = http.FileServer(http.Dir(w.Web))
		}
		w.m, w.initErr = newMetrics(w.Registry)
	})
	return w.initErr
}

// Outcomes of the websockify mode only.
var (
	endTargetUnknown = &outcome{code: CodeUnreachable, reason: ReasonTokenUnknown, text: "unknown token"}
	endTargetClosed  = &outcome{code: wsproto.StatusNormalClosure, reason: ReasonTargetClosed, text: "target closed the connection"}
	endTargetError   = &outcome{code: CodeMachineGone, reason: ReasonTargetError, text: "target connection failed"}
)

// ServeHTTP bridges a WebSocket upgrade or serves a static file.
func (w *Websockify) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if err := w.init(); err != nil {
		http.Error(rw, "internal error", http.StatusInternalServerError)
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		if w.files == nil {
			http.NotFound(rw, r)
			return
		}
		w.files.ServeHTTP(rw, r)
		return
	}
	start := time.Now()
	// websockify does not check Origin either.
	c, err := wsproto.Accept(rw, r, chooseSubprotocol(subprotocols(r)), w.MaxMessageSize)
	if err != nil {
		w.m.upgrades.WithLabelValues(string(ReasonBadUpgrade)).Inc()
		return
	}
	rec := &record{}
	o, reader := w.serve(c, r, rec)
	w.m.upgrades.WithLabelValues(string(o.reason)).Inc()
	closeWith(c, o)
	<-reader
	if !w.Logger.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	attrs := []slog.Attr{
		slog.String("remote", r.RemoteAddr),
		slog.Int64("bytes_to_target", rec.toMachine.Load()),
		slog.Int64("bytes_to_client", rec.toViewer.Load()),
		slog.Duration("duration", time.Since(start)),
		slog.Int("close_code", int(o.code)),
		slog.String(mc.LogReason, string(o.reason)),
	}
	if o.err != nil {
		attrs = append(attrs, slog.String(mc.LogError, o.err.Error()))
	}
	w.Logger.LogAttrs(r.Context(), slog.LevelInfo, "websockify connection", attrs...)
}

// serve bridges one connection to its target and returns how it ends, and
// a channel closed when its reader ends (once the WebSocket is closed).
func (w *Websockify) serve(c *wsproto.Conn, r *http.Request, rec *record) (*outcome, <-chan struct{}) {
	readerDone := make(chan struct{})
	st := newStopper()
	defer st.cancel()
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		close(readerDone)
		return endShutdown, readerDone
	}
	w.conns[st] = struct{}{}
	w.wg.Add(1)
	w.mu.Unlock()
	w.m.active.Inc()
	defer func() {
		w.mu.Lock()
		delete(w.conns, st)
		w.mu.Unlock()
		w.m.active.Dec()
		w.wg.Done()
	}()

	target := w.Target
	if w.TokenFile != "" {
		t, err := lookupToken(w.TokenFile, r.URL.Query().Get("token"))
		if err != nil {
			close(readerDone)
			return endTargetUnknown.because(err), readerDone
		}
		target = t
	}
	d := net.Dialer{Timeout: w.DialTimeout}
	up, err := d.DialContext(st.ctx, "tcp", target)
	if err != nil {
		close(readerDone)
		return st.or(endUnreachable.because(err)), readerDone
	}
	defer up.Close()
	stop := context.AfterFunc(st.ctx, func() { up.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if w.PingInterval > 0 {
		stopPing := startPinger(c, w.PingInterval, func() { st.stop(endPingTimeout) })
		defer stopPing()
	}

	go func() {
		defer close(readerDone)
		err := copyToUpstream(&wsStream{c: c}, up, w.pool, &rec.toMachine, w.m.countToMachine)
		// Wake copyToViewer from here: through the AfterFunc, every
		// connection's end would start one more goroutine (measured: a
		// thread wake-up and about 2 context switches per connection).
		if stop() {
			up.SetDeadline(time.Unix(1, 0))
		}
		st.stop(targetOutcome(err))
		st.cancel()
	}()
	err = copyToViewer(up, c, w.pool, &rec.toViewer, w.m.countToViewer)
	return st.or(targetOutcome(err)), readerDone
}

// targetOutcome is the outcome of a websockify bridge whose copy ended with
// err.
func targetOutcome(err error) *outcome {
	if o, ok := viewerOutcome(err); ok {
		return o
	}
	if errors.Is(err, io.EOF) {
		return endTargetClosed
	}
	return endTargetError.because(err)
}

// Shutdown closes every connection with 1001 and waits for them or ctx.
func (w *Websockify) Shutdown(ctx context.Context) error {
	if err := w.init(); err != nil {
		return err
	}
	w.mu.Lock()
	w.closing = true
	for st := range w.conns {
		st.stop(endShutdown)
	}
	w.mu.Unlock()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shut down websockify: %w", ctx.Err())
	}
}

// lookupToken finds tok's target in a websockify token file or directory.
func lookupToken(path, tok string) (string, error) {
	if tok == "" {
		return "", errors.New("no token in the request")
	}
	files := []string{path}
	if fi, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	} else if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return "", fmt.Errorf("read token directory: %w", err)
		}
		files = files[:0]
		for _, e := range entries {
			if !e.IsDir() {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	for _, f := range files {
		if t, ok, err := scanTokenFile(f, tok); err != nil {
			return "", err
		} else if ok {
			return t, nil
		}
	}
	return "", errors.New("unknown token")
}

func scanTokenFile(name, tok string) (string, bool, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", false, fmt.Errorf("read token file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == tok {
			return strings.TrimSpace(v), true, nil
		}
	}
	return "", false, sc.Err()
}

// Listen listens on addr (host:port, as net.Listen) for Serve. While pings
// run it turns TCP keepalive off: pings find a dead client, and keepalive
// would only add four setsockopt(2) calls to every accepted connection.
func (w *Websockify) Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{}
	if w.PingInterval >= 0 {
		lc.KeepAlive = -1
	}
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("websockify: listen %s: %w", addr, err)
	}
	return l, nil
}

// Serve serves connections on l until ctx ends or l fails: each
// connection's first request is read here and a WebSocket upgrade is
// bridged on that goroutine; any other request goes to net/http (static
// files from Web). When ctx ends it closes l and every connection (1001)
// and returns nil; when l fails it returns the error.
func (w *Websockify) Serve(ctx context.Context, l net.Listener) error {
	if err := w.init(); err != nil {
		return err
	}
	srv := &http.Server{Handler: w, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(w.Logger.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- w.serveFast(l, srv) }()
	var err error
	select {
	case err = <-errc:
		err = fmt.Errorf("websockify: serve: %w", err)
	case <-ctx.Done():
	}
	l.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return errors.Join(err, w.Shutdown(sctx))
}
