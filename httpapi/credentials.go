package httpapi

import (
	"fmt"
	"net/http"
	"time"

	"github.com/master-controller/mc"
)

// CredentialInfo says that a user has a credential for a provider, without
// any of its content.
type CredentialInfo struct {
	Provider   string    `json:"provider"`
	CapturedAt time.Time `json:"captured_at"`
	SessionID  string    `json:"session_id"`
	// Kind, ExpiresAt and RefreshExpiresAt are what the files say (see
	// mc.CredentialMeta); never a secret.
	Kind             mc.CredentialKind `json:"kind,omitempty"`
	ExpiresAt        time.Time         `json:"expires_at,omitzero"`
	RefreshExpiresAt time.Time         `json:"refresh_expires_at,omitzero"`
}

// CredentialsResponse is the body of GET /api/v1/credentials/{user_id}.
type CredentialsResponse struct {
	UserID      string           `json:"user_id"`
	Credentials []CredentialInfo `json:"credentials"`
}

// AuditResponse is the body of GET /api/v1/audit.
type AuditResponse struct {
	Entries []mc.AuditEntry `json:"entries"`
}

// errNoVault answers the credential routes when no vault is configured.
var errNoVault = mc.Errorf(mc.EUNAVAILABLE, "no_vault", "the credential vault is not configured")

// credentialPath returns the {user_id} and {provider} path values, checked.
func (s *Server) credentialPath(r *http.Request) (userID, provider string, err error) {
	if s.deps.Credentials == nil {
		return "", "", errNoVault
	}
	userID, provider = r.PathValue("user_id"), r.PathValue("provider")
	if err := checkUserID(userID); err != nil {
		return "", "", err
	}
	if err := s.checkProvider(provider); err != nil {
		return "", "", err
	}
	return userID, provider, nil
}

// getCredential is GET /api/v1/credentials/{user_id}/{provider}: the opened
// credential (audited by the vault as a read by the caller's key).
func (s *Server) getCredential(w http.ResponseWriter, r *http.Request) error {
	userID, provider, err := s.credentialPath(r)
	if err != nil {
		return err
	}
	c, err := s.deps.Credentials.Get(r.Context(), userID, provider, reqState(r.Context()).actor)
	if err != nil {
		return fmt.Errorf("get credential %s/%s: %w", userID, provider, err)
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

// listCredentials is GET /api/v1/credentials/{user_id}: which providers the
// user has credentials for, and when they were captured; no secrets.
func (s *Server) listCredentials(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Credentials == nil {
		return errNoVault
	}
	userID := r.PathValue("user_id")
	if err := checkUserID(userID); err != nil {
		return err
	}
	list, err := s.deps.Credentials.List(r.Context(), userID, reqState(r.Context()).actor)
	if err != nil {
		return fmt.Errorf("list credentials of %s: %w", userID, err)
	}
	resp := CredentialsResponse{UserID: userID, Credentials: make([]CredentialInfo, 0, len(list))}
	for _, c := range list {
		resp.Credentials = append(resp.Credentials, CredentialInfo{
			Provider: c.Provider, CapturedAt: c.CapturedAt.UTC(), SessionID: c.SessionID,
			Kind: c.Meta.Kind, ExpiresAt: c.Meta.ExpiresAt, RefreshExpiresAt: c.Meta.RefreshExpiresAt})
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// deleteCredential is DELETE /api/v1/credentials/{user_id}/{provider}: 204.
func (s *Server) deleteCredential(w http.ResponseWriter, r *http.Request) error {
	userID, provider, err := s.credentialPath(r)
	if err != nil {
		return err
	}
	if err := s.deps.Credentials.Delete(r.Context(), userID, provider, reqState(r.Context()).actor); err != nil {
		return fmt.Errorf("delete credential %s/%s: %w", userID, provider, err)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listAudit is GET /api/v1/audit?user_id=&limit=, newest first.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var f mc.AuditFilter
	if f.UserID = q.Get("user_id"); f.UserID != "" {
		if err := checkUserID(f.UserID); err != nil {
			return err
		}
	}
	var err error
	if f.Limit, err = queryLimit(q); err != nil {
		return err
	}
	list, err := s.deps.Store.Audit(r.Context(), f)
	if err != nil {
		return fmt.Errorf("list audit entries: %w", err)
	}
	if list == nil {
		list = []mc.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, AuditResponse{Entries: list})
	return nil
}
