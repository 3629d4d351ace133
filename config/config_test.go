package config

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

var fullEnv = map[string]string{
	"TEST_REDIS_PASSWORD": "redis-pw",
	"TEST_TOKEN_OLD":      "tok-old",
	"TEST_TOKEN_NEW":      "tok-new",
	"TEST_PARAMS_KEY":     "z&aH+&Kz8saC",
	"TEST_HUBSPOT_TOKEN":  "pat-na1-secret",
}

func TestLoadEmbeddedDefault(t *testing.T) {
	cfg, err := Load("", envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Redis.Embedded() {
		t.Error("no redis configured, want the embedded one")
	}
	if len(cfg.Routes) != 1 || cfg.Routes[0].Name != "default" || !cfg.Routes[0].Auth.Insecure {
		t.Errorf("routes = %+v, want one open route named default", cfg.Routes)
	}
	if cfg.Server.Listen != ":8080" || cfg.Server.MaxBodyBytes != 10<<20 || cfg.Queue.DedupeWindow != 24*time.Hour {
		t.Errorf("defaults changed: %+v %+v", cfg.Server, cfg.Queue)
	}
}

func TestLoadFullFileAndEnvOverride(t *testing.T) {
	env := map[string]string{"MCS_LOG_LEVEL": "warn", "MCS_WORKER_CONCURRENCY": "16", "MCS_REDIS_URL": "redis://other:6379/0"}
	for k, v := range fullEnv {
		env[k] = v
	}
	cfg, err := Load("testdata/full.yaml", envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Level != "warn" || cfg.Log.Format != "text" {
		t.Errorf("log = %+v: env must override the file, the file the defaults", cfg.Log)
	}
	if cfg.Worker.Concurrency != 16 || cfg.Redis.URL != "redis://other:6379/0" {
		t.Errorf("env overrides not applied: concurrency=%d url=%s", cfg.Worker.Concurrency, cfg.Redis.URL)
	}
	if cfg.Queue.DedupeWindow != 12*time.Hour || cfg.Queue.Name != "calls" || cfg.Queue.MaxRetry != 25 {
		t.Errorf("queue = %+v", cfg.Queue)
	}
	a := cfg.Routes[0].Auth
	got := []string{a.Bearer[0].Value(), a.Bearer[1].Value(), a.Basic[0].Password.Value(), a.Headers[0].Value.Value(), a.Payload[0].Value.Value()}
	want := []string{"tok-old", "tok-new", "s3cret-basic", "tok-new", "z&aH+&Kz8saC"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("secrets (-want +got):\n%s", d)
	}
	if cfg.Redis.Password.Value() != "redis-pw" {
		t.Error("redis password not resolved")
	}
}

func TestDumpMasksSecrets(t *testing.T) {
	cfg, err := Load("testdata/full.yaml", envMap(fullEnv))
	if err != nil {
		t.Fatal(err)
	}
	dump := cfg.Dump()
	for name, v := range fullEnv {
		if strings.Contains(dump, v) {
			t.Errorf("dump contains the value of %s", name)
		}
	}
	if strings.Contains(dump, "s3cret-basic") {
		t.Error("dump contains the file secret")
	}
	if !strings.Contains(dump, "env:TEST_TOKEN_OLD(***)") {
		t.Errorf("dump should name where a secret comes from, masked: %s", dump)
	}
}

func TestLoadErrorsArePositioned(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown key", "server:\n  listen: ':1'\n  lisen: ':2'\n", "cfg.yaml:3:3: unknown field \"lisen\""},
		{"literal secret", "redis:\n  url: redis://r:6379\n  password: hunter2\n", "cfg.yaml:3:13: secrets must not be written in the config file"},
		{"unknown secret key", "redis:\n  password: {value: x}\n", "cfg.yaml:2:14: unknown secret key \"value\""},
		{"both env and file", "redis:\n  password: {env: A, file: /b}\n", "cfg.yaml:2:13: a secret names exactly one of env or file"},
		{"wrong type", "worker:\n  concurrency: many\n", "cfg.yaml:2:16:"},
		{"bad duration", "queue:\n  dedupe_window: forever\n", "cfg.yaml:2:18:"},
		{"duplicate key", "log:\n  level: info\n  level: warn\n", "cfg.yaml:3:3:"},
		{"negative ack_replicas", "redis:\n  ack_replicas: -1\n", "cfg.yaml:2:17: want auto or a number of replicas"},
		{"ack_replicas word", "redis:\n  ack_replicas: all\n", "cfg.yaml:2:17: want auto or a number of replicas"},
		{"ack_timeout past the enqueue timeout", "server: {enqueue_timeout: 1s}\nredis:\n  ack_timeout: 2s\n", "cfg.yaml:3:16: redis.ack_timeout: must be below server.enqueue_timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cfg.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path, envMap(nil))
			if err == nil {
				t.Fatal("no error")
			}
			msg := strings.TrimPrefix(err.Error(), filepath.Dir(path)+"/")
			if !strings.HasPrefix(msg, tc.want) {
				t.Errorf("error = %q, want prefix %q", msg, tc.want)
			}
		})
	}
}

// redis.ack_replicas: auto by default, a number, or auto from the environment; the effective
// configuration shows "auto", not -1.
func TestAckReplicas(t *testing.T) {
	load := func(yaml string, env map[string]string) *Config {
		t.Helper()
		path := filepath.Join(t.TempDir(), "cfg.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path, envMap(env))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if c := load("routes: [{name: open, auth: {insecure: true}}]\n", nil); c.Redis.AckReplicas != AckAuto || c.Redis.AckTimeout != 300*time.Millisecond {
		t.Errorf("defaults: %v %v, want auto 300ms", c.Redis.AckReplicas, c.Redis.AckTimeout)
	}
	if c := load("routes: [{name: open, auth: {insecure: true}}]\nredis: {ack_replicas: 2, ack_timeout: 1s}\n", nil); c.Redis.AckReplicas != 2 || c.Redis.AckTimeout != time.Second {
		t.Errorf("set: %v %v", c.Redis.AckReplicas, c.Redis.AckTimeout)
	}
	if c := load("routes: [{name: open, auth: {insecure: true}}]\nredis: {ack_replicas: 0}\n", nil); c.Redis.AckReplicas != 0 {
		t.Errorf("0: %v", c.Redis.AckReplicas)
	}
	c := load("routes: [{name: open, auth: {insecure: true}}]\nredis: {ack_replicas: 1}\n", map[string]string{"MCS_REDIS_ACK_REPLICAS": "auto"})
	if c.Redis.AckReplicas != AckAuto {
		t.Errorf("from the environment: %v", c.Redis.AckReplicas)
	}
	b, _ := json.Marshal(c.Redis)
	if !strings.Contains(string(b), `"ack_replicas":"auto"`) {
		t.Errorf("effective config: %s", b)
	}
}

func TestValidateReportsEverythingAtOnce(t *testing.T) {
	src := `
log: {level: loud, format: xml}
server: {listen: "nope", trusted_proxies: [10.0.0.1]}
redis: {url: "http://x", cluster: {addrs: ["a:1"]}}
worker: {concurrency: 0}
routes:
  - name: Sales Team
    connection: missing
  - name: open
    auth: {allow_cidrs: [1.2.3.4], payload: [{key: call, value: {env: NOPE}}]}
connections:
  - name: sf
    type: salesforce
    salesforce: {flow: magic}
  - name: x
    type: pipedrive
`
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, envMap(nil))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`log.level: "loud"`, `log.format: "xml"`, `server.listen: "nope"`,
		`server.trusted_proxies[0]: "10.0.0.1" is not a CIDR`,
		`redis.url: scheme "http"`, "redis: set only one of url, sentinel or cluster",
		"worker.concurrency: must be at least 1",
		`routes[0].name: "Sales Team"`, `routes[0].connection: "missing"`,
		"routes[0].auth: no credential configured",
		`routes[1].auth.allow_cidrs[0]: "1.2.3.4" is not a CIDR`,
		`routes[1].auth.payload[0].key: "call" cannot be used`,
		"routes[1].auth.payload[0].value: environment variable NOPE is empty or unset",
		"connections[0].salesforce.login_url: required", "connections[0].salesforce.client_id: required",
		"connections[0].salesforce.external_id_field: required", `connections[0].salesforce.flow: "magic"`,
		`connections[1].type: "pipedrive"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestRedisOptions(t *testing.T) {
	cases := []struct {
		name    string
		r       Redis
		addrs   []string
		master  string
		cluster bool
		tls     bool
		db      int
	}{
		{"url", Redis{URL: "redis://r:6379/3"}, []string{"r:6379"}, "", false, false, 3},
		{"tls url", Redis{URL: "rediss://r:6380"}, []string{"r:6380"}, "", false, true, 0},
		{"sentinel", Redis{Sentinel: Sentinel{MasterName: "mymaster", Addrs: []string{"s1:26379", "s2:26379"}}}, []string{"s1:26379", "s2:26379"}, "mymaster", false, false, 0},
		{"cluster tls", Redis{Cluster: Cluster{Addrs: []string{"c1:6379"}}, TLS: TLS{Enabled: true}}, []string{"c1:6379"}, "", true, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := tc.r.UniversalOptions()
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.addrs, o.Addrs); d != "" || o.MasterName != tc.master || o.IsClusterMode != tc.cluster || (o.TLSConfig != nil) != tc.tls || o.DB != tc.db || !o.ContextTimeoutEnabled {
				t.Errorf("options = addrs %v master %q cluster %v tls %v db %d context timeouts %v", o.Addrs, o.MasterName, o.IsClusterMode, o.TLSConfig != nil, o.DB, o.ContextTimeoutEnabled)
			}
		})
	}
}

// The shipped example must stay loadable: admins copy it.
func TestExampleConfigLoads(t *testing.T) {
	env := map[string]string{"REDIS_PASSWORD": "x", "MIITEL_TOKEN": "t", "MIITEL_PARAMS_KEY": "p", "HUBSPOT_TOKEN": "h"}
	cfg, err := Load("../examples/config.yaml", envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Redis.Embedded() || len(cfg.Routes) != 1 || cfg.Routes[0].Connection != "hubspot" {
		t.Errorf("unexpected example config: %s", cfg.Dump())
	}
}

func TestDumpWritesDurationsReadably(t *testing.T) {
	cfg, err := Load("", envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	dump := cfg.Dump()
	for _, want := range []string{`"shutdown_timeout":"20s"`, `"dedupe_window":"24h0m0s"`, `"state_ttl":"168h0m0s"`} {
		if !strings.Contains(dump, want) {
			t.Errorf("dump lacks %s:\n%s", want, dump)
		}
	}
}

// The receiver resolves webhook credentials but no CRM secret, the worker the reverse, so
// each pod needs only its own secrets in its environment.
func TestLoadForResolvesOnlyTheRolesSecrets(t *testing.T) {
	receiverEnv := map[string]string{"TEST_REDIS_PASSWORD": "r", "TEST_TOKEN_OLD": "a", "TEST_TOKEN_NEW": "b", "TEST_PARAMS_KEY": "p"}
	cfg, err := LoadFor("testdata/full.yaml", envMap(receiverEnv), Role{Receiver: true})
	if err != nil {
		t.Fatalf("receiver without CRM secrets: %v", err)
	}
	if cfg.Routes[0].Auth.Bearer[0].Value() != "a" || cfg.Connections[0].HubSpot.PrivateAppToken.Value() != "" {
		t.Error("receiver resolved the wrong secrets")
	}
	workerEnv := map[string]string{"TEST_REDIS_PASSWORD": "r", "TEST_HUBSPOT_TOKEN": "h"}
	cfg, err = LoadFor("testdata/full.yaml", envMap(workerEnv), Role{Worker: true})
	if err != nil {
		t.Fatalf("worker without webhook secrets: %v", err)
	}
	if cfg.Connections[0].HubSpot.PrivateAppToken.Value() != "h" || cfg.Routes[0].Auth.Bearer[0].Value() != "" {
		t.Error("worker resolved the wrong secrets")
	}
	if _, err := LoadFor("testdata/full.yaml", envMap(workerEnv), RoleAll); err == nil || !strings.Contains(err.Error(), "TEST_TOKEN_OLD") {
		t.Errorf("serve needs every secret: err = %v", err)
	}
}

// Problems are listed in the order of the config's fields, the same on every run, so an
// admin comparing two runs (or a CI log) sees what changed.
func TestValidateOrderIsStable(t *testing.T) {
	cfg := Default()
	cfg.Routes = []Route{defaultRoute()}
	cfg.Server.ReadHeaderTimeout, cfg.Server.ReadTimeout, cfg.Server.WriteTimeout = 0, 0, 0
	cfg.Server.IdleTimeout, cfg.Server.EnqueueTimeout, cfg.Server.ShutdownTimeout, cfg.Server.RetryAfter = 0, 0, 0, 0
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	var got []string
	for _, line := range strings.Split(err.Error(), "\n") {
		name, _, _ := strings.Cut(line, ":")
		got = append(got, name)
	}
	want := []string{"server.read_header_timeout", "server.read_timeout", "server.write_timeout", "server.idle_timeout",
		"server.enqueue_timeout", "server.shutdown_timeout", "server.retry_after"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("problems (-want +got):\n%s", d)
	}
}

// A Secret handed to slog is resolved to its masked form before any handler sees it.
func TestSecretLogValueIsMasked(t *testing.T) {
	s := FromValue("hunter2")
	v := slog.AnyValue(s).Resolve()
	if v.Kind() != slog.KindString || v.String() != "***" {
		t.Errorf("slog value %v (%s), want the masked string", v, v.Kind())
	}
	var buf strings.Builder
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "password", s, "in_struct", struct{ P Secret }{s})
	if strings.Contains(buf.String(), "hunter2") {
		t.Errorf("log holds the secret: %s", buf.String())
	}
}
