// Package storetest is the contract suite of mc.Store: every store passes Run.
//
// A store's test gives Run a NewDB function that makes a fresh, empty
// database and returns an Opener for it. Each test of the suite gets its own
// database; a test that needs two Stores on one database (two replicas, or
// two handles in one process) calls the Opener twice.
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Opener {
//			path := filepath.Join(t.TempDir(), "mc.db")
//			return func(t *testing.T) mc.Store { ... Open(t.Context(), path, ...) ... }
//		})
//	}
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/master-controller/mc"
)

// Opener opens a Store on one database, closing it in t.Cleanup. Calling it
// again opens another handle on the same database.
type Opener func(t *testing.T) mc.Store

// NewDB makes a new, empty database and returns its Opener.
type NewDB func(t *testing.T) Opener

// Run runs the contract suite. Its tests run in parallel, so newDB must be
// safe for concurrent use.
func Run(t *testing.T, newDB NewDB) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"CreateAndGet", testCreateAndGet},
		{"CreateInvalid", testCreateInvalid},
		{"OneActivePerUserProvider", testOneActive},
		{"ConcurrentCreate", testConcurrentCreate},
		{"Capacity", testCapacity},
		{"CapacityPerReplica", testCapacityPerReplica},
		{"List", testList},
		{"ListFilters", testListFilters},
		{"ListBadInput", testListBadInput},
		{"Transitions", testTransitions},
		{"FinalNeverChanges", testFinalNeverChanges},
		{"Stale", testStale},
		{"TransitionMachine", testTransitionMachine},
		{"Race", testRace},
		{"SetMachine", testSetMachine},
		{"Touch", testTouch},
		{"ClaimViewer", testClaimViewer},
		{"SetLogin", testSetLogin},
		{"Events", testEvents},
		{"WatchFirstValue", testWatchFirstValue},
		{"WatchWakes", testWatchWakes},
		{"WatchNewest", testWatchNewest},
		{"WatchFinal", testWatchFinal},
		{"WatchContext", testWatchContext},
		{"WatchNotFound", testWatchNotFound},
		{"WatchAcrossStores", testWatchAcrossStores},
		{"Leases", testLeases},
		{"LeaseExhausted", testLeaseExhausted},
		{"ConcurrentLeases", testConcurrentLeases},
		{"ReclaimLeases", testReclaimLeases},
		{"Credentials", testCredentials},
		{"Audit", testAudit},
		{"Ping", testPing},
		{"PoolClaim", testPoolClaim},
		{"PoolCapacity", testPoolCapacity},
		{"PoolEvict", testPoolEvict},
		{"PoolConcurrentClaims", testPoolConcurrentClaims},
		{"PoolLeases", testPoolLeases},
		{"Replicas", testReplicas},
		{"AdoptSession", testAdoptSession},
		{"AdoptRace", testAdoptRace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every test has a database of its own; they wait on conditions,
			// never on time, so they can share the machine.
			t.Parallel()
			tt.fn(t, newDB(t))
		})
	}
}

// base has nanoseconds on purpose: stores keep microseconds.
var base = time.Date(2026, 11, 27, 9, 0, 0, 123456789, time.UTC)

// us is how a store keeps a time: UTC, microseconds.
func us(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// NewSession returns a valid session for CreateSession, created at the given
// time (zero: now).
func NewSession(userID, provider string, created time.Time) *mc.Session {
	if created.IsZero() {
		created = time.Now()
	}
	return &mc.Session{
		ID:        mc.NewID(),
		UserID:    userID,
		Provider:  provider,
		CreatedAt: created,
		ExpiresAt: created.Add(30 * time.Minute),
	}
}

func create(tb testing.TB, s mc.Store, userID, provider string) *mc.Session {
	tb.Helper()
	sess := NewSession(userID, provider, time.Time{})
	if err := s.CreateSession(context.Background(), sess, "r1", mc.Capacity{}); err != nil {
		tb.Fatalf("create session: %v", err)
	}
	return sess
}

func get(tb testing.TB, s mc.Store, id string) *mc.Session {
	tb.Helper()
	sess, err := s.Session(context.Background(), id)
	if err != nil {
		tb.Fatalf("get session %s: %v", id, err)
	}
	return sess
}

func move(tb testing.TB, s mc.Store, sess *mc.Session, to mc.State) *mc.Session {
	tb.Helper()
	next, err := s.Transition(context.Background(), mc.Transition{ID: sess.ID, From: sess.State, Version: sess.Version,
		To: to, Replica: "r1", At: time.Now()})
	if err != nil {
		tb.Fatalf("transition %s → %s: %v", sess.State, to, err)
	}
	return next
}

// reach moves a pending session to state target along the shortest path.
func reach(tb testing.TB, s mc.Store, sess *mc.Session, target mc.State) *mc.Session {
	tb.Helper()
	for sess.State != target {
		switch {
		case mc.CanTransition(sess.State, target):
			sess = move(tb, s, sess, target)
		case sess.State == mc.StatePending:
			sess = move(tb, s, sess, mc.StateStarting)
		case sess.State == mc.StateStarting:
			sess = move(tb, s, sess, mc.StateReady)
		case sess.State == mc.StateReady:
			sess = move(tb, s, sess, mc.StateCapturing)
		default:
			tb.Fatalf("cannot reach %s from %s", target, sess.State)
		}
	}
	return sess
}

func wantErr(tb testing.TB, err error, code mc.Code, reason mc.Reason) *mc.Error {
	tb.Helper()
	var e *mc.Error
	if !errors.As(err, &e) {
		tb.Fatalf("got error %v, want *mc.Error %s (%s)", err, code, reason)
	}
	if e.Code != code || (reason != "" && e.Reason != reason) {
		tb.Fatalf("got error %s (%s): %v, want %s (%s)", e.Code, e.Reason, err, code, reason)
	}
	return e
}

func equal(tb testing.TB, what string, got, want *mc.Session) {
	tb.Helper()
	if got == nil || want == nil {
		tb.Fatalf("%s: got %v, want %v", what, got, want)
	}
	g, w := *got, *want
	if (g.Login == nil) != (w.Login == nil) || g.Login != nil && *g.Login != *w.Login {
		tb.Fatalf("%s: got login %+v, want %+v", what, g.Login, w.Login)
	}
	g.Login, w.Login = nil, nil // compared above, by value
	if g != w {
		tb.Fatalf("%s:\ngot  %+v\nwant %+v", what, g, w)
	}
}

func events(tb testing.TB, s mc.Store, id string) []mc.Event {
	tb.Helper()
	ev, err := s.Events(context.Background(), id)
	if err != nil {
		tb.Fatalf("events of %s: %v", id, err)
	}
	return ev
}

func testCreateAndGet(t *testing.T, open Opener) {
	s := open(t)
	in := NewSession("u1", "demo", base)
	if err := s.CreateSession(t.Context(), in, "replica-a", mc.Capacity{}); err != nil {
		t.Fatal(err)
	}
	if in.State != mc.StatePending || in.Version != 1 || in.Replica != "replica-a" {
		t.Errorf("got state %s version %d replica %q, want pending 1 replica-a", in.State, in.Version, in.Replica)
	}
	if !in.CreatedAt.Equal(us(base)) || in.CreatedAt != us(base) {
		t.Errorf("got CreatedAt %v, want %v (UTC, microseconds)", in.CreatedAt, us(base))
	}
	if in.UpdatedAt != in.CreatedAt || in.ActiveAt != in.CreatedAt {
		t.Errorf("got UpdatedAt %v ActiveAt %v, want both %v", in.UpdatedAt, in.ActiveAt, in.CreatedAt)
	}
	if in.ExpiresAt != us(base.Add(30*time.Minute)) {
		t.Errorf("got ExpiresAt %v, want %v", in.ExpiresAt, us(base.Add(30*time.Minute)))
	}
	equal(t, "session read back", get(t, s, in.ID), in)

	ev := events(t, s, in.ID)
	want := []mc.Event{{SessionID: in.ID, Seq: 1, State: mc.StatePending, Replica: "replica-a", At: in.CreatedAt}}
	if !slices.Equal(ev, want) {
		t.Errorf("got events %+v, want %+v", ev, want)
	}

	for _, id := range []string{mc.NewID(), "", "not-an-id", "'; DROP TABLE sessions; --"} {
		_, err := s.Session(t.Context(), id)
		wantErr(t, err, mc.ENOTFOUND, "")
	}

	dup := NewSession("u2", "demo", base)
	dup.ID = in.ID
	wantErr(t, s.CreateSession(t.Context(), dup, "r1", mc.Capacity{}), mc.ECONFLICT, "")
}

func testCreateInvalid(t *testing.T, open Opener) {
	s := open(t)
	tests := []struct {
		name   string
		change func(*mc.Session)
	}{
		{"bad id", func(s *mc.Session) { s.ID = "x" }},
		{"no user", func(s *mc.Session) { s.UserID = "" }},
		{"no provider", func(s *mc.Session) { s.Provider = "" }},
		{"no created_at", func(s *mc.Session) { s.CreatedAt = time.Time{} }},
		{"no expires_at", func(s *mc.Session) { s.ExpiresAt = time.Time{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sess := NewSession("u1", "demo", time.Time{})
			tt.change(sess)
			wantErr(t, s.CreateSession(t.Context(), sess, "r1", mc.Capacity{}), mc.EINVALID, "")
		})
	}
	wantErr(t, s.CreateSession(t.Context(), nil, "r1", mc.Capacity{}), mc.EINVALID, "")
}

func testOneActive(t *testing.T, open Opener) {
	s := open(t)
	first := create(t, s, "u1", "demo")
	err := s.CreateSession(t.Context(), NewSession("u1", "demo", time.Time{}), "r1", mc.Capacity{})
	e := wantErr(t, err, mc.ECONFLICT, "active_session")
	if e.SessionID != first.ID {
		t.Errorf("got SessionID %q, want the existing session %q", e.SessionID, first.ID)
	}
	create(t, s, "u1", "other")
	create(t, s, "u2", "demo")

	// Any live state counts as active.
	for _, st := range []mc.State{mc.StateStarting, mc.StateReady, mc.StateCapturing} {
		first = reach(t, s, first, st)
		e := wantErr(t, s.CreateSession(t.Context(), NewSession("u1", "demo", time.Time{}), "r1", mc.Capacity{}), mc.ECONFLICT, "active_session")
		if e.SessionID != first.ID {
			t.Errorf("in %s: got SessionID %q, want %q", st, e.SessionID, first.ID)
		}
	}
	move(t, s, first, mc.StateCompleted)
	second := create(t, s, "u1", "demo")
	move(t, s, second, mc.StateCancelled)
	create(t, s, "u1", "demo")
}

func testConcurrentCreate(t *testing.T, open Opener) {
	s := open(t)
	const n = 20
	errs := make([]error, n)
	sessions := make([]*mc.Session, n)
	var wg sync.WaitGroup
	for i := range n {
		sessions[i] = NewSession("u1", "demo", time.Time{})
		wg.Go(func() { errs[i] = s.CreateSession(context.Background(), sessions[i], "r1", mc.Capacity{}) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			if winner >= 0 {
				t.Fatalf("sessions %d and %d both created; want one active session", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatalf("no session created: %v", errs[0])
	}
	for i, err := range errs {
		if i == winner {
			continue
		}
		e := wantErr(t, err, mc.ECONFLICT, "active_session")
		if e.SessionID != sessions[winner].ID {
			t.Errorf("got SessionID %q, want the winner %q", e.SessionID, sessions[winner].ID)
		}
	}
	list, _, err := s.Sessions(t.Context(), mc.SessionFilter{UserID: "u1"})
	if err != nil || len(list) != 1 {
		t.Fatalf("got %d sessions, %v, want 1", len(list), err)
	}
}

// createdAt creates a session of user and provider created at the given time.
func createdAt(tb testing.TB, s mc.Store, user, provider string, at time.Time) *mc.Session {
	tb.Helper()
	sess := NewSession(user, provider, at)
	if err := s.CreateSession(context.Background(), sess, "r1", mc.Capacity{}); err != nil {
		tb.Fatalf("create session: %v", err)
	}
	return sess
}

func testList(t *testing.T, open Opener) {
	s := open(t)
	var all []*mc.Session
	for i := range 7 {
		all = append(all, createdAt(t, s, fmt.Sprintf("u%d", i), "demo", base.Add(time.Duration(i)*time.Millisecond+time.Duration(i)*time.Nanosecond)))
	}
	// Three sessions at one instant: order falls back to id.
	for i := range 3 {
		all = append(all, createdAt(t, s, fmt.Sprintf("same%d", i), "demo", base.Add(time.Second)))
	}
	want := slices.Clone(all)
	slices.SortFunc(want, func(a, b *mc.Session) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		switch {
		case a.ID > b.ID:
			return -1
		case a.ID < b.ID:
			return 1
		}
		return 0
	})

	for _, limit := range []int{1, 3, 4, 10, 11, 0} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			var got []*mc.Session
			cursor, pages := "", 0
			for {
				page, next, err := s.Sessions(t.Context(), mc.SessionFilter{Limit: limit, Cursor: cursor})
				if err != nil {
					t.Fatalf("page %d: %v", pages, err)
				}
				pages++
				if limit > 0 && len(page) > limit {
					t.Fatalf("got page of %d, want at most %d", len(page), limit)
				}
				got = append(got, page...)
				if next == "" {
					break
				}
				if len(page) == 0 {
					t.Fatal("got an empty page with a next cursor")
				}
				cursor = next
				if pages > 20 {
					t.Fatal("cursor does not advance")
				}
			}
			if len(got) != len(want) {
				t.Fatalf("got %d sessions, want %d", len(got), len(want))
			}
			for i := range want {
				equal(t, fmt.Sprintf("session %d", i), got[i], want[i])
			}
			if limit > 0 {
				if wantPages := (len(want) + limit - 1) / limit; pages != wantPages {
					t.Errorf("got %d pages, want %d", pages, wantPages)
				}
			}
		})
	}
}

func testListFilters(t *testing.T, open Opener) {
	s := open(t)
	a := create(t, s, "alice", "demo")
	b := create(t, s, "alice", "codex")
	c := create(t, s, "bob", "demo")
	b = reach(t, s, b, mc.StateReady)
	c = move(t, s, c, mc.StateCancelled)
	d := create(t, s, "bob", "demo")

	ids := func(list []*mc.Session) []string {
		var out []string
		for _, s := range list {
			out = append(out, s.ID)
		}
		slices.Sort(out)
		return out
	}
	tests := []struct {
		name string
		f    mc.SessionFilter
		want []*mc.Session
	}{
		{"all", mc.SessionFilter{}, []*mc.Session{a, b, c, d}},
		{"user", mc.SessionFilter{UserID: "alice"}, []*mc.Session{a, b}},
		{"provider", mc.SessionFilter{Provider: "demo"}, []*mc.Session{a, c, d}},
		{"user and provider", mc.SessionFilter{UserID: "bob", Provider: "demo"}, []*mc.Session{c, d}},
		{"state", mc.SessionFilter{State: mc.StateReady}, []*mc.Session{b}},
		{"active", mc.SessionFilter{Active: true}, []*mc.Session{a, b, d}},
		{"active of bob", mc.SessionFilter{Active: true, UserID: "bob"}, []*mc.Session{d}},
		{"final state", mc.SessionFilter{State: mc.StateCancelled}, []*mc.Session{c}},
		{"nobody", mc.SessionFilter{UserID: "carol"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, next, err := s.Sessions(t.Context(), tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if next != "" {
				t.Errorf("got next cursor %q, want none", next)
			}
			if g, w := ids(got), ids(tt.want); !slices.Equal(g, w) {
				t.Errorf("got %v, want %v", g, w)
			}
		})
	}
}

func testListBadInput(t *testing.T, open Opener) {
	s := open(t)
	for range 3 {
		create(t, s, mc.NewID(), "demo")
	}
	_, next, err := s.Sessions(t.Context(), mc.SessionFilter{Limit: 1})
	if err != nil || next == "" {
		t.Fatalf("got cursor %q, %v, want a cursor", next, err)
	}
	tests := []struct{ name, cursor string }{
		{"garbage", "not a cursor"},
		{"padded", next + "="},
		{"truncated", next[:len(next)-2]},
		{"std encoding", "AAAA+/"},
		{"plain text", "1700000000.abc"},
		{"empty id", "MTcwMDAwMDAwMC4"},
		{"negative time", "LTEuQUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := s.Sessions(t.Context(), mc.SessionFilter{Cursor: tt.cursor})
			wantErr(t, err, mc.EINVALID, "bad_cursor")
		})
	}
	_, _, err = s.Sessions(t.Context(), mc.SessionFilter{State: "sleeping"})
	wantErr(t, err, mc.EINVALID, "")
	_, _, err = s.Sessions(t.Context(), mc.SessionFilter{Limit: -1})
	wantErr(t, err, mc.EINVALID, "")
	list, _, err := s.Sessions(t.Context(), mc.SessionFilter{Limit: 100000})
	if err != nil || len(list) != 3 {
		t.Fatalf("got %d, %v with a huge limit, want 3 (capped, not refused)", len(list), err)
	}
}

// testTransitions tries every pair of states against mc.CanTransition.
func testTransitions(t *testing.T, open Opener) {
	s := open(t)
	for _, from := range mc.States {
		for _, to := range mc.States {
			allowed := mc.CanTransition(from, to)
			t.Run(fmt.Sprintf("%s to %s", from, to), func(t *testing.T) {
				sess := reach(t, s, create(t, s, mc.NewID(), "demo"), from)
				before := events(t, s, sess.ID)
				at := time.Now().Add(time.Hour)
				tr := mc.Transition{ID: sess.ID, From: from, Version: sess.Version, To: to,
					Reason: mc.ReasonStartFailed, Message: "because", Replica: "replica-b", At: at}
				got, err := s.Transition(t.Context(), tr)
				after := events(t, s, sess.ID)
				if !allowed {
					wantErr(t, err, mc.EINVALID, "bad_transition")
					equal(t, "session after refused transition", get(t, s, sess.ID), sess)
					if len(after) != len(before) {
						t.Errorf("got %d events, want %d (none appended)", len(after), len(before))
					}
					return
				}
				if err != nil {
					t.Fatalf("got %v, want the transition", err)
				}
				want := *sess
				want.State, want.Version, want.UpdatedAt = to, sess.Version+1, us(at)
				if to == mc.StateReady {
					want.ReadyAt = us(at)
				}
				if to.Final() {
					want.EndedAt, want.Reason = us(at), mc.ReasonStartFailed
				}
				equal(t, "returned session", got, &want)
				equal(t, "stored session", get(t, s, sess.ID), &want)
				if len(after) != len(before)+1 {
					t.Fatalf("got %d events, want %d", len(after), len(before)+1)
				}
				wantEv := mc.Event{SessionID: sess.ID, Seq: int64(len(after)), From: from, State: to,
					Reason: mc.ReasonStartFailed, Message: "because", Replica: "replica-b", At: us(at)}
				if ev := after[len(after)-1]; ev != wantEv {
					t.Errorf("got event %+v, want %+v", ev, wantEv)
				}
			})
		}
	}
}

func testFinalNeverChanges(t *testing.T, open Opener) {
	s := open(t)
	for _, final := range []mc.State{mc.StateCompleted, mc.StateFailed, mc.StateCancelled, mc.StateExpired} {
		t.Run(string(final), func(t *testing.T) {
			sess := reach(t, s, create(t, s, mc.NewID(), "demo"), final)
			n := len(events(t, s, sess.ID))
			for _, to := range mc.States {
				_, err := s.Transition(t.Context(), mc.Transition{ID: sess.ID, From: final, Version: sess.Version, To: to, Replica: "r1"})
				wantErr(t, err, mc.EINVALID, "bad_transition")
			}
			_, err := s.SetMachine(t.Context(), sess.ID, sess.Version, mc.Machine{ID: sess.ID})
			wantErr(t, err, mc.ECONFLICT, "")
			equal(t, "final session", get(t, s, sess.ID), sess)
			if got := len(events(t, s, sess.ID)); got != n {
				t.Errorf("got %d events, want %d", got, n)
			}
		})
	}
}

func testStale(t *testing.T, open Opener) {
	s := open(t)
	sess := reach(t, s, create(t, s, "u1", "demo"), mc.StateStarting)
	n := len(events(t, s, sess.ID))
	tests := []struct {
		name string
		tr   mc.Transition
		code mc.Code
	}{
		{"old version", mc.Transition{ID: sess.ID, From: mc.StateStarting, Version: sess.Version - 1, To: mc.StateReady}, mc.ECONFLICT},
		{"newer version", mc.Transition{ID: sess.ID, From: mc.StateStarting, Version: sess.Version + 1, To: mc.StateReady}, mc.ECONFLICT},
		{"other state", mc.Transition{ID: sess.ID, From: mc.StateReady, Version: sess.Version, To: mc.StateCapturing}, mc.ECONFLICT},
		{"other state to final", mc.Transition{ID: sess.ID, From: mc.StatePending, Version: sess.Version, To: mc.StateFailed}, mc.ECONFLICT},
		{"missing", mc.Transition{ID: mc.NewID(), From: mc.StateStarting, Version: 1, To: mc.StateReady}, mc.ENOTFOUND},
		{"bad id", mc.Transition{ID: "nope", From: mc.StateStarting, Version: 1, To: mc.StateReady}, mc.ENOTFOUND},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Transition(t.Context(), tt.tr)
			reason := mc.Reason("")
			if tt.code == mc.ECONFLICT {
				reason = "stale"
			}
			wantErr(t, err, tt.code, reason)
		})
	}
	equal(t, "session", get(t, s, sess.ID), sess)
	if got := len(events(t, s, sess.ID)); got != n {
		t.Errorf("got %d events, want %d", got, n)
	}
}

func testTransitionMachine(t *testing.T, open Opener) {
	s := open(t)
	sess := create(t, s, "u1", "demo")
	m := mc.Machine{ID: sess.ID, Driver: "local", IP: netip.MustParseAddr("10.200.0.7"), VNCPort: 5900, AgentPort: 8080}
	got, err := s.Transition(t.Context(), mc.Transition{ID: sess.ID, From: mc.StatePending, Version: 1, To: mc.StateStarting, Machine: &m, Replica: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Machine != m {
		t.Errorf("got machine %+v, want %+v", got.Machine, m)
	}
	if stored := get(t, s, sess.ID); stored.Machine != m {
		t.Errorf("got stored machine %+v, want %+v", stored.Machine, m)
	}
	// Without a machine, the transition keeps the one recorded.
	got = move(t, s, got, mc.StateReady)
	if got.Machine != m {
		t.Errorf("got machine %+v after a transition without one, want %+v", got.Machine, m)
	}
}

// testRace: many replicas try to move one session out of starting at once.
// Exactly one wins; the log holds exactly one such transition.
func testRace(t *testing.T, open Opener) {
	s := open(t)
	sess := reach(t, s, create(t, s, "u1", "demo"), mc.StateStarting)
	targets := []mc.State{mc.StateReady, mc.StateFailed, mc.StateCancelled, mc.StateExpired}
	const n = 50
	results := make([]*mc.Session, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = s.Transition(context.Background(), mc.Transition{ID: sess.ID, From: mc.StateStarting,
				Version: sess.Version, To: targets[i%len(targets)], Replica: fmt.Sprintf("replica-%d", i)})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			if winner >= 0 {
				t.Fatalf("goroutines %d (→ %s) and %d (→ %s) both won", winner, targets[winner%4], i, targets[i%4])
			}
			winner = i
			continue
		}
		wantErr(t, err, mc.ECONFLICT, "stale")
	}
	if winner < 0 {
		t.Fatal("no transition won")
	}
	want := targets[winner%len(targets)]
	if got := get(t, s, sess.ID); got.State != want || got.Version != sess.Version+1 {
		t.Errorf("got %s v%d, want %s v%d", got.State, got.Version, want, sess.Version+1)
	}
	var out []mc.Event
	for _, e := range events(t, s, sess.ID) {
		if e.From == mc.StateStarting {
			out = append(out, e)
		}
	}
	if len(out) != 1 || out[0].State != want || out[0].Replica != fmt.Sprintf("replica-%d", winner) {
		t.Errorf("got transitions out of starting %+v, want exactly one to %s by replica-%d", out, want, winner)
	}
}

func testSetMachine(t *testing.T, open Opener) {
	s := open(t)
	sess := reach(t, s, create(t, s, "u1", "demo"), mc.StateStarting)
	n := len(events(t, s, sess.ID))
	m := mc.Machine{ID: sess.ID, Driver: "local", IP: netip.MustParseAddr("127.0.0.1"), VNCPort: 41000, AgentPort: 41001}
	got, err := s.SetMachine(t.Context(), sess.ID, sess.Version, m)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != mc.StateStarting || got.Version != sess.Version+1 || got.Machine != m {
		t.Errorf("got %s v%d %+v, want starting v%d %+v", got.State, got.Version, got.Machine, sess.Version+1, m)
	}
	equal(t, "stored session", get(t, s, sess.ID), got)
	if got := len(events(t, s, sess.ID)); got != n {
		t.Errorf("got %d events, want %d (SetMachine is not a transition)", got, n)
	}
	_, err = s.SetMachine(t.Context(), sess.ID, sess.Version, m)
	wantErr(t, err, mc.ECONFLICT, "stale")
	_, err = s.SetMachine(t.Context(), mc.NewID(), 1, m)
	wantErr(t, err, mc.ENOTFOUND, "")

	// IPv6 and the zero machine round-trip too.
	m6 := mc.Machine{ID: sess.ID, Driver: "qemu", IP: netip.MustParseAddr("fd00::7"), VNCPort: 5900}
	got, err = s.SetMachine(t.Context(), sess.ID, got.Version, m6)
	if err != nil || got.Machine != m6 {
		t.Fatalf("got %+v, %v, want %+v", got.Machine, err, m6)
	}
	// A machine on Unix sockets only round-trips its socket directory.
	mu := mc.Machine{ID: sess.ID, Driver: "local", SocketDir: "/run/mc/sockets/0a1b2c3d"}
	got, err = s.SetMachine(t.Context(), sess.ID, got.Version, mu)
	if err != nil || got.Machine != mu {
		t.Fatalf("got %+v, %v, want %+v", got.Machine, err, mu)
	}
	if stored := get(t, s, sess.ID); stored.Machine != mu {
		t.Errorf("got stored machine %+v, want %+v", stored.Machine, mu)
	}
	got, err = s.SetMachine(t.Context(), sess.ID, got.Version, mc.Machine{})
	if err != nil || got.Machine != (mc.Machine{}) {
		t.Fatalf("got %+v, %v, want the zero machine", got.Machine, err)
	}
}

func testTouch(t *testing.T, open Opener) {
	s := open(t)
	sess := create(t, s, "u1", "demo")
	later := sess.CreatedAt.Add(time.Minute + 999*time.Nanosecond)
	if err := s.Touch(t.Context(), sess.ID, later); err != nil {
		t.Fatal(err)
	}
	got := get(t, s, sess.ID)
	if got.ActiveAt != us(later) || got.Version != sess.Version || got.UpdatedAt != sess.UpdatedAt {
		t.Errorf("got ActiveAt %v v%d UpdatedAt %v, want %v v%d %v", got.ActiveAt, got.Version, got.UpdatedAt, us(later), sess.Version, sess.UpdatedAt)
	}
	if err := s.Touch(t.Context(), sess.ID, sess.CreatedAt.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, sess.ID); got.ActiveAt != us(later) {
		t.Errorf("got ActiveAt %v after an older touch, want %v (monotonic)", got.ActiveAt, us(later))
	}
	wantErr(t, s.Touch(t.Context(), mc.NewID(), later), mc.ENOTFOUND, "")
}

func testClaimViewer(t *testing.T, open Opener) {
	s := open(t)
	sess := reach(t, s, create(t, s, "u1", "demo"), mc.StateReady)
	ch, err := s.Watch(t.Context(), sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch, 5*time.Second)
	got, err := s.ClaimViewer(t.Context(), sess.ID, "viewer-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Viewer != "viewer-1" || got.Version != sess.Version {
		t.Errorf("got viewer %q v%d, want viewer-1 v%d (version unchanged)", got.Viewer, got.Version, sess.Version)
	}
	w := waitFor(t, ch, func(s *mc.Session) bool { return s.Viewer == "viewer-1" })
	equal(t, "watched session", w, got)
	if _, err := s.ClaimViewer(t.Context(), sess.ID, "viewer-2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, func(s *mc.Session) bool { return s.Viewer == "viewer-2" })
	if got := get(t, s, sess.ID); got.Viewer != "viewer-2" {
		t.Errorf("got viewer %q, want viewer-2 (the newest takes over)", got.Viewer)
	}
	_, err = s.ClaimViewer(t.Context(), mc.NewID(), "v")
	wantErr(t, err, mc.ENOTFOUND, "")
}

func testSetLogin(t *testing.T, open Opener) {
	s := open(t)
	sess := reach(t, s, create(t, s, "u1", "demo"), mc.StateReady)
	if sess.Login != nil {
		t.Fatalf("new session: login %+v, want none", sess.Login)
	}
	ch, err := s.Watch(t.Context(), sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch, 5*time.Second)
	p := mc.LoginProgress{Phase: mc.PhaseWaitingForUser, URL: "https://auth.openai.com/oauth/authorize", UpdatedAt: us(base.Add(time.Second))}
	got, err := s.SetLogin(t.Context(), sess.ID, p, "rep-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Login == nil || *got.Login != p || got.Version != sess.Version || got.State != mc.StateReady {
		t.Errorf("got login %+v v%d %s, want %+v v%d ready", got.Login, got.Version, got.State, p, sess.Version)
	}
	w := waitFor(t, ch, func(s *mc.Session) bool { return s.Login != nil })
	equal(t, "watched session", w, got)
	equal(t, "stored session", get(t, s, sess.ID), got)
	ev := events(t, s, sess.ID)
	last := ev[len(ev)-1]
	if last.Reason != mc.ReasonLoginProgress || last.State != mc.StateReady || last.From != mc.StateReady ||
		last.Message != "waiting_for_user https://auth.openai.com/oauth/authorize" || last.Replica != "rep-1" {
		t.Errorf("last event %+v, want a login_progress event in state ready", last)
	}
	done := reach(t, s, got, mc.StateCompleted)
	_, err = s.SetLogin(t.Context(), done.ID, p, "rep-1")
	wantErr(t, err, mc.ECONFLICT, "stale")
	_, err = s.SetLogin(t.Context(), mc.NewID(), p, "rep-1")
	wantErr(t, err, mc.ENOTFOUND, "")
}

func testEvents(t *testing.T, open Opener) {
	s := open(t)
	sess := create(t, s, "u1", "demo")
	path := []mc.State{mc.StateStarting, mc.StateReady, mc.StateCapturing, mc.StateCompleted}
	for _, to := range path {
		var err error
		sess, err = s.Transition(t.Context(), mc.Transition{ID: sess.ID, From: sess.State, Version: sess.Version, To: to,
			Reason: mc.Reason("r-" + string(to)), Message: "m-" + string(to), Replica: "rep-" + string(to), At: base})
		if err != nil {
			t.Fatal(err)
		}
	}
	ev := events(t, s, sess.ID)
	if len(ev) != len(path)+1 {
		t.Fatalf("got %d events, want %d", len(ev), len(path)+1)
	}
	from := mc.StatePending
	for i, to := range path {
		want := mc.Event{SessionID: sess.ID, Seq: int64(i + 2), From: from, State: to, Reason: mc.Reason("r-" + string(to)),
			Message: "m-" + string(to), Replica: "rep-" + string(to), At: us(base)}
		if ev[i+1] != want {
			t.Errorf("event %d: got %+v, want %+v", i+1, ev[i+1], want)
		}
		from = to
	}
	_, err := s.Events(t.Context(), mc.NewID())
	wantErr(t, err, mc.ENOTFOUND, "")
}

// recv waits for a value or the close of ch.
func recv(tb testing.TB, ch <-chan *mc.Session, d time.Duration) (*mc.Session, bool) {
	tb.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case s, ok := <-ch:
		return s, ok
	case <-timer.C:
		tb.Fatalf("no value from the watch within %v", d)
	}
	return nil, false
}

// waitFor reads ch until a value satisfies ok, within 5 s.
func waitFor(tb testing.TB, ch <-chan *mc.Session, ok func(*mc.Session) bool) *mc.Session {
	tb.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case s, open := <-ch:
			if !open {
				tb.Fatal("watch closed before the expected value")
			}
			if ok(s) {
				return s
			}
		case <-deadline.C:
			tb.Fatal("expected value not seen on the watch within 5s")
		}
	}
}

// waitClosed drains ch until it is closed, within 5 s, and returns the last value.
func waitClosed(tb testing.TB, ch <-chan *mc.Session) *mc.Session {
	tb.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	var last *mc.Session
	for {
		select {
		case s, open := <-ch:
			if !open {
				return last
			}
			last = s
		case <-deadline.C:
			tb.Fatal("watch not closed within 5s")
		}
	}
}

func testWatchFirstValue(t *testing.T, open Opener) {
	s := open(t)
	sess := reach(t, s, create(t, s, "u1", "demo"), mc.StateReady)
	ch, err := s.Watch(t.Context(), sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The first value is there when Watch returns.
	select {
	case got := <-ch:
		equal(t, "first value", got, sess)
	default:
		t.Fatal("no value on the channel when Watch returned")
	}
}

func testWatchWakes(t *testing.T, open Opener) {
	s := open(t)
	sess := create(t, s, "u1", "demo")
	ch, err := s.Watch(t.Context(), sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch, time.Second)
	latency(t, ch, s, sess)
}

// latency makes changes to sess through s (three transitions, then viewer
// claims), checks that each reaches ch, and checks the median delay from the
// change's return to its arrival: within 100 ms. The median, not the worst:
// a loaded machine may stall any one wake-up, which says nothing of the store.
func latency(t *testing.T, ch <-chan *mc.Session, s mc.Store, sess *mc.Session) {
	t.Helper()
	const within = 100 * time.Millisecond
	var took []time.Duration
	change := func(i int) *mc.Session {
		if i < 3 {
			return move(t, s, sess, []mc.State{mc.StateStarting, mc.StateReady, mc.StateCapturing}[i])
		}
		next, err := s.ClaimViewer(t.Context(), sess.ID, fmt.Sprint("viewer-", i))
		if err != nil {
			t.Fatal(err)
		}
		return next
	}
	for i := range 11 {
		sess = change(i)
		start := time.Now()
		got, ok := recv(t, ch, 5*time.Second)
		if !ok {
			t.Fatal("watch closed")
		}
		took = append(took, time.Since(start))
		equal(t, fmt.Sprintf("change %d seen on the watch", i), got, sess)
	}
	slices.Sort(took)
	median := took[len(took)/2]
	t.Logf("change seen after %v (median), %v (slowest)", median, took[len(took)-1])
	if median > within {
		t.Errorf("got changes seen after %v (median), want within %v", median, within)
	}
}

func testWatchNewest(t *testing.T, open Opener) {
	s := open(t)
	sess := create(t, s, "u1", "demo")
	ch, err := s.Watch(t.Context(), sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Do not read: the first value waits while three changes happen.
	sess = reach(t, s, sess, mc.StateCapturing)
	var versions []int64
	got := waitFor(t, ch, func(got *mc.Session) bool {
		versions = append(versions, got.Version)
		return got.Version == sess.Version
	})
	equal(t, "newest value", got, sess)
	if !slices.IsSorted(versions) {
		t.Errorf("got versions %v, want never older than one already seen", versions)
	}
	// How many older values a slow reader still sees depends on when the
	// announcements arrive; what never happens is a queue of them.
	if cap(ch) > 1 {
		t.Errorf("got a channel of capacity %d, want 1 (the newest value only)", cap(ch))
	}
	t.Logf("a reader that waited saw versions %v", versions)
	select {
	case extra := <-ch:
		t.Errorf("got extra value v%d after the newest, want none", extra.Version)
	default:
	}
}

func testWatchFinal(t *testing.T, open Opener) {
	s := open(t)
	sess := reach(t, s, create(t, s, "u1", "demo"), mc.StateCapturing)
	ch, err := s.Watch(t.Context(), sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch, time.Second)
	sess = move(t, s, sess, mc.StateCompleted)
	last := waitClosed(t, ch)
	equal(t, "last value before close", last, sess)

	// Watching a session that has already ended gives its value, then closes.
	ch, err = s.Watch(t.Context(), sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "value of an ended session", waitClosed(t, ch), sess)
}

func testWatchContext(t *testing.T, open Opener) {
	s := open(t)
	sess := create(t, s, "u1", "demo")
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := s.Watch(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch, time.Second)
	cancel()
	waitClosed(t, ch)
	// The store still serves other watchers.
	ch2, err := s.Watch(t.Context(), sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, ch2, time.Second)
	move(t, s, sess, mc.StateStarting)
	waitFor(t, ch2, func(s *mc.Session) bool { return s.State == mc.StateStarting })

	done, cancel2 := context.WithCancel(t.Context())
	cancel2()
	if ch3, err := s.Watch(done, sess.ID); err == nil {
		waitClosed(t, ch3)
	}
}

func testWatchNotFound(t *testing.T, open Opener) {
	s := open(t)
	for _, id := range []string{mc.NewID(), "bad"} {
		_, err := s.Watch(t.Context(), id)
		wantErr(t, err, mc.ENOTFOUND, "")
	}
}

// testWatchAcrossStores: a change made through one Store reaches a watcher
// on another Store on the same database (another replica) within 100 ms
// (median).
func testWatchAcrossStores(t *testing.T, open Opener) {
	a, b := open(t), open(t)
	sess := create(t, a, "u1", "demo")
	ch, err := b.Watch(t.Context(), sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "first value on b", waitFor(t, ch, func(*mc.Session) bool { return true }), sess)
	latency(t, ch, a, sess)
	sess = get(t, a, sess.ID)
	sess = move(t, a, sess, mc.StateCancelled)
	equal(t, "final value on b", waitClosed(t, ch), sess)
}

func testLeases(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	lease := func(pool, owner string, lo, hi int) int {
		t.Helper()
		v, err := s.Lease(ctx, pool, owner, lo, hi)
		if err != nil {
			t.Fatalf("lease %s for %s: %v", pool, owner, err)
		}
		return v
	}
	wantValue := func(got, want int) {
		t.Helper()
		if got != want {
			t.Fatalf("got value %d, want %d", got, want)
		}
	}
	wantValue(lease("p", "a", 2, 10), 2)
	wantValue(lease("p", "b", 2, 10), 3)
	wantValue(lease("p", "a", 2, 10), 2) // same owner, same value
	wantValue(lease("p", "c", 2, 10), 4)
	wantValue(lease("q", "a", 2, 10), 2) // pools are independent
	if err := s.Release(ctx, "p", "b"); err != nil {
		t.Fatal(err)
	}
	wantValue(lease("p", "d", 2, 10), 3) // the lowest free value again
	if err := s.Release(ctx, "p", "nobody"); err != nil {
		t.Fatalf("release of nothing: %v", err)
	}
	got, err := s.Leases(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	type pv struct {
		pool  string
		value int
		owner string
	}
	var gotPV []pv
	for _, l := range got {
		gotPV = append(gotPV, pv{l.Pool, l.Value, l.Owner})
		if l.At.IsZero() || l.At != us(l.At) {
			t.Errorf("got lease time %v, want a UTC microsecond time", l.At)
		}
	}
	want := []pv{{"p", 2, "a"}, {"p", 3, "d"}, {"p", 4, "c"}}
	if !slices.Equal(gotPV, want) {
		t.Errorf("got leases %v, want %v", gotPV, want)
	}
	all, err := s.Leases(ctx, "")
	if err != nil || len(all) != 4 {
		t.Errorf("got %d leases in all pools, %v, want 4", len(all), err)
	}
	_, err = s.Lease(ctx, "p", "e", 5, 4)
	wantErr(t, err, mc.EINVALID, "")
}

func testLeaseExhausted(t *testing.T, open Opener) {
	s := open(t)
	for i := range 3 {
		if v, err := s.Lease(t.Context(), "small", fmt.Sprint("o", i), 10, 12); err != nil || v != 10+i {
			t.Fatalf("got %d, %v, want %d", v, err, 10+i)
		}
	}
	_, err := s.Lease(t.Context(), "small", "late", 10, 12)
	wantErr(t, err, mc.EUNAVAILABLE, "pool_exhausted")
	// A holder still gets its value from a full pool.
	if v, err := s.Lease(t.Context(), "small", "o1", 10, 12); err != nil || v != 11 {
		t.Fatalf("got %d, %v, want 11", v, err)
	}
	if err := s.Release(t.Context(), "small", "o0"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Lease(t.Context(), "small", "late", 10, 12); err != nil || v != 10 {
		t.Fatalf("got %d, %v, want 10", v, err)
	}
}

func testConcurrentLeases(t *testing.T, open Opener) {
	a, b := open(t), open(t) // two replicas
	const goroutines, each = 20, 3
	values := make([][]int, goroutines)
	errs := make([]error, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		s := a
		if g%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for i := range each {
				v, err := s.Lease(context.Background(), "shared", fmt.Sprintf("owner-%d-%d", g, i), 1, goroutines*each)
				if err != nil {
					errs[g] = err
					return
				}
				values[g] = append(values[g], v)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, vs := range values {
		for _, v := range vs {
			if seen[v] {
				t.Fatalf("value %d handed out twice", v)
			}
			seen[v] = true
		}
	}
	if len(seen) != goroutines*each {
		t.Fatalf("got %d values, want %d", len(seen), goroutines*each)
	}
	_, err := a.Lease(t.Context(), "shared", "one-more", 1, goroutines*each)
	wantErr(t, err, mc.EUNAVAILABLE, "pool_exhausted")
}

func testReclaimLeases(t *testing.T, open Opener) {
	s := open(t)
	live := reach(t, s, create(t, s, "u1", "demo"), mc.StateReady)
	ended := move(t, s, create(t, s, "u2", "demo"), mc.StateFailed)
	ghost := mc.NewID()
	// Kept: a session that ended and a machine of none, which the host
	// still has (their machines are being torn down).
	tearingDown := move(t, s, create(t, s, "u3", "demo"), mc.StateCancelled)
	machine := mc.NewID()
	for _, owner := range []string{live.ID, ended.ID, ghost, tearingDown.ID, machine} {
		if _, err := s.Lease(t.Context(), "pool", owner, 1, 10); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ReclaimLeases(t.Context(), []string{tearingDown.ID, machine, mc.NewID()})
	if err != nil {
		t.Fatal(err)
	}
	var owners []string
	for _, l := range got {
		owners = append(owners, l.Owner)
	}
	slices.Sort(owners)
	want := []string{ended.ID, ghost}
	slices.Sort(want)
	if !slices.Equal(owners, want) {
		t.Errorf("got reclaimed %v, want %v", owners, want)
	}
	left, err := s.Leases(t.Context(), "pool")
	if err != nil || len(left) != 3 || left[0].Owner != live.ID || left[0].Value != 1 {
		t.Errorf("got leases %+v, %v, want the live session's and the two kept", left, err)
	}
	if again, err := s.ReclaimLeases(t.Context(), []string{tearingDown.ID, machine}); err != nil || len(again) != 0 {
		t.Errorf("got %v, %v from a second reclaim, want nothing", again, err)
	}
	// Once the host no longer has them, they go.
	got, err = s.ReclaimLeases(t.Context(), nil)
	if err != nil || len(got) != 2 {
		t.Errorf("got %v, %v once nothing is kept, want the two leases kept before", got, err)
	}
}

func testCredentials(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	c1 := mc.SealedCredential{UserID: "u1", Provider: "demo", SessionID: mc.NewID(), KeyID: "k1",
		Nonce: []byte{0, 1, 2, 255}, Ciphertext: []byte("sealed\x00bytes"), CapturedAt: base,
		Meta: mc.CredentialMeta{Kind: mc.KindOAuth, ExpiresAt: base.Add(8 * time.Hour).UTC(), RefreshExpiresAt: base.Add(720 * time.Hour).UTC()}}
	if err := s.PutCredential(ctx, c1); err != nil {
		t.Fatal(err)
	}
	eq := func(got, want mc.SealedCredential) {
		t.Helper()
		want.CapturedAt = us(want.CapturedAt)
		if got.UserID != want.UserID || got.Provider != want.Provider || got.SessionID != want.SessionID ||
			got.KeyID != want.KeyID || string(got.Nonce) != string(want.Nonce) ||
			string(got.Ciphertext) != string(want.Ciphertext) || got.CapturedAt != want.CapturedAt ||
			got.Meta.Kind != want.Meta.Kind || !got.Meta.ExpiresAt.Equal(want.Meta.ExpiresAt) ||
			!got.Meta.RefreshExpiresAt.Equal(want.Meta.RefreshExpiresAt) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
	got, err := s.Credential(ctx, "u1", "demo")
	if err != nil {
		t.Fatal(err)
	}
	eq(got, c1)
	c1b := c1
	c1b.KeyID, c1b.Nonce, c1b.Ciphertext, c1b.CapturedAt = "k2", []byte("n2"), []byte("c2"), base.Add(time.Hour)
	if err := s.PutCredential(ctx, c1b); err != nil {
		t.Fatal(err)
	}
	got, err = s.Credential(ctx, "u1", "demo")
	if err != nil {
		t.Fatal(err)
	}
	eq(got, c1b)
	c2 := mc.SealedCredential{UserID: "u1", Provider: "codex", KeyID: "k1", Nonce: []byte("n"), Ciphertext: []byte("c"), CapturedAt: base}
	c3 := mc.SealedCredential{UserID: "u0", Provider: "demo", KeyID: "k1", Nonce: []byte("n"), Ciphertext: []byte("c"), CapturedAt: base}
	for _, c := range []mc.SealedCredential{c2, c3} {
		if err := s.PutCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.Credentials(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, c := range list {
		keys = append(keys, c.UserID+"/"+c.Provider)
	}
	if want := []string{"u0/demo", "u1/codex", "u1/demo"}; !slices.Equal(keys, want) {
		t.Errorf("got %v, want %v", keys, want)
	}
	list, err = s.Credentials(ctx, "u1")
	if err != nil || len(list) != 2 {
		t.Errorf("got %d credentials of u1, %v, want 2", len(list), err)
	}
	if err := s.DeleteCredential(ctx, "u1", "demo"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Credential(ctx, "u1", "demo")
	wantErr(t, err, mc.ENOTFOUND, "")
	wantErr(t, s.DeleteCredential(ctx, "u1", "demo"), mc.ENOTFOUND, "")
	_, err = s.Credential(ctx, "nobody", "demo")
	wantErr(t, err, mc.ENOTFOUND, "")
	wantErr(t, s.PutCredential(ctx, mc.SealedCredential{Provider: "demo"}), mc.EINVALID, "")
}

func testAudit(t *testing.T, open Opener) {
	s := open(t)
	ctx := t.Context()
	for i := range 5 {
		user := "u1"
		if i%2 == 1 {
			user = "u2"
		}
		e := mc.AuditEntry{At: base.Add(time.Duration(i) * time.Second), Actor: "key-1", Action: "read",
			UserID: user, Provider: "demo", Outcome: fmt.Sprint("ok", i)}
		if err := s.AppendAudit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	outcomes := func(f mc.AuditFilter) []string {
		t.Helper()
		list, err := s.Audit(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for i, e := range list {
			out = append(out, e.Outcome)
			if e.ID == 0 || (i > 0 && e.ID >= list[i-1].ID) {
				t.Errorf("got ids not descending: %+v", list)
			}
			if e.Actor != "key-1" || e.Action != "read" || e.Provider != "demo" || e.At != us(e.At) || e.At.IsZero() {
				t.Errorf("got entry %+v", e)
			}
		}
		return out
	}
	tests := []struct {
		f    mc.AuditFilter
		want []string
	}{
		{mc.AuditFilter{}, []string{"ok4", "ok3", "ok2", "ok1", "ok0"}},
		{mc.AuditFilter{Limit: 2}, []string{"ok4", "ok3"}},
		{mc.AuditFilter{UserID: "u2"}, []string{"ok3", "ok1"}},
		{mc.AuditFilter{UserID: "u1", Limit: 1}, []string{"ok4"}},
		{mc.AuditFilter{UserID: "nobody"}, nil},
	}
	for _, tt := range tests {
		if got := outcomes(tt.f); !slices.Equal(got, tt.want) {
			t.Errorf("%+v: got %v, want %v", tt.f, got, tt.want)
		}
	}
	if err := s.AppendAudit(ctx, mc.AuditEntry{Actor: "k", Action: "list", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	list, err := s.Audit(ctx, mc.AuditFilter{Limit: 1})
	if err != nil || len(list) != 1 || list[0].At.IsZero() {
		t.Errorf("got %+v, %v, want an entry stamped by the store", list, err)
	}
}

func testPing(t *testing.T, open Opener) {
	s := open(t)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}
