package session

import (
	"net/http"

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
