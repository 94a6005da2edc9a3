package gateway

import (
	"errors"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/wsproto"
	"github.com/master-controller/mc/token"
)

// The close codes of DESIGN.md's gateway contract. They are untyped, so
// that they compare with any WebSocket library's status code type.
const (
	CodeCompleted    = 1000
	CodeShutdown     = 1001
	CodeInternal     = 1011
	CodeNotReady     = 1013
	CodeUnauthorized = 4401
	CodeForbidden    = 4403
	CodeNotFound     = 4404
	// CodePingTimeout closes a viewer that stopped answering pings: its
	// network or its tab is gone (1001 would say the replica is stopping).
	CodePingTimeout   = 4408
	CodeTakenOver     = 4409
	CodeEnded         = 4410
	CodeUnreachable   = 4502
	CodeMachineGone   = 4503
	codeProtocolError = 1002
)

// Reason codes of connection outcomes (log "reason" and the outcome label of
// mc_gateway_upgrades_total).
const (
	ReasonOriginNotAllowed  mc.Reason = mc.ReasonOriginNotAllowed
	ReasonSessionNotFound   mc.Reason = mc.ReasonSessionNotFound
	ReasonTakenOver         mc.Reason = mc.ReasonTakenOver
	ReasonSessionEnded      mc.Reason = mc.ReasonSessionEnded
	ReasonSessionCompleted  mc.Reason = mc.ReasonSessionCompleted
	ReasonShutdown          mc.Reason = mc.ReasonShutdown
	ReasonInternal          mc.Reason = mc.ReasonInternal
	ReasonReadyTimeout      mc.Reason = mc.ReasonReadyTimeout
	ReasonAddressNotAllowed mc.Reason = mc.ReasonAddressNotAllowed
	ReasonVNCUnreachable    mc.Reason = mc.ReasonVNCUnreachable
	ReasonNotRFB            mc.Reason = mc.ReasonNotRFB
	ReasonVNCAuthFailed     mc.Reason = mc.ReasonVNCAuthFailed
	ReasonMachineGone       mc.Reason = mc.ReasonMachineGone
	ReasonPingTimeout       mc.Reason = mc.ReasonPingTimeout
	ReasonBadClient         mc.Reason = mc.ReasonBadClient
	ReasonClientGone        mc.Reason = mc.ReasonClientGone
	ReasonMessageTooBig     mc.Reason = mc.ReasonMessageTooBig
	ReasonTokenInvalid      mc.Reason = mc.ReasonTokenInvalid
	ReasonBadUpgrade        mc.Reason = mc.ReasonBadUpgrade
	// The websockify mode's own.
	ReasonTokenUnknown mc.Reason = mc.ReasonTokenUnknown
	ReasonTargetClosed mc.Reason = mc.ReasonTargetClosed
	ReasonTargetError  mc.Reason = mc.ReasonTargetError
)

// outcome is how a connection ends, decided by the phase that ends it and
// returned as a value: the close frame's code and text, the reason code for
// the log line and the outcome label of the metric, and the cause for the
// log line (nil when the reason says it all). A zero code means that no
// close frame is sent (the viewer went first, or the WebSocket layer sent
// it already).
type outcome struct {
	code   wsproto.StatusCode
	reason mc.Reason
	text   string
	err    error
}

// because returns a copy of o with the cause err.
func (o *outcome) because(err error) *outcome {
	c := *o
	c.err = err
	return &c
}

// The outcomes of the contract's table. Never modified: use because.
var (
	endOrigin      = &outcome{code: CodeForbidden, reason: ReasonOriginNotAllowed, text: "origin not allowed"}
	endNotFound    = &outcome{code: CodeNotFound, reason: ReasonSessionNotFound, text: "no such session"}
	endTakenOver   = &outcome{code: CodeTakenOver, reason: ReasonTakenOver, text: "another viewer took over this session"}
	endCompleted   = &outcome{code: CodeCompleted, reason: ReasonSessionCompleted, text: "signed in"}
	endShutdown    = &outcome{code: CodeShutdown, reason: ReasonShutdown, text: "the server is shutting down; reconnect"}
	endInternal    = &outcome{code: CodeInternal, reason: ReasonInternal, text: "internal error"}
	endNotReady    = &outcome{code: CodeNotReady, reason: ReasonReadyTimeout, text: "the machine did not become ready in time; try again later"}
	endAddr        = &outcome{code: CodeUnreachable, reason: ReasonAddressNotAllowed, text: "the machine's VNC server could not be reached"}
	endUnreachable = &outcome{code: CodeUnreachable, reason: ReasonVNCUnreachable, text: "the machine's VNC server could not be reached"}
	endNotRFB      = &outcome{code: CodeUnreachable, reason: ReasonNotRFB, text: "the machine's VNC server did not answer as a VNC server"}
	endVNCAuth     = &outcome{code: CodeUnreachable, reason: ReasonVNCAuthFailed, text: "the machine's VNC server refused the connection"}
	endMachineGone = &outcome{code: CodeMachineGone, reason: ReasonMachineGone, text: "the machine went away"}
	endPingTimeout = &outcome{code: CodePingTimeout, reason: ReasonPingTimeout, text: "the viewer stopped answering pings"}
	endBadClient   = &outcome{code: codeProtocolError, reason: ReasonBadClient, text: "not an RFB client"}
	// The WebSocket layer has sent its close frame (1009, 1002 or 1007).
	endTooBig     = &outcome{reason: ReasonMessageTooBig}
	endBadFrames  = &outcome{reason: ReasonBadClient}
	endClientGone = &outcome{reason: ReasonClientGone}
)

// endStoreUnreachable: this replica cannot reach the store, so it cannot
// learn whether the machine becomes ready.
var endStoreUnreachable = &outcome{code: CodeNotReady, reason: mc.ReasonStoreUnreachable, text: "the session store cannot be reached; try again later"}

// ended returns the outcome for a session in final state s.
func ended(s *mc.Session) *outcome {
	if s.State == mc.StateCompleted {
		return endCompleted
	}
	return &outcome{code: CodeEnded, reason: ReasonSessionEnded, text: "the session has ended (" + string(s.State) + ")"}
}

// endedLive returns the outcome for a viewer whose stream was up when its
// session ended in state s: a machine that went away under it (the
// cluster evicted or deleted it, its processes died or were killed for
// memory) is 4503, as when the stream breaks first, and the page's
// reconnect then learns that the session has ended (4410); any other end
// is as ended says.
func endedLive(s *mc.Session) *outcome {
	if s.State == mc.StateFailed {
		switch s.Reason {
		case mc.ReasonMachineEvicted, mc.ReasonMachineExited, mc.ReasonMachineOOM, mc.ReasonMachineMissing:
			return &outcome{code: CodeMachineGone, reason: ReasonMachineGone, text: "the machine went away (" + string(s.Reason) + ")"}
		}
	}
	return ended(s)
}

// tokenOutcome maps a token verification error to its outcome.
func tokenOutcome(err error) *outcome {
	r := mc.ErrorReason(err)
	o := &outcome{code: CodeUnauthorized, reason: ReasonTokenInvalid, text: "viewer token invalid", err: err}
	switch {
	case mc.ErrorCode(err) == mc.EFORBIDDEN:
		o.code, o.reason, o.text = CodeForbidden, r, "viewer token is not for this session"
	case r == token.ReasonMissing:
		o.reason, o.text = r, "viewer token missing"
	case r == token.ReasonExpired:
		o.reason, o.text = r, "viewer token expired"
	case r == token.ReasonMalformed, r == token.ReasonBadSignature:
		o.reason = r
	}
	return o
}

// viewerOutcome maps an error of the viewer's side, which both bridges
// (Gateway and Websockify) share, to its outcome: a message too big or a
// protocol error (the WebSocket layer sent the close frame), else a viewer
// that went away (no frame is sent). ok is false for an error that is not
// the viewer's.
func viewerOutcome(err error) (o *outcome, ok bool) {
	var ve *viewerErr
	switch {
	case errors.Is(err, wsproto.ErrTooBig):
		return endTooBig.because(err), true
	case errors.Is(err, wsproto.ErrProtocol):
		return endBadFrames.because(err), true
	case errors.As(err, &ve):
		return endClientGone.because(err), true
	}
	return nil, false
}
