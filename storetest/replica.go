package storetest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/master-controller/mc"
)

func replicaOf(tb testing.TB, s mc.Store, id string) (mc.Replica, bool) {
	tb.Helper()
	list, err := s.Replicas(context.Background())
	if err != nil {
		tb.Fatalf("list replicas: %v", err)
	}
	for _, r := range list {
		if r.ID == id {
			return r, true
		}
	}
	return mc.Replica{}, false
}

// testReplicas: a replica starts, heartbeats (never backwards), stops and
// starts again; another handle sees the same; one that owns nothing and did
// not come back is forgotten, one that owns a live session is not.
func testReplicas(t *testing.T, open Opener) {
	a, b := open(t), open(t)
	ctx := t.Context()
	if list, err := b.Replicas(ctx); err != nil || len(list) != 0 {
		t.Fatalf("replicas of an empty store: %v, %v; want none", list, err)
	}
	wantErr(t, func() error { _, err := a.Heartbeat(ctx, "r1", base); return err }(), mc.ENOTFOUND, mc.ReasonReplicaNotFound)
	if err := a.StartReplica(ctx, "r1", base); err != nil {
		t.Fatal(err)
	}
	if err := a.StartReplica(ctx, "r2", base); err != nil {
		t.Fatal(err)
	}
	r, err := a.Heartbeat(ctx, "r1", base.Add(2*time.Second))
	if err != nil || r.State != mc.ReplicaRunning || !r.HeartbeatAt.Equal(us(base.Add(2*time.Second))) || !r.StartedAt.Equal(us(base)) {
		t.Fatalf("heartbeat: %+v, %v; want running, started at %v, heartbeat 2 s later", r, err, us(base))
	}
	// An older heartbeat (a slow write that arrives late) is ignored.
	if r, err = a.Heartbeat(ctx, "r1", base.Add(time.Second)); err != nil || !r.HeartbeatAt.Equal(us(base.Add(2*time.Second))) {
		t.Fatalf("older heartbeat: %+v, %v; want the newer one kept", r, err)
	}
	got, ok := replicaOf(t, b, "r1")
	if !ok || got != r {
		t.Fatalf("r1 through another handle: %+v (%v), want %+v", got, ok, r)
	}
	if err := b.StopReplica(ctx, "r1", base.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, _ := replicaOf(t, a, "r1"); got.State != mc.ReplicaStopping || !got.HeartbeatAt.Equal(us(base.Add(3*time.Second))) {
		t.Fatalf("after stop: %+v, want stopping at the time of the stop", got)
	}
	if err := b.StopReplica(ctx, "nobody", base); err != nil {
		t.Fatalf("stop a replica without a row: %v, want nil", err)
	}
	// The same name starts again: running, a new start.
	if err := a.StartReplica(ctx, "r1", base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got, _ := replicaOf(t, b, "r1"); got.State != mc.ReplicaRunning || !got.StartedAt.Equal(us(base.Add(time.Minute))) {
		t.Fatalf("after a restart: %+v, want running, started a minute later", got)
	}
	list, err := b.Replicas(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "r1" || list[1].ID != "r2" {
		t.Fatalf("replicas: %+v, %v; want r1 and r2 in order", list, err)
	}

	// r2 owns a live session: it is not forgotten; once the session ended
	// it is, but only at the heartbeat that was read.
	sess := NewSession("u1", "demo", time.Time{})
	if err := a.CreateSession(ctx, sess, "r2", mc.Capacity{}); err != nil {
		t.Fatal(err)
	}
	r2, _ := replicaOf(t, a, "r2")
	if ok, err := b.ForgetReplica(ctx, r2); err != nil || ok {
		t.Fatalf("forget a replica with a live session: %v, %v; want false", ok, err)
	}
	move(t, a, sess, mc.StateCancelled)
	older := r2
	older.HeartbeatAt = r2.HeartbeatAt.Add(-time.Second)
	if ok, err := b.ForgetReplica(ctx, older); err != nil || ok {
		t.Fatalf("forget at another heartbeat: %v, %v; want false", ok, err)
	}
	// Stopping, then started again at the same time: it came back.
	if err := a.StopReplica(ctx, "r2", r2.HeartbeatAt); err != nil {
		t.Fatal(err)
	}
	stopped, _ := replicaOf(t, a, "r2")
	if err := a.StartReplica(ctx, "r2", r2.HeartbeatAt); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.ForgetReplica(ctx, stopped); err != nil || ok {
		t.Fatalf("forget a replica seen stopping that started again: %v, %v; want false", ok, err)
	}
	r2, _ = replicaOf(t, a, "r2")
	if ok, err := b.ForgetReplica(ctx, r2); err != nil || !ok {
		t.Fatalf("forget: %v, %v; want true", ok, err)
	}
	if _, ok := replicaOf(t, a, "r2"); ok {
		t.Fatal("r2 still listed after it was forgotten")
	}
}

// testAdoptSession: an adoption moves the owner by compare-and-set on owner
// and version, keeps the state, records an event, moves the replica's
// count and wakes watchers on another handle; a stale or final session is
// refused.
func testAdoptSession(t *testing.T, open Opener) {
	a, b := open(t), open(t)
	ctx := t.Context()
	sess := NewSession("u1", "demo", time.Time{})
	if err := a.CreateSession(ctx, sess, "ra", mc.Capacity{}); err != nil {
		t.Fatal(err)
	}
	sess = reach(t, a, sess, mc.StateReady)
	ch, err := b.Watch(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, func(*mc.Session) bool { return true })

	wantErr(t, func() error {
		_, err := b.AdoptSession(ctx, mc.Adoption{ID: sess.ID, From: "rz", Version: sess.Version, To: "rb"})
		return err
	}(), mc.ECONFLICT, mc.ReasonStale)
	wantErr(t, func() error {
		_, err := b.AdoptSession(ctx, mc.Adoption{ID: sess.ID, From: "ra", Version: sess.Version - 1, To: "rb"})
		return err
	}(), mc.ECONFLICT, mc.ReasonStale)
	wantErr(t, func() error {
		_, err := b.AdoptSession(ctx, mc.Adoption{ID: mc.NewID(), From: "ra", Version: 1, To: "rb"})
		return err
	}(), mc.ENOTFOUND, "")

	at := time.Now()
	got, err := b.AdoptSession(ctx, mc.Adoption{ID: sess.ID, From: "ra", Version: sess.Version, To: "rb",
		Message: "adopted from replica ra", At: at})
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	want := *sess
	want.Replica, want.Version, want.UpdatedAt = "rb", sess.Version+1, us(at)
	equal(t, "adopted session", got, &want)
	equal(t, "stored session", get(t, a, sess.ID), &want)
	equal(t, "watched session", waitFor(t, ch, func(s *mc.Session) bool { return s.Replica == "rb" }), &want)
	ev := events(t, a, sess.ID)
	last := ev[len(ev)-1]
	if last.Reason != mc.ReasonSessionAdopted || last.From != mc.StateReady || last.State != mc.StateReady ||
		last.Replica != "rb" || last.Message != "adopted from replica ra" {
		t.Fatalf("last event %+v, want ready → ready, session_adopted by rb", last)
	}
	if n := countActive(t, a, "ra"); n != 0 {
		t.Errorf("CountActive(ra) after the adoption: %d, want 0", n)
	}
	if n := countActive(t, a, "rb"); n != 1 {
		t.Errorf("CountActive(rb) after the adoption: %d, want 1", n)
	}
	if n := countActive(t, a, ""); n != 1 {
		t.Errorf("CountActive() after the adoption: %d, want 1", n)
	}
	list, _, err := a.Sessions(ctx, mc.SessionFilter{Active: true, Replica: "rb"})
	if err != nil || len(list) != 1 || list[0].ID != sess.ID {
		t.Fatalf("live sessions of rb: %v, %v; want the adopted one", list, err)
	}
	if list, _, err := a.Sessions(ctx, mc.SessionFilter{Replica: "ra"}); err != nil || len(list) != 0 {
		t.Fatalf("sessions of ra: %v, %v; want none", list, err)
	}
	// The adopter's transitions free the slot of its own scope.
	move(t, b, got, mc.StateCancelled)
	if n := countActive(t, a, "rb"); n != 0 {
		t.Errorf("CountActive(rb) after the end: %d, want 0", n)
	}
	wantErr(t, func() error {
		_, err := b.AdoptSession(ctx, mc.Adoption{ID: sess.ID, From: "rb", Version: got.Version + 1, To: "ra"})
		return err
	}(), mc.ECONFLICT, mc.ReasonStale)
}

// testAdoptRace: two handles (two replicas) adopt the same sessions at once,
// each from the replica it read: exactly one adoption of each session wins.
func testAdoptRace(t *testing.T, open Opener) {
	stores := []mc.Store{open(t), open(t)}
	ctx := t.Context()
	const n = 20
	var sessions []*mc.Session
	for i := range n {
		sess := NewSession(fmt.Sprint("u", i), "demo", time.Time{})
		if err := stores[0].CreateSession(ctx, sess, "dead", mc.Capacity{}); err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, reach(t, stores[0], sess, mc.StateReady))
	}
	var (
		wg   sync.WaitGroup
		won  [n]atomic.Int32
		errs = make(chan error, 2*n)
	)
	for i, sess := range sessions {
		for j, s := range stores {
			wg.Go(func() {
				_, err := s.AdoptSession(ctx, mc.Adoption{ID: sess.ID, From: "dead", Version: sess.Version,
					To: fmt.Sprint("r", j)})
				switch {
				case err == nil:
					won[i].Add(1)
				case mc.ErrorCode(err) != mc.ECONFLICT:
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("adopt: %v, want nil or a conflict", err)
	}
	owned := map[string]int{}
	for i, sess := range sessions {
		if w := won[i].Load(); w != 1 {
			t.Errorf("session %d: %d adoptions won, want exactly 1", i, w)
		}
		got := get(t, stores[1], sess.ID)
		owned[got.Replica]++
		adopted := 0
		for _, e := range events(t, stores[1], sess.ID) {
			if e.Reason == mc.ReasonSessionAdopted {
				adopted++
				if e.Replica != got.Replica {
					t.Errorf("session %d adopted by %s, owned by %s", i, e.Replica, got.Replica)
				}
			}
		}
		if adopted != 1 {
			t.Errorf("session %d: %d adoption events, want 1", i, adopted)
		}
	}
	for _, r := range []string{"r0", "r1"} {
		if got := countActive(t, stores[0], r); got != owned[r] {
			t.Errorf("CountActive(%s): %d, want the %d sessions it owns", r, got, owned[r])
		}
	}
	if got := countActive(t, stores[0], "dead"); got != 0 {
		t.Errorf("CountActive(dead): %d, want 0", got)
	}
}
