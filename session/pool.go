package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	mc "github.com/master-controller/mc"
)

// The warm pool: per provider, machines started ahead of any session with
// a blank page, no login and no user data. A session claims one in the
// store transaction that creates it (CreateSessionFromPool) and destroys it
// at its end; a machine never returns to the pool. Pool rows live in the
// store, so a restart adopts the machines that still run and destroys the
// rest; the pool works on top of any driver.
//
// Ownership of a pooled machine follows its row: whoever removes the row
// from the pool (RemovePooled, an eviction) destroys the machine, and a
// claim hands it to the session that took it.

// pooled is one pooled machine that this process started or adopted: its
// goroutine creates it (or adopts it), waits for readiness and then for its
// exit.
type pooled struct {
	cancel context.CancelFunc
	// destroy asks the goroutine to destroy the machine on its way out:
	// someone else removed the row (recycled, evicted, surplus). Set and
	// read under pool.mu, so that release and the goroutine's last decision
	// (handOver) agree on who destroys the machine.
	destroy bool
}

// pool is the manager's pool state in memory: which pooled machines this
// process looks after. The pool itself is in the store.
type pool struct {
	mu      sync.Mutex
	tracked map[string]*pooled
	wake    chan struct{}
	// failedAt pauses refilling a provider after a failed start.
	failedAt map[string]time.Time

	claims       *prometheus.CounterVec
	claimSeconds prometheus.Histogram
	retired      *prometheus.CounterVec
}

func newPool(reg prometheus.Registerer, store mc.PoolStore, replica func() string) *pool {
	p := &pool{
		tracked:  map[string]*pooled{},
		wake:     make(chan struct{}, 1),
		failedAt: map[string]time.Time{},
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mc_pool_claims_total",
			Help: "Session creations that took a pooled machine (hit) or started cold (miss), by provider.",
		}, []string{"provider", "result"}),
		claimSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mc_pool_claim_seconds",
			Help:    "Time of the store transaction that creates a session and claims a pooled machine.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		retired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mc_pool_retired_total",
			Help: "Pooled machines destroyed without a session, by reason code.",
		}, []string{"reason"}),
	}
	reg.MustRegister(p.claims, p.claimSeconds, p.retired, &poolCollector{store: store, replica: replica})
	return p
}

func (p *pool) track(id string, cancel context.CancelFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tracked[id] = &pooled{cancel: cancel}
}

func (p *pool) forget(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.tracked, id)
}

// destroying reports whether a destroy of machine id was asked for.
func (p *pool) destroying(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.tracked[id]
	return e != nil && e.destroy
}

// markDestroy asks for machine id to be destroyed by its goroutine.
func (p *pool) markDestroy(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.tracked[id]; e != nil {
		e.destroy = true
	}
}

// handOver stops looking after machine id, whose row someone else took
// out of the pool, unless a destroy of it was asked for: then it stays
// looked after until destroyed, and handOver reports true. A release that
// comes after handOver finds nothing and destroys the machine itself.
func (p *pool) handOver(id string) (destroy bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.tracked[id]; e != nil && e.destroy {
		return true
	}
	delete(p.tracked, id)
	return false
}

// tracks reports whether this process looks after pooled machine id.
func (p *pool) tracks(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.tracked[id]
	return ok
}

// release stops looking after machine id: a claim hands it over
// (destroy false); a removal has it destroyed. It reports whether this
// process looked after it.
func (p *pool) release(id string, destroy bool) bool {
	p.mu.Lock()
	e, ok := p.tracked[id]
	if ok && destroy {
		e.destroy = true
	}
	p.mu.Unlock()
	if ok {
		e.cancel()
	}
	return ok
}

func (p *pool) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// poolOn reports whether any provider has a pool.
func (m *Manager) poolOn() bool {
	for _, n := range m.cfg.Pool {
		if n > 0 {
			return true
		}
	}
	return false
}

// capacity is the bound on this replica's machines, pooled ones included.
func (m *Manager) capacity() mc.Capacity {
	return mc.Capacity{Max: m.cfg.MaxMachines, PerReplica: !m.driver.Capabilities().Cluster}
}

// create inserts the session, on a pooled machine when one is ready. It
// reports whether the session claimed one.
func (m *Manager) create(ctx context.Context, s *mc.Session) (bool, error) {
	if !m.poolOn() {
		return false, m.store.CreateSession(ctx, s, m.cfg.Replica, m.capacity())
	}
	start := time.Now()
	claim, err := m.store.CreateSessionFromPool(ctx, s, m.cfg.Replica, m.capacity())
	m.pool.claimSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return false, err
	}
	for _, v := range claim.Evicted {
		m.log.Info("pooled machine evicted for a cold start", mc.LogMachineID, v.ID, mc.LogProvider, v.Provider,
			mc.LogReason, mc.ReasonPoolEvicted)
		m.retire(v.ID, mc.ReasonPoolEvicted)
	}
	result := "miss"
	if claim.Pooled {
		result = "hit"
		m.pool.release(s.ID, false)
	}
	m.pool.claims.WithLabelValues(s.Provider, result).Inc()
	if m.cfg.Pool[s.Provider] > 0 || claim.Pooled {
		m.pool.kick()
	}
	return claim.Pooled, nil
}

// retire has a pooled machine that left the pool destroyed: by the
// goroutine that looks after it, or here when none does.
func (m *Manager) retire(id string, reason mc.Reason) {
	m.pool.retired.WithLabelValues(string(reason)).Inc()
	if m.pool.release(id, true) {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.teardown(id, m.log)
	}()
}

// claimed runs a session that took a ready pooled machine: the login starts
// at once (the provider's start URL and login command open only now).
func (m *Manager) claimed(ctx context.Context, s *mc.Session, expires time.Time, log *slog.Logger) error {
	prov, ok := m.providers.Get(s.Provider)
	if !ok {
		return failed(mc.ReasonUnknownProvider, fmt.Errorf("provider %q is no longer configured", s.Provider))
	}
	m.transitions(mc.StateReady, mc.ReasonPooled)
	log.Info("session ready on a pooled machine", mc.LogMachineID, s.Machine.ID, mc.LogReason, mc.ReasonPooled)
	agent := newAgentClient(s.Machine, m.machineKey.Secrets(s.ID).AgentToken)
	agent.gone = m.watchGone(ctx, s.ID, s.Machine.ID, expires)
	return m.serve(ctx, s.ID, expires, prov, agent, log)
}

// runPool keeps the pool filled until ctx ends or the manager closes.
func (m *Manager) runPool(ctx context.Context) {
	if !m.poolOn() {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(m.cfg.PoolCheck)
		defer t.Stop()
		for {
			if err := m.Refill(ctx); err != nil && ctx.Err() == nil && m.life.Err() == nil {
				m.log.Warn("refill pool", mc.LogError, err, mc.LogReason, mc.ErrorReason(err))
			}
			select {
			case <-ctx.Done():
				return
			case <-m.life.Done():
				return
			case <-m.pool.wake:
			case <-t.C:
			}
		}
	}()
}

// Refill brings the pool of each provider to its target within capacity,
// and recycles pooled machines older than PoolMaxAge and surplus ones. A
// refill stops at the first refusal for capacity: a session's cold start
// has priority, and it evicts a pooled machine when it needs the room.
func (m *Manager) Refill(ctx context.Context) error {
	list, err := m.store.PooledMachines(ctx, m.cfg.Replica)
	if err != nil {
		return fmt.Errorf("list pooled machines: %w", err)
	}
	now := m.clock.Now()
	have := map[string]int{}
	for _, p := range list {
		switch {
		case !m.pool.tracks(p.ID):
			continue // not yet adopted by reconcile, or another process's
		case now.Sub(p.CreatedAt) >= m.cfg.PoolMaxAge:
			m.remove(ctx, p, "pool_recycled", "recycled a pooled machine older than the maximum age")
		case have[p.Provider] >= m.cfg.Pool[p.Provider]:
			m.remove(ctx, p, "pool_surplus", "removed a pooled machine above the pool's target")
		default:
			have[p.Provider]++
		}
	}
	for _, prov := range slices.Sorted(maps.Keys(m.cfg.Pool)) {
		if _, ok := m.providers.Get(prov); !ok {
			continue
		}
		m.pool.mu.Lock()
		paused := now.Sub(m.pool.failedAt[prov]) < m.cfg.PoolCheck
		m.pool.mu.Unlock()
		for n := have[prov]; n < m.cfg.Pool[prov] && !paused; n++ {
			err := m.fill(ctx, prov)
			if mc.ErrorReason(err) == "capacity" {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// remove takes p out of the pool and has it destroyed.
func (m *Manager) remove(ctx context.Context, p mc.PooledMachine, reason mc.Reason, msg string) {
	if err := m.store.RemovePooled(ctx, p.ID); err != nil {
		return // claimed or removed meanwhile
	}
	m.log.Info(msg, mc.LogMachineID, p.ID, mc.LogProvider, p.Provider, mc.LogReason, reason)
	m.retire(p.ID, reason)
}

// fill adds one pooled machine of provider and starts it.
// Errors: EUNAVAILABLE (capacity) when the host is full.
func (m *Manager) fill(ctx context.Context, provider string) error {
	p := mc.PooledMachine{ID: mc.NewID(), Provider: provider, Replica: m.cfg.Replica,
		CreatedAt: m.clock.Now().UTC()}
	pctx, cancel := context.WithCancel(m.life)
	m.pool.track(p.ID, cancel) // before the row: reconcile must not take it for a leftover
	if err := m.store.AddPooled(ctx, p, m.capacity()); err != nil {
		m.pool.forget(p.ID)
		cancel()
		return err
	}
	m.wg.Add(1)
	go m.keep(pctx, p, false)
	return nil
}

// keep is one pooled machine's goroutine: it starts the machine (or adopts
// a running one), marks it ready, and waits for its exit or its release.
func (m *Manager) keep(ctx context.Context, p mc.PooledMachine, adopted bool) {
	defer m.wg.Done()
	log := m.log.With(mc.LogMachineID, p.ID, mc.LogProvider, p.Provider)
	var reason mc.Reason
	defer func() {
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
		defer cancel()
		// Destroy when asked, or when this goroutine takes the row out of
		// the pool itself (the machine died or failed, or the controller
		// stops); a claimed machine is the session's. The machine stays
		// looked after until it is destroyed, so that a reconcile pass
		// meanwhile does not take it for a leftover.
		defer m.pool.forget(p.ID)
		if !m.pool.destroying(p.ID) {
			if err := m.store.RemovePooled(bg, p.ID); err != nil {
				// Claimed: the session's now. Or taken out of the pool
				// by another, who has it destroyed: here if it asked
				// before the hand-over, else itself.
				if m.pool.handOver(p.ID) {
					m.teardown(p.ID, m.log.With(mc.LogProvider, p.Provider))
				}
				return
			}
			if reason == "" {
				reason = mc.ReasonControllerStop
			}
			m.pool.retired.WithLabelValues(string(reason)).Inc()
			if reason != mc.ReasonControllerStop {
				log.Warn("pooled machine lost", mc.LogReason, reason)
				m.pool.kick()
			}
		}
		m.teardown(p.ID, m.log.With(mc.LogProvider, p.Provider))
	}()
	if !adopted {
		sctx, scancel := context.WithTimeout(ctx, m.cfg.StartTimeout)
		mach, err := m.driver.Create(sctx, mc.MachineSpec{ID: p.ID, SessionID: p.ID, Pooled: true, Provider: p.Provider,
			Secrets: m.machineKey.Secrets(p.ID), Width: m.cfg.Width, Height: m.cfg.Height})
		if err == nil {
			agent := newAgentClient(mach, m.machineKey.Secrets(p.ID).AgentToken)
			if err = WaitReady(sctx, mach, agent.Client); err == nil {
				err = m.checkSandbox(sctx, agent, func() bool { return sctx.Err() != nil || m.pool.destroying(p.ID) }, log)
			}
		}
		scancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			reason = mc.ReasonStartFailed
			var st *stage
			if errors.As(err, &st) {
				reason = st.reason
			}
			log.Warn("start pooled machine", mc.LogError, err, mc.LogReason, reason)
			m.pool.mu.Lock()
			m.pool.failedAt[p.Provider] = m.clock.Now()
			m.pool.mu.Unlock()
			return
		}
		if err := m.store.PooledReady(ctx, p.ID, mach, m.clock.Now().UTC()); err != nil {
			if mc.ErrorCode(err) == mc.ENOTFOUND {
				m.pool.markDestroy(p.ID) // removed while it started
			}
			return
		}
		m.metrics.startSeconds.Observe(m.clock.Now().Sub(p.CreatedAt).Seconds())
		log.Info("pooled machine ready", "start_seconds", m.clock.Now().Sub(p.CreatedAt).Seconds())
	}
	err := m.driver.Wait(ctx, p.ID)
	if ctx.Err() == nil {
		var exited bool
		if reason, exited = exitReason(err); !exited {
			reason = mc.ReasonMachineMissing
		}
	}
}

// reconcilePool adopts this replica's pooled machines that a previous
// process left running and ready, and removes the rest of its rows and
// destroys their machines. It returns the other replicas' pooled machines,
// which are theirs to look after (a cluster driver lists every replica's).
func (m *Manager) reconcilePool(ctx context.Context, onHost map[string]mc.MachineStatus, rep *Report) (map[string]bool, error) {
	list, err := m.store.PooledMachines(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list pooled machines: %w", err)
	}
	others := map[string]bool{}
	for _, p := range list {
		if p.Replica != m.cfg.Replica {
			others[p.ID] = true
			continue
		}
		if m.pool.tracks(p.ID) {
			continue
		}
		ms, ok := onHost[p.ID]
		if ok && ms.Running && p.State == mc.PoolReady && m.poolOn() {
			hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, herr := newAgentClient(p.Machine, m.machineKey.Secrets(p.ID).AgentToken).Health(hctx)
			cancel()
			if herr == nil {
				pctx, cancel := context.WithCancel(m.life)
				m.pool.track(p.ID, cancel)
				m.wg.Add(1)
				go m.keep(pctx, p, true)
				rep.Adopted = append(rep.Adopted, p.ID)
				m.log.Info("adopted pooled machine", mc.LogMachineID, p.ID, mc.LogProvider, p.Provider)
				continue
			}
		}
		if err := m.store.RemovePooled(ctx, p.ID); err != nil && mc.ErrorCode(err) != mc.ENOTFOUND {
			return nil, fmt.Errorf("remove pooled machine %s: %w", p.ID, err)
		}
		m.pool.retired.WithLabelValues(string(mc.ReasonPoolOrphaned)).Inc()
		if !ok {
			continue
		}
		if err := m.driver.Destroy(ctx, p.ID); err != nil {
			m.log.Error("destroy pooled machine", mc.LogMachineID, p.ID, mc.LogError, err, mc.LogReason, mc.ReasonDestroyFailed)
			continue
		}
		delete(onHost, p.ID)
		rep.Destroyed = append(rep.Destroyed, p.ID)
		m.log.Warn("destroyed pooled machine left by an earlier process", mc.LogMachineID, p.ID, mc.LogReason, mc.ReasonPoolOrphaned)
	}
	return others, nil
}

// Pool reports the warm pool from the store.
func (m *Manager) Pool(ctx context.Context) (mc.PoolStatus, error) {
	replica := m.cfg.Replica
	if m.driver.Capabilities().Cluster {
		replica = ""
	}
	list, err := m.store.PooledMachines(ctx, replica)
	if err != nil {
		return mc.PoolStatus{}, err
	}
	by := map[string]*mc.PoolProvider{}
	get := func(name string) *mc.PoolProvider {
		if by[name] == nil {
			by[name] = &mc.PoolProvider{Provider: name}
		}
		return by[name]
	}
	for name, n := range m.cfg.Pool {
		if n > 0 {
			get(name).Target = n
		}
	}
	for _, p := range list {
		if p.State == mc.PoolReady {
			get(p.Provider).Ready++
		} else {
			get(p.Provider).Starting++
		}
	}
	st := mc.PoolStatus{Replica: m.cfg.Replica, MaxAge: m.cfg.PoolMaxAge.String(), Providers: []mc.PoolProvider{}}
	for _, name := range slices.Sorted(maps.Keys(by)) {
		st.Providers = append(st.Providers, *by[name])
	}
	return st, nil
}

// poolCollector reports the pool from the store at scrape time.
type poolCollector struct {
	store   mc.PoolStore
	replica func() string
}

var poolDesc = prometheus.NewDesc("mc_pool_machines", "Pooled machines of this replica by provider and state, from the store.",
	[]string{"provider", "state"}, nil)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- poolDesc }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	list, err := c.store.PooledMachines(ctx, c.replica())
	if err != nil {
		return
	}
	type key struct{ provider, state string }
	n := map[key]int{}
	for _, p := range list {
		n[key{p.Provider, string(p.State)}]++
		n[key{p.Provider, string(otherState(p.State))}] += 0
	}
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(poolDesc, prometheus.GaugeValue, float64(v), k.provider, k.state)
	}
}

func otherState(s mc.PoolState) mc.PoolState {
	if s == mc.PoolReady {
		return mc.PoolStarting
	}
	return mc.PoolReady
}
