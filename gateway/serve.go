package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/wsproto"
	"github.com/master-controller/mc/rfb"
)

// serve runs one accepted connection through its phases — wait (for the
// session to be ready), resolve (session → allowed address), handshake (RFB
// security with the machine) and bridge — and returns how it ends. Each
// phase returns its outcome, or nil to go on. The returned channel is closed
// when the connection's reader ends, which it does once the WebSocket is
// closed.
func (g *Gateway) serve(c *wsproto.Conn, v *viewer, rec *record) (*outcome, <-chan struct{}) {
	b := g.startBrowser(c, v, rec)
	stopPing := startPinger(c, g.cfg.PingInterval, func() { v.stop(endPingTimeout) })
	defer stopPing()

	s, o := g.wait(v, rec)
	if o != nil {
		return o, b.done
	}
	t, o := g.resolve(s)
	rec.ip = t.ip
	if o != nil {
		return o, b.done
	}
	up, o := g.handshake(v.ctx, t)
	if o != nil {
		return v.or(o), b.done
	}
	defer up.Close()
	return g.bridge(v, c, up, b, rec), b.done
}

// browser is the connection's reader: it reads from the start, so that
// pongs and the viewer's close are seen while the connection waits; it does
// the browser's side of the RFB handshake (security None) once the banner is
// sent, then copies the viewer's messages to the machine.
type browser struct {
	stream    *wsStream
	handshake chan error    // the browser's handshake ended (nil: done)
	up        chan net.Conn // the machine, once bridged
	done      chan struct{} // closed when the reader ends
}

func (g *Gateway) startBrowser(c *wsproto.Conn, v *viewer, rec *record) *browser {
	b := &browser{stream: &wsStream{c: c}, handshake: make(chan error, 1), up: make(chan net.Conn, 1),
		done: make(chan struct{})}
	go func() {
		defer close(b.done)
		_, err := rfb.ServerHandshakeNoneAfterBanner(b.stream)
		if err != nil {
			v.stop(browserOutcome(err))
			b.handshake <- err
			return
		}
		b.handshake <- nil
		var up net.Conn
		select {
		case up = <-b.up:
		case <-v.ctx.Done():
			return
		}
		err = copyToUpstream(b.stream, up, g.pool, &rec.toMachine, g.m.countToMachine)
		if v.stopped() == nil {
			v.stop(g.copyOutcome(v.sessionID, err))
		}
	}()
	return b
}

// browserOutcome is the outcome of a browser whose RFB handshake failed.
func browserOutcome(err error) *outcome {
	if errors.Is(err, rfb.ErrNoClient) || errors.Is(err, rfb.ErrUnsupportedVersion) {
		return endBadClient.because(err)
	}
	o, _ := viewerOutcome(&viewerErr{err})
	return o
}

// wait looks the session up, claims it for this viewer (with MaxViewers 1),
// follows it (readiness, take-over, its end, activity) and waits until it
// is ready, at most ReadyTimeout. It returns the ready session.
func (g *Gateway) wait(v *viewer, rec *record) (*mc.Session, *outcome) {
	ctx, id := v.ctx, v.sessionID
	s, err := g.store.Session(ctx, id)
	if err != nil {
		return nil, v.or(storeOutcome(fmt.Errorf("get session %s: %w", id, err)))
	}
	if g.log.Enabled(ctx, slog.LevelDebug) {
		g.log.LogAttrs(ctx, slog.LevelDebug, "viewer session", slog.String(mc.LogSessionID, id),
			slog.String("viewer_id", v.id), slog.Any("session", s))
	}
	rec.ip = s.Machine.IP
	if s.State.Final() {
		return nil, ended(s)
	}
	if g.cfg.MaxViewers == 1 {
		if _, err := g.store.ClaimViewer(ctx, id, v.id); err != nil {
			return nil, v.or(storeOutcome(fmt.Errorf("claim viewer of session %s: %w", id, err)))
		}
	}
	g.touch(ctx, id)
	ch, err := g.store.Watch(ctx, id)
	if err != nil {
		return nil, v.or(storeOutcome(fmt.Errorf("watch session %s: %w", id, err)))
	}
	readyCh := make(chan *mc.Session, 1)
	go g.watch(v, ch, readyCh)

	// The waiting gauge counts viewers parked here, so an operator sees how
	// many browsers wait on starting machines.
	start := g.clock.Now()
	g.m.waiting.Inc()
	timer := time.NewTimer(g.cfg.ReadyTimeout)
	// A store this replica cannot reach tells the watch nothing: probe it,
	// so that the viewer hears 1013 at once rather than at the ready timeout.
	probe := time.NewTicker(g.cfg.StoreProbeInterval)
	var ready *mc.Session
	var o *outcome
	for ready == nil && o == nil {
		select {
		case ready = <-readyCh:
		case <-timer.C:
			o = endNotReady
		case <-ctx.Done():
			o = v.or(endInternal.because(errors.New("viewer stopped without an outcome")))
		case <-probe.C:
			if err := g.probeStore(ctx, id); err != nil {
				o = endStoreUnreachable.because(err)
			}
		}
	}
	probe.Stop()
	timer.Stop()
	g.m.waiting.Dec()
	rec.wait = g.clock.Now().Sub(start)
	if o == nil || o == endNotReady {
		g.m.waitReady.Observe(rec.wait.Seconds())
	}
	if o != nil {
		return nil, o
	}
	return ready, nil
}

// probeStore reads the session, bounded by the probe interval, and returns
// an error when the store is unavailable (not when the viewer has gone).
func (g *Gateway) probeStore(ctx context.Context, id string) error {
	pctx, cancel := context.WithTimeout(ctx, g.cfg.StoreProbeInterval)
	defer cancel()
	_, err := g.store.Session(pctx, id)
	if ctx.Err() == nil && (mc.ErrorCode(err) == mc.EUNAVAILABLE || pctx.Err() != nil) {
		return fmt.Errorf("probe store for session %s: %w", id, err)
	}
	return nil
}

// storeOutcome maps a store error: ENOTFOUND is 4404, anything else 1011.
func storeOutcome(err error) *outcome {
	if mc.ErrorCode(err) == mc.ENOTFOUND {
		return endNotFound
	}
	return endInternal.because(err)
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
				v.stop(endTakenOver)
				return
			}
			if s.State.Final() {
				if sent {
					v.stop(endedLive(s))
				} else {
					v.stop(ended(s))
				}
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
			slog.String(mc.LogError, err.Error()))
	}
}

// target is what the gateway dials for a session: its machine's VNC server
// and the password it expects.
type target struct {
	ep       mc.Endpoint
	ip       netip.Addr // of a TCP endpoint, for logs (masked)
	password mc.Secret
}

// where names t in an error: a masked IP, or "unix socket".
func (t target) where() string {
	if t.ep.Network == "unix" {
		return "unix socket"
	}
	return maskIP(t.ip)
}

// resolve maps a ready session to the address the gateway may dial, and the
// password that the machine key gives its machine: only the session's own
// address, and only inside the machine networks (or the allowed loopback
// ports). Anything else is 4502 and never dialled.
func (g *Gateway) resolve(s *mc.Session) (target, *outcome) {
	t := target{ep: s.Machine.VNCEndpoint(), password: g.keys.Secrets(s.ID).VNCPassword}
	if t.ep.Network == "tcp" {
		t.ip = s.Machine.IP
	}
	allowed := g.cfg.allowedAddr(s.Machine.VNCAddr())
	if t.ep.Network == "unix" {
		allowed = g.cfg.allowedSocket(t.ep.Address)
	}
	if !allowed {
		return t, endAddr.because(fmt.Errorf("vnc address %s of session %s is outside the machine network",
			t.where(), s.ID))
	}
	return t, nil
}

// handshake dials the target and terminates RFB security with the
// machine's own password. It returns the connection positioned before
// ClientInit, which the browser then sends through the bridge. When ctx
// ends it fails; the caller reports why ctx ended.
func (g *Gateway) handshake(ctx context.Context, t target) (net.Conn, *outcome) {
	up, err := g.dial(ctx, t)
	if err != nil {
		return nil, endUnreachable.because(err)
	}
	stop := context.AfterFunc(ctx, func() { up.SetDeadline(time.Unix(1, 0)) })
	up.SetDeadline(g.clock.Now().Add(g.cfg.HandshakeTimeout))
	_, err = rfb.ClientHandshake(up, t.password)
	if !stop() {
		up.Close()
		return nil, endInternal.because(fmt.Errorf("rfb handshake with %s: %w", t.where(), ctx.Err()))
	}
	up.SetDeadline(time.Time{})
	if err != nil {
		up.Close()
		err = fmt.Errorf("rfb handshake with %s: %w", t.where(), err)
		var ae *rfb.AuthError
		switch {
		case errors.Is(err, rfb.ErrNotRFB), errors.Is(err, rfb.ErrUnsupportedVersion):
			return nil, endNotRFB.because(err)
		case errors.As(err, &ae), errors.Is(err, rfb.ErrUnsupportedSecurity):
			return nil, endVNCAuth.because(err)
		}
		return nil, endUnreachable.because(err)
	}
	return up, nil
}

// dial connects to the target's VNC server with a short linear backoff, for
// a server that is a moment late.
func (g *Gateway) dial(ctx context.Context, t target) (net.Conn, error) {
	var err error
	for i := range g.cfg.DialTries {
		if i > 0 {
			g.m.dialRetries.Inc()
			wait := time.NewTimer(min(time.Duration(i)*100*time.Millisecond, 400*time.Millisecond))
			select {
			case <-wait.C:
			case <-ctx.Done():
				wait.Stop()
				return nil, ctx.Err()
			}
		}
		var c net.Conn
		if c, err = g.dialOnce(ctx, t); err == nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("dial vnc %s: %w", t.where(), err)
}

// dialOnce makes one connection to the target's VNC server: the one place
// that knows how a resolved address is reached.
func (g *Gateway) dialOnce(ctx context.Context, t target) (net.Conn, error) {
	return t.ep.Dial(ctx, g.cfg.DialTimeout)
}

// bridge presents the browser a server without authentication (the token
// already authenticated it): it sends the RFB banner, waits (at most
// HandshakeTimeout) for the reader to finish the browser's handshake, then
// copies the machine's bytes to the viewer while the reader copies the
// viewer's to the machine, until one side ends.
func (g *Gateway) bridge(v *viewer, c *wsproto.Conn, up net.Conn, b *browser, rec *record) *outcome {
	ctx := v.ctx
	stopUp := context.AfterFunc(ctx, func() { up.SetDeadline(time.Unix(1, 0)) })
	defer stopUp()
	if _, err := b.stream.Write(rfb.V38.Banner()); err != nil {
		return v.or(endClientGone.because(&viewerErr{err}))
	}
	hs := time.NewTimer(g.cfg.HandshakeTimeout)
	defer hs.Stop()
	select {
	case err := <-b.handshake:
		if err != nil {
			return v.or(browserOutcome(err))
		}
	case <-hs.C:
		return endBadClient.because(errors.New("the browser did not finish the RFB handshake in time"))
	case <-ctx.Done():
		return v.or(endInternal)
	}
	b.up <- up
	err := copyToViewer(up, c, g.pool, &rec.toViewer, g.m.countToViewer)
	if o := v.stopped(); o != nil {
		return o // the session ended, a take-over, the reader's verdict…
	}
	return v.or(g.copyOutcome(v.sessionID, err))
}

// copyOutcome is the outcome of a bridge whose copy in either direction
// ended with err: the viewer's side as viewerOutcome says; the machine's
// side with the session's own code when it has ended, else 4503.
func (g *Gateway) copyOutcome(id string, err error) *outcome {
	if o, ok := viewerOutcome(err); ok {
		return o
	}
	var ue *upstreamErr
	if !errors.As(err, &ue) {
		return endInternal.because(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, serr := g.store.Session(ctx, id)
	if serr == nil && s.State.Final() {
		return endedLive(s)
	}
	return endMachineGone.because(err)
}
