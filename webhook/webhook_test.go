package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	mc "github.com/master-controller/mc"
	mctest "github.com/master-controller/mc/internal/testutil"
)

var testSecret = mc.SecretOf("webhook-test-secret")

// request is one request the test server received.
type request struct {
	header http.Header
	body   []byte
}

// receiver is a loopback HTTP server that answers with the statuses of
// replies in turn (the last one repeated) and records every request.
type receiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	replies  []int
	got      []request
	received chan request
}

func newReceiver(tb testing.TB, replies ...int) *receiver {
	tb.Helper()
	r := &receiver{replies: replies, received: make(chan request, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		status := r.replies[min(len(r.got), len(r.replies)-1)]
		rq := request{header: req.Header.Clone(), body: body}
		r.got = append(r.got, rq)
		r.mu.Unlock()
		if status == -1 { // a network error: drop the connection
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		} else {
			w.WriteHeader(status)
		}
		r.received <- rq
	}))
	tb.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

var testNow = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

type harness struct {
	n     *Notifier
	reg   *prometheus.Registry
	clock *mctest.Clock
	logs  *bytes.Buffer
}

func newNotifier(tb testing.TB, url string, cfg Config) *harness {
	tb.Helper()
	h := &harness{reg: prometheus.NewRegistry(), clock: mctest.NewClock(testNow), logs: &bytes.Buffer{}}
	h.clock.AutoAdvance()
	cfg.URL = mc.SecretOf(url)
	if cfg.Secret.IsZero() {
		cfg.Secret = testSecret
	}
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, h.logs}, nil))
	n, err := New(cfg, Options{Registerer: h.reg, Clock: h.clock, Logger: log})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	h.n = n
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Close(ctx)
	})
	return h
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (h *harness) count(outcome string) float64 {
	return testutil.ToFloat64(h.n.deliveries.WithLabelValues(outcome))
}

// closeAndWait closes the notifier, which waits for every queued delivery.
func (h *harness) closeAndWait(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 10*time.Second)
	defer cancel()
	if err := h.n.Close(ctx); err != nil {
		tb.Fatalf("Close: %v", err)
	}
}

func endedSession() *mc.Session {
	return &mc.Session{
		ID:       mc.NewID(),
		UserID:   "user-1",
		Provider: "demo",
		State:    mc.StateCompleted,
		Reason:   mc.ReasonSignedIn,
		EndedAt:  time.Date(2026, 11, 27, 8, 59, 0, 0, time.FixedZone("X", 3600)),
	}
}

func TestSignedEvent(t *testing.T) {
	rcv := newReceiver(t, http.StatusNoContent)
	h := newNotifier(t, rcv.srv.URL+"/hooks?token=url-token", Config{})
	s := endedSession()
	if !h.n.SessionEnded(s) {
		t.Fatal("SessionEnded did not queue the event")
	}
	h.closeAndWait(t)

	reqs := rcv.requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if !Verify(testSecret, r.body, r.header.Get(HeaderSignature)) {
		t.Errorf("signature %q does not verify", r.header.Get(HeaderSignature))
	}
	if Verify(mc.SecretOf("other"), r.body, r.header.Get(HeaderSignature)) {
		t.Errorf("signature verifies under another secret")
	}
	if Verify(testSecret, append(bytes.Clone(r.body), ' '), r.header.Get(HeaderSignature)) {
		t.Errorf("signature verifies for another body")
	}
	if !strings.HasPrefix(r.header.Get(HeaderSignature), "sha256=") || len(r.header.Get(HeaderSignature)) != len("sha256=")+64 {
		t.Errorf("got signature header %q, want sha256=<64 hex>", r.header.Get(HeaderSignature))
	}
	if got, want := r.header.Get(HeaderTimestamp), strconv.FormatInt(testNow.Unix(), 10); got != want {
		t.Errorf("got timestamp %q, want %q", got, want)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("got content type %q", got)
	}
	if got := r.header.Get(HeaderEvent); got != EventSessionEnded {
		t.Errorf("got event header %q", got)
	}

	var e Event
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatal(err)
	}
	want := Event{Type: EventSessionEnded, ID: e.ID, SessionID: s.ID, UserID: "user-1", Provider: "demo",
		State: mc.StateCompleted, Reason: mc.ReasonSignedIn, At: s.EndedAt.UTC()}
	if e != want {
		t.Errorf("got event %+v, want %+v", e, want)
	}
	if !mc.ValidID(e.ID) || r.header.Get(HeaderDelivery) != e.ID {
		t.Errorf("got id %q and delivery header %q, want one valid id", e.ID, r.header.Get(HeaderDelivery))
	}
	if got := h.count(OutcomeDelivered); got != 1 {
		t.Errorf("got %v delivered, want 1", got)
	}
	if strings.Contains(h.logs.String(), "url-token") {
		t.Errorf("the log holds the URL's token: %s", h.logs)
	}
}

func TestEveryFinalStateAndNoOther(t *testing.T) {
	rcv := newReceiver(t, http.StatusOK)
	h := newNotifier(t, rcv.srv.URL, Config{})
	var want []mc.State
	for _, st := range mc.States {
		s := endedSession()
		s.State = st
		queued := h.n.SessionEnded(s)
		if queued != st.Final() {
			t.Errorf("state %s: got queued %v, want %v", st, queued, st.Final())
		}
		if st.Final() {
			want = append(want, st)
		}
	}
	h.closeAndWait(t)
	var got []mc.State
	for _, r := range rcv.requests() {
		var e Event
		if err := json.Unmarshal(r.body, &e); err != nil {
			t.Fatal(err)
		}
		got = append(got, e.State)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("got events for %v, want %v", got, want)
	}
}

func TestRetryAfter500(t *testing.T) {
	rcv := newReceiver(t, http.StatusInternalServerError, http.StatusOK)
	h := newNotifier(t, rcv.srv.URL, Config{InitialBackoff: 2 * time.Second})
	h.n.SessionEnded(endedSession())
	h.closeAndWait(t)

	reqs := rcv.requests()
	if len(reqs) != 2 {
		t.Fatalf("got %d attempts, want 2", len(reqs))
	}
	if !bytes.Equal(reqs[0].body, reqs[1].body) || reqs[0].header.Get(HeaderDelivery) != reqs[1].header.Get(HeaderDelivery) {
		t.Errorf("the retry is not the same event")
	}
	if !Verify(testSecret, reqs[1].body, reqs[1].header.Get(HeaderSignature)) {
		t.Errorf("the retry's signature does not verify")
	}
	if got, want := h.clock.Waits(), []time.Duration{2 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("got backoffs %v, want %v", got, want)
	}
	if got := h.count(OutcomeDelivered); got != 1 {
		t.Errorf("got %v delivered, want 1", got)
	}
}

func TestRetryAfterNetworkError(t *testing.T) {
	rcv := newReceiver(t, -1, http.StatusOK)
	h := newNotifier(t, rcv.srv.URL, Config{})
	h.n.SessionEnded(endedSession())
	h.closeAndWait(t)
	if got := len(rcv.requests()); got != 2 {
		t.Errorf("got %d attempts, want 2", got)
	}
	if got := h.count(OutcomeDelivered); got != 1 {
		t.Errorf("got %v delivered, want 1", got)
	}
}

func TestGiveUpAfterMaxAttempts(t *testing.T) {
	rcv := newReceiver(t, http.StatusServiceUnavailable)
	h := newNotifier(t, rcv.srv.URL+"/?token=url-token", Config{MaxAttempts: 6, InitialBackoff: time.Second, MaxBackoff: 5 * time.Second})
	s := endedSession()
	h.n.SessionEnded(s)
	h.closeAndWait(t)

	if got := len(rcv.requests()); got != 6 {
		t.Errorf("got %d attempts, want 6", got)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	if got := h.clock.Waits(); !slices.Equal(got, want) {
		t.Errorf("got backoffs %v, want %v", got, want)
	}
	if got := h.count(OutcomeGaveUp); got != 1 {
		t.Errorf("got %v gave_up, want 1", got)
	}
	if got := h.count(OutcomeDelivered); got != 0 {
		t.Errorf("got %v delivered, want 0", got)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "reason=webhook_gave_up") || !strings.Contains(logs, s.ID) {
		t.Errorf("got log %q, want one line with the reason and session id", logs)
	}
	if strings.Contains(logs, "url-token") {
		t.Errorf("the log holds the URL's token: %s", logs)
	}
}

func TestNoRetryOn4xx(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusFound} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			rcv := newReceiver(t, status, http.StatusOK)
			h := newNotifier(t, rcv.srv.URL, Config{})
			h.n.SessionEnded(endedSession())
			h.closeAndWait(t)
			if got := len(rcv.requests()); got != 1 {
				t.Errorf("got %d attempts, want 1", got)
			}
			if got := h.count(OutcomeRejected); got != 1 {
				t.Errorf("got %v rejected, want 1", got)
			}
		})
	}
}

func TestNetworkErrorsGiveUpToo(t *testing.T) {
	// A port that was listening and is now closed: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h := newNotifier(t, "http://"+addr+"/?token=url-token", Config{MaxAttempts: 3})
	h.n.SessionEnded(endedSession())
	h.closeAndWait(t)
	if got := h.count(OutcomeGaveUp); got != 1 {
		t.Errorf("got %v gave_up, want 1", got)
	}
	if got := len(h.clock.Waits()); got != 2 {
		t.Errorf("got %d backoffs, want 2", got)
	}
	if strings.Contains(h.logs.String(), "url-token") {
		t.Errorf("the log holds the URL's token: %s", h.logs)
	}
}

func TestBodyNeverHoldsCredentials(t *testing.T) {
	rcv := newReceiver(t, http.StatusOK)
	h := newNotifier(t, rcv.srv.URL, Config{})
	s := endedSession()
	h.n.SessionEnded(s)
	h.closeAndWait(t)
	reqs := rcv.requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	var fields map[string]any
	if err := json.Unmarshal(reqs[0].body, &fields); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"at", "id", "provider", "reason", "session_id", "state", "type", "user_id"}; !slices.Equal(keys, want) {
		t.Errorf("got fields %v, want exactly %v", keys, want)
	}
	body := string(reqs[0].body)
	for _, secret := range []string{testSecret.Reveal(),
		"files", "access_token", "credential", "secret", "password", "token"} {
		if strings.Contains(strings.ToLower(body), strings.ToLower(secret)) {
			t.Errorf("body %s contains %q", body, secret)
		}
	}
	for k, v := range reqs[0].header {
		if strings.Contains(strings.Join(v, " "), testSecret.Reveal()) {
			t.Errorf("header %s holds the signing secret", k)
		}
	}
}

// TestNeverBlocks: with the receiver stuck, the caller is never held up; a
// full queue drops (and counts) instead.
func TestNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // so that the server notices when the client goes
		started <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	h := newNotifier(t, srv.URL, Config{QueueSize: 2, Workers: 1})
	t.Cleanup(func() { close(release) }) // runs before the notifier's Close

	if !h.n.SessionEnded(endedSession()) {
		t.Fatal("first event not queued")
	}
	<-started // the worker holds the first event; the queue is empty
	queued := 0
	for range 5 {
		if h.n.SessionEnded(endedSession()) {
			queued++
		}
	}
	if queued != 2 {
		t.Errorf("got %d queued behind a stuck delivery, want 2 (the queue size)", queued)
	}
	if got := h.count(OutcomeDropped); got != 3 {
		t.Errorf("got %v dropped, want 3", got)
	}
}

// TestCloseDeadline: Close gives up at its deadline, aborting the stuck
// delivery, and counts what it could not send.
func TestCloseDeadline(t *testing.T) {
	started := make(chan struct{}, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // so that the server notices when the client goes
		started <- struct{}{}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	h := newNotifier(t, srv.URL, Config{Workers: 1, Timeout: time.Hour})
	h.n.SessionEnded(endedSession())
	h.n.SessionEnded(endedSession())
	<-started

	ctx, cancel := context.WithCancel(t.Context())
	cancel() // the deadline has passed
	if err := h.n.Close(ctx); err == nil {
		t.Fatal("Close returned nil with a stuck receiver and an expired deadline")
	}
	if got := h.count(OutcomeDropped); got != 2 {
		t.Errorf("got %v dropped, want 2 (the aborted one and the queued one)", got)
	}
	if h.n.SessionEnded(endedSession()) {
		t.Errorf("an event was queued after Close")
	}
}

func TestNilNotifier(t *testing.T) {
	var n *Notifier
	if n.SessionEnded(endedSession()) || n.Notify(Event{}) {
		t.Errorf("a nil notifier queued an event")
	}
	if err := n.Close(t.Context()); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{name: "minimal", cfg: Config{URL: mc.SecretOf("https://hooks.example.com/x"), Secret: testSecret}, ok: true},
		{name: "no url", cfg: Config{Secret: testSecret}},
		{name: "relative url", cfg: Config{URL: mc.SecretOf("/hooks"), Secret: testSecret}},
		{name: "ftp url", cfg: Config{URL: mc.SecretOf("ftp://example.com/x"), Secret: testSecret}},
		{name: "no secret", cfg: Config{URL: mc.SecretOf("https://hooks.example.com/x")}},
		{name: "negative attempts", cfg: Config{URL: mc.SecretOf("https://h.example/x"), Secret: testSecret, MaxAttempts: -1}},
		{name: "negative backoff", cfg: Config{URL: mc.SecretOf("https://h.example/x"), Secret: testSecret, InitialBackoff: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(tt.cfg, Options{})
			if tt.ok {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if n.cfg.MaxAttempts != DefaultMaxAttempts || n.cfg.QueueSize != DefaultQueueSize || n.cfg.Timeout != DefaultTimeout {
					t.Errorf("got config %+v, want defaults filled in", n.cfg)
				}
				n.Close(t.Context())
				return
			}
			if mc.ErrorReason(err) != mc.ReasonBadWebhookConfig {
				t.Fatalf("got %v, want reason %q", err, mc.ReasonBadWebhookConfig)
			}
			if strings.Contains(err.Error(), "example") {
				t.Errorf("error %q repeats the URL", err)
			}
		})
	}
}

func TestMetricRegistered(t *testing.T) {
	rcv := newReceiver(t, http.StatusOK)
	h := newNotifier(t, rcv.srv.URL, Config{})
	n, err := testutil.GatherAndCount(h.reg, "mc_webhook_deliveries_total")
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("got %d series, want 4 (one per outcome)", n)
	}
}
