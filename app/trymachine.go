package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/agentproto"
	"github.com/master-controller/mc/driver/local"
	"github.com/master-controller/mc/session"
)

// tryWait bounds TryMachine's wait for its machine to be ready.
const tryWait = 60 * time.Second

// TryMachine starts one machine with the configured driver, as serve
// would (its leases from the configured store, so that a running server's
// machines keep theirs, though that server's reconcile, once a minute,
// destroys a machine of no session of its own: the doctor then reports
// its machine gone), waits until it is ready (session.WaitReady), reads
// what its browser reports on chrome://sandbox, and destroys it. It returns
// the findings for "master-controller doctor --machine": "machine" (how
// long it took to be ready, and its isolation) and "sandbox" (the layers of
// the browser's own sandbox, or what is missing).
func TryMachine(ctx context.Context, cfg Config, log *slog.Logger) []local.Finding {
	fail := func(err error) []local.Finding { return []local.Finding{{Name: "machine", Value: err.Error()}} }
	st, err := OpenStore(ctx, cfg, log)
	if err != nil {
		return fail(fmt.Errorf("open store: %w", err))
	}
	defer st.Close()
	drv, err := newDriver(ctx, cfg, st, log)
	if err != nil {
		return fail(err)
	}
	w, h, _ := cfg.ScreenSize()
	id := mc.NewMachineID()
	secrets := mc.NewMachineKey(mc.NewSecret(32)).Secrets(id)
	started := time.Now()
	m, err := drv.Create(ctx, mc.MachineSpec{ID: id, SessionID: id, Provider: "doctor", Secrets: secrets, Width: w, Height: h})
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		// (Also after a Create that failed: whatever it left goes.)
		if err := drv.Destroy(dctx, id); err != nil && mc.ErrorCode(err) != mc.ENOTFOUND {
			log.Warn("destroy the doctor's machine", mc.LogMachineID, id, mc.LogError, err, mc.LogReason, mc.ErrorReason(err))
		}
	}()
	if err != nil {
		return fail(fmt.Errorf("create machine %s: %w", id, err))
	}
	agent := agentproto.NewClient(m.AgentEndpoint(), secrets.AgentToken, nil)
	rctx, cancel := context.WithTimeout(ctx, tryWait)
	defer cancel()
	if err := session.WaitReady(rctx, m, agent); err != nil {
		if ctx.Err() != nil {
			return fail(fmt.Errorf("machine %s: interrupted before it was ready: %w", id, err))
		}
		return fail(fmt.Errorf("machine %s not ready within %s: %w", id, tryWait, err))
	}
	caps := drv.Capabilities()
	found := []local.Finding{{Name: "machine", OK: true,
		Value: fmt.Sprintf("ready in %.2f s (%s driver, isolation %s)", time.Since(started).Seconds(), drv.Name(), caps.Isolation)}}
	sb, err := agent.Sandbox(rctx)
	if err != nil {
		return append(found, local.Finding{Name: "sandbox", Value: "chrome://sandbox not read: " + err.Error()})
	}
	if missing := sb.Missing(); len(missing) > 0 {
		return append(found, local.Finding{Name: "sandbox", Value: string(mc.ReasonBrowserUnsandboxed) + ": " + strings.Join(missing, "; ")})
	}
	var on []string
	for _, l := range sb.Layers {
		if l.On {
			on = append(on, l.Name+": "+l.Status)
		}
	}
	return append(found, local.Finding{Name: "sandbox", OK: true, Value: strings.Join(on, "; ") + "; adequately sandboxed"})
}
