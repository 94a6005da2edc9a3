package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/wsproto"
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
	// MachineKey gives the machines' VNC passwords: the session manager's
	// mc.MachineKey (a test gives its own). Required.
	MachineKey MachineSecrets
}

// MachineSecrets gives the secrets of the machine of a session, which are
// derived, never stored (mc.MachineKey implements it). The gateway takes the
// VNC password.
type MachineSecrets interface {
	Secrets(sessionID string) mc.MachineSecrets
}

var _ MachineSecrets = mc.MachineKey{}

// TokenProtocolPrefix is the prefix of the Sec-WebSocket-Protocol entry that
// carries a viewer token for clients that cannot put it in the URL.
const TokenProtocolPrefix = "mc.token."

// Gateway is the http.Handler of GET /api/v1/sessions/{id}/vnc. Mount it on
// a pattern with an {id} wildcard; call Shutdown before the process exits.
type Gateway struct {
	cfg     Config
	origins originPolicy
	store   Store
	tokens  TokenVerifier
	log     *slog.Logger
	clock   mc.Clock
	keys    MachineSecrets
	m       *metrics
	pool    *bufPool

	mu        sync.Mutex
	closing   bool
	conns     map[*viewer]struct{}
	bySession map[string][]*viewer
	wg        sync.WaitGroup
}

// New returns a Gateway.
func New(cfg Config, deps Deps) (*Gateway, error) {
	if deps.Store == nil || deps.Tokens == nil || deps.MachineKey == nil {
		return nil, errors.New("new gateway: Store, Tokens and MachineKey are required")
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
	origins, err := newOriginPolicy(cfg.PublicURL, cfg.AllowedOrigins)
	if err != nil {
		return nil, fmt.Errorf("new gateway: %w", err)
	}
	return &Gateway{
		cfg: cfg, origins: origins, store: deps.Store, tokens: deps.Tokens, log: deps.Logger, clock: deps.Clock,
		keys: deps.MachineKey,
		m:    m, pool: newBufPool(cfg.BufferSize),
		conns: map[*viewer]struct{}{}, bySession: map[string][]*viewer{},
	}, nil
}

// stopper ends a connection from outside the goroutine that serves it
// (shutdown, take-over, the session's end, a ping timeout, the reader): the
// first outcome given to stop is kept, and its context ends.
type stopper struct {
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	end    *outcome
}

func newStopper() *stopper {
	ctx, cancel := context.WithCancel(context.Background())
	return &stopper{ctx: ctx, cancel: cancel}
}

// stop ends the connection with o, unless it has an outcome already.
func (s *stopper) stop(o *outcome) {
	s.mu.Lock()
	if s.end == nil {
		s.end = o
	}
	s.mu.Unlock()
	s.cancel()
}

// stopped returns the outcome given to stop, or nil.
func (s *stopper) stopped() *outcome {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end
}

// or returns the outcome given to stop, if any, else o: a phase that failed
// because its context ended reports why the context ended.
func (s *stopper) or(o *outcome) *outcome {
	if e := s.stopped(); e != nil {
		return e
	}
	return o
}

// viewer is one live connection in the registry.
type viewer struct {
	*stopper
	id        string // random viewer id, claimed in the store
	sessionID string
}

// record collects what the connection's log line reports.
type record struct {
	sessionID string
	viewerID  string
	ip        netip.Addr
	wait      time.Duration
	toMachine atomic.Int64
	toViewer  atomic.Int64
}

// ServeHTTP serves one viewer WebSocket.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := g.clock.Now()
	id := r.PathValue("id")
	rec := &record{}
	if mc.ValidID(id) {
		rec.sessionID = id
	}
	// Checks that cost nothing come before the upgrade; their refusal is
	// reported after it, as a close frame.
	var refusal *outcome
	offered := subprotocols(r)
	if !g.origins.allowed(r.Header.Get("Origin")) {
		refusal = endOrigin
	} else if err := g.tokens.Verify(tokenOf(r, offered), id, start); err != nil {
		refusal = tokenOutcome(err)
	}
	c, err := wsproto.Accept(w, r, chooseSubprotocol(offered), g.cfg.MaxMessageSize)
	if err != nil {
		g.m.upgrades.WithLabelValues(string(ReasonBadUpgrade)).Inc()
		g.log.LogAttrs(r.Context(), slog.LevelInfo, "viewer connection",
			slog.String(mc.LogSessionID, rec.sessionID), slog.Int("close_code", 0),
			slog.String(mc.LogReason, string(ReasonBadUpgrade)), slog.String(mc.LogError, err.Error()))
		return
	}
	if refusal != nil {
		g.finish(r.Context(), c, rec, refusal, start)
		return
	}
	v, ok := g.register(id)
	rec.viewerID = v.id
	if !ok {
		g.finish(r.Context(), c, rec, endShutdown, start)
		return
	}
	// Unregistered only after the close frame: Shutdown waits for it.
	defer g.unregister(v)
	o, reader := g.serve(c, v, rec)
	v.stop(o) // ends what still runs for the connection
	g.finish(r.Context(), c, rec, o, start)
	<-reader // ends once finish has closed the WebSocket
}

// finish sends the close frame, logs the outcome and counts it.
func (g *Gateway) finish(ctx context.Context, c *wsproto.Conn, rec *record, o *outcome, start time.Time) {
	g.m.upgrades.WithLabelValues(string(o.reason)).Inc()
	closeWith(c, o)
	level := slog.LevelInfo
	switch o.code {
	case CodeInternal, CodeUnreachable, CodeMachineGone:
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String(mc.LogSessionID, rec.sessionID),
		slog.String("viewer_id", rec.viewerID),
		slog.String("machine_ip", maskIP(rec.ip)),
		slog.Duration("wait", rec.wait),
		slog.Int64("bytes_to_machine", rec.toMachine.Load()),
		slog.Int64("bytes_to_viewer", rec.toViewer.Load()),
		slog.Duration("duration", g.clock.Now().Sub(start)),
		slog.Int("close_code", int(o.code)),
		slog.String(mc.LogReason, string(o.reason)),
	}
	if o.err != nil {
		attrs = append(attrs, slog.String(mc.LogError, o.err.Error()))
	}
	g.log.LogAttrs(ctx, level, "viewer connection", attrs...)
}

// closeWith ends c as o says: with o's close frame (waiting for the
// viewer's, except from a viewer that stopped answering), or, for a zero
// code, without one.
func closeWith(c *wsproto.Conn, o *outcome) {
	if o.code == 0 {
		_ = c.CloseNow()
		return
	}
	_ = c.Close(o.code, o.text, o.reason != ReasonPingTimeout)
}

// register adds a viewer of session id to the registry. It returns false
// once Shutdown has begun. With MaxViewers > 1 it takes over from the
// replica's oldest viewer of the session when the session is full.
func (g *Gateway) register(id string) (*viewer, bool) {
	v := &viewer{stopper: newStopper(), id: mc.NewID(), sessionID: id}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		v.stop(endShutdown)
		return v, false
	}
	g.conns[v] = struct{}{}
	if g.cfg.MaxViewers > 1 {
		list := g.bySession[id]
		if len(list) >= g.cfg.MaxViewers {
			list[0].stop(endTakenOver)
			list = list[1:]
		}
		g.bySession[id] = append(list, v)
	}
	g.wg.Add(1)
	g.m.active.Inc()
	return v, true
}

func (g *Gateway) unregister(v *viewer) {
	v.cancel()
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
		v.stop(endShutdown)
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
