package rfb

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/master-controller/mc"
)

// FuzzClientHandshake feeds arbitrary server bytes to ClientHandshake: it must
// never panic, never read past the bytes given, and succeed only on a
// well-formed exchange.
func FuzzClientHandshake(f *testing.F) {
	f.Add([]byte("RFB 003.008\n\x01\x02" + string(make([]byte, 16)) + "\x00\x00\x00\x00"))
	f.Add([]byte("RFB 003.003\n\x00\x00\x00\x02" + string(make([]byte, 16)) + "\x00\x00\x00\x00"))
	f.Add([]byte("RFB 003.007\n\x02\x01\x02"))
	f.Add([]byte("RFB 003.008\n\x01\x01\x00\x00\x00\x00"))
	f.Add([]byte("RFB 003.008\n\x00\x00\x00\x00\x04nope"))
	f.Add([]byte("RFB 003.008\n\x01\x02" + string(make([]byte, 16)) + "\x00\x00\x00\x01\x00\x00\x00\x03bad"))
	f.Add([]byte("HTTP/1.1 200 OK\r\n"))
	f.Fuzz(func(t *testing.T, server []byte) {
		r := bytes.NewReader(server)
		var w bytes.Buffer
		h, err := ClientHandshake(struct {
			io.Reader
			io.Writer
		}{r, &w}, mc.SecretOf("password"))
		if err != nil {
			var ae *AuthError
			if errors.As(err, &ae) && len(ae.Reason) > MaxReasonLen {
				t.Fatalf("reason of %d bytes", len(ae.Reason))
			}
			return
		}
		if _, ok := ParseBanner(server[:12]); !ok {
			t.Fatalf("accepted a non-RFB banner %q", server[:12])
		}
		if h.Security != SecNone && h.Security != SecVNCAuth {
			t.Fatalf("accepted security type %d", h.Security)
		}
		if w.Len() < 12 {
			t.Fatalf("succeeded without answering the version")
		}
	})
}

// FuzzServerHandshakeNone feeds arbitrary client bytes to the browser-side
// handshake.
func FuzzServerHandshakeNone(f *testing.F) {
	f.Add([]byte("RFB 003.008\n\x01"))
	f.Add([]byte("RFB 003.003\n"))
	f.Add([]byte("RFB 003.007\n\x02"))
	f.Fuzz(func(t *testing.T, client []byte) {
		_, err := ServerHandshakeNone(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(client), io.Discard})
		if err == nil {
			if _, ok := ParseBanner(client[:12]); !ok {
				t.Fatalf("accepted a non-RFB client %q", client[:12])
			}
		}
	})
}
