package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/master-controller/mc/internal/wsproto"
	"golang.org/x/sys/unix"
)

// bufPool hands out copy buffers of one size. A bridge holds a buffer only
// while bytes are in flight, never while it waits for them, so an idle
// connection costs no buffer.
type bufPool struct {
	p sync.Pool
}

func newBufPool(size int) *bufPool {
	bp := &bufPool{}
	bp.p.New = func() any { b := make([]byte, size); return &b }
	return bp
}

func (p *bufPool) get() *[]byte  { return p.p.Get().(*[]byte) }
func (p *bufPool) put(b *[]byte) { p.p.Put(b) }

// upstreamErr marks an error of the TCP side (the machine, the target).
type upstreamErr struct{ err error }

func (e *upstreamErr) Error() string { return "upstream: " + e.err.Error() }
func (e *upstreamErr) Unwrap() error { return e.err }

// viewerErr marks an error of the WebSocket side (the viewer).
type viewerErr struct{ err error }

func (e *viewerErr) Error() string { return "viewer: " + e.err.Error() }
func (e *viewerErr) Unwrap() error { return e.err }

// wsStream reads a WebSocket's data messages as one byte stream and writes
// each Write as one binary message.
type wsStream struct {
	c    *wsproto.Conn
	open bool // a message is being read
}

// next blocks until a message is available. It needs no buffer, so a
// connection idles without one.
func (s *wsStream) next() error {
	if err := s.c.Next(); err != nil {
		return err
	}
	s.open = true
	return nil
}

// Read implements io.Reader across message boundaries.
func (s *wsStream) Read(p []byte) (int, error) {
	for {
		if !s.open {
			if err := s.next(); err != nil {
				return 0, err
			}
		}
		n, err := s.c.Read(p)
		if err == io.EOF {
			s.open = false
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message.
func (s *wsStream) Write(p []byte) (int, error) {
	if err := s.c.WriteMessage(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// copyToUpstream copies the viewer's messages to up until either side fails.
// Messages (and parts of one) that are already buffered go to up in one
// write: a viewer that sends several small messages at once (an RFB client's
// first messages, a burst of input events) costs one write to the machine,
// not one per message. It never holds bytes back while it waits for more.
// The error says which side (*viewerErr or *upstreamErr).
func copyToUpstream(s *wsStream, up net.Conn, pool *bufPool, n *atomic.Int64, count func(int)) error {
	for {
		if !s.open {
			if err := s.next(); err != nil {
				return &viewerErr{err}
			}
		}
		buf := pool.get()
		fill := 0
		var rerr error
		for {
			k, err := s.c.Read((*buf)[fill:])
			fill += k
			if err == io.EOF {
				s.open = false
			} else if err != nil {
				rerr = &viewerErr{err}
			}
			if rerr == nil && fill < len(*buf) && s.c.Buffered() {
				if !s.open {
					if err := s.next(); err != nil {
						rerr = &viewerErr{err}
					}
				}
				if rerr == nil {
					continue
				}
			}
			if fill > 0 {
				if _, werr := up.Write((*buf)[:fill]); werr != nil {
					pool.put(buf)
					return &upstreamErr{werr}
				}
				n.Add(int64(fill))
				count(fill)
				fill = 0
			}
			if rerr != nil || !s.open {
				break
			}
		}
		pool.put(buf)
		if rerr != nil {
			return rerr
		}
	}
}

// useSplice moves upstream bytes to a plain-TCP viewer with splice(2).
var useSplice = os.Getenv("MC_GATEWAY_NOSPLICE") == ""

// maxFrame bounds one message toward the viewer.
const maxFrame = 1 << 20

// spliceMin is the smallest batch worth splice's extra system calls; smaller
// ones (input echoes, small screen updates) take one read and one write.
const spliceMin = 16 << 10

// smallRead is the per-connection buffer toward the viewer: the stream
// blocks in a read into it (so a small message costs one read and one write)
// and only a full small read leads to a larger batch from the pool or by
// splice.
const smallRead = 2 << 10

// copyToViewer copies up's bytes to the viewer until either side fails.
func copyToViewer(up net.Conn, c *wsproto.Conn, pool *bufPool, n *atomic.Int64, count func(int)) error {
	sc, ok := up.(syscall.Conn)
	if !ok {
		return copyToViewerPlain(up, c, pool, n, count)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return &upstreamErr{err}
	}
	tcpUp, _ := up.(*net.TCPConn)
	splice := useSplice && tcpUp != nil && c.TCP() != nil
	small := make([]byte, smallRead)
	hot := false // the last batch was large: look at the queue before blocking
	for {
		if hot {
			// Wait for more here, not in a small read: a bulk stream
			// that the bridge has caught up with goes on by splice, not
			// in 2 KiB messages and copied batches (measured at about
			// 1.3 GiB/s: 2 KiB reads from 3.7 to about 1 per MiB,
			// copied messages from 1.6 to 0.5 per MiB).
			queued, err := waitQueued(rc)
			if err != nil {
				return &upstreamErr{err}
			}
			if queued >= spliceMin {
				k := min(int64(queued), maxFrame)
				if err := c.SpliceFrom(tcpUp, k); err != nil {
					if errors.Is(err, wsproto.ErrIncompleteFrame) {
						return &upstreamErr{err}
					}
					return &viewerErr{err}
				}
				n.Add(k)
				count(int(k))
				continue
			}
			hot = false
		}
		k, err := relay(up, c, small, n, count)
		if err != nil {
			return err
		}
		if k < len(small) {
			continue
		}
		// A full read: move what else is queued in one batch.
		queued, err := queuedBytes(rc)
		if err != nil {
			return &upstreamErr{err}
		}
		switch {
		case queued == 0:
		case splice && queued >= spliceMin:
			hot = true
		default:
			buf := pool.get()
			_, err := relay(up, c, (*buf)[:min(queued, len(*buf))], n, count)
			pool.put(buf)
			if err != nil {
				return err
			}
		}
	}
}

// waitQueued returns how many bytes wait in the socket's receive queue; when
// none, it first waits (once, holding no buffer) until the socket is
// readable. It returns 0 at the end of the stream or on a spurious wake-up.
func waitQueued(rc syscall.RawConn) (int, error) {
	var n int
	var ierr error
	waited := false
	if err := rc.Read(func(fd uintptr) bool {
		n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if ierr != nil || n > 0 || waited {
			return true
		}
		waited = true
		return false
	}); err != nil {
		return 0, err
	}
	return n, ierr
}

// copyToViewerPlain is copyToViewer for an upstream that is not a socket.
func copyToViewerPlain(up net.Conn, c *wsproto.Conn, pool *bufPool, n *atomic.Int64, count func(int)) error {
	for {
		buf := pool.get()
		_, err := relay(up, c, *buf, n, count)
		pool.put(buf)
		if err != nil {
			return err
		}
	}
}

// relay reads once from up into buf and sends what it read to the viewer as
// one message, counting it in n and count. It returns how many bytes it
// read; the error says which side failed (*viewerErr or *upstreamErr).
func relay(up net.Conn, c *wsproto.Conn, buf []byte, n *atomic.Int64, count func(int)) (int, error) {
	k, err := up.Read(buf)
	if k > 0 {
		if werr := c.WriteMessage(buf[:k]); werr != nil {
			return k, &viewerErr{werr}
		}
		n.Add(int64(k))
		count(k)
	}
	if err != nil {
		return k, &upstreamErr{err}
	}
	return k, nil
}

// startPinger pings c every interval from a timer (no goroutine while idle).
// A ping that gets no pong within interval calls fail. The returned func
// stops it.
func startPinger(c *wsproto.Conn, interval time.Duration, fail func()) (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	t = time.AfterFunc(interval, func() {
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		err := c.Ping(ctx)
		cancel()
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				fail()
			}
			return
		}
		t.Reset(interval)
	})
	return func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		t.Stop()
	}
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
