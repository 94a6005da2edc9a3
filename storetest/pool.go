package storetest

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/master-controller/mc"
)

// addReady puts a ready pooled machine of provider in the pool of replica.
func addReady(tb testing.TB, s mc.Store, replica, provider string, c mc.Capacity) mc.PooledMachine {
	tb.Helper()
	p := mc.PooledMachine{ID: mc.NewID(), Provider: provider, Replica: replica, CreatedAt: time.Now()}
	if err := s.AddPooled(context.Background(), p, c); err != nil {
		tb.Fatalf("add pooled: %v", err)
	}
	p.Machine = mc.Machine{ID: p.ID, Driver: "fake", IP: netip.MustParseAddr("10.0.0.9"), VNCPort: 5900, AgentPort: 8080,
		SocketDir: "/run/mc/sockets/" + p.ID}
	if err := s.PooledReady(context.Background(), p.ID, p.Machine, time.Now()); err != nil {
		tb.Fatalf("pooled ready: %v", err)
	}
	return p
}

func testPoolClaim(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	// A starting machine is not claimed: the session starts cold.
	starting := mc.PooledMachine{ID: mc.NewID(), Provider: "demo", Replica: "r1", CreatedAt: time.Now()}
	if err := s.AddPooled(ctx, starting, mc.Capacity{}); err != nil {
		t.Fatalf("add pooled: %v", err)
	}
	wantErr(t, s.AddPooled(ctx, starting, mc.Capacity{}), mc.ECONFLICT, "pooled_exists")
	cold := NewSession("u0", "demo", time.Time{})
	claim, err := s.CreateSessionFromPool(ctx, cold, "r1", mc.Capacity{PerReplica: true})
	if err != nil || claim.Pooled || cold.State != mc.StatePending || cold.Machine.Pooled {
		t.Fatalf("got %+v, %v, state %s; want a cold pending session", claim, err, cold.State)
	}

	p := addReady(t, s, "r1", "demo", mc.Capacity{})
	addReady(t, s, "r2", "demo", mc.Capacity{}) // another replica's host: not ours to claim
	addReady(t, s, "r1", "other", mc.Capacity{})
	sess := NewSession("u1", "demo", time.Time{})
	claim, err = s.CreateSessionFromPool(ctx, sess, "r1", mc.Capacity{PerReplica: true})
	if err != nil || !claim.Pooled {
		t.Fatalf("got %+v, %v; want a pool hit", claim, err)
	}
	if sess.ID != p.ID || sess.State != mc.StateReady || !sess.Machine.Pooled || sess.Machine.VNCPort != 5900 {
		t.Fatalf("got session %s in %s with machine %+v; want %s ready on the pooled machine", sess.ID, sess.State, sess.Machine, p.ID)
	}
	got := get(t, s, p.ID)
	if got.State != mc.StateReady || !got.Machine.Pooled ||
		got.ReadyAt.IsZero() || got.Replica != "r1" {
		t.Fatalf("stored session %+v; want ready on the pooled machine", got)
	}
	ev := events(t, s, p.ID)
	if len(ev) != 2 || ev[1].State != mc.StateReady || ev[1].Reason != mc.ReasonPooled {
		t.Fatalf("got events %+v; want pending, then ready with reason pooled", ev)
	}
	wantErr(t, s.RemovePooled(ctx, p.ID), mc.ENOTFOUND, "not_pooled")
	wantErr(t, s.PooledReady(ctx, p.ID, p.Machine, time.Now()), mc.ENOTFOUND, "not_pooled")

	// The next one finds only r1's starting machine: a miss.
	claim, err = s.CreateSessionFromPool(ctx, NewSession("u2", "demo", time.Time{}), "r1", mc.Capacity{PerReplica: true})
	if err != nil || claim.Pooled {
		t.Fatalf("got %+v, %v; want a miss", claim, err)
	}
	// A user with a live session is refused and the pool keeps its machine.
	before, _ := s.PooledMachines(ctx, "")
	_, err = s.CreateSessionFromPool(ctx, NewSession("u1", "other", time.Time{}), "r1", mc.Capacity{})
	if err != nil {
		t.Fatalf("claim other: %v", err)
	}
	_, err = s.CreateSessionFromPool(ctx, NewSession("u1", "demo", time.Time{}), "r2", mc.Capacity{})
	wantErr(t, err, mc.ECONFLICT, "active_session")
	after, _ := s.PooledMachines(ctx, "")
	if len(after) != len(before)-1 {
		t.Fatalf("got %d pooled machines after a claim and a refusal, want %d", len(after), len(before)-1)
	}
	// Cluster capacity: any replica's machine may be claimed.
	claim, err = s.CreateSessionFromPool(ctx, NewSession("u3", "demo", time.Time{}), "r1", mc.Capacity{})
	if err != nil || !claim.Pooled {
		t.Fatalf("got %+v, %v; want a hit on r2's machine for a cluster", claim, err)
	}
	if n := countActive(t, s, "r2"); n != 0 {
		t.Errorf("r2 counts %d live sessions, want 0 (its machine's slot moved to r1)", n)
	}
	if n := countActive(t, s, ""); n != 5 {
		t.Errorf("got %d live sessions, want 5", n)
	}
}

func testPoolCapacity(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	c := mc.Capacity{Max: 2, PerReplica: true}
	p := addReady(t, s, "r1", "demo", c)
	addReady(t, s, "r1", "demo", c)
	extra := mc.PooledMachine{ID: mc.NewID(), Provider: "demo", Replica: "r1", CreatedAt: time.Now()}
	wantErr(t, s.AddPooled(ctx, extra, c), mc.EUNAVAILABLE, "capacity")
	if n := countActive(t, s, "r1"); n != 0 {
		t.Fatalf("got %d live sessions with a full pool, want 0", n)
	}
	// A claim takes the machine's slot: no new one is needed.
	sess := NewSession("u1", "demo", time.Time{})
	if claim, err := s.CreateSessionFromPool(ctx, sess, "r1", c); err != nil || !claim.Pooled {
		t.Fatalf("got %+v, %v; want a hit at full capacity", claim, err)
	}
	if n := countActive(t, s, "r1"); n != 1 {
		t.Fatalf("got %d live sessions, want 1", n)
	}
	wantErr(t, s.AddPooled(ctx, extra, c), mc.EUNAVAILABLE, "capacity")
	// Removing frees the slot; ending the session frees its slot.
	pool, _ := s.PooledMachines(ctx, "r1")
	if len(pool) != 1 || pool[0].ID == p.ID && pool[0].State != mc.PoolReady {
		t.Fatalf("got pool %+v, want one ready machine", pool)
	}
	if err := s.RemovePooled(ctx, pool[0].ID); err != nil {
		t.Fatalf("remove pooled: %v", err)
	}
	move(t, s, sess, mc.StateCancelled)
	if err := s.AddPooled(ctx, extra, c); err != nil {
		t.Fatalf("add after freeing: %v", err)
	}
	if err := s.AddPooled(ctx, mc.PooledMachine{ID: mc.NewID(), Provider: "demo", Replica: "r1", CreatedAt: time.Now()}, c); err != nil {
		t.Fatalf("add second after freeing: %v", err)
	}
}

func testPoolEvict(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	c := mc.Capacity{Max: 2, PerReplica: true}
	other := addReady(t, s, "r1", "other", c)
	starting := mc.PooledMachine{ID: mc.NewID(), Provider: "demo", Replica: "r1", CreatedAt: time.Now()}
	if err := s.AddPooled(ctx, starting, c); err != nil {
		t.Fatalf("add pooled: %v", err)
	}
	// Full with pooled machines: a cold start evicts another provider's.
	sess := NewSession("u1", "demo", time.Time{})
	claim, err := s.CreateSessionFromPool(ctx, sess, "r1", c)
	if err != nil || claim.Pooled || len(claim.Evicted) != 1 || claim.Evicted[0].ID != other.ID {
		t.Fatalf("got %+v, %v; want a miss that evicts %s", claim, err, other.ID)
	}
	// Then the starting machine of the same provider.
	claim, err = s.CreateSessionFromPool(ctx, NewSession("u2", "demo", time.Time{}), "r1", c)
	if err != nil || len(claim.Evicted) != 1 || claim.Evicted[0].ID != starting.ID {
		t.Fatalf("got %+v, %v; want a miss that evicts %s", claim, err, starting.ID)
	}
	// Full of sessions: refused, as ever.
	_, err = s.CreateSessionFromPool(ctx, NewSession("u3", "demo", time.Time{}), "r1", c)
	wantErr(t, err, mc.EUNAVAILABLE, "capacity")
	if n := countActive(t, s, "r1"); n != 2 {
		t.Fatalf("got %d live sessions, want 2", n)
	}
}

// testPoolConcurrentClaims claims from one pool through two handles (two
// replicas) at once: no machine is claimed twice and no claim is lost.
func testPoolConcurrentClaims(t *testing.T, open Opener) {
	stores := []mc.Store{open(t), open(t)}
	const n = 100
	ids := make(map[string]bool)
	for range n {
		ids[addReady(t, stores[0], "r1", "demo", mc.Capacity{}).ID] = true
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	claimed := make(map[string]int)
	var misses, failures int
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			sess := NewSession("user"+mc.NewID(), "demo", time.Time{})
			replica := []string{"r1", "r2"}[i%2]
			var claim mc.Claim
			var err error
			for range 20 { // a busy store asks to retry
				claim, err = stores[i%2].CreateSessionFromPool(context.Background(), sess, replica, mc.Capacity{})
				if mc.ErrorCode(err) != mc.EUNAVAILABLE {
					break
				}
				time.Sleep(time.Duration(i%5+1) * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failures++
				t.Errorf("claim %d: %v", i, err)
			case !claim.Pooled:
				misses++
			default:
				claimed[sess.ID]++
			}
		})
	}
	wg.Wait()
	for id, k := range claimed {
		if k != 1 || !ids[id] {
			t.Errorf("machine %s claimed %d times (pooled: %v)", id, k, ids[id])
		}
	}
	if len(claimed) != n || misses != 0 || failures != 0 {
		t.Errorf("got %d machines claimed, %d misses, %d failures; want %d, 0, 0", len(claimed), misses, failures, n)
	}
	if left, _ := stores[1].PooledMachines(t.Context(), ""); len(left) != 0 {
		t.Errorf("got %d machines left in the pool, want 0", len(left))
	}
}

func testPoolLeases(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	p := addReady(t, s, "r1", "demo", mc.Capacity{})
	if _, err := s.Lease(ctx, "ip", p.ID, 2, 10); err != nil {
		t.Fatalf("lease: %v", err)
	}
	if got, err := s.ReclaimLeases(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("reclaimed %v, %v; want a pooled machine's lease kept", got, err)
	}
	if _, err := s.CreateSessionFromPool(ctx, NewSession("u1", "demo", time.Time{}), "r1", mc.Capacity{}); err != nil {
		t.Fatalf("claim: %v", err)
	}
	if got, err := s.ReclaimLeases(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("reclaimed %v, %v; want the claiming session's lease kept", got, err)
	}
}
