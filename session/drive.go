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

// drive starts the goroutine that takes session id through its life.
func (m *Manager) drive(id string) {
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
		m.run(ctx, id)
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

// run is one session's life on this replica.
func (m *Manager) run(life context.Context, id string) {
	log := m.log.With(mc.LogSessionID, id)
	// ctx ends when the session reaches a final state (from any replica),
	// when the machine exits, or when this process stops.
	ctx, cancel := context.WithCancelCause(life)
	defer cancel(nil)
	watch, err := m.store.Watch(ctx, id)
	if err != nil {
		log.Error("watch session", "error", err, mc.LogReason, "store_error")
		return
	}
	endedc := make(chan *mc.Session, 1)
	go func() {
		for s := range watch {
			if s.State.Final() {
				endedc <- s
				cancel(errFinal)
				return
			}
		}
	}()

	err = m.lifecycle(ctx, id, log)
	var final *mc.Session
	switch {
	case err == nil:
		// completed: give the viewer a moment to see the signed-in page.
		select {
		case <-time.After(m.cfg.DestroyGrace):
		case <-life.Done():
		}
	case errors.Is(err, errFinal) || errors.Is(context.Cause(ctx), errFinal):
		// Ended elsewhere (cancelled, expired, failed by another replica).
	case life.Err() != nil:
		final, _ = m.end(context.WithoutCancel(ctx), id, mc.StateFailed, mc.ReasonControllerStop,
			"the controller is shutting down")
	default:
		var st *stage
		if !errors.As(err, &st) {
			st = &stage{state: mc.StateFailed, reason: "internal", err: err}
		}
		final, _ = m.end(context.WithoutCancel(ctx), id, st.state, st.reason, st.err.Error())
	}
	m.teardown(id, log)
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

// lifecycle runs start, readiness and login; it returns nil once the
// session is completed.
func (m *Manager) lifecycle(ctx context.Context, id string, log *slog.Logger) error {
	s, err := m.advance(ctx, id, mc.StatePending, mc.StateStarting, nil)
	if err != nil {
		return err
	}
	prov, ok := m.providers.Get(s.Provider)
	if !ok {
		return failed("unknown_provider", fmt.Errorf("provider %q is no longer configured", s.Provider))
	}
	started := m.clock.Now()
	sctx, scancel := context.WithTimeout(ctx, m.cfg.StartTimeout)
	defer scancel()
	mach, err := m.driver.Create(sctx, mc.MachineSpec{
		ID: s.ID, SessionID: s.ID, Provider: s.Provider, StartURL: prov.StartURL,
		Secrets: s.Secrets, Width: m.cfg.Width, Height: m.cfg.Height,
	})
	if err != nil {
		return startErr(ctx, sctx, "create machine", err)
	}
	if _, err := m.store.SetMachine(ctx, id, s.Version, mach, s.Secrets); err != nil {
		return fmt.Errorf("record machine: %w", err)
	}
	// The machine is gone when its processes exit: end the session at once.
	gone := make(chan struct{})
	go func() {
		if err := m.driver.Wait(ctx, mach.ID); err == nil && ctx.Err() == nil {
			close(gone)
			_, _ = m.end(context.WithoutCancel(ctx), id, mc.StateFailed, mc.ReasonMachineExited,
				"the machine's processes exited")
		}
	}()
	agent := newAgentClient(m.http, mach, s.Secrets.AgentToken)
	agent.gone = gone
	if err := m.waitReady(sctx, mach, agent); err != nil {
		return startErr(ctx, sctx, "wait for machine", err)
	}
	if _, err := m.advance(ctx, id, mc.StateStarting, mc.StateReady, &mach); err != nil {
		return err
	}
	m.metrics.startSeconds.Observe(m.clock.Now().Sub(started).Seconds())
	log.Info("machine ready", mc.LogMachineID, mach.ID, "start_seconds", m.clock.Now().Sub(started).Seconds())

	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	go m.watchLifetime(lctx, id)
	return m.login(ctx, id, prov, agent, log)
}

// startErr classifies a failure to start: the start timeout, or a failure.
func startErr(ctx, sctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if sctx.Err() != nil {
		return failed(mc.ReasonStartTimeout, fmt.Errorf("%s: the machine did not become ready in time: %w", what, err))
	}
	return failed(mc.ReasonStartFailed, fmt.Errorf("%s: %w", what, err))
}

// waitReady waits until the machine's VNC server answers an RFB banner and
// its agent answers /health, retrying with a short backoff.
func (m *Manager) waitReady(ctx context.Context, mach mc.Machine, agent *agentClient) error {
	backoff := 10 * time.Millisecond
	vncOK := false
	var last error
	for {
		if !vncOK {
			if last = rfb.Probe(ctx, mach.VNCAddr().String()); last == nil {
				vncOK = true
			}
		}
		if vncOK {
			if _, last = agent.Health(ctx); last == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// login starts the provider's login in the agent, waits for its result,
// seals it into the vault and completes the session.
func (m *Manager) login(ctx context.Context, id string, prov mc.Provider, agent *agentClient, log *slog.Logger) error {
	if _, err := agent.StartLogin(ctx, prov); err != nil {
		return agentFailed(ctx, agent, mc.ReasonAgentError, fmt.Errorf("start login: %w", err))
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
	for {
		// Long-poll the agent; an agent that answers at once (or an
		// unchanged status) is asked again no sooner than LoginPoll.
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
		seen = st.Seq
		msg := st.State + st.Message + st.URL + string(st.Phase)
		if msg != lastMsg {
			lastMsg = msg
			_ = m.store.Touch(ctx, id, m.clock.Now().UTC())
		}
		if st.Phase != "" && (st.Phase != last.Phase || st.URL != last.URL) {
			last = mc.LoginProgress{Phase: st.Phase, URL: st.URL, UpdatedAt: m.clock.Now().UTC()}
			if _, err := m.store.SetLogin(ctx, id, last, m.cfg.Replica); err != nil && mc.ErrorCode(err) != mc.ECONFLICT {
				log.Warn("record login progress", "error", err, mc.LogReason, "store_error")
			} else if err == nil {
				log.Info("login progress", "phase", st.Phase, "url", st.URL)
			}
			// A CLI's sign-in page is in front of the user: the login is
			// capturing from now on. (A page-only login such as demo stays
			// ready until its files are complete.)
			if st.Phase == mc.PhaseWaitingForUser && !capturing && len(prov.LoginCommand) > 0 {
				if _, err := m.advance(ctx, id, mc.StateReady, mc.StateCapturing, nil); err != nil {
					return err
				}
				capturing = true
			}
		}
		if st.State != agentproto.StateComplete && st.State != agentproto.StateFailed {
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
			return m.capture(ctx, id, prov, agent, log)
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
		return failed(reason, fmt.Errorf("login failed: %s", msg))
	}
}

// agentFailed classifies a failed agent request. When the machine's
// processes died, the agent's connection broke because of it: the session
// ends with machine_exited, not an agent error. The driver reports an exit
// within a second, so that long is waited for it.
func agentFailed(ctx context.Context, agent *agentClient, reason mc.Reason, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-agent.gone:
		return failed(mc.ReasonMachineExited, fmt.Errorf("the machine's processes exited: %w", err))
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return failed(reason, err)
	}
}

// capture fetches the login's result once, seals it and completes the session.
func (m *Manager) capture(ctx context.Context, id string, prov mc.Provider, agent *agentClient, log *slog.Logger) error {
	s, err := m.store.Session(ctx, id)
	if err != nil {
		return err
	}
	if s.State != mc.StateCapturing { // not yet: the login had no page
		if s, err = m.advance(ctx, id, mc.StateReady, mc.StateCapturing, nil); err != nil {
			return err
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
	if err := m.vault.Put(ctx, cred); err != nil {
		return failed(mc.ReasonCaptureFailed, fmt.Errorf("seal credential: %w", err))
	}
	clear(res.Files)
	log.Info("credential sealed", mc.LogUserID, s.UserID, mc.LogProvider, s.Provider, "files", len(cred.Files))
	for range 10 {
		cur, err := m.store.Session(ctx, id)
		if err != nil {
			return err
		}
		if cur.State != mc.StateCapturing {
			return errFinal
		}
		_, err = m.store.Transition(ctx, mc.Transition{ID: id, From: mc.StateCapturing, Version: cur.Version,
			To: mc.StateCompleted, Reason: mc.ReasonSignedIn, Message: "signed in; " + metaText(cred.Meta),
			Replica: m.cfg.Replica, At: m.clock.Now().UTC()})
		if mc.ErrorCode(err) == mc.ECONFLICT {
			continue
		}
		if err == nil {
			m.transitions(mc.StateCompleted, mc.ReasonSignedIn)
			log.Info("session completed", mc.LogReason, mc.ReasonSignedIn)
		}
		return err
	}
	return fmt.Errorf("complete session %s: too many concurrent changes", id)
}

// watchLifetime expires the session at its maximum lifetime or after the
// idle timeout without activity (a connected viewer touches the session).
func (m *Manager) watchLifetime(ctx context.Context, id string) {
	for {
		s, err := m.store.Session(ctx, id)
		if err != nil || s.State.Final() {
			return
		}
		now := m.clock.Now()
		if !now.Before(s.ExpiresAt) {
			_, _ = m.end(ctx, id, mc.StateExpired, mc.ReasonMaxLifetime, "the session reached its maximum lifetime")
			return
		}
		idleAt := s.ActiveAt.Add(m.cfg.IdleTimeout)
		if !now.Before(idleAt) {
			_, _ = m.end(ctx, id, mc.StateExpired, mc.ReasonIdleTimeout, "no viewer or activity within the idle timeout")
			return
		}
		next := min(s.ExpiresAt.Sub(now), idleAt.Sub(now)) + 10*time.Millisecond
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// teardown destroys a session's machine, bounded, whatever ctx the session had.
func (m *Manager) teardown(id string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	start := time.Now()
	if err := m.driver.Destroy(ctx, id); err != nil {
		log.Error("destroy machine", mc.LogMachineID, id, "error", err, mc.LogReason, "destroy_failed")
		m.metrics.refused.WithLabelValues("destroy_failed").Inc()
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
