package charttest

import (
	"encoding/base64"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

const fullname = releaseName + "-miitel-crm-sync"

// valueSets is every values combination CI renders: the defaults and each ci/*-values.yaml.
func valueSets(t *testing.T) map[string]map[string]any {
	t.Helper()
	sets := map[string]map[string]any{"default": {}}
	for _, f := range ciValuesFiles(t) {
		sets[f] = readValues(t, f)
	}
	return sets
}

func TestLint(t *testing.T) {
	for name, vals := range valueSets(t) {
		t.Run(name, func(t *testing.T) {
			l := lint.AllWithKubeVersion(chartDir, vals, namespace, kubeVersion)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				}
			}
		})
	}
}

// TestRenderEveryValuesFile renders each values set (strict decoding happens in renderChart)
// and checks the invariants that must hold whatever the values.
func TestRenderEveryValuesFile(t *testing.T) {
	for name, vals := range valueSets(t) {
		t.Run(name, func(t *testing.T) {
			r := mustRender(t, vals)
			for _, c := range []string{"receiver", "worker"} {
				d := get[*appsv1.Deployment](t, r, "Deployment", fullname+"-"+c)
				checkSelectorMatchesPods(t, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
				checkSubcommand(t, d, c)
				checkGracePeriod(t, r, d, c)
			}
			checkSecurity(t, r)
			checkSecretsOutOfConfigMaps(t, r, vals)
			checkSecretEnvWiring(t, r)
			checkServicesSelectPods(t, r)
		})
	}
}

func checkSelectorMatchesPods(t *testing.T, selector, podLabels map[string]string) {
	t.Helper()
	if !labels.SelectorFromSet(selector).Matches(labels.Set(podLabels)) {
		t.Errorf("selector %v does not match pod labels %v", selector, podLabels)
	}
	for k := range selector {
		if k == "helm.sh/chart" || k == "app.kubernetes.io/version" {
			t.Errorf("selector carries %s, which changes on upgrade (selectors are immutable)", k)
		}
	}
}

// checkSubcommand: the container runs `<component> --config /etc/miitel-crm-sync/config.yaml`
// and that file is the config ConfigMap's config.yaml.
func checkSubcommand(t *testing.T, d *appsv1.Deployment, component string) {
	t.Helper()
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers", d.Name, len(spec.Containers))
	}
	c := spec.Containers[0]
	want := []string{component, "--config", "/etc/miitel-crm-sync/config.yaml"}
	if len(c.Command) != 0 || len(c.Args) < 3 || !slices.Equal(c.Args[:3], want) {
		t.Errorf("%s: command %q args %q, want args starting %q (the image's ENTRYPOINT is the binary)", d.Name, c.Command, c.Args, want)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	cfg, ok := mounts["/etc/miitel-crm-sync/config.yaml"]
	if !ok || cfg.SubPath != "config.yaml" {
		t.Fatalf("%s: config.yaml not mounted from the ConfigMap: %+v", d.Name, c.VolumeMounts)
	}
	if v := vols[cfg.Name]; v.ConfigMap == nil || v.ConfigMap.Name != fullname+"-config" {
		t.Errorf("%s: config volume %+v is not ConfigMap %s-config", d.Name, v, fullname)
	}
	// Mappings as a directory mount: a subPath mount never sees ConfigMap updates, which
	// would make hot reload silently useless. Only the worker reads them.
	mp, ok := mounts["/etc/miitel-crm-sync/mappings"]
	switch {
	case component == "receiver" && ok:
		t.Errorf("%s: mounts the mapping files, which only the worker reads", d.Name)
	case component == "worker" && (!ok || mp.SubPath != ""):
		t.Errorf("%s: mappings must be a whole-directory mount, got %+v", d.Name, mp)
	case component == "worker" && vols[mp.Name].ConfigMap == nil:
		t.Errorf("%s: mappings volume %+v is not a ConfigMap", d.Name, vols[mp.Name])
	}
	if tmp, ok := mounts["/tmp"]; !ok || vols[tmp.Name].EmptyDir == nil {
		t.Errorf("%s: no emptyDir at /tmp (the root filesystem is read-only)", d.Name)
	}
}

// checkGracePeriod: Kubernetes must wait longer than the application drains (shutdown
// timeout in config.yaml, plus the receiver's preStop sleep).
func checkGracePeriod(t *testing.T, r *rendered, d *appsv1.Deployment, component string) {
	t.Helper()
	cfg := configOf(t, r)
	section := map[string]string{"receiver": "server", "worker": "worker"}[component]
	shutdown := parseSeconds(t, dig(t, cfg, section, "shutdown_timeout").(string))
	spec := d.Spec.Template.Spec
	pre := int64(0)
	if l := spec.Containers[0].Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		pre = l.PreStop.Sleep.Seconds
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds <= shutdown+pre {
		t.Errorf("%s: terminationGracePeriodSeconds %v is not above shutdown_timeout %ds + preStop %ds", d.Name, spec.TerminationGracePeriodSeconds, shutdown, pre)
	}
}

func parseSeconds(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscanf(s, "%ds", &n); err != nil {
		t.Fatalf("duration %q is not whole seconds: %v", s, err)
	}
	return n
}

// allPods returns every pod spec the chart renders, hooks included.
func allPods(r *rendered) map[string]*corev1.PodSpec {
	out := map[string]*corev1.PodSpec{}
	for _, set := range []map[string]runtime.Object{r.objects, r.hooks} {
		for k, o := range set {
			switch o := o.(type) {
			case *appsv1.Deployment:
				out[k] = &o.Spec.Template.Spec
			case *appsv1.StatefulSet:
				out[k] = &o.Spec.Template.Spec
			case *corev1.Pod:
				out[k] = &o.Spec
			}
		}
	}
	return out
}

// checkSecurity: every pod, the bundled Redis and the test hook included, runs restricted.
func checkSecurity(t *testing.T, r *rendered) {
	t.Helper()
	pods := allPods(r)
	if len(pods) < 3 {
		t.Fatalf("only %d pods rendered: %v", len(pods), slices.Sorted(maps.Keys(pods)))
	}
	for name, p := range pods {
		if p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken {
			t.Errorf("%s: automountServiceAccountToken is not false", name)
		}
		psc := p.SecurityContext
		if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod seccompProfile is not RuntimeDefault", name)
		}
		for _, c := range append(slices.Clone(p.InitContainers), p.Containers...) {
			sc := c.SecurityContext
			if sc == nil {
				t.Errorf("%s/%s: no securityContext", name, c.Name)
				continue
			}
			nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (sc.RunAsNonRoot == nil && psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
			if !nonRoot {
				t.Errorf("%s/%s: runAsNonRoot is not true", name, c.Name)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s/%s: readOnlyRootFilesystem is not true", name, c.Name)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s/%s: allowPrivilegeEscalation is not false", name, c.Name)
			}
			if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s/%s: capabilities %+v, want drop [ALL] and nothing added", name, c.Name, sc.Capabilities)
			}
			if sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("%s/%s: container seccompProfile %s", name, c.Name, sc.SeccompProfile.Type)
			}
			if sc.Privileged != nil && *sc.Privileged {
				t.Errorf("%s/%s: privileged", name, c.Name)
			}
		}
	}
	for k, o := range r.objects {
		if sa, ok := o.(*corev1.ServiceAccount); ok && (sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken) {
			t.Errorf("%s: automountServiceAccountToken is not false", k)
		}
	}
}

// secretStrings collects every literal secret in the values: the value of each secret
// reference, wherever it is.
func secretStrings(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		if s, ok := v["value"].(string); ok && len(v) <= 2 {
			if _, hasEnv := v["env"]; !hasEnv {
				out = append(out, s)
			}
		}
		for _, x := range v {
			out = append(out, secretStrings(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, secretStrings(x)...)
		}
	}
	return out
}

// checkSecretsOutOfConfigMaps: no secret from values, and no generated token, appears in any
// ConfigMap, and every secret field of config.yaml is an {env: VAR} reference.
func checkSecretsOutOfConfigMaps(t *testing.T, r *rendered, vals map[string]any) {
	t.Helper()
	secrets := secretStrings(vals)
	for _, o := range r.objects {
		if s, ok := o.(*corev1.Secret); ok && s.Name == fullname {
			for _, v := range s.Data {
				secrets = append(secrets, string(v))
			}
		}
	}
	for k, o := range r.objects {
		cm, ok := o.(*corev1.ConfigMap)
		if !ok {
			continue
		}
		for file, text := range cm.Data {
			for _, s := range secrets {
				if strings.Contains(text, s) {
					t.Errorf("%s %s contains the secret %q", k, file, s)
				}
			}
		}
	}
	walkSecretFields(t, configOf(t, r), "", func(path string, v any) {
		m, ok := v.(map[string]any)
		if !ok || len(m) != 1 || m["env"] == nil {
			t.Errorf("config.yaml %s = %v, want {env: VAR}", path, v)
		}
	})
}

var secretField = regexp.MustCompile(`(^|\.)(password|private_app_token|client_secret|refresh_token|private_key|value|token|secret|bearer\[\d+\])$`)

func walkSecretFields(t *testing.T, v any, path string, visit func(path string, v any)) {
	t.Helper()
	if secretField.MatchString(path) {
		visit(path, v)
		return
	}
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			walkSecretFields(t, x, strings.TrimPrefix(path+"."+k, "."), visit)
		}
	case []any:
		for i, x := range v {
			walkSecretFields(t, x, fmt.Sprintf("%s[%d]", path, i), visit)
		}
	}
}

// checkSecretEnvWiring: every {env: VAR} of config.yaml is set in both Deployments from a
// secretKeyRef, and a chart-made Secret holds every key the pods read from it.
func checkSecretEnvWiring(t *testing.T, r *rendered) {
	t.Helper()
	vars := map[string]string{} // env var -> config path
	walkSecretFields(t, configOf(t, r), "", func(path string, v any) {
		if m, ok := v.(map[string]any); ok {
			if s, ok := m["env"].(string); ok {
				vars[s] = path
			}
		}
	})
	chartSecret, hasChartSecret := r.objects["Secret/"+fullname].(*corev1.Secret)
	for _, c := range []string{"receiver", "worker"} {
		d := get[*appsv1.Deployment](t, r, "Deployment", fullname+"-"+c)
		env := envOf(d)
		// The receiver resolves no CRM secret and the worker no webhook credential
		// (config.LoadFor), so neither pod gets the other's.
		foreign := map[string]string{"receiver": "connections", "worker": "routes"}[c]
		for v, path := range vars {
			if strings.HasPrefix(strings.TrimPrefix(path, "."), foreign) {
				if _, ok := env[v]; ok {
					t.Errorf("%s: gets %s (%s), a secret its process never reads", d.Name, v, path)
				}
				continue
			}
			e, ok := env[v]
			if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				t.Errorf("%s: %s is not set from a secretKeyRef: %+v", d.Name, v, e)
				continue
			}
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name == fullname {
				if !hasChartSecret {
					t.Errorf("%s: %s reads Secret %s, which the chart did not render", d.Name, v, fullname)
				} else if _, ok := chartSecret.Data[ref.Key]; !ok {
					t.Errorf("%s: %s reads key %s, missing from Secret %s", d.Name, v, ref.Key, fullname)
				}
			}
		}
	}
}

func envOf(d *appsv1.Deployment) map[string]corev1.EnvVar {
	out := map[string]corev1.EnvVar{}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		out[e.Name] = e
	}
	return out
}

// checkServicesSelectPods: each Service selects exactly one component's pods and targets a
// port those pods declare.
func checkServicesSelectPods(t *testing.T, r *rendered) {
	t.Helper()
	for k, o := range r.objects {
		svc, ok := o.(*corev1.Service)
		if !ok {
			continue
		}
		var matched []string
		for pk, p := range r.objects {
			var tmpl corev1.PodTemplateSpec
			switch p := p.(type) {
			case *appsv1.Deployment:
				tmpl = p.Spec.Template
			case *appsv1.StatefulSet:
				tmpl = p.Spec.Template
			default:
				continue
			}
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(tmpl.Labels)) {
				continue
			}
			matched = append(matched, pk)
			for _, sp := range svc.Spec.Ports {
				if !slices.ContainsFunc(tmpl.Spec.Containers[0].Ports, func(cp corev1.ContainerPort) bool { return cp.Name == sp.TargetPort.StrVal }) {
					t.Errorf("%s: targetPort %s is not a port of %s", k, sp.TargetPort.String(), pk)
				}
			}
		}
		if len(matched) != 1 {
			t.Errorf("%s selects %v, want exactly one workload", k, matched)
		}
	}
}

// configOf parses config.yaml from the config ConfigMap.
func configOf(t *testing.T, r *rendered) map[string]any {
	t.Helper()
	cm := get[*corev1.ConfigMap](t, r, "ConfigMap", fullname+"-config")
	var cfg map[string]any
	if err := yaml.UnmarshalStrict([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	return cfg
}

func dig(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch p := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("config: %v is not a map at %q", v, p)
			}
			v = m[p]
		case int:
			l, ok := v.([]any)
			if !ok || p >= len(l) {
				t.Fatalf("config: %v has no [%d]", v, p)
			}
			v = l[p]
		}
	}
	return v
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestSecretWiring(t *testing.T) {
	type ref struct{ secret, key string }
	tests := []struct {
		file       string
		wantSecret bool           // the chart renders its own Secret
		want       map[string]ref // env var -> where it comes from
		values     map[string]string
	}{
		{
			file:       "external-redis-existing-secret-values.yaml",
			wantSecret: false,
			want: map[string]ref{
				"MCS_SECRET_REDIS_PASSWORD":                    {"mcs-credentials", "redis-password"},
				"MCS_SECRET_REDIS_SENTINEL_PASSWORD":           {"redis-sentinel", "password"},
				"MCS_SECRET_ROUTE_SALES_BEARER_0":              {"mcs-credentials", "miitel-bearer"},
				"MCS_SECRET_ROUTE_SALES_BASIC_0":               {"miitel-basic", "password"},
				"MCS_SECRET_CONNECTION_SALESFORCE_PRIVATE_KEY": {"mcs-credentials", "salesforce-private-key"},
			},
		},
		{
			file:       "redis-cluster-values.yaml",
			wantSecret: false,
			want: map[string]ref{
				// No key given: each field's default key name.
				"MCS_SECRET_CONNECTION_HUBSPOT_CLIENT_SECRET": {"crm-oauth", "connection-hubspot-client-secret"},
				"MCS_SECRET_CONNECTION_HUBSPOT_REFRESH_TOKEN": {"crm-oauth", "connection-hubspot-refresh-token"},
				"MCS_SECRET_ROUTE_SALES_HEADER_0":             {"crm-oauth", "miitel-header"},
			},
		},
		{
			file:       "bundled-redis-values.yaml",
			wantSecret: true,
			want: map[string]ref{
				"MCS_SECRET_REDIS_PASSWORD":                       {fullname, "redis-password"},
				"MCS_SECRET_ROUTE_SALES_BEARER_0":                 {fullname, "route-sales-bearer-0"},
				"MCS_SECRET_ROUTE_SALES_BEARER_1":                 {fullname, "route-sales-bearer-1"},
				"MCS_SECRET_ROUTE_SALES_PAYLOAD_0":                {fullname, "route-sales-payload-0"},
				"MCS_SECRET_ROUTE_SUPPORT_BASIC_0":                {fullname, "route-support-basic-0"},
				"MCS_SECRET_ROUTE_SUPPORT_HEADER_0":               {fullname, "route-support-header-0"},
				"MCS_SECRET_CONNECTION_HUBSPOT_PRIVATE_APP_TOKEN": {fullname, "connection-hubspot-private-app-token"},
			},
			values: map[string]string{
				"redis-password":                       "trial-redis-password",
				"route-sales-bearer-1":                 "previous-token-being-rotated-out",
				"route-sales-payload-0":                "payload-shared-secret",
				"route-support-basic-0":                "basic-password",
				"connection-hubspot-private-app-token": "pat-na1-00000000-0000-0000-0000-000000000000",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r := mustRender(t, readValues(t, tt.file))
			s, hasSecret := r.objects["Secret/"+fullname].(*corev1.Secret)
			if hasSecret != tt.wantSecret {
				t.Fatalf("chart Secret rendered = %v, want %v", hasSecret, tt.wantSecret)
			}
			for _, c := range []string{"receiver", "worker"} {
				got := map[string]ref{}
				for name, e := range envOf(get[*appsv1.Deployment](t, r, "Deployment", fullname+"-"+c)) {
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						got[name] = ref{e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key}
					}
				}
				// Each pod gets only the secrets its process resolves: no CRM credential in
				// the internet-facing receiver, no webhook credential in the worker.
				foreign := map[string]string{"receiver": "MCS_SECRET_CONNECTION_", "worker": "MCS_SECRET_ROUTE_"}[c]
				want := map[string]ref{}
				for name, v := range tt.want {
					if !strings.HasPrefix(name, foreign) {
						want[name] = v
					}
				}
				if diff := cmp.Diff(want, got, cmp.AllowUnexported(ref{})); diff != "" {
					t.Errorf("%s secret env (-want +got):\n%s", c, diff)
				}
			}
			for key, v := range tt.values {
				if got := string(s.Data[key]); got != v {
					t.Errorf("Secret key %s = %q, want %q", key, got, v)
				}
			}
			if hasSecret {
				for key, v := range s.Data {
					if _, given := tt.values[key]; !given && !regexp.MustCompile(`^[A-Za-z0-9]{40}$`).Match(v) {
						t.Errorf("generated %s = %q, want 40 random alphanumerics", key, v)
					}
				}
			}
		})
	}
}

func TestBundledRedisPasswordAndPersistence(t *testing.T) {
	r := mustRender(t, readValues(t, "bundled-redis-values.yaml"))
	ss := get[*appsv1.StatefulSet](t, r, "StatefulSet", fullname+"-redis")
	c := ss.Spec.Template.Spec.Containers[0]
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction", "--maxmemory 400mb", "--requirepass $(REDIS_PASSWORD)"} {
		if !strings.Contains(args, want) {
			t.Errorf("redis args %q lack %q", args, want)
		}
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if e := env["REDIS_PASSWORD"]; e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Key != "redis-password" {
		t.Errorf("REDIS_PASSWORD = %+v, want the chart Secret's redis-password", e)
	}
	if len(ss.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("volumeClaimTemplates = %d, want 1", len(ss.Spec.VolumeClaimTemplates))
	}
	pvc := ss.Spec.VolumeClaimTemplates[0]
	if got := pvc.Spec.Resources.Requests.Storage().String(); got != "2Gi" || pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "standard" {
		t.Errorf("PVC size %s class %v, want 2Gi standard", got, pvc.Spec.StorageClassName)
	}
	if got := dig(t, configOf(t, r), "redis", "url"); got != "redis://"+fullname+"-redis:6379/0" {
		t.Errorf("redis.url = %v, want the bundled Service", got)
	}
	if !strings.Contains(r.notes, "NOT FOR PRODUCTION") {
		t.Error("NOTES do not warn that the bundled Redis is not for production")
	}
	if _, ok := r.objects["Service/"+fullname+"-redis"]; !ok {
		t.Error("no Service for the bundled Redis")
	}
}

func TestExternalRedisConfig(t *testing.T) {
	tests := []struct {
		file string
		want string // redis: section of config.yaml
	}{
		{"external-redis-existing-secret-values.yaml", `
password: {env: MCS_SECRET_REDIS_PASSWORD}
username: mcs
sentinel:
  master_name: mymaster
  addrs: [redis-sentinel-0.redis:26379, redis-sentinel-1.redis:26379, redis-sentinel-2.redis:26379]
  password: {env: MCS_SECRET_REDIS_SENTINEL_PASSWORD}
tls: {enabled: true, server_name: redis.internal, ca_file: /etc/miitel-crm-sync/redis-ca/ca.crt}
`},
		{"ingress-hpa-servicemonitor-values.yaml", `
url: rediss://redis.example.internal:6380/0
password: {env: MCS_SECRET_REDIS_PASSWORD}
`},
		{"redis-cluster-values.yaml", `
cluster: {addrs: [redis-cluster-0.redis-cluster:6379, redis-cluster-1.redis-cluster:6379, redis-cluster-2.redis-cluster:6379]}
tls: {enabled: true, ca_file: /etc/ssl/certs/ca-certificates.crt}
`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r := mustRender(t, readValues(t, tt.file))
			var want map[string]any
			if err := yaml.Unmarshal([]byte(tt.want), &want); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, configOf(t, r)["redis"]); diff != "" {
				t.Errorf("redis config (-want +got):\n%s", diff)
			}
			if _, ok := r.objects["StatefulSet/"+fullname+"-redis"]; ok {
				t.Error("bundled Redis rendered although an external one is configured")
			}
			if strings.Contains(r.notes, "NOT FOR PRODUCTION") {
				t.Error("NOTES warn about the bundled Redis, which is off")
			}
		})
	}
}

func TestRedisCAMountedWhereConfigPoints(t *testing.T) {
	r := mustRender(t, readValues(t, "external-redis-existing-secret-values.yaml"))
	for _, c := range []string{"receiver", "worker"} {
		spec := get[*appsv1.Deployment](t, r, "Deployment", fullname+"-"+c).Spec.Template.Spec
		var vol string
		for _, m := range spec.Containers[0].VolumeMounts {
			if m.MountPath == "/etc/miitel-crm-sync/redis-ca" {
				vol = m.Name
			}
		}
		ok := slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
			return v.Name == vol && v.Secret != nil && v.Secret.SecretName == "redis-ca"
		})
		if vol == "" || !ok {
			t.Errorf("%s: Secret redis-ca is not mounted at /etc/miitel-crm-sync/redis-ca", c)
		}
	}
}
