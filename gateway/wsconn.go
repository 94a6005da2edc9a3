package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"
)

// wsConn is the server side of a WebSocket (RFC 6455), lean on purpose: no
// compression, no buffer of its own beyond the 4 KiB reader left by the HTTP
// server, one writev per message, and splice(2) from a TCP upstream into a
// TCP client for the bytes toward the viewer. The bridge was first built on
// github.com/coder/websocket and measured syscall-bound (about 1.4–1.9 CPU
// s/GiB, no better than websockify); with this layer and splice it measured
// 0.5–0.8 CPU s/GiB (bench/). coder/websocket remains the client in tests
// and in the benchmark.
//
// One goroutine reads (next and Read); any goroutine writes.
type wsConn struct {
	conn  net.Conn
	tcp   *net.TCPConn // conn, when it is plain TCP (splice is possible)
	br    *bufio.Reader
	proto string
	limit int64

	// Reader state, owned by the reading goroutine (rmu).
	rmu       sync.Mutex
	remaining int64 // payload bytes left in the current frame
	fin       bool  // the current frame is the message's last
	mask      [4]byte
	maskPos   int
	msgLen    int64
	inMessage bool
	rerr      error // sticky read error

	// Writer state.
	wmu sync.Mutex
	hdr [10]byte

	closeSent atomic.Bool
	closeOnce sync.Once
	closeRecv chan struct{} // closed when the peer's close frame (or a read error) has been read
	pong      chan struct{}
}

// closeError is a close frame received from the peer.
type closeError struct {
	code   websocket.StatusCode
	reason string
}

func (e *closeError) Error() string {
	return fmt.Sprintf("websocket closed by peer: %d %q", e.code, e.reason)
}

var (
	errProtocol = errors.New("websocket protocol error")
	errTooBig   = errors.New("websocket message too big")
)

const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// acceptWS completes a WebSocket upgrade, answering the first of protocols
// (at most one). On error it has written an HTTP error.
func acceptWS(w http.ResponseWriter, r *http.Request, protocols []string, limit int64) (*wsConn, error) {
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
	c := &wsConn{conn: conn, br: br, proto: proto, limit: limit,
		closeRecv: make(chan struct{}), pong: make(chan struct{}, 1)}
	c.tcp, _ = conn.(*net.TCPConn)
	return c, nil
}

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

// next waits for the next data message and positions Read at its start.
func (c *wsConn) next() error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for c.rerr == nil && (c.remaining > 0 || c.inMessage) {
		// Discard the rest of an unread message.
		if c.remaining > 0 {
			_, c.rerr = c.br.Discard(int(min(c.remaining, 1<<30)))
			c.remaining = 0
			continue
		}
		c.rerr = c.nextFrame(true)
	}
	if c.rerr != nil {
		c.readEnded()
		return c.rerr
	}
	c.msgLen = 0
	c.rerr = c.nextFrame(false)
	if c.rerr != nil {
		c.readEnded()
	}
	return c.rerr
}

// readEnded tells a waiting close that nothing more will be read.
func (c *wsConn) readEnded() { c.closeOnce.Do(func() { close(c.closeRecv) }) }

// Read reads the current message's payload; io.EOF at its end.
func (c *wsConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for c.remaining == 0 {
		if c.rerr != nil {
			c.readEnded()
			return 0, c.rerr
		}
		if !c.inMessage {
			return 0, io.EOF
		}
		c.rerr = c.nextFrame(true)
	}
	if int64(len(p)) > c.remaining {
		p = p[:c.remaining]
	}
	n, err := c.br.Read(p)
	c.maskPos = maskBytes(c.mask, c.maskPos, p[:n])
	c.remaining -= int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		c.rerr = err
		c.readEnded()
	}
	if c.remaining == 0 && c.fin {
		c.inMessage = false
	}
	return n, err
}

// buffered reports whether more payload can be read without blocking: the
// current frame has payload bytes in the reader's buffer, or the message has
// ended and the next frame's header and at least one payload byte are
// buffered and it starts a data message. It reads nothing.
func (c *wsConn) buffered() bool {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	b := c.br.Buffered()
	switch {
	case c.rerr != nil || b == 0:
		return false
	case c.remaining > 0:
		return true
	case c.inMessage || b < 2:
		return false
	}
	h, _ := c.br.Peek(2)
	if op := h[0] & 0x0f; op != opBinary && op != opText {
		return false
	}
	hl := 6 // two bytes, the mask
	switch h[1] & 0x7f {
	case 0:
		return false
	case 126:
		hl += 2
	case 127:
		hl += 8
	}
	return b > hl
}

// nextFrame reads frame headers, handling control frames, until the start of
// a data frame: a continuation when cont, else the first of a message.
func (c *wsConn) nextFrame(cont bool) error {
	var h [14]byte
	for {
		if _, err := io.ReadFull(c.br, h[:2]); err != nil {
			return err
		}
		fin, op, masked := h[0]&0x80 != 0, h[0]&0x0f, h[1]&0x80 != 0
		if h[0]&0x70 != 0 || !masked {
			return c.fail(websocket.StatusProtocolError, "bad frame", errProtocol)
		}
		n := int64(h[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(c.br, h[2:4]); err != nil {
				return err
			}
			n = int64(binary.BigEndian.Uint16(h[2:4]))
		case 127:
			if _, err := io.ReadFull(c.br, h[2:10]); err != nil {
				return err
			}
			n = int64(binary.BigEndian.Uint64(h[2:10]))
			if n < 0 {
				return c.fail(websocket.StatusProtocolError, "bad frame length", errProtocol)
			}
		}
		if _, err := io.ReadFull(c.br, c.mask[:]); err != nil {
			return err
		}
		if op >= opClose {
			if !fin || n > 125 {
				return c.fail(websocket.StatusProtocolError, "bad control frame", errProtocol)
			}
			var p [125]byte
			if _, err := io.ReadFull(c.br, p[:n]); err != nil {
				return err
			}
			maskBytes(c.mask, 0, p[:n])
			if err := c.control(op, p[:n]); err != nil {
				return err
			}
			continue
		}
		switch {
		case op == opCont && !cont, op != opCont && cont, op != opCont && op != opBinary && op != opText:
			return c.fail(websocket.StatusProtocolError, "unexpected frame", errProtocol)
		}
		c.msgLen += n
		if c.limit > 0 && c.msgLen > c.limit {
			return c.fail(websocket.StatusMessageTooBig, "message too big", errTooBig)
		}
		c.remaining, c.fin, c.maskPos, c.inMessage = n, fin, 0, !fin || n > 0
		if n == 0 && fin {
			c.inMessage = false
		}
		return nil
	}
}

// control handles a ping, pong or close frame.
func (c *wsConn) control(op byte, p []byte) error {
	switch op {
	case opPing:
		return c.writeFrame(opPong, p)
	case opPong:
		select {
		case c.pong <- struct{}{}:
		default:
		}
		return nil
	case opClose:
		ce := &closeError{code: websocket.StatusNoStatusRcvd}
		if len(p) >= 2 {
			ce.code = websocket.StatusCode(binary.BigEndian.Uint16(p))
			ce.reason = string(p[2:])
			if !utf8.ValidString(ce.reason) {
				ce.reason = ""
			}
		}
		c.readEnded()
		if c.closeSent.CompareAndSwap(false, true) {
			// Echo the peer's close and end the connection.
			var b []byte
			if ce.code != websocket.StatusNoStatusRcvd {
				b = binary.BigEndian.AppendUint16(nil, uint16(ce.code))
			}
			c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_ = c.writeFrame(opClose, b)
			c.conn.Close()
		}
		return ce
	}
	return c.fail(websocket.StatusProtocolError, "unknown control frame", errProtocol)
}

// fail sends a close frame for a protocol violation and returns err.
func (c *wsConn) fail(code websocket.StatusCode, reason string, err error) error {
	if c.closeSent.CompareAndSwap(false, true) {
		c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = c.writeFrame(opClose, closePayload(code, reason))
	}
	c.conn.Close()
	return err
}

func closePayload(code websocket.StatusCode, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
	return append(b, reason...)
}

// header fills c.hdr for an unmasked frame and returns its length.
func (c *wsConn) header(op byte, n int) int {
	c.hdr[0] = 0x80 | op
	switch {
	case n < 126:
		c.hdr[1] = byte(n)
		return 2
	case n < 1<<16:
		c.hdr[1] = 126
		binary.BigEndian.PutUint16(c.hdr[2:], uint16(n))
		return 4
	}
	c.hdr[1] = 127
	binary.BigEndian.PutUint64(c.hdr[2:], uint64(n))
	return 10
}

// writeFrame writes one frame with one system call.
func (c *wsConn) writeFrame(op byte, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := c.header(op, len(p))
	if len(p) <= 512 {
		var b [522]byte
		n := copy(b[:], c.hdr[:h])
		n += copy(b[n:], p)
		_, err := c.conn.Write(b[:n])
		return err
	}
	bufs := net.Buffers{c.hdr[:h], p}
	_, err := bufs.WriteTo(c.conn)
	return err
}

// writeMessage sends p as one binary message.
func (c *wsConn) writeMessage(p []byte) error {
	if c.closeSent.Load() {
		return net.ErrClosed
	}
	return c.writeFrame(opBinary, p)
}

// spliceFrom sends the n bytes waiting in up as one binary message, moved
// by splice(2) inside the kernel. It needs both sides to be plain TCP.
func (c *wsConn) spliceFrom(up *net.TCPConn, n int64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := c.header(opBinary, int(n))
	if _, err := c.tcp.Write(c.hdr[:h]); err != nil {
		return &viewerErr{err}
	}
	k, err := c.tcp.ReadFrom(&io.LimitedReader{R: up, N: n})
	if err == nil && k < n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		// The frame is incomplete: the stream cannot go on either way.
		return &upstreamErr{err}
	}
	return nil
}

// ping sends a ping and waits for a pong (read by the reading goroutine).
func (c *wsConn) ping(ctx context.Context) error {
	select {
	case <-c.pong:
	default:
	}
	if err := c.writeFrame(opPing, []byte("mc")); err != nil {
		return err
	}
	select {
	case <-c.pong:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closeWait bounds the wait for the peer's close frame.
const closeWait = 2 * time.Second

// close sends a close frame and, when wait, waits (at most closeWait) for
// the peer's, read by the reading goroutine or, when none runs, here; then
// closes the socket.
func (c *wsConn) close(code websocket.StatusCode, reason string, wait bool) error {
	defer c.conn.Close()
	if !c.closeSent.CompareAndSwap(false, true) {
		return nil
	}
	deadline := time.Now().Add(closeWait)
	c.conn.SetWriteDeadline(deadline)
	if err := c.writeFrame(opClose, closePayload(code, reason)); err != nil || !wait {
		return err
	}
	if c.rmu.TryLock() {
		// No reader: read until the peer's close frame.
		defer c.rmu.Unlock()
		c.conn.SetReadDeadline(deadline)
		for c.rerr == nil {
			if c.remaining > 0 {
				_, c.rerr = c.br.Discard(int(c.remaining))
				c.remaining = 0
				continue
			}
			c.rerr = c.nextFrame(c.inMessage)
		}
		return nil
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-c.closeRecv:
	case <-t.C:
	}
	return nil
}

// closeNow closes the socket without a close frame.
func (c *wsConn) closeNow() error {
	c.closeSent.Store(true)
	return c.conn.Close()
}

// maskBytes XORs b with the masking key from position pos and returns the
// next position.
func maskBytes(key [4]byte, pos int, b []byte) int {
	if len(b) >= 16 {
		var k8 [8]byte
		for i := range k8 {
			k8[i] = key[(pos+i)&3]
		}
		kw := binary.LittleEndian.Uint64(k8[:])
		for len(b) >= 8 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^kw)
			b = b[8:]
		}
	}
	for i := range b {
		b[i] ^= key[pos&3]
		pos++
	}
	return pos & 3
}

// queuedBytes returns how many bytes wait in the socket's receive queue.
func queuedBytes(rc syscall.RawConn) (int, error) {
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	}); err != nil {
		return 0, err
	}
	return n, ierr
}
