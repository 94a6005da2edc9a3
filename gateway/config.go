// Package gateway is the WebSocket ↔ VNC bridge: it authenticates a viewer
// (viewer token, Origin), waits for the session's machine to be ready, dials
// the machine's VNC server inside the machine network, terminates RFB
// security toward it with the machine's own password, presents the browser a
// server without authentication, and bridges bytes both ways. Every refusal
// and every end of a stream is a WebSocket close frame with a code and reason
// from DESIGN.md's table, one log line and a metric.
//
// The same bridge serves a websockify-compatible mode (Websockify) that
// bridges plainly to a fixed or token-file target.
package gateway

import (
	"net/netip"
	"path/filepath"
	"strings"
	"time"
)

// Config configures a Gateway. The zero value of each field means its default.
type Config struct {
	// PublicURL is the server's external base URL (MC_PUBLIC_URL): browsers
	// on its origin (scheme, host, port) may open the WebSocket. On a
	// loopback or unspecified address it also admits the loopback names
	// (localhost, 127.0.0.1, [::1]) with the same scheme and port. The
	// request's own Host header is never trusted for this.
	PublicURL string
	// AllowedOrigins are the other Origins allowed to open the WebSocket.
	// Each is matched case-insensitively with path.Match against the
	// Origin's host ("app.example.com", "*.example.com"), or against
	// "scheme://host" when the pattern contains "://". A request without an
	// Origin header (not a browser) is always allowed.
	AllowedOrigins []string

	// Networks are the machine networks the gateway may dial (for example
	// 10.200.0.0/24). A session whose stored VNC address lies outside them
	// (and outside the loopback range below) is refused with 4502 and never
	// dialled.
	Networks []netip.Prefix
	// LoopbackPortLo and LoopbackPortHi allow loopback VNC addresses
	// (127.0.0.0/8, ::1) with a port in [lo, hi], for the local driver's
	// loopback mode. Zero allows no loopback address.
	LoopbackPortLo, LoopbackPortHi int
	// SocketRoot allows machines that listen on Unix sockets (the local
	// driver without root): a session's VNC socket must lie below this
	// directory. Empty allows no socket.
	SocketRoot string

	// ReadyTimeout bounds the wait for a pending or starting session to
	// become ready (then 1013). Default 90 s.
	ReadyTimeout time.Duration
	// PingInterval is the time between WebSocket pings; a ping that gets no
	// pong within PingInterval closes the connection. Default 20 s.
	PingInterval time.Duration
	// DialTimeout bounds one dial of the machine's VNC server. Default 2 s.
	DialTimeout time.Duration
	// DialTries is the number of dial attempts; they are 100, 200, 300, 400 ms
	// apart (linear, capped at 400 ms). Default 5.
	DialTries int
	// HandshakeTimeout bounds the RFB handshake with the machine and with the
	// browser. Default 10 s.
	HandshakeTimeout time.Duration
	// MaxMessageSize is the largest WebSocket message accepted from a viewer
	// (larger: close 1009). Default 4 MiB.
	MaxMessageSize int64
	// BufferSize is the size of the pooled copy buffers. Default 64 KiB.
	BufferSize int
	// MaxViewers is the number of viewers a session may have at once. With 1
	// (the default) a new viewer takes over through the store's ClaimViewer,
	// on any replica, and the old one is closed with 4409. With N > 1 viewers
	// share the screen; the limit is counted per replica (viewers on other
	// replicas are not counted and not taken over), and the N+1th viewer on a
	// replica takes over from that replica's oldest.
	MaxViewers int
	// StoreProbeInterval is how often a viewer that waits for readiness
	// checks that the store answers; one that does not closes the viewer
	// with 1013 (store_unreachable). Default 2 s.
	StoreProbeInterval time.Duration
	// TouchInterval is how often a connected viewer records activity on its
	// session (also once on connect). Default 30 s.
	TouchInterval time.Duration
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ReadyTimeout, 90*time.Second)
	def(&c.PingInterval, 20*time.Second)
	def(&c.DialTimeout, 2*time.Second)
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.TouchInterval, 30*time.Second)
	def(&c.StoreProbeInterval, 2*time.Second)
	if c.DialTries <= 0 {
		c.DialTries = 5
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 4 << 20
	}
	if c.BufferSize <= 0 {
		c.BufferSize = 64 << 10
	}
	if c.MaxViewers <= 0 {
		c.MaxViewers = 1
	}
	return c
}

// allowedSocket reports whether the gateway may dial the Unix socket path:
// a clean absolute path strictly below SocketRoot.
func (c Config) allowedSocket(path string) bool {
	if c.SocketRoot == "" || !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return false
	}
	rel, err := filepath.Rel(filepath.Clean(c.SocketRoot), path)
	return err == nil && rel != "." && !strings.HasPrefix(rel, "..")
}

// allowedAddr reports whether the gateway may dial a.
func (c Config) allowedAddr(a netip.AddrPort) bool {
	ip := a.Addr().Unmap()
	if !ip.IsValid() || a.Port() == 0 || ip.IsUnspecified() || ip.IsMulticast() {
		return false
	}
	if ip.IsLoopback() {
		p := int(a.Port())
		return c.LoopbackPortHi > 0 && p >= c.LoopbackPortLo && p <= c.LoopbackPortHi
	}
	for _, n := range c.Networks {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}
