package session

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/agentproto"
)

// agentClient is the client of one machine's agent, and whether the
// machine's processes have exited (a broken call then means the machine is
// gone, not that the agent failed).
type agentClient struct {
	*agentproto.Client
	// gone tells when the machine's processes have exited, and why.
	gone *machineGone
	// resumed is set for a session adopted from another replica: its
	// login may be running already.
	resumed bool
}

func newAgentClient(hc *http.Client, m mc.Machine, token mc.Secret) *agentClient {
	return &agentClient{Client: agentproto.NewClient(m.AgentEndpoint(), token, hc)}
}

// sandboxWait bounds one read of a machine's chrome://sandbox (85 ms on a
// quiet host).
const sandboxWait = 20 * time.Second

// sandboxOK is the result label of a machine whose browser has every layer
// of its sandbox.
const sandboxOK = "sandboxed"

// checkSandbox reads what the machine's Chromium reports of its own sandbox
// (chrome://sandbox, through the agent), logs it and counts it by result
// (sandboxed, browser_unsandboxed, or the reason the page could not be
// read). It fails with browser_unsandboxed when a layer is missing. A page
// that cannot be read is not held against the machine (an older agent has
// no GET /sandbox): the check finds a browser started without its sandbox,
// it is no defence against a browser that lies, which the confinement
// around it is.
func (m *Manager) checkSandbox(ctx context.Context, agent *agentClient, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, sandboxWait)
	defer cancel()
	sb, err := agent.Sandbox(ctx)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil // the session or the machine ended meanwhile
		}
		reason := mc.ErrorReason(err)
		if reason == "" {
			reason = mc.ReasonAgentError
		}
		m.metrics.sandbox.WithLabelValues(string(reason)).Inc()
		log.Warn("browser sandbox not read", mc.LogError, err, mc.LogReason, reason)
		return nil
	}
	if missing := sb.Missing(); len(missing) > 0 {
		m.metrics.sandbox.WithLabelValues(string(mc.ReasonBrowserUnsandboxed)).Inc()
		log.Error("browser unsandboxed", "missing", missing, mc.LogReason, mc.ReasonBrowserUnsandboxed)
		return failed(mc.ReasonBrowserUnsandboxed, errors.New("the machine's browser runs without its sandbox: "+strings.Join(missing, "; ")))
	}
	m.metrics.sandbox.WithLabelValues(sandboxOK).Inc()
	log.Debug("browser sandboxed", "layers", len(sb.Layers))
	return nil
}
