package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/goccy/go-yaml"
)

// Default is the configuration before any file or environment is applied: the embedded
// default that `serve` runs with no config file (in-process Redis, one open route named
// "default", dry-run CRM).
func Default() *Config {
	return &Config{
		Log: Log{Level: "info", Format: "json"},
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
		},
		Redis: Redis{
			DialTimeout:  2 * time.Second,
			ReadTimeout:  3 * time.Second,
			WriteTimeout: 3 * time.Second,
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
			MetricsListen:   ":9090",
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
// empty), then environment variables, then the role's secrets are resolved and Validate
// runs. Every problem found is returned at once as an ErrorList. Secrets outside the role
// stay unresolved (their Value is empty).
func LoadFor(path string, getenv func(string) string, role Role) (*Config, error) {
	cfg := Default()
	if path != "" {
		src, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := decodeYAML(path, src, cfg); err != nil {
			return nil, err
		}
		cfg.Source = path
	}
	if len(cfg.Routes) == 0 && path == "" {
		cfg.Routes = []Route{defaultRoute()}
	}
	if err := applyEnv(cfg, getenv); err != nil {
		return nil, err
	}
	var errs ErrorList
	cfg.resolveSecrets(getenv, role, &errs)
	cfg.validate(&errs)
	if len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

// decodeYAML decodes strictly: an unknown key, a wrong type or a duplicate key is an error
// naming file:line:col.
func decodeYAML(path string, src []byte, cfg *Config) error {
	if len(bytes.TrimSpace(src)) == 0 {
		return nil
	}
	if errs := checkDurations(path, src); len(errs) > 0 {
		return errs
	}
	dec := yaml.NewDecoder(bytes.NewReader(src), yaml.DisallowUnknownField())
	if err := dec.Decode(cfg); err != nil {
		return ErrorList{positioned(path, err)}
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

// applyEnv overrides scalar fields from MCS_* variables (see the env tags in config.go).
func applyEnv(cfg *Config, getenv func(string) string) error {
	environ := map[string]string{}
	collectEnvNames(reflect.TypeOf(*cfg), func(name string) {
		if v := getenv(name); v != "" {
			environ[name] = v
		}
	})
	if err := env.ParseWithOptions(cfg, env.Options{Environment: environ}); err != nil {
		return ErrorList{fmt.Errorf("environment: %w", err)}
	}
	return nil
}

// collectEnvNames walks the struct for env tags, so only the variables we read are looked up
// through getenv (tests pass a map; production passes os.Getenv).
func collectEnvNames(t reflect.Type, visit func(string)) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name := f.Tag.Get("env"); name != "" {
			visit(name)
		}
		ft := f.Type
		if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Time{}) {
			collectEnvNames(ft, visit)
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

// Dump is the resolved configuration as JSON with every secret masked and durations
// written as Go durations ("20s"), for the start-up log and `miitel-crm-sync config`.
func (c *Config) Dump() string {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Sprintf("config: dump: %v", err)
	}
	var tree any
	if err := json.Unmarshal(b, &tree); err != nil {
		return string(b)
	}
	humanDurations(tree, reflect.TypeOf(*c))
	if b, err = json.Marshal(tree); err != nil {
		return fmt.Sprintf("config: dump: %v", err)
	}
	return string(b)
}

// humanDurations rewrites, in the decoded JSON tree, every value whose Go field is a
// time.Duration from nanoseconds to its String form.
func humanDurations(node any, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n := node.(type) {
	case map[string]any:
		if t.Kind() != reflect.Struct {
			return
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			v, ok := n[name]
			if !ok {
				continue
			}
			if f.Type == durationType {
				if ns, ok := v.(float64); ok {
					n[name] = time.Duration(ns).String()
				}
				continue
			}
			humanDurations(v, f.Type)
		}
	case []any:
		if t.Kind() == reflect.Slice {
			for _, e := range n {
				humanDurations(e, t.Elem())
			}
		}
	}
}
