// Package wstest builds client-side WebSocket frames byte by byte, for
// tests that feed a server frames a well-behaved client library would not
// send (wsproto's conformance table, the gateway's bridge tests).
package wstest

import (
	"bytes"

	"github.com/master-controller/mc/internal/wsproto"
)

// Key is the masking key of the frames built here.
var Key = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// Frame returns a masked client frame with opcode op (which may carry
// reserved bits, 0x70) and payload.
func Frame(op byte, fin bool, payload []byte) []byte {
	b := []byte{op}
	if fin {
		b[0] |= 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	b = append(b, Key[:]...)
	p := bytes.Clone(payload)
	wsproto.Mask(Key, 0, p)
	return append(b, p...)
}

// Unmasked returns an unmasked frame, which a server must refuse from a
// client.
func Unmasked(op byte, fin bool, payload []byte) []byte {
	b := []byte{op, byte(len(payload))}
	if fin {
		b[0] |= 0x80
	}
	return append(b, payload...)
}
