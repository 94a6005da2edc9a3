package wsproto

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// Accept completes a WebSocket upgrade, answering the first of protocols
// (at most one), and accepts messages of up to limit bytes (0: no limit).
// On error it has written an HTTP error.
func Accept(w http.ResponseWriter, r *http.Request, protocols []string, limit int64) (*Conn, error) {
	if r.Method != http.MethodGet {
		http.Error(w, "WebSocket upgrade needs GET", http.StatusMethodNotAllowed)
		return nil, errors.New("websocket upgrade: method " + r.Method)
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "WebSocket upgrade expected", http.StatusUpgradeRequired)
		return nil, errors.New("websocket upgrade: not an upgrade request")
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "unsupported WebSocket version", http.StatusBadRequest)
		return nil, errors.New("websocket upgrade: unsupported version")
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		http.Error(w, "bad Sec-WebSocket-Key", http.StatusBadRequest)
		return nil, errors.New("websocket upgrade: bad key")
	}
	h := w.Header()
	h.Set("Upgrade", "websocket")
	h.Set("Connection", "Upgrade")
	h.Set("Sec-WebSocket-Accept", acceptKey(key))
	proto := ""
	if len(protocols) > 0 {
		proto = protocols[0]
		h.Set("Sec-WebSocket-Protocol", proto)
	}
	w.WriteHeader(http.StatusSwitchingProtocols)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, fmt.Errorf("websocket upgrade: hijack: %w", err)
	}
	// Bytes the client sent right after its request are in brw.Reader, which
	// must not read through the HTTP server's reader any more (go#32314).
	b, _ := brw.Reader.Peek(brw.Reader.Buffered())
	br := brw.Reader
	if len(b) > 0 {
		br.Reset(io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn))
	} else {
		br.Reset(conn)
	}
	return NewConn(conn, br, proto, limit), nil
}

// NewConn returns the server side of a WebSocket whose handshake is done:
// frames are read through br (which reads conn) and written to conn.
func NewConn(conn net.Conn, br *bufio.Reader, subprotocol string, limit int64) *Conn {
	c := &Conn{conn: conn, br: br, proto: subprotocol, limit: limit,
		closeRecv: make(chan struct{}), pong: make(chan struct{}, 1)}
	c.tcp, _ = conn.(*net.TCPConn)
	return c
}

// Subprotocol returns the subprotocol chosen in the handshake ("" for none).
func (c *Conn) Subprotocol() string { return c.proto }

// TCP returns the connection when it is plain TCP (SpliceFrom needs it),
// else nil.
func (c *Conn) TCP() *net.TCPConn { return c.tcp }

func acceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
