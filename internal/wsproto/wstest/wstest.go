// Package wstest helps tests of WebSocket servers: it builds client frames
// byte by byte, including those a well-behaved client library would not send
// (wsproto's conformance table, the gateway's bridge tests), and connects a
// raw client to a server over loopback TCP.
package wstest

import (
	"bytes"
	"net"
	"testing"

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

// Pair returns the two ends of a loopback TCP connection, closed when the
// test ends. TCP, not net.Pipe: the kernel buffers what a side writes, as
// for a real client, and splice(2) works.
func Pair(tb testing.TB) (server, client net.Conn) {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		ch <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server = <-ch
	if server == nil {
		client.Close()
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}
