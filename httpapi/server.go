// Package httpapi is master-controller's HTTP API: the routes of the REST API
// and of the earlier controller's compatibility endpoints, JSON in and out,
// API-key authentication, and the one table that maps mc error codes to HTTP
// statuses. Its collaborators are small interfaces declared here; app/ wires
// the real session manager, store, token signer, vault and gateway.
//
// Every request gets a request id (X-Request-ID, echoed), a logger carrying it
// (Logger), one access log line (method, route pattern, status, duration,
// bytes, and for a refused or failed request its reason code; never the query
// string, which may hold a viewer token), panic recovery, and the metrics
// mc_http_requests_total{route,code}, mc_http_request_seconds{route} and
// mc_http_errors_total{route,reason}.
//
// Routes (all under /api/ and /metrics need "Authorization: Bearer <API
// key>", except the two WebSocket routes, which the gateway authenticates by
// viewer token):
//
//	POST   /api/v1/sessions                      {"user_id","provider"} → 201 {"session","viewer":{"url","token","expires_at"}}
//	GET    /api/v1/sessions                      ?user_id=&provider=&state=&limit=&cursor= → {"sessions":[…],"next_cursor"?}
//	GET    /api/v1/sessions/{id}                 → {"session"}
//	POST   /api/v1/sessions/{id}/cancel          → {"session"}; a final session: 409 session_ended
//	GET    /api/v1/sessions/{id}/events          → {"events":[…]}
//	POST   /api/v1/sessions/{id}/viewer-token    → {"url","token","expires_at"}; a final session: 409 session_ended
//	GET    /api/v1/sessions/{id}/vnc             the gateway (WebSocket)
//	GET    /api/v1/providers                     → {"providers":[{…recipe, "available", "unavailable"?}]}
//	GET    /api/v1/credentials/{user_id}         → {"user_id","credentials":[{"provider","captured_at","session_id"}]}
//	GET    /api/v1/credentials/{user_id}/{provider}  → the opened mc.Credential
//	DELETE /api/v1/credentials/{user_id}/{provider}  → 204
//	GET    /api/v1/audit                         ?user_id=&limit= → {"entries":[…]}, newest first
//	POST   /api/auth/start                       {"userId","provider"} → 200 {"sessionId","status","viewerUrl","websocketUrl","token"}
//	GET    /api/auth/session/{id}                → {"sessionId","status","userId","provider","viewerUrl"?}
//	GET    /api/auth/session/{id}/novnc/websock  the gateway (WebSocket)
//	GET    /healthz                              always 200 {"status":"ok"}
//	GET    /readyz                               200 or 503 {"status"}; with the API key also "checks":{name:"ok"|what is wrong}
//	GET    /metrics                              Deps.Metrics, with the API key
//	GET /, GET /sessions/{id}/view, GET /static/…, GET /novnc/…  Deps.Web
//
// Errors are {"error":{"code","message"[,"reason"][,"session_id"]}} with the
// status from one table (invalid 400, unauthorized 401, forbidden 403,
// not_found 404, conflict 409, unavailable 503 with Retry-After, internal
// 500); an internal error's cause goes to the log, never to the client. Bad
// input is always 400 invalid, with a reason: bad_json, unknown_field,
// duplicate_key (a key twice, or two keys that differ only in case),
// trailing_data, body_too_large (over 64 KiB: 400, not 413), body_timeout
// (the body did not arrive within Config.BodyTimeout), bad_content_type (a
// Content-Type that is not JSON; none is accepted), bad_query (a query
// string that cannot be decoded), bad_user_id, unknown_provider, bad_id (an
// {id} that is not an id, refused before any look-up), bad_state (state is
// a state or "active"), bad_limit (1 to 500), bad_cursor. An unknown route
// is 404 not_found (no_route); a known route with another method is 405
// invalid (method_not_allowed), with Allow; a plain request on a viewer route
// is 426 invalid (upgrade_required), with Upgrade: websocket; a path that is
// not clean is redirected (307, Location) with a not_found (redirect) body.
// Past the caps on connections and viewers: 503 unavailable
// (too_many_connections, too_many_viewers). The API key is checked before
// any body is read, and an answer given before the whole body has arrived
// closes the connection rather than wait for the rest.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/master-controller/mc"
)

// Config configures the API. The zero value of every field but APIKeys has a
// usable default.
type Config struct {
	// PublicURL is the controller's base URL as browsers reach it
	// (scheme://host[:port][/prefix], no query), used to build the viewer URLs
	// that the API returns: PublicURL + "/sessions/{id}/view?token=…". When
	// empty, viewer URLs are relative to the server root.
	PublicURL string
	// APIKeys are the SHA-256 hashes of the accepted API keys (see HashAPIKey
	// and ParseKeyHash); the keys themselves are never held. At least one is
	// required: New refuses a server that would answer 401 to everything.
	APIKeys []KeyHash
	// ViewerTokenTTL is the lifetime of the viewer tokens the API issues
	// (default 10 minutes).
	ViewerTokenTTL time.Duration
	// MaxBodyBytes bounds a request body (default 64 KiB); a larger body is
	// refused with 400, code invalid, reason body_too_large.
	MaxBodyBytes int64
	// Replica names this process in the X-MC-Replica response header. The
	// logger given to New is expected to carry it already (app's does), so
	// the API does not add it again: a log line holds each key once.
	Replica string
	// ReadyTimeout bounds each readiness check of GET /readyz (default 2 s).
	ReadyTimeout time.Duration

	// HeaderTimeout bounds reading a request's header (default 10 s).
	HeaderTimeout time.Duration
	// BodyTimeout bounds reading a request's body, from the start of its
	// handler (default 30 s); past it the request is refused with 400,
	// reason body_timeout.
	BodyTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long between
	// requests (default 2 minutes).
	IdleTimeout time.Duration
	// MaxConnections caps the HTTP connections that HTTPServer's listener
	// holds at once (0: no cap); a viewer's leaves the count once it is a
	// WebSocket. See HTTPServer.
	MaxConnections int
	// MaxViewerConnections caps the viewer WebSockets open at once (0: no
	// cap); past it a viewer is answered 503, reason too_many_viewers,
	// before the upgrade.
	MaxViewerConnections int
}

func (c *Config) setDefaults() {
	if c.ViewerTokenTTL <= 0 {
		c.ViewerTokenTTL = 10 * time.Minute
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 2 * time.Second
	}
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = 10 * time.Second
	}
	if c.BodyTimeout <= 0 {
		c.BodyTimeout = 30 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 2 * time.Minute
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
}

// Sessions starts and cancels sessions (the session manager).
type Sessions interface {
	// Start creates a session for (userID, provider) and returns it at once,
	// in state pending.
	// Errors: EINVALID (unknown_provider); ECONFLICT (active_session, with
	// SessionID of the existing session); EUNAVAILABLE (capacity, with
	// RetryAfter).
	Start(ctx context.Context, userID, provider string) (*mc.Session, error)
	// Cancel moves a live session to cancelled.
	// Errors: ENOTFOUND; ECONFLICT (session_ended) for a final session.
	Cancel(ctx context.Context, id string) (*mc.Session, error)
}

// Store is the part of mc.Store that the API reads.
type Store interface {
	// Session returns one session. Errors: ENOTFOUND.
	Session(ctx context.Context, id string) (*mc.Session, error)
	// Sessions returns one page of sessions and the next cursor.
	// Errors: EINVALID (bad_cursor).
	Sessions(ctx context.Context, f mc.SessionFilter) ([]*mc.Session, string, error)
	// Events returns a session's event log. Errors: ENOTFOUND.
	Events(ctx context.Context, id string) ([]mc.Event, error)
	// Audit returns audit entries, newest first.
	Audit(ctx context.Context, f mc.AuditFilter) ([]mc.AuditEntry, error)
	// Ping checks that the store is reachable (a readiness check).
	Ping(ctx context.Context) error
}

// Tokens issues viewer tokens.
type Tokens interface {
	// Issue returns a token bound to sessionID that expires after ttl, and
	// its expiry.
	Issue(sessionID string, ttl time.Duration) (string, time.Time)
}

// Providers is the provider registry.
type Providers interface {
	// Get returns the provider called name.
	Get(name string) (mc.Provider, bool)
	// All returns every provider.
	All() []mc.Provider
}

// Credentials is the vault as the API uses it. Each call is audited by the
// vault under actor (the API key's id, "key:" + 8 hex digits).
type Credentials interface {
	// Get opens the credential of (userID, provider). Errors: ENOTFOUND.
	Get(ctx context.Context, userID, provider, actor string) (mc.Credential, error)
	// List returns a user's sealed records (the API shows no secret of them).
	List(ctx context.Context, userID, actor string) ([]mc.SealedCredential, error)
	// Delete removes the credential of (userID, provider). Errors: ENOTFOUND.
	Delete(ctx context.Context, userID, provider, actor string) error
}

// Check is one readiness check of GET /readyz.
type Check struct {
	// Name is the key of the check in the /readyz body ("driver", "vault").
	Name string
	// Check returns nil when ready, else an error of one line that says what
	// is wrong; it must honour ctx.
	Check func(ctx context.Context) error
}

// Deps are the API's collaborators. Sessions, Store, Tokens and Providers are
// required; a nil Credentials answers the credential routes with 503; a nil
// VNC, Web or Metrics handler is simply not mounted.
type Deps struct {
	Sessions    Sessions
	Store       Store
	Tokens      Tokens
	Providers   Providers
	Credentials Credentials
	// ProviderCheck says whether a provider can run (its CLI is installed);
	// nil means every provider can. An unavailable provider is listed with
	// available false and refused by POST /api/v1/sessions (503,
	// provider_unavailable).
	ProviderCheck func(mc.Provider) error
	// Checks are readiness checks beside the store's Ping, which is always
	// checked (as "store").
	Checks []Check
	// VNC is the gateway's WebSocket handler, mounted without API-key auth at
	// GET /api/v1/sessions/{id}/vnc and GET /api/auth/session/{id}/novnc/websock
	// (it checks viewer tokens itself).
	VNC http.Handler
	// Web serves the viewer page GET /sessions/{id}/view, the dashboard GET /
	// and the static files under /static/ and /novnc/.
	Web http.Handler
	// Metrics serves GET /metrics, behind the API key like the REST API
	// (Prometheus sends it with authorization.credentials_file). To scrape
	// without a key, leave it nil and serve MetricsOnly on an address of a
	// trusted network instead.
	Metrics http.Handler
	// Pool reports the warm pool for GET /api/v1/pool; nil answers an
	// empty pool.
	Pool Pool
}

// Pool is the session manager's warm pool as the API shows it.
type Pool interface {
	// Pool returns the pool's targets and machines from the store.
	Pool(ctx context.Context) (mc.PoolStatus, error)
}

// Server is the API; it implements http.Handler.
type Server struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	keys     []KeyHash
	mux      *http.ServeMux
	routes   map[string]bool
	streams  map[string]bool // the routes of WebSockets: no body deadline
	metrics  *metrics
	draining atomic.Bool
	viewers  atomic.Int64 // viewer WebSockets open, when capped
}

var (
	_ http.Handler = (*Server)(nil)
	_ Store        = mc.Store(nil)
)

// New returns the API. log may be nil (nothing is logged) and reg may be nil
// (metrics are kept but not exported). Every line the API logs carries log's
// attributes and the request id.
func New(cfg Config, deps Deps, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	cfg.setDefaults()
	switch {
	case deps.Sessions == nil:
		return nil, errors.New("new http api: no session manager")
	case deps.Store == nil:
		return nil, errors.New("new http api: no store")
	case deps.Tokens == nil:
		return nil, errors.New("new http api: no token issuer")
	case deps.Providers == nil:
		return nil, errors.New("new http api: no provider registry")
	case len(cfg.APIKeys) == 0:
		return nil, errors.New("new http api: no API key (every request would be refused)")
	}
	for _, c := range deps.Checks {
		if c.Name == "" || c.Name == "store" || c.Check == nil {
			return nil, fmt.Errorf("new http api: readiness check %q needs a name other than store and a function", c.Name)
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		deps:    deps,
		log:     log,
		keys:    append([]KeyHash(nil), cfg.APIKeys...),
		mux:     http.NewServeMux(),
		routes:  make(map[string]bool),
		streams: make(map[string]bool),
		metrics: m,
	}
	s.register()
	return s, nil
}

// Drain makes GET /readyz answer 503 ("draining"), so that a load balancer
// stops sending new requests before shutdown; the API keeps serving.
func (s *Server) Drain() { s.draining.Store(true) }

func (s *Server) register() {
	// The REST API.
	s.api("POST /api/v1/sessions", s.createSession)
	s.api("GET /api/v1/sessions", s.listSessions)
	s.api("GET /api/v1/sessions/{id}", s.getSession)
	s.api("POST /api/v1/sessions/{id}/cancel", s.cancelSession)
	s.api("GET /api/v1/sessions/{id}/events", s.sessionEvents)
	s.api("POST /api/v1/sessions/{id}/viewer-token", s.viewerToken)
	s.api("GET /api/v1/providers", s.listProviders)
	s.api("GET /api/v1/credentials/{user_id}", s.listCredentials)
	s.api("GET /api/v1/credentials/{user_id}/{provider}", s.getCredential)
	s.api("DELETE /api/v1/credentials/{user_id}/{provider}", s.deleteCredential)
	s.api("GET /api/v1/audit", s.listAudit)
	s.api("GET /api/v1/pool", s.getPool)

	// The earlier controller's endpoints, on the same code paths.
	s.api("POST /api/auth/start", s.compatStart)
	s.api("GET /api/auth/session/{id}", s.compatSession)

	// Unauthenticated.
	s.open("GET /healthz", s.healthz)
	s.open("GET /readyz", s.readyz)
	if h := s.deps.VNC; h != nil {
		h = s.viewerLimit(s.foreignErrors(h))
		for _, p := range []string{"GET /api/v1/sessions/{id}/vnc", "GET /api/auth/session/{id}/novnc/websock"} {
			s.handle(p, h)
			s.streams[p] = true
		}
	}
	if h := s.deps.Web; h != nil {
		h = s.foreignErrors(h)
		s.handle("GET /{$}", h)
		s.handle("GET /sessions/{id}/view", h)
		s.handle("GET /static/", h)
		s.handle("GET /novnc/", h)
	}
	if h := s.deps.Metrics; h != nil {
		s.api("GET /metrics", func(w http.ResponseWriter, r *http.Request) error {
			h.ServeHTTP(w, r)
			return nil
		})
	}
}

// handle mounts h at pattern and makes pattern a route label.
func (s *Server) handle(pattern string, h http.Handler) {
	s.routes[pattern] = true
	s.mux.Handle(pattern, h)
}

// handlerFunc is an API handler: it writes its response on success and
// returns an error otherwise, which one adapter (fail) turns into the error
// response and the reason on the access log line.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// api mounts f behind API-key authentication.
func (s *Server) api(pattern string, f handlerFunc) {
	s.handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		actor, err := s.authenticate(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		reqState(r.Context()).actor = actor
		if err := checkQuery(r); err != nil {
			s.fail(w, r, err)
			return
		}
		if err := f(w, r); err != nil {
			s.fail(w, r, err)
		}
	}))
}

// open mounts f without authentication.
func (s *Server) open(pattern string, f handlerFunc) {
	s.handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checkQuery(r); err != nil {
			s.fail(w, r, err)
			return
		}
		if err := f(w, r); err != nil {
			s.fail(w, r, err)
		}
	}))
}
