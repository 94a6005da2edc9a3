// Package rfb implements the parts of the RFB (VNC) protocol, versions 3.3,
// 3.7 and 3.8, that the gateway needs: the client side of the version and
// security handshake toward a machine's VNC server (with VNC authentication)
// and the server side toward a browser (security type None). A fake VNC
// server and a framebuffer client for screenshots are in rfb/rfbtest.
//
// The handshake functions read exactly the bytes of the handshake and nothing
// more (no buffering), so that after both handshakes the caller can splice the
// two connections: the browser's ClientInit goes to the machine and the
// machine's ServerInit comes back as ordinary bridged bytes.
package rfb

import (
	"crypto/des"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/master-controller/mc"
)

// Security types (RFC 6143 §7.1.2).
const (
	SecInvalid = 0
	SecNone    = 1
	SecVNCAuth = 2
)

// MaxReasonLen bounds a failure reason string read from a peer, so a hostile
// peer cannot make us allocate without limit.
const MaxReasonLen = 4096

// Version is a protocol version, for example {3, 8}.
type Version struct{ Major, Minor int }

// String returns "3.8".
func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Banner returns the 12-byte protocol version message, "RFB 003.008\n".
func (v Version) Banner() []byte { return fmt.Appendf(nil, "RFB %03d.%03d\n", v.Major, v.Minor) }

// The versions this package speaks.
var (
	V33 = Version{3, 3}
	V37 = Version{3, 7}
	V38 = Version{3, 8}
)

// ErrNotRFB is returned (wrapped) when the peer's first bytes are not an RFB
// protocol version message.
var ErrNotRFB = errors.New("peer is not an RFB server")

// ErrNoClient is returned (wrapped) when the peer's reply to our banner is not
// an RFB protocol version message.
var ErrNoClient = errors.New("peer is not an RFB client")

// ErrUnsupportedSecurity is returned (wrapped) when the server offers no
// security type that this client can use.
var ErrUnsupportedSecurity = errors.New("no supported security type")

// ErrUnsupportedVersion is returned (wrapped) for a protocol version older than 3.3.
var ErrUnsupportedVersion = errors.New("unsupported RFB version")

// AuthError is returned when the server refuses the connection or the
// authentication. Reason is the server's failure string ("" when the protocol
// version has none). It is a peer-supplied string: log it, never trust it.
type AuthError struct {
	// Stage is "security" (the server refused before authentication) or
	// "result" (the SecurityResult said failed).
	Stage  string
	Reason string
}

// Error implements error.
func (e *AuthError) Error() string {
	if e.Reason == "" {
		return "rfb " + e.Stage + " failed"
	}
	return fmt.Sprintf("rfb %s failed: %q", e.Stage, e.Reason)
}

// ParseBanner parses a 12-byte protocol version message.
func ParseBanner(b []byte) (Version, bool) {
	if len(b) != 12 || string(b[:4]) != "RFB " || b[7] != '.' || b[11] != '\n' {
		return Version{}, false
	}
	num := func(p []byte) (int, bool) {
		n := 0
		for _, c := range p {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	maj, ok1 := num(b[4:7])
	min, ok2 := num(b[8:11])
	if !ok1 || !ok2 {
		return Version{}, false
	}
	return Version{maj, min}, true
}

// negotiate picks the version a client answers to a server's version: 3.8 for
// anything at or above it, 3.7 for 3.7, and 3.3 for the rest of 3.x (3.4–3.6
// are vendor variants of 3.3).
func negotiate(server Version) (Version, error) {
	switch {
	case server.Major > 3 || server.Major == 3 && server.Minor >= 8:
		return V38, nil
	case server.Major == 3 && server.Minor == 7:
		return V37, nil
	case server.Major == 3 && server.Minor >= 3:
		return V33, nil
	}
	return Version{}, fmt.Errorf("server version %s: %w", server, ErrUnsupportedVersion)
}

// Handshake describes a completed client handshake.
type Handshake struct {
	// Server is the version the server announced; Version the one agreed.
	Server, Version Version
	// Security is the security type used (SecNone or SecVNCAuth).
	Security int
}

// ClientHandshake performs the client side of the version and security
// handshake on conn: it reads the server's banner (ErrNotRFB if it is not
// one), answers the version, chooses VNC authentication when a password is
// given and the server offers it (else None), answers the challenge and reads
// the security result. It stops before ClientInit. A refusal by the server is
// an *AuthError. The caller sets deadlines on conn.
func ClientHandshake(conn io.ReadWriter, password mc.Secret) (Handshake, error) {
	var h Handshake
	var banner [12]byte
	if _, err := io.ReadFull(conn, banner[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return h, fmt.Errorf("read banner: %w", ErrNotRFB)
		}
		return h, fmt.Errorf("read banner: %w", err)
	}
	server, ok := ParseBanner(banner[:])
	if !ok {
		return h, fmt.Errorf("read banner: %w", ErrNotRFB)
	}
	h.Server = server
	v, err := negotiate(server)
	if err != nil {
		return h, err
	}
	h.Version = v
	if _, err := conn.Write(v.Banner()); err != nil {
		return h, fmt.Errorf("write version: %w", err)
	}

	// Security type: chosen by the server in 3.3, by us from a list after.
	if v == V33 {
		var b [4]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			return h, fmt.Errorf("read security type: %w", err)
		}
		h.Security = int(binary.BigEndian.Uint32(b[:]))
		switch h.Security {
		case SecInvalid:
			reason, err := readReason(conn)
			if err != nil {
				return h, err
			}
			return h, &AuthError{Stage: "security", Reason: reason}
		case SecNone:
		case SecVNCAuth:
			if password.IsZero() {
				return h, fmt.Errorf("server requires VNC authentication and no password is set: %w", ErrUnsupportedSecurity)
			}
		default:
			return h, fmt.Errorf("security type %d: %w", h.Security, ErrUnsupportedSecurity)
		}
	} else {
		var n [1]byte
		if _, err := io.ReadFull(conn, n[:]); err != nil {
			return h, fmt.Errorf("read security types: %w", err)
		}
		if n[0] == 0 {
			reason, err := readReason(conn)
			if err != nil {
				return h, err
			}
			return h, &AuthError{Stage: "security", Reason: reason}
		}
		types := make([]byte, n[0])
		if _, err := io.ReadFull(conn, types); err != nil {
			return h, fmt.Errorf("read security types: %w", err)
		}
		hasNone, hasVNC := false, false
		for _, t := range types {
			hasNone = hasNone || t == SecNone
			hasVNC = hasVNC || t == SecVNCAuth
		}
		switch {
		case hasVNC && !password.IsZero():
			h.Security = SecVNCAuth
		case hasNone:
			h.Security = SecNone
		default:
			return h, fmt.Errorf("server offers %v: %w", types, ErrUnsupportedSecurity)
		}
		if _, err := conn.Write([]byte{byte(h.Security)}); err != nil {
			return h, fmt.Errorf("write security type: %w", err)
		}
	}

	if h.Security == SecVNCAuth {
		var challenge [16]byte
		if _, err := io.ReadFull(conn, challenge[:]); err != nil {
			return h, fmt.Errorf("read challenge: %w", err)
		}
		resp := EncryptChallenge(password, challenge)
		if _, err := conn.Write(resp[:]); err != nil {
			return h, fmt.Errorf("write challenge response: %w", err)
		}
	} else if v != V38 {
		// Before 3.8, None has no SecurityResult.
		return h, nil
	}

	var res [4]byte
	if _, err := io.ReadFull(conn, res[:]); err != nil {
		return h, fmt.Errorf("read security result: %w", err)
	}
	if binary.BigEndian.Uint32(res[:]) != 0 {
		reason := ""
		if v == V38 {
			reason, err = readReason(conn)
			if err != nil {
				return h, err
			}
		}
		return h, &AuthError{Stage: "result", Reason: reason}
	}
	return h, nil
}

// readReason reads a length-prefixed failure reason string.
func readReason(r io.Reader) (string, error) {
	var b [4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("read failure reason: %w", err)
	}
	n := binary.BigEndian.Uint32(b[:])
	if n > MaxReasonLen {
		return "", fmt.Errorf("failure reason of %d bytes: %w", n, ErrNotRFB)
	}
	s := make([]byte, n)
	if _, err := io.ReadFull(r, s); err != nil {
		return "", fmt.Errorf("read failure reason: %w", err)
	}
	return string(s), nil
}

// EncryptChallenge returns the VNC authentication response: the challenge
// encrypted with DES, keyed by the password's first 8 bytes (zero padded).
func EncryptChallenge(password mc.Secret, challenge [16]byte) [16]byte {
	var key [8]byte
	copy(key[:], password.Reveal())
	var out [16]byte
	a, b := DES(key, [8]byte(challenge[:8])), DES(key, [8]byte(challenge[8:]))
	copy(out[:8], a[:])
	copy(out[8:], b[:])
	return out
}

// DES encrypts one block with key the way VNC does: VNC's d3des takes each
// key byte with its bits mirrored (the historical quirk). VNC authentication
// and the vncpasswd file format both use it.
func DES(key, block [8]byte) [8]byte {
	for i, b := range key {
		key[i] = reverseBits(b)
	}
	c, err := des.NewCipher(key[:])
	if err != nil {
		panic("des: " + err.Error()) // the key is always 8 bytes
	}
	var out [8]byte
	c.Encrypt(out[:], block[:])
	return out
}

func reverseBits(b byte) byte {
	var r byte
	for i := 0; i < 8; i++ {
		r = r<<1 | b&1
		b >>= 1
	}
	return r
}

// ServerHandshakeNone performs the server side of the handshake toward a
// client (the browser) offering only security type None: it sends "RFB
// 003.008\n", reads the client's version (ErrNoClient if it is not one), offers
// None, reads the choice and sends SecurityResult OK where the version has
// one. It stops before ClientInit, which the caller then forwards.
func ServerHandshakeNone(conn io.ReadWriter) (Version, error) {
	if _, err := conn.Write(V38.Banner()); err != nil {
		return Version{}, fmt.Errorf("write banner: %w", err)
	}
	return ServerHandshakeNoneAfterBanner(conn)
}

// ServerHandshakeNoneAfterBanner is ServerHandshakeNone for a caller that has
// already sent the "RFB 003.008\n" banner itself.
func ServerHandshakeNoneAfterBanner(conn io.ReadWriter) (Version, error) {
	v, err := ReadClientVersion(conn)
	if err != nil {
		return v, err
	}
	if v == V33 {
		if _, err := conn.Write([]byte{0, 0, 0, SecNone}); err != nil {
			return v, fmt.Errorf("write security type: %w", err)
		}
		return v, nil
	}
	if _, err := conn.Write([]byte{1, SecNone}); err != nil {
		return v, fmt.Errorf("write security types: %w", err)
	}
	var choice [1]byte
	if _, err := io.ReadFull(conn, choice[:]); err != nil {
		return v, fmt.Errorf("read security choice: %w", err)
	}
	if choice[0] != SecNone {
		if v == V38 {
			_ = WriteFailure(conn, "security type not offered")
		}
		return v, fmt.Errorf("client chose security type %d: %w", choice[0], ErrNoClient)
	}
	if v == V38 {
		if _, err := conn.Write([]byte{0, 0, 0, 0}); err != nil {
			return v, fmt.Errorf("write security result: %w", err)
		}
	}
	return v, nil
}

// ReadClientVersion reads a client's version message and maps it onto the
// version the server then speaks.
func ReadClientVersion(conn io.Reader) (Version, error) {
	var b [12]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Version{}, fmt.Errorf("read client version: %w", ErrNoClient)
		}
		return Version{}, fmt.Errorf("read client version: %w", err)
	}
	cv, ok := ParseBanner(b[:])
	if !ok {
		return Version{}, fmt.Errorf("read client version: %w", ErrNoClient)
	}
	v, err := negotiate(cv)
	if err != nil {
		return v, err
	}
	return v, nil
}

// WriteFailure writes a failed SecurityResult with a reason (3.8).
func WriteFailure(w io.Writer, reason string) error {
	b := make([]byte, 8+len(reason))
	binary.BigEndian.PutUint32(b[0:], 1)
	binary.BigEndian.PutUint32(b[4:], uint32(len(reason)))
	copy(b[8:], reason)
	_, err := w.Write(b)
	return err
}
