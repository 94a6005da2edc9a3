package gateway

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus collectors. Labels never carry a
// session id.
type metrics struct {
	upgrades    *prometheus.CounterVec
	waitReady   prometheus.Histogram
	active      prometheus.Gauge
	waiting     prometheus.Gauge
	toMachine   prometheus.Counter
	toViewer    prometheus.Counter
	dialRetries prometheus.Counter
}

// register registers c on reg (nil: nowhere) and returns the collector to
// use: c, or the one already registered under the same name (a second
// handler on one registry shares it).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// newMetrics creates the collectors and registers them on reg.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	var m metrics
	var err error
	var errs []error
	m.upgrades, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mc_gateway_upgrades_total",
		Help: "Viewer WebSocket connections by outcome (reason code).",
	}, []string{"outcome"}))
	errs = append(errs, err)
	m.waitReady, err = register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "mc_gateway_wait_ready_seconds",
		Help:    "Time viewers waited for their session's machine to become ready.",
		Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 45, 90},
	}))
	errs = append(errs, err)
	m.active, err = register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mc_gateway_active_bridges",
		Help: "Viewer connections being served (waiting or bridging).",
	}))
	errs = append(errs, err)
	m.waiting, err = register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mc_gateway_waiting_viewers",
		Help: "Viewer connections waiting for their session's machine to become ready.",
	}))
	errs = append(errs, err)
	bytes, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mc_gateway_bytes_total",
		Help: "Bytes bridged, by direction (to_machine, to_viewer).",
	}, []string{"direction"}))
	errs = append(errs, err)
	m.dialRetries, err = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "mc_gateway_dial_retries_total",
		Help: "Dials of a machine's VNC server that were retried.",
	}))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m.toMachine = bytes.WithLabelValues("to_machine")
	m.toViewer = bytes.WithLabelValues("to_viewer")
	return &m, nil
}

func (m *metrics) countToMachine(n int) { m.toMachine.Add(float64(n)) }
func (m *metrics) countToViewer(n int)  { m.toViewer.Add(float64(n)) }
