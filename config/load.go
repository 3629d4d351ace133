package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Default is the configuration before any file or environment is applied: the embedded
// default that `serve` runs with no config file (in-process Redis, one open route named
// "default", dry-run CRM).
func Default() *Config {
	return &Config{
		Log: Log{Level: "info", Format: "auto"},
		Server: Server{
			Listen:            ":8080",
			MaxBodyBytes:      10 << 20, // a long transcript with phrases fits many times over
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       60 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       120 * time.Second,
			EnqueueTimeout:    5 * time.Second,
			ShutdownTimeout:   20 * time.Second,
			RetryAfter:        30 * time.Second,
			// 256 requests: at 2,000 req/s a request takes a few ms, so this is headroom
			// for a Redis stall of ~100 ms at full rate, not the steady state.
			MaxInflightRequests: 256,
			// 64 MiB of body memory (4 x each body): one max-size (10 MiB) body at a time
			// beside many ordinary ones, and with Go's GC headroom the process stays well
			// under 150 MB whatever arrives.
			MaxInflightBytes: 64 << 20,
		},
		Redis: Redis{
			DialTimeout:  2 * time.Second,
			ReadTimeout:  3 * time.Second,
			WriteTimeout: 3 * time.Second,
			AckReplicas:  AckAuto,
			// A replica on the same network acknowledges in well under a millisecond;
			// 300ms rides out a replica's brief stall without holding MiiTel long.
			AckTimeout: 300 * time.Millisecond,
		},
		Queue: Queue{
			Name:         "miitel",
			DedupeWindow: 24 * time.Hour,
			MaxRetry:     25,
			TaskTimeout:  2 * time.Minute,
		},
		Worker: Worker{
			// Batches form from the tasks a worker runs at once, so concurrency bounds the
			// batch size: a task waiting in a batch is a parked goroutine, not a thread.
			Concurrency:     200,
			ShutdownTimeout: 20 * time.Second,
			StateTTL:        7 * 24 * time.Hour,
			IDMapTTL:        90 * 24 * time.Hour,
			RetryBase:       10 * time.Second,
			RetryMax:        6 * time.Hour,
			PollInterval:    5 * time.Second,
			CheckInterval:   5 * time.Minute,
		},
		Ops: Ops{Listen: ":9090"},
		// A call's status is 1-3 KB in Redis (record and indexes, measured in callstatus's
		// TestRecordFootprint): 100,000 records stay under some 300 MB.
		Status: Status{
			Retention:  30 * 24 * time.Hour,
			MaxRecords: 100_000,
			TimeZone:   "Asia/Tokyo",
		},
		// A dead entry takes 2-3 KB of Redis (its compressed event, metadata and Redis's
		// overhead, measured with MEMORY USAGE): 50,000 of them stay under 150 MB, and 128 MiB
		// caps entries with long transcripts. A year and a month keeps last year's month-end
		// questions answerable.
		DeadLetter: DeadLetter{
			Retention:  400 * 24 * time.Hour,
			MaxEntries: 50_000,
			MaxBytes:   128 << 20,
		},
	}
}

// defaultRoute is the route the embedded default serves when the file names none.
func defaultRoute() Route {
	return Route{Name: "default", Auth: Auth{Insecure: true}}
}

// Role says which secrets a process needs: the receiver checks webhook credentials, the
// worker talks to the CRMs, both reach Redis. A process resolves only its role's secrets, so
// the internet-facing receiver can run without CRM credentials in its environment.
type Role struct {
	Receiver, Worker bool
	// Admin serves the admin API (the ops listener): it resolves admin credentials.
	Admin bool
}

// RoleAll is a process that is all of them (serve, and the admin commands that check a file).
var RoleAll = Role{Receiver: true, Worker: true, Admin: true}

// Load builds the configuration for a process that is both receiver and worker: see LoadFor.
func Load(path string, getenv func(string) string) (*Config, error) {
	return LoadFor(path, getenv, RoleAll)
}

// LoadFor builds the configuration: defaults, then the YAML file at path (if path is not
// empty), then environment variables, then the vendor defaults of what is still unset, then
// the role's secrets are resolved and Validate runs. Every problem found is returned at once
// as an ErrorList, each positioned file:line:col where the file holds the key (or naming
// the environment variable that set it). Secrets outside the role stay unresolved (their
// Value is empty).
func LoadFor(path string, getenv func(string) string, role Role) (*Config, error) {
	cfg := Default()
	var errs ErrorList
	src := &source{file: path}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if fatal := decodeYAML(path, b, cfg, src, &errs); fatal != nil {
			// The file is not a config (bad syntax, unknown key, wrong type): what was
			// decoded of it is not worth validating.
			return nil, append(errs, fatal)
		}
		cfg.Source = path
	}
	if len(cfg.Routes) == 0 && path == "" {
		cfg.Routes = []Route{defaultRoute()}
	}
	envPaths := applyEnv(cfg, getenv, &errs)
	cfg.fillDefaults()
	cfg.secrets(RoleAll, func(_ string, s *Secret) {
		if err := s.problem(path); err != nil {
			errs = append(errs, err)
		}
	})
	cfg.resolveSecrets(getenv, role, &errs)
	cfg.validate(&errs)
	if len(errs) > 0 {
		for _, e := range errs {
			if fe, ok := e.(*fieldError); ok {
				fe.where = envPaths[fe.path]
				if fe.where == "" {
					fe.where = src.position(fe.path)
				}
			}
		}
		return nil, errs
	}
	return cfg, nil
}

// source is where the keys of a config file are: YAML path ("routes[1].name") -> "file:line:col".
type source struct {
	file string
	pos  map[string]string
}

// record notes where the key of n is: for a key with a scalar value the value (what is
// wrong is usually the value), for a key with a mapping or list the key, for a list
// element its first key.
func (s *source) record(n ast.Node) {
	var tk *token.Token
	switch n := n.(type) {
	case *ast.MappingValueNode:
		tk = n.Key.GetToken()
		if _, scalar := n.Value.(ast.ScalarNode); scalar {
			tk = n.Value.GetToken()
		}
	case *ast.MappingNode:
		if !strings.HasSuffix(n.GetPath(), "]") {
			return
		}
		tk = n.GetToken()
		if len(n.Values) > 0 {
			tk = n.Values[0].Key.GetToken()
		}
	default:
		return
	}
	p := strings.TrimPrefix(strings.TrimPrefix(n.GetPath(), "$"), ".")
	if _, seen := s.pos[p]; seen || p == "" || tk == nil || tk.Position == nil {
		return
	}
	s.pos[p] = fmt.Sprintf("%s:%d:%d", s.file, tk.Position.Line, tk.Position.Column)
}

// position is the place of path in the file, or of its nearest ancestor the file holds
// ("routes[0].auth" when routes[0] has no auth key: the route). "" when neither is there.
func (s *source) position(path string) string {
	for path != "" {
		if p, ok := s.pos[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return ""
}

// visitor records the position of every node of a file.
type visitor struct{ s *source }

func (v visitor) Visit(n ast.Node) ast.Visitor {
	v.s.record(n)
	return v
}

// decodeYAML decodes strictly: an unknown key, a wrong type or a duplicate key is the fatal
// error it returns, naming file:line:col. Problems that leave the rest of the file readable
// (a duration that does not parse, a literal secret) are appended to errs and decoding goes
// on, so they are reported together with everything else.
func decodeYAML(path string, b []byte, cfg *Config, src *source, errs *ErrorList) error {
	src.pos = map[string]string{}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	file, err := parser.ParseBytes(b, 0)
	if err != nil {
		return positioned(path, err)
	}
	if len(file.Docs) == 0 || file.Docs[0].Body == nil {
		return nil
	}
	body := file.Docs[0].Body
	ast.Walk(visitor{src}, body)
	walkDurations(path, body, reflect.TypeOf(Config{}), errs)
	if err := yaml.NodeToValue(body, cfg, yaml.DisallowUnknownField()); err != nil {
		return positioned(path, err)
	}
	return nil
}

// positioned turns a go-yaml error into "file:line:col: message".
func positioned(path string, err error) error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			return fmt.Errorf("%s:%d:%d: %s", path, tk.Position.Line, tk.Position.Column, ye.GetMessage())
		}
	}
	return fmt.Errorf("%s: %w", path, err)
}

// applyEnv overrides scalar fields from MCS_* variables (see the env tags in config.go). It
// returns, for each key a variable set, "environment NAME", which is where a problem with
// that key's value comes from.
func applyEnv(cfg *Config, getenv func(string) string, errs *ErrorList) map[string]string {
	environ := map[string]string{}
	paths := map[string]string{}
	collectEnvNames(reflect.TypeOf(*cfg), "", func(name, path string) {
		if v := getenv(name); v != "" {
			environ[name] = v
			paths[path] = "environment " + name
		}
	})
	if err := env.ParseWithOptions(cfg, env.Options{Environment: environ}); err != nil {
		*errs = append(*errs, fmt.Errorf("environment: %w", err))
	}
	return paths
}

// collectEnvNames walks the struct for env tags, so only the variables we read are looked up
// through getenv (tests pass a map; production passes os.Getenv). path is the key's YAML path.
func collectEnvNames(t reflect.Type, prefix string, visit func(name, path string)) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		path := key
		if prefix != "" {
			path = prefix + "." + key
		}
		if name := f.Tag.Get("env"); name != "" {
			visit(name, path)
		}
		ft := f.Type
		if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Time{}) {
			collectEnvNames(ft, path, visit)
		}
	}
}

// ErrorList is every problem of a configuration, reported together.
type ErrorList []error

func (l ErrorList) Error() string {
	var b bytes.Buffer
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.Is/As look into every problem.
func (l ErrorList) Unwrap() []error { return l }
