// Package agentproto is the one definition of the machine agent's API: its
// paths, the JSON bodies, the login states, phases and failure reasons, and a
// client. The agent (package agent) serves it, the session manager calls it
// through Client, and the fake driver (driver/drivertest) serves it too.
//
// Every call needs "Authorization: Bearer <agent token>", else 401 with an
// ErrorBody; errors are {"code","reason","message"}:
//
//	GET  /health          200 Health; 503, same shape, when VNC or the browser is down
//	POST /open            OpenRequest: http(s), about:blank or local:/path, in the visible tab
//	POST /login/start     LoginStartRequest → 202 LoginStatus; 409 while one runs
//	GET  /login/status    LoginStatus; ?wait=30s&since=N answers once Seq differs from N
//	                      (a long poll); ?wait=30s alone answers once the login has ended
//	GET  /login/result    LoginResult once complete (the agent deletes its copy); then 410
//	GET  /sandbox         BrowserSandbox: chrome://sandbox as the machine's Chromium shows it,
//	                      read in a background tab (the visible tab does not change); 503
//	                      machine_starting before the browser runs, browser_unavailable when
//	                      the page could not be read
package agentproto

import (
	"fmt"
	"time"

	"github.com/master-controller/mc"
)

// Paths of the agent API.
const (
	PathHealth      = "/health"
	PathOpen        = "/open"
	PathLoginStart  = "/login/start"
	PathLoginStatus = "/login/status"
	PathLoginResult = "/login/result"
	PathSandbox     = "/sandbox"
)

// MaxStatusWait caps the wait of a long poll: GET /login/status?wait= and
// GET /health?wait=.
const MaxStatusWait = 60 * time.Second

// Health is the body of GET /health.
type Health struct {
	VNC     bool `json:"vnc"`
	Browser bool `json:"browser"`
}

// ErrorBody is the JSON body of every error reply.
type ErrorBody struct {
	Code    mc.Code   `json:"code"`
	Reason  mc.Reason `json:"reason,omitempty"`
	Message string    `json:"message"`
}

// OpenRequest is the body of POST /open (and its reply).
type OpenRequest struct {
	URL string `json:"url"`
}

// LoginStartRequest is the body of POST /login/start.
type LoginStartRequest struct {
	Provider mc.Provider `json:"provider"`
}

// Login states.
const (
	StateIdle     = "idle"
	StateRunning  = "running"
	StateComplete = "complete"
	StateFailed   = "failed"
)

// Reasons of a failed login. The controller ends the session with the same
// reason (login_timeout as expired, the others as failed).
const (
	ReasonLoginTimeout       = mc.ReasonLoginTimeout
	ReasonCommandFailed      = mc.ReasonLoginCommandFailed
	ReasonCredentialsMissing = mc.ReasonCredentialsMissing
	ReasonBrowserError       = mc.ReasonBrowserError
	ReasonCancelled          = mc.ReasonLoginCancelled
)

// LoginStatus is the body of GET /login/status.
type LoginStatus struct {
	// State is idle, running, complete or failed.
	State string `json:"state"`
	// Phase is where a running login stands (see mc.LoginPhase).
	Phase mc.LoginPhase `json:"phase,omitempty"`
	// Reason is set when State is failed.
	Reason  mc.Reason `json:"reason,omitempty"`
	Message string    `json:"message,omitempty"`
	// URL is the page the login waits on: scheme, host and path, never
	// the query (it holds state and codes).
	URL string `json:"url,omitempty"`
	// Lines are the login command's last lines of output, with anything that
	// looks like a code or a token replaced by "[redacted]"; set when a
	// login failed.
	Lines []string `json:"lines,omitempty"`
	// Seq counts the status's changes; a long poll with since=Seq waits for
	// the next one, so that no change between two polls is missed.
	Seq int64 `json:"seq"`
	// Delivered is true once GET /login/result has handed the files over.
	Delivered bool `json:"delivered,omitempty"`
}

// LoginResult is the body of GET /login/result: file contents by the path
// the provider named them with.
type LoginResult struct {
	Files map[string]string `json:"files"`
}

// BrowserSandbox is the body of GET /sandbox: what the machine's Chromium
// reports of its own sandbox on chrome://sandbox, row by row, and the
// page's verdict. The agent reports the page as it is, never what it
// expects: outside a machine (a test that runs Chromium without its
// sandbox) the layers are off and Adequate is false.
type BrowserSandbox struct {
	// Layers are the page's rows in the page's order (on Linux: Layer 1
	// Sandbox, PID namespaces, Network namespaces, Seccomp-BPF sandbox,
	// Seccomp-BPF sandbox supports TSYNC, and the Yama ptrace rows).
	Layers []SandboxLayer `json:"layers"`
	// Adequate is the page's last line: true for "You are adequately
	// sandboxed.", false for "You are NOT adequately sandboxed.".
	Adequate bool `json:"adequate"`
}

// SandboxLayer is one row of chrome://sandbox.
type SandboxLayer struct {
	// Name is the row's name as shown, such as "PID namespaces" (the
	// Sandbox… constants name the rows that matter).
	Name string `json:"name"`
	// Status is the row's value as shown: "Yes" or "No", or for
	// SandboxLayer1 the kind of sandbox ("Namespace", "SUID" or "None").
	Status string `json:"status"`
	// On is false when Status is "No", "None" or empty, else true.
	On bool `json:"on"`
}

// Rows of chrome://sandbox on Linux (Chromium 156), and the status of
// SandboxLayer1 that means the namespace sandbox (rather than the older
// setuid helper, "SUID").
const (
	SandboxLayer1            = "Layer 1 Sandbox"
	SandboxPIDNamespaces     = "PID namespaces"
	SandboxNetworkNamespaces = "Network namespaces"
	SandboxSeccompBPF        = "Seccomp-BPF sandbox"
	SandboxSeccompTSYNC      = "Seccomp-BPF sandbox supports TSYNC"
	SandboxNamespace         = "Namespace"
)

// Layer returns the row named name, and whether the page has it.
func (s BrowserSandbox) Layer(name string) (SandboxLayer, bool) {
	for _, l := range s.Layers {
		if l.Name == name {
			return l, true
		}
	}
	return SandboxLayer{}, false
}

// Missing lists what a machine's browser lacks of the sandbox it must
// have: the namespace sandbox as layer 1, PID and network namespaces,
// seccomp-BPF with TSYNC, and the page's verdict "adequately sandboxed".
// It is empty when nothing is missing. The Yama rows are the host
// kernel's and are not required.
func (s BrowserSandbox) Missing() []string {
	var missing []string
	if l, _ := s.Layer(SandboxLayer1); l.Status != SandboxNamespace {
		missing = append(missing, fmt.Sprintf("%s is %q, want %q", SandboxLayer1, l.Status, SandboxNamespace))
	}
	for _, name := range []string{SandboxPIDNamespaces, SandboxNetworkNamespaces, SandboxSeccompBPF, SandboxSeccompTSYNC} {
		if l, ok := s.Layer(name); !ok || !l.On {
			missing = append(missing, name+" is off")
		}
	}
	if !s.Adequate {
		missing = append(missing, "not adequately sandboxed")
	}
	return missing
}
