package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/httprec"
)

// routeUnmatched is the route label of requests that matched no route.
const routeUnmatched = "unmatched"

// state is what the middleware and the handlers of one request share.
type state struct {
	log       *slog.Logger
	actor     string // the API key's id, once authenticated
	sessionID string // the session the request was about, for the log line
	err       error  // the error the handler returned, for the log line
}

type stateKey struct{}

// reqState returns the request's state; outside a request (a handler called
// directly in a test) it returns a throwaway one.
func reqState(ctx context.Context) *state {
	if st, ok := ctx.Value(stateKey{}).(*state); ok {
		return st
	}
	return &state{log: slog.Default()}
}

// Logger returns the logger of the request that ctx belongs to: it carries the
// request id and the attributes of the API's logger (the replica) on every
// line, each key once. Outside a request it returns
// slog.Default().
func Logger(ctx context.Context) *slog.Logger { return reqState(ctx).log }

// RequestIDHeader is the header that carries the request id, both ways.
const RequestIDHeader = "X-Request-ID"

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// requestID returns the request's sane incoming X-Request-ID, or a new one.
func requestID(r *http.Request) string {
	if id := r.Header.Get(RequestIDHeader); requestIDPattern.MatchString(id) {
		return id
	}
	return mc.NewID()
}

// ServeHTTP serves one request through the middleware: request id, logger,
// routing with JSON 404 and 405, panic recovery, the access log line and the
// metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rid := requestID(r)
	st := &state{log: s.log.With(mc.LogRequestID, rid)}
	r = r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
	w.Header().Set(RequestIDHeader, rid)
	if s.cfg.Replica != "" {
		w.Header().Set("X-MC-Replica", s.cfg.Replica)
	}
	sw := &statusWriter{ResponseWriter: w}

	h, pattern := s.mux.Handler(r)
	route := pattern
	if !s.routes[pattern] || reflect.TypeOf(h) == redirectHandlerType {
		route = routeUnmatched // a redirect to the clean path is not the route's
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 && !s.streams[pattern] {
		// The body must arrive within BodyTimeout; an answer given before
		// it has all arrived closes the connection, rather than wait for
		// the rest to discard it (a client that announces a body and sends
		// none still gets its 401 at once).
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
		br := &bodyReader{ReadCloser: r.Body, rc: rc}
		r.Body, sw.body = br, br
	}
	defer func() {
		p := recover()
		abort := p == http.ErrAbortHandler
		if p != nil && !abort {
			st.err = &mc.Error{Code: mc.EINTERNAL, Reason: mc.ReasonPanic, Err: fmt.Errorf("panic: %v", p)}
			if sw.wroteHeader {
				// Too late for a 500: abort the connection rather than end a
				// truncated response as if it were whole.
				abort = true
			} else {
				writeError(sw, st.err)
			}
		}
		s.finish(r, sw, st, route, start, p)
		if abort {
			panic(http.ErrAbortHandler) // net/http closes the connection without logging
		}
	}()
	if route == routeUnmatched {
		s.unmatched(sw, r, h)
		return
	}
	s.mux.ServeHTTP(sw, r)
}

// redirectHandlerType is the type of the handler that the mux returns for a
// path it redirects to its clean form.
var redirectHandlerType = reflect.TypeOf(http.RedirectHandler("/", http.StatusTemporaryRedirect))

// unmatched answers a request that matched no route: the mux's own 404,
// 405 (with its Allow header) and redirects to a clean path become JSON
// answers; anything else the mux decides is passed on as it is.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request, h http.Handler) {
	rec := &httprec.Recorder{}
	h.ServeHTTP(rec, r)
	switch rec.Status {
	case http.StatusNotFound:
		s.fail(w, r, mc.Errorf(mc.ENOTFOUND, ReasonNoRoute, "no such route"))
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", rec.Header().Get("Allow"))
		s.fail(w, r, mc.Errorf(mc.EINVALID, ReasonMethodNotAllowed, "method %s is not allowed here", r.Method))
	case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		// The mux's redirect to the clean path ("/static" → "/static/",
		// "/api/v1//sessions" → "/api/v1/sessions"; 307, which keeps the
		// method and body), with a JSON body.
		loc := rec.Header().Get("Location")
		w.Header().Set("Location", loc)
		err := mc.Errorf(mc.ENOTFOUND, ReasonRedirect, "this path is %s", truncate(loc, 256))
		reqState(r.Context()).err = err
		writeJSON(w, rec.Status, ErrorBody{Error: errorDetail(err)})
	default:
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Status)
		_, _ = w.Write(rec.Body.Bytes())
	}
}

// finish writes the access log line and records the metrics. The line holds
// the route pattern, never the raw path or the query string (which may hold a
// viewer token), and the client's IP masked unless debug logging is on.
func (s *Server) finish(r *http.Request, sw *statusWriter, st *state, route string, start time.Time, p any) {
	d := time.Since(start)
	status := sw.status
	if status == 0 {
		status = http.StatusOK
	}
	code := strconv.Itoa(status)
	s.metrics.requests.WithLabelValues(route, code).Inc()
	if !sw.hijacked { // a WebSocket's duration is the connection's, not the request's
		s.metrics.seconds.WithLabelValues(route).Observe(d.Seconds())
	}
	if st.err != nil {
		s.metrics.errors.WithLabelValues(route, string(mc.ErrorReason(st.err))).Inc()
	}

	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	ctx := r.Context()
	if !st.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("method", r.Method),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Duration("duration", d),
		slog.Int64("bytes", sw.bytes),
		slog.String("remote", s.remote(ctx, r.RemoteAddr)),
	)
	id := st.sessionID
	if id == "" {
		id = r.PathValue("id")
	}
	if mc.ValidID(id) {
		attrs = append(attrs, slog.String(mc.LogSessionID, id))
	}
	if u := r.PathValue("user_id"); userIDPattern.MatchString(u) {
		attrs = append(attrs, slog.String(mc.LogUserID, u))
	}
	if st.actor != "" {
		attrs = append(attrs, slog.String("actor", st.actor))
	}
	if st.err != nil {
		attrs = append(attrs, slog.String(mc.LogReason, string(mc.ErrorReason(st.err))))
		if status >= 500 {
			attrs = append(attrs, slog.String(mc.LogError, st.err.Error()))
		} else {
			attrs = append(attrs, slog.String(mc.LogError, mc.ErrorMessage(st.err)))
		}
	}
	if p != nil && p != http.ErrAbortHandler {
		attrs = append(attrs, slog.String("stack", string(debug.Stack())))
	}
	st.log.LogAttrs(ctx, level, "http request", attrs...)
}

// remote returns the client's IP for the log: masked unless the logger is at
// debug level.
func (s *Server) remote(ctx context.Context, addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return ""
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		return ap.Addr().Unmap().String()
	}
	return MaskIP(ap.Addr())
}

// MaskIP returns a for logs at info level with its host part hidden: an IPv4
// address keeps its first three octets ("10.200.0.x"), an IPv6 address its
// first 48 bits ("2001:db8:1::x"). An invalid address gives "".
func MaskIP(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return ""
	case a.Is4():
		b := a.As4()
		return fmt.Sprintf("%d.%d.%d.x", b[0], b[1], b[2])
	}
	p, err := a.WithZone("").Prefix(48)
	if err != nil {
		return ""
	}
	s := p.Addr().String()
	if !strings.HasSuffix(s, "::") {
		s += ":"
	}
	return s + "x"
}

// statusWriter records the status and the size of a response. It passes
// Flush and Hijack through (the gateway's WebSocket needs Hijack) and unwraps
// for http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	body        *bodyReader // the request body, when it has one
	status      int
	bytes       int64
	wroteHeader bool
	hijacked    bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status = code
		if code >= 200 {
			w.wroteHeader = true
			if w.body != nil && !w.body.eof.Load() {
				w.Header().Set("Connection", "close")
			}
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
		if !w.wroteHeader {
			w.status, w.wroteHeader = http.StatusSwitchingProtocols, true
		}
	}
	return c, rw, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// metrics are the API's Prometheus collectors. Labels are route patterns and
// status codes: never a session or user id.
type metrics struct {
	requests  *prometheus.CounterVec
	seconds   *prometheus.HistogramVec
	errors    *prometheus.CounterVec
	conns     prometheus.Gauge
	idle      prometheus.Gauge
	connLimit prometheus.Gauge
	evicted   prometheus.Counter
	refused   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mc_http_requests_total",
			Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mc_http_request_seconds",
			Help:    "HTTP request duration by route pattern (WebSocket connections excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mc_http_errors_total",
			Help: "Refused or failed HTTP requests by route pattern and reason code.",
		}, []string{"route", "reason"}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mc_http_connections",
			Help: "Open HTTP connections (a viewer's leaves the count when it becomes a WebSocket).",
		}),
		idle: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mc_http_idle_connections",
			Help: "Open HTTP connections that are idle: between requests, or before a whole request header.",
		}),
		connLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mc_http_connections_max",
			Help: "The cap on open HTTP connections (0: none).",
		}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mc_http_idle_connections_evicted_total",
			Help: "Idle HTTP connections closed to make room for a new one at the cap.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mc_http_connections_refused_total",
			Help: "Connections refused at a cap, by reason (too_many_connections, too_many_viewers).",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.seconds, m.errors, m.conns, m.idle, m.connLimit, m.evicted, m.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register http metrics: %w", err)
		}
	}
	return m, nil
}
