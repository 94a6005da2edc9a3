package mc

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Session is the one canonical record of a login session. Its JSON shape is
// the API's and the only one; stores map it to one table and nothing else
// keeps a copy.
type Session struct {
	ID       string `json:"id"`
	UserID   string `json:"user_id"`
	Provider string `json:"provider"`
	State    State  `json:"state"`
	// Replica is the controller replica that drives the session (starts and
	// destroys its machine); any replica may serve its viewers. With a
	// cluster driver it changes when another replica adopts the session
	// (its replica stopped or its heartbeat went stale).
	Replica string `json:"replica"`
	// Reason is set when the session ends other than by completing.
	Reason  Reason  `json:"reason,omitempty"`
	Machine Machine `json:"machine"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	ReadyAt   time.Time `json:"ready_at,omitzero"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	// ExpiresAt is the end of the session's maximum lifetime.
	ExpiresAt time.Time `json:"expires_at"`
	// ActiveAt is the last sign of life (a viewer connected, agent activity);
	// the idle timeout counts from it.
	ActiveAt time.Time `json:"active_at"`
	// Login is the login's progress once the machine's agent has started it:
	// what a frontend shows ("Sign in at auth.openai.com in the window
	// below") and where an operator sees a login stop.
	Login *LoginProgress `json:"login,omitempty"`
	// Viewer is the id of the viewer connection that holds the session (the
	// newest one takes over).
	Viewer string `json:"viewer_id,omitempty"`
	// Version increases by one on every change of state or machine;
	// transitions compare it.
	Version int64 `json:"version"`
}

// Machine is where a session's browser runs. It is the zero value until the
// driver has created it.
type Machine struct {
	ID     string `json:"id,omitempty"`
	Driver string `json:"driver,omitempty"`
	// IP is the machine's address: inside the machine network, or loopback
	// when the driver runs without a network of its own.
	IP        netip.Addr `json:"ip,omitzero"`
	VNCPort   int        `json:"vnc_port,omitempty"`
	AgentPort int        `json:"agent_port,omitempty"`
	// SocketDir, when set, is a directory on the controller's host where
	// the machine listens on Unix sockets only (the local driver without
	// root): its VNC server at SocketDir/VNCSocket, its agent at
	// SocketDir/AgentSocket. IP and the ports are then unused.
	SocketDir string `json:"socket_dir,omitempty"`
	// Pooled reports a machine that was started for the warm pool before
	// the session asked for it.
	Pooled bool `json:"pooled,omitempty"`
}

// VNCAddr is the machine's VNC server address (host:port); see VNCEndpoint
// for what to dial.
func (m Machine) VNCAddr() netip.AddrPort { return netip.AddrPortFrom(m.IP, uint16(m.VNCPort)) }

// AgentAddr is the machine agent's address (host:port); see AgentEndpoint
// for what to dial.
func (m Machine) AgentAddr() netip.AddrPort { return netip.AddrPortFrom(m.IP, uint16(m.AgentPort)) }

// Names of a machine's Unix sockets in its SocketDir.
const (
	VNCSocket   = "vnc"
	AgentSocket = "agent"
)

// Endpoint is where one of a machine's servers listens, as net.Dial takes
// it: Network "tcp" with a host:port Address, or "unix" with a socket path.
type Endpoint struct {
	Network string
	Address string
}

// String returns the address ("unix:" and the path for a socket).
func (e Endpoint) String() string {
	if e.Network == "unix" {
		return "unix:" + e.Address
	}
	return e.Address
}

// ErrNotSocket is what Endpoint.Dial returns for a "unix" endpoint whose
// path is not a socket (a symbolic link, say).
var ErrNotSocket = errors.New("not a unix socket")

// Dial connects to e within timeout (none when 0). A "unix" endpoint must be
// a socket itself, not a symbolic link: a machine can write in its own
// socket directory, and must not point the controller at another socket of
// the host (the check comes just before the connect).
func (e Endpoint) Dial(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	if e.Network == "unix" {
		fi, err := os.Lstat(e.Address)
		if err != nil {
			return nil, err
		}
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("dial %s: %w", e.Address, ErrNotSocket)
		}
	}
	d := net.Dialer{Timeout: timeout}
	return d.DialContext(ctx, e.Network, e.Address)
}

// ParseEndpoint is the inverse of Endpoint.String: "unix:" and a path is a
// Unix socket, anything else a TCP host:port.
func ParseEndpoint(s string) Endpoint {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		return Endpoint{"unix", p}
	}
	return Endpoint{"tcp", s}
}

// VNCEndpoint is what to dial for the machine's VNC server: the socket
// SocketDir/VNCSocket when the machine has a SocketDir, else VNCAddr. The
// gateway, the readiness probe and the tests all dial through it.
func (m Machine) VNCEndpoint() Endpoint {
	if m.SocketDir != "" {
		return Endpoint{"unix", m.SocketDir + "/" + VNCSocket}
	}
	return Endpoint{"tcp", m.VNCAddr().String()}
}

// AgentEndpoint is what to dial for the machine's agent API: the socket
// SocketDir/AgentSocket, else AgentAddr.
func (m Machine) AgentEndpoint() Endpoint {
	if m.SocketDir != "" {
		return Endpoint{"unix", m.SocketDir + "/" + AgentSocket}
	}
	return Endpoint{"tcp", m.AgentAddr().String()}
}

// MachineSecrets are generated by the controller for one machine.
type MachineSecrets struct {
	// VNCPassword is the machine's VNC password (VNC auth uses its first 8 bytes).
	VNCPassword Secret
	// AgentToken authenticates the controller to the machine agent.
	AgentToken Secret
}

// NewMachineSecrets returns fresh random secrets for a machine (for drivers'
// tests; the manager derives them with a MachineKey).
func NewMachineSecrets() MachineSecrets {
	return MachineSecrets{VNCPassword: NewSecret(8), AgentToken: NewSecret(24)}
}

// MachineKey derives each machine's secrets from one key held in
// configuration, never in the store, keyed by the id of the session whose
// machine it is. Every replica configured with the same key derives the same
// secrets, so the store holds none of them and nothing is left to erase
// when the session ends. A MachineKey prints as REDACTED.
type MachineKey struct{ key Secret }

// NewMachineKey returns a MachineKey over key (32 random bytes or more).
func NewMachineKey(key Secret) MachineKey { return MachineKey{key: key} }

// String returns REDACTED.
func (k MachineKey) String() string { return Redacted }

// GoString returns REDACTED, so %#v hides the key too.
func (k MachineKey) GoString() string { return "mc.MachineKey(" + Redacted + ")" }

// LogValue makes slog print REDACTED.
func (k MachineKey) LogValue() slog.Value { return slog.StringValue(Redacted) }

// IsZero reports whether k has no key.
func (k MachineKey) IsZero() bool { return k.key.IsZero() }

// Secrets returns the secrets of the machine of session sessionID: 8 bytes
// for the VNC password and 24 for the agent token, URL-safe encoded as
// NewMachineSecrets makes them, each an HMAC-SHA256 of a label, the purpose
// and the session id.
func (k MachineKey) Secrets(sessionID string) MachineSecrets {
	return MachineSecrets{VNCPassword: k.derive("vnc-password", sessionID, 8), AgentToken: k.derive("agent-token", sessionID, 24)}
}

func (k MachineKey) derive(purpose, sessionID string, n int) Secret {
	m := hmac.New(sha256.New, []byte(k.key.Reveal()))
	m.Write([]byte("mc-machine-secret-v1\x00" + purpose + "\x00" + sessionID))
	return Secret{base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:n])}
}

// Event is one entry in a session's event log: a transition, with the replica
// that made it.
type Event struct {
	SessionID string    `json:"session_id"`
	Seq       int64     `json:"seq"`
	From      State     `json:"from,omitempty"`
	State     State     `json:"state"`
	Reason    Reason    `json:"reason,omitempty"`
	Message   string    `json:"message,omitempty"`
	Replica   string    `json:"replica"`
	At        time.Time `json:"at"`
}

// LoginProgress is where a session's login stands.
type LoginProgress struct {
	Phase LoginPhase `json:"phase"`
	// URL is the page the login waits on, as scheme, host and path: never
	// its query, which holds state and codes.
	URL       string    `json:"url,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// LoginPhase is one step of a login, as the machine's agent reports it.
type LoginPhase string

// Login phases, in the order a login goes through them.
const (
	// PhaseStartingCLI: the provider's login command is starting.
	PhaseStartingCLI LoginPhase = "starting_cli"
	// PhaseWaitingForUser: the login page is open in the machine's browser
	// and waits for the user to sign in.
	PhaseWaitingForUser LoginPhase = "waiting_for_user"
	// PhaseCompleting: the provider answered (a callback reached the CLI,
	// or a code was typed back) and the credential files are being written.
	PhaseCompleting LoginPhase = "completing"
	// PhaseCaptured: the credential files are complete.
	PhaseCaptured LoginPhase = "captured"
)
