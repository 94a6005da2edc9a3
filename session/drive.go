package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/rfb"
)

// teardownTimeout bounds destroying one machine.
const teardownTimeout = 30 * time.Second

// drive starts the goroutine that takes session s, as created, through its
// life. pooled says that s claimed a pooled machine in the transaction that
// created it: the create path knows, and the session is driven on that
// machine without reading the store again (a read that fails must not send
// it down the cold path to start a second machine).
func (m *Manager) drive(s mc.Session, pooled bool) {
	id := s.ID
	ctx, cancel := context.WithCancel(m.life)
	m.mu.Lock()
	m.driven[id] = cancel
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer func() {
			m.mu.Lock()
			delete(m.driven, id)
			m.mu.Unlock()
			cancel()
		}()
		m.run(ctx, s, pooled)
	}()
}

// stage is a failure that carries the reason code the session ends with.
type stage struct {
	state  mc.State
	reason mc.Reason
	err    error
}

func (e *stage) Error() string { return string(e.reason) + ": " + e.err.Error() }
func (e *stage) Unwrap() error { return e.err }

func failed(reason mc.Reason, err error) error {
	return &stage{state: mc.StateFailed, reason: reason, err: err}
}

// run is one session's life on this replica; s is the session as created.
func (m *Manager) run(life context.Context, s mc.Session, pooled bool) {
	id, expires := s.ID, s.ExpiresAt
	// An adopted session (taken over from another replica, or from an
	// earlier process of this one) is driven on from the state it is in.
	adopted := m.takeAdopted(id)
	log := m.log.With(mc.LogSessionID, id)
	// ctx ends when the session reaches a final state (from any replica),
	// when the machine exits, or when this process stops.
	ctx, cancel := context.WithCancelCause(life)
	defer cancel(nil)
	// sctx bounds the start: creating the machine, its readiness, and
	// recording them while the store may be unreachable.
	sctx, scancel := context.WithTimeout(ctx, m.cfg.StartTimeout)
	defer scancel()
	endedc := make(chan *mc.Session, 1)
	// The machine's id is chosen before it is asked for, so that teardown
	// can destroy whatever a Create that failed halfway left.
	machineID := mc.NewMachineID()
	var watch <-chan *mc.Session
	err := m.persist(sctx, id, "watch session", func(c context.Context) (err error) {
		watch, err = m.store.Watch(ctx, id)
		return err
	})
	if err != nil {
		err = storeFailed(ctx, "watch session", err)
	} else {
		go func() {
			for s := range watch {
				if s.State.Final() {
					endedc <- s
					cancel(errFinal)
					return
				}
				if s.Replica != m.cfg.Replica {
					cancel(errLost) // another replica adopted it
					return
				}
			}
		}()
		if adopted {
			err = m.resume(ctx, sctx, id, &machineID, expires, log)
		} else {
			err = m.lifecycle(ctx, sctx, &s, pooled, &machineID, log)
		}
	}

	var final *mc.Session
	switch {
	case err == nil:
		// completed: give the viewer a moment to see the signed-in page.
		select {
		case <-time.After(m.cfg.DestroyGrace):
		case <-life.Done():
		}
		m.teardown(machineID, log)
	case errors.Is(err, errFinal) || errors.Is(context.Cause(ctx), errFinal):
		// Ended elsewhere (cancelled, expired, failed by another replica).
		m.teardown(machineID, log)
	case errors.Is(context.Cause(ctx), errLost):
		// Another replica drives it now (this one was taken for dead):
		// its machine and its end are that replica's.
		log.Warn("session adopted by another replica; no longer driving it", mc.LogMachineID, machineID)
		return
	case life.Err() != nil && m.handover.Load():
		// The machine outlives this replica: another adopts the session.
		log.Info("session handed over", mc.LogMachineID, machineID)
		return
	case life.Err() != nil:
		final = m.finish(ctx, id, machineID, expires, mc.StateFailed, mc.ReasonControllerStop,
			"the controller is shutting down", log)
	default:
		var st *stage
		if !errors.As(err, &st) {
			st = &stage{state: mc.StateFailed, reason: mc.ReasonInternal, err: err}
		}
		final = m.finish(ctx, id, machineID, expires, st.state, st.reason, st.err.Error(), log)
	}
	m.pool.kick() // a slot is free
	if final == nil {
		select {
		case final = <-endedc:
		default:
			final, _ = m.store.Session(context.WithoutCancel(ctx), id)
		}
	}
	if m.notifier != nil && final != nil && final.State.Final() {
		m.notifier.SessionEnded(final)
	}
}

// Store writes that matter (the start, readiness, the credential, a final
// state) are retried while the store is unavailable, after a pause of
// Config.StoreRetry that doubles up to storeRetryMax, until they succeed or
// the session's own deadline passes; during shutdown only shutdownAttempts
// times.
const (
	storeRetryMax    = 5 * time.Second
	shutdownAttempts = 3
)

// persist runs op, a store write that matters, until it succeeds, fails for
// a reason other than the store's being unavailable (mc.EUNAVAILABLE), or
// ctx ends (the session's deadline). It returns op's last error.
func (m *Manager) persist(ctx context.Context, id, what string, op func(context.Context) error) error {
	backoff := m.cfg.StoreRetry
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		if err == nil || mc.ErrorCode(err) != mc.EUNAVAILABLE {
			if attempt > 1 {
				m.log.Info("store write recorded after retries", mc.LogSessionID, id, "what", what, "attempts", attempt)
			}
			return err
		}
		if attempt == 1 {
			m.log.Warn("store unavailable; retrying", mc.LogSessionID, id, "what", what,
				mc.LogReason, mc.ReasonStoreUnreachable, mc.LogError, err)
			m.metrics.refused.WithLabelValues(string(mc.ReasonStoreUnreachable)).Inc()
		}
		if m.life.Err() != nil && attempt >= shutdownAttempts {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		backoff = min(backoff*2, storeRetryMax)
	}
}

// endDurable ends the session like end, retrying while the store is
// unavailable until the session's maximum lifetime (expires) plus a start
// timeout has passed, whatever happens to ctx. It logs a failure to record
// the end and returns the final session, or nil.
func (m *Manager) endDurable(ctx context.Context, id string, expires time.Time, to mc.State, reason mc.Reason, msg string) *mc.Session {
	dctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), expires.Add(m.cfg.StartTimeout))
	defer cancel()
	var final *mc.Session
	err := m.persist(dctx, id, "end session", func(c context.Context) (err error) {
		final, err = m.end(c, id, to, reason, msg)
		return err
	})
	if err != nil && !errors.Is(err, errFinal) {
		m.log.Error("record session end", mc.LogSessionID, id, "state", to, "end_reason", reason,
			mc.LogError, err, mc.LogReason, mc.ErrorReason(err))
		return nil
	}
	return final
}

// finish ends the session and destroys its machine: the end first, so that
// its viewers learn why before the machine goes; but when the store cannot
// record the end at once, the machine is destroyed first and the end is
// retried after (endDurable). It returns the final session, or nil.
func (m *Manager) finish(ctx context.Context, id, machineID string, expires time.Time, to mc.State, reason mc.Reason, msg string, log *slog.Logger) *mc.Session {
	final, err := m.end(context.WithoutCancel(ctx), id, to, reason, msg)
	m.teardown(machineID, log)
	if err == nil || errors.Is(err, errFinal) {
		return final
	}
	return m.endDurable(ctx, id, expires, to, reason, msg)
}

// storeFailed classifies a store write that could not be made: the session
// ends with store_unreachable when the store was unavailable until the
// deadline of the write (the start timeout, or the session's lifetime).
func storeFailed(ctx context.Context, what string, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, errFinal):
		return err
	case mc.ErrorCode(err) == mc.EUNAVAILABLE:
		return failed(mc.ReasonStoreUnreachable, fmt.Errorf("%s: the store did not answer in time: %w", what, err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// lifecycle runs start, readiness and login; it returns nil once the
// session is completed. sctx is ctx bounded by the start timeout. created
// is the session as created; pooled says it claimed a pooled machine then,
// and it runs on that machine (created.Machine). machineID names the
// machine to create; a session on a pooled machine sets it to that
// machine's id, so that run tears that one down.
func (m *Manager) lifecycle(ctx, sctx context.Context, created *mc.Session, pooled bool, machineID *string, log *slog.Logger) error {
	id, expires := created.ID, created.ExpiresAt
	if pooled {
		*machineID = created.Machine.ID
		return m.claimed(ctx, created, expires, log)
	}
	var s *mc.Session
	err := m.persist(sctx, id, "record start", func(c context.Context) (err error) {
		s, err = m.advance(c, id, mc.StatePending, mc.StateStarting, nil)
		return err
	})
	if err != nil {
		return storeFailed(ctx, "record start", err)
	}
	prov, ok := m.providers.Get(s.Provider)
	if !ok {
		return failed(mc.ReasonUnknownProvider, fmt.Errorf("provider %q is no longer configured", s.Provider))
	}
	started := m.clock.Now()
	// The machine's secrets are derived, never stored: any replica with
	// the same machine key derives them again from the session id.
	secrets := m.machineKey.Secrets(s.ID)
	mach, err := m.driver.Create(sctx, mc.MachineSpec{
		ID: *machineID, SessionID: s.ID, Provider: s.Provider, StartURL: prov.StartURL,
		Secrets: secrets, Width: m.cfg.Width, Height: m.cfg.Height,
	})
	if err != nil {
		return startErr(ctx, sctx, "create machine", err)
	}
	if err := m.persist(sctx, id, "record machine", func(c context.Context) error {
		return m.recordMachine(c, s, mach)
	}); err != nil {
		return storeFailed(ctx, "record machine", err)
	}
	agent := newAgentClient(mach, secrets.AgentToken)
	agent.gone = m.watchGone(ctx, id, mach.ID, expires)
	if err := WaitReady(sctx, mach, agent.Client); err != nil {
		return startErr(ctx, sctx, "wait for machine", err)
	}
	if err := m.persist(sctx, id, "record ready", func(c context.Context) error {
		_, err := m.advance(c, id, mc.StateStarting, mc.StateReady, &mach)
		return err
	}); err != nil {
		return storeFailed(ctx, "record ready", err)
	}
	m.metrics.startSeconds.Observe(m.clock.Now().Sub(started).Seconds())
	log.Info("machine ready", mc.LogMachineID, mach.ID, "start_seconds", m.clock.Now().Sub(started).Seconds())
	// The browser's own sandbox is read beside the user's first look (a
	// pooled machine's before it is offered): no one waits for it, and a
	// browser without it ends the session at once.
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		// A read that failed because the session ended (its machine
		// torn down before ctx ends) is no finding.
		ended := func() bool {
			s, err := m.store.Session(context.WithoutCancel(ctx), id)
			return ctx.Err() != nil || err == nil && s.State.Final()
		}
		var st *stage
		if err := m.checkSandbox(ctx, agent, ended, log); errors.As(err, &st) {
			m.endDurable(ctx, id, expires, st.state, st.reason, st.err.Error())
		}
	}()
	return m.serve(ctx, id, expires, prov, agent, log)
}

// machineGone is closed (done) when a machine's processes have exited;
// reason, set before, says why: machine_exited or machine_oom.
type machineGone struct {
	done   chan struct{}
	reason mc.Reason
}

// exitReason is the reason a session ends with when the driver's Wait for
// its machine returned err: machine_exited (nil), or the reason of an
// unavailable error (machine_oom; a cluster's machine_evicted,
// image_pull_failed, unschedulable); ok is false when err says the machine
// did not exit (unknown, or ctx ended).
func exitReason(err error) (reason mc.Reason, ok bool) {
	switch {
	case err == nil:
		return mc.ReasonMachineExited, true
	case mc.ErrorCode(err) == mc.EUNAVAILABLE && mc.ErrorReason(err) != "":
		return mc.ErrorReason(err), true
	}
	return "", false
}

// watchGone ends the session at once when its machine's processes exit
// (machine_exited, or machine_oom when they died of its memory limit); the
// machineGone it returns is closed then.
func (m *Manager) watchGone(ctx context.Context, id, machineID string, expires time.Time) *machineGone {
	gone := &machineGone{done: make(chan struct{})}
	go func() {
		reason, ok := exitReason(m.driver.Wait(ctx, machineID))
		if !ok || ctx.Err() != nil {
			return
		}
		gone.reason = reason
		close(gone.done)
		msg := "the machine's processes exited"
		switch reason {
		case mc.ReasonMachineOOM:
			msg = "the machine ran out of memory"
		case mc.ReasonMachineExited:
		default:
			msg = "the machine went away: " + string(reason)
		}
		m.endDurable(ctx, id, expires, mc.StateFailed, reason, msg)
	}()
	return gone
}

// serve runs a ready session: its lifetime limits, and the login.
func (m *Manager) serve(ctx context.Context, id string, expires time.Time, prov mc.Provider, agent *agentClient, log *slog.Logger) error {
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	go m.watchLifetime(lctx, id)
	dctx, dcancel := context.WithDeadline(ctx, expires.Add(m.cfg.StartTimeout))
	defer dcancel()
	return m.login(ctx, dctx, id, prov, agent, log)
}

// recordMachine records the machine of s, which is starting at s.Version. A
// retry after a write whose answer was lost finds the machine recorded.
func (m *Manager) recordMachine(ctx context.Context, s *mc.Session, mach mc.Machine) error {
	_, err := m.store.SetMachine(ctx, s.ID, s.Version, mach)
	if mc.ErrorCode(err) != mc.ECONFLICT {
		return err
	}
	cur, gerr := m.store.Session(ctx, s.ID)
	switch {
	case gerr != nil:
		return gerr
	case cur.State.Final():
		return errFinal
	case cur.Machine.ID == mach.ID:
		return nil
	}
	return err
}

// startErr classifies a failure to start: the start timeout, or a failure.
func startErr(ctx, sctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if sctx.Err() != nil {
		return failed(mc.ReasonStartTimeout, fmt.Errorf("%s: the machine did not become ready in time: %w", what, err))
	}
	// A driver that says why a machine cannot be had (a cluster's
	// unschedulable, image_pull_failed) gives the session that reason.
	if r := mc.ErrorReason(err); mc.ErrorCode(err) == mc.EUNAVAILABLE && r != "" {
		return failed(r, fmt.Errorf("%s: %w", what, err))
	}
	return failed(mc.ReasonStartFailed, fmt.Errorf("%s: %w", what, err))
}

// WaitReady waits until the machine's agent reports it healthy and its VNC
// server answers an RFB banner on the controller's own path: what makes a
// machine ready for a session (and for "doctor --machine"). The agent is
// asked with a long poll (readyWait) that it answers the moment its Xvnc
// and Chromium run, so no probe interval is added to the start. Before the
// agent listens, or when it answers at once that it is not healthy (an
// agent that does not wait), it is asked again after a short backoff that
// stops growing at readyPollMax. It returns ctx's error, with the last
// probe's, when ctx ends first.
func WaitReady(ctx context.Context, mach mc.Machine, agent *agentproto.Client) error {
	backoff := 10 * time.Millisecond
	var last error
	for {
		if _, last = agent.WaitHealth(ctx, readyWait); last == nil {
			if last = rfb.Probe(ctx, mach.VNCEndpoint()); last == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, readyPollMax)
	}
}

// readyWait is how long one readiness long poll may be held by the agent;
// readyPollMax bounds WaitReady's backoff between polls that fail at once.
const (
	readyWait    = 5 * time.Second
	readyPollMax = 50 * time.Millisecond
)

// login starts the provider's login in the agent, waits for its result,
// seals it into the vault and completes the session. dctx is ctx bounded by
// the session's deadline, for the store writes that are retried.
func (m *Manager) login(ctx, dctx context.Context, id string, prov mc.Provider, agent *agentClient, log *slog.Logger) error {
	if err := m.startLogin(ctx, prov, agent); err != nil {
		return err
	}
	_ = m.store.Touch(ctx, id, m.clock.Now().UTC())
	timeout := prov.LoginTimeout
	if timeout <= 0 {
		timeout = 15 * time.Minute
	}
	// The agent ends the login at timeout itself, with the command's last
	// lines; the controller's own deadline comes a little later, for an
	// agent that does not.
	deadline := time.NewTimer(timeout + min(timeout/10, 30*time.Second))
	defer deadline.Stop()
	lastMsg := ""
	var last mc.LoginProgress
	var seen int64 // the agent's status Seq last seen
	capturing := false
	hurried := false // this poll followed its predecessor at once
	for {
		// Long-poll the agent. Polls start at least LoginPoll apart, but
		// a changed status is followed by the next poll at once (the
		// user's page may already show what it says), though not twice
		// in a row: an agent whose status changes at every answer (broken
		// or hostile) is asked at most twice per LoginPoll, and one that
		// answers at once with an unchanged status (one without long
		// polls) once.
		next := time.NewTimer(m.cfg.LoginPoll)
		type answer struct {
			st  agentproto.LoginStatus
			err error
		}
		ansc := make(chan answer, 1)
		go func() {
			st, err := agent.LoginStatus(ctx, seen, 20*time.Second)
			ansc <- answer{st, err}
		}()
		var ans answer
		select {
		case <-ctx.Done():
			next.Stop()
			return ctx.Err()
		case <-deadline.C:
			next.Stop()
			return &stage{state: mc.StateExpired, reason: mc.ReasonLoginTimeout,
				err: fmt.Errorf("the login did not finish within %s", timeout)}
		case ans = <-ansc:
		}
		st, err := ans.st, ans.err
		if err != nil {
			next.Stop()
			return agentFailed(ctx, agent, mc.ReasonAgentError, fmt.Errorf("login status: %w", err))
		}
		changed := st.Seq != seen
		seen = st.Seq
		msg := st.State + st.Message + st.URL + string(st.Phase)
		if msg != lastMsg {
			lastMsg = msg
			_ = m.store.Touch(ctx, id, m.clock.Now().UTC())
		}
		if st.Phase != "" && (st.Phase != last.Phase || st.URL != last.URL) {
			last = mc.LoginProgress{Phase: st.Phase, URL: st.URL, UpdatedAt: m.clock.Now().UTC()}
			// A write cut short because the session ended meanwhile (its
			// context is done) is no store fault.
			if _, err := m.store.SetLogin(ctx, id, last, m.cfg.Replica); err != nil && mc.ErrorCode(err) != mc.ECONFLICT && ctx.Err() == nil {
				log.Warn("record login progress", mc.LogError, err, mc.LogReason, mc.ReasonStoreError)
			} else if err == nil {
				log.Info("login progress", "phase", st.Phase, "url", st.URL)
			}
			// A CLI's sign-in page is in front of the user: the login is
			// capturing from now on. (A page-only login such as demo stays
			// ready until its files are complete.)
			if st.Phase == mc.PhaseWaitingForUser && !capturing && len(prov.LoginCommand) > 0 {
				if err := m.persist(dctx, id, "record capturing", func(c context.Context) error {
					_, err := m.advance(c, id, mc.StateReady, mc.StateCapturing, nil)
					return err
				}); err != nil {
					return storeFailed(ctx, "record capturing", err)
				}
				capturing = true
			}
		}
		if st.State != agentproto.StateComplete && st.State != agentproto.StateFailed {
			select {
			case <-next.C: // this poll took LoginPoll or longer
				hurried = false
				continue
			default:
			}
			if hurried = changed && !hurried; hurried {
				next.Stop()
				continue
			}
			select {
			case <-ctx.Done():
				next.Stop()
				return ctx.Err()
			case <-next.C:
			}
			continue
		}
		next.Stop()
		if st.State == agentproto.StateComplete {
			return m.capture(ctx, dctx, id, prov, agent, log)
		}
		reason := st.Reason
		if reason == "" {
			reason = mc.ReasonAgentError
		}
		// The command's last lines (redacted by the agent) say where it
		// stopped; they go into the event and the log line.
		msg = st.Message
		if len(st.Lines) > 0 {
			msg += "; last output: " + strings.Join(st.Lines, " | ")
		}
		if reason == mc.ReasonLoginTimeout {
			return &stage{state: mc.StateExpired, reason: reason, err: errors.New(msg)}
		}
		if reason == mc.ReasonLoginCancelled {
			// The agent is stopping: its machine is going, and why
			// (machine_exited, machine_oom) is the session's reason.
			return agentFailed(ctx, agent, reason, fmt.Errorf("login failed: %s", msg))
		}
		return failed(reason, fmt.Errorf("login failed: %s", msg))
	}
}

// agentFailed classifies a failed agent request. When the machine's
// processes died, the agent's connection broke because of it: the session
// ends with machine_exited (or machine_oom), not an agent error. The driver
// reports an exit within a second, so that long is waited for it.
func agentFailed(ctx context.Context, agent *agentClient, reason mc.Reason, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-agent.gone.done:
		return failed(agent.gone.reason, fmt.Errorf("the machine's processes exited: %w", err))
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return failed(reason, err)
	}
}

// capture fetches the login's result once, seals it and completes the
// session. The store writes are retried until dctx ends.
func (m *Manager) capture(ctx, dctx context.Context, id string, prov mc.Provider, agent *agentClient, log *slog.Logger) error {
	s, err := m.store.Session(ctx, id)
	if err != nil {
		return err
	}
	// A CLI's session is capturing since its sign-in page was shown.
	if s.State != mc.StateCapturing {
		if err := m.persist(dctx, id, "record capturing", func(c context.Context) (err error) {
			s, err = m.advance(c, id, mc.StateReady, mc.StateCapturing, nil)
			return err
		}); err != nil {
			return storeFailed(ctx, "record capturing", err)
		}
	}
	res, err := agent.LoginResult(ctx)
	if err != nil {
		return agentFailed(ctx, agent, mc.ReasonCaptureFailed, fmt.Errorf("fetch login result: %w", err))
	}
	if len(res.Files) == 0 {
		return failed(mc.ReasonCaptureFailed, errors.New("the login result holds no files"))
	}
	if m.vault == nil {
		return failed(mc.ReasonCaptureFailed, errors.New("no vault is configured"))
	}
	cred := mc.Credential{UserID: s.UserID, Provider: s.Provider, SessionID: s.ID,
		CapturedAt: m.clock.Now().UTC(), Meta: prov.Meta(res.Files), Files: res.Files}
	// Once fetched, the result exists nowhere else (the agent has let it
	// go): a replica that stops now seals it and completes the session
	// before it goes, rather than hand over a session whose result is lost.
	// Only the session's end elsewhere cuts the seal short.
	sealCtx, cancelSeal := detached(dctx)
	defer cancelSeal()
	defer context.AfterFunc(ctx, func() {
		if errors.Is(context.Cause(ctx), errFinal) {
			cancelSeal()
		}
	})()
	if err := m.persist(sealCtx, id, "seal credential", func(c context.Context) error {
		return m.vault.Put(c, cred)
	}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return failed(mc.ReasonCaptureFailed, fmt.Errorf("seal credential: %w", err))
	}
	clear(res.Files)
	log.Info("credential sealed", mc.LogUserID, s.UserID, mc.LogProvider, s.Provider, "files", len(cred.Files))
	// The session's own watch cancels ctx as soon as it sees the final state
	// that this write commits, possibly before the write returns: the write
	// must not be cut short by its own success (found by the soak test).
	fctx, cancel := detached(dctx)
	defer cancel()
	err = m.persist(fctx, id, "record completed", func(c context.Context) error {
		_, err := m.advanceWith(c, mc.Transition{ID: id, From: mc.StateCapturing, To: mc.StateCompleted,
			Reason: mc.ReasonSignedIn, Message: "signed in; " + metaText(cred.Meta)})
		return err
	})
	if err != nil {
		return storeFailed(ctx, "record completed", err)
	}
	return nil
}

// detached returns a context that keeps ctx's deadline but not its
// cancellation.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(context.WithoutCancel(ctx))
	}
	return context.WithDeadline(context.WithoutCancel(ctx), d)
}

// watchLifetime expires the session at its maximum lifetime or after the
// idle timeout without activity (a connected viewer touches the session).
func (m *Manager) watchLifetime(ctx context.Context, id string) {
	for {
		s, err := m.store.Session(ctx, id)
		var next time.Duration
		switch {
		case mc.ErrorCode(err) == mc.ENOTFOUND || ctx.Err() != nil:
			return
		case err != nil:
			// The store is unavailable: look again soon rather than stop
			// watching, so that an outage does not make a session immortal.
			next = m.cfg.StoreRetry
		case s.State.Final():
			return
		default:
			now := m.clock.Now()
			if !now.Before(s.ExpiresAt) {
				m.endDurable(ctx, id, s.ExpiresAt, mc.StateExpired, mc.ReasonMaxLifetime, "the session reached its maximum lifetime")
				return
			}
			idleAt := s.ActiveAt.Add(m.cfg.IdleTimeout)
			if !now.Before(idleAt) {
				m.endDurable(ctx, id, s.ExpiresAt, mc.StateExpired, mc.ReasonIdleTimeout, "no viewer or activity within the idle timeout")
				return
			}
			next = min(s.ExpiresAt.Sub(now), idleAt.Sub(now)) + 10*time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-m.clock.After(next):
		}
	}
}

// teardown destroys machine id, bounded, whatever ctx the session had.
func (m *Manager) teardown(id string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	start := time.Now()
	if err := m.driver.Destroy(ctx, id); err != nil {
		log.Error("destroy machine", mc.LogMachineID, id, mc.LogError, err, mc.LogReason, mc.ReasonDestroyFailed)
		m.metrics.refused.WithLabelValues(string(mc.ReasonDestroyFailed)).Inc()
		return
	}
	log.Info("machine destroyed", mc.LogMachineID, id, "seconds", time.Since(start).Seconds())
}

// metaText says what a captured credential is, for the completion event:
// its kind and expiries, never a secret.
func metaText(m mc.CredentialMeta) string {
	parts := []string{"kind " + string(m.Kind)}
	if m.Kind == "" {
		parts[0] = "kind unknown"
	}
	if !m.ExpiresAt.IsZero() {
		parts = append(parts, "expires_at "+m.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if !m.RefreshExpiresAt.IsZero() {
		parts = append(parts, "refresh_expires_at "+m.RefreshExpiresAt.UTC().Format(time.RFC3339))
	}
	return strings.Join(parts, ", ")
}
