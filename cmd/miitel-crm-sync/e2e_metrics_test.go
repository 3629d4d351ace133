package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

// metricsGolden lists the metric families a serve process exposes after
// TestE2EMetricFamilies. The chart's tests (charts/test) read it: a dashboard panel or an
// alert that names a metric, or a label, that is not in it fails there.
const metricsGolden = "testdata/metrics.golden"

const metricsGoldenHeader = `# Metric families a serve process exposes after the end-to-end run of TestE2EMetricFamilies
# (cmd/miitel-crm-sync/e2e_metrics_test.go): delivered, duplicate, retried, dead and re-sent
# calls, a rejected mapping edit, a rate-limited and a broken connection.
# One line per family: name, type, its label names ("-" for none). The chart's Grafana
# dashboard and alerts may name only these (charts/test/metrics_test.go).
# Regenerate: go test ./cmd/miitel-crm-sync -run TestE2EMetricFamilies -update
`

// TestE2EMetricFamilies drives one serve process through what operators watch for, then
// compares the metric families of its registry with testdata/metrics.golden. A counter
// vector has no series until something is counted, so each family the chart's dashboard or
// alerts use must be provoked here to exist: a call delivered to each CRM, a MiiTel re-send
// dropped as a duplicate, a call retried (a locked row) and one refused for good (a
// validation rule) and then re-sent by MiiTel, a mapping edit rejected by hot reload, a
// connection whose rate limit is used up, and a HubSpot grant revoked.
func TestE2EMetricFamilies(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{hubspotOAuth: true, maxRetry: 3})
	opsAddr := s.ops // the harness gives each stack's process an ops listener of its own
	mapping := s.withMetricsScenario(t)
	s.start(t, "serve")
	metrics := s.metricsAddr(t, opsAddr)
	in := s.inspector(t)

	// Delivered to both CRMs; the same request again is a duplicate.
	first := readSample(t, samplePayloads[0])
	s.postBoth(t, first)
	s.waitDelivered(t)
	if a := s.post(t, hubspotRoute, first); a.Duplicates == 0 {
		t.Errorf("a re-sent request was queued again (%+v), want it dropped as a duplicate", a)
	}

	// A locked row is retried; a validation rule's refusal goes to the dead letter at once.
	bodies, ids := batchCalls(t, 2)
	s.sf.FailRecord(ids[0], 1, salesforcefake.Fault{Code: "UNABLE_TO_LOCK_ROW", Message: "unable to obtain exclusive access to this record"})
	s.sf.FailRecord(ids[1], 1, salesforcefake.Fault{Code: "FIELD_CUSTOM_VALIDATION_EXCEPTION", Message: "Calls to this number need a reason (validation rule)"})
	for _, b := range bodies {
		s.post(t, salesforceRoute, b)
	}
	eventually(t, deliveryTimeout, "one call retried and delivered, one dead", func() (bool, string) {
		qi, err := in.GetQueueInfo(queueName)
		if err != nil {
			return false, err.Error()
		}
		return qi.Pending+qi.Active+qi.Scheduled+qi.Retry == 0 && qi.Archived == 1,
			fmt.Sprintf("pending %d active %d scheduled %d retry %d archived %d", qi.Pending, qi.Active, qi.Scheduled, qi.Retry, qi.Archived)
	})
	// MiiTel sends the dead call again: it is queued afresh (not a duplicate) and delivered.
	if a := s.post(t, salesforceRoute, bodies[1]); a.Queued != 1 {
		t.Errorf("the re-sent dead call: %+v, want it queued again", a)
	}
	s.waitDelivered(t)

	// An edited mapping that does not parse is rejected; the good one is back afterwards.
	good, err := os.ReadFile(mapping)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mapping, []byte("version: 1\ncrm: hubspot\nfields: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, metrics, "mcs_mapping_reloads_total", map[string]string{"result": "invalid"}, func(v float64) bool { return v >= 1 })
	if err := os.WriteFile(mapping, good, 0o644); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, metrics, "mcs_mapping_file_valid", nil, func(v float64) bool { return v == 1 })

	// A connection whose budget (one request an hour) is used up throttles its calls.
	s.post(t, "limited", first)
	waitMetric(t, metrics, "mcs_crm_rate_limited_total", map[string]string{"connection": "hs-limited", "outcome": "throttled"}, func(v float64) bool { return v >= 1 })

	// The HubSpot app is uninstalled: its grant is revoked and the connection reads broken.
	s.hs.RevokeRefreshTokens()
	s.post(t, hubspotRoute, readSample(t, samplePayloads[1]))
	waitMetric(t, metrics, "mcs_crm_connection_broken", map[string]string{"connection": "hs"}, func(v float64) bool { return v == 1 })

	fams := metricFamilies(t, metrics)
	// The scenario happened as described, so the golden file lists what it provokes.
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"mcs_worker_tasks_total", map[string]string{"outcome": "delivered"}},
		{"mcs_worker_tasks_total", map[string]string{"outcome": "retry"}},
		{"mcs_worker_tasks_total", map[string]string{"outcome": "dead"}},
		{"mcs_worker_tasks_total", map[string]string{"outcome": "throttled"}},
		{"mcs_receiver_duplicates_total", nil},
		{"mcs_receiver_archived_requeued_total", nil},
		{"mcs_crm_connection_broken_total", map[string]string{"connection": "hs"}},
	} {
		if v := sumOf(fams[c.name], c.labels); v < 1 {
			t.Errorf("%s%v = %v, want at least 1", c.name, c.labels, v)
		}
	}
	compareMetricsGolden(t, fams)
}

// withMetricsScenario rewrites the stack's config for TestE2EMetricFamilies: the HubSpot
// route reads its mapping from a file the worker hot-reloads, and a route "limited" goes to
// a HubSpot connection whose rate limit allows one request an hour. It returns the mapping
// file.
func (s *stack) withMetricsScenario(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("../../examples/mappings/hubspot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mapping := filepath.Join(t.TempDir(), "hubspot.yaml")
	if err := os.WriteFile(mapping, src, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	replace := func(old, new string) {
		t.Helper()
		if strings.Count(cfg, old) != 1 {
			t.Fatalf("the stack's config does not hold %q exactly once:\n%s", old, cfg)
		}
		cfg = strings.Replace(cfg, old, new, 1)
	}
	replace("  poll_interval: 100ms\n", "  poll_interval: 100ms\n  hot_reload: true\n")
	replace("  - name: "+hubspotRoute+"\n    connection: hs\n", fmt.Sprintf("  - name: %s\n    mapping: %q\n    connection: hs\n", hubspotRoute, mapping))
	replace("connections:\n", "  - name: limited\n    connection: hs-limited\n    auth: {bearer: [{env: MIITEL_TOKEN}]}\nconnections:\n")
	if !strings.HasSuffix(cfg, "\n") {
		cfg += "\n"
	}
	cfg += fmt.Sprintf("  - name: hs-limited\n    type: hubspot\n    rate_limit: {requests: 1, per: 1h}\n    hubspot:\n      base_url: %q\n      private_app_token: {env: HUBSPOT_TOKEN}\n", s.hs.URL)
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return mapping
}

// scrapeFamilies reads and parses GET http://addr/metrics.
func scrapeFamilies(addr string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %s", addr, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// metricsAddr waits for the serve process's one registry on its ops listener, where
// /metrics belongs, and checks the webhook port does not serve it.
func (s *stack) metricsAddr(t *testing.T, opsAddr string) string {
	t.Helper()
	eventually(t, startTimeout, "/metrics served on the ops listener", func() (bool, string) {
		_, err := scrapeFamilies(opsAddr)
		return err == nil, fmt.Sprint(err)
	})
	if _, err := scrapeFamilies(s.listen); err == nil {
		t.Errorf("the webhook port %s serves /metrics; it belongs on the ops listener %s only", s.listen, opsAddr)
	}
	return opsAddr
}

// metricFamilies scrapes the process's metrics at addr.
func metricFamilies(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := scrapeFamilies(addr)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return fams
}

// waitMetric polls the metrics at addr until the series matching labels (summed) satisfy ok.
func waitMetric(t *testing.T, addr, name string, labels map[string]string, ok func(float64) bool) {
	t.Helper()
	eventually(t, deliveryTimeout, fmt.Sprintf("%s%v", name, labels), func() (bool, string) {
		v := sumOf(metricFamilies(t, addr)[name], labels)
		return ok(v), fmt.Sprint(v)
	})
}

// sumOf adds the counter and gauge series of a family that carry labels; 0 for none.
func sumOf(fam *dto.MetricFamily, labels map[string]string) float64 {
	total := 0.0
	for _, m := range fam.GetMetric() {
		if hasLabels(m, labels) {
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return total
}

// metricsGoldenText renders families as metrics.golden lists them: sorted lines of name,
// type and the union of their series' label names.
func metricsGoldenText(fams map[string]*dto.MetricFamily) string {
	var lines []string
	for name, f := range fams {
		var labels []string
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(labels, lp.GetName()) {
					labels = append(labels, lp.GetName())
				}
			}
		}
		slices.Sort(labels)
		ls := strings.Join(labels, ",")
		if ls == "" {
			ls = "-"
		}
		lines = append(lines, fmt.Sprintf("%s %s %s", name, strings.ToLower(f.GetType().String()), ls))
	}
	slices.Sort(lines)
	return metricsGoldenHeader + strings.Join(lines, "\n") + "\n"
}

// compareMetricsGolden compares with testdata/metrics.golden; -update rewrites it.
func compareMetricsGolden(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	got := []byte(metricsGoldenText(fams))
	if *updateGolden {
		if err := os.WriteFile(metricsGolden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(metricsGolden)
	if errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s is missing: go test -run %s -update writes it", metricsGolden, t.Name())
	}
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the metric families differ from %s (-want +got); if the change is meant, go test -run %s -update rewrites it:\n%s",
			metricsGolden, t.Name(), gocmp.Diff(string(want), string(got)))
	}
}
