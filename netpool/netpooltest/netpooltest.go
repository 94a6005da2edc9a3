// Package netpooltest has test helpers for code that uses netpool: an
// in-memory mc.LeaseStore and a host network configuration that collides with
// nothing on the host and is removed when the test ends.
package netpooltest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/testutil"
	"github.com/master-controller/mc/netpool"
)

// Leases is an in-memory mc.LeaseStore with the store contract's semantics
// (lowest free value, idempotent per owner and pool).
type Leases struct {
	mu sync.Mutex
	l  []mc.Lease
}

var _ mc.LeaseStore = (*Leases)(nil)

// Lease implements mc.LeaseStore.
func (s *Leases) Lease(ctx context.Context, pool, owner string, lo, hi int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	used := map[int]bool{}
	for _, l := range s.l {
		if l.Pool != pool {
			continue
		}
		if l.Owner == owner {
			return l.Value, nil
		}
		used[l.Value] = true
	}
	for v := lo; v <= hi; v++ {
		if !used[v] {
			s.l = append(s.l, mc.Lease{Pool: pool, Value: v, Owner: owner, At: time.Now()})
			return v, nil
		}
	}
	return 0, mc.Errorf(mc.EUNAVAILABLE, mc.ReasonPoolExhausted, "pool %s is exhausted", pool)
}

// Release implements mc.LeaseStore.
func (s *Leases) Release(ctx context.Context, pool, owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.l[:0]
	for _, l := range s.l {
		if l.Pool != pool || l.Owner != owner {
			kept = append(kept, l)
		}
	}
	s.l = kept
	return nil
}

// Leases implements mc.LeaseStore.
func (s *Leases) Leases(ctx context.Context, pool string) ([]mc.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []mc.Lease
	for _, l := range s.l {
		if pool == "" || l.Pool == pool {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Value < out[j].Value })
	return out, nil
}

// ReclaimLeases implements mc.LeaseStore; with no sessions it reclaims nothing.
func (s *Leases) ReclaimLeases(ctx context.Context, keep []string) ([]mc.Lease, error) {
	return nil, nil
}

// Root skips the test (one line) unless it runs as root; under CI=true it
// fails instead.
func Root(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	testutil.SkipOrFail(tb, "network namespace tests need root")
}

// Config returns a netpool configuration with a unique bridge name and a
// random /24 in 10.128.0.0/9 that overlaps no address or route of the host.
// The bridge is torn down when the test ends.
func Config(tb testing.TB) netpool.Config {
	tb.Helper()
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	cfg := netpool.Config{Bridge: "mcbt" + hex.EncodeToString(suffix), Network: freeNetwork(tb)}
	tb.Cleanup(func() {
		p, err := netpool.New(cfg, &Leases{}, nil)
		if err == nil {
			_ = p.Teardown(context.WithoutCancel(context.Background()))
		}
		_ = os.Remove(netpool.LockPath(cfg.Bridge))
	})
	return cfg
}

func freeNetwork(tb testing.TB) netip.Prefix {
	tb.Helper()
	p, err := netpool.FreeNetwork(netip.MustParsePrefix("10.128.0.0/9"))
	if err != nil {
		tb.Fatal(err)
	}
	return p
}
