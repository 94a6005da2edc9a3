package gateway

import (
	"errors"

	"github.com/coder/websocket"
	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/wsproto"
	"github.com/master-controller/mc/token"
)

// The close codes of DESIGN.md's gateway contract.
const (
	CodeCompleted     websocket.StatusCode = 1000
	CodeShutdown      websocket.StatusCode = 1001
	CodeInternal      websocket.StatusCode = 1011
	CodeNotReady      websocket.StatusCode = 1013
	CodeUnauthorized  websocket.StatusCode = 4401
	CodeForbidden     websocket.StatusCode = 4403
	CodeNotFound      websocket.StatusCode = 4404
	CodeTakenOver     websocket.StatusCode = 4409
	CodeEnded         websocket.StatusCode = 4410
	CodeUnreachable   websocket.StatusCode = 4502
	CodeMachineGone   websocket.StatusCode = 4503
	codeProtocolError websocket.StatusCode = 1002
)

// Reason codes of connection outcomes (log "reason" and the outcome label of
// mc_gateway_upgrades_total).
const (
	ReasonOriginNotAllowed  mc.Reason = "origin_not_allowed"
	ReasonSessionNotFound   mc.Reason = "session_not_found"
	ReasonTakenOver         mc.Reason = "taken_over"
	ReasonSessionEnded      mc.Reason = "session_ended"
	ReasonSessionCompleted  mc.Reason = "session_completed"
	ReasonShutdown          mc.Reason = "shutdown"
	ReasonInternal          mc.Reason = "internal"
	ReasonReadyTimeout      mc.Reason = "ready_timeout"
	ReasonAddressNotAllowed mc.Reason = "address_not_allowed"
	ReasonVNCUnreachable    mc.Reason = "vnc_unreachable"
	ReasonNotRFB            mc.Reason = "not_rfb"
	ReasonVNCAuthFailed     mc.Reason = "vnc_auth_failed"
	ReasonMachineGone       mc.Reason = "machine_gone"
	ReasonPingTimeout       mc.Reason = "ping_timeout"
	ReasonBadClient         mc.Reason = "bad_client"
	ReasonClientGone        mc.Reason = "client_gone"
)

// closeErr is the decision of how a connection ends: the close frame's code
// and text, and the reason code for logs and metrics. A zero code means that
// no close frame is sent (the viewer closed first).
type closeErr struct {
	code   websocket.StatusCode
	reason mc.Reason
	text   string
}

func (e *closeErr) Error() string { return string(e.reason) + ": " + e.text }

var (
	errOrigin      = &closeErr{CodeForbidden, ReasonOriginNotAllowed, "origin not allowed"}
	errNotFound    = &closeErr{CodeNotFound, ReasonSessionNotFound, "no such session"}
	errTakenOver   = &closeErr{CodeTakenOver, ReasonTakenOver, "another viewer took over this session"}
	errCompleted   = &closeErr{CodeCompleted, ReasonSessionCompleted, "signed in"}
	errShutdown    = &closeErr{CodeShutdown, ReasonShutdown, "the server is shutting down; reconnect"}
	errInternal    = &closeErr{CodeInternal, ReasonInternal, "internal error"}
	errNotReady    = &closeErr{CodeNotReady, ReasonReadyTimeout, "the machine did not become ready in time; try again later"}
	errAddr        = &closeErr{CodeUnreachable, ReasonAddressNotAllowed, "the machine's VNC server could not be reached"}
	errUnreachable = &closeErr{CodeUnreachable, ReasonVNCUnreachable, "the machine's VNC server could not be reached"}
	errNotRFB      = &closeErr{CodeUnreachable, ReasonNotRFB, "the machine's VNC server did not answer as a VNC server"}
	errVNCAuth     = &closeErr{CodeUnreachable, ReasonVNCAuthFailed, "the machine's VNC server refused the connection"}
	errMachineGone = &closeErr{CodeMachineGone, ReasonMachineGone, "the machine went away"}
	errPingTimeout = &closeErr{CodeShutdown, ReasonPingTimeout, "the viewer stopped answering pings"}
	errBadClient   = &closeErr{codeProtocolError, ReasonBadClient, "not an RFB client"}
)

// ended returns the close decision for a session in final state s.
func ended(s *mc.Session) *closeErr {
	if s.State == mc.StateCompleted {
		return errCompleted
	}
	return &closeErr{CodeEnded, ReasonSessionEnded, "the session has ended (" + string(s.State) + ")"}
}

// tokenClose maps a token verification error to its close decision.
func tokenClose(err error) *closeErr {
	r := mc.ErrorReason(err)
	if mc.ErrorCode(err) == mc.EFORBIDDEN {
		return &closeErr{CodeForbidden, r, "viewer token is not for this session"}
	}
	switch r {
	case token.ReasonMissing:
		return &closeErr{CodeUnauthorized, r, "viewer token missing"}
	case token.ReasonExpired:
		return &closeErr{CodeUnauthorized, r, "viewer token expired"}
	case token.ReasonMalformed, token.ReasonBadSignature:
		return &closeErr{CodeUnauthorized, r, "viewer token invalid"}
	}
	return &closeErr{CodeUnauthorized, "token_invalid", "viewer token invalid"}
}

// bridgeClose maps the causes both bridges (Gateway and Websockify) share to
// their close decision: a *closeErr as it is; a WebSocket message too big or a
// protocol error (the close frame is already sent) and a failed viewer side
// (no frame is sent). It records the cause in o.err where the log wants it.
// ok is false for any other error, which the caller decides on.
func bridgeClose(err error, o *outcome) (ce *closeErr, ok bool) {
	var ve *viewerErr
	switch {
	case errors.As(err, &ce):
		return ce, true
	case errors.Is(err, wsproto.ErrTooBig):
		o.err = err
		return &closeErr{0, "message_too_big", ""}, true // 1009 already sent
	case errors.Is(err, wsproto.ErrProtocol):
		o.err = err
		return &closeErr{0, ReasonBadClient, ""}, true // 1002 already sent
	case errors.As(err, &ve):
		o.err = err
		return &closeErr{0, ReasonClientGone, ""}, true
	}
	return nil, false
}
