package gateway

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// echoServer starts a TCP echo server on loopback.
func echoServer(tb testing.TB) string {
	tb.Helper()
	return tcpServer(tb, func(c net.Conn) { io.Copy(c, c) }).String()
}

func startWebsockify(tb testing.TB, w *Websockify) string {
	tb.Helper()
	srv := httptest.NewServer(w)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		w.Shutdown(ctx)
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// roundTrip sends p and reads len(p) bytes back.
func roundTrip(tb testing.TB, c *websocket.Conn, p []byte) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 20*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageBinary, p); err != nil {
		tb.Fatal(err)
	}
	var got []byte
	for len(got) < len(p) {
		_, b, err := c.Read(ctx)
		if err != nil {
			tb.Fatalf("read after %d of %d bytes: %v", len(got), len(p), err)
		}
		got = append(got, b...)
	}
	return got
}

func TestWebsockifyEcho(t *testing.T) {
	url := startWebsockify(t, &Websockify{Target: echoServer(t)})
	c := dial(t, url+"/websockify", dialOpt{})
	c.SetReadLimit(-1)
	if got := c.Subprotocol(); got != "binary" {
		t.Errorf("got subprotocol %q, want binary", got)
	}
	for _, size := range []int{0, 1, 125, 126, 65535, 65536, 3 << 20} {
		p := bytes.Repeat([]byte{byte(size)}, size)
		for i := range p {
			p[i] = byte(i * 7)
		}
		if got := roundTrip(t, c, p); !bytes.Equal(got, p) {
			t.Fatalf("size %d: echo differs", size)
		}
	}
	// A fragmented message and a ping in between.
	ctx := t.Context()
	w, err := c.Writer(ctx, websocket.MessageBinary)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("hello, "))
	w.Write([]byte("world"))
	w.Close()
	got := make([]byte, 0, 12)
	for len(got) < 12 {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b...)
	}
	if string(got) != "hello, world" {
		t.Fatalf("got %q, want %q", got, "hello, world")
	}
	readCtx := c.CloseRead(ctx) // reads (and answers pongs) from now on
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	_ = readCtx
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func TestWebsockifyMessageTooBig(t *testing.T) {
	url := startWebsockify(t, &Websockify{Target: echoServer(t), MaxMessageSize: 1024})
	c := dial(t, url, dialOpt{})
	if err := c.Write(t.Context(), websocket.MessageBinary, make([]byte, 2048)); err != nil {
		t.Fatal(err)
	}
	wantClose(t, c, websocket.StatusMessageTooBig, "message too big")
}

func TestWebsockifyTargetCloses(t *testing.T) {
	// A target that greets and closes at once.
	target := tcpServer(t, func(c net.Conn) { c.Write([]byte("bye")) })
	url := startWebsockify(t, &Websockify{Target: target.String()})
	c := dial(t, url, dialOpt{})
	_, b, err := c.Read(t.Context())
	if err != nil || string(b) != "bye" {
		t.Fatalf("got %q, %v; want bye", b, err)
	}
	wantClose(t, c, websocket.StatusNormalClosure, "target closed the connection")
}

func TestWebsockifyTokenFile(t *testing.T) {
	a, b := banner(t, "A"), banner(t, "B")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "one"), []byte("# targets\nalpha: "+a.String()+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "two"), []byte("beta:"+b.String()+"\n"), 0o600)
	for _, tokenFile := range []string{dir, filepath.Join(dir, "one")} {
		url := startWebsockify(t, &Websockify{TokenFile: tokenFile})
		c := dial(t, url+"/?token=alpha", dialOpt{})
		if _, got, err := c.Read(t.Context()); err != nil || string(got) != "A" {
			t.Fatalf("got %q, %v; want A", got, err)
		}
		c.Close(websocket.StatusNormalClosure, "")
		c2 := dial(t, url+"/?token=nope", dialOpt{})
		wantClose(t, c2, CodeUnreachable, "unknown token")
	}
	url := startWebsockify(t, &Websockify{TokenFile: dir})
	c := dial(t, url+"/?token=beta", dialOpt{})
	if _, got, err := c.Read(t.Context()); err != nil || string(got) != "B" {
		t.Fatalf("got %q, %v; want B", got, err)
	}
}

func TestWebsockifyStatic(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "vnc.html"), []byte("<title>noVNC</title>"), 0o644)
	srv := httptest.NewServer(&Websockify{Target: "127.0.0.1:1", Web: dir})
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/vnc.html")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "<title>noVNC</title>" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

func TestWebsockifyShutdown(t *testing.T) {
	w := &Websockify{Target: echoServer(t)}
	url := startWebsockify(t, w)
	c := dial(t, url, dialOpt{})
	roundTrip(t, c, []byte("x"))
	done := make(chan error, 1)
	go func() { done <- w.Shutdown(t.Context()) }()
	wantClose(t, c, 1001, "the server is shutting down; reconnect")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// serveWebsockify runs w.Serve on a loopback port until the test ends and
// returns its address and the function that ends it (waiting for Serve).
func serveWebsockify(tb testing.TB, w *Websockify) (addr string, stop func() error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l, err := w.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Serve(ctx, l) }()
	var once sync.Once
	var serr error
	stop = func() error {
		once.Do(func() { cancel(); serr = <-done })
		return serr
	}
	tb.Cleanup(func() { stop() })
	return l.Addr().String(), stop
}

// TestServe checks that Serve bridges, and that the end of its context
// closes every connection with 1001 and makes it return.
func TestServe(t *testing.T) {
	addr, stop := serveWebsockify(t, &Websockify{Target: echoServer(t), PingInterval: 5 * time.Second})
	c := dial(t, "ws://"+addr+"/", dialOpt{})
	if got := roundTrip(t, c, []byte("ping")); string(got) != "ping" {
		t.Fatalf("got %q", got)
	}
	done := make(chan error, 1)
	go func() { done <- stop() }()
	wantClose(t, c, 1001, "the server is shutting down; reconnect")
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("the listener still accepts after Serve returned")
	}
}

// TestServeHTTP covers the requests that Serve's own request reader hands
// to net/http or answers itself.
func TestServeHTTP(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vnc.html"), []byte("<title>noVNC</title>"), 0o644); err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("a: "+echoServer(t)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr, _ := serveWebsockify(t, &Websockify{Web: dir, TokenFile: tokens})
	upgrade := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
	tests := []struct {
		name     string
		req      string
		wantCode int
		wantBody string
	}{
		{"static file", "GET /vnc.html HTTP/1.1\r\nHost: x\r\n\r\n", 200, "<title>noVNC</title>"},
		{"static file, keep-alive second request", "GET /none HTTP/1.1\r\nHost: x\r\n\r\nGET /vnc.html HTTP/1.1\r\nHost: x\r\n\r\n", 404, ""},
		{"bad key", "GET /?token=a HTTP/1.1\r\nHost: x\r\n" + upgrade + "Sec-WebSocket-Key: x\r\n\r\n", 400, "bad Sec-WebSocket-Key\n"},
		{"wrong method", "POST /?token=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" + upgrade + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 405, "WebSocket upgrade needs GET\n"},
		{"not HTTP", "hello\r\n\r\n", 400, ""},
		{"header too large", "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 2<<20) + "\r\n\r\n", 431, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			go c.Write([]byte(tt.req))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("got status %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if tt.wantBody != "" && string(body) != tt.wantBody {
				t.Fatalf("got body %q, want %q", body, tt.wantBody)
			}
		})
	}
	t.Run("upgrade with token", func(t *testing.T) {
		c := dial(t, "ws://"+addr+"/?token=a", dialOpt{})
		if got := roundTrip(t, c, []byte("ping")); string(got) != "ping" {
			t.Fatalf("got %q, want ping", got)
		}
	})
	t.Run("unknown token", func(t *testing.T) {
		c := dial(t, "ws://"+addr+"/?token=zz", dialOpt{})
		wantClose(t, c, CodeUnreachable, "unknown token")
	})
}
