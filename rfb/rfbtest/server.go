// Package rfbtest holds RFB fakes: a VNC server with a solid-colour screen
// (FakeServer, which the fake driver runs as each machine's VNC server), the
// server side of VNC authentication, and a client that captures one
// framebuffer (Capture). It imports no testing code, so the fake driver can
// ship in the binary.
package rfbtest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"image/color"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/rfb"
)

// ErrAuthFailed is returned by ServeVNCAuth when the client's response does
// not match the password.
var ErrAuthFailed = errors.New("vnc authentication failed")

// ServeVNCAuth performs the server side of the handshake with VNC
// authentication (for fakes in tests): it announces version v (V38 when
// zero), reads the client's version, offers VNC authentication, checks the
// challenge response against password and sends the security result. It
// stops before ClientInit. It returns ErrAuthFailed (after telling the client)
// for a wrong password.
func ServeVNCAuth(conn io.ReadWriter, password mc.Secret, v rfb.Version) (rfb.Version, error) {
	if v == (rfb.Version{}) {
		v = rfb.V38
	}
	if _, err := conn.Write(v.Banner()); err != nil {
		return v, fmt.Errorf("write banner: %w", err)
	}
	cv, err := rfb.ReadClientVersion(conn)
	if err != nil {
		return cv, err
	}
	if cv.Minor > v.Minor {
		cv = v // a client may not answer above the server's version
	}
	if cv == rfb.V33 {
		if _, err := conn.Write([]byte{0, 0, 0, rfb.SecVNCAuth}); err != nil {
			return cv, fmt.Errorf("write security type: %w", err)
		}
	} else {
		if _, err := conn.Write([]byte{1, rfb.SecVNCAuth}); err != nil {
			return cv, fmt.Errorf("write security types: %w", err)
		}
		var choice [1]byte
		if _, err := io.ReadFull(conn, choice[:]); err != nil {
			return cv, fmt.Errorf("read security choice: %w", err)
		}
		if choice[0] != rfb.SecVNCAuth {
			return cv, fmt.Errorf("client chose security type %d: %w", choice[0], rfb.ErrNoClient)
		}
	}
	var challenge [16]byte
	if _, err := rand.Read(challenge[:]); err != nil {
		return cv, err
	}
	if _, err := conn.Write(challenge[:]); err != nil {
		return cv, fmt.Errorf("write challenge: %w", err)
	}
	var resp [16]byte
	if _, err := io.ReadFull(conn, resp[:]); err != nil {
		return cv, fmt.Errorf("read challenge response: %w", err)
	}
	want := rfb.EncryptChallenge(password, challenge)
	if subtle.ConstantTimeCompare(resp[:], want[:]) != 1 {
		if cv == rfb.V38 {
			_ = rfb.WriteFailure(conn, "Authentication failed")
		} else {
			_, _ = conn.Write([]byte{0, 0, 0, 1})
		}
		return cv, ErrAuthFailed
	}
	if _, err := conn.Write([]byte{0, 0, 0, 0}); err != nil {
		return cv, fmt.Errorf("write security result: %w", err)
	}
	return cv, nil
}

// PixelFormat is an RFB pixel format (true colour only).
type PixelFormat struct {
	BitsPerPixel, Depth             uint8
	BigEndian, TrueColour           bool
	RedMax, GreenMax, BlueMax       uint16
	RedShift, GreenShift, BlueShift uint8
}

// DefaultPixelFormat is 32 bits per pixel, depth 24, little-endian,
// red at bit 16, green at 8, blue at 0.
var DefaultPixelFormat = PixelFormat{32, 24, false, true, 255, 255, 255, 16, 8, 0}

func (pf PixelFormat) marshal() []byte {
	b := make([]byte, 16)
	b[0], b[1] = pf.BitsPerPixel, pf.Depth
	if pf.BigEndian {
		b[2] = 1
	}
	if pf.TrueColour {
		b[3] = 1
	}
	binary.BigEndian.PutUint16(b[4:], pf.RedMax)
	binary.BigEndian.PutUint16(b[6:], pf.GreenMax)
	binary.BigEndian.PutUint16(b[8:], pf.BlueMax)
	b[10], b[11], b[12] = pf.RedShift, pf.GreenShift, pf.BlueShift
	return b
}

func unmarshalPixelFormat(b []byte) PixelFormat {
	return PixelFormat{
		BitsPerPixel: b[0], Depth: b[1], BigEndian: b[2] != 0, TrueColour: b[3] != 0,
		RedMax: binary.BigEndian.Uint16(b[4:]), GreenMax: binary.BigEndian.Uint16(b[6:]),
		BlueMax:  binary.BigEndian.Uint16(b[8:]),
		RedShift: b[10], GreenShift: b[11], BlueShift: b[12],
	}
}

// valid reports whether we can encode (or decode) pixels in pf.
func (pf PixelFormat) valid() bool {
	switch pf.BitsPerPixel {
	case 8, 16, 32:
	default:
		return false
	}
	return pf.TrueColour && pf.RedShift < 32 && pf.GreenShift < 32 && pf.BlueShift < 32
}

// encode returns c as one pixel in pf.
func (pf PixelFormat) encode(c color.RGBA) []byte {
	scale := func(v uint8, max uint16) uint32 { return uint32(v) * uint32(max) / 255 }
	p := scale(c.R, pf.RedMax)<<pf.RedShift | scale(c.G, pf.GreenMax)<<pf.GreenShift | scale(c.B, pf.BlueMax)<<pf.BlueShift
	n := int(pf.BitsPerPixel / 8)
	b := make([]byte, n)
	for i := 0; i < n; i++ {
		shift := 8 * i
		if pf.BigEndian {
			shift = 8 * (n - 1 - i)
		}
		b[i] = byte(p >> shift)
	}
	return b
}

// FakeServer is a VNC server for tests: VNC authentication with Password and
// a framebuffer of one solid colour. It answers every non-incremental
// FramebufferUpdateRequest with a Raw rectangle and holds incremental ones
// (the screen never changes).
type FakeServer struct {
	// Password is the VNC password (required).
	Password mc.Secret
	// Width and Height default to 64×48.
	Width, Height int
	// Colour is the screen's colour.
	Colour color.RGBA
	// Version is the announced version (default 3.8).
	Version rfb.Version
	// Name is the desktop name (default "fake").
	Name string

	// Accepted counts accepted connections; Authenticated those that passed
	// authentication.
	Accepted, Authenticated atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Serve accepts connections on l until it is closed, serving each in its own
// goroutine. It returns nil once l is closed.
func (s *FakeServer) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		s.Accepted.Add(1)
		s.mu.Lock()
		if s.conns == nil {
			s.conns = map[net.Conn]struct{}{}
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			_ = s.ServeConn(c)
		}()
	}
}

// CloseConns closes every connection being served (to simulate a machine
// that goes away).
func (s *FakeServer) CloseConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

// ServeConn serves one connection until the client leaves or misbehaves.
func (s *FakeServer) ServeConn(conn io.ReadWriter) error {
	if _, err := ServeVNCAuth(conn, s.Password, s.Version); err != nil {
		return err
	}
	s.Authenticated.Add(1)
	w, h := s.Width, s.Height
	if w <= 0 || h <= 0 {
		w, h = 64, 48
	}
	name := s.Name
	if name == "" {
		name = "fake"
	}
	var shared [1]byte
	if _, err := io.ReadFull(conn, shared[:]); err != nil {
		return fmt.Errorf("read client init: %w", err)
	}
	init := make([]byte, 0, 24+len(name))
	init = binary.BigEndian.AppendUint16(init, uint16(w))
	init = binary.BigEndian.AppendUint16(init, uint16(h))
	init = append(init, DefaultPixelFormat.marshal()...)
	init = binary.BigEndian.AppendUint32(init, uint32(len(name)))
	init = append(init, name...)
	if _, err := conn.Write(init); err != nil {
		return fmt.Errorf("write server init: %w", err)
	}
	pf := DefaultPixelFormat
	var t [1]byte
	for {
		if _, err := io.ReadFull(conn, t[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch t[0] {
		case 0: // SetPixelFormat
			var b [19]byte
			if _, err := io.ReadFull(conn, b[:]); err != nil {
				return err
			}
			pf = unmarshalPixelFormat(b[3:])
			if !pf.valid() {
				return fmt.Errorf("unsupported pixel format %+v", pf)
			}
		case 2: // SetEncodings
			var b [3]byte
			if _, err := io.ReadFull(conn, b[:]); err != nil {
				return err
			}
			n := int(binary.BigEndian.Uint16(b[1:]))
			if _, err := io.CopyN(io.Discard, conn, int64(4*n)); err != nil {
				return err
			}
		case 3: // FramebufferUpdateRequest
			var b [9]byte
			if _, err := io.ReadFull(conn, b[:]); err != nil {
				return err
			}
			if b[0] != 0 {
				continue // incremental: nothing changed
			}
			x, y := int(binary.BigEndian.Uint16(b[1:])), int(binary.BigEndian.Uint16(b[3:]))
			rw, rh := int(binary.BigEndian.Uint16(b[5:])), int(binary.BigEndian.Uint16(b[7:]))
			x, y = min(x, w), min(y, h)
			rw, rh = min(rw, w-x), min(rh, h-y)
			if err := s.writeUpdate(conn, pf, x, y, rw, rh); err != nil {
				return err
			}
		case 4: // KeyEvent
			if _, err := io.CopyN(io.Discard, conn, 7); err != nil {
				return err
			}
		case 5: // PointerEvent
			if _, err := io.CopyN(io.Discard, conn, 5); err != nil {
				return err
			}
		case 6: // ClientCutText
			var b [7]byte
			if _, err := io.ReadFull(conn, b[:]); err != nil {
				return err
			}
			if _, err := io.CopyN(io.Discard, conn, int64(binary.BigEndian.Uint32(b[3:]))); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown client message type %d", t[0])
		}
	}
}

func (s *FakeServer) writeUpdate(w io.Writer, pf PixelFormat, x, y, rw, rh int) error {
	px := pf.encode(s.Colour)
	b := make([]byte, 0, 16+rw*rh*len(px))
	b = append(b, 0, 0, 0, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(x))
	b = binary.BigEndian.AppendUint16(b, uint16(y))
	b = binary.BigEndian.AppendUint16(b, uint16(rw))
	b = binary.BigEndian.AppendUint16(b, uint16(rh))
	b = binary.BigEndian.AppendUint32(b, 0) // Raw
	for i := 0; i < rw*rh; i++ {
		b = append(b, px...)
	}
	_, err := w.Write(b)
	return err
}
