package charttest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/chartutil"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

var serviceBin struct {
	once      sync.Once
	dir, path string
	err       error
	out       []byte
}

// serviceBinary builds the service once per test run (as `make build` does) and returns its
// path; -short skips the tests that need it.
func serviceBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not building the service binary")
	}
	b := &serviceBin
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "charttest-bin-"); b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "miitel-crm-sync")
		build := exec.Command("go", "build", "-o", b.path, parseMakefile(t).pkg)
		build.Dir = repoRoot
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		b.out, b.err = build.CombinedOutput()
	})
	if b.err != nil {
		t.Fatalf("build the service: %v\n%s", b.err, b.out)
	}
	return b.path
}

func removeServiceBinary() {
	if serviceBin.dir != "" {
		os.RemoveAll(serviceBin.dir)
	}
}

// chartOwnedConfig are the config.yaml keys the chart sets from other values (docs/helm.md
// "Configuration"), so values.schema.json does not offer them under config.
var chartOwnedConfig = map[string][]string{
	"server": {"listen", "shutdown_timeout"},
	"redis":  {"url", "username", "password", "sentinel", "cluster", "tls"},
	"worker": {"metrics_listen", "shutdown_timeout", "hot_reload"},
}

// TestSchemaOffersEveryConfigKey: each key of the service's log, server, redis, queue and
// worker sections is either passed through by values.schema.json under config.<section> or
// set by the chart, and the schema offers no key the service does not have. Without it a
// setting added to the service (worker.poll_interval was one) is refused by `helm install`.
func TestSchemaOffersEveryConfigKey(t *testing.T) {
	cmd := exec.Command(serviceBinary(t), "config") // the embedded defaults
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no MCS_* setting of the developer's
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("miitel-crm-sync config: %v", err)
	}
	var service struct{ Log, Server, Redis, Queue, Worker map[string]any }
	if err := json.Unmarshal(out, &service); err != nil {
		t.Fatalf("config output: %v", err)
	}
	sections := map[string]map[string]any{"log": service.Log, "server": service.Server,
		"redis": service.Redis, "queue": service.Queue, "worker": service.Worker}
	raw, err := os.ReadFile(filepath.Join(chartDir, chartutil.SchemafileName))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Config struct {
				Properties map[string]struct {
					Properties map[string]any `json:"properties"`
				} `json:"properties"`
			} `json:"config"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	for section, keys := range sections {
		if len(keys) == 0 {
			t.Fatalf("the service's config output has no %s section:\n%s", section, out)
		}
		var want, got []string
		for k := range keys {
			if !slices.Contains(chartOwnedConfig[section], k) {
				want = append(want, k)
			}
		}
		for k := range schema.Properties.Config.Properties[section].Properties {
			got = append(got, k)
		}
		slices.Sort(want)
		slices.Sort(got)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("values.schema.json config.%s vs the service's %s keys not set by the chart (-service +schema):\n%s", section, section, diff)
		}
	}
}

// TestRenderedConfigLoadsInTheService hands every rendered config.yaml, with the pods'
// secret environment, to the service's own `miitel-crm-sync config`, which loads it exactly
// as the receiver and worker do (strict YAML, secrets resolved, Validate). A key the chart
// misspells, a duration it writes wrongly or a secret variable it forgets fails here. The
// mapping files the chart renders go through `mapping validate`: the worker refuses to start
// on an invalid one, so an example values file must not ship one.
func TestRenderedConfigLoadsInTheService(t *testing.T) {
	bin := serviceBinary(t)
	for name, vals := range valueSets(t) {
		t.Run(name, func(t *testing.T) {
			r := mustRender(t, vals)
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "config.yaml")
			cm := get[*corev1.ConfigMap](t, r, "ConfigMap", fullname+"-config")
			if err := os.WriteFile(cfgPath, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
				t.Fatal(err)
			}
			validateMappings(t, bin, r)
			chartSecret, _ := r.objects["Secret/"+fullname].(*corev1.Secret)
			for _, c := range []string{"receiver", "worker"} {
				d := get[*appsv1.Deployment](t, r, "Deployment", fullname+"-"+c)
				// Only what the pod gets: PATH for nothing else, plus its secret variables.
				env := []string{"PATH=" + os.Getenv("PATH")}
				for _, e := range d.Spec.Template.Spec.Containers[0].Env {
					if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
						continue
					}
					ref := e.ValueFrom.SecretKeyRef
					v := "stand-in-for-" + ref.Name + "/" + ref.Key // a Secret managed outside the chart
					if ref.Name == fullname {
						v = string(chartSecret.Data[ref.Key])
					}
					env = append(env, e.Name+"="+v)
				}
				cmd := exec.Command(bin, "config", "--config", cfgPath, "--role", c)
				cmd.Env = env
				out, err := cmd.Output()
				if err != nil {
					var stderr []byte
					if ee, ok := err.(*exec.ExitError); ok {
						stderr = ee.Stderr
					}
					t.Fatalf("%s: the service refuses the rendered config: %v\n%s\nconfig.yaml:\n%s", c, err, stderr, cm.Data["config.yaml"])
				}
				var loaded struct {
					Routes []struct {
						Name string `json:"name"`
					} `json:"routes"`
				}
				if err := json.Unmarshal(out, &loaded); err != nil {
					t.Fatalf("%s: config output is not JSON: %v\n%s", c, err, out)
				}
				var want, got []string
				for _, rt := range dig(t, configOf(t, r), "routes").([]any) {
					want = append(want, rt.(map[string]any)["name"].(string))
				}
				for _, rt := range loaded.Routes {
					got = append(got, rt.Name)
				}
				if !slices.Equal(want, got) {
					t.Errorf("%s: service loaded routes %v, chart rendered %v", c, got, want)
				}
			}
		})
	}
}

// validateMappings runs `mapping validate` on every file of the rendered mappings ConfigMap.
func validateMappings(t *testing.T, bin string, r *rendered) {
	t.Helper()
	cm, ok := r.objects["ConfigMap/"+fullname+"-mappings"].(*corev1.ConfigMap)
	if !ok || len(cm.Data) == 0 {
		return // no files, or a ConfigMap managed outside the chart
	}
	dir := t.TempDir()
	var files []string
	for name, text := range cm.Data {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	slices.Sort(files)
	if out, err := exec.Command(bin, append([]string{"mapping", "validate"}, files...)...).CombinedOutput(); err != nil {
		t.Errorf("the worker would refuse a rendered mapping file: %v\n%s", err, out)
	}
}
