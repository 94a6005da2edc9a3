package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/master-controller/mc"
)

// BenchmarkSession measures Session (a read by id) on s.
func BenchmarkSession(b *testing.B, s mc.Store) {
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = create(b, s, fmt.Sprint("bench-", i), "demo").ID
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := s.Session(ctx, ids[i%len(ids)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkTransition measures Transition (compare-and-set, event, publish)
// on s: each session takes the four forward steps pending → completed.
func BenchmarkTransition(b *testing.B, s mc.Store) {
	path := []mc.State{mc.StateStarting, mc.StateReady, mc.StateCapturing, mc.StateCompleted}
	sessions := make([]*mc.Session, b.N/len(path)+1)
	for i := range sessions {
		sessions[i] = create(b, s, fmt.Sprint("bench-", i), "demo")
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		sess := sessions[i/len(path)]
		next, err := s.Transition(ctx, mc.Transition{ID: sess.ID, From: sess.State, Version: sess.Version,
			To: path[i%len(path)], Replica: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		sessions[i/len(path)] = next
	}
}
