package wsproto_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/master-controller/mc/internal/wsproto"
	"github.com/master-controller/mc/internal/wsproto/wstest"
)

// got is what one exchange produced: the messages the server's application
// read, the error its reading ended with, and the frames the client got.
type got struct {
	msgs   []string
	err    error
	frames []frame
}

// frame is a frame the server sent; close frames keep only the code.
type frame struct {
	op      byte
	payload string
}

func (f frame) String() string {
	if f.op == wsproto.OpClose {
		return fmt.Sprintf("close %s", f.payload)
	}
	return fmt.Sprintf("op %#x %q", f.op, f.payload)
}

func closeFrame(code wsproto.StatusCode) frame { return frame{wsproto.OpClose, fmt.Sprint(code)} }

// exchange sends in to a server Conn whose application reads every message
// whole, and collects what happened until the server closes the socket.
func exchange(t *testing.T, in []byte, limit int64) got {
	t.Helper()
	sc, cc := wstest.Pair(t)
	c := wsproto.NewConn(sc, bufio.NewReader(sc), "", limit)
	done := make(chan got, 1)
	go func() {
		var g got
		for {
			if g.err = c.Next(); g.err != nil {
				break
			}
			b, err := io.ReadAll(c)
			if err != nil {
				g.err = err
				break
			}
			g.msgs = append(g.msgs, string(b))
		}
		c.CloseNow()
		done <- g
	}()
	cc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := cc.Write(in); err != nil {
		t.Fatalf("write: %v", err)
	}
	frames, err := readFrames(cc)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	select {
	case g := <-done:
		g.frames = frames
		return g
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not end the connection")
		return got{}
	}
}

// readFrames reads the server's frames until it closes the socket, and
// fails on a masked server frame (RFC 6455 §5.1).
func readFrames(r io.Reader) ([]frame, error) {
	br := bufio.NewReader(r)
	var out []frame
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
				return out, nil
			}
			return out, err
		}
		if h[1]&0x80 != 0 {
			return out, errors.New("the server masked a frame")
		}
		if h[0]&0x70 != 0 {
			return out, errors.New("the server set reserved bits")
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			io.ReadFull(br, b[:])
			n = int(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			io.ReadFull(br, b[:])
			n = int(binary.BigEndian.Uint64(b[:]))
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			return out, err
		}
		f := frame{op: h[0] & 0x0f, payload: string(p)}
		if f.op == wsproto.OpClose {
			f.payload = ""
			if len(p) >= 2 {
				f.payload = fmt.Sprint(binary.BigEndian.Uint16(p))
			}
			if len(p) == 1 || len(p) > 125 || !utf8.Valid(p[min(2, len(p)):]) {
				return out, fmt.Errorf("bad close frame from the server: %q", p)
			}
		}
		out = append(out, f)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// TestConformance runs the cases of the Autobahn test suite's server
// sections that apply to a server without extensions, by number: framing
// (1, 2), reserved bits (3), opcodes (4), fragmentation (5), UTF-8 (6),
// close handshake (7), and the message limit (9).
func TestConformance(t *testing.T) {
	f := wstest.Frame
	const (
		cont, text, bin, cls, ping, pong = wsproto.OpCont, wsproto.OpText, wsproto.OpBinary,
			wsproto.OpClose, wsproto.OpPing, wsproto.OpPong
	)
	bye := f(cls, true, closePayload(1000, ""))
	echo := closeFrame(1000)
	long := strings.Repeat("0123456789abcdef", 8192) // 128 KiB: 64-bit length
	p125 := strings.Repeat("p", 125)
	tests := []struct {
		name       string
		in         []byte
		limit      int64
		wantMsgs   []string
		wantErr    error // errors.Is; nil: a *CloseError with wantClose's code
		wantFrames []frame
	}{
		// 1.x: data frames of every length encoding, empty included.
		{"1.1.1 empty text", cat(f(text, true, nil), bye), 0, []string{""}, nil, []frame{echo}},
		{"1.1.2 text 125", cat(f(text, true, []byte(p125)), bye), 0, []string{p125}, nil, []frame{echo}},
		{"1.1.3 text 126", cat(f(text, true, []byte(p125+"x")), bye), 0, []string{p125 + "x"}, nil, []frame{echo}},
		{"1.2.8 binary 64-bit length", cat(f(bin, true, []byte(long)), bye), 0, []string{long}, nil, []frame{echo}},
		{"1.2.1 empty binary", cat(f(bin, true, nil), bye), 0, []string{""}, nil, []frame{echo}},

		// 2.x: pings and pongs.
		{"2.1 ping empty", cat(f(ping, true, nil), bye), 0, nil, nil, []frame{{pong, ""}, echo}},
		{"2.3 ping binary payload", cat(f(ping, true, []byte{0, 0xff, 0xfe}), bye), 0, nil, nil, []frame{{pong, "\x00\xff\xfe"}, echo}},
		{"2.4 ping 125", cat(f(ping, true, []byte(p125)), bye), 0, nil, nil, []frame{{pong, p125}, echo}},
		{"2.5 ping 126", f(ping, true, []byte(p125+"x")), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"2.6 unsolicited pong", cat(f(pong, true, []byte("x")), f(bin, true, []byte("a")), bye), 0, []string{"a"}, nil, []frame{echo}},
		{"2.10 pings in a row", cat(f(ping, true, []byte("1")), f(ping, true, []byte("2")), bye), 0, nil, nil, []frame{{pong, "1"}, {pong, "2"}, echo}},

		// 3.x: reserved bits.
		{"3.1 RSV1", f(text|0x40, true, []byte("x")), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"3.2 RSV2 after a message", cat(f(text, true, []byte("a")), f(text|0x20, true, []byte("x"))), 0, []string{"a"}, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"3.4 RSV3 on a ping", f(ping|0x10, true, nil), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"3.7 RSV on a close", f(cls|0x70, true, nil), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},

		// 4.x: reserved opcodes.
		{"4.1.1 opcode 3", f(3, true, nil), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"4.1.5 opcode 7 after a message", cat(f(bin, true, []byte("a")), f(7, true, []byte("x"))), 0, []string{"a"}, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"4.2.1 opcode 11", f(0xB, true, nil), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"4.2.5 opcode 15", f(0xF, true, []byte("x")), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},

		// 5.x: fragmentation.
		{"5.1 fragmented ping", f(ping, false, []byte("x")), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"5.3 text in two fragments", cat(f(text, false, []byte("frag")), f(cont, true, []byte("ment")), bye), 0, []string{"fragment"}, nil, []frame{echo}},
		{"5.5 binary in three fragments", cat(f(bin, false, []byte("a")), f(cont, false, []byte("b")), f(cont, true, []byte("c")), bye), 0, []string{"abc"}, nil, []frame{echo}},
		{"5.6 ping inside fragments", cat(f(text, false, []byte("fr")), f(ping, true, []byte("p")), f(cont, true, []byte("ag")), bye), 0, []string{"frag"}, nil, []frame{{pong, "p"}, echo}},
		{"5.8 pong inside fragments", cat(f(bin, false, []byte("fr")), f(pong, true, nil), f(cont, true, []byte("ag")), bye), 0, []string{"frag"}, nil, []frame{echo}},
		{"5.9 continuation first", f(cont, true, []byte("x")), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"5.15 new message inside a message", cat(f(text, false, []byte("a")), f(text, true, []byte("b"))), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"5.18 empty fragments", cat(f(text, false, nil), f(cont, false, nil), f(cont, true, nil), bye), 0, []string{""}, nil, []frame{echo}},
		{"5.x close inside fragments", cat(f(bin, false, []byte("a")), bye), 0, nil, nil, []frame{echo}},

		// 6.x: UTF-8 in text messages, failing fast.
		{"6.2.3 valid UTF-8, split inside a character", cat(f(text, false, []byte("Hello-\xc2")), f(cont, false, []byte("\xb5@\xc3\x9f\xc3")), f(cont, true, []byte("\xb6\xc3\xa4")), bye), 0, []string{"Hello-µ@ßöä"}, nil, []frame{echo}},
		{"6.3.1 invalid in one frame", f(text, true, []byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")), 0, nil, wsproto.ErrInvalidUTF8, []frame{closeFrame(1007)}},
		{"6.4.1 fail fast in the first fragment", f(text, false, []byte("\xce\xba\xf4\x90\x80\x80")), 0, nil, wsproto.ErrInvalidUTF8, []frame{closeFrame(1007)}},
		{"6.4.3 fail fast on a bad prefix", f(text, false, []byte("\xce\xba\xf4\x90")), 0, nil, wsproto.ErrInvalidUTF8, []frame{closeFrame(1007)}},
		{"6.6.x invalid across fragments", cat(f(text, false, []byte("\xce")), f(cont, true, []byte("A"))), 0, nil, wsproto.ErrInvalidUTF8, []frame{closeFrame(1007)}},
		{"6.8 ends inside a character", f(text, true, []byte("ok\xe2\x82")), 0, nil, wsproto.ErrInvalidUTF8, []frame{closeFrame(1007)}},
		{"6.9 surrogate", f(text, true, []byte("\xed\xa0\x80")), 0, nil, wsproto.ErrInvalidUTF8, []frame{closeFrame(1007)}},
		{"6.10 overlong", f(text, true, []byte("\xc0\xaf")), 0, nil, wsproto.ErrInvalidUTF8, []frame{closeFrame(1007)}},
		{"6.11 past U+10FFFF", f(text, true, []byte("\xf4\x90\x80\x80")), 0, nil, wsproto.ErrInvalidUTF8, []frame{closeFrame(1007)}},
		{"6.x U+FFFD is valid", cat(f(text, true, []byte("\xef\xbf\xbd")), bye), 0, []string{"\ufffd"}, nil, []frame{echo}},
		{"6.x binary is not checked", cat(f(bin, true, []byte("\xff\xfe")), bye), 0, []string{"\xff\xfe"}, nil, []frame{echo}},

		// 7.x: the close handshake.
		{"7.1.1 echo after a message", cat(f(text, true, []byte("a")), bye), 0, []string{"a"}, nil, []frame{echo}},
		{"7.1.5 nothing after close", cat(bye, f(text, true, []byte("after"))), 0, nil, nil, []frame{echo}},
		{"7.3.1 empty close", f(cls, true, nil), 0, nil, nil, []frame{{cls, ""}}},
		{"7.3.2 close of one byte", f(cls, true, []byte{3}), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"7.3.5 close 125", f(cls, true, closePayload(1000, strings.Repeat("r", 123))), 0, nil, nil, []frame{echo}},
		{"7.3.6 close 126", f(cls, true, closePayload(1000, strings.Repeat("r", 124))), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"7.5.1 close reason not UTF-8", f(cls, true, closePayload(1000, "\xce\xba\xed\xa0\x80")), 0, nil, wsproto.ErrInvalidUTF8, []frame{closeFrame(1007)}},
		{"7.7.x close 3000", f(cls, true, closePayload(3000, "")), 0, nil, nil, []frame{closeFrame(3000)}},
		{"7.7.x close 4999", f(cls, true, closePayload(4999, "app")), 0, nil, nil, []frame{closeFrame(4999)}},
		{"7.7.x close 1013", f(cls, true, closePayload(1013, "")), 0, nil, nil, []frame{closeFrame(1013)}},

		// 9.x: the message limit.
		{"9 too big", f(bin, true, make([]byte, 100)), 99, nil, wsproto.ErrTooBig, []frame{closeFrame(1009)}},
		{"9 too big in pieces", cat(f(bin, false, make([]byte, 60)), f(cont, true, make([]byte, 60))), 100, nil, wsproto.ErrTooBig, []frame{closeFrame(1009)}},
		{"9 at the limit", cat(f(bin, true, make([]byte, 100)), bye), 100, []string{string(make([]byte, 100))}, nil, []frame{echo}},

		// Masking: a client frame must be masked.
		{"unmasked", wstest.Unmasked(bin, true, []byte("x")), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"unmasked ping", wstest.Unmasked(ping, true, nil), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
		{"64-bit length with the top bit", []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}},
	}
	// 7.9.x: close codes a peer may not send.
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		tests = append(tests, struct {
			name       string
			in         []byte
			limit      int64
			wantMsgs   []string
			wantErr    error
			wantFrames []frame
		}{fmt.Sprintf("7.9.x close code %d", code), f(cls, true, closePayload(code, "")), 0, nil, wsproto.ErrProtocol, []frame{closeFrame(1002)}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := exchange(t, tt.in, tt.limit)
			if !slices.Equal(g.msgs, tt.wantMsgs) {
				t.Errorf("got messages %.40q, want %.40q", g.msgs, tt.wantMsgs)
			}
			if tt.wantErr != nil {
				if !errors.Is(g.err, tt.wantErr) {
					t.Errorf("got error %v, want %v", g.err, tt.wantErr)
				}
			} else {
				var ce *wsproto.CloseError
				if !errors.As(g.err, &ce) {
					t.Errorf("got error %v, want the peer's close", g.err)
				}
			}
			if !slices.Equal(g.frames, tt.wantFrames) {
				t.Errorf("got frames %.60v, want %.60v", g.frames, tt.wantFrames)
			}
		})
	}
}

// TestCloseHandshake checks the server's side of a close it starts: its
// close frame carries code and reason, it waits for the peer's close frame
// (read by a running reader, or by Close itself), and it does not wait for
// a peer that does not answer when told not to.
func TestCloseHandshake(t *testing.T) {
	for _, reader := range []bool{true, false} {
		t.Run(fmt.Sprintf("reader %v", reader), func(t *testing.T) {
			sc, cc := wstest.Pair(t)
			c := wsproto.NewConn(sc, bufio.NewReader(sc), "", 0)
			readErr := make(chan error, 1)
			if reader {
				go func() {
					for {
						if err := c.Next(); err != nil {
							readErr <- err
							return
						}
						io.Copy(io.Discard, c)
					}
				}()
			}
			closed := make(chan error, 1)
			go func() { closed <- c.Close(4408, "the viewer stopped answering pings", true) }()
			cc.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(cc)
			h := make([]byte, 2)
			if _, err := io.ReadFull(br, h); err != nil {
				t.Fatal(err)
			}
			p := make([]byte, h[1])
			if _, err := io.ReadFull(br, p); err != nil {
				t.Fatal(err)
			}
			if h[0] != 0x80|wsproto.OpClose || binary.BigEndian.Uint16(p) != 4408 || string(p[2:]) != "the viewer stopped answering pings" {
				t.Fatalf("got frame %x %q, want close 4408 with its reason", h, p)
			}
			select {
			case err := <-closed:
				t.Fatalf("Close returned (%v) before the peer's close frame", err)
			default:
			}
			cc.Write(cat(wstest.Frame(wsproto.OpBinary, true, []byte("late")), wstest.Frame(wsproto.OpClose, true, closePayload(4408, ""))))
			if err := <-closed; err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("got %v after the close handshake, want EOF", err)
			}
			if reader {
				var ce *wsproto.CloseError
				if err := <-readErr; !errors.As(err, &ce) || ce.Code != 4408 {
					t.Errorf("the reader ended with %v, want the peer's close 4408", err)
				}
			}
		})
	}
	t.Run("no wait", func(t *testing.T) {
		sc, cc := wstest.Pair(t)
		c := wsproto.NewConn(sc, bufio.NewReader(sc), "", 0)
		if err := c.Close(4408, "gone", false); err != nil {
			t.Fatal(err)
		}
		cc.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(cc)
		if err != nil || len(b) < 4 || b[0] != 0x80|wsproto.OpClose {
			t.Fatalf("got %x, %v; want a close frame and EOF", b, err)
		}
	})
}

// TestWriteAfterClose checks that no data frame follows a close frame.
func TestWriteAfterClose(t *testing.T) {
	sc, _ := wstest.Pair(t)
	c := wsproto.NewConn(sc, bufio.NewReader(sc), "", 0)
	c.Close(wsproto.StatusNormalClosure, "", false)
	if err := c.WriteMessage([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("got %v, want net.ErrClosed", err)
	}
}
