package config

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func writeTemp(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cfg.yaml")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// problems returns the lines of a Load error with the temp directory cut off.
func problems(t *testing.T, path string, err error) []string {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		out = append(out, strings.TrimPrefix(line, filepath.Dir(path)+"/"))
	}
	return out
}

// A literal secret used to stop decoding, hiding everything after it. Now one load reports
// the secret, the duplicate route and the unknown connection together, each where it is.
func TestLoadReportsEveryProblemAtOnce(t *testing.T) {
	path := writeTemp(t, `redis:
  url: redis://r:6379
  password: hunter2
queue:
  dedupe_window: forever
routes:
  - name: sales
    auth: {bearer: [{env: T}]}
  - name: sales
    connection: nope
    auth: {bearer: [{env: T}]}
`)
	_, err := Load(path, envMap(map[string]string{"T": "x"}))
	want := []string{
		`cfg.yaml:5:18: "forever" is not a duration (use e.g. 30s, 5m, 24h)`,
		"cfg.yaml:3:13: secrets must not be written in the config file: use {env: NAME} or {file: PATH}",
		`cfg.yaml:9:11: routes[1].name: "sales" is used twice`,
		`cfg.yaml:10:17: routes[1].connection: "nope" is not a configured connection`,
	}
	if d := cmp.Diff(want, problems(t, path, err)); d != "" {
		t.Errorf("problems (-want +got):\n%s", d)
	}
}

// A problem with a key the file does not hold is placed at the nearest key it does hold; a
// value set by an environment variable is blamed on the variable, not on the file.
func TestLoadPlacesProblemsOnTheirKeyOrVariable(t *testing.T) {
	path := writeTemp(t, "log:\n  level: info\nroutes:\n  - name: open\n")
	_, err := Load(path, envMap(map[string]string{"MCS_LOG_LEVEL": "loud"}))
	want := []string{
		`environment MCS_LOG_LEVEL: log.level: "loud" is not one of debug, info, warn, error`,
		"cfg.yaml:4:5: routes[0].auth: no credential configured; add bearer, basic, headers or payload (MiiTel's additional headers/payload)",
	}
	if d := cmp.Diff(want, problems(t, path, err)); d != "" {
		t.Errorf("problems (-want +got):\n%s", d)
	}
}

// `config` shows what the service runs with: the vendors' limits and the cache TTLs the
// connectors would otherwise fill in out of sight.
func TestLoadFillsVendorDefaults(t *testing.T) {
	path := writeTemp(t, `routes: [{name: a, auth: {insecure: true}}]
connections:
  - name: private
    type: hubspot
    hubspot: {private_app_token: {env: HS}}
  - name: oauth
    type: hubspot
    hubspot: {client_id: id, client_secret: {env: HS}}
  - name: sf
    type: salesforce
    salesforce: {login_url: "https://acme.my.salesforce.com/", flow: jwt, client_id: id, username: u, private_key: {env: HS}, external_id_field: X__c}
  - name: tuned
    type: salesforce
    salesforce: {login_url: "https://acme.my.salesforce.com", flow: client_credentials, client_id: id, client_secret: {env: HS}, external_id_field: X__c, api_version: "60.0"}
    rate_limit: {requests: 5000}
    lookup_ttl: 1h
  - name: dry
    type: dryrun
`)
	cfg, err := Load(path, envMap(map[string]string{"HS": "x"}))
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		RateLimit          RateLimit
		LookupTTL, MissTTL time.Duration
	}
	want := map[string]got{
		"private": {RateLimit{HubSpotPrivateAppRequests, 10 * time.Second, 5}, 24 * time.Hour, 5 * time.Minute},
		"oauth":   {RateLimit{HubSpotOAuthRequests, 10 * time.Second, 5}, 24 * time.Hour, 5 * time.Minute},
		"sf":      {RateLimit{100_000, 24 * time.Hour, 0}, 24 * time.Hour, 5 * time.Minute},
		"tuned":   {RateLimit{5000, 24 * time.Hour, 0}, time.Hour, 5 * time.Minute},
		"dry":     {},
	}
	for _, cn := range cfg.Connections {
		if d := cmp.Diff(want[cn.Name], got{cn.RateLimit, cn.LookupTTL, cn.MissTTL}); d != "" {
			t.Errorf("%s (-want +got):\n%s", cn.Name, d)
		}
	}
	h := cfg.Connections[1].HubSpot
	if h.BaseURL != HubSpotBaseURL || h.TokenURL != HubSpotTokenURL || h.AuthURL != HubSpotAuthURL || len(h.Scopes) != 3 {
		t.Errorf("hubspot endpoints not filled: %+v", h)
	}
	sf := cfg.Connections[2].Salesforce
	if sf.TokenURL != "https://acme.my.salesforce.com/services/oauth2/token" || sf.AuthURL != "https://acme.my.salesforce.com/services/oauth2/authorize" ||
		sf.Audience != "https://acme.my.salesforce.com" || sf.APIVersion != SalesforceAPIVersion || sf.RequestLimitWait != 15*time.Minute {
		t.Errorf("salesforce defaults not filled: %+v", sf)
	}
	if v := cfg.Connections[3].Salesforce; v.APIVersion != "v60.0" || v.Audience != "" {
		t.Errorf("api_version %q (want v60.0), audience %q (only for jwt)", v.APIVersion, v.Audience)
	}
	for _, want := range []string{`"rate_limit":{"requests":100,"per":"10s","search_per_second":5}`, `"lookup_ttl":"24h0m0s","miss_ttl":"5m0s"`} {
		if !strings.Contains(cfg.Dump(), want) {
			t.Errorf("dump lacks %s", want)
		}
	}
}

func TestLoadChecksTheLogFormatAndOwnerEmail(t *testing.T) {
	cfg, err := Load("", envMap(nil))
	if err != nil || cfg.Log.Format != "auto" {
		t.Fatalf("default log.format = %q, %v; want auto", cfg.Log.Format, err)
	}
	for _, f := range []string{"auto", "json", "text"} {
		if _, err := Load("", envMap(map[string]string{"MCS_LOG_FORMAT": f})); err != nil {
			t.Errorf("log.format %s: %v", f, err)
		}
	}
	for email, ok := range map[string]bool{"rep@example.com": true, "a.b+c@sub.example.co.jp": true,
		"rep": false, "rep@localhost": false, "Rep <rep@example.com>": false, "rep@example.com ": false} {
		path := writeTemp(t, "routes: [{name: a, auth: {insecure: true}}]\nconnections: [{name: d, type: dryrun, check: {owner_email: \""+email+"\"}}]\n")
		_, err := Load(path, envMap(nil))
		if (err == nil) != ok {
			t.Errorf("owner_email %q: err %v, want ok=%v", email, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "cfg.yaml:2:60: connections[0].check.owner_email: ") {
			t.Errorf("owner_email %q: %v", email, err)
		}
	}
}

// The start-up dump is a nested object in a JSON log, not an escaped string, and in a text
// log one readable line per section.
func TestConfigLogsReadably(t *testing.T) {
	cfg, err := Load("testdata/full.yaml", envMap(fullEnv))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", cfg)
	var line struct {
		Config struct {
			Server struct {
				Listen string `json:"listen"`
			} `json:"server"`
			Routes []struct {
				Auth struct {
					Bearer []string `json:"bearer"`
				} `json:"auth"`
			} `json:"routes"`
			Worker map[string]any `json:"worker"`
		} `json:"config"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, buf.String())
	}
	if line.Config.Server.Listen != "127.0.0.1:9999" || line.Config.Worker["shutdown_timeout"] != "20s" ||
		len(line.Config.Routes) != 1 || line.Config.Routes[0].Auth.Bearer[0] != "env:TEST_TOKEN_OLD(***)" {
		t.Errorf("config is not a nested object with readable values:\n%s", buf.String())
	}
	if strings.Contains(buf.String(), "tok-old") {
		t.Error("the JSON log holds a secret")
	}

	buf.Reset()
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	for _, s := range cfg.Sections() {
		log.Info("configuration", append([]any{"section", s.Name}, attrsAny(s.Attrs)...)...)
	}
	text := buf.String()
	for _, want := range []string{
		"level=INFO msg=configuration section=server listen=127.0.0.1:9999 max_body_bytes=2097152 read_header_timeout=10s",
		"section=redis url=rediss://redis.example:6380/2 username=\"\" password=env:TEST_REDIS_PASSWORD(***) sentinel.master_name=\"\"",
		"section=routes[0] name=sales mapping=/etc/miitel-crm-sync/mappings/hubspot.yaml connection=hubspot-main auth.bearer=\"[env:TEST_TOKEN_OLD(***) env:TEST_TOKEN_NEW(***)]\"",
		"auth.basic=\"[{username=miitel password=file:testdata/basic-password.txt(***)}]\"",
		"section=connections[0] name=hubspot-main type=hubspot hubspot.base_url=https://api.hubapi.com",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text log lacks %q:\n%s", want, text)
		}
	}
	// log server redis queue worker routes[0] connections[0] ops admin status dead_letter source
	if n := strings.Count(text, "\n"); n != 12 {
		t.Errorf("%d lines, want one per section:\n%s", n, text)
	}
}

func attrsAny(as []slog.Attr) []any {
	out := make([]any, len(as))
	for i, a := range as {
		out[i] = a
	}
	return out
}
