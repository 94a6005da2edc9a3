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

func TestRunWebsockify(t *testing.T) {
	target := echoServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- RunWebsockify(ctx, []string{"--ping", "5s", "127.0.0.1:0", target}, pw, io.Discard) }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	// "websockify: listening on 127.0.0.1:PORT, proxying to ..."
	addr := strings.TrimSuffix(strings.Fields(line)[3], ",")
	c := dial(t, "ws://"+addr+"/", dialOpt{})
	if got := roundTrip(t, c, []byte("ping")); string(got) != "ping" {
		t.Fatalf("got %q", got)
	}
	cancel()
	wantClose(t, c, 1001, "the server is shutting down; reconnect")
	if err := <-done; err != nil {
		t.Fatalf("RunWebsockify: %v", err)
	}
	if err := RunWebsockify(t.Context(), []string{"127.0.0.1:0"}, io.Discard, io.Discard); err == nil {
		t.Fatal("got nil error without a target, want usage error")
	}
}
