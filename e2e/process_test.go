package e2e_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/master-controller/mc/internal/testutil"
)

// server is the master-controller binary running as a separate process.
type server struct {
	*testutil.Server
	api client
}

// startServer starts `master-controller serve` with env (MC_* settings) and
// waits until it serves. It is stopped (SIGTERM, then SIGKILL) when the test
// ends, unless it has already exited. The server dies with the test binary;
// its machines do not (they are process groups of their own, left for the
// next start's reconcile).
func startServer(tb testing.TB, env map[string]string) *server {
	tb.Helper()
	s := testutil.StartServer(tb, env)
	return &server{Server: s, api: client{testutil.Client{URL: s.URL, Key: env["MC_API_KEYS"]}}}
}

// waitLog waits until the server logs a JSON line whose msg is msg, for at
// most timeout, and returns the line's fields.
func (s *server) waitLog(tb testing.TB, msg string, timeout time.Duration) map[string]any {
	tb.Helper()
	var found map[string]any
	err := testutil.Poll(tb.Context(), timeout, func() error {
		for _, l := range strings.Split(s.Logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
				found = rec
				return nil
			}
		}
		select {
		case <-s.Done:
			return nil
		default:
		}
		return errorString("not yet")
	})
	if found == nil {
		tb.Fatalf("server logged no %q line within %s (%v)", msg, timeout, err)
	}
	return found
}
