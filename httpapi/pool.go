package httpapi

import (
	"net/http"

	"github.com/master-controller/mc"
)

// getPool is GET /api/v1/pool: per provider, the target and the ready and
// starting pooled machines.
func (s *Server) getPool(w http.ResponseWriter, r *http.Request) error {
	st := mc.PoolStatus{Replica: s.cfg.Replica, Providers: []mc.PoolProvider{}}
	if s.deps.Pool != nil {
		var err error
		if st, err = s.deps.Pool.Pool(r.Context()); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}
