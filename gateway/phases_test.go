package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/wsproto"
	"github.com/master-controller/mc/internal/wsproto/wstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The phases of serve, each on its own: wait, resolve, handshake, bridge.

func newTestViewer(id string) *viewer {
	return &viewer{stopper: newStopper(), id: mc.NewID(), sessionID: id}
}

// wantOutcome fails unless o has the reason want ("" wants nil).
func wantOutcome(tb testing.TB, o *outcome, want mc.Reason) {
	tb.Helper()
	switch {
	case o == nil && want == "":
	case o == nil:
		tb.Fatalf("got no outcome, want %s", want)
	case o.reason != want:
		tb.Fatalf("got outcome %s (%d %q, cause %v), want %s", o.reason, o.code, o.text, o.err, want)
	}
}

func TestWaitPhase(t *testing.T) {
	pw := mc.NewSecret(8)
	addr := netip.MustParseAddrPort("127.0.0.1:5900")
	t.Run("ready", func(t *testing.T) {
		e := newEnv(t, Config{})
		s := e.session(t, mc.StateReady, addr, pw)
		got, o := e.gw.wait(newTestViewer(s.ID), &record{})
		wantOutcome(t, o, "")
		if got.Machine.VNCAddr() != addr {
			t.Fatalf("got machine %v, want the session's", got.Machine.VNCAddr())
		}
	})
	for _, tt := range []struct {
		state mc.State
		want  mc.Reason
		code  int
	}{
		{mc.StateCancelled, ReasonSessionEnded, 4410},
		{mc.StateFailed, ReasonSessionEnded, 4410},
		{mc.StateCompleted, ReasonSessionCompleted, 1000},
	} {
		t.Run(string(tt.state), func(t *testing.T) {
			e := newEnv(t, Config{})
			s := e.session(t, tt.state, addr, pw)
			_, o := e.gw.wait(newTestViewer(s.ID), &record{})
			wantOutcome(t, o, tt.want)
			if int(o.code) != tt.code {
				t.Fatalf("got code %d, want %d", o.code, tt.code)
			}
		})
	}
	t.Run("no such session", func(t *testing.T) {
		e := newEnv(t, Config{})
		_, o := e.gw.wait(newTestViewer(mc.NewID()), &record{})
		wantOutcome(t, o, ReasonSessionNotFound)
	})
	t.Run("store fails", func(t *testing.T) {
		e := newEnv(t, Config{}, func(e *env) { e.wrap = func(s Store) Store { return errStore{s} } })
		_, o := e.gw.wait(newTestViewer(mc.NewID()), &record{})
		wantOutcome(t, o, ReasonInternal)
		if o.err == nil || !strings.Contains(o.err.Error(), "disk on fire") {
			t.Fatalf("got cause %v, want the store's error", o.err)
		}
	})
	t.Run("not ready in time", func(t *testing.T) {
		e := newEnv(t, Config{ReadyTimeout: 50 * time.Millisecond})
		s := e.session(t, mc.StateStarting, addr, pw)
		_, o := e.gw.wait(newTestViewer(s.ID), &record{})
		wantOutcome(t, o, ReasonReadyTimeout)
		if got := testutil.ToFloat64(e.gw.m.waiting); got != 0 {
			t.Fatalf("got %v viewers waiting after the wait, want 0", got)
		}
	})
	for _, tt := range []struct {
		name string
		end  func(e *env, s *mc.Session, v *viewer)
		want mc.Reason
	}{
		{"stopped", func(e *env, s *mc.Session, v *viewer) { v.stop(endShutdown) }, ReasonShutdown},
		{"taken over", func(e *env, s *mc.Session, v *viewer) {
			if _, err := e.store.ClaimViewer(t.Context(), s.ID, "another"); err != nil {
				t.Error(err)
			}
		}, ReasonTakenOver},
		{"cancelled", func(e *env, s *mc.Session, v *viewer) { e.transition(t, s, mc.StateCancelled) }, ReasonSessionEnded},
		{"becomes ready", func(e *env, s *mc.Session, v *viewer) {
			s = e.setMachine(t, s, addr, pw)
			e.transition(t, s, mc.StateReady)
		}, ""},
	} {
		t.Run("while waiting, "+tt.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			s := e.session(t, mc.StateStarting, addr, pw)
			v := newTestViewer(s.ID)
			type result struct {
				s *mc.Session
				o *outcome
			}
			done := make(chan result, 1)
			go func() {
				s, o := e.gw.wait(v, &record{})
				done <- result{s, o}
			}()
			waitFor(t, func() bool { return testutil.ToFloat64(e.gw.m.waiting) == 1 })
			tt.end(e, s, v)
			r := <-done
			wantOutcome(t, r.o, tt.want)
			if tt.want == "" && r.s.Machine.VNCAddr() != addr {
				t.Fatalf("got machine %v, want the session's", r.s.Machine.VNCAddr())
			}
		})
	}
}

func TestResolvePhase(t *testing.T) {
	key := mc.NewMachineKey(mc.NewSecret(32))
	g, err := New(Config{Networks: []netip.Prefix{netip.MustParsePrefix("10.200.0.0/24")},
		LoopbackPortLo: 5900, LoopbackPortHi: 5999}, Deps{Store: errStore{}, Tokens: noTokens{}, MachineKey: key})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		want mc.Reason
	}{
		{"10.200.0.7:5900", ""},
		{"127.0.0.1:5901", ""},
		{"[::1]:5999", ""},
		{"10.200.1.7:5900", ReasonAddressNotAllowed},
		{"127.0.0.1:22", ReasonAddressNotAllowed},
		{"0.0.0.0:5900", ReasonAddressNotAllowed},
		{"10.200.0.7:0", ReasonAddressNotAllowed},
		{"224.0.0.1:5900", ReasonAddressNotAllowed},
		{"[::ffff:10.200.0.7]:5900", ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			ap := netip.MustParseAddrPort(tt.addr)
			s := &mc.Session{ID: mc.NewID(), Machine: mc.Machine{IP: ap.Addr(), VNCPort: int(ap.Port())}}
			got, o := g.resolve(s)
			wantOutcome(t, o, tt.want)
			if o != nil {
				if o.code != CodeUnreachable || strings.Contains(o.err.Error(), ap.Addr().String()) {
					t.Fatalf("got %d %v, want 4502 with a masked address", o.code, o.err)
				}
				return
			}
			if got.ep != (mc.Endpoint{Network: "tcp", Address: ap.String()}) || got.password.Reveal() != key.Secrets(s.ID).VNCPassword.Reveal() {
				t.Fatalf("got target %v, want the session's address and the password its key derives", got.ep)
			}
		})
	}
}

func TestResolveSocket(t *testing.T) {
	g, err := New(Config{SocketRoot: "/run/mc/sockets"}, Deps{Store: errStore{}, Tokens: noTokens{}, MachineKey: newPasswords()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dir  string
		want mc.Reason
	}{
		{"/run/mc/sockets/m1", ""},
		{"/run/mc/sockets/../other", ReasonAddressNotAllowed},
		{"/run/mc/socketsX/m1", ReasonAddressNotAllowed},
		{"/tmp/m1", ReasonAddressNotAllowed},
		{"run/mc/sockets/m1", ReasonAddressNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			s := &mc.Session{ID: mc.NewID(), Machine: mc.Machine{SocketDir: tt.dir}}
			got, o := g.resolve(s)
			wantOutcome(t, o, tt.want)
			if o == nil && got.ep != (mc.Endpoint{Network: "unix", Address: tt.dir + "/vnc"}) {
				t.Fatalf("got target %v, want the session's VNC socket", got.ep)
			}
		})
	}
	// A gateway without a socket root dials no socket.
	g2, _ := New(Config{Networks: []netip.Prefix{netip.MustParsePrefix("10.200.0.0/24")}}, Deps{Store: errStore{}, Tokens: noTokens{}, MachineKey: newPasswords()})
	_, o := g2.resolve(&mc.Session{ID: mc.NewID(), Machine: mc.Machine{SocketDir: "/run/mc/sockets/m1"}})
	wantOutcome(t, o, ReasonAddressNotAllowed)
}

// TestNewNeedsDeps: a gateway has no password of its own to fall back on,
// so one without a machine key (or a store, or tokens) is refused.
func TestNewNeedsDeps(t *testing.T) {
	full := Deps{Store: errStore{}, Tokens: noTokens{}, MachineKey: mc.NewMachineKey(mc.NewSecret(32))}
	if _, err := New(Config{}, full); err != nil {
		t.Fatalf("got %v with every dependency, want a gateway", err)
	}
	for name, d := range map[string]Deps{
		"no machine key": {Store: full.Store, Tokens: full.Tokens},
		"no store":       {Tokens: full.Tokens, MachineKey: full.MachineKey},
		"no tokens":      {Store: full.Store, MachineKey: full.MachineKey},
	} {
		if _, err := New(Config{}, d); err == nil {
			t.Errorf("%s: got a gateway, want an error", name)
		}
	}
}

// tcpTarget is a target at a TCP address.
func tcpTarget(a netip.AddrPort, pw mc.Secret) target {
	return target{ep: mc.Endpoint{Network: "tcp", Address: a.String()}, ip: a.Addr(), password: pw}
}

// noTokens is a TokenVerifier for gateways whose tests never verify a token.
type noTokens struct{}

func (noTokens) Verify(string, string, time.Time) error { return errors.New("not in this test") }

func TestHandshakePhase(t *testing.T) {
	pw := mc.NewSecret(8)
	_, good := fakeVNC(t, pw)
	_, otherPW := fakeVNC(t, mc.NewSecret(8))
	notRFB := banner(t, "SSH-2.0-OpenSSH_9.2p1\r\n")
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	e := newEnv(t, Config{DialTries: 1})
	tests := []struct {
		name string
		addr netip.AddrPort
		want mc.Reason
	}{
		{"authenticated", good, ""},
		{"wrong password", otherPW, ReasonVNCAuthFailed},
		{"not RFB", notRFB, ReasonNotRFB},
		{"nothing listens", closed, ReasonVNCUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, o := e.gw.handshake(t.Context(), tcpTarget(tt.addr, pw))
			wantOutcome(t, o, tt.want)
			if o != nil {
				return
			}
			defer up.Close()
			// Positioned before ClientInit: the server answers one.
			up.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := up.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			var si [24]byte
			if _, err := io.ReadFull(up, si[:]); err != nil {
				t.Fatalf("read ServerInit: %v", err)
			}
			if w := binary.BigEndian.Uint16(si[:]); w != 32 {
				t.Fatalf("got width %d, want 32", w)
			}
		})
	}
	t.Run("ends with its context", func(t *testing.T) {
		// A server that greets and then says nothing more.
		hang := tcpServer(t, func(c net.Conn) {
			io.WriteString(c, "RFB 003.008\n")
			io.Copy(io.Discard, c)
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan *outcome, 1)
		go func() {
			_, o := e.gw.handshake(ctx, tcpTarget(hang, pw))
			done <- o
		}()
		cancel()
		if o := <-done; o == nil {
			t.Fatal("got a connection after the context ended")
		}
	})
}

// wsPair returns a server-side Conn and the raw client end of a loopback
// TCP connection.
func wsPair(tb testing.TB) (*wsproto.Conn, net.Conn) {
	tb.Helper()
	server, client := wstest.Pair(tb)
	client.SetDeadline(time.Now().Add(20 * time.Second))
	return wsproto.NewConn(server, bufio.NewReader(server), "binary", 1<<20), client
}

// readMessage reads one unmasked server frame's payload.
func readMessage(tb testing.TB, r io.Reader) (op byte, payload []byte) {
	tb.Helper()
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		tb.Fatalf("read frame: %v", err)
	}
	n := int(h[1] & 0x7f)
	if n >= 126 {
		tb.Fatalf("frame of %d: longer than this test reads", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		tb.Fatalf("read payload: %v", err)
	}
	return h[0] & 0x0f, p
}

// TestBridgePhase drives bridge from a raw WebSocket client and a raw
// machine: the banner, the browser's security None, bytes both ways, and
// the outcome when the machine goes.
func TestBridgePhase(t *testing.T) {
	for _, tt := range []struct {
		name  string
		final bool
		want  mc.Reason
	}{
		{"machine goes", false, ReasonMachineGone},
		{"machine goes, session ended", true, ReasonSessionEnded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			s := e.session(t, mc.StateReady, netip.MustParseAddrPort("127.0.0.1:5900"), mc.NewSecret(8))
			v := newTestViewer(s.ID)
			c, client := wsPair(t)
			up, machine := net.Pipe()
			rec := &record{}
			b := e.gw.startBrowser(c, v, rec)
			done := make(chan *outcome, 1)
			go func() { done <- e.gw.bridge(v, c, up, b, rec) }()

			br := bufio.NewReader(client)
			if _, p := readMessage(t, br); string(p) != "RFB 003.008\n" {
				t.Fatalf("got %q, want the banner", p)
			}
			client.Write(wstest.Frame(wsproto.OpBinary, true, []byte("RFB 003.008\n")))
			if _, p := readMessage(t, br); !bytes.Equal(p, []byte{1, 1}) {
				t.Fatalf("got security types %v, want [1 1] (None)", p)
			}
			client.Write(wstest.Frame(wsproto.OpBinary, true, []byte{1}))
			if _, p := readMessage(t, br); !bytes.Equal(p, []byte{0, 0, 0, 0}) {
				t.Fatalf("got security result %v, want OK", p)
			}
			// ClientInit and on go to the machine; the machine's bytes come back.
			client.Write(wstest.Frame(wsproto.OpBinary, true, []byte{1}))
			machine.SetDeadline(time.Now().Add(20 * time.Second))
			var ci [1]byte
			if _, err := io.ReadFull(machine, ci[:]); err != nil || ci[0] != 1 {
				t.Fatalf("machine got %v, %v; want ClientInit", ci, err)
			}
			machine.Write([]byte("server init"))
			if _, p := readMessage(t, br); string(p) != "server init" {
				t.Fatalf("got %q, want the machine's bytes", p)
			}
			if tt.final {
				e.transition(t, s, mc.StateFailed)
				// The session's change stops nobody here (wait's watch
				// is not running): the machine's end decides.
			}
			machine.Close()
			o := <-done
			wantOutcome(t, o, tt.want)
			v.stop(o)
			c.CloseNow()
			<-b.done
			if got := rec.toViewer.Load(); got != int64(len("server init")) {
				t.Errorf("got %d bytes to the viewer, want %d", got, len("server init"))
			}
		})
	}
	t.Run("browser is not RFB", func(t *testing.T) {
		e := newEnv(t, Config{})
		v := newTestViewer(mc.NewID())
		c, client := wsPair(t)
		up, _ := net.Pipe()
		b := e.gw.startBrowser(c, v, &record{})
		done := make(chan *outcome, 1)
		go func() { done <- e.gw.bridge(v, c, up, b, &record{}) }()
		readMessage(t, bufio.NewReader(client))
		client.Write(wstest.Frame(wsproto.OpBinary, true, []byte("GET / HTTP/1.1\r\n")))
		o := <-done
		wantOutcome(t, o, ReasonBadClient)
		if o.code != 1002 {
			t.Fatalf("got code %d, want 1002", o.code)
		}
		c.CloseNow()
		<-b.done
	})
}
