// Package wsproto is the server side of a WebSocket (RFC 6455), lean on
// purpose: no compression, no buffer of its own beyond the 4 KiB reader left
// by the HTTP server, one writev per message, and splice(2) from a TCP
// source into a TCP client for bulk bytes toward the client.
//
// The gateway's bridge was first built on github.com/coder/websocket and
// measured syscall-bound (about 1.4–1.9 CPU s/GiB, no better than
// websockify); with this layer and splice it measured 0.5–0.8 CPU s/GiB
// (bench/). coder/websocket remains the client in tests and in the
// benchmark.
//
// It enforces what RFC 6455 requires of a server, and what the Autobahn
// test suite checks: client frames masked, reserved bits and opcodes
// refused, control frames at most 125 bytes and never fragmented (and
// answered inside a fragmented message), continuation frames only inside a
// message, text messages valid UTF-8 (else close 1007, failing fast inside a
// message), close frames with a valid code and a UTF-8 reason, and a close
// handshake in both directions (conformance_test.go).
package wsproto

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// StatusCode is a close frame's status code (RFC 6455 §7.4).
type StatusCode uint16

// The status codes this package sends or interprets.
const (
	StatusNormalClosure  StatusCode = 1000
	StatusGoingAway      StatusCode = 1001
	StatusProtocolError  StatusCode = 1002
	StatusNoStatusRcvd   StatusCode = 1005 // never sent: the peer's close frame had no code
	StatusInvalidPayload StatusCode = 1007
	StatusMessageTooBig  StatusCode = 1009
	StatusInternalError  StatusCode = 1011
	StatusTryAgainLater  StatusCode = 1013
	statusFirstApp       StatusCode = 3000
	statusLastApp        StatusCode = 4999
)

// validReceived reports whether a peer may send code in a close frame
// (RFC 6455 §7.4.1 and the IANA registry): 1000–1003, 1007–1014 and
// 3000–4999.
func validReceived(code StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	}
	return code >= statusFirstApp && code <= statusLastApp
}

// Opcodes (RFC 6455 §5.2).
const (
	OpCont   = 0x0
	OpText   = 0x1
	OpBinary = 0x2
	OpClose  = 0x8
	OpPing   = 0x9
	OpPong   = 0xA
)

// CloseError is the close frame received from the peer; Read and Next
// return it once the peer has closed (the close has been answered).
type CloseError struct {
	Code   StatusCode // StatusNoStatusRcvd when the frame had no code
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket closed by peer: %d %q", e.Code, e.Reason)
}

var (
	// ErrProtocol is returned after a protocol violation by the peer; the
	// close frame (1002, or 1007 for ErrInvalidUTF8) has been sent.
	ErrProtocol = errors.New("websocket protocol error")
	// ErrInvalidUTF8 is returned for a text message or a close reason that
	// is not UTF-8; close 1007 has been sent. errors.Is(err, ErrProtocol)
	// holds too.
	ErrInvalidUTF8 = fmt.Errorf("%w: invalid UTF-8", ErrProtocol)
	// ErrTooBig is returned for a message over the limit; close 1009 has
	// been sent.
	ErrTooBig = errors.New("websocket message too big")
	// ErrIncompleteFrame wraps the error of SpliceFrom after the frame
	// header was sent: the source failed (or the client did) mid-frame.
	ErrIncompleteFrame = errors.New("websocket frame incomplete")
)

// Conn is one server-side WebSocket. One goroutine reads (Next and Read);
// any goroutine writes.
type Conn struct {
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
	text      bool      // the current message is text: its payload is checked
	utf8      utf8State // the text message's incomplete last rune
	rerr      error     // sticky read error

	// Writer state.
	wmu sync.Mutex
	hdr [10]byte

	closeSent atomic.Bool
	closeOnce sync.Once
	closeRecv chan struct{} // closed when the peer's close frame (or a read error) has been read
	pong      chan struct{}
}

// Next waits for the next data message (skipping what is left of the
// current one) and positions Read at its start. It needs no buffer, so a
// connection idles without one.
func (c *Conn) Next() error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rerr == nil {
		c.rerr = c.skip()
	}
	if c.rerr == nil {
		c.msgLen = 0
		c.rerr = c.nextFrame(false)
	}
	if c.rerr != nil {
		c.readEnded()
	}
	return c.rerr
}

// skip reads and drops the rest of the current message (a text message is
// still checked).
func (c *Conn) skip() error {
	for c.inMessage {
		switch {
		case c.remaining > 0 && c.text:
			if err := c.discardText(); err != nil {
				return err
			}
		case c.remaining > 0:
			k, err := c.br.Discard(int(min(c.remaining, 1<<30)))
			c.remaining -= int64(k)
			if err != nil {
				return err
			}
		case c.fin:
			if err := c.endMessage(); err != nil {
				return err
			}
		default:
			if err := c.nextFrame(true); err != nil {
				return err
			}
		}
	}
	return nil
}

// discardText reads and checks the rest of the current text frame.
func (c *Conn) discardText() error {
	var buf [512]byte
	for c.remaining > 0 {
		n, err := c.br.Read(buf[:min(c.remaining, int64(len(buf)))])
		c.maskPos = Mask(c.mask, c.maskPos, buf[:n])
		c.remaining -= int64(n)
		if !c.utf8.feed(buf[:n]) {
			return c.fail(StatusInvalidPayload, "invalid UTF-8 in text message", ErrInvalidUTF8)
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// endMessage ends a message whose last byte has been read: a text message
// must not end inside a character.
func (c *Conn) endMessage() error {
	c.inMessage = false
	if c.text && !c.utf8.end() {
		return c.fail(StatusInvalidPayload, "invalid UTF-8 in text message", ErrInvalidUTF8)
	}
	return nil
}

// readEnded tells a waiting close that nothing more will be read.
func (c *Conn) readEnded() { c.closeOnce.Do(func() { close(c.closeRecv) }) }

// Read reads the current message's payload; io.EOF at its end.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for c.remaining == 0 {
		switch {
		case c.rerr != nil:
			c.readEnded()
			return 0, c.rerr
		case !c.inMessage:
			return 0, io.EOF
		case c.fin:
			c.rerr = c.endMessage()
		default:
			c.rerr = c.nextFrame(true)
		}
	}
	if int64(len(p)) > c.remaining {
		p = p[:c.remaining]
	}
	n, err := c.br.Read(p)
	c.maskPos = Mask(c.mask, c.maskPos, p[:n])
	c.remaining -= int64(n)
	if c.text && !c.utf8.feed(p[:n]) {
		c.rerr = c.fail(StatusInvalidPayload, "invalid UTF-8 in text message", ErrInvalidUTF8)
		c.readEnded()
		return 0, c.rerr
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		c.rerr = err
		c.readEnded()
		return n, err
	}
	if c.remaining == 0 && c.fin {
		// The message's last byte: end it now, so that Buffered looks at
		// the next frame.
		if err := c.endMessage(); err != nil {
			c.rerr = err
			c.readEnded()
			return 0, err
		}
	}
	return n, nil
}

// Buffered reports whether more payload can be read without blocking: the
// current frame has payload bytes in the reader's buffer, or the message has
// ended and the next frame's header and at least one payload byte are
// buffered and it starts a data message. It reads nothing.
func (c *Conn) Buffered() bool {
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
	if op := h[0] & 0x0f; op != OpBinary && op != OpText {
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
func (c *Conn) nextFrame(cont bool) error {
	var h [14]byte
	for {
		if _, err := io.ReadFull(c.br, h[:2]); err != nil {
			return err
		}
		fin, op, masked := h[0]&0x80 != 0, h[0]&0x0f, h[1]&0x80 != 0
		if h[0]&0x70 != 0 {
			return c.fail(StatusProtocolError, "reserved bits set", ErrProtocol)
		}
		if !masked {
			return c.fail(StatusProtocolError, "client frame not masked", ErrProtocol)
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
				return c.fail(StatusProtocolError, "bad frame length", ErrProtocol)
			}
		}
		if _, err := io.ReadFull(c.br, c.mask[:]); err != nil {
			return err
		}
		if op >= OpClose {
			if !fin || n > 125 {
				return c.fail(StatusProtocolError, "bad control frame", ErrProtocol)
			}
			var p [125]byte
			if _, err := io.ReadFull(c.br, p[:n]); err != nil {
				return err
			}
			Mask(c.mask, 0, p[:n])
			if err := c.control(op, p[:n]); err != nil {
				return err
			}
			continue
		}
		switch {
		case op == OpCont && !cont, op != OpCont && cont, op != OpCont && op != OpBinary && op != OpText:
			return c.fail(StatusProtocolError, "unexpected frame", ErrProtocol)
		}
		c.msgLen += n
		if c.limit > 0 && c.msgLen > c.limit {
			return c.fail(StatusMessageTooBig, "message too big", ErrTooBig)
		}
		if !cont {
			c.text = op == OpText
			c.utf8 = utf8State{}
		}
		// An empty last frame leaves the message open until Read (or
		// skip) ends it with endMessage.
		c.remaining, c.fin, c.maskPos, c.inMessage = n, fin, 0, true
		return nil
	}
}

// control handles a ping, pong or close frame.
func (c *Conn) control(op byte, p []byte) error {
	switch op {
	case OpPing:
		return c.writeFrame(OpPong, p)
	case OpPong:
		select {
		case c.pong <- struct{}{}:
		default:
		}
		return nil
	case OpClose:
		ce := &CloseError{Code: StatusNoStatusRcvd}
		switch {
		case len(p) == 1:
			return c.fail(StatusProtocolError, "close frame of one byte", ErrProtocol)
		case len(p) >= 2:
			ce.Code = StatusCode(binary.BigEndian.Uint16(p))
			if !validReceived(ce.Code) {
				return c.fail(StatusProtocolError, "invalid close code", ErrProtocol)
			}
			if !utf8.Valid(p[2:]) {
				return c.fail(StatusInvalidPayload, "close reason is not UTF-8", ErrInvalidUTF8)
			}
			ce.Reason = string(p[2:])
		}
		c.readEnded()
		if c.closeSent.CompareAndSwap(false, true) {
			// Echo the peer's close and end the connection.
			var b []byte
			if ce.Code != StatusNoStatusRcvd {
				b = binary.BigEndian.AppendUint16(nil, uint16(ce.Code))
			}
			c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_ = c.writeFrame(OpClose, b)
			c.conn.Close()
		}
		return ce
	}
	return c.fail(StatusProtocolError, "unknown control frame", ErrProtocol)
}

// fail sends a close frame for a protocol violation and returns err.
func (c *Conn) fail(code StatusCode, reason string, err error) error {
	if c.closeSent.CompareAndSwap(false, true) {
		c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = c.writeFrame(OpClose, closePayload(code, reason))
	}
	c.conn.Close()
	return err
}

// closePayload is a close frame's payload: code and reason, the reason cut
// to fit 125 bytes without splitting a character.
func closePayload(code StatusCode, reason string) []byte {
	if len(reason) > 123 {
		cut := 123
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
	return append(b, reason...)
}

// header fills c.hdr for an unmasked frame and returns its length.
func (c *Conn) header(op byte, n int) int {
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
func (c *Conn) writeFrame(op byte, p []byte) error {
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

// WriteMessage sends p as one binary message. After a close frame it
// returns net.ErrClosed.
func (c *Conn) WriteMessage(p []byte) error {
	if c.closeSent.Load() {
		return net.ErrClosed
	}
	return c.writeFrame(OpBinary, p)
}

// SpliceFrom sends the n bytes waiting in src as one binary message, moved
// by splice(2) inside the kernel. The connection must be plain TCP (TCP is
// not nil). An error after the frame's header was sent wraps
// ErrIncompleteFrame: the stream cannot go on either way.
func (c *Conn) SpliceFrom(src *net.TCPConn, n int64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := c.header(OpBinary, int(n))
	if _, err := c.tcp.Write(c.hdr[:h]); err != nil {
		return err
	}
	k, err := c.tcp.ReadFrom(&io.LimitedReader{R: src, N: n})
	if err == nil && k < n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrIncompleteFrame, err)
	}
	return nil
}

// Ping sends a ping and waits for a pong (read by the reading goroutine)
// or the end of ctx.
func (c *Conn) Ping(ctx context.Context) error {
	select {
	case <-c.pong:
	default:
	}
	if err := c.writeFrame(OpPing, []byte("mc")); err != nil {
		return err
	}
	select {
	case <-c.pong:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// CloseWait bounds the wait for the peer's close frame.
const CloseWait = 2 * time.Second

// Close sends a close frame with code and reason (cut to fit) and, when
// wait, waits (at most CloseWait) for the peer's, read by the reading
// goroutine or, when none runs, here; then closes the socket. After a close
// frame was sent (by Close or by a protocol failure) it only closes.
func (c *Conn) Close(code StatusCode, reason string, wait bool) error {
	defer c.conn.Close()
	if !c.closeSent.CompareAndSwap(false, true) {
		return nil
	}
	deadline := time.Now().Add(CloseWait)
	c.conn.SetWriteDeadline(deadline)
	if err := c.writeFrame(OpClose, closePayload(code, reason)); err != nil || !wait {
		return err
	}
	if c.rmu.TryLock() {
		// No reader: read until the peer's close frame.
		defer c.rmu.Unlock()
		c.conn.SetReadDeadline(deadline)
		for c.rerr == nil {
			if c.inMessage {
				c.rerr = c.skip()
				continue
			}
			c.rerr = c.nextFrame(false)
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

// CloseNow closes the socket without a close frame.
func (c *Conn) CloseNow() error {
	c.closeSent.Store(true)
	return c.conn.Close()
}

// Mask XORs b with the masking key from position pos and returns the next
// position (RFC 6455 §5.3).
func Mask(key [4]byte, pos int, b []byte) int {
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
