// Package webhook tells a backend, by a signed HTTP POST, that a session has
// ended.
//
// Each event is a JSON object
//
//	{"type":"session.ended","id":"…","session_id":"…","user_id":"…",
//	 "provider":"…","state":"completed","reason":"…","at":"2026-11-27T08:30:00Z"}
//
// sent with the headers
//
//	Content-Type: application/json
//	X-MC-Event: session.ended
//	X-MC-Delivery: <the event id, the same on every retry>
//	X-MC-Timestamp: <Unix seconds of this attempt>
//	X-MC-Signature: sha256=<hex HMAC-SHA256 of the body under the shared secret>
//
// The signature covers the body only, which holds the event id and time: a
// receiver checks the signature (Verify), then ignores an id it has already
// seen and an "at" that is too old. Events never hold credentials or any
// machine secret, only the session's identity and final state.
//
// Delivery never blocks the caller: events go into a bounded queue that
// workers drain, each event retried with exponential backoff on network
// errors and 5xx replies (other replies are final), up to a bounded number of
// attempts.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/prometheus/client_golang/prometheus"
)

// EventSessionEnded is the type of the event sent on every final state.
const EventSessionEnded = "session.ended"

// Header names.
const (
	HeaderSignature = "X-MC-Signature"
	HeaderTimestamp = "X-MC-Timestamp"
	HeaderEvent     = "X-MC-Event"
	HeaderDelivery  = "X-MC-Delivery"
)

// Defaults of Config's zero fields.
const (
	DefaultMaxAttempts    = 5
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = time.Minute
	DefaultTimeout        = 10 * time.Second
	DefaultQueueSize      = 256
	DefaultWorkers        = 2
)

// Delivery outcomes, the values of the outcome label of
// mc_webhook_deliveries_total.
const (
	OutcomeDelivered = "delivered" // a 2xx reply
	OutcomeRejected  = "rejected"  // a reply that is not retried (not 2xx, not 5xx)
	OutcomeGaveUp    = "gave_up"   // every attempt failed with a network error or 5xx
	OutcomeDropped   = "dropped"   // the queue was full, or the notifier closed first
)

// Config configures a Notifier. Zero fields take the defaults above.
type Config struct {
	// URL receives the events (http or https). It is never logged: it may
	// carry a token.
	URL mc.Secret
	// Secret is the HMAC-SHA256 key shared with the receiver.
	Secret mc.Secret
	// MaxAttempts bounds the attempts per event, the first included.
	MaxAttempts int
	// InitialBackoff is the wait after the first failed attempt; it doubles
	// after each further one, up to MaxBackoff.
	InitialBackoff time.Duration
	// MaxBackoff caps the wait between attempts.
	MaxBackoff time.Duration
	// Timeout bounds one attempt.
	Timeout time.Duration
	// QueueSize bounds the events waiting for delivery; beyond it, events are
	// dropped (and counted), never blocking the caller.
	QueueSize int
	// Workers deliver events concurrently, so that one slow event does not
	// hold up the others.
	Workers int
}

// Options are a Notifier's optional dependencies.
type Options struct {
	// Client sends the requests; a client with Config.Timeout that does not
	// follow redirects when nil.
	Client *http.Client
	// Logger receives one line per event that was not delivered.
	Logger *slog.Logger
	// Registerer receives mc_webhook_deliveries_total{outcome}; none when nil.
	Registerer prometheus.Registerer
	// Clock stamps events and attempts and times the waits between
	// attempts; mc.SystemClock when nil. Tests use a fake one, so that they
	// do not sleep through real backoffs.
	Clock mc.TimerClock
}

// Event is what the receiver gets.
type Event struct {
	Type      string    `json:"type"`
	ID        string    `json:"id"`
	SessionID string    `json:"session_id"`
	UserID    string    `json:"user_id"`
	Provider  string    `json:"provider"`
	State     mc.State  `json:"state"`
	Reason    mc.Reason `json:"reason,omitempty"`
	At        time.Time `json:"at"`
}

// Notifier delivers events. A nil *Notifier is a valid no-op, so that callers
// need not check whether webhooks are configured.
type Notifier struct {
	cfg        Config
	url        string
	client     *http.Client
	log        *slog.Logger
	clock      mc.TimerClock
	deliveries *prometheus.CounterVec

	mu     sync.Mutex // guards closed and sends on queue
	closed bool
	queue  chan delivery

	abort   context.Context // cancelled when Close gives up draining
	cancel  context.CancelFunc
	workers sync.WaitGroup
}

type delivery struct {
	event Event
	body  []byte
}

// New checks cfg and starts the notifier's workers. Close stops them.
// Errors: EINVALID (reason "bad_webhook_config").
func New(cfg Config, o Options) (*Notifier, error) {
	u, err := url.Parse(cfg.URL.Reveal())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadWebhookConfig, "webhook URL must be an http or https URL with a host")
	}
	if cfg.Secret.IsZero() {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadWebhookConfig, "webhook secret is required (events are signed)")
	}
	for _, f := range []struct {
		v   *int
		def int
	}{{&cfg.MaxAttempts, DefaultMaxAttempts}, {&cfg.QueueSize, DefaultQueueSize}, {&cfg.Workers, DefaultWorkers}} {
		if *f.v < 0 {
			return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadWebhookConfig, "webhook attempts, queue size and workers must not be negative")
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	for _, f := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.InitialBackoff, DefaultInitialBackoff}, {&cfg.MaxBackoff, DefaultMaxBackoff}, {&cfg.Timeout, DefaultTimeout}} {
		if *f.v < 0 {
			return nil, mc.Errorf(mc.EINVALID, mc.ReasonBadWebhookConfig, "webhook backoffs and timeout must not be negative")
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if cfg.MaxBackoff < cfg.InitialBackoff {
		cfg.MaxBackoff = cfg.InitialBackoff
	}

	n := &Notifier{
		cfg:    cfg,
		url:    u.String(),
		client: o.Client,
		log:    o.Logger,
		clock:  o.Clock,
		queue:  make(chan delivery, cfg.QueueSize),
	}
	if n.client == nil {
		n.client = &http.Client{
			Timeout: cfg.Timeout,
			// A redirect is a final answer: a signed event is not re-sent
			// to wherever the receiver points.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if n.log == nil {
		n.log = slog.Default()
	}
	if n.clock == nil {
		n.clock = mc.SystemClock{}
	}
	n.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mc_webhook_deliveries_total",
		Help: "Webhook events by outcome: delivered, rejected (a final non-2xx reply), gave_up (attempts exhausted), dropped (queue full or closed).",
	}, []string{"outcome"})
	for _, o := range []string{OutcomeDelivered, OutcomeRejected, OutcomeGaveUp, OutcomeDropped} {
		n.deliveries.WithLabelValues(o)
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(n.deliveries); err != nil {
			return nil, fmt.Errorf("register webhook metrics: %w", err)
		}
	}
	n.abort, n.cancel = context.WithCancel(context.Background())
	for range cfg.Workers {
		n.workers.Go(n.work)
	}
	return n, nil
}

// SessionEnded queues a session.ended event for s, if s is in a final state,
// and reports whether it was queued. It never blocks.
func (n *Notifier) SessionEnded(s *mc.Session) bool {
	if n == nil || s == nil || !s.State.Final() {
		return false
	}
	at := s.EndedAt
	if at.IsZero() {
		at = n.clock.Now()
	}
	return n.Notify(Event{
		Type:      EventSessionEnded,
		SessionID: s.ID,
		UserID:    s.UserID,
		Provider:  s.Provider,
		State:     s.State,
		Reason:    s.Reason,
		At:        at,
	})
}

// Notify queues e (its ID set when empty) and reports whether it was queued:
// false when the queue is full or the notifier is closed. It never blocks.
func (n *Notifier) Notify(e Event) bool {
	if n == nil {
		return false
	}
	if e.ID == "" {
		e.ID = mc.NewID()
	}
	e.At = e.At.UTC()
	body, err := json.Marshal(e)
	if err != nil { // strings and times only: cannot happen
		n.log.Error("webhook encode event", mc.LogSessionID, e.SessionID, mc.LogError, err)
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		select {
		case n.queue <- delivery{event: e, body: body}:
			return true
		default:
		}
	}
	n.deliveries.WithLabelValues(OutcomeDropped).Inc()
	n.log.Warn("webhook event dropped", mc.LogSessionID, e.SessionID, mc.LogReason, mc.ReasonQueueFullOrClosed)
	return false
}

// Close stops accepting events and delivers those queued, retries included,
// until ctx ends; then it aborts what is left, counted as dropped, and
// returns ctx's error.
func (n *Notifier) Close(ctx context.Context) error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		close(n.queue)
	}
	n.mu.Unlock()

	done := make(chan struct{})
	go func() { n.workers.Wait(); close(done) }()
	select {
	case <-done:
		n.cancel()
		return nil
	case <-ctx.Done():
		n.cancel()
		<-done
		return fmt.Errorf("drain webhook queue: %w", ctx.Err())
	}
}

func (n *Notifier) work() {
	for d := range n.queue {
		if n.abort.Err() != nil {
			n.deliveries.WithLabelValues(OutcomeDropped).Inc()
			continue
		}
		n.deliver(d)
	}
}

// deliver makes the attempts for one event and counts its outcome.
func (n *Notifier) deliver(d delivery) {
	backoff := n.cfg.InitialBackoff
	var last string
	for attempt := 1; ; attempt++ {
		status, err := n.attempt(d)
		switch {
		case err == nil && status >= 200 && status < 300:
			n.deliveries.WithLabelValues(OutcomeDelivered).Inc()
			return
		case err == nil && status < 500:
			n.deliveries.WithLabelValues(OutcomeRejected).Inc()
			n.log.Warn("webhook event rejected", mc.LogSessionID, d.event.SessionID, mc.LogReason, mc.ReasonWebhookRejected,
				"status", status, "attempts", attempt)
			return
		case err != nil:
			last = err.Error()
		default:
			last = "status " + strconv.Itoa(status)
		}
		if attempt >= n.cfg.MaxAttempts || n.abort.Err() != nil {
			break
		}
		select {
		case <-n.clock.After(backoff):
		case <-n.abort.Done():
		}
		if n.abort.Err() != nil {
			break
		}
		backoff = min(2*backoff, n.cfg.MaxBackoff)
	}
	outcome, reason := OutcomeGaveUp, mc.ReasonWebhookGaveUp
	if n.abort.Err() != nil {
		outcome, reason = OutcomeDropped, mc.ReasonWebhookDropped
	}
	n.deliveries.WithLabelValues(outcome).Inc()
	n.log.Warn("webhook event not delivered", mc.LogSessionID, d.event.SessionID, mc.LogReason, reason,
		"last_error", last)
}

// attempt sends the event once and returns the reply's status.
func (n *Notifier) attempt(d delivery) (int, error) {
	ctx, cancel := context.WithTimeout(n.abort, n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, bytes.NewReader(d.body))
	if err != nil {
		return 0, errors.New("build request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "master-controller-webhook/1")
	req.Header.Set(HeaderEvent, d.event.Type)
	req.Header.Set(HeaderDelivery, d.event.ID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(n.clock.Now().Unix(), 10))
	req.Header.Set(HeaderSignature, Sign(n.cfg.Secret, d.body))
	resp, err := n.client.Do(req)
	if err != nil {
		// A *url.Error quotes the URL, which may carry a token: keep its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Sign returns the X-MC-Signature value of body: "sha256=" and the hex
// HMAC-SHA256 of body under secret.
func Sign(secret mc.Secret, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret.Reveal()))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports, in constant time, whether signature is the X-MC-Signature
// of body under secret. Receivers written in Go can use it.
func Verify(secret mc.Secret, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(signature))
}
