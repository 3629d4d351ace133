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
	"k8s.io/apimachinery/pkg/util/intstr"
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

func TestProbesAndPorts(t *testing.T) {
	r := mustRender(t, nil)
	tests := []struct {
		component, port string
		number          int32
	}{
		{"receiver", "http", 8080},
		{"worker", "metrics", 9090},
	}
	cfg := configOf(t, r)
	if got := dig(t, cfg, "server", "listen"); got != ":8080" {
		t.Errorf("server.listen = %v", got)
	}
	if got := dig(t, cfg, "worker", "metrics_listen"); got != ":9090" {
		t.Errorf("worker.metrics_listen = %v", got)
	}
	for _, tt := range tests {
		c := get[*appsv1.Deployment](t, r, "Deployment", fullname+"-"+tt.component).Spec.Template.Spec.Containers[0]
		if len(c.Ports) != 1 || c.Ports[0].Name != tt.port || c.Ports[0].ContainerPort != tt.number {
			t.Errorf("%s ports %+v, want %s/%d", tt.component, c.Ports, tt.port, tt.number)
		}
		for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
			want := map[string]string{"liveness": "/healthz", "readiness": "/readyz", "startup": "/healthz"}[name]
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port != intstr.FromString(tt.port) {
				t.Errorf("%s %s probe = %+v, want GET %s on %s", tt.component, name, p, want, tt.port)
			}
		}
		svc := get[*corev1.Service](t, r, "Service", fullname+"-"+tt.component)
		if svc.Spec.Ports[0].TargetPort != intstr.FromString(tt.port) {
			t.Errorf("Service %s targets %v", svc.Name, svc.Spec.Ports[0].TargetPort)
		}
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
	want := map[string]string{"Service/" + fullname + "-receiver": "http", "Service/" + fullname + "-worker": "metrics"}
	if diff := cmp.Diff(want, scraped); diff != "" {
		t.Errorf("scraped services (-want +got):\n%s", diff)
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
	for _, want := range []string{"MiitelCrmSyncDeadLetterGrowing", "MiitelCrmSyncQueueLatencyHigh", "MiitelCrmSyncCrmConnectionBroken", "MiitelCrmSyncReceiverErrors", "MiitelCrmSyncDeliveryFailing", "MiitelCrmSyncMappingRejected", "MiitelCrmSyncRedisUnreachable", "MiitelCrmSyncWorkerAbsent"} {
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
	for _, want := range []string{"renamed_requests_total{", "renamed_broken{", "mcs_worker_tasks_total{", "mcs_mapping_file_valid{", "mcs_queue_scrape_ok{"} {
		if !strings.Contains(all, want) {
			t.Errorf("rules do not use %q:\n%s", want, all)
		}
	}
}

func TestNetworkPolicies(t *testing.T) {
	r := mustRender(t, readValues(t, "ingress-hpa-servicemonitor-values.yaml"))
	recv := get[*networkingv1.NetworkPolicy](t, r, "NetworkPolicy", fullname+"-receiver")
	from := recv.Spec.Ingress[0].From
	var peers []string
	for _, p := range from {
		switch {
		case p.NamespaceSelector != nil:
			peers = append(peers, "namespace "+p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"])
		case p.PodSelector != nil:
			peers = append(peers, "pods "+p.PodSelector.MatchLabels["app.kubernetes.io/component"])
		}
	}
	// The receiver's /metrics is on its webhook port: Prometheus must be let in there too,
	// or the ServiceMonitor scrapes nothing and the receiver alerts never fire.
	if want := []string{"namespace ingress-nginx", "namespace monitoring", "pods test"}; !slices.Equal(peers, want) {
		t.Errorf("receiver ingress from %v, want %v", peers, want)
	}
	worker := get[*networkingv1.NetworkPolicy](t, r, "NetworkPolicy", fullname+"-worker")
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
	args := strings.Join(append(p.Spec.Containers[0].Command, p.Spec.Containers[0].Args...), " ")
	if !strings.Contains(args, "--fail") || !strings.Contains(args, "http://"+fullname+"-receiver:80/readyz") {
		t.Errorf("test pod runs %q, want a failing-on-error GET of the receiver Service's /readyz", args)
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
