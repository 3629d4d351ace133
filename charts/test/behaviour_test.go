package charttest

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/prometheus/promql/parser"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func podAnnotations(t *testing.T, r *rendered, component string) map[string]string {
	t.Helper()
	return get[*appsv1.Deployment](t, r, "Deployment", fullname+"-"+component).Spec.Template.Annotations
}

const withMapping = `
mappings:
  files:
    hubspot: |
      version: 1
      crm: hubspot
routes:
  - name: default
    mapping: hubspot
    auth:
      bearer:
        - value: token-one
`

// TestChecksumRollsPods: what the pods read at start-up rolls them when it changes; mapping
// files roll only the worker (the receiver never reads them), and only when hot reload is off.
func TestChecksumRollsPods(t *testing.T) {
	both := []string{"receiver", "worker"}
	tests := []struct {
		name       string
		base, edit string   // values before and after the edit
		rolls      []string // the components whose pod template annotations change
		rolled     string   // the annotation that must change in those
	}{
		{"config edit rolls", withMapping, withMapping + "config: {log: {level: debug}}", both, "checksum/config"},
		{"mapping edit rolls the worker without hot reload", withMapping, strings.Replace(withMapping, "crm: hubspot", "crm: hubspot\n      timezone: UTC", 1), []string{"worker"}, "checksum/mappings"},
		{"mapping edit does not roll with hot reload",
			withMapping + "  hotReload: true\n", "", nil, ""},
		{"secret value rolls", withMapping, strings.Replace(withMapping, "token-one", "token-two", 1), both, "checksum/secret"},
		{"generated token does not roll", "", "", nil, ""},
	}
	// The hot-reload case edits the mapping of its own base.
	tests[2].base = strings.Replace(withMapping, "mappings:\n", "mappings:\n  hotReload: true\n", 1)
	tests[2].edit = strings.Replace(tests[2].base, "crm: hubspot", "crm: hubspot\n      timezone: UTC", 1)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := mustRender(t, parseValues(t, tt.base))
			after := mustRender(t, parseValues(t, tt.edit))
			for _, c := range both {
				a, b := podAnnotations(t, before, c), podAnnotations(t, after, c)
				if a["checksum/config"] == "" || a["checksum/secret"] == "" {
					t.Fatalf("%s: checksum annotations missing: %v", c, a)
				}
				wantRoll := slices.Contains(tt.rolls, c)
				changed := !cmp.Equal(a, b)
				if changed != wantRoll {
					t.Errorf("%s: pod annotations changed = %v, want %v\nbefore %v\nafter  %v", c, changed, wantRoll, a, b)
				}
				if wantRoll && a[tt.rolled] == b[tt.rolled] {
					t.Errorf("%s: %s did not change", c, tt.rolled)
				}
			}
		})
	}

	t.Run("hot reload still updates the mapping ConfigMap", func(t *testing.T) {
		before := mustRender(t, parseValues(t, tests[2].base))
		after := mustRender(t, parseValues(t, tests[2].edit))
		cm := func(r *rendered) string {
			return get[*corev1.ConfigMap](t, r, "ConfigMap", fullname+"-mappings").Data["hubspot.yaml"]
		}
		if cm(before) == cm(after) {
			t.Error("the mappings ConfigMap did not change")
		}
		if _, ok := podAnnotations(t, before, "worker")["checksum/mappings"]; ok {
			t.Error("checksum/mappings present with hot reload on")
		}
		if hot := dig(t, configOf(t, after), "worker", "hot_reload"); hot != true {
			t.Errorf("worker.hot_reload = %v with mappings.hotReload on", hot)
		}
	})
}

// TestBadValuesRejected: values that would deploy something broken or leak a secret fail
// `helm install` with a message that names the problem.
func TestBadValuesRejected(t *testing.T) {
	tests := []struct {
		name   string
		values string
		want   string // regexp the error must match
	}{
		{"zero workers", "worker: {replicas: 0}", `worker/replicas.*minimum`},
		{"negative workers", "worker: {replicas: -1}", `worker/replicas.*minimum`},
		{"zero receivers", "receiver: {replicas: 0}", `receiver/replicas.*minimum`},
		{"plain secret in a connection", `
connections:
  - name: hubspot
    type: hubspot
    hubspot: {private_app_token: pat-na1-123}`, `connections/0/hubspot/private_app_token.*(object|string)`},
		{"plain secret in extraConfig", "extraConfig: {redis: {password: hunter2}}", `redis\.password would put a secret into the ConfigMap`},
		{"plain bearer in extraConfig", "extraConfig: {routes: [{name: x, auth: {bearer: [abc]}}]}", `routes\[0\]\.auth\.bearer\[0\] would put a secret into the ConfigMap`},
		{"password in extraConfig URL", "extraConfig: {redis: {url: 'redis://:hunter2@redis:6379/0'}}", `redis\.url carries a password in the URL`},
		{"password in external URL", "redis: {bundled: {enabled: false}, external: {url: 'redis://u:hunter2@redis:6379/0'}}", `redis\.url carries a password`},
		{"misspelt top-level key", "reciever: {replicas: 2}", `additional properties? 'reciever' not allowed|reciever`},
		{"chart-owned config key", "config: {server: {listen: ':9999'}}", `listen`},
		{"unknown secret reference key", "redis: {password: {valeu: x}}", `valeu`},
		{"generate outside webhook credentials", "redis: {password: {generate: true}}", `generate`},
		{"empty bearer reference", "routes: [{name: default, auth: {bearer: [{}]}}]", `minProperties|minimum 1 properties|bearer/0`},
		{"two Redis", "redis: {external: {url: 'redis://redis:6379/0'}}", `choose one Redis`},
		{"no Redis", "redis: {bundled: {enabled: false}}", `no Redis configured`},
		{"grace below shutdown", "worker: {shutdownTimeoutSeconds: 30, terminationGracePeriodSeconds: 30}", `worker\.terminationGracePeriodSeconds \(30\) must be greater`},
		{"grace below shutdown plus preStop", "receiver: {shutdownTimeoutSeconds: 25, terminationGracePeriodSeconds: 30}", `receiver\.terminationGracePeriodSeconds \(30\) must be greater than shutdownTimeoutSeconds \(25\) \+ preStopSleepSeconds \(5\)`},
		{"unknown mapping", "routes: [{name: default, mapping: nope, auth: {bearer: [{generate: true}]}}]", `uses mapping "nope", which is not in mappings\.files`},
		{"unknown connection", "routes: [{name: default, connection: nope, auth: {bearer: [{generate: true}]}}]", `uses connection "nope"`},
		{"route without credential", "routes: [{name: default}]", `accepts no credential`},
		{"no routes", "routes: []", `routes.*minItems|routes.*minimum 1 items|routes`},
		{"value and existingSecret", "redis: {password: {value: a, existingSecret: b}}", `redis\.password: set either value or existingSecret`},
		{"key without a Secret", "redis: {password: {key: pw}}", `redis\.password: key "pw" names no Secret`},
		{"env name collision", `
routes:
  - {name: a-b, auth: {bearer: [{generate: true}]}}
  - {name: a_b, auth: {bearer: [{generate: true}]}}`, `both map to environment variable MCS_SECRET_ROUTE_A_B_BEARER_0`},
		{"same key, different secrets", `
routes:
  - {name: a, auth: {bearer: [{value: one, key: k}, {value: two, key: k}]}}`, `same key "k"`},
		{"duplicate route", `
routes:
  - {name: a, auth: {bearer: [{generate: true}]}}
  - {name: a, auth: {bearer: [{generate: true}]}}`, `routes\[1\]: name "a" is used twice`},
		{"duplicate connection", `
connections:
  - {name: h, type: hubspot, hubspot: {private_app_token: {value: a}}}
  - {name: h, type: hubspot, hubspot: {private_app_token: {value: b}}}`, `connections\[1\]: name "h" is used twice`},
		{"bad route name", "routes: [{name: Sales, auth: {bearer: [{generate: true}]}}]", `routes/0/name`},
		{"evicting bundled Redis", "redis: {bundled: {extraArgs: ['--maxmemory-policy', 'allkeys-lru']}}", `asynq requires noeviction`},
		{"both PDB settings", "worker: {podDisruptionBudget: {minAvailable: 1, maxUnavailable: 1}}", `set minAvailable or maxUnavailable, not both`},
		{"HPA min above max", "worker: {autoscaling: {enabled: true, minReplicas: 5, maxReplicas: 2}}", `minReplicas \(5\) is above maxReplicas \(2\)`},
		{"HPA zero minimum", "worker: {autoscaling: {enabled: true, minReplicas: 0}}", `worker/autoscaling/minReplicas`},
		{"bad duration", "config: {queue: {dedupe_window: 1day}}", `dedupe_window`},
		{"bad CIDR", "routes: [{name: default, auth: {bearer: [{generate: true}], allow_cidrs: [18.177.83.94]}}]", `allow_cidrs/0`},
		{"hubspot without section", "connections: [{name: h, type: hubspot}]", `type hubspot but has no hubspot: section`},
		{"removed worker.metricsPort", "worker: {metricsPort: 9100}", `worker\.metricsPort is gone.*set ops\.port`},
		{"chart-owned ops.listen", "config: {ops: {listen: ':9999'}}", `listen`},
		{"ops port on the webhook port", "ops: {port: 8080}", `ops\.port and receiver\.containerPort are both 8080`},
		{"metrics_auth without admin credentials", "config: {ops: {metrics_auth: true}}", `metrics_auth is on but admin lists no credential`},
		{"metrics_auth without a scrape credential", `
config: {ops: {metrics_auth: true}}
admin: {tokens: [{token: {generate: true}, role: read_only}]}
metrics: {serviceMonitor: {enabled: true}}`, `metrics_auth is on: give Prometheus an admin credential`},
		{"scrape credential not an admin token of the chart", `
config: {ops: {metrics_auth: true}}
admin: {tokens: [{token: {generate: true}, role: read_only}]}
metrics: {serviceMonitor: {enabled: true, authorization: {credentials: {key: route-default-bearer-0}}}}`, `"route-default-bearer-0" is not an admin token of the chart's Secret \(admin-token-0\)`},
		{"two scrape credentials", `
metrics:
  serviceMonitor:
    enabled: true
    authorization: {credentials: {name: s, key: k}}
    basicAuth: {username: {name: s, key: u}, password: {name: s, key: p}}`, `authorization or basicAuth, not both`},
		{"half a basicAuth", "metrics: {serviceMonitor: {enabled: true, basicAuth: {username: {name: s, key: u}}}}", `needs both username and password`},
		{"NetworkPolicy shutting Prometheus out", "networkPolicy: {enabled: true}\nmetrics: {serviceMonitor: {enabled: true}}", `networkPolicy\.metricsFrom is empty while the ServiceMonitor is on`},
		{"bad admin role", "admin: {tokens: [{token: {generate: true}, role: admin}]}", `admin/tokens/0/role`},
		{"admin token without role", "admin: {tokens: [{token: {generate: true}}]}", `admin/tokens/0.*role`},
		{"colon in admin username", "admin: {basic: [{username: 'a:b', password: {generate: true}, role: read_only}]}", `admin/basic/0/username`},
		{"plain admin token", "admin: {tokens: [{token: s3cr3t, role: read_only}]}", `admin/tokens/0/token`},
		{"generated phone-search key", "config: {status: {phone_search: {enabled: true, secret: {generate: true}}}}", `phone_search/secret|generate`},
		{"plain admin token in extraConfig", "extraConfig: {admin: {tokens: [{token: s3cr3t, role: read_only}]}}", `admin\.tokens\[0\]\.token would put a secret into the ConfigMap`},
		{"plain phone-search key in extraConfig", "extraConfig: {status: {phone_search: {enabled: true, secret: k}}}", `status\.phone_search\.secret would put a secret into the ConfigMap`},
		{"dead letter below one MiB", "config: {dead_letter: {max_bytes: 1000}}", `dead_letter/max_bytes`},
		{"bad status time zone type", "config: {status: {time_zone: ''}}", `status/time_zone`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := renderChart(t, parseValues(t, tt.values))
			if err == nil {
				t.Fatalf("rendered without error; want an error matching %q", tt.want)
			}
			if !regexp.MustCompile(tt.want).MatchString(err.Error()) {
				t.Errorf("error does not match %q:\n%v", tt.want, err)
			}
		})
	}
}

func TestPDBsAndReplicas(t *testing.T) {
	r := mustRender(t, nil)
	for _, c := range []string{"receiver", "worker"} {
		d := get[*appsv1.Deployment](t, r, "Deployment", fullname+"-"+c)
		want := map[string]int32{"receiver": 2, "worker": 1}[c]
		if d.Spec.Replicas == nil || *d.Spec.Replicas != want {
			t.Errorf("%s replicas %v, want %d", c, d.Spec.Replicas, want)
		}
		pdb := get[*policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget", fullname+"-"+c)
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
			t.Errorf("%s PDB %+v, want maxUnavailable 1", c, pdb.Spec)
		}
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s PDB selector does not match its pods: %v", c, err)
		}
		if _, ok := r.objects["HorizontalPodAutoscaler/"+fullname+"-"+c]; ok {
			t.Errorf("%s HPA rendered with autoscaling off", c)
		}
	}
}

func TestAutoscaling(t *testing.T) {
	r := mustRender(t, readValues(t, "ingress-hpa-servicemonitor-values.yaml"))
	tests := []struct {
		component string
		min, max  int32
		metrics   []string
	}{
		{"receiver", 2, 8, []string{"cpu"}},
		{"worker", 2, 10, []string{"cpu", "memory"}},
	}
	for _, tt := range tests {
		d := get[*appsv1.Deployment](t, r, "Deployment", fullname+"-"+tt.component)
		if d.Spec.Replicas != nil {
			t.Errorf("%s: replicas %d set while the HPA owns it (every upgrade would reset the scale)", tt.component, *d.Spec.Replicas)
		}
		h := get[*autoscalingv2.HorizontalPodAutoscaler](t, r, "HorizontalPodAutoscaler", fullname+"-"+tt.component)
		if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != d.Name {
			t.Errorf("%s HPA targets %+v", tt.component, h.Spec.ScaleTargetRef)
		}
		if *h.Spec.MinReplicas != tt.min || h.Spec.MaxReplicas != tt.max {
			t.Errorf("%s HPA %d..%d, want %d..%d", tt.component, *h.Spec.MinReplicas, h.Spec.MaxReplicas, tt.min, tt.max)
		}
		var got []string
		for _, m := range h.Spec.Metrics {
			got = append(got, string(m.Resource.Name))
		}
		if !slices.Equal(got, tt.metrics) {
			t.Errorf("%s HPA metrics %v, want %v", tt.component, got, tt.metrics)
		}
	}
	pdb := get[*policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget", fullname+"-receiver")
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("receiver PDB %+v, want minAvailable 1 only", pdb.Spec)
	}
}

func TestTopologySpread(t *testing.T) {
	r := mustRender(t, nil)
	for _, c := range []string{"receiver", "worker"} {
		spec := get[*appsv1.Deployment](t, r, "Deployment", fullname+"-"+c).Spec.Template
		var keys []string
		for _, tsc := range spec.Spec.TopologySpreadConstraints {
			keys = append(keys, tsc.TopologyKey)
			if tsc.WhenUnsatisfiable != corev1.ScheduleAnyway {
				t.Errorf("%s: %s is %s; a default must never block scheduling", c, tsc.TopologyKey, tsc.WhenUnsatisfiable)
			}
			if !labels.SelectorFromSet(tsc.LabelSelector.MatchLabels).Matches(labels.Set(spec.Labels)) || tsc.LabelSelector.MatchLabels["app.kubernetes.io/component"] != c {
				t.Errorf("%s: spread selector %v does not select this component's pods", c, tsc.LabelSelector.MatchLabels)
			}
		}
		if !slices.Equal(keys, []string{"topology.kubernetes.io/zone", "kubernetes.io/hostname"}) {
			t.Errorf("%s: spread over %v", c, keys)
		}
	}
}

// TestSelectorsSurviveUpgrade: a new chart or app version must not change any selector, or
// `helm upgrade` fails on the immutable Deployment selector.
func TestSelectorsSurviveUpgrade(t *testing.T) {
	selectors := func(r *rendered) map[string]map[string]string {
		out := map[string]map[string]string{}
		for k, o := range r.objects {
			switch o := o.(type) {
			case *appsv1.Deployment:
				out[k] = o.Spec.Selector.MatchLabels
			case *appsv1.StatefulSet:
				out[k] = o.Spec.Selector.MatchLabels
			case *corev1.Service:
				out[k] = o.Spec.Selector
			}
		}
		return out
	}
	before := selectors(mustRender(t, nil))
	c := loadChart(t)
	c.Metadata.Version, c.Metadata.AppVersion = "9.9.9", "9.9.9"
	r, err := renderChartOf(t, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	after := selectors(r)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("selectors changed with the chart version (-before +after):\n%s", diff)
	}
	img := get[*appsv1.Deployment](t, r, "Deployment", fullname+"-worker").Spec.Template.Spec.Containers[0].Image
	if img != "ghcr.io/miitel-crm-sync/miitel-crm-sync:9.9.9" {
		t.Errorf("image %s does not follow appVersion", img)
	}
}

func TestOptionalObjectsOffByDefault(t *testing.T) {
	r := mustRender(t, nil)
	for _, kind := range []string{"Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule", "NetworkPolicy"} {
		for k := range r.objects {
			if strings.HasPrefix(k, kind+"/") {
				t.Errorf("%s rendered by default", k)
			}
		}
	}
}

func TestIngress(t *testing.T) {
	r := mustRender(t, readValues(t, "ingress-hpa-servicemonitor-values.yaml"))
	ing := get[*networkingv1.Ingress](t, r, "Ingress", fullname)
	if got := ing.Annotations["nginx.ingress.kubernetes.io/whitelist-source-range"]; got != "18.177.83.94/32,35.73.236.241/32" {
		t.Errorf("source range annotation = %q", got)
	}
	if len(ing.Spec.TLS) != 1 || !slices.Equal(ing.Spec.TLS[0].Hosts, []string{"miitel.example.com"}) {
		t.Errorf("TLS = %+v", ing.Spec.TLS)
	}
	if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "nginx" {
		t.Errorf("ingressClassName = %v", ing.Spec.IngressClassName)
	}
	paths := ing.Spec.Rules[0].HTTP.Paths
	if len(paths) != 1 || paths[0].Path != "/webhooks/miitel" || *paths[0].PathType != networkingv1.PathTypePrefix {
		t.Fatalf("paths = %+v: only the webhook path may be public (not /metrics)", paths)
	}
	be := paths[0].Backend.Service
	svc := get[*corev1.Service](t, r, "Service", fullname+"-receiver")
	if be.Name != svc.Name || be.Port.Number != svc.Spec.Ports[0].Port {
		t.Errorf("backend %+v does not point at %s:%d", be, svc.Name, svc.Spec.Ports[0].Port)
	}
	for _, want := range []string{"https://miitel.example.com/webhooks/miitel/default", "18.177.83.94", "35.73.236.241", "Authorization: Bearer"} {
		if !strings.Contains(r.notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, r.notes)
		}
	}
}

func TestMonitoring(t *testing.T) {
	r := mustRender(t, readValues(t, "ingress-hpa-servicemonitor-values.yaml"))
	sm := get[*monitoringv1.ServiceMonitor](t, r, "ServiceMonitor", fullname)
	if sm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v lack the Prometheus selector label", sm.Labels)
	}
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	scraped := map[string]string{} // Service -> endpoint port
	for k, o := range r.objects {
		svc, ok := o.(*corev1.Service)
		if !ok || !sel.Matches(labels.Set(svc.Labels)) {
			continue
		}
		for _, ep := range sm.Spec.Endpoints {
			for _, p := range svc.Spec.Ports {
				if p.Name == ep.Port && ep.Path == "/metrics" {
					scraped[k] = p.Name
				}
			}
		}
	}
	want := map[string]string{"Service/" + fullname + "-receiver-ops": "ops", "Service/" + fullname + "-worker-ops": "ops"}
	if diff := cmp.Diff(want, scraped); diff != "" {
		t.Errorf("scraped services (-want +got):\n%s", diff)
	}
	for _, ep := range sm.Spec.Endpoints {
		if ep.Authorization != nil || ep.BasicAuth != nil || ep.BearerTokenSecret != nil {
			t.Errorf("endpoint %s sends a credential although config.ops.metrics_auth is off", ep.Port)
		}
	}

	pr := get[*monitoringv1.PrometheusRule](t, r, "PrometheusRule", fullname)
	var alerts []string
	for _, g := range pr.Spec.Groups {
		for _, rule := range g.Rules {
			alerts = append(alerts, rule.Alert)
			if _, err := parser.NewParser(parser.Options{}).ParseExpr(rule.Expr.String()); err != nil {
				t.Errorf("%s: expr does not parse as PromQL: %v\n%s", rule.Alert, err, rule.Expr.String())
			}
			for _, a := range []string{"summary", "description"} {
				if rule.Alert != "" && rule.Alert != "MiitelCrmSyncWorkerAbsent" && rule.Annotations[a] == "" {
					t.Errorf("%s has no %s", rule.Alert, a)
				}
			}
		}
	}
	for _, want := range []string{"MiitelCrmSyncDeadLetterGrowing", "MiitelCrmSyncDeadLetterTrimmed", "MiitelCrmSyncQueueLatencyHigh", "MiitelCrmSyncCrmConnectionBroken", "MiitelCrmSyncConnectionCheckFailing", "MiitelCrmSyncReceiverErrors", "MiitelCrmSyncDeliveryFailing", "MiitelCrmSyncMappingRejected", "MiitelCrmSyncRedisUnreachable", "MiitelCrmSyncWorkerAbsent"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alert %s missing from %v", want, alerts)
		}
	}
}

func TestPrometheusRuleMetricNamesFromValues(t *testing.T) {
	vals := parseValues(t, `
metrics:
  prometheusRule:
    enabled: true
    names: {receiverRequests: renamed_requests_total, crmConnectionBroken: renamed_broken}`)
	r := mustRender(t, vals)
	pr := get[*monitoringv1.PrometheusRule](t, r, "PrometheusRule", fullname)
	var exprs []string
	for _, rule := range pr.Spec.Groups[0].Rules {
		exprs = append(exprs, rule.Expr.String())
	}
	all := strings.Join(exprs, "\n")
	for _, want := range []string{"renamed_requests_total{", "renamed_broken{", "mcs_worker_tasks_total{", "mcs_mapping_file_valid{", "mcs_queue_scrape_ok{", "mcs_deadletter_trimmed_total{", "mcs_crm_check{"} {
		if !strings.Contains(all, want) {
			t.Errorf("rules do not use %q:\n%s", want, all)
		}
	}
}

// peersByPort lists, per port name, who a NetworkPolicy admits there ("anyone" for a rule
// without from).
func peersByPort(np *networkingv1.NetworkPolicy) map[string][]string {
	out := map[string][]string{}
	for _, rule := range np.Spec.Ingress {
		var peers []string
		for _, p := range rule.From {
			switch {
			case p.NamespaceSelector != nil:
				peers = append(peers, "namespace "+p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"])
			case p.PodSelector != nil:
				peers = append(peers, "pods "+p.PodSelector.MatchLabels["app.kubernetes.io/component"])
			}
		}
		if len(rule.From) == 0 {
			peers = []string{"anyone"}
		}
		for _, port := range rule.Ports {
			out[port.Port.String()] = append(out[port.Port.String()], peers...)
		}
	}
	return out
}

func TestNetworkPolicies(t *testing.T) {
	r := mustRender(t, readValues(t, "ingress-hpa-servicemonitor-values.yaml"))
	recv := get[*networkingv1.NetworkPolicy](t, r, "NetworkPolicy", fullname+"-receiver")
	worker := get[*networkingv1.NetworkPolicy](t, r, "NetworkPolicy", fullname+"-worker")
	// The webhook port admits the ingress controller (and the test pod), never Prometheus;
	// the ops port admits Prometheus (and the test pod), never the ingress controller.
	want := map[string][]string{"http": {"namespace ingress-nginx", "pods test"}, "ops": {"namespace monitoring", "pods test"}}
	if diff := cmp.Diff(want, peersByPort(recv)); diff != "" {
		t.Errorf("receiver ingress (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string][]string{"ops": want["ops"]}, peersByPort(worker)); diff != "" {
		t.Errorf("worker ingress (-want +got):\n%s", diff)
	}
	ops := mustRender(t, readValues(t, "ops-admin-monitoring-values.yaml"))
	wantOps := []string{"namespace monitoring", "namespace ops-tools", "pods test"}
	for _, c := range []string{"receiver", "worker"} {
		got := peersByPort(get[*networkingv1.NetworkPolicy](t, ops, "NetworkPolicy", fullname+"-"+c))["ops"]
		if !slices.Equal(got, wantOps) {
			t.Errorf("%s ops port admits %v, want %v (metricsFrom, opsFrom, the test pod)", c, got, wantOps)
		}
	}
	// With neither list, nothing in the cluster reaches the ops port (port-forward still does).
	closed := mustRender(t, parseValues(t, "networkPolicy: {enabled: true}"))
	if got := peersByPort(get[*networkingv1.NetworkPolicy](t, closed, "NetworkPolicy", fullname+"-worker"))["ops"]; !slices.Equal(got, []string{"pods test"}) {
		t.Errorf("worker ops port with no metricsFrom/opsFrom admits %v, want the test pod only", got)
	}

	var httpsOut, redisOut bool
	for _, e := range worker.Spec.Egress {
		for _, p := range e.Ports {
			httpsOut = httpsOut || p.Port.IntValue() == 443
			redisOut = redisOut || p.Port.IntValue() == 6380
		}
	}
	if !httpsOut || !redisOut {
		t.Errorf("worker egress %+v lacks HTTPS to the CRMs or Redis on 6380", worker.Spec.Egress)
	}
	for _, e := range recv.Spec.Egress {
		for _, p := range e.Ports {
			if p.Port.IntValue() == 443 {
				t.Error("the receiver may reach port 443; only the worker talks to CRMs")
			}
		}
	}

	bundled := mustRender(t, parseValues(t, "networkPolicy: {enabled: true}"))
	rp := get[*networkingv1.NetworkPolicy](t, bundled, "NetworkPolicy", fullname+"-redis")
	var comps []string
	for _, f := range rp.Spec.Ingress[0].From {
		comps = append(comps, f.PodSelector.MatchLabels["app.kubernetes.io/component"])
	}
	if !slices.Equal(comps, []string{"receiver", "worker"}) {
		t.Errorf("bundled Redis reachable from %v, want receiver and worker only", comps)
	}
}

func TestHelmTestHook(t *testing.T) {
	r := mustRender(t, nil)
	p, ok := r.hooks["Pod/"+fullname+"-test-readyz"].(*corev1.Pod)
	if !ok {
		t.Fatalf("no test hook pod; hooks: %v", r.hooks)
	}
	if p.Annotations["helm.sh/hook"] != "test" {
		t.Errorf("hook annotation %q", p.Annotations["helm.sh/hook"])
	}
	c := p.Spec.Containers[0]
	var urls []string
	for _, a := range c.Args {
		if strings.HasPrefix(a, "http://") {
			urls = append(urls, a)
		}
	}
	want := []string{
		"http://" + fullname + "-receiver:80/healthz",      // the public Service reaches the webhook port
		"http://" + fullname + "-receiver-ops:9090/readyz", // both ops listeners serve and reach Redis
		"http://" + fullname + "-worker-ops:9090/readyz",
	}
	if !slices.Equal(c.Command, []string{"curl"}) || !slices.Contains(c.Args, "--fail") || !slices.Contains(c.Args, "--fail-early") || !slices.Equal(urls, want) {
		t.Errorf("test pod runs %q %q, want curl --fail --fail-early GETs of %v", c.Command, c.Args, want)
	}
	if p.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %s", p.Spec.RestartPolicy)
	}
}

func TestNotesTellWhatToEnterInMiiTel(t *testing.T) {
	r := mustRender(t, readValues(t, "bundled-redis-values.yaml"))
	for _, want := range []string{
		"/webhooks/miitel/sales", "/webhooks/miitel/support",
		"Authorization: Bearer <token>",
		"get secret " + fullname + " -o jsonpath='{.data.route-sales-bearer-0}'",
		"Additional payload  key params_key",
		"Additional header  X-Webhook-Token",
		"Authorization: Basic",
		"Fixed source IP: ON",
		"18.177.83.94", "35.73.236.241",
		"NOT FOR PRODUCTION",
		"hot reload is on",
		"helm test " + releaseName,
	} {
		if !strings.Contains(r.notes, want) {
			t.Errorf("NOTES lack %q", want)
		}
	}
	if strings.Contains(r.notes, "payload-shared-secret") || strings.Contains(r.notes, "basic-password") {
		t.Error("NOTES print a secret")
	}
}
