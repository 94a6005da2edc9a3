package rfb_test

import (
	"bytes"
	"errors"
	"image/color"
	"io"
	"net"
	"testing"
	"time"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/rfb"
	"github.com/master-controller/mc/rfb/rfbtest"
	"github.com/master-controller/mc/rfb/xvnctest"
)

// pipeServer runs serve on one end of a loopback TCP pair and returns the other.
func pipeServer(tb testing.TB, serve func(net.Conn)) net.Conn {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c)
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func TestClientHandshakeVNCAuth(t *testing.T) {
	pw := mc.SecretOf("s3cretpw-and-more")
	for _, v := range []rfb.Version{rfb.V33, rfb.V37, rfb.V38, {3, 889}, {3, 5}} {
		t.Run(v.String(), func(t *testing.T) {
			done := make(chan error, 1)
			c := pipeServer(t, func(c net.Conn) {
				_, err := rfbtest.ServeVNCAuth(c, pw, v)
				done <- err
			})
			h, err := rfb.ClientHandshake(c, pw)
			if err != nil {
				t.Fatalf("ClientHandshake: %v", err)
			}
			if err := <-done; err != nil {
				t.Fatalf("server: %v", err)
			}
			if h.Security != rfb.SecVNCAuth {
				t.Errorf("got security %d, want %d", h.Security, rfb.SecVNCAuth)
			}
			if h.Server != v {
				t.Errorf("got server version %v, want %v", h.Server, v)
			}
		})
	}
}

func TestClientHandshakeWrongPassword(t *testing.T) {
	for _, v := range []rfb.Version{rfb.V33, rfb.V37, rfb.V38} {
		t.Run(v.String(), func(t *testing.T) {
			c := pipeServer(t, func(c net.Conn) { rfbtest.ServeVNCAuth(c, mc.SecretOf("right"), v) })
			_, err := rfb.ClientHandshake(c, mc.SecretOf("wrong"))
			var ae *rfb.AuthError
			if !errors.As(err, &ae) {
				t.Fatalf("got %v, want *AuthError", err)
			}
			if ae.Stage != "result" {
				t.Errorf("got stage %q, want result", ae.Stage)
			}
			if v == rfb.V38 && ae.Reason != "Authentication failed" {
				t.Errorf("got reason %q, want the server's", ae.Reason)
			}
		})
	}
}

func TestClientHandshakeRefusals(t *testing.T) {
	tests := []struct {
		name   string
		server []byte
		want   error
		reason string
	}{
		{"http", []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), rfb.ErrNotRFB, ""},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.2p1\r\n"), rfb.ErrNotRFB, ""},
		{"short", []byte("RFB 003"), rfb.ErrNotRFB, ""},
		{"old", []byte("RFB 002.000\n"), rfb.ErrUnsupportedVersion, ""},
		{"refused38", append([]byte("RFB 003.008\n\x00\x00\x00\x00\x05"), "busy!"...), nil, "busy!"},
		{"refused33", append([]byte("RFB 003.003\n\x00\x00\x00\x00\x00\x00\x00\x02"), "no"...), nil, "no"},
		{"onlytight", []byte("RFB 003.008\n\x01\x10"), rfb.ErrUnsupportedSecurity, ""},
		{"hugereason", []byte("RFB 003.008\n\x00\xff\xff\xff\xff"), rfb.ErrNotRFB, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rw := struct {
				io.Reader
				io.Writer
			}{bytes.NewReader(tt.server), io.Discard}
			_, err := rfb.ClientHandshake(rw, mc.SecretOf("pw"))
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("got %v, want %v", err, tt.want)
				}
				return
			}
			var ae *rfb.AuthError
			if !errors.As(err, &ae) || ae.Reason != tt.reason {
				t.Fatalf("got %v, want *rfb.AuthError with reason %q", err, tt.reason)
			}
		})
	}
}

func TestServerHandshakeNone(t *testing.T) {
	tests := []struct {
		v          rfb.Version
		want       string // bytes after the banner
		choose     bool
		wantResult bool
	}{
		{rfb.V33, "\x00\x00\x00\x01", false, false},
		{rfb.V37, "\x01\x01", true, false},
		{rfb.V38, "\x01\x01", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.v.String(), func(t *testing.T) {
			done := make(chan error, 1)
			c := pipeServer(t, func(c net.Conn) {
				_, err := rfb.ServerHandshakeNone(c)
				done <- err
			})
			var b [12]byte
			if _, err := io.ReadFull(c, b[:]); err != nil || string(b[:]) != "RFB 003.008\n" {
				t.Fatalf("got banner %q, %v", b, err)
			}
			c.Write(tt.v.Banner())
			got := make([]byte, len(tt.want))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != tt.want {
				t.Fatalf("got %q (%v), want %q", got, err, tt.want)
			}
			if tt.choose {
				c.Write([]byte{rfb.SecNone})
			}
			if tt.wantResult {
				var r [4]byte
				if _, err := io.ReadFull(c, r[:]); err != nil || r != [4]byte{} {
					t.Fatalf("got result %v (%v), want OK", r, err)
				}
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
	// The full round trip: our client against our None server.
	for _, pw := range []mc.Secret{{}, mc.SecretOf("ignored")} {
		done := make(chan error, 1)
		c := pipeServer(t, func(c net.Conn) {
			_, err := rfb.ServerHandshakeNone(c)
			done <- err
		})
		h, err := rfb.ClientHandshake(c, pw)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if h.Security != rfb.SecNone || h.Version != rfb.V38 {
			t.Errorf("got %+v, want None on 3.8", h)
		}
	}
}

func TestServerHandshakeNoneNotRFB(t *testing.T) {
	rw := struct {
		io.Reader
		io.Writer
	}{bytes.NewReader([]byte("GET / HTTP/1.1\r\n")), io.Discard}
	if _, err := rfb.ServerHandshakeNone(rw); !errors.Is(err, rfb.ErrNoClient) {
		t.Fatalf("got %v, want ErrNoClient", err)
	}
}

func TestCaptureFake(t *testing.T) {
	pw := mc.SecretOf("pw123456")
	want := color.RGBA{0x1e, 0x6f, 0xd9, 0xff}
	fake := &rfbtest.FakeServer{Password: pw, Width: 40, Height: 30, Colour: want}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go fake.Serve(l)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	img, err := rfbtest.Capture(c, pw)
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds().Dx(); got != 40 {
		t.Errorf("got width %d, want 40", got)
	}
	if got := img.RGBAAt(39, 29); got != want {
		t.Errorf("got colour %v, want %v", got, want)
	}
}

// TestCaptureXvnc checks the handshake and rfb.DES response against the real
// TigerVNC server.
func TestCaptureXvnc(t *testing.T) {
	pw := mc.NewSecret(6)
	addr := xvnctest.StartXvnc(t, pw, 320, 200)
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	img, err := rfbtest.Capture(c, pw)
	if err != nil {
		t.Fatalf("capture from Xvnc: %v", err)
	}
	if got, want := img.Bounds().Dx(), 320; got != want {
		t.Errorf("got width %d, want %d", got, want)
	}

	// A wrong password is refused with the server's reason.
	c2, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = rfb.ClientHandshake(c2, mc.SecretOf("nottheone"))
	var ae *rfb.AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("got %v, want *AuthError", err)
	}
}
