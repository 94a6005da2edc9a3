package gateway

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/coder/websocket"
)

// sourceServer starts a TCP server that writes 64 KiB blocks until the peer
// goes.
func sourceServer(tb testing.TB) string {
	tb.Helper()
	buf := make([]byte, 64<<10)
	return tcpServer(tb, func(c net.Conn) {
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}).String()
}

// BenchmarkBridgeToViewer measures bytes from a TCP source through the
// bridge to a WebSocket client (the VNC direction).
func BenchmarkBridgeToViewer(b *testing.B) {
	for _, splice := range []bool{true, false} {
		name := "splice"
		if !splice {
			name = "copy"
		}
		b.Run(name, func(b *testing.B) {
			old := useSplice
			useSplice = splice
			defer func() { useSplice = old }()
			url := startWebsockify(b, &Websockify{Target: sourceServer(b)})
			c := dial(b, url, dialOpt{})
			c.SetReadLimit(-1)
			nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
			buf := make([]byte, 256<<10)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := io.ReadFull(nc, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBridgeToMachine measures bytes from a WebSocket client through
// the bridge to a TCP sink.
func BenchmarkBridgeToMachine(b *testing.B) {
	sink := tcpServer(b, func(c net.Conn) { io.Copy(io.Discard, c) })
	url := startWebsockify(b, &Websockify{Target: sink.String()})
	c := dial(b, url, dialOpt{})
	msg := make([]byte, 64<<10)
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for b.Loop() {
		if err := c.Write(context.Background(), websocket.MessageBinary, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTrip measures a 16-byte message to an echo server and back.
func BenchmarkRoundTrip(b *testing.B) {
	url := startWebsockify(b, &Websockify{Target: echoServer(b)})
	c := dial(b, url, dialOpt{})
	nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	msg, back := make([]byte, 16), make([]byte, 16)
	for b.Loop() {
		if _, err := nc.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(nc, back); err != nil {
			b.Fatal(err)
		}
	}
}
