package charttest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// opsPortOf is the ops port a values set asks for (ops.port, 9090 by default).
func opsPortOf(vals map[string]any) int32 {
	if ops, ok := vals["ops"].(map[string]any); ok {
		if p, ok := ops["port"].(float64); ok {
			return int32(p)
		}
		if p, ok := ops["port"].(int64); ok {
			return int32(p)
		}
		if p, ok := ops["port"].(int); ok {
			return int32(p)
		}
	}
	return 9090
}

// TestOpsPortInEveryRendering: in the defaults, every ci values file and a custom port, both
// components declare the ops port, config.yaml listens there (ops.listen, and no longer
// worker.metrics_listen), every probe asks it, each component's ops Service targets it and
// the ServiceMonitor, when rendered, scrapes exactly those two Services there.
func TestOpsPortInEveryRendering(t *testing.T) {
	sets := valueSets(t)
	sets["ops.port 9100"] = parseValues(t, "ops: {port: 9100}\nmetrics: {serviceMonitor: {enabled: true}}")
	for name, vals := range sets {
		t.Run(name, func(t *testing.T) {
			r := mustRender(t, vals)
			port := opsPortOf(vals)
			cfg := configOf(t, r)
			if got := dig(t, cfg, "ops", "listen"); got != fmt.Sprintf(":%d", port) {
				t.Errorf("ops.listen = %v, want :%d", got, port)
			}
			if w, ok := cfg["worker"].(map[string]any); ok {
				if _, set := w["metrics_listen"]; set {
					t.Errorf("config.yaml sets the deprecated worker.metrics_listen = %v", w["metrics_listen"])
				}
			}
			wantPorts := map[string][]string{"receiver": {"http", "ops"}, "worker": {"ops"}}
			for _, c := range []string{"receiver", "worker"} {
				ct := get[*appsv1.Deployment](t, r, "Deployment", fullname+"-"+c).Spec.Template.Spec.Containers[0]
				var names []string
				for _, p := range ct.Ports {
					names = append(names, p.Name)
					if p.Name == "ops" && p.ContainerPort != port {
						t.Errorf("%s: ops containerPort %d, want %d", c, p.ContainerPort, port)
					}
				}
				if !slices.Equal(names, wantPorts[c]) {
					t.Errorf("%s: container ports %v, want %v", c, names, wantPorts[c])
				}
				for kind, p := range map[string]*corev1.Probe{"liveness": ct.LivenessProbe, "readiness": ct.ReadinessProbe, "startup": ct.StartupProbe} {
					path := map[string]string{"liveness": "/healthz", "readiness": "/readyz", "startup": "/healthz"}[kind]
					if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromString("ops") {
						t.Errorf("%s %s probe = %+v, want GET %s on the ops port", c, kind, p, path)
					}
				}
				svc := get[*corev1.Service](t, r, "Service", fullname+"-"+c+"-ops")
				if svc.Spec.Type != corev1.ServiceTypeClusterIP || len(svc.Spec.Ports) != 1 ||
					svc.Spec.Ports[0].Name != "ops" || svc.Spec.Ports[0].Port != port || svc.Spec.Ports[0].TargetPort != intstr.FromString("ops") {
					t.Errorf("Service %s = %s %+v, want ClusterIP ops:%d -> ops", svc.Name, svc.Spec.Type, svc.Spec.Ports, port)
				}
				if svc.Spec.Selector["app.kubernetes.io/component"] != c {
					t.Errorf("Service %s selects %v", svc.Name, svc.Spec.Selector)
				}
			}
			if _, ok := r.objects["Service/"+fullname+"-worker"]; ok {
				t.Errorf("Service %s-worker still rendered: the worker's only port is on %s-worker-ops", fullname, fullname)
			}
			if sm, ok := r.objects["ServiceMonitor/"+fullname].(*monitoringv1.ServiceMonitor); ok {
				if got := scrapedServices(t, r, sm); !slices.Equal(got, []string{fullname + "-receiver-ops", fullname + "-worker-ops"}) {
					t.Errorf("ServiceMonitor scrapes %v, want both ops Services on their ops port", got)
				}
			}
		})
	}
}

// scrapedServices are the Services the ServiceMonitor selects that have a port one of its
// endpoints names, sorted.
func scrapedServices(t *testing.T, r *rendered, sm *monitoringv1.ServiceMonitor) []string {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range r.objects {
		svc, ok := o.(*corev1.Service)
		if !ok || !sel.Matches(labels.Set(svc.Labels)) {
			continue
		}
		for _, ep := range sm.Spec.Endpoints {
			if ep.Path == "/metrics" && slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
				out = append(out, svc.Name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestPublicServiceAndIngressKeepToTheWebhookPort: what faces the internet reaches the
// webhook port only, in every rendering: the receiver's Service has that one port, and each
// Ingress backend is that Service's port. No other Service targets the webhook port, and
// only the ops Services target the ops port.
func TestPublicServiceAndIngressKeepToTheWebhookPort(t *testing.T) {
	for name, vals := range valueSets(t) {
		t.Run(name, func(t *testing.T) {
			r := mustRender(t, vals)
			pub := get[*corev1.Service](t, r, "Service", fullname+"-receiver")
			if len(pub.Spec.Ports) != 1 || pub.Spec.Ports[0].TargetPort != intstr.FromString("http") {
				t.Errorf("public Service ports %+v, want the webhook port (http) only", pub.Spec.Ports)
			}
			for k, o := range r.objects {
				if svc, ok := o.(*corev1.Service); ok {
					for _, p := range svc.Spec.Ports {
						if p.TargetPort == intstr.FromString("ops") && !strings.HasSuffix(svc.Name, "-ops") {
							t.Errorf("%s exposes the ops port", k)
						}
					}
				}
				ing, ok := o.(*networkingv1.Ingress)
				if !ok {
					continue
				}
				for _, rule := range ing.Spec.Rules {
					for _, p := range rule.HTTP.Paths {
						be := p.Backend.Service
						if be == nil || be.Name != pub.Name || be.Port.Number != pub.Spec.Ports[0].Port {
							t.Errorf("%s: path %s goes to %+v, want %s:%d (the webhook port)", k, p.Path, be, pub.Name, pub.Spec.Ports[0].Port)
						}
						if !strings.HasPrefix(p.Path, "/webhooks/") {
							t.Errorf("%s: path %s is not a webhook path", k, p.Path)
						}
					}
				}
			}
		})
	}
}

// TestScrapeCredential: with config.ops.metrics_auth the ServiceMonitor sends an admin
// credential as prometheus-operator's Endpoint authorization (from the chart's Secret by
// default, or yours) or basicAuth; without it, none.
func TestScrapeCredential(t *testing.T) {
	const base = `
config: {ops: {metrics_auth: true}}
admin: {tokens: [{token: {generate: true}, role: read_only}, {token: {existingSecret: mine, key: prom}, role: read_only}]}
`
	tests := []struct {
		name, values string
		authz        *monitoringv1.SafeAuthorization
		basic        *monitoringv1.BasicAuth
	}{
		{"token in the chart's Secret", base + "metrics: {serviceMonitor: {enabled: true, authorization: {credentials: {key: admin-token-0}}}}",
			&monitoringv1.SafeAuthorization{Type: "Bearer", Credentials: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: fullname}, Key: "admin-token-0"}}, nil},
		{"token in your Secret", base + "metrics: {serviceMonitor: {enabled: true, authorization: {credentials: {name: mine, key: prom}}}}",
			&monitoringv1.SafeAuthorization{Type: "Bearer", Credentials: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "mine"}, Key: "prom"}}, nil},
		{"basic", base + "metrics: {serviceMonitor: {enabled: true, basicAuth: {username: {name: mine, key: u}, password: {name: mine, key: p}}}}",
			nil, &monitoringv1.BasicAuth{
				Username: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "mine"}, Key: "u"},
				Password: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "mine"}, Key: "p"},
			}},
		{"ci file", "", // ops-admin-monitoring-values.yaml
			&monitoringv1.SafeAuthorization{Type: "Bearer", Credentials: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: fullname}, Key: "admin-token-0"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vals := readValues(t, "ops-admin-monitoring-values.yaml")
			if tt.values != "" {
				vals = parseValues(t, tt.values)
			}
			r := mustRender(t, vals)
			sm := get[*monitoringv1.ServiceMonitor](t, r, "ServiceMonitor", fullname)
			if len(sm.Spec.Endpoints) != 1 {
				t.Fatalf("%d endpoints, want 1 (the ops port)", len(sm.Spec.Endpoints))
			}
			ep := sm.Spec.Endpoints[0]
			if diff := cmp.Diff(tt.authz, ep.Authorization); diff != "" {
				t.Errorf("authorization (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.basic, ep.BasicAuth); diff != "" {
				t.Errorf("basicAuth (-want +got):\n%s", diff)
			}
			if ep.BearerTokenSecret != nil {
				t.Error("bearerTokenSecret is set; prometheus-operator deprecates it for authorization")
			}
			// The chart's Secret holds the key Prometheus reads.
			if c := ep.Authorization; c != nil && c.Credentials.Name == fullname {
				s := get[*corev1.Secret](t, r, "Secret", fullname)
				if len(s.Data[c.Credentials.Key]) == 0 {
					t.Errorf("Secret %s has no %s", fullname, c.Credentials.Key)
				}
			}
		})
	}
}

// TestAdminCredentials: admin credentials reach config.yaml as {env: VAR} only, both pods
// get every one of them (each serves the admin API), the chart stores those given as values
// or generated, and the install notes say how to read them and how to reach the admin API.
func TestAdminCredentials(t *testing.T) {
	r := mustRender(t, readValues(t, "ops-admin-monitoring-values.yaml"))
	want := `
tokens:
  - {token: {env: MCS_SECRET_ADMIN_TOKEN_0}, role: read_only}
  - {token: {env: MCS_SECRET_ADMIN_TOKEN_1}, role: read_write}
  - {token: {env: MCS_SECRET_ADMIN_TOKEN_2}, role: read_write}
basic:
  - {username: support, password: {env: MCS_SECRET_ADMIN_BASIC_0}, role: read_only}
`
	var wantAdmin map[string]any
	if err := yaml.Unmarshal([]byte(want), &wantAdmin); err != nil {
		t.Fatal(err)
	}
	cfg := configOf(t, r)
	if diff := cmp.Diff(wantAdmin, cfg["admin"]); diff != "" {
		t.Errorf("config.yaml admin (-want +got):\n%s", diff)
	}
	if got := dig(t, cfg, "status", "phone_search", "secret"); !cmp.Equal(got, map[string]any{"env": "MCS_SECRET_STATUS_PHONE_SEARCH"}) {
		t.Errorf("status.phone_search.secret = %v, want {env: MCS_SECRET_STATUS_PHONE_SEARCH}", got)
	}
	for _, k := range []string{"retention", "max_records", "time_zone"} {
		if dig(t, cfg, "status", k) == nil {
			t.Errorf("status.%s not passed through", k)
		}
	}
	if got := dig(t, cfg, "dead_letter", "max_entries"); got != float64(20000) {
		t.Errorf("dead_letter.max_entries = %v, want 20000", got)
	}
	if dig(t, cfg, "ops", "metrics_auth") != true || dig(t, cfg, "ops", "pprof") != true {
		t.Errorf("ops = %v, want metrics_auth and pprof passed through", cfg["ops"])
	}

	type ref struct{ secret, key string }
	wantEnv := map[string]ref{
		"MCS_SECRET_ADMIN_TOKEN_0":       {fullname, "admin-token-0"},
		"MCS_SECRET_ADMIN_TOKEN_1":       {fullname, "admin-token-1"},
		"MCS_SECRET_ADMIN_TOKEN_2":       {"mcs-admin", "token-2026"},
		"MCS_SECRET_ADMIN_BASIC_0":       {fullname, "admin-basic-0"},
		"MCS_SECRET_STATUS_PHONE_SEARCH": {fullname, "status-phone-search-secret"},
	}
	for _, c := range []string{"receiver", "worker"} {
		env := envOf(get[*appsv1.Deployment](t, r, "Deployment", fullname+"-"+c))
		for name, w := range wantEnv {
			e, ok := env[name]
			if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
				e.ValueFrom.SecretKeyRef.Name != w.secret || e.ValueFrom.SecretKeyRef.Key != w.key {
				t.Errorf("%s: %s = %+v, want secretKeyRef %s/%s", c, name, e.ValueFrom, w.secret, w.key)
			}
		}
	}
	s := get[*corev1.Secret](t, r, "Secret", fullname)
	for key, v := range map[string]string{
		"admin-token-1":              "admin-read-write-token-given-as-a-value",
		"admin-basic-0":              "support-basic-password",
		"status-phone-search-secret": "phone-search-hmac-key-given-as-a-value",
	} {
		if got := string(s.Data[key]); got != v {
			t.Errorf("Secret %s = %q, want %q", key, got, v)
		}
	}
	if got := string(s.Data["admin-token-0"]); len(got) != 40 {
		t.Errorf("generated admin-token-0 = %q, want 40 random characters", got)
	}
	for _, want := range []string{
		"admin.tokens[0].token: kubectl -n crm get secret " + fullname + " -o jsonpath='{.data.admin-token-0}' | base64 -d",
		"admin.basic[0].password: kubectl -n crm get secret " + fullname + " -o jsonpath='{.data.admin-basic-0}' | base64 -d",
		"port-forward svc/" + fullname + "-worker-ops 9191:9191",
		"localhost:9191/admin/queues/",
	} {
		if !strings.Contains(r.notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, r.notes)
		}
	}
	for _, secret := range []string{"admin-read-write-token-given-as-a-value", "support-basic-password", "phone-search-hmac-key"} {
		if strings.Contains(r.notes, secret) {
			t.Errorf("NOTES print the secret %q", secret)
		}
	}
}

// TestNotesTellHowToOperate: the notes say how to reach the admin API and asynqmon (a
// port-forward to an ops Service, never the Ingress) and how to run status, replay and check
// in a pod, and warn when no admin credential is set.
func TestNotesTellHowToOperate(t *testing.T) {
	r := mustRender(t, nil)
	for _, want := range []string{
		"kubectl -n crm port-forward svc/" + fullname + "-worker-ops 9090:9090",
		"localhost:9090/admin/queues/",
		"/miitel-crm-sync status --config /etc/miitel-crm-sync/config.yaml <call or detail id>",
		"/miitel-crm-sync replay --config /etc/miitel-crm-sync/config.yaml --since 1h --list",
		"/miitel-crm-sync check --config /etc/miitel-crm-sync/config.yaml",
		"app.kubernetes.io/instance=mcs,app.kubernetes.io/component=worker",
		"admin lists no credential, so the admin API answers 401 to everyone",
	} {
		if !strings.Contains(r.notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, r.notes)
		}
	}
}
