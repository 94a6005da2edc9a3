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

	"github.com/master-controller/mc/internal/wsproto"
	"github.com/master-controller/mc/internal/wsproto/wstest"
)

func newTestConn(data []byte, limit int64) *wsproto.Conn {
	return wsproto.NewConn(&writesConn{}, bufio.NewReader(bytes.NewReader(data)), "", limit)
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
		{"buffered messages, one write", cat(wstest.Frame(wsproto.OpBinary, true, []byte("E")), wstest.Frame(wsproto.OpBinary, true, []byte("x")), wstest.Frame(wsproto.OpText, true, []byte("yz"))), 64, []string{"Exyz"}},
		{"a ping ends the batch", cat(wstest.Frame(wsproto.OpBinary, true, []byte("a")), wstest.Frame(wsproto.OpPing, true, nil), wstest.Frame(wsproto.OpBinary, true, []byte("b"))), 64, []string{"a", "b"}},
		{"an empty message ends the batch", cat(wstest.Frame(wsproto.OpBinary, true, []byte("a")), wstest.Frame(wsproto.OpBinary, true, nil), wstest.Frame(wsproto.OpBinary, true, []byte("b"))), 64, []string{"a", "b"}},
		{"a continuation ends the batch", cat(wstest.Frame(wsproto.OpBinary, false, []byte("a")), wstest.Frame(wsproto.OpCont, true, []byte("b")), wstest.Frame(wsproto.OpBinary, true, []byte("c"))), 64, []string{"a", "bc"}},
		{"a full buffer is written", cat(wstest.Frame(wsproto.OpBinary, true, []byte("abcdef")), wstest.Frame(wsproto.OpBinary, true, []byte("gh"))), 4, []string{"abcd", "efgh"}},
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
