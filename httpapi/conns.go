package httpapi

import (
	"container/list"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/master-controller/mc"
)

// Reasons of the refusals that protect the server's file descriptors.
const (
	// ReasonTooManyConnections: every connection up to Config.MaxConnections
	// is busy with a request; the new one is answered 503 and closed.
	ReasonTooManyConnections mc.Reason = mc.ReasonTooManyConnections
	// ReasonTooManyViewers: Config.MaxViewerConnections viewer WebSockets
	// are open; a new one is answered 503 before the upgrade.
	ReasonTooManyViewers mc.Reason = mc.ReasonTooManyViewers
	// ReasonBodyTimeout: the request body did not arrive within
	// Config.BodyTimeout.
	ReasonBodyTimeout mc.Reason = mc.ReasonBodyTimeout
)

// HTTPServer returns the http.Server that serves the API, and the listener
// to serve it on (l, wrapped): the server has Config's header, body and idle
// timeouts, and the listener holds at most Config.MaxConnections HTTP
// connections. A viewer's connection leaves that count when it becomes a
// WebSocket: from then on it counts against Config.MaxViewerConnections.
// errLog receives net/http's own complaints (may be nil).
//
// A connection past the cap first makes room by closing the connection that
// has been idle longest (a keep-alive connection between requests, or one
// that has not yet sent a whole request header): a flood of idle
// connections therefore never locks a new client out. Only when every
// connection is busy with a request is the new one refused, with a 503
// (unavailable, too_many_connections) written straight on the socket.
//
// The connections are the listener's own (*net.TCPConn), not wrappers, so
// that the gateway can splice a hijacked one.
func (s *Server) HTTPServer(l net.Listener, errLog *log.Logger) (*http.Server, net.Listener) {
	cl := &connLimiter{Listener: l, max: s.cfg.MaxConnections, conns: make(map[net.Conn]*list.Element),
		idle: list.New(), m: s.metrics, log: s.log}
	s.metrics.connLimit.Set(float64(cl.max))
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.HeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		ConnState:         cl.connState,
		ErrorLog:          errLog,
	}
	return srv, cl
}

// connLimiter is a listener that caps the HTTP connections it has accepted
// and the server has neither closed nor handed to a WebSocket. The server
// reports each connection's state to connState.
type connLimiter struct {
	net.Listener
	max int // 0: no cap
	m   *metrics
	log *slog.Logger

	mu sync.Mutex
	// conns are the connections counted: each maps to its element in idle
	// while idle, else to nil.
	conns   map[net.Conn]*list.Element
	idle    *list.List // of net.Conn, longest idle first
	lastLog time.Time  // of the last refusal logged
}

// Accept returns the next connection, making room by closing the longest
// idle one when the cap is reached, or refusing the new one when nothing
// is idle.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		var victim net.Conn
		if l.max > 0 && len(l.conns) >= l.max {
			if e := l.idle.Front(); e != nil {
				victim = e.Value.(net.Conn)
				l.forgetLocked(victim) // its place is the new one's
			}
		}
		full := l.max > 0 && len(l.conns) >= l.max
		if !full {
			// A new connection is idle until it has sent a request header.
			l.conns[c] = l.idle.PushBack(c)
			l.gaugesLocked()
		}
		l.mu.Unlock()
		if victim != nil {
			l.m.evicted.Inc()
			_ = victim.Close() // the server sees the read fail, and closes its side
		}
		if full {
			l.refuse(c)
			continue
		}
		return c, nil
	}
}

// connState moves a connection in and out of the idle list, and out of the
// count when the server closes it or hands it to a WebSocket.
func (l *connLimiter) connState(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.conns[c]
	if !ok {
		return // evicted, or not counted
	}
	switch st {
	case http.StateClosed, http.StateHijacked:
		l.forgetLocked(c)
	case http.StateActive:
		if e != nil {
			l.idle.Remove(e)
			l.conns[c] = nil
		}
	case http.StateIdle:
		if e != nil {
			l.idle.Remove(e)
		}
		l.conns[c] = l.idle.PushBack(c)
	}
	l.gaugesLocked()
}

// forgetLocked stops counting c.
func (l *connLimiter) forgetLocked(c net.Conn) {
	if e := l.conns[c]; e != nil {
		l.idle.Remove(e)
	}
	delete(l.conns, c)
	l.gaugesLocked()
}

func (l *connLimiter) gaugesLocked() {
	l.m.conns.Set(float64(len(l.conns)))
	l.m.idle.Set(float64(l.idle.Len()))
}

// refusedBody is the answer to a connection past the cap.
var refusedBody = func() []byte {
	err := mc.Errorf(mc.EUNAVAILABLE, ReasonTooManyConnections,
		"the server holds as many connections as it may; try again later")
	b, _ := jsonBody(ErrorBody{Error: errorDetail(err)})
	return []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n" +
		"Cache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(b)) + "\r\n\r\n" + string(b))
}()

// refuse answers c with a 503 and closes it. The answer fits in the socket's
// send buffer, so the write does not wait for the client; the deadline is
// there in case it would. The refusal is counted and logged before the
// client can read it.
func (l *connLimiter) refuse(c net.Conn) {
	l.m.refused.WithLabelValues(string(ReasonTooManyConnections)).Inc()
	defer func() {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(refusedBody)
		_ = c.Close()
	}()
	l.mu.Lock()
	now := time.Now()
	logIt := now.Sub(l.lastLog) >= 10*time.Second
	if logIt {
		l.lastLog = now
	}
	open := len(l.conns)
	l.mu.Unlock()
	if logIt { // at most one line per 10 s under a flood; the metric counts all
		l.log.Warn("connection refused", mc.LogReason, ReasonTooManyConnections,
			"open", open, "max", l.max)
	}
}

// viewerLimit bounds the viewer WebSockets open at once (waiting for their
// machine or streaming) to Config.MaxViewerConnections, and answers a
// request on a viewer route that is not a WebSocket upgrade with 426.
func (s *Server) viewerLimit(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWebSocketUpgrade(r) {
			w.Header().Set("Upgrade", "websocket")
			s.fail(w, r, mc.Errorf(mc.EINVALID, ReasonUpgradeRequired,
				"this route is a WebSocket: send Connection: Upgrade and Upgrade: websocket"))
			return
		}
		if max := int64(s.cfg.MaxViewerConnections); max > 0 {
			if s.viewers.Add(1) > max {
				s.viewers.Add(-1)
				s.metrics.refused.WithLabelValues(string(ReasonTooManyViewers)).Inc()
				s.fail(w, r, &mc.Error{Code: mc.EUNAVAILABLE, Reason: ReasonTooManyViewers, RetryAfter: 5 * time.Second,
					Message: "the server holds as many viewers as it may; try again later"})
				return
			}
			defer s.viewers.Add(-1)
		}
		h.ServeHTTP(w, r)
	})
}

// isWebSocketUpgrade reports whether r asks for a WebSocket (RFC 6455 4.1:
// Connection holds the token upgrade, Upgrade holds websocket).
func isWebSocketUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

// headerHasToken reports whether a comma-separated header holds token
// (case-insensitively).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// bodyReader tracks whether a request body was read to its end, and bounds
// the time it may take: the connection's read deadline (Config.BodyTimeout
// from the start of the handler) is lifted at the end of the body, so that
// net/http's own read in the background, which watches for the client going
// away while the handler works, is not cut by it.
type bodyReader struct {
	io.ReadCloser
	rc  *http.ResponseController
	eof atomic.Bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && b.eof.CompareAndSwap(false, true) {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// isTimeout reports whether err is a read that hit its deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
