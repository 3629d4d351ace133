package receiver

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the receiver's Prometheus collectors. Label values are bounded: route names
// come from the config (unknown routes are counted as unknownRoute), outcomes and kinds are
// fixed sets.
type metrics struct {
	requests   *prometheus.CounterVec   // route, outcome, status
	enqueued   *prometheus.CounterVec   // route, kind
	duplicates *prometheus.CounterVec   // route, kind, reason
	requeued   *prometheus.CounterVec   // route: archived tasks replaced by a re-send
	overloaded *prometheus.CounterVec   // route: 503 for the in-flight budget
	enqueueDur prometheus.Histogram     // one request: the one enqueue script
	batchSize  prometheus.Histogram     // requests per enqueue script (enqueue.Batcher)
	bodyBytes  *prometheus.HistogramVec // route

	ackWait     prometheus.Histogram   // enqueues that waited for replicas: script and WAIT
	ackFailures *prometheus.CounterVec // reason: why an enqueue was not acknowledged
	ackReplicas prometheus.Gauge       // replicas the last waiting enqueue waited for
	ready       prometheus.Gauge       // the last readiness check: 1 can acknowledge
}

// unknownRoute labels requests for a route that is not configured; the leading underscore
// cannot appear in a configured route name.
const unknownRoute = "_unknown"

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "mcs", "receiver" // one prefix for every metric of the service
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Webhook requests by route, outcome and HTTP status.",
		}, []string{"route", "outcome", "status"}),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "enqueued_tasks_total",
			Help: "Call-detail tasks accepted by Redis, by route and event kind.",
		}, []string{"route", "kind"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "duplicates_total",
			Help: "Call details dropped as re-sends: reason=in_queue (its task is still queued, retrying or running) or delivered (ledger).",
		}, []string{"route", "kind", "reason"}),
		requeued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "archived_requeued_total",
			Help: "Dead-lettered tasks deleted and queued afresh because MiiTel sent the event again.",
		}, []string{"route"}),
		overloaded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "overloaded_total",
			Help: "Requests answered 503 before their body was read because the in-flight budget (server.max_inflight_requests, server.max_inflight_bytes) was spent.",
		}, []string{"route"}),
		enqueueDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "enqueue_duration_seconds",
			Help:    "Time to dedupe-check and enqueue every call-detail task of one request in Redis (one script, one round trip, shared with the requests arriving meanwhile).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "enqueue_batch_requests",
			Help:    "Requests whose tasks went to Redis in one enqueue script: concurrent requests share a script while others are on their way (1 when idle).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9), // 1 .. 256
		}),
		bodyBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "body_bytes",
			Help:    "Size of webhook request bodies read (transcripts make them large).",
			Buckets: prometheus.ExponentialBuckets(256, 4, 9), // 256 B .. 16 MiB
		}, []string{"route"}),
		ackWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "ack_wait_duration_seconds",
			Help:    "Time of enqueues that waited for replicas (redis.ack_replicas): the script and WAIT in one round trip.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		ackFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "enqueue_failures_total",
			Help: "Enqueues not acknowledged (503): reason=too_few_replicas (WAIT within redis.ack_timeout), noreplicas (min-replicas-to-write), timeout (server.enqueue_timeout) or redis_error.",
		}, []string{"reason"}),
		ackReplicas: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "ack_replicas",
			Help: "Replicas the last enqueue waited for (redis.ack_replicas, or under auto the replicas the master reports).",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "ready",
			Help: "1 when the last readiness check found the enqueue path able to acknowledge calls, 0 when not.",
		}),
	}
	var err error
	m.requests = register(reg, m.requests, &err)
	m.enqueued = register(reg, m.enqueued, &err)
	m.duplicates = register(reg, m.duplicates, &err)
	m.requeued = register(reg, m.requeued, &err)
	m.overloaded = register(reg, m.overloaded, &err)
	m.enqueueDur = register(reg, m.enqueueDur, &err)
	m.batchSize = register(reg, m.batchSize, &err)
	m.bodyBytes = register(reg, m.bodyBytes, &err)
	m.ackWait = register(reg, m.ackWait, &err)
	m.ackFailures = register(reg, m.ackFailures, &err)
	m.ackReplicas = register(reg, m.ackReplicas, &err)
	m.ready = register(reg, m.ready, &err)
	return m, err
}

// register adds c to reg, or reuses the collector already registered under the same name,
// so a second receiver on one registry (serve restarting a component, tests) shares counters
// instead of failing.
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		if *errp == nil {
			*errp = err
		}
	}
	return c
}
