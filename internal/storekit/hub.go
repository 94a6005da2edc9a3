package storekit

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/master-controller/mc"
)

// Fetch reads session id as it is now. It returns an *mc.Error with code
// mc.ENOTFOUND when there is no such session.
type Fetch func(ctx context.Context, id string) (*mc.Session, error)

// Hub fans the changes of sessions out to a Store's watchers. A change is
// announced by id only (Notify); the Hub then reads the session once and
// hands the value to every watcher of that id. Reads are numbered in the
// order they start, and a watcher never takes a value from a read that
// started before the one it already holds, so a slow read can never
// overwrite a newer value.
type Hub struct {
	fetch Fetch
	log   *slog.Logger
	seq   atomic.Uint64

	mu     sync.Mutex
	topics map[string]*topic
	closed bool
}

// topic is the set of watchers of one session.
type topic struct {
	watchers map[*watcher]struct{}
	// running is true while a goroutine reads and delivers; dirty asks it
	// for one more round because a change came in meanwhile.
	running, dirty bool
}

type watcher struct {
	ch chan *mc.Session

	mu   sync.Mutex
	last uint64     // sequence number of the read that produced the latest value
	sent mc.Session // the latest value, to skip sending an unchanged one again
	done bool
	stop func() bool // stops the context.AfterFunc
}

// NewHub returns a Hub that reads sessions with fetch and logs failed reads
// to log.
func NewHub(fetch Fetch, log *slog.Logger) *Hub {
	return &Hub{fetch: fetch, log: log, topics: make(map[string]*topic)}
}

// Watch registers a watcher of id and delivers the session as it is now.
// The channel holds at most the newest value not yet taken; it is closed
// after a final state, when ctx ends, or when the Hub is closed.
func (h *Hub) Watch(ctx context.Context, id string) (<-chan *mc.Session, error) {
	w := &watcher{ch: make(chan *mc.Session, 1)}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, mc.Errorf(mc.EUNAVAILABLE, mc.ReasonStoreClosed, "The store is closed.")
	}
	t := h.topics[id]
	if t == nil {
		t = &topic{watchers: make(map[*watcher]struct{})}
		h.topics[id] = t
	}
	t.watchers[w] = struct{}{}
	h.mu.Unlock()

	// Registered first, read second: a change after this read is announced
	// to the watcher, a change before it is in the value read.
	seq := h.seq.Add(1)
	s, err := h.fetch(ctx, id)
	if err != nil {
		h.remove(id, w)
		return nil, err
	}
	w.mu.Lock()
	w.stop = context.AfterFunc(ctx, func() { h.remove(id, w) })
	w.mu.Unlock()
	h.deliver(id, w, seq, s)
	return w.ch, nil
}

// Notify announces that session id changed.
func (h *Hub) Notify(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.topics[id]
	if t == nil || h.closed {
		return
	}
	if t.running {
		t.dirty = true
		return
	}
	t.running = true
	go h.run(id, t)
}

// NotifyAll announces a possible change of every watched session (after a
// gap in the notifications, such as a reconnect).
func (h *Hub) NotifyAll() {
	h.mu.Lock()
	ids := make([]string, 0, len(h.topics))
	for id := range h.topics {
		ids = append(ids, id)
	}
	h.mu.Unlock()
	for _, id := range ids {
		h.Notify(id)
	}
}

func (h *Hub) run(id string, t *topic) {
	for {
		h.mu.Lock()
		t.dirty = false
		ws := make([]*watcher, 0, len(t.watchers))
		for w := range t.watchers {
			ws = append(ws, w)
		}
		h.mu.Unlock()
		if len(ws) > 0 {
			seq := h.seq.Add(1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			s, err := h.fetch(ctx, id)
			cancel()
			switch {
			case mc.ErrorCode(err) == mc.ENOTFOUND:
			case err != nil:
				h.log.Warn("read watched session", mc.LogSessionID, id, mc.LogReason, mc.ErrorReason(err), mc.LogError, err)
			default:
				for _, w := range ws {
					h.deliver(id, w, seq, s)
				}
			}
		}
		h.mu.Lock()
		if !t.dirty || h.closed {
			t.running = false
			if len(t.watchers) == 0 && h.topics[id] == t {
				delete(h.topics, id)
			}
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
}

// deliver gives w its own copy of s, replacing a value it has not taken yet,
// unless w already has a value from a later read or s is the value it got
// last (two announcements of one change). After a final state the watcher
// is closed.
func (h *Hub) deliver(id string, w *watcher, seq uint64, s *mc.Session) {
	w.mu.Lock()
	if w.done || seq <= w.last {
		w.mu.Unlock()
		return
	}
	w.last = seq
	if *s == w.sent {
		w.mu.Unlock()
		return
	}
	w.sent = *s
	select {
	case <-w.ch:
	default:
	}
	c := *s
	w.ch <- &c // never blocks: this is the only sender and it holds w.mu
	final := s.State.Final()
	w.mu.Unlock()
	if final {
		h.remove(id, w)
	}
}

// remove unregisters w and closes its channel (a value it holds stays
// readable before the close).
func (h *Hub) remove(id string, w *watcher) {
	h.mu.Lock()
	if t := h.topics[id]; t != nil {
		delete(t.watchers, w)
		if len(t.watchers) == 0 && !t.running {
			delete(h.topics, id)
		}
	}
	h.mu.Unlock()
	w.close()
}

func (w *watcher) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	w.done = true
	if w.stop != nil {
		w.stop()
	}
	close(w.ch)
}

// Close closes every watcher; later watches fail with mc.EUNAVAILABLE.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	var ws []*watcher
	for _, t := range h.topics {
		for w := range t.watchers {
			ws = append(ws, w)
		}
	}
	h.topics = make(map[string]*topic)
	h.mu.Unlock()
	for _, w := range ws {
		w.close()
	}
}
