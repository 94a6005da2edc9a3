package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/master-controller/mc"
)

// Viewer is how a browser reaches a session's screen: the viewer page's URL
// (with the token in its query) and the token alone, for clients that build
// their own URL or embed the gateway's WebSocket.
type Viewer struct {
	URL       string    `json:"url"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// SessionResponse is the body of GET /api/v1/sessions/{id} and of
// POST …/cancel.
type SessionResponse struct {
	Session *mc.Session `json:"session"`
}

// CreateSessionRequest is the body of POST /api/v1/sessions.
type CreateSessionRequest struct {
	UserID   string `json:"user_id"`
	Provider string `json:"provider"`
}

// CreateSessionResponse is the body of a 201 from POST /api/v1/sessions.
type CreateSessionResponse struct {
	Session *mc.Session `json:"session"`
	Viewer  Viewer      `json:"viewer"`
}

// SessionsResponse is one page of GET /api/v1/sessions; NextCursor is absent
// on the last page.
type SessionsResponse struct {
	Sessions   []*mc.Session `json:"sessions"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

// EventsResponse is the body of GET /api/v1/sessions/{id}/events.
type EventsResponse struct {
	Events []mc.Event `json:"events"`
}

// createSession is POST /api/v1/sessions.
func (s *Server) createSession(w http.ResponseWriter, r *http.Request) error {
	var req CreateSessionRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	sess, err := s.start(r.Context(), req.UserID, req.Provider)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/sessions/"+sess.ID)
	writeJSON(w, http.StatusCreated, CreateSessionResponse{Session: sess, Viewer: s.viewer(sess.ID)})
	return nil
}

// start is the one code path that starts a session, for the API and for the
// compatibility endpoint.
func (s *Server) start(ctx context.Context, userID, provider string) (*mc.Session, error) {
	if err := checkUserID(userID); err != nil {
		return nil, err
	}
	if err := s.checkProvider(provider); err != nil {
		return nil, err
	}
	sess, err := s.deps.Sessions.Start(ctx, userID, provider)
	if err != nil {
		return nil, fmt.Errorf("start session for %s/%s: %w", userID, provider, err)
	}
	reqState(ctx).sessionID = sess.ID
	return sess, nil
}

// viewer issues a viewer token for session id and builds its URL.
func (s *Server) viewer(id string) Viewer {
	tok, exp := s.deps.Tokens.Issue(id, s.cfg.ViewerTokenTTL)
	return Viewer{
		URL:       s.cfg.PublicURL + "/sessions/" + id + "/view?token=" + url.QueryEscape(tok),
		Token:     tok,
		ExpiresAt: exp.UTC(),
	}
}

// getSession is GET /api/v1/sessions/{id}.
func (s *Server) getSession(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	sess, err := s.deps.Store.Session(r.Context(), id)
	if err != nil {
		return fmt.Errorf("get session %s: %w", id, err)
	}
	writeJSON(w, http.StatusOK, SessionResponse{Session: sess})
	return nil
}

// listSessions is GET /api/v1/sessions?user_id=&provider=&state=&limit=&cursor=.
// state may also be "active" (every non-final state).
func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var f mc.SessionFilter
	if f.UserID = q.Get("user_id"); f.UserID != "" {
		if err := checkUserID(f.UserID); err != nil {
			return err
		}
	}
	if f.Provider = q.Get("provider"); f.Provider != "" {
		if err := s.checkProvider(f.Provider); err != nil {
			return err
		}
	}
	switch st := mc.State(q.Get("state")); {
	case st == "":
	case st == "active":
		f.Active = true
	case st.Valid():
		f.State = st
	default:
		return mc.Errorf(mc.EINVALID, mc.ReasonBadState, "state must be one of %v or active", mc.States)
	}
	var err error
	if f.Limit, err = queryLimit(q); err != nil {
		return err
	}
	if f.Cursor = q.Get("cursor"); len(f.Cursor) > 512 {
		return mc.Errorf(mc.EINVALID, mc.ReasonBadCursor, "the cursor is not valid")
	}
	list, next, err := s.deps.Store.Sessions(r.Context(), f)
	if err != nil {
		return fmt.Errorf("list sessions: %w", err)
	}
	if list == nil {
		list = []*mc.Session{}
	}
	writeJSON(w, http.StatusOK, SessionsResponse{Sessions: list, NextCursor: next})
	return nil
}

// cancelSession is POST /api/v1/sessions/{id}/cancel. A final session is a
// conflict (409, reason session_ended).
func (s *Server) cancelSession(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	sess, err := s.deps.Sessions.Cancel(r.Context(), id)
	if err != nil {
		return fmt.Errorf("cancel session %s: %w", id, err)
	}
	writeJSON(w, http.StatusOK, SessionResponse{Session: sess})
	return nil
}

// sessionEvents is GET /api/v1/sessions/{id}/events.
func (s *Server) sessionEvents(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	evs, err := s.deps.Store.Events(r.Context(), id)
	if err != nil {
		return fmt.Errorf("get events of session %s: %w", id, err)
	}
	if evs == nil {
		evs = []mc.Event{}
	}
	writeJSON(w, http.StatusOK, EventsResponse{Events: evs})
	return nil
}

// viewerToken is POST /api/v1/sessions/{id}/viewer-token: a fresh viewer for
// a live session. A session in a final state is a conflict (409, reason
// session_ended, with its id): there is nothing left to view.
func (s *Server) viewerToken(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	sess, err := s.deps.Store.Session(r.Context(), id)
	if err != nil {
		return fmt.Errorf("get session %s: %w", id, err)
	}
	if sess.State.Final() {
		return &mc.Error{Code: mc.ECONFLICT, Reason: mc.ReasonSessionEnded, SessionID: id,
			Message: fmt.Sprintf("the session has ended (%s)", sess.State)}
	}
	writeJSON(w, http.StatusOK, s.viewer(id))
	return nil
}
