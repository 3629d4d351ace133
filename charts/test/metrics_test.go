package charttest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	corev1 "k8s.io/api/core/v1"
)

// The dashboard and the alerts may name only metrics the service exposes. Which those are is
// measured, not listed by hand: cmd/miitel-crm-sync's TestE2EMetricFamilies runs receiver ->
// Redis -> worker -> CRM fakes through deliveries, retries, dead calls and broken
// connections and writes the families its registry then holds, with their label names, to
// cmd/miitel-crm-sync/testdata/metrics.golden (read here through testdata/, see chartDir).

// pendingMetrics are metrics the dashboard or alerts use that other branches are adding to
// the service, with their type and label names. Each fails TestPendingMetricsStillPending
// once metrics.golden has it: then delete it here, so the list only holds what is on its way.
var pendingMetrics = map[string]metricInfo{}

// targetLabels are the labels Prometheus (through the ServiceMonitor) puts on every series.
var targetLabels = []string{"namespace", "job", "pod", "service", "instance", "endpoint", "container"}

type metricInfo struct {
	typ    string // counter, gauge, histogram, summary, untyped
	labels []string
}

// readMetricsGolden parses metrics.golden: "name type label,label" per line ("-": none).
func readMetricsGolden(t *testing.T) map[string]metricInfo {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "metrics.golden"))
	if err != nil {
		t.Fatalf("%v (cmd/miitel-crm-sync: go test -run TestE2EMetricFamilies -update writes it)", err)
	}
	out := map[string]metricInfo{}
	for i, line := range strings.Split(string(raw), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("metrics.golden:%d: %q is not `name type labels`", i+1, line)
		}
		info := metricInfo{typ: f[1]}
		if f[2] != "-" {
			info.labels = strings.Split(f[2], ",")
		}
		out[f[0]] = info
	}
	if len(out) < 20 {
		t.Fatalf("metrics.golden lists only %d families", len(out))
	}
	return out
}

// inventory is what a query may name: the measured families and the pending ones.
type inventory map[string]metricInfo

func loadInventory(t *testing.T) inventory {
	t.Helper()
	inv := inventory(readMetricsGolden(t))
	for name, info := range pendingMetrics {
		if _, ok := inv[name]; !ok {
			inv[name] = info
		}
	}
	return inv
}

// series returns the labels a series name carries, resolving a histogram's _bucket, _sum
// and _count and a summary's _sum and _count to their family.
func (inv inventory) series(name string) ([]string, bool) {
	if info, ok := inv[name]; ok {
		if info.typ == "histogram" {
			return nil, false // a histogram is queried by its series, never its family name
		}
		if info.typ == "summary" {
			return append(slices.Clone(info.labels), "quantile"), true
		}
		return info.labels, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		info, found := inv[base]
		if !ok || !found || (info.typ != "histogram" && (info.typ != "summary" || suffix == "_bucket")) {
			continue
		}
		if suffix == "_bucket" {
			return append(slices.Clone(info.labels), "le"), true
		}
		return info.labels, true
	}
	return nil, false
}

var metricNameAlternation = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\|[a-zA-Z_:][a-zA-Z0-9_:]*)*$`)

// selectorNames are the metric names a selector can select: its name, or each name of a
// __name__=~"a|b" alternation. Any other __name__ matcher cannot be checked and is an error.
func selectorNames(matchers []*labels.Matcher) ([]string, error) {
	var names []string
	for _, m := range matchers {
		if m.Name != labels.MetricName {
			continue
		}
		switch {
		case m.Type == labels.MatchEqual:
			names = append(names, m.Value)
		case m.Type == labels.MatchRegexp && metricNameAlternation.MatchString(m.Value):
			names = append(names, strings.Split(m.Value, "|")...)
		default:
			return nil, fmt.Errorf("selector %s: a name pattern cannot be checked against the service's metrics; name them", m)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("a selector without a metric name cannot be checked")
	}
	return names, nil
}

// checkMatchers reports every metric name of the matchers the service does not expose, and
// every label it matches on that those metrics do not carry. It returns the labels the
// selected series carry.
func (inv inventory) checkMatchers(matchers []*labels.Matcher) ([]string, []error) {
	names, err := selectorNames(matchers)
	if err != nil {
		return nil, []error{err}
	}
	var errs []error
	carried := slices.Clone(targetLabels)
	for _, name := range names {
		ls, ok := inv.series(name)
		if !ok {
			if inv[name].typ == "histogram" {
				errs = append(errs, fmt.Errorf("%s is a histogram: query its _bucket, _sum or _count series", name))
			} else {
				errs = append(errs, fmt.Errorf("metric %s is not in metrics.golden (nor pending): the service does not expose it after an end-to-end run", name))
			}
			continue
		}
		for _, m := range matchers {
			if m.Name != labels.MetricName && !slices.Contains(ls, m.Name) && !slices.Contains(targetLabels, m.Name) {
				errs = append(errs, fmt.Errorf("%s has no label %q (it has %v)", name, m.Name, ls))
			}
		}
		carried = append(carried, ls...)
	}
	return carried, errs
}

// checkPromQL parses expr and checks every metric and label it names against inv. visit,
// when not nil, sees every vector selector.
func (inv inventory) checkPromQL(expr string, visit func(*parser.VectorSelector)) []error {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return []error{fmt.Errorf("does not parse as PromQL: %w", err)}
	}
	var errs []error
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			_, es := inv.checkMatchers(n.LabelMatchers)
			errs = append(errs, es...)
			if visit != nil {
				visit(n)
			}
		case *parser.AggregateExpr:
			if n.Without {
				break
			}
			// "by" labels must be carried by what is aggregated, or the groups are empty.
			var carried []string
			parser.Inspect(n.Expr, func(inner parser.Node, _ []parser.Node) error {
				if vs, ok := inner.(*parser.VectorSelector); ok {
					ls, _ := inv.checkMatchers(vs.LabelMatchers)
					carried = append(carried, ls...)
				}
				return nil
			})
			for _, g := range n.Grouping {
				if !slices.Contains(carried, g) {
					errs = append(errs, fmt.Errorf("%s by (%s): no series aggregated here carries %q", n.Op, strings.Join(n.Grouping, ", "), g))
				}
			}
		}
		return nil
	})
	return errs
}

// TestPendingMetricsStillPending keeps pendingMetrics honest: an entry the service now
// exposes must go (its type and labels come from metrics.golden then), and what is pending
// is used by the dashboard or the alerts.
func TestPendingMetricsStillPending(t *testing.T) {
	golden := readMetricsGolden(t)
	for name := range pendingMetrics {
		if _, ok := golden[name]; ok {
			t.Errorf("%s is in metrics.golden now: delete it from pendingMetrics", name)
		}
	}
}

// TestGoldenHasWhatTheChartDocuments: metrics.golden is the service's, not an empty or
// stale file: the families every alert and the queue-based scaling advice rely on are in it.
func TestGoldenHasWhatTheChartDocuments(t *testing.T) {
	golden := readMetricsGolden(t)
	for _, name := range []string{"mcs_receiver_requests_total", "mcs_worker_tasks_total", "mcs_queue_tasks", "mcs_queue_latency_seconds", "mcs_queue_scrape_ok", "mcs_crm_connection_broken", "mcs_crm_check", "mcs_mapping_file_valid", "mcs_crm_batch_size"} {
		if _, ok := golden[name]; !ok {
			t.Errorf("metrics.golden lacks %s", name)
		}
	}
	if info := golden["mcs_crm_batch_size"]; info.typ != "histogram" {
		t.Errorf("mcs_crm_batch_size is %q, want histogram", info.typ)
	}
}

// ---- the Grafana dashboard ----

const dashboardFile = "files/dashboards/miitel-crm-sync.json"

type grafanaTarget struct {
	RefID      string          `json:"refId"`
	Expr       string          `json:"expr"`
	Datasource json.RawMessage `json:"datasource"`
}

type grafanaPanel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource json.RawMessage          `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []grafanaTarget          `json:"targets"`
	Panels     []grafanaPanel           `json:"panels"`
}

type grafanaDashboard struct {
	UID        string         `json:"uid"`
	Title      string         `json:"title"`
	Panels     []grafanaPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func readDashboard(t *testing.T) (grafanaDashboard, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	return d, raw
}

// allPanels flattens rows (a collapsed row holds its panels).
func allPanels(ps []grafanaPanel) []grafanaPanel {
	var out []grafanaPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// grafanaBuiltins are Grafana's own variables, replaced by a value PromQL accepts.
var grafanaBuiltins = map[string]string{"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

var grafanaVariable = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)

// expandVariables replaces each variable of expr by a placeholder (a template variable of
// the dashboard) or a duration (a Grafana built-in), so it parses as PromQL; an undefined
// variable is an error.
func expandVariables(expr string, defined []string) (string, error) {
	var err error
	out := grafanaVariable.ReplaceAllStringFunc(expr, func(v string) string {
		m := grafanaVariable.FindStringSubmatch(v)
		name := m[1] + m[2]
		if d, ok := grafanaBuiltins[name]; ok {
			return d
		}
		if !slices.Contains(defined, name) {
			err = fmt.Errorf("variable $%s is not defined by the dashboard", name)
		}
		return "var_" + name
	})
	return out, err
}

// TestDashboardQueriesNameExistingMetrics parses every query of the dashboard, panels and
// template variables, with the PromQL parser and checks each metric and label it names
// against metrics.golden; and every panel query is scoped by the namespace and job
// variables, so the dashboard shows one installation.
func TestDashboardQueriesNameExistingMetrics(t *testing.T) {
	inv := loadInventory(t)
	d, _ := readDashboard(t)
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	for _, want := range []string{"datasource", "namespace", "job"} {
		if !slices.Contains(vars, want) {
			t.Errorf("no $%s variable (have %v)", want, vars)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("$%s: query %s: %v", v.Name, v.Query, err)
			continue
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("$%s: %q is not label_values(SELECTOR, LABEL)", v.Name, q.Query)
			continue
		}
		sel, err := expandVariables(m[1], vars)
		if err != nil {
			t.Errorf("$%s: %v", v.Name, err)
		}
		matchers, err := parser.NewParser(parser.Options{}).ParseMetricSelector(sel)
		if err != nil {
			t.Errorf("$%s: selector %s: %v", v.Name, m[1], err)
			continue
		}
		carried, errs := inv.checkMatchers(matchers)
		for _, err := range errs {
			t.Errorf("$%s: %v", v.Name, err)
		}
		if !slices.Contains(carried, m[2]) {
			t.Errorf("$%s: label_values of %q, which %s does not carry", v.Name, m[2], m[1])
		}
	}

	ids := map[int]string{}
	queries := 0
	for _, p := range allPanels(d.Panels) {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panel id %d is used by %q and %q", p.ID, prev, p.Title)
		}
		ids[p.ID] = p.Title
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W <= 0 || p.GridPos.H <= 0 {
			t.Errorf("%q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("%q has no query", p.Title)
		}
		for _, raw := range append([]json.RawMessage{p.Datasource}, targetDatasources(p)...) {
			var ds struct{ Type, UID string }
			if err := json.Unmarshal(raw, &ds); err != nil || ds.Type != "prometheus" || ds.UID != "${datasource}" {
				t.Errorf("%q: datasource %s, want the $datasource variable", p.Title, raw)
			}
		}
		for _, tg := range p.Targets {
			queries++
			where := fmt.Sprintf("%q %s", p.Title, tg.RefID)
			expr, err := expandVariables(tg.Expr, vars)
			if err != nil {
				t.Errorf("%s: %v", where, err)
			}
			errs := inv.checkPromQL(expr, func(vs *parser.VectorSelector) {
				scoped := map[string]bool{}
				for _, m := range vs.LabelMatchers {
					if m.Type == labels.MatchRegexp && m.Value == "var_"+m.Name {
						scoped[m.Name] = true
					}
				}
				if !scoped["namespace"] || !scoped["job"] {
					t.Errorf(`%s: %s is not scoped by namespace=~"$namespace", job=~"$job"`, where, vs)
				}
			})
			for _, err := range errs {
				t.Errorf("%s: %v\n%s", where, err, tg.Expr)
			}
		}
	}
	if queries < 30 {
		t.Errorf("only %d queries in the dashboard", queries)
	}
}

func targetDatasources(p grafanaPanel) []json.RawMessage {
	var out []json.RawMessage
	for _, tg := range p.Targets {
		out = append(out, tg.Datasource)
	}
	return out
}

// TestDashboardCoversWhatOperatorsWatch: the dashboard shows each thing the runbook
// (README "Operating it") tells operators to watch.
func TestDashboardCoversWhatOperatorsWatch(t *testing.T) {
	d, _ := readDashboard(t)
	var exprs []string
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	all := strings.Join(exprs, "\n")
	for _, name := range []string{
		"mcs_receiver_requests_total", "mcs_queue_tasks", "mcs_queue_latency_seconds",
		"mcs_crm_http_responses_total", "mcs_crm_rate_limited_total", "mcs_crm_token_fetches_total",
		"mcs_deadletter_entries", "mcs_deadletter_trimmed_total", "mcs_worker_tasks_total",
		"mcs_worker_contact_match_total", "mcs_worker_owner_match_total",
		"mcs_crm_batch_size_bucket", "mcs_crm_batch_wait_seconds_bucket",
		"mcs_crm_connection_broken", "mcs_crm_check", "mcs_mapping_reloads_total",
	} {
		if !regexp.MustCompile(`\b` + name + `\b`).MatchString(all) {
			t.Errorf("no panel queries %s", name)
		}
	}
	if !strings.Contains(all, `outcome="dead"`) {
		t.Error(`no panel shows calls going dead (mcs_worker_tasks_total{outcome="dead"})`)
	}
}

// TestDashboardConfigMap: off by default; on, a ConfigMap with the sidecar's label
// (configurable), the annotations and namespace asked for, and the dashboard JSON unchanged.
func TestDashboardConfigMap(t *testing.T) {
	if _, ok := mustRender(t, nil).objects["ConfigMap/"+fullname+"-dashboard"]; ok {
		t.Error("the dashboard ConfigMap renders by default")
	}
	_, raw := readDashboard(t)
	tests := []struct {
		name, values          string
		file                  string
		label, value, ns, ann string
	}{
		{"ci file", "", "ops-admin-monitoring-values.yaml", "grafana_dashboard", "1", namespace, "MiiTel"},
		{"own label and namespace", "metrics: {grafanaDashboard: {enabled: true, label: dashboards, labelValue: mcs, namespace: monitoring}}", "", "dashboards", "mcs", "monitoring", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vals := parseValues(t, tt.values)
			if tt.file != "" {
				vals = readValues(t, tt.file)
			}
			r := mustRender(t, vals)
			cm := get[*corev1.ConfigMap](t, r, "ConfigMap", fullname+"-dashboard")
			if got := cm.Labels[tt.label]; got != tt.value {
				t.Errorf("label %s = %q, want %q (labels %v)", tt.label, got, tt.value, cm.Labels)
			}
			if cm.Namespace != tt.ns {
				t.Errorf("namespace %q, want %q", cm.Namespace, tt.ns)
			}
			if got := cm.Annotations["grafana_folder"]; got != tt.ann {
				t.Errorf("grafana_folder annotation %q, want %q", got, tt.ann)
			}
			text, ok := cm.Data["miitel-crm-sync.json"]
			if !ok || len(cm.Data) != 1 {
				t.Fatalf("data keys %v, want miitel-crm-sync.json", keysOf(cm.Data))
			}
			var d grafanaDashboard
			if err := json.Unmarshal([]byte(text), &d); err != nil {
				t.Fatalf("the ConfigMap's dashboard is not valid JSON: %v", err)
			}
			if d.UID != "miitel-crm-sync" || text != strings.TrimRight(string(raw), "\n") {
				t.Errorf("the ConfigMap's dashboard is not %s as shipped", dashboardFile)
			}
		})
	}
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ---- the alerts ----

// TestAlertsNameExistingMetrics: every alert parses, names only metrics and labels the
// service exposes, and selects this release's targets only (namespace and ops Services).
func TestAlertsNameExistingMetrics(t *testing.T) {
	inv := loadInventory(t)
	r := mustRender(t, parseValues(t, "metrics: {prometheusRule: {enabled: true}}"))
	pr := get[*monitoringv1.PrometheusRule](t, r, "PrometheusRule", fullname)
	n := 0
	for _, g := range pr.Spec.Groups {
		for _, rule := range g.Rules {
			n++
			errs := inv.checkPromQL(rule.Expr.String(), func(vs *parser.VectorSelector) {
				var ns, svc bool
				for _, m := range vs.LabelMatchers {
					ns = ns || (m.Name == "namespace" && m.Type == labels.MatchEqual && m.Value == namespace)
					svc = svc || (m.Name == "service" && m.Type == labels.MatchRegexp && m.Value == fullname+"-(receiver|worker)-ops")
				}
				if !ns || !svc {
					t.Errorf("%s: %s does not select this release's ops Services", rule.Alert, vs)
				}
			})
			for _, err := range errs {
				t.Errorf("%s: %v\n%s", rule.Alert, err, rule.Expr.String())
			}
		}
	}
	if n < 9 {
		t.Errorf("%d alerts, want at least 9", n)
	}
}

// TestAlertsSayWhatToDo: the new alerts fire on what they are for, and every description
// of the dead letter and the connection check names the command that helps.
func TestAlertsSayWhatToDo(t *testing.T) {
	r := mustRender(t, parseValues(t, "metrics: {prometheusRule: {enabled: true}}"))
	pr := get[*monitoringv1.PrometheusRule](t, r, "PrometheusRule", fullname)
	rules := map[string]monitoringv1.Rule{}
	for _, rule := range pr.Spec.Groups[0].Rules {
		rules[rule.Alert] = rule
	}
	tests := []struct {
		alert string
		expr  []string // substrings of the expression
		desc  []string // substrings of the description
	}{
		{"MiitelCrmSyncDeadLetterTrimmed", []string{"increase(mcs_deadletter_trimmed_total{", "sum by (reason)", "> 0"},
			[]string{"$labels.reason", "cannot be replayed", "miitel-crm-sync replay --config /etc/miitel-crm-sync/config.yaml --all --list", "config.dead_letter"}},
		{"MiitelCrmSyncConnectionCheckFailing", []string{"mcs_crm_check{", "== 0", "by (connection, check)"},
			[]string{"$labels.check", "$labels.connection", "miitel-crm-sync check --config /etc/miitel-crm-sync/config.yaml", "fix", "worker.check_interval"}},
		{"MiitelCrmSyncDeadLetterGrowing", []string{`outcome="dead"`},
			[]string{"miitel-crm-sync replay --config /etc/miitel-crm-sync/config.yaml --since 30m --list", "--route", "--code", "--since 30m --dry-run", "miitel-crm-sync status --config /etc/miitel-crm-sync/config.yaml CALL_ID", "--dry-run"}},
	}
	for _, tt := range tests {
		rule, ok := rules[tt.alert]
		if !ok {
			t.Errorf("no alert %s", tt.alert)
			continue
		}
		for _, s := range tt.expr {
			if !strings.Contains(rule.Expr.String(), s) {
				t.Errorf("%s: expr lacks %q:\n%s", tt.alert, s, rule.Expr.String())
			}
		}
		for _, s := range tt.desc {
			if !strings.Contains(rule.Annotations["description"], s) {
				t.Errorf("%s: description lacks %q:\n%s", tt.alert, s, rule.Annotations["description"])
			}
		}
	}
	if f := rules["MiitelCrmSyncConnectionCheckFailing"].For; f == nil || *f != "15m" {
		t.Errorf("MiitelCrmSyncConnectionCheckFailing for %v, want 15m (a check re-runs every worker.check_interval)", f)
	}
}
