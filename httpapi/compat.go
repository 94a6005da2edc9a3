package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// The earlier controller's endpoints, kept for its frontends. They need the
// API key like every /api/ route, take and give that controller's camelCase
// fields, and run on the same code paths as /api/v1; errors have the /api/v1
// shape.

// CompatStartRequest is the body of POST /api/auth/start.
type CompatStartRequest struct {
	UserID   string `json:"userId"`
	Provider string `json:"provider"`
}

// CompatStartResponse is the body of a 200 from POST /api/auth/start.
type CompatStartResponse struct {
	SessionID string `json:"sessionId"`
	Status    string `json:"status"`
	ViewerURL string `json:"viewerUrl"`
	// WebSocketURL is the gateway's compatibility WebSocket,
	// /api/auth/session/{id}/novnc/websock?token=….
	WebSocketURL string `json:"websocketUrl"`
	Token        string `json:"token"`
}

// CompatSessionResponse is the body of GET /api/auth/session/{id}. ViewerURL
// (with a fresh token) is present while the session is live.
type CompatSessionResponse struct {
	SessionID string `json:"sessionId"`
	Status    string `json:"status"`
	UserID    string `json:"userId"`
	Provider  string `json:"provider"`
	ViewerURL string `json:"viewerUrl,omitempty"`
}

// compatStart is POST /api/auth/start {userId, provider}.
func (s *Server) compatStart(w http.ResponseWriter, r *http.Request) error {
	var req CompatStartRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	sess, err := s.start(r.Context(), req.UserID, req.Provider)
	if err != nil {
		return err
	}
	v := s.viewer(sess.ID)
	writeJSON(w, http.StatusOK, CompatStartResponse{
		SessionID:    sess.ID,
		Status:       string(sess.State),
		ViewerURL:    v.URL,
		WebSocketURL: s.wsURL("/api/auth/session/" + sess.ID + "/novnc/websock?token=" + url.QueryEscape(v.Token)),
		Token:        v.Token,
	})
	return nil
}

// compatSession is GET /api/auth/session/{id}.
func (s *Server) compatSession(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	sess, err := s.deps.Store.Session(r.Context(), id)
	if err != nil {
		return fmt.Errorf("get session %s: %w", id, err)
	}
	resp := CompatSessionResponse{SessionID: sess.ID, Status: string(sess.State),
		UserID: sess.UserID, Provider: sess.Provider}
	if !sess.State.Final() {
		resp.ViewerURL = s.viewer(id).URL
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// wsURL turns path into a WebSocket URL on PublicURL (http → ws, https →
// wss); with no PublicURL it stays a path.
func (s *Server) wsURL(path string) string {
	base := s.cfg.PublicURL
	switch {
	case strings.HasPrefix(base, "https://"):
		base = "wss://" + strings.TrimPrefix(base, "https://")
	case strings.HasPrefix(base, "http://"):
		base = "ws://" + strings.TrimPrefix(base, "http://")
	}
	return base + path
}
