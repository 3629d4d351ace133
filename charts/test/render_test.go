package charttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// The chart and the repository files are read through symlinks in testdata/: `go test`
// only notices changes of files inside this module when it decides whether a cached result
// is still valid, and ../miitel-crm-sync is outside it.
const (
	chartDir    = "testdata/miitel-crm-sync"
	releaseName = "mcs"
	namespace   = "crm"
)

// kubeVersion is the cluster version rendered for. Without it Helm's library falls back to
// v1.20 in test binaries (it reads its default from build info).
var kubeVersion = &chartutil.KubeVersion{Version: "v1.33.0", Major: "1", Minor: "33"}

// rendered is one chart rendering: the typed objects by "Kind/name", the hooks likewise, and
// the NOTES text.
type rendered struct {
	objects map[string]runtime.Object
	hooks   map[string]runtime.Object
	notes   string
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return c
}

// readValues reads a values file of the chart's ci/ directory ("" for none).
func readValues(t *testing.T, ciFile string) map[string]any {
	t.Helper()
	if ciFile == "" {
		return map[string]any{}
	}
	v, err := chartutil.ReadValuesFile(filepath.Join(chartDir, "ci", ciFile))
	if err != nil {
		t.Fatalf("read %s: %v", ciFile, err)
	}
	return v
}

// parseValues turns a YAML snippet of overrides into values.
func parseValues(t *testing.T, src string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValues([]byte(src))
	if err != nil {
		t.Fatalf("parse values: %v\n%s", err, src)
	}
	return v
}

// merge lays the overrides over base, recursively for maps, like a second -f file.
func merge(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		bm, ok1 := out[k].(map[string]any)
		om, ok2 := v.(map[string]any)
		if ok1 && ok2 {
			out[k] = merge(bm, om)
			continue
		}
		out[k] = v
	}
	return out
}

// renderChart renders like `helm install --dry-run` without a cluster (as `helm template`
// does), with Helm's schema validation, and returns the error Helm reports.
func renderChart(t *testing.T, vals map[string]any) (*rendered, error) {
	t.Helper()
	return renderChartOf(t, loadChart(t), vals)
}

// newInstall is `helm install --dry-run` with no cluster, as `helm template` runs it.
func newInstall() *action.Install {
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.DryRun = true
	inst.ClientOnly = true
	inst.Replace = true
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	inst.KubeVersion = kubeVersion
	inst.APIVersions = chartutil.VersionSet{"monitoring.coreos.com/v1"}
	return inst
}

func renderChartOf(t *testing.T, c *chart.Chart, vals map[string]any) (*rendered, error) {
	t.Helper()
	if vals == nil {
		vals = map[string]any{}
	}
	rel, err := newInstall().Run(c, vals)
	if err != nil {
		return nil, err
	}
	r := &rendered{objects: map[string]runtime.Object{}, hooks: map[string]runtime.Object{}, notes: rel.Info.Notes}
	for name, doc := range releaseutil.SplitManifests(rel.Manifest) {
		addObject(t, r.objects, name, doc)
	}
	for _, h := range rel.Hooks {
		addObject(t, r.hooks, h.Path, h.Manifest)
	}
	return r, nil
}

// mustRender renders and fails the test on any error.
func mustRender(t *testing.T, vals map[string]any) *rendered {
	t.Helper()
	r, err := renderChart(t, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return r
}

func addObject(t *testing.T, into map[string]runtime.Object, source, doc string) {
	t.Helper()
	if strings.TrimSpace(doc) == "" {
		return
	}
	obj, err := decodeStrict([]byte(doc))
	if err != nil {
		t.Fatalf("%s: %v\n%s", source, err, doc)
	}
	m, err := metaOf(obj)
	if err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	key := obj.GetObjectKind().GroupVersionKind().Kind + "/" + m
	if _, dup := into[key]; dup {
		t.Fatalf("%s: %s rendered twice", source, key)
	}
	into[key] = obj
}

// typedScheme knows the built-in kinds and the Prometheus Operator's.
var typedScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := scheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := monitoringv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// decodeStrict decodes one YAML document into the Go type of its apiVersion/kind, refusing
// duplicate keys and any field the type does not have, so a misspelt field fails.
func decodeStrict(doc []byte) (runtime.Object, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, err
	}
	gv, err := schema.ParseGroupVersion(tm.APIVersion)
	if err != nil {
		return nil, err
	}
	gvk := gv.WithKind(tm.Kind)
	obj, err := typedScheme.New(gvk)
	if err != nil {
		return nil, fmt.Errorf("unknown kind %s: %w", gvk, err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, fmt.Errorf("decode %s strictly: %w", gvk, err)
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return obj, nil
}

func metaOf(obj runtime.Object) (string, error) {
	type named interface{ GetName() string }
	n, ok := obj.(named)
	if !ok || n.GetName() == "" {
		return "", fmt.Errorf("%T has no name", obj)
	}
	return n.GetName(), nil
}

// get returns the object of that kind and name, typed, or fails.
func get[T runtime.Object](t *testing.T, r *rendered, kind, name string) T {
	t.Helper()
	o, ok := r.objects[kind+"/"+name]
	if !ok {
		t.Fatalf("no %s/%s rendered; have %v", kind, name, r.keys())
	}
	typed, ok := o.(T)
	if !ok {
		t.Fatalf("%s/%s is %T", kind, name, o)
	}
	return typed
}

func (r *rendered) keys() []string {
	out := make([]string, 0, len(r.objects))
	for k := range r.objects {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ciValuesFiles lists charts/miitel-crm-sync/ci/*-values.yaml.
func ciValuesFiles(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) < 3 {
		t.Fatalf("want at least 3 ci values files, found %v", m)
	}
	out := make([]string, len(m))
	for i, p := range m {
		out[i] = filepath.Base(p)
	}
	return out
}

func TestMain(m *testing.M) {
	// Helm's engine reads no environment, but a developer's HELM_* settings must not matter.
	os.Unsetenv("HELM_NAMESPACE")
	os.Exit(m.Run())
}
