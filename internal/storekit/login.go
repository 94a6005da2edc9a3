package storekit

import (
	"encoding/json"
	"fmt"

	"github.com/master-controller/mc"
)

// LoginText is a session's login progress as the stores keep it: one JSON
// text column, "" when the login has not started.
func LoginText(p *mc.LoginProgress) string {
	if p == nil {
		return ""
	}
	b, _ := json.Marshal(p) // a struct of strings and a time: never fails
	return string(b)
}

// ParseLogin reads the login column back; "" is no progress.
func ParseLogin(id, text string) (*mc.LoginProgress, error) {
	if text == "" {
		return nil, nil
	}
	var p mc.LoginProgress
	if err := json.Unmarshal([]byte(text), &p); err != nil {
		return nil, fmt.Errorf("session %s: login column: %w", id, err)
	}
	return &p, nil
}

// LoginEvent is the event that records a login phase change: the state is
// unchanged, the message is the phase and the page (never a query).
func LoginEvent(s *mc.Session, p mc.LoginProgress, replica string) mc.Event {
	msg := string(p.Phase)
	if p.URL != "" {
		msg += " " + p.URL
	}
	return mc.Event{SessionID: s.ID, From: s.State, State: s.State, Reason: mc.ReasonLoginProgress,
		Message: msg, Replica: replica, At: p.UpdatedAt}
}

// MetaText is a credential's metadata as the stores keep it (JSON text).
func MetaText(m mc.CredentialMeta) string {
	b, _ := json.Marshal(m) // strings and times: never fails
	return string(b)
}

// ParseMeta reads the meta column back; "" is no metadata.
func ParseMeta(text string) mc.CredentialMeta {
	var m mc.CredentialMeta
	if text != "" {
		_ = json.Unmarshal([]byte(text), &m) // metadata only: a bad value is no metadata
	}
	return m
}
