package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/wsproto"
	"github.com/master-controller/mc/rfb"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is the part of mc.Store that the gateway uses.
type Store interface {
	// Session returns the session. Errors: ENOTFOUND.
	Session(ctx context.Context, id string) (*mc.Session, error)
	// Watch streams the session's changes (see mc.SessionStore.Watch).
	// Errors: ENOTFOUND.
	Watch(ctx context.Context, id string) (<-chan *mc.Session, error)
	// ClaimViewer makes viewer the session's viewer. Errors: ENOTFOUND.
	ClaimViewer(ctx context.Context, id, viewer string) (*mc.Session, error)
	// Touch records viewer activity. Errors: ENOTFOUND.
	Touch(ctx context.Context, id string, at time.Time) error
}

var _ Store = mc.Store(nil)

// TokenVerifier checks viewer tokens (token.Signer implements it). Verify
// returns an *mc.Error: EUNAUTHORIZED (close 4401) or EFORBIDDEN (4403).
type TokenVerifier interface {
	Verify(tok, sessionID string, now time.Time) error
}

// Deps are a Gateway's collaborators.
type Deps struct {
	// Store is required.
	Store Store
	// Tokens is required.
	Tokens TokenVerifier
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Registry receives the metrics; nil registers them nowhere.
	Registry prometheus.Registerer
	// Clock defaults to the system clock.
	Clock mc.Clock
}

// TokenProtocolPrefix is the prefix of the Sec-WebSocket-Protocol entry that
// carries a viewer token for clients that cannot put it in the URL.
const TokenProtocolPrefix = "mc.token."

// Gateway is the http.Handler of GET /api/v1/sessions/{id}/vnc. Mount it on
// a pattern with an {id} wildcard; call Shutdown before the process exits.
type Gateway struct {
	cfg    Config
	store  Store
	tokens TokenVerifier
	log    *slog.Logger
	clock  mc.Clock
	m      *metrics
	pool   *bufPool

	mu        sync.Mutex
	closing   bool
	conns     map[*viewer]struct{}
	bySession map[string][]*viewer
	wg        sync.WaitGroup
}

// New returns a Gateway.
func New(cfg Config, deps Deps) (*Gateway, error) {
	if deps.Store == nil || deps.Tokens == nil {
		return nil, errors.New("new gateway: Store and Tokens are required")
	}
	m, err := newMetrics(deps.Registry)
	if err != nil {
		return nil, fmt.Errorf("new gateway: register metrics: %w", err)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Clock == nil {
		deps.Clock = mc.SystemClock{}
	}
	cfg = cfg.withDefaults()
	return &Gateway{
		cfg: cfg, store: deps.Store, tokens: deps.Tokens, log: deps.Logger, clock: deps.Clock,
		m: m, pool: newBufPool(cfg.BufferSize),
		conns: map[*viewer]struct{}{}, bySession: map[string][]*viewer{},
	}, nil
}

// viewer is one live connection in the registry.
type viewer struct {
	id        string // random viewer id, claimed in the store
	sessionID string
	ctx       context.Context
	cancel    context.CancelCauseFunc
}

// outcome collects what the connection's log line reports.
type outcome struct {
	sessionID string
	viewerID  string
	session   *mc.Session
	ip        netip.Addr
	wait      time.Duration
	toMachine atomic.Int64
	toViewer  atomic.Int64
	err       error // the cause, for the log only
	// readerDone is closed when the connection's reader goroutine ends.
	readerDone chan struct{}
}

// ServeHTTP serves one viewer WebSocket.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := g.clock.Now()
	id := r.PathValue("id")
	o := &outcome{}
	if mc.ValidID(id) {
		o.sessionID = id
	}
	// Checks that cost nothing come before the upgrade; their refusal is
	// reported after it, as a close frame.
	var refusal *closeErr
	offered := subprotocols(r)
	if !g.originAllowed(r) {
		refusal = errOrigin
	} else if err := g.tokens.Verify(tokenOf(r, offered), id, start); err != nil {
		refusal = tokenClose(err)
		o.err = err
	}
	// Origin is checked above and refused with a close frame.
	c, err := wsproto.Accept(w, r, chooseSubprotocol(offered), g.cfg.MaxMessageSize)
	if err != nil {
		g.m.upgrades.WithLabelValues("bad_upgrade").Inc()
		g.log.LogAttrs(r.Context(), slog.LevelInfo, "viewer connection",
			slog.String(mc.LogSessionID, o.sessionID), slog.Int("close_code", 0),
			slog.String(mc.LogReason, "bad_upgrade"), slog.String("error", err.Error()))
		return
	}
	if refusal == nil {
		v, ok := g.register(id)
		o.viewerID = v.id
		if !ok {
			refusal = errShutdown
		} else {
			// Unregistered only after the close frame: Shutdown waits for it.
			defer g.unregister(v)
			refusal = g.serve(c, v, o)
		}
	}
	g.finish(r.Context(), c, o, refusal, start)
	if o.readerDone != nil {
		<-o.readerDone // ends once finish has closed the WebSocket
	}
}

// finish sends the close frame, logs the outcome and counts it.
func (g *Gateway) finish(ctx context.Context, c *wsproto.Conn, o *outcome, ce *closeErr, start time.Time) {
	g.m.upgrades.WithLabelValues(string(ce.reason)).Inc()
	if ce.code != 0 {
		_ = c.Close(wsproto.StatusCode(ce.code), ce.text, ce != errPingTimeout) // an unresponsive peer gets no wait
	} else {
		_ = c.CloseNow()
	}
	level := slog.LevelInfo
	switch ce.code {
	case CodeInternal, CodeUnreachable, CodeMachineGone:
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String(mc.LogSessionID, o.sessionID),
		slog.String("viewer_id", o.viewerID),
		slog.String("machine_ip", maskIP(o.ip)),
		slog.Duration("wait", o.wait),
		slog.Int64("bytes_to_machine", o.toMachine.Load()),
		slog.Int64("bytes_to_viewer", o.toViewer.Load()),
		slog.Duration("duration", g.clock.Now().Sub(start)),
		slog.Int("close_code", int(ce.code)),
		slog.String(mc.LogReason, string(ce.reason)),
	}
	if o.err != nil {
		attrs = append(attrs, slog.String("error", o.err.Error()))
	}
	g.log.LogAttrs(ctx, level, "viewer connection", attrs...)
}

// register adds a viewer of session id to the registry. It returns false
// once Shutdown has begun. With MaxViewers > 1 it takes over from the
// replica's oldest viewer of the session when the session is full.
func (g *Gateway) register(id string) (*viewer, bool) {
	ctx, cancel := context.WithCancelCause(context.Background())
	v := &viewer{id: mc.NewID(), sessionID: id, ctx: ctx, cancel: cancel}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		cancel(errShutdown)
		return v, false
	}
	g.conns[v] = struct{}{}
	if g.cfg.MaxViewers > 1 {
		list := g.bySession[id]
		if len(list) >= g.cfg.MaxViewers {
			list[0].cancel(errTakenOver)
			list = list[1:]
		}
		g.bySession[id] = append(list, v)
	}
	g.wg.Add(1)
	g.m.active.Inc()
	return v, true
}

func (g *Gateway) unregister(v *viewer) {
	v.cancel(nil)
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.conns, v)
	if list, ok := g.bySession[v.sessionID]; ok {
		for i, x := range list {
			if x == v {
				list = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(g.bySession, v.sessionID)
		} else {
			g.bySession[v.sessionID] = list
		}
	}
	g.m.active.Dec()
	g.wg.Done()
}

// Shutdown closes every viewer connection with 1001 and waits until they
// are gone or ctx ends. New connections are refused with 1001 from then on.
// http.Server.Shutdown does not see hijacked connections: call this too.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.closing = true
	for v := range g.conns {
		v.cancel(errShutdown)
	}
	g.mu.Unlock()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shut down gateway: %w", ctx.Err())
	}
}

// errUpstreamEnded is the cause when the machine side of a bridge ends; the
// session's state then decides between 4503 and the session's own code.
var errUpstreamEnded = errors.New("upstream ended")

// serve runs one accepted connection: look-up, wait, dial, handshakes,
// bridge. It returns how the connection ends.
func (g *Gateway) serve(c *wsproto.Conn, v *viewer, o *outcome) *closeErr {
	ctx, id := v.ctx, v.sessionID
	// decide turns the cause of an ended ctx (or a local error) into a close.
	decide := func(err error) *closeErr {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
		if ce, ok := bridgeClose(err, o); ok {
			return ce
		}
		if errors.Is(err, errUpstreamEnded) {
			return g.upstreamEnded(id, o)
		}
		o.err = err
		return errInternal
	}

	// The reader goroutine: it reads from the start, so pongs and the
	// viewer's close are seen while we wait; it does the browser's RFB
	// handshake once we have sent the banner, then copies to the machine.
	stream := &wsStream{c: c}
	browserDone := make(chan error, 1)
	upCh := make(chan net.Conn, 1)
	readerDone := make(chan struct{})
	o.readerDone = readerDone
	go func() {
		defer close(readerDone)
		_, err := rfb.ServerHandshakeNoneAfterBanner(stream)
		if err != nil {
			if errors.Is(err, rfb.ErrNoClient) || errors.Is(err, rfb.ErrUnsupportedVersion) {
				v.cancel(errBadClient)
			} else {
				v.cancel(&viewerErr{err})
			}
			browserDone <- err
			return
		}
		browserDone <- nil
		var up net.Conn
		select {
		case up = <-upCh:
		case <-ctx.Done():
			return
		}
		err = copyToUpstream(stream, up, g.pool, &o.toMachine, g.m.countToMachine)
		var ue *upstreamErr
		if errors.As(err, &ue) {
			v.cancel(errUpstreamEnded)
		} else {
			v.cancel(err)
		}
	}()
	// Whatever ends, the WebSocket is closed by finish, which ends the reader.
	stopPing := startPinger(c, g.cfg.PingInterval, func() { v.cancel(errPingTimeout) })
	defer stopPing()

	s, err := g.store.Session(ctx, id)
	if err != nil {
		if mc.ErrorCode(err) == mc.ENOTFOUND {
			return errNotFound
		}
		return decide(fmt.Errorf("get session %s: %w", id, err))
	}
	o.session = s
	o.ip = s.Machine.IP
	if g.log.Enabled(ctx, slog.LevelDebug) {
		g.log.LogAttrs(ctx, slog.LevelDebug, "viewer session", slog.String(mc.LogSessionID, id),
			slog.String("viewer_id", v.id), slog.Any("session", s)) // Secrets log as REDACTED
	}
	if s.State.Final() {
		return ended(s)
	}
	if g.cfg.MaxViewers == 1 {
		if _, err := g.store.ClaimViewer(ctx, id, v.id); err != nil {
			if mc.ErrorCode(err) == mc.ENOTFOUND {
				return errNotFound
			}
			return decide(fmt.Errorf("claim viewer of session %s: %w", id, err))
		}
	}
	g.touch(ctx, id)
	ch, err := g.store.Watch(ctx, id)
	if err != nil {
		if mc.ErrorCode(err) == mc.ENOTFOUND {
			return errNotFound
		}
		return decide(fmt.Errorf("watch session %s: %w", id, err))
	}
	readyCh := make(chan *mc.Session, 1)
	go g.watch(v, ch, readyCh)

	// Wait for ready. The waiting gauge counts viewers parked here, so an
	// operator sees how many browsers wait on starting machines.
	waitStart := g.clock.Now()
	g.m.waiting.Inc()
	ready, werr := func() (*mc.Session, *closeErr) {
		defer g.m.waiting.Dec()
		timer := time.NewTimer(g.cfg.ReadyTimeout)
		defer timer.Stop()
		select {
		case ready := <-readyCh:
			return ready, nil
		case <-timer.C:
			return nil, errNotReady
		case <-ctx.Done():
			return nil, decide(nil)
		}
	}()
	o.wait = g.clock.Now().Sub(waitStart)
	if werr != nil {
		if werr == errNotReady {
			g.m.waitReady.Observe(o.wait.Seconds())
		}
		return werr
	}
	g.m.waitReady.Observe(o.wait.Seconds())

	// Dial only the session's own address, only inside the machine network.
	addr := ready.Machine.VNCAddr()
	o.ip = addr.Addr()
	if !g.cfg.allowedAddr(addr) {
		o.err = fmt.Errorf("vnc address %s of session %s is outside the machine network", maskIP(addr.Addr()), id)
		return errAddr
	}
	up, err := g.dial(ctx, addr)
	if err != nil {
		if ctx.Err() != nil {
			return decide(nil)
		}
		o.err = err
		return errUnreachable
	}
	defer up.Close()
	stopUp := context.AfterFunc(ctx, func() { up.SetDeadline(time.Unix(1, 0)) })
	defer stopUp()

	pw := ready.Secrets.VNCPassword
	if pw.IsZero() {
		pw = s.Secrets.VNCPassword
	}
	up.SetDeadline(g.clock.Now().Add(g.cfg.HandshakeTimeout))
	_, err = rfb.ClientHandshake(up, pw)
	up.SetDeadline(time.Time{})
	if ctx.Err() != nil {
		return decide(nil)
	}
	if err != nil {
		o.err = fmt.Errorf("rfb handshake with machine of session %s: %w", id, err)
		var ae *rfb.AuthError
		switch {
		case errors.Is(err, rfb.ErrNotRFB), errors.Is(err, rfb.ErrUnsupportedVersion):
			return errNotRFB
		case errors.As(err, &ae), errors.Is(err, rfb.ErrUnsupportedSecurity):
			return errVNCAuth
		}
		return errUnreachable
	}

	// The machine is authenticated; present the browser a server without
	// authentication. Its ClientInit and everything after is bridged.
	if _, err := stream.Write(rfb.V38.Banner()); err != nil {
		return decide(&viewerErr{err})
	}
	hs := time.NewTimer(g.cfg.HandshakeTimeout)
	defer hs.Stop()
	select {
	case err := <-browserDone:
		if err != nil {
			return decide(err)
		}
	case <-hs.C:
		return errBadClient
	case <-ctx.Done():
		return decide(nil)
	}
	upCh <- up
	err = copyToViewer(up, c, g.pool, &o.toViewer, g.m.countToViewer)
	var ue *upstreamErr
	if errors.As(err, &ue) && context.Cause(ctx) == nil {
		err = errUpstreamEnded
	}
	return decide(err)
}

// upstreamEnded decides how a stream ends whose machine side closed: with
// the session's own code when it has ended, else 4503.
func (g *Gateway) upstreamEnded(id string, o *outcome) *closeErr {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := g.store.Session(ctx, id)
	if err == nil && s.State.Final() {
		return ended(s)
	}
	return errMachineGone
}

// watch follows the session while the viewer is connected: readiness,
// take-over, final states; and it records activity.
func (g *Gateway) watch(v *viewer, ch <-chan *mc.Session, ready chan<- *mc.Session) {
	sent := false
	touch := time.NewTicker(g.cfg.TouchInterval)
	defer touch.Stop()
	for {
		select {
		case s, ok := <-ch:
			if !ok {
				return
			}
			if g.cfg.MaxViewers == 1 && s.Viewer != "" && s.Viewer != v.id {
				v.cancel(errTakenOver)
				return
			}
			if s.State.Final() {
				v.cancel(ended(s))
				return
			}
			if !sent && (s.State == mc.StateReady || s.State == mc.StateCapturing) {
				sent = true
				ready <- s
			}
		case <-touch.C:
			g.touch(v.ctx, v.sessionID)
		case <-v.ctx.Done():
			return
		}
	}
}

func (g *Gateway) touch(ctx context.Context, id string) {
	if err := g.store.Touch(ctx, id, g.clock.Now()); err != nil && ctx.Err() == nil {
		g.log.LogAttrs(ctx, slog.LevelDebug, "touch session", slog.String(mc.LogSessionID, id),
			slog.String("error", err.Error()))
	}
}

// dial connects to the machine's VNC server with a short linear backoff, for
// a server that is a moment late.
func (g *Gateway) dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: g.cfg.DialTimeout}
	var err error
	for i := range g.cfg.DialTries {
		if i > 0 {
			g.m.dialRetries.Inc()
			t := time.NewTimer(min(time.Duration(i)*100*time.Millisecond, 400*time.Millisecond))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
		var c net.Conn
		c, err = d.DialContext(ctx, "tcp", addr.String())
		if err == nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("dial vnc %s: %w", maskIP(addr.Addr()), err)
}

// originAllowed reports whether the request's Origin may open the socket.
func (g *Gateway) originAllowed(r *http.Request) bool {
	return originAllowed(r, g.cfg.AllowedOrigins)
}

func originAllowed(r *http.Request, patterns []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: nothing to forge
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// subprotocols lists the Sec-WebSocket-Protocol entries the client offered.
func subprotocols(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// tokenOf returns the viewer token from the query or the subprotocols.
func tokenOf(r *http.Request, offered []string) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	for _, p := range offered {
		if t, ok := strings.CutPrefix(p, TokenProtocolPrefix); ok {
			return t
		}
	}
	return ""
}

// chooseSubprotocol answers "binary" when offered. A client that offered only
// the token entry gets it back, because browsers fail a handshake whose
// response selects none of the offered subprotocols.
func chooseSubprotocol(offered []string) []string {
	for _, p := range offered {
		if p == "binary" {
			return []string{"binary"}
		}
	}
	for _, p := range offered {
		if strings.HasPrefix(p, TokenProtocolPrefix) {
			return []string{p}
		}
	}
	return nil
}

// maskIP hides the host part of a machine address in logs: 10.200.0.x.
func maskIP(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return fmt.Sprintf("%d.%d.%d.x", b[0], b[1], b[2])
	}
	p, _ := a.Prefix(64)
	return p.Addr().String() + "x"
}
