// Package session is the session manager: it drives each session through the
// state machine (pending → starting → ready → capturing → completed), starts
// and destroys its machine through a driver, enforces the idle timeout and the
// maximum lifetime, captures the login's credentials into the vault, and
// reconciles the host with the store. Each replica heartbeats in the store;
// with a cluster driver, whose machines outlive the replica, a replica that
// stops or dies has its live sessions adopted by another (adopt.go).
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	mc "github.com/master-controller/mc"
)

// Config tunes the manager. Zero fields take the defaults noted.
type Config struct {
	// Replica names this controller process; sessions it starts carry it.
	Replica string
	// StartTimeout bounds machine creation and readiness (default 90 s).
	StartTimeout time.Duration
	// IdleTimeout ends a session with no viewer and no agent activity
	// (default 10 min).
	IdleTimeout time.Duration
	// MaxLifetime ends any session this long after it was created
	// (default 30 min).
	MaxLifetime time.Duration
	// ReconcileInterval is the period of the reconcile pass (default 1 min).
	ReconcileInterval time.Duration
	// DestroyGrace is how long a completed session's machine lives on, so
	// that the viewer sees the signed-in page close cleanly (default 3 s).
	DestroyGrace time.Duration
	// MaxMachines caps concurrent active sessions (default: the driver's
	// capacity).
	MaxMachines int
	// LoginPoll is the period of login status checks (default 250 ms).
	LoginPoll time.Duration
	// Width and Height are the machines' screen geometry (default 1280×800).
	Width, Height int
	// StoreRetry is the first pause before a store write that matters (the
	// start, readiness, the credential, a final state) is tried again while
	// the store is unavailable; pauses double up to 5 s (default 100 ms).
	StoreRetry time.Duration
	// Pool is the number of pooled machines kept ready per provider (none
	// by default). Pooled machines count against MaxMachines.
	Pool map[string]int
	// PoolMaxAge recycles a pooled machine this old (default 30 min), so
	// that no browser runs stale.
	PoolMaxAge time.Duration
	// PoolCheck is the period of the pool's refill pass, which also
	// recycles; a claim or a lost machine wakes it early (default 5 s).
	PoolCheck time.Duration
	// HeartbeatInterval is the period of this replica's heartbeat in the
	// store and, with a cluster driver, of its look for sessions to adopt
	// (default 2 s).
	HeartbeatInterval time.Duration
	// ReplicaTimeout is how old a replica's last heartbeat may be before
	// the others take it for dead and, with a cluster driver, adopt its
	// live sessions (default 3 heartbeat intervals).
	ReplicaTimeout time.Duration
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.StartTimeout, 90*time.Second)
	def(&c.IdleTimeout, 10*time.Minute)
	def(&c.MaxLifetime, 30*time.Minute)
	def(&c.ReconcileInterval, time.Minute)
	def(&c.DestroyGrace, 3*time.Second)
	def(&c.LoginPoll, 250*time.Millisecond)
	def(&c.StoreRetry, 100*time.Millisecond)
	def(&c.PoolMaxAge, 30*time.Minute)
	def(&c.PoolCheck, 5*time.Second)
	def(&c.HeartbeatInterval, 2*time.Second)
	def(&c.ReplicaTimeout, 3*c.HeartbeatInterval)
	if c.Width <= 0 || c.Height <= 0 {
		c.Width, c.Height = 1280, 800
	}
	if c.Replica == "" {
		c.Replica = "replica"
	}
}

// Providers looks up provider definitions.
type Providers interface {
	Get(name string) (mc.Provider, bool)
}

// Vault seals and stores a captured credential.
type Vault interface {
	Put(ctx context.Context, c mc.Credential) error
}

// Notifier is told about every session that reached a final state
// (webhooks). It must not block; it reports whether it took the event.
type Notifier interface {
	SessionEnded(s *mc.Session) bool
}

// Manager drives sessions. It keeps no session data of its own: the store is
// the only source of truth; what the manager holds in memory is which
// sessions this process is driving (goroutines), nothing else.
type Manager struct {
	cfg        Config
	store      mc.Store
	driver     mc.Driver
	providers  Providers
	vault      Vault
	notifier   Notifier
	log        *slog.Logger
	clock      mc.TimerClock
	machineKey mc.MachineKey
	metrics    *metrics
	pool       *pool

	// began is when the manager was made: sessions of this replica created
	// before it were left by an earlier process.
	began time.Time
	// cluster is the driver's Capabilities.Cluster: its machines outlive
	// this replica, so a stop hands the sessions over instead of ending
	// them, and this replica adopts the sessions of replicas that stopped.
	cluster bool
	// handover is set when the manager stops driving without ending its
	// sessions: another replica adopts them.
	handover atomic.Bool
	// adoptMu serializes this process's adoptions, so that one session is
	// never driven twice here.
	adoptMu sync.Mutex
	// replicaOn is set once the replica is recorded in the store (Run).
	replicaOn atomic.Bool
	life      context.Context
	stop      context.CancelFunc
	wg        sync.WaitGroup
	mu        sync.Mutex
	driven    map[string]context.CancelFunc
	// adopted are the sessions adopted and not yet driven on (run takes
	// them): they resume from their state instead of starting.
	adopted map[string]bool
}

// Deps are the manager's collaborators. Vault and Notifier may be nil.
type Deps struct {
	Store     mc.Store
	Driver    mc.Driver
	Providers Providers
	Vault     Vault
	Notifier  Notifier
	Logger    *slog.Logger
	// Clock tells the time and times the idle timeout and the maximum
	// lifetime (mc.SystemClock when nil); tests drive it by hand.
	Clock    mc.TimerClock
	Registry prometheus.Registerer
	// MachineKey derives each machine's VNC password and agent token; the
	// gateway must derive with the same key. Zero: a random key of this
	// process (enough for one process that also serves the viewers).
	MachineKey mc.MachineKey
}

// New returns a manager. Call Run to start its background loops and Close to
// stop them.
func New(cfg Config, d Deps) *Manager {
	cfg.setDefaults()
	if cfg.MaxMachines <= 0 {
		cfg.MaxMachines = d.Driver.Capabilities().MaxMachines
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Clock == nil {
		d.Clock = mc.SystemClock{}
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if d.MachineKey.IsZero() {
		d.MachineKey = mc.NewMachineKey(mc.NewSecret(32))
	}
	life, stop := context.WithCancel(context.Background())
	m := &Manager{
		cfg: cfg, store: d.Store, driver: d.Driver, providers: d.Providers,
		vault: d.Vault, notifier: d.Notifier, log: d.Logger, clock: d.Clock, machineKey: d.MachineKey,
		began:   d.Clock.Now().Truncate(time.Microsecond), // as the store keeps times
		cluster: d.Driver.Capabilities().Cluster,
		life:    life,
		stop:    stop,
		driven:  make(map[string]context.CancelFunc),
		adopted: make(map[string]bool),
	}
	m.metrics = newMetrics(d.Registry, d.Store)
	m.pool = newPool(d.Registry, d.Store, func() string { return m.cfg.Replica })
	return m
}

// Config returns the manager's effective configuration.
func (m *Manager) Config() Config { return m.cfg }

// Start creates a session for (userID, provider) and starts its machine in
// the background. The session comes back at once, in state pending.
// Errors: EINVALID (unknown_provider), ECONFLICT (active_session, with the
// existing session's id), EUNAVAILABLE (capacity, with RetryAfter).
func (m *Manager) Start(ctx context.Context, userID, provider string) (*mc.Session, error) {
	if _, ok := m.providers.Get(provider); !ok {
		return nil, mc.Errorf(mc.EINVALID, mc.ReasonUnknownProvider, "unknown provider %q", provider)
	}
	now := m.clock.Now().UTC()
	s := &mc.Session{
		ID:        mc.NewID(),
		UserID:    userID,
		Provider:  provider,
		CreatedAt: now,
		ExpiresAt: now.Add(m.cfg.MaxLifetime),
	}
	// The capacity check, the claim of a pooled machine and the insert are
	// one transaction in the store, so a session that is created always has
	// a machine slot.
	pooled, err := m.create(ctx, s)
	if err != nil {
		if mc.ErrorReason(err) == mc.ReasonCapacity {
			m.metrics.refused.WithLabelValues(string(mc.ReasonCapacity)).Inc()
		}
		return nil, err
	}
	m.transitions(mc.StatePending, "")
	m.log.Info("session created", mc.LogSessionID, s.ID, mc.LogUserID, userID, mc.LogProvider, provider, "pooled", pooled)
	m.drive(*s, pooled)
	return s, nil
}

// Cancel moves a live session to cancelled; the replica driving it tears its
// machine down. Cancelling a final session is a conflict.
// Errors: ENOTFOUND, ECONFLICT (session_ended).
func (m *Manager) Cancel(ctx context.Context, id string) (*mc.Session, error) {
	s, err := m.end(ctx, id, mc.StateCancelled, mc.ReasonCancelledByAPI, "cancelled through the API")
	if errors.Is(err, errFinal) {
		return s, &mc.Error{Code: mc.ECONFLICT, Reason: mc.ReasonSessionEnded, SessionID: id,
			Message: fmt.Sprintf("the session has already ended (%s)", s.State)}
	}
	return s, err
}

var errFinal = errors.New("session is final")

// end moves a session from whatever live state it is in to a final state,
// retrying when another change slips in between read and write.
func (m *Manager) end(ctx context.Context, id string, to mc.State, reason mc.Reason, msg string) (*mc.Session, error) {
	for range 10 {
		s, err := m.store.Session(ctx, id)
		if err != nil {
			return nil, err
		}
		if s.State.Final() {
			return s, errFinal
		}
		ns, err := m.store.Transition(ctx, mc.Transition{ID: id, From: s.State, Version: s.Version,
			To: to, Reason: reason, Message: msg, Replica: m.cfg.Replica, At: m.clock.Now().UTC()})
		if mc.ErrorCode(err) == mc.ECONFLICT {
			continue
		}
		if err != nil {
			return nil, err
		}
		m.transitions(to, reason)
		lvl := slog.LevelInfo
		if to == mc.StateFailed {
			lvl = slog.LevelWarn
		}
		m.log.Log(ctx, lvl, "session ended", mc.LogSessionID, id, "state", to, mc.LogReason, reason, "message", msg)
		return ns, nil
	}
	return nil, fmt.Errorf("end session %s: too many concurrent changes", id)
}

// advance moves a session one step forward from the state it must be in.
func (m *Manager) advance(ctx context.Context, id string, from, to mc.State, mach *mc.Machine) (*mc.Session, error) {
	return m.advanceWith(ctx, mc.Transition{ID: id, From: from, To: to, Machine: mach})
}

// advanceWith makes transition t (its Version, Replica and At are filled
// in), retrying when another change slips in between read and write. A
// session already in t.To is returned as it is: the answer to an earlier
// attempt was lost, but the write was made.
func (m *Manager) advanceWith(ctx context.Context, t mc.Transition) (*mc.Session, error) {
	for range 10 {
		s, err := m.store.Session(ctx, t.ID)
		if err != nil {
			return nil, err
		}
		switch {
		case s.State == t.To:
			return s, nil
		case s.State.Final():
			return s, errFinal
		case s.State != t.From:
			return s, fmt.Errorf("advance session %s to %s: state is %s, not %s", t.ID, t.To, s.State, t.From)
		}
		t.Version, t.Replica, t.At = s.Version, m.cfg.Replica, m.clock.Now().UTC()
		ns, err := m.store.Transition(ctx, t)
		if mc.ErrorCode(err) == mc.ECONFLICT {
			continue
		}
		if err != nil {
			return nil, err
		}
		m.transitions(t.To, t.Reason)
		if t.Reason != "" {
			m.log.Info("session "+string(t.To), mc.LogSessionID, t.ID, mc.LogReason, t.Reason)
		} else {
			m.log.Info("session "+string(t.To), mc.LogSessionID, t.ID)
		}
		return ns, nil
	}
	return nil, fmt.Errorf("advance session %s: too many concurrent changes", t.ID)
}

func (m *Manager) transitions(to mc.State, reason mc.Reason) {
	m.metrics.transitions.WithLabelValues(string(to), string(reason)).Inc()
}

// Driving reports whether this process is driving the session.
func (m *Manager) Driving(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.driven[id]
	return ok
}

// Close stops the background loops and every session this process drives.
// With a host driver each ends failed with reason controller_shutdown and
// its machine is destroyed (bounded), so a graceful stop leaves nothing
// behind. With a cluster driver the machines outlive this replica: the
// sessions are handed over, not ended; the replica is marked stopping and
// another adopts them at its next look, without waiting for the heartbeat
// to go stale.
func (m *Manager) Close() error {
	if m.cluster {
		m.handover.Store(true)
	}
	m.stop()
	m.wg.Wait()
	m.stopReplica()
	return nil
}
