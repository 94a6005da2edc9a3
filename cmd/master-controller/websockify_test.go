package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWebsockify runs the command line: it prints where it listens, bridges
// to the target, and ends with exit code 0 when its context ends.
func TestWebsockify(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- websockify(ctx, []string{"--ping", "5s", "127.0.0.1:0", l.Addr().String()}, pw, io.Discard)
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	want := ", proxying to " + l.Addr().String() + "\n"
	if !strings.HasPrefix(line, "websockify: listening on 127.0.0.1:") || !strings.HasSuffix(line, want) {
		t.Fatalf("got %q, want the listening address and the target", line)
	}
	addr := strings.TrimSuffix(strings.Fields(line)[3], ",")
	dctx, dcancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer dcancel()
	c, _, err := websocket.Dial(dctx, "ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(dctx, websocket.MessageBinary, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(dctx); err != nil || string(b) != "ping" {
		t.Fatalf("got %q, %v; want the echo", b, err)
	}
	cancel()
	if _, _, err := c.Read(dctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("got %v, want close 1001", err)
	}
	if got := <-code; got != 0 {
		t.Fatalf("got exit code %d, want 0", got)
	}
}

func TestWebsockifyUsage(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{[]string{"127.0.0.1:0"}, 2, "need LISTEN and TARGET"},
		{[]string{"--bogus", "1", "2"}, 2, "flag provided but not defined"},
		{[]string{"--help"}, 0, "usage: master-controller websockify"},
		{[]string{"a", "b", "c"}, 2, "need LISTEN and TARGET"},
		{[]string{"256.0.0.1:0", "127.0.0.1:1"}, 1, "websockify: listen"},
	}
	for _, tt := range tests {
		var out, errb strings.Builder
		if got := websockify(t.Context(), tt.args, &out, &errb); got != tt.wantCode {
			t.Errorf("%q: got exit code %d, want %d", tt.args, got, tt.wantCode)
		}
		if !strings.Contains(errb.String(), tt.wantErr) {
			t.Errorf("%q: stderr %q lacks %q", tt.args, errb.String(), tt.wantErr)
		}
	}
}
