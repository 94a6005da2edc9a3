package session

import (
	"context"
	"errors"
	"log/slog"
	"strings"

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

func newAgentClient(m mc.Machine, token mc.Secret) *agentClient {
	return &agentClient{Client: agentproto.NewClient(m.AgentEndpoint(), token, nil)}
}

// sandboxOK is the result label of a machine whose browser has every layer
// of its sandbox.
const sandboxOK = "sandboxed"

// sandboxReadReasons are the reasons a machine's chrome://sandbox may not
// be read that are counted as such; any other reason the agent gives is
// counted as agent_error (the agent is the machine's: its words do not
// make label values).
var sandboxReadReasons = map[mc.Reason]bool{mc.ReasonMachineStarting: true, mc.ReasonBrowserUnavailable: true,
	mc.ReasonAgentUnreachable: true, mc.ReasonBadAgentToken: true, mc.ReasonMachineUnhealthy: true}

// checkSandbox reads what the machine's Chromium reports of its own sandbox
// (chrome://sandbox, through the agent, within agentproto.CallTimeout) and
// counts it by result: sandboxed, browser_unsandboxed, or the reason the
// page could not be read. It fails with browser_unsandboxed when a layer is
// missing (the caller logs that, with the session's end). A page that
// cannot be read is logged, not held against the machine (an older agent
// has no GET /sandbox), unless ended says the session or machine ended
// meanwhile: then it is no finding at all. The check finds a browser
// started without its sandbox; against a browser that lies, the
// confinement around it is the defence.
func (m *Manager) checkSandbox(ctx context.Context, agent *agentClient, ended func() bool, log *slog.Logger) error {
	sb, err := agent.Sandbox(ctx)
	if err != nil {
		if ended() {
			return nil
		}
		reason := mc.ErrorReason(err)
		if !sandboxReadReasons[reason] {
			reason = mc.ReasonAgentError
		}
		m.metrics.sandbox.WithLabelValues(string(reason)).Inc()
		log.Warn("browser sandbox not read", mc.LogError, err, mc.LogReason, reason)
		return nil
	}
	if missing := sb.Missing(); len(missing) > 0 {
		m.metrics.sandbox.WithLabelValues(string(mc.ReasonBrowserUnsandboxed)).Inc()
		return failed(mc.ReasonBrowserUnsandboxed, errors.New("the machine's browser runs without its sandbox: "+strings.Join(missing, "; ")))
	}
	m.metrics.sandbox.WithLabelValues(sandboxOK).Inc()
	log.Debug("browser sandboxed", "layers", len(sb.Layers))
	return nil
}
