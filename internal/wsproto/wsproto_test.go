package wsproto

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"
	"unicode/utf8"
)

// discardConn is a net.Conn whose writes go nowhere and whose reads fail.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error)       { return len(p), nil }
func (discardConn) Read(p []byte) (int, error)        { return 0, io.EOF }
func (discardConn) Close() error                      { return nil }
func (discardConn) SetWriteDeadline(time.Time) error  { return nil }
func (discardConn) SetReadDeadline(t time.Time) error { return nil }

func TestMask(t *testing.T) {
	key := [4]byte{0xde, 0xad, 0xbe, 0xef}
	for n := 0; n < 70; n++ {
		for start := 0; start < 4; start++ {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(i)
			}
			got := bytes.Clone(p)
			pos := Mask(key, start, got)
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

// TestUTF8Pieces checks the incremental UTF-8 check against utf8.Valid for
// every way of cutting a text into pieces at random.
func TestUTF8Pieces(t *testing.T) {
	texts := []string{"", "ascii", "Hello-µ@ßöä", "κόσμε", "𝄞 music", "\ufffd\U0010ffff",
		"\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80", "ok\xe2\x82", "\xce", "\xff", "a\x80b", "\xe0\x80\x80", "\xf0\x8f\xbf\xbf"}
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range texts {
		for range 200 {
			var st utf8State
			ok := true
			b := []byte(s)
			for len(b) > 0 && ok {
				k := r.IntN(len(b) + 1)
				ok = st.feed(b[:k])
				b = b[k:]
			}
			ok = ok && st.end()
			if want := utf8.ValidString(s); ok != want {
				t.Fatalf("%q: got valid %v, want %v", s, ok, want)
			}
		}
	}
}

// FuzzUTF8 compares the incremental check with utf8.Valid.
func FuzzUTF8(f *testing.F) {
	f.Add([]byte("κόσμε"), uint8(3))
	f.Add([]byte("\xed\xa0\x80"), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, cut uint8) {
		var st utf8State
		k := min(int(cut), len(b))
		ok := st.feed(b[:k]) && st.feed(b[k:]) && st.end()
		if ok != utf8.Valid(b) {
			t.Fatalf("%q cut at %d: got valid %v, want %v", b, k, ok, !ok)
		}
	})
}

// FuzzFrames feeds arbitrary client bytes to the frame reader: it must not
// panic or hang, or return more payload than it was given.
func FuzzFrames(f *testing.F) {
	f.Add([]byte{0x82, 0x85, 1, 2, 3, 4, 'h' ^ 1, 'e' ^ 2, 'l' ^ 3, 'l' ^ 4, 'o' ^ 1})
	f.Add([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8})
	f.Add([]byte{0x81, 0x82, 0, 0, 0, 0, 0xce, 0xba})
	f.Add([]byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		c := NewConn(discardConn{}, bufio.NewReader(bytes.NewReader(in)), "", 1<<20)
		total := 0
		for c.Next() == nil {
			b, err := io.ReadAll(c)
			total += len(b)
			if err != nil {
				break
			}
		}
		if total > len(in) {
			t.Fatalf("read %d payload bytes from %d input bytes", total, len(in))
		}
	})
}
