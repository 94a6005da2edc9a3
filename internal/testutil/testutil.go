// Package testutil holds the test helpers that several packages' tests
// share: a log sink to search, building this module's commands once per test
// binary, running the master-controller binary as a process, a client of the
// controller's API, waiting for a session's state, the one bounded poll
// (Poll, WaitFor), the one "skip, or fail under CI=true" (SkipOrFail) and the
// one fake clock (Clock). Every helper that can fail takes a testing.TB.
package testutil

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
)

// SyncBuffer is a log sink that tests can search while something writes to
// it. The zero value is ready to use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Tail returns the last n bytes of s, marked with a leading "…" when it cut
// something off.
func Tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// LogNumber finds the first JSON log line (slog's JSON handler) with msg and
// returns its numeric field key.
func LogNumber(log []byte, msg, key string) (float64, bool) {
	for _, l := range strings.Split(string(log), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["msg"] != msg {
			continue
		}
		v, ok := m[key].(float64)
		return v, ok
	}
	return 0, false
}
