package crm

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus series the shared CRM pieces report, labelled by connection.
// One Metrics may serve every connection of a process; NewMetrics on a registry that already
// holds them reuses the registered collectors, so two connectors built on one registry (or a
// test that builds several) do not fail with duplicate registration.
type Metrics struct {
	// Broken is 1 while this process sees the connection as broken (revoked refresh token).
	Broken *prometheus.GaugeVec
	// BrokenTotal counts transitions into the broken state observed by this process.
	BrokenTotal *prometheus.CounterVec
	// TokenFetches counts calls to the token endpoint by result (ok, broken, error).
	TokenFetches *prometheus.CounterVec
	// RateLimited counts shared-limiter decisions that were not an immediate pass, by bucket
	// and outcome (waited, throttled).
	RateLimited *prometheus.CounterVec
	// Requests counts CRM HTTP responses by status code ("network" for transport failures).
	Requests *prometheus.CounterVec
	// Lookups counts lookup-cache results by kind (contact, owner) and result (hit,
	// miss_cached, fetched).
	Lookups *prometheus.CounterVec
	// BatchSize observes how many items each batch request carried, by op.
	BatchSize *prometheus.HistogramVec
	// BatchWait observes how long an item waited from submission until its batch was sent
	// (linger plus rate-limit wait), by op.
	BatchWait *prometheus.HistogramVec
}

// NewMetrics creates the collectors and registers them on reg; a nil reg registers nothing
// (tests that do not look at metrics).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Broken: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "mcs", Subsystem: "crm", Name: "connection_broken",
			Help: "1 while the CRM connection is broken (refresh token revoked) and needs an admin to reconnect.",
		}, []string{"connection"}),
		BrokenTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mcs", Subsystem: "crm", Name: "connection_broken_total",
			Help: "Times the CRM connection was found broken (invalid_grant).",
		}, []string{"connection"}),
		TokenFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mcs", Subsystem: "crm", Name: "token_fetches_total",
			Help: "Requests to the CRM token endpoint by result.",
		}, []string{"connection", "result"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mcs", Subsystem: "crm", Name: "rate_limited_total",
			Help: "Requests held back by the shared rate limit, by bucket and outcome (waited, throttled).",
		}, []string{"connection", "bucket", "outcome"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mcs", Subsystem: "crm", Name: "http_responses_total",
			Help: "CRM API responses by status code (network for transport errors).",
		}, []string{"connection", "code"}),
		Lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mcs", Subsystem: "crm", Name: "lookups_total",
			Help: "Contact and owner lookups by cache result (hit, miss_cached, fetched).",
		}, []string{"connection", "kind", "result"}),
		BatchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "mcs", Subsystem: "crm", Name: "batch_size",
			Help:    "Items carried by one CRM batch request, by operation.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 200},
		}, []string{"connection", "op"}),
		BatchWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "mcs", Subsystem: "crm", Name: "batch_wait_seconds",
			Help:    "Time an item waited for its batch to be sent (linger and rate-limit budget), by operation.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}, []string{"connection", "op"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs [8]error
	m.Broken, errs[0] = Register(reg, m.Broken)
	m.BrokenTotal, errs[1] = Register(reg, m.BrokenTotal)
	m.TokenFetches, errs[2] = Register(reg, m.TokenFetches)
	m.RateLimited, errs[3] = Register(reg, m.RateLimited)
	m.Requests, errs[4] = Register(reg, m.Requests)
	m.Lookups, errs[5] = Register(reg, m.Lookups)
	m.BatchSize, errs[6] = Register(reg, m.BatchSize)
	m.BatchWait, errs[7] = Register(reg, m.BatchWait)
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	return m, nil
}

// Register registers c on reg, or returns the collector of the same type already registered
// under the same descriptor, so every connection (and connector package) of a process can
// build its metrics on one registry.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
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

// orNop returns m, or unregistered metrics when m is nil, so callers never check for nil.
func orNop(m *Metrics) *Metrics {
	if m != nil {
		return m
	}
	nop, _ := NewMetrics(nil)
	return nop
}
