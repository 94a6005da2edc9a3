package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// discardConn is a net.Conn whose writes go nowhere and whose reads fail.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error)       { return len(p), nil }
func (discardConn) Read(p []byte) (int, error)        { return 0, io.EOF }
func (discardConn) Close() error                      { return nil }
func (discardConn) SetWriteDeadline(time.Time) error  { return nil }
func (discardConn) SetReadDeadline(t time.Time) error { return nil }

func frame(op byte, fin bool, payload []byte) []byte {
	b := []byte{op}
	if fin {
		b[0] |= 0x80
	}
	key := [4]byte{1, 2, 3, 4}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	b = append(b, key[:]...)
	p := bytes.Clone(payload)
	maskBytes(key, 0, p)
	return append(b, p...)
}

func readAll(c *wsConn) ([][]byte, error) {
	var msgs [][]byte
	for {
		if err := c.next(); err != nil {
			return msgs, err
		}
		b, err := io.ReadAll(c)
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, b)
	}
}

func newTestConn(data []byte, limit int64) *wsConn {
	return &wsConn{conn: discardConn{}, br: bufio.NewReader(bytes.NewReader(data)), limit: limit,
		closeRecv: make(chan struct{}), pong: make(chan struct{}, 1)}
}

func TestFrames(t *testing.T) {
	long := bytes.Repeat([]byte("0123456789"), 10000)
	var in []byte
	in = append(in, frame(opBinary, true, []byte("one"))...)
	in = append(in, frame(opBinary, false, []byte("tw"))...)
	in = append(in, frame(opPing, true, []byte("p"))...)
	in = append(in, frame(opCont, true, []byte("o"))...)
	in = append(in, frame(opBinary, true, nil)...)
	in = append(in, frame(opBinary, true, long)...)
	in = append(in, frame(opClose, true, []byte{0x03, 0xe8, 'b', 'y', 'e'})...)
	msgs, err := readAll(newTestConn(in, 0))
	ce, ok := err.(*closeError)
	if !ok || ce.code != 1000 || ce.reason != "bye" {
		t.Fatalf("got error %v, want close 1000 bye", err)
	}
	want := [][]byte{[]byte("one"), []byte("two"), {}, long}
	if len(msgs) != len(want) {
		t.Fatalf("got %d messages, want %d", len(msgs), len(want))
	}
	for i := range want {
		if !bytes.Equal(msgs[i], want[i]) {
			t.Errorf("message %d: got %d bytes, want %d", i, len(msgs[i]), len(want[i]))
		}
	}
}

func TestFrameErrors(t *testing.T) {
	unmasked := []byte{0x82, 0x01, 'x'}
	tests := []struct {
		name  string
		in    []byte
		limit int64
		want  error
	}{
		{"unmasked", unmasked, 0, errProtocol},
		{"rsv bits", append([]byte{0xc2}, frame(opBinary, true, nil)[1:]...), 0, errProtocol},
		{"continuation first", frame(opCont, true, []byte("x")), 0, errProtocol},
		{"new message inside one", append(frame(opBinary, false, []byte("x")), frame(opBinary, true, []byte("y"))...), 0, errProtocol},
		{"long ping", frame(opPing, true, make([]byte, 126)), 0, errProtocol},
		{"too big", frame(opBinary, true, make([]byte, 100)), 99, errTooBig},
		{"too big in pieces", append(frame(opBinary, false, make([]byte, 60)), frame(opCont, true, make([]byte, 60))...), 100, errTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readAll(newTestConn(tt.in, tt.limit))
			if err != tt.want {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestMaskBytes(t *testing.T) {
	key := [4]byte{0xde, 0xad, 0xbe, 0xef}
	for n := 0; n < 70; n++ {
		for start := 0; start < 4; start++ {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(i)
			}
			got := bytes.Clone(p)
			pos := maskBytes(key, start, got)
			for i := range p {
				if got[i] != p[i]^key[(start+i)&3] {
					t.Fatalf("n=%d start=%d: byte %d wrong", n, start, i)
				}
			}
			if want := (start + n) & 3; pos != want {
				t.Fatalf("got pos %d, want %d", pos, want)
			}
		}
	}
}

// FuzzFrames feeds arbitrary client bytes to the frame reader: it must not
// panic or hang.
func FuzzFrames(f *testing.F) {
	f.Add(frame(opBinary, true, []byte("hello")))
	f.Add(append(frame(opBinary, false, []byte("a")), frame(opCont, true, []byte("b"))...))
	f.Add(frame(opClose, true, []byte{0x03, 0xe8}))
	f.Add(frame(opPing, true, nil))
	f.Add([]byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		msgs, _ := readAll(newTestConn(in, 1<<20))
		total := 0
		for _, m := range msgs {
			total += len(m)
		}
		if total > len(in) {
			t.Fatalf("read %d payload bytes from %d input bytes", total, len(in))
		}
	})
}

// writesConn records each Write.
type writesConn struct {
	net.Conn
	writes []string
}

func (c *writesConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, string(p))
	return len(p), nil
}

func TestCopyToUpstreamCoalesces(t *testing.T) {
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	tests := []struct {
		name    string
		in      []byte
		bufSize int
		want    []string
	}{
		{"buffered messages, one write", cat(frame(opBinary, true, []byte("E")), frame(opBinary, true, []byte("x")), frame(opText, true, []byte("yz"))), 64, []string{"Exyz"}},
		{"a ping ends the batch", cat(frame(opBinary, true, []byte("a")), frame(opPing, true, nil), frame(opBinary, true, []byte("b"))), 64, []string{"a", "b"}},
		{"an empty message ends the batch", cat(frame(opBinary, true, []byte("a")), frame(opBinary, true, nil), frame(opBinary, true, []byte("b"))), 64, []string{"a", "b"}},
		{"a continuation ends the batch", cat(frame(opBinary, false, []byte("a")), frame(opCont, true, []byte("b")), frame(opBinary, true, []byte("c"))), 64, []string{"a", "bc"}},
		{"a full buffer is written", cat(frame(opBinary, true, []byte("abcdef")), frame(opBinary, true, []byte("gh"))), 4, []string{"abcd", "efgh"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestConn(tt.in, 0)
			up := &writesConn{}
			var n atomic.Int64
			err := copyToUpstream(&wsStream{c: c}, up, newBufPool(tt.bufSize), &n, func(int) {})
			var ve *viewerErr
			if !errors.As(err, &ve) || !errors.Is(err, io.EOF) {
				t.Fatalf("got error %v, want a viewer EOF", err)
			}
			if !slices.Equal(up.writes, tt.want) {
				t.Fatalf("got writes %q, want %q", up.writes, tt.want)
			}
		})
	}
}
