package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/master-controller/mc"
)

// HealthResponse is the body of GET /healthz and GET /readyz. Checks maps
// each readiness check's name to "ok" or what is wrong; /readyz shows it
// only to a request with the API key.
type HealthResponse struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks,omitempty"`
}

// MetricsOnly serves h at GET /metrics and answers anything else with the
// API's JSON 404 (or 405): for a listener of its own on a trusted network,
// where /metrics needs no API key.
func MetricsOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path != "/metrics":
			writeError(w, mc.Errorf(mc.ENOTFOUND, ReasonNoRoute, "no such route"))
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, mc.Errorf(mc.EINVALID, ReasonMethodNotAllowed, "method %s is not allowed here", r.Method))
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// ProvidersResponse is the body of GET /api/v1/providers.
type ProvidersResponse struct {
	Providers []ProviderInfo `json:"providers"`
}

// ProviderInfo is a provider and whether it can run here. Its JSON is the
// provider's with "available" and "unavailable" beside its fields.
type ProviderInfo struct {
	mc.Provider
	Available bool `json:"available"`
	// Unavailable says why not (a missing CLI and how to install it).
	Unavailable string `json:"unavailable,omitempty"`
}

// availability is ProviderInfo's own part of its JSON.
type availability struct {
	Available   bool   `json:"available"`
	Unavailable string `json:"unavailable,omitempty"`
}

// MarshalJSON writes the provider's fields and the availability in one
// object (the embedded Provider's own MarshalJSON would hide the latter).
func (i ProviderInfo) MarshalJSON() ([]byte, error) {
	p, err := json.Marshal(i.Provider)
	if err != nil {
		return nil, err
	}
	a, err := json.Marshal(availability{i.Available, i.Unavailable})
	if err != nil {
		return nil, err
	}
	// Two objects into one: {…provider…, …availability…}.
	return append(append(p[:len(p)-1:len(p)-1], ','), a[1:]...), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (i *ProviderInfo) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &i.Provider); err != nil {
		return err
	}
	var a availability
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	i.Available, i.Unavailable = a.Available, a.Unavailable
	return nil
}

// healthz is GET /healthz: the process is up. It is always 200.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, HealthResponse{Status: "ok"})
	return nil
}

// readyz is GET /readyz: 200 {"status":"ok"} when the store and every
// configured check answer, else 503 {"status":"unavailable"} (or "draining"
// after Drain). With a valid API key the body also says, for each check,
// "ok" or what is wrong; without one it says nothing more, since what is
// wrong may name the database's user, host and port. The access log line
// holds the details either way. Checks run at once, each bounded by
// Config.ReadyTimeout.
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
	if actor, err := s.authenticate(r); err == nil {
		reqState(r.Context()).actor = actor
	} else {
		resp.Checks = nil
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
