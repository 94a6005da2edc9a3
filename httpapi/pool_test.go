package httpapi_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/master-controller/mc"
	"github.com/master-controller/mc/httpapi"
)

type fakePool mc.PoolStatus

func (p fakePool) Pool(context.Context) (mc.PoolStatus, error) { return mc.PoolStatus(p), nil }

func TestPool(t *testing.T) {
	want := mc.PoolStatus{Replica: "r1", MaxAge: "30m0s", Providers: []mc.PoolProvider{{Provider: "demo", Target: 2, Ready: 1, Starting: 1}}}
	e := newEnv(t, options{deps: func(d *httpapi.Deps) { d.Pool = fakePool(want) }})
	code, _, body := e.do(t, "GET", "/api/v1/pool", "")
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/pool: status %d, want 200", code)
	}
	got := decode[mc.PoolStatus](t, body)
	if len(got.Providers) != 1 || got.Providers[0] != want.Providers[0] {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if code, _, _ := e.do(t, "GET", "/api/v1/pool", "", "Authorization", ""); code != http.StatusUnauthorized {
		t.Errorf("without the API key: status %d, want 401", code)
	}
	// Without a pool: an empty list, not null.
	e = newEnv(t, options{})
	_, _, body = e.do(t, "GET", "/api/v1/pool", "")
	if got := decode[mc.PoolStatus](t, body); got.Providers == nil || len(got.Providers) != 0 {
		t.Errorf("got %s, want an empty providers list", body)
	}
}
