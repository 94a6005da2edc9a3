package postgres

// This file is identical in package sqlite (only the package clause
// differs): adapters never import each other.

import (
	"context"
	"encoding/base64"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/master-controller/mc"
)

// hub fans the changes of sessions out to this Store's watchers. A change is
// announced by id only (notify); the hub then reads the session once and
// hands the value to every watcher of that id. Reads are numbered in the
// order they start, and a watcher never takes a value from a read that
// started before the one it already holds, so a slow read can never
// overwrite a newer value.
type hub struct {
	fetch func(ctx context.Context, id string) (*mc.Session, error)
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

func newHub(fetch func(ctx context.Context, id string) (*mc.Session, error), log *slog.Logger) *hub {
	return &hub{fetch: fetch, log: log, topics: make(map[string]*topic)}
}

// watch registers a watcher of id and delivers the session as it is now.
func (h *hub) watch(ctx context.Context, id string) (<-chan *mc.Session, error) {
	w := &watcher{ch: make(chan *mc.Session, 1)}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, mc.Errorf(mc.EUNAVAILABLE, "store_closed", "The store is closed.")
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

// notify announces that session id changed.
func (h *hub) notify(id string) {
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

func (h *hub) run(id string, t *topic) {
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
				h.log.Warn("read watched session", mc.LogSessionID, id, mc.LogReason, mc.ErrorReason(err), "err", err)
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
func (h *hub) deliver(id string, w *watcher, seq uint64, s *mc.Session) {
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
func (h *hub) remove(id string, w *watcher) {
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

// close closes every watcher; later watches fail.
func (h *hub) close() {
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

// A cursor is the opaque, unpadded base64url encoding of
// "<created_at in Unix microseconds>.<session id>" of the last session of a
// page. Only the exact encoding the store makes is accepted.
func encodeCursor(created time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(created.UnixMicro(), 10) + "." + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	bad := mc.Errorf(mc.EINVALID, "bad_cursor", "The cursor is not valid.")
	b, err := base64.RawURLEncoding.Strict().DecodeString(c)
	if err != nil {
		return time.Time{}, "", bad
	}
	micros, id, ok := strings.Cut(string(b), ".")
	if !ok || !mc.ValidID(id) {
		return time.Time{}, "", bad
	}
	n, err := strconv.ParseInt(micros, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, "", bad
	}
	t := time.UnixMicro(n).UTC()
	if encodeCursor(t, id) != c {
		return time.Time{}, "", bad
	}
	return t, id, nil
}

// utc is how every time is stored: UTC, microsecond precision (PostgreSQL's
// timestamptz), so that a value read back equals the value written.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// pageSize applies the documented limits of SessionFilter.Limit.
func pageSize(n int) (int, error) {
	switch {
	case n < 0:
		return 0, mc.Errorf(mc.EINVALID, "bad_limit", "The limit must not be negative.")
	case n == 0:
		return 50, nil
	case n > 500:
		return 500, nil
	}
	return n, nil
}

// checkSession validates a session for CreateSession.
func checkSession(s *mc.Session) error {
	switch {
	case s == nil:
		return mc.Errorf(mc.EINVALID, "bad_session", "The session is missing.")
	case !mc.ValidID(s.ID):
		return mc.Errorf(mc.EINVALID, "bad_session", "The session id is not valid.")
	case s.UserID == "":
		return mc.Errorf(mc.EINVALID, "bad_session", "The session has no user id.")
	case s.Provider == "":
		return mc.Errorf(mc.EINVALID, "bad_session", "The session has no provider.")
	case s.CreatedAt.IsZero():
		return mc.Errorf(mc.EINVALID, "bad_session", "The session has no creation time.")
	case s.ExpiresAt.IsZero():
		return mc.Errorf(mc.EINVALID, "bad_session", "The session has no expiry time.")
	}
	return nil
}

// checkTransition validates t against the state machine.
func checkTransition(t mc.Transition) error {
	if !mc.CanTransition(t.From, t.To) {
		return &mc.Error{Code: mc.EINVALID, Reason: "bad_transition", SessionID: t.ID,
			Message: "The session cannot move from " + string(t.From) + " to " + string(t.To) + "."}
	}
	return nil
}

func notFound(id string) error {
	return &mc.Error{Code: mc.ENOTFOUND, Reason: "session_not_found", SessionID: id, Message: "No such session."}
}

func stale(id string) error {
	return &mc.Error{Code: mc.ECONFLICT, Reason: "stale", SessionID: id,
		Message: "The session changed; read it again."}
}
