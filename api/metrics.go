package api

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/patchmesh/patchmesh/catalog"
)

const namespace = "patchmesh"

// Metrics are the node's Prometheus metrics that the api records, and the
// store's, which the api exports through ObserveStore. Make one per
// registry with NewMetrics.
type Metrics struct {
	gatherer prometheus.Gatherer

	httpDuration  *prometheus.HistogramVec
	authTotal     *prometheus.CounterVec
	authDuration  *prometheus.HistogramVec
	storeDuration *prometheus.HistogramVec
	storeErrors   *prometheus.CounterVec
	inFlight      *prometheus.GaugeVec
	queued        *prometheus.GaugeVec
	overloads     *prometheus.CounterVec
	queueWait     *prometheus.HistogramVec
	blobBytes     prometheus.Counter
	blobRedirects prometheus.Counter
	blobProbeUp   prometheus.Gauge
}

// Auth outcomes, the outcome label of the auth metrics.
const (
	authOK              = "ok"
	authUnauthenticated = "unauthenticated"
	authForbidden       = "forbidden"
	authError           = "error"
	// A login refused unchecked: its user or client failed too often
	// lately, or every bcrypt slot was busy.
	authThrottled = "throttled"
)

// NewMetrics creates the metrics and registers them with reg; a nil reg
// means a fresh registry. It panics if reg already holds them, as
// registering twice is a wiring bug. When reg is also a Gatherer (as a
// *prometheus.Registry is), /metrics serves what it gathers unless
// Config.Gatherer says otherwise.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route template, method and status code.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method", "code"}),
		authTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "auth", Name: "decisions_total",
			Help: "Authentication decisions, by credential kind (auth, machine, sync, admin, login, unknown) and outcome.",
		}, []string{"kind", "outcome"}),
		authDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "auth", Name: "duration_seconds",
			Help:    "Time to reach an authentication decision, by credential kind and outcome.",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .25, .5, 1},
		}, []string{"kind", "outcome"}),
		storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "store", Name: "query_duration_seconds",
			Help:    "Time a metadata store method took, by method.",
			Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "store", Name: "errors_total",
			Help: "Metadata store methods that failed, by method. Not-found and conflict answers are not failures.",
		}, []string{"op"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "governor", Name: "in_flight_requests",
			Help: "API requests running now, by governor lane (client, admin).",
		}, []string{"lane"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "governor", Name: "queued_requests",
			Help: "API requests waiting for a slot now, by governor lane.",
		}, []string{"lane"}),
		overloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "governor", Name: "overloads_total",
			Help: "API requests refused with 503 because every slot and queue place was taken, or the wait timed out, by governor lane.",
		}, []string{"lane"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "governor", Name: "queue_wait_seconds",
			Help:    "How long admitted API requests waited for a slot, by governor lane; at most governor.queue_timeout.",
			Buckets: []float64{0, .001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"lane"}),
		blobBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "blob", Name: "served_bytes_total",
			Help: "Blob bytes sent in answers to GET /v1/blobs.",
		}),
		blobRedirects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "blob", Name: "redirects_total",
			Help: "GET /v1/blobs answered with a redirect to a presigned object-store URL (blobs.redirect).",
		}),
		blobProbeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "blob", Name: "store_up",
			Help: "1 if the last blob store check of /debug/status succeeded (a write, read and delete on object stores), else 0.",
		}),
	}
	reg.MustRegister(m.httpDuration, m.authTotal, m.authDuration, m.storeDuration,
		m.storeErrors, m.inFlight, m.queued, m.overloads, m.queueWait, m.blobBytes, m.blobRedirects, m.blobProbeUp)
	if g, ok := reg.(prometheus.Gatherer); ok {
		m.gatherer = g
	}
	return m
}

// ObserveStore records one store method call. Pass it as the store's
// observer (sqlstore.Options.Observe). Not-found and conflict errors are
// answers, not failures, and a cancelled request is the client's doing, so
// none of them count as store errors. The error counter of a method is
// exported from its first call, at 0 until it fails, so that a rate over
// it reads 0 rather than nothing.
func (m *Metrics) ObserveStore(op string, d time.Duration, err error) {
	m.storeDuration.WithLabelValues(op).Observe(d.Seconds())
	errs := m.storeErrors.WithLabelValues(op)
	if err != nil && !errors.Is(err, catalog.ErrNotFound) && !errors.Is(err, catalog.ErrConflict) &&
		!errors.Is(err, context.Canceled) {
		errs.Inc()
	}
}

func (m *Metrics) observeAuth(kind, outcome string, d time.Duration) {
	m.authTotal.WithLabelValues(kind, outcome).Inc()
	m.authDuration.WithLabelValues(kind, outcome).Observe(d.Seconds())
}
