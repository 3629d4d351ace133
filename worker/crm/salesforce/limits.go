package salesforce

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// Metrics are the Salesforce-only series: the org's API usage as Salesforce reports it on
// every response (Sforce-Limit-Info: api-usage=N/M), so an alert can fire well before
// REQUEST_LIMIT_EXCEEDED stops delivery.
type Metrics struct {
	APIUsage *prometheus.GaugeVec // N: requests used in the rolling 24 hours
	APILimit *prometheus.GaugeVec // M: the org's allowance
}

// NewMetrics creates the gauges and registers them on reg (nil registers nothing). A
// registry that already holds them gives back the registered ones, so several connections
// share one pair of gauges, told apart by the connection label.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		APIUsage: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "mcs", Subsystem: "salesforce", Name: "api_usage",
			Help: "API requests the Salesforce org has used in the rolling 24 hours (Sforce-Limit-Info).",
		}, []string{"connection"}),
		APILimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "mcs", Subsystem: "salesforce", Name: "api_limit",
			Help: "The Salesforce org's API request allowance for 24 hours (Sforce-Limit-Info).",
		}, []string{"connection"}),
	}
	if reg == nil {
		return m, nil
	}
	var errUsage, errLimit error
	m.APIUsage, errUsage = crm.Register(reg, m.APIUsage)
	m.APILimit, errLimit = crm.Register(reg, m.APILimit)
	if err := errors.Join(errUsage, errLimit); err != nil {
		return nil, err
	}
	return m, nil
}

// ParseLimitInfo reads "api-usage=N/M" out of a Sforce-Limit-Info header (which may list
// other limits too, comma-separated).
func ParseLimitInfo(h string) (used, limit int, ok bool) {
	for _, part := range strings.Split(h, ",") {
		v, found := strings.CutPrefix(strings.TrimSpace(part), "api-usage=")
		if !found {
			continue
		}
		n, m, found := strings.Cut(v, "/")
		if !found {
			return 0, 0, false
		}
		used, err1 := strconv.Atoi(strings.TrimSpace(n))
		limit, err2 := strconv.Atoi(strings.TrimSpace(m))
		if err1 != nil || err2 != nil || used < 0 || limit <= 0 {
			return 0, 0, false
		}
		return used, limit, true
	}
	return 0, 0, false
}

// limitTransport records Sforce-Limit-Info from every response it passes on.
type limitTransport struct {
	usage, limit prometheus.Gauge
	next         http.RoundTripper
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		if n, m, ok := ParseLimitInfo(resp.Header.Get("Sforce-Limit-Info")); ok {
			t.usage.Set(float64(n))
			t.limit.Set(float64(m))
		}
	}
	return resp, err
}
