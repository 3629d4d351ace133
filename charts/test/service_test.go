package charttest

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/chartutil"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// serviceBinary builds the service as `make build` does; -short skips the tests that need it.
func serviceBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not building the service binary")
	}
	bin := filepath.Join(t.TempDir(), "miitel-crm-sync")
	build := exec.Command("go", "build", "-o", bin, parseMakefile(t).pkg)
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the service: %v\n%s", err, out)
	}
	return bin
}

// chartOwnedConfig are the config.yaml keys the chart sets from other values (docs/helm.md
// "Configuration"), or deliberately does not offer, so values.schema.json does not offer
// them under config.
var chartOwnedConfig = map[string][]string{
	"server": {"listen", "shutdown_timeout"},
	"redis":  {"url", "username", "password", "sentinel", "cluster", "tls"},
	// metrics_listen is deprecated: ops.listen (values ops.port) replaces it.
	"worker": {"metrics_listen", "shutdown_timeout", "hot_reload"},
	"ops":    {"listen"},
}

// pendingConfigKeys are keys values.schema.json offers ahead of config/config.go, because
// another branch adds them to the service. Each fails this test once config.go has it:
// then delete it here, so the list only ever holds what is still on its way.
var pendingConfigKeys = map[string][]string{}

// configStructs reads the yaml keys of every struct type declared in the service's
// config/config.go (through testdata/, see chartDir): type name -> key -> field type.
func configStructs(t *testing.T) map[string]map[string]ast.Expr {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "testdata/config.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]ast.Expr{}
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok {
			return true
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			return false
		}
		keys := map[string]ast.Expr{}
		for _, fl := range st.Fields.List {
			if fl.Tag == nil {
				continue
			}
			tag, _ := strconv.Unquote(fl.Tag.Value)
			name, _, _ := strings.Cut(reflect.StructTag(tag).Get("yaml"), ",")
			if name != "" && name != "-" {
				keys[name] = fl.Type
			}
		}
		out[ts.Name.Name] = keys
		return false
	})
	if len(out) < 10 {
		t.Fatalf("found only %d struct types in config/config.go", len(out))
	}
	return out
}

// TestSchemaOffersEveryConfigKey: every key of the service's config (config/config.go) is
// offered by values.schema.json where the chart passes it through (config.log, .server,
// .redis, .queue, .worker, .ops, .status, .dead_letter, routes[], connections[], admin,
// recursively) or is set by the chart, and
// the schema offers no key the service does not have. The schema refuses unknown keys, so
// without this a setting added to the service (worker.poll_interval, salesforce.audience
// were such) is refused by `helm install`.
func TestSchemaOffersEveryConfigKey(t *testing.T) {
	structs := configStructs(t)
	raw, err := os.ReadFile(filepath.Join(chartDir, chartutil.SchemafileName))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	// resolve follows a "$ref": "#/definitions/X".
	resolve := func(node any) map[string]any {
		m, _ := node.(map[string]any)
		if ref, ok := m["$ref"].(string); ok {
			name := strings.TrimPrefix(ref, "#/definitions/")
			m, _ = schema["definitions"].(map[string]any)[name].(map[string]any)
		}
		return m
	}
	props := func(node map[string]any) map[string]any {
		p, _ := node["properties"].(map[string]any)
		return p
	}

	var compare func(path, typeName string, node map[string]any, owned, pending []string)
	compare = func(path, typeName string, node map[string]any, owned, pending []string) {
		fields := structs[typeName]
		var want, got []string
		for k := range fields {
			if slices.Contains(pending, k) {
				t.Errorf("%s.%s is in config/config.go now: delete it from pendingConfigKeys", path, k)
			}
			if !slices.Contains(owned, k) {
				want = append(want, k)
			}
		}
		for k := range props(node) {
			if !slices.Contains(pending, k) {
				got = append(got, k)
			}
		}
		slices.Sort(want)
		slices.Sort(got)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("values.schema.json %s vs the service's %s keys (-service +schema):\n%s", path, typeName, diff)
		}
		for k, typ := range fields {
			child := resolve(props(node)[k])
			if child == nil {
				continue
			}
			if arr, ok := typ.(*ast.ArrayType); ok {
				typ, child = arr.Elt, resolve(child["items"])
			}
			if star, ok := typ.(*ast.StarExpr); ok {
				typ = star.X
			}
			if id, ok := typ.(*ast.Ident); ok && structs[id.Name] != nil {
				compare(path+"."+k, id.Name, child, nil, nil)
			}
		}
	}
	top := props(schema)
	config := props(resolve(top["config"]))
	sections := map[string]string{
		"log": "Log", "server": "Server", "redis": "Redis", "queue": "Queue", "worker": "Worker",
		"ops": "Ops", "status": "Status", "dead_letter": "DeadLetter",
	}
	for section, typeName := range sections {
		compare("config."+section, typeName, resolve(config[section]), chartOwnedConfig[section], pendingConfigKeys[section])
	}
	// Sections holding lists of credentials are top-level values, like routes.
	compare("routes[]", "Route", resolve(resolve(top["routes"])["items"]), nil, nil)
	compare("connections[]", "Connection", resolve(resolve(top["connections"])["items"]), nil, nil)
	compare("admin", "Admin", resolve(top["admin"]), nil, nil)
	// Every section of the service's Config is offered somewhere.
	offered := map[string]bool{"routes": true, "connections": true, "admin": true}
	for s := range sections {
		offered[s] = true
	}
	for k := range structs["Config"] {
		if !offered[k] {
			t.Errorf("config/config.go section %q is offered neither under config nor at the top level of values.schema.json", k)
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
