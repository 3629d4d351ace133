package charttest

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"golang.org/x/mod/modfile"
	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/syntax"
)

// repoRoot is where `go list` runs; the files the tests read come through testdata/ (see
// chartDir).
const repoRoot = "../.."

// The Dockerfile is not built in CI (no Docker engine there); these tests hold it to the
// Makefile's build, which CI does run, and to go.mod.

type dockerfile struct {
	stages   []instructions.Stage
	metaArgs map[string]string // ARGs before the first FROM, with their defaults
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	f, err := os.Open("testdata/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("parse Dockerfile: %v", err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("Dockerfile instructions: %v", err)
	}
	d := dockerfile{stages: stages, metaArgs: map[string]string{}}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				d.metaArgs[kv.Key] = *kv.Value
			}
		}
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a runtime stage", len(stages))
	}
	return d
}

// expandMeta substitutes the global ARGs into a FROM image reference.
func (d dockerfile) expandMeta(s string) string {
	return os.Expand(s, func(k string) string { return d.metaArgs[k] })
}

// shellWords splits a shell command line into its simple commands, each as its words with
// every variable left as ${NAME}, so the Dockerfile's and the Makefile's text compare as
// written rather than as expanded.
func shellWords(t *testing.T, src string) [][]string {
	t.Helper()
	file, err := syntax.NewParser().Parse(strings.NewReader(src), "")
	if err != nil {
		t.Fatalf("parse shell %q: %v", src, err)
	}
	cfg := &expand.Config{Env: placeholderEnv{}}
	var out [][]string
	syntax.Walk(file, func(n syntax.Node) bool {
		call, ok := n.(*syntax.CallExpr)
		if !ok {
			return true
		}
		var words []string
		for _, a := range call.Assigns {
			v := ""
			if a.Value != nil {
				v, err = expand.Literal(cfg, a.Value)
				if err != nil {
					t.Fatalf("expand %s: %v", a.Name.Value, err)
				}
			}
			words = append(words, a.Name.Value+"="+v)
		}
		args, err := expand.Fields(cfg, call.Args...)
		if err != nil {
			t.Fatalf("expand %q: %v", src, err)
		}
		out = append(out, append(words, args...))
		return true
	})
	return out
}

// placeholderEnv expands $X to the literal text ${X}.
type placeholderEnv struct{}

func (placeholderEnv) Get(name string) expand.Variable {
	return expand.Variable{Set: true, Kind: expand.String, Str: "${" + name + "}"}
}
func (placeholderEnv) Each(func(string, expand.Variable) bool) {}

type makefileBuild struct {
	flags []string // BUILD_FLAGS as words, $(VERSION) written ${VERSION}
	pkg   string   // BUILD_PKG
	rule  string   // the build recipe
}

func parseMakefile(t *testing.T) makefileBuild {
	t.Helper()
	b, err := os.ReadFile("testdata/Makefile")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	var m makefileBuild
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	inBuild := false
	assign := regexp.MustCompile(`^([A-Z_]+)\s*:?=\s*(.*)$`)
	for sc.Scan() {
		line := sc.Text()
		if g := assign.FindStringSubmatch(line); g != nil {
			vars[g[1]] = strings.TrimSpace(g[2])
		}
		switch {
		case strings.HasPrefix(line, "build:"):
			inBuild = true
		case inBuild && strings.HasPrefix(line, "\t"):
			m.rule += strings.TrimSpace(line) + "\n"
		case inBuild:
			inBuild = false
		}
	}
	flags, ok := vars["BUILD_FLAGS"]
	if !ok {
		t.Fatal("Makefile has no BUILD_FLAGS")
	}
	m.pkg = vars["BUILD_PKG"]
	if m.pkg == "" {
		t.Fatal("Makefile has no BUILD_PKG")
	}
	words := shellWords(t, strings.ReplaceAll(flags, "$(VERSION)", "${VERSION}"))
	if len(words) != 1 {
		t.Fatalf("BUILD_FLAGS %q is not one list of words", flags)
	}
	m.flags = words[0]
	return m
}

// goBuild finds the `go build` command of the stage: its environment assignments, flags
// (without -o) and package.
func goBuild(t *testing.T, st instructions.Stage) (env map[string]string, flags []string, pkg string) {
	t.Helper()
	env = map[string]string{}
	found := false
	for _, c := range st.Commands {
		switch c := c.(type) {
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				env[kv.Key] = kv.Value
			}
		case *instructions.RunCommand:
			for _, words := range shellWords(t, strings.Join(c.CmdLine, " ")) {
				i := 0
				local := map[string]string{}
				for ; i < len(words) && strings.Contains(words[i], "=") && !strings.HasPrefix(words[i], "-"); i++ {
					k, v, _ := strings.Cut(words[i], "=")
					local[k] = v
				}
				if len(words) < i+2 || words[i] != "go" || words[i+1] != "build" {
					continue
				}
				if found {
					t.Fatal("Dockerfile runs go build twice")
				}
				found = true
				for k, v := range local {
					env[k] = v
				}
				args := words[i+2:]
				for j := 0; j < len(args); j++ {
					switch {
					case args[j] == "-o":
						j++
					case strings.HasPrefix(args[j], "-"):
						flags = append(flags, args[j])
						if args[j] == "-ldflags" || args[j] == "-tags" || args[j] == "-gcflags" {
							j++
							flags = append(flags, args[j])
						}
					default:
						if pkg != "" {
							t.Fatalf("go build names two packages: %s and %s", pkg, args[j])
						}
						pkg = args[j]
					}
				}
			}
		}
	}
	if !found {
		t.Fatalf("stage %s runs no go build", st.Name)
	}
	return env, flags, pkg
}

func TestDockerfileBuildMatchesMakefile(t *testing.T) {
	d := parseDockerfile(t)
	mk := parseMakefile(t)
	build := d.stages[0]
	env, flags, pkg := goBuild(t, build)

	if diff := cmp.Diff(mk.flags, flags); diff != "" {
		t.Errorf("Dockerfile go build flags differ from the Makefile's BUILD_FLAGS (-Makefile +Dockerfile):\n%s", diff)
	}
	if pkg != mk.pkg {
		t.Errorf("Dockerfile builds %q, Makefile's BUILD_PKG is %q", pkg, mk.pkg)
	}
	if env["CGO_ENABLED"] != "0" {
		t.Errorf("Dockerfile go build has CGO_ENABLED=%q, want 0 (a static binary for distroless static)", env["CGO_ENABLED"])
	}
	if !strings.Contains(mk.rule, "CGO_ENABLED=0") || !strings.Contains(mk.rule, "$(BUILD_FLAGS)") || !strings.Contains(mk.rule, "$(BUILD_PKG)") {
		t.Errorf("Makefile build recipe no longer builds with CGO_ENABLED=0 $(BUILD_FLAGS) $(BUILD_PKG):\n%s", mk.rule)
	}
	// What the issue asks of both: -trimpath and the version injected with -ldflags -X.
	if !slices.Contains(flags, "-trimpath") {
		t.Errorf("go build flags %q lack -trimpath", flags)
	}
	if i := slices.Index(flags, "-ldflags"); i < 0 || !strings.Contains(flags[i+1], "-X main.version=${VERSION}") {
		t.Errorf("go build flags %q do not inject -X main.version=${VERSION}", flags)
	}
	// ${VERSION} must be a build ARG of the build stage, or the version is always empty.
	hasVersionArg := false
	for _, c := range build.Commands {
		if a, ok := c.(*instructions.ArgCommand); ok {
			for _, kv := range a.Args {
				hasVersionArg = hasVersionArg || kv.Key == "VERSION"
			}
		}
	}
	if !hasVersionArg {
		t.Error("the build stage declares no ARG VERSION for -X main.version")
	}
}

func TestDockerfileGoVersionMatchesGoMod(t *testing.T) {
	d := parseDockerfile(t)
	b, err := os.ReadFile("testdata/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.ParseLax("go.mod", b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mf.Go == nil {
		t.Fatal("go.mod has no go line")
	}
	image := d.expandMeta(d.stages[0].BaseName)
	g := regexp.MustCompile(`^(?:docker\.io/(?:library/)?)?golang:(\d+\.\d+)(\.\d+)?\b`).FindStringSubmatch(image)
	if g == nil {
		t.Fatalf("build stage image %q (from %q) is not golang:<version>", image, d.stages[0].BaseName)
	}
	if want := majorMinor(mf.Go.Version); g[1] != want {
		t.Errorf("Dockerfile builds with Go %s, go.mod says go %s: make them the same major.minor", g[1], mf.Go.Version)
	}
}

func majorMinor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

func TestDockerfileRuntimeStage(t *testing.T) {
	d := parseDockerfile(t)
	rt := d.stages[len(d.stages)-1]
	base := d.expandMeta(rt.BaseName)
	var user, entry string
	var entryShell bool
	var exposed []string
	copiesBinary, copiesCA, copiesTZ := false, false, false
	for _, c := range rt.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.ExposeCommand:
			exposed = append(exposed, c.Ports...)
		case *instructions.EntrypointCommand:
			entryShell = c.PrependShell
			if len(c.CmdLine) > 0 {
				entry = c.CmdLine[0]
			}
		case *instructions.CopyCommand:
			for _, s := range c.SourcePaths {
				copiesCA = copiesCA || strings.Contains(s, "ca-certificates")
				copiesTZ = copiesTZ || strings.Contains(s, "zoneinfo")
			}
			copiesBinary = copiesBinary || (c.From != "" && c.DestPath == "/miitel-crm-sync")
		}
	}
	switch {
	case strings.HasPrefix(base, "gcr.io/distroless/static"):
		if !strings.Contains(base, "nonroot") {
			t.Errorf("runtime image %q: use the :nonroot (or :nonroot-<arch>) distroless variant", base)
		}
	case base == "scratch":
		// scratch has neither CA certificates (HTTPS to the CRMs) nor tzdata (Asia/Tokyo).
		if !copiesCA || !copiesTZ {
			t.Errorf("scratch runtime must copy CA certificates and zoneinfo (ca=%v tz=%v)", copiesCA, copiesTZ)
		}
	default:
		t.Errorf("runtime image %q is neither distroless static nor scratch", base)
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("runtime USER %q must be a numeric non-root uid (Kubernetes runAsNonRoot can only verify numbers)", user)
	}
	if !slices.ContainsFunc(exposed, func(p string) bool { return p == "8080" || p == "8080/tcp" }) {
		t.Errorf("runtime EXPOSE %v lacks the receiver port 8080", exposed)
	}
	if entry != "/miitel-crm-sync" || entryShell {
		t.Errorf("ENTRYPOINT is %q (shell form %v), want exec form [\"/miitel-crm-sync\"]", entry, entryShell)
	}
	if !copiesBinary {
		t.Error("runtime stage does not COPY --from the build stage to /miitel-crm-sync")
	}
}

// TestDockerignoreKeepsWhatTheBuildNeeds lists the files `go build` reads for the binary
// (Go files and embedded files of every package of this module, plus go.mod and go.sum)
// and checks that .dockerignore excludes none of them, and does exclude .git and charts.
func TestDockerignoreKeepsWhatTheBuildNeeds(t *testing.T) {
	f, err := os.Open("testdata/.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	mk := parseMakefile(t)
	needed := append([]string{"go.mod", "go.sum"}, buildInputs(t, mk.pkg)...)
	for _, p := range needed {
		excluded, err := pm.MatchesOrParentMatches(p)
		if err != nil {
			t.Fatal(err)
		}
		if excluded {
			t.Errorf(".dockerignore excludes %s, which the build needs", p)
		}
	}
	for _, p := range []string{".git/config", "charts/miitel-crm-sync/Chart.yaml", "bin/miitel-crm-sync"} {
		if excluded, _ := pm.MatchesOrParentMatches(p); !excluded {
			t.Errorf(".dockerignore should exclude %s (context size, secrets in .git)", p)
		}
	}
	if len(needed) < 10 {
		t.Errorf("only %d build inputs found; go list went wrong: %v", len(needed), needed)
	}
}

// buildInputs runs `go list -deps` in the repository for the binary's package and returns,
// relative to the repository, the Go and embedded files of the module's own packages.
func buildInputs(t *testing.T, pkg string) []string {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-json=Dir,GoFiles,EmbedFiles,Module", pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var files []string
	for {
		var p struct {
			Dir        string
			GoFiles    []string
			EmbedFiles []string
			Module     *struct{ Main bool }
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || !p.Module.Main {
			continue
		}
		rel, err := filepath.Rel(root, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range append(p.GoFiles, p.EmbedFiles...) {
			files = append(files, filepath.ToSlash(filepath.Join(rel, f)))
		}
	}
	return files
}
