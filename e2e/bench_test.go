package e2e_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mc "github.com/master-controller/mc"
	"github.com/master-controller/mc/internal/procfs"
	"github.com/master-controller/mc/internal/testutil"
)

// BenchmarkStartToReady measures, one session after the other, the time from
// POST /api/v1/sessions to the session being ready (as a client watching the
// store sees it), and the memory of each machine once its page has rendered:
// the PSS summed over its processes. Each session is cancelled, and its
// machine gone, before the next starts. Run it over 20 sessions with
//
//	go test ./e2e/ -run '^$' -bench StartToReady -benchtime 20x
//
// It reports ready-median-s, ready-p90-s, pss-median-MB, pss-max-MB and
// procs (processes per machine).
func BenchmarkStartToReady(b *testing.B) {
	modes := []string{"loopback"}
	if defaultMode() == "netns" {
		modes = []string{"netns", "loopback"}
	}
	for _, mode := range modes {
		b.Run(mode, func(b *testing.B) { benchStartToReady(b, mode) })
	}
}

func benchStartToReady(b *testing.B, mode string) {
	c := startController(b, controllerEnv(b, mode))
	var (
		ready []time.Duration
		mem   []float64 // MB
		procs []int
		// From the agent's log: building the confined root, and the
		// agent's start to Xvnc and Chromium ready.
		confineMS, agentMS []float64
	)
	i := 0
	for b.Loop() {
		start := time.Now()
		cr := c.api.createSession(b, fmt.Sprintf("bench-%d", i), "demo")
		id := cr.Session.ID
		s := testutil.WaitState(b, c.Store, id, mc.StateReady, 60*time.Second)
		ready = append(ready, time.Since(start))

		waitDemoPage(b, c.Store, id, s.Machine.VNCAddr().String(), c.MachineKey.Secrets(id).VNCPassword, 30*time.Second)
		ms := readMachine(b, c.dataDir, s.Machine.ID)
		p, n := procfs.PSS(machineProcs(ms))
		mem = append(mem, float64(p)/(1<<20))
		procs = append(procs, n)
		if logb, err := os.ReadFile(filepath.Join(ms.Dir, "agent.log")); err == nil {
			if v, ok := testutil.LogNumber(logb, "machine confined", "took_ms"); ok {
				confineMS = append(confineMS, v)
			}
			if v, ok := testutil.LogNumber(logb, "machine agent ready", "ready_ms"); ok {
				agentMS = append(agentMS, v)
			}
		}

		if code := c.api.Do(b, "POST", "/api/v1/sessions/"+id+"/cancel", nil, nil); code != http.StatusOK {
			b.Fatalf("cancel: status %d", code)
		}
		var left []string
		_ = testutil.Poll(b.Context(), 10*time.Second, func() error {
			if left = leftovers(b, c.Store, ms); len(left) > 0 {
				return errLeft
			}
			return nil
		})
		if len(left) > 0 {
			b.Fatalf("machine %s not gone 10 s after cancel: %s", id, strings.Join(left, "; "))
		}
		i++
	}
	if len(ready) == 0 {
		return
	}
	secs := make([]float64, len(ready))
	for i, d := range ready {
		secs[i] = d.Seconds()
	}
	b.ReportMetric(quantile(secs, 0.5), "ready-median-s")
	b.ReportMetric(quantile(secs, 0.9), "ready-p90-s")
	b.ReportMetric(quantile(mem, 0.5), "pss-median-MB")
	b.ReportMetric(slices.Max(mem), "pss-max-MB")
	fprocs := make([]float64, len(procs))
	for i, n := range procs {
		fprocs[i] = float64(n)
	}
	b.ReportMetric(quantile(fprocs, 0.5), "procs")
	if len(confineMS) > 0 {
		b.ReportMetric(quantile(confineMS, 0.5), "confine-median-ms")
	}
	if len(agentMS) > 0 {
		b.ReportMetric(quantile(agentMS, 0.5), "agent-ready-median-ms")
	}
	b.Logf("%s: %d sessions; POST→ready seconds %.3f; PSS MB %.0f", mode, len(secs), secs, mem)
}

// quantile returns the q-quantile of xs (nearest rank).
func quantile(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}
