package session

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	mc "github.com/master-controller/mc"
)

type metrics struct {
	transitions  *prometheus.CounterVec
	refused      *prometheus.CounterVec
	startSeconds prometheus.Histogram
	adoptions    *prometheus.CounterVec
	sandbox      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, store mc.SessionStore) *metrics {
	m := &metrics{
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mc_session_transitions_total",
			Help: "Session transitions made by this replica, by target state and reason code.",
		}, []string{"state", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mc_session_refusals_total",
			Help: "Session operations refused or failed, by reason code.",
		}, []string{"reason"}),
		startSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mc_machine_start_seconds",
			Help:    "Time from the start of machine creation to readiness (RFB banner and agent health).",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 20, 30, 60, 90},
		}),
		adoptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mc_session_adoptions_total",
			Help: "Live sessions this replica adopted from another (or from an earlier process of its own), by cause: replica_stopping, heartbeat_stale, replica_restarted.",
		}, []string{"cause"}),
	}
	m.sandbox = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mc_browser_sandbox_checks_total",
		Help: "Reads of a new machine's chrome://sandbox, by result: sandboxed, browser_unsandboxed (the session or pooled machine is failed), or the reason the page could not be read.",
	}, []string{"result"})
	reg.MustRegister(m.transitions, m.refused, m.startSeconds, m.adoptions, m.sandbox, &stateCollector{store: store})
	return m
}

// stateCollector counts live sessions by state from the store at scrape
// time, so every replica reports the same truth.
type stateCollector struct{ store mc.SessionStore }

var stateDesc = prometheus.NewDesc("mc_sessions", "Live sessions by state, from the store.", []string{"state"}, nil)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- stateDesc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts := map[mc.State]int{}
	cursor := ""
	for range 20 {
		page, next, err := c.store.Sessions(ctx, mc.SessionFilter{Active: true, Limit: 500, Cursor: cursor})
		if err != nil {
			return
		}
		for _, s := range page {
			counts[s.State]++
		}
		if next == "" {
			break
		}
		cursor = next
	}
	for _, st := range mc.States {
		if st.Active() {
			ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, float64(counts[st]), string(st))
		}
	}
}
