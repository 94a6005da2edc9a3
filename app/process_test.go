package app_test

import (
	"bufio"
	"bytes"
	"context"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/master-controller/mc/internal/testutil"
)

// proc is a controller running as a separate process.
type proc struct {
	*testutil.Server
	api testutil.Client
}

// startProcess starts the server binary with env (MC_* settings) on a free
// port and waits until it serves.
func startProcess(t testing.TB, env map[string]string) *proc {
	t.Helper()
	all := map[string]string{"MC_LISTEN": "127.0.0.1:0", "MC_LOG_FORMAT": "json", "MC_WEB_DIR": "../web"}
	maps.Copy(all, env)
	s := testutil.StartServer(t, all)
	return &proc{Server: s, api: testutil.Client{URL: s.URL, Key: env["MC_API_KEYS"]}}
}

// metricValue returns the sum of a metric's samples on a server's /metrics,
// which needs the API key (0 when absent).
func metricValue(t testing.TB, api testutil.Client, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, body := testutil.Request(ctx, t, "GET", api.URL, "/metrics", api.Key, nil)
	if code != 200 {
		t.Fatalf("GET /metrics: got %d %s", code, body)
	}
	sum := 0.0
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != ' ' && line[len(name)] != '{') {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}
