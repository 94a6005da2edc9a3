package httpapi

import (
	"context"
	"net/http"
	"sync"

	"github.com/master-controller/mc"
)

// HealthResponse is the body of GET /healthz and GET /readyz. Checks maps
// each readiness check's name to "ok" or what is wrong.
type HealthResponse struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks,omitempty"`
}

// ProvidersResponse is the body of GET /api/v1/providers.
type ProvidersResponse struct {
	Providers []ProviderInfo `json:"providers"`
}

// ProviderInfo is a provider and whether it can run here.
type ProviderInfo struct {
	mc.Provider
	Available bool `json:"available"`
	// Unavailable says why not (a missing CLI and how to install it).
	Unavailable string `json:"unavailable,omitempty"`
}

// healthz is GET /healthz: the process is up. It is always 200.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, HealthResponse{Status: "ok"})
	return nil
}

// readyz is GET /readyz: 200 {"status":"ok"} when the store and every
// configured check answer, else 503 {"status":"unavailable"} (or "draining"
// after Drain) with what is wrong for each check. Checks run at once, each
// bounded by Config.ReadyTimeout.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	checks := append([]Check{{Name: "store", Check: s.deps.Store.Ping}}, s.deps.Checks...)
	results := make(map[string]string, len(checks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
			defer cancel()
			res := "ok"
			if err := c.Check(ctx); err != nil {
				res = err.Error()
			}
			mu.Lock()
			results[c.Name] = res
			mu.Unlock()
		})
	}
	wg.Wait()
	resp := HealthResponse{Status: "ok", Checks: results}
	for _, res := range results {
		if res != "ok" {
			resp.Status = "unavailable"
		}
	}
	if s.draining.Load() {
		resp.Status = "draining"
	}
	status := http.StatusOK
	if resp.Status != "ok" {
		status = http.StatusServiceUnavailable
		reqState(r.Context()).err = mc.Errorf(mc.EUNAVAILABLE, mc.Reason(resp.Status), "not ready: %v", results)
	}
	writeJSON(w, status, resp)
	return nil
}

// listProviders is GET /api/v1/providers.
func (s *Server) listProviders(w http.ResponseWriter, _ *http.Request) error {
	list := []ProviderInfo{}
	for _, p := range s.deps.Providers.All() {
		info := ProviderInfo{Provider: p, Available: true}
		if s.deps.ProviderCheck != nil {
			if err := s.deps.ProviderCheck(p); err != nil {
				info.Available, info.Unavailable = false, err.Error()
			}
		}
		list = append(list, info)
	}
	writeJSON(w, http.StatusOK, ProvidersResponse{Providers: list})
	return nil
}
