package gateway

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/master-controller/mc"
)

// downStore fails Session with EUNAVAILABLE once down is set, as a
// PostgreSQL store does while the database is stopped.
type downStore struct {
	Store
	down atomic.Bool
}

func (s *downStore) Session(ctx context.Context, id string) (*mc.Session, error) {
	if s.down.Load() {
		return nil, &mc.Error{Code: mc.EUNAVAILABLE, Reason: mc.ReasonStoreUnreachable, Message: "The store cannot be reached."}
	}
	return s.Store.Session(ctx, id)
}

// TestStoreUnreachableWhileWaiting: a viewer waits for a starting machine
// and the store goes away; it is closed with 1013 (store_unreachable) at
// the next probe, long before the ready timeout.
func TestStoreUnreachableWhileWaiting(t *testing.T) {
	ds := &downStore{}
	e := newEnv(t, Config{ReadyTimeout: time.Hour, StoreProbeInterval: 20 * time.Millisecond}, func(e *env) {
		e.wrap = func(s Store) Store { ds.Store = s; return ds }
	})
	s := e.session(t, mc.StateStarting, netip.AddrPort{}, mc.Secret{})
	c := dial(t, e.url(s.ID, e.token(s.ID)), dialOpt{})
	waitFor(t, func() bool {
		got, err := e.store.Session(t.Context(), s.ID)
		return err == nil && got.Viewer != ""
	})
	ds.down.Store(true)
	wantClose(t, c, CodeNotReady, "the session store cannot be reached; try again later")
}
