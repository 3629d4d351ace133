package config

import (
	"strings"
	"testing"
	"time"
)

var opsEnv = map[string]string{
	"TEST_TOKEN_OLD": "t", "TEST_HUBSPOT_TOKEN": "h",
	"TEST_ADMIN_RW": "rw-token", "TEST_ADMIN_RO": "ro-token", "TEST_ADMIN_BASIC": "pw", "TEST_PHONE_KEY": "k",
}

func TestOpsSectionsLoad(t *testing.T) {
	cfg, err := Load("testdata/ops.yaml", envMap(opsEnv))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Ops.Listen != ":9091" || !cfg.Ops.MetricsAuth {
		t.Errorf("ops = %+v", cfg.Ops)
	}
	a := cfg.Admin
	if len(a.Tokens) != 2 || a.Tokens[0].Token.Value() != "rw-token" || a.Tokens[0].Role != RoleReadWrite || a.Tokens[1].Role != RoleReadOnly {
		t.Errorf("admin tokens = %+v", a.Tokens)
	}
	if len(a.Basic) != 1 || a.Basic[0].Password.Value() != "pw" {
		t.Errorf("admin basic = %+v", a.Basic)
	}
	if cfg.Status.Retention != 240*time.Hour || cfg.Status.MaxRecords != 5000 || cfg.Status.TimeZone != "Asia/Tokyo" ||
		!cfg.Status.PhoneSearch.Enabled || cfg.Status.PhoneSearch.Secret.Value() != "k" {
		t.Errorf("status = %+v", cfg.Status)
	}
	if cfg.DeadLetter.Retention != 8760*time.Hour || cfg.DeadLetter.MaxEntries != 1000 || cfg.DeadLetter.MaxBytes != 16<<20 {
		t.Errorf("dead_letter = %+v", cfg.DeadLetter)
	}
	if !strings.Contains(cfg.Connections[0].RecordURL, "1234567") {
		t.Errorf("record_url = %q", cfg.Connections[0].RecordURL)
	}
	if d := cfg.Dump(); strings.Contains(d, "rw-token") || strings.Contains(d, "ro-token") {
		t.Errorf("dump shows an admin token: %s", d)
	}
}

func TestOpsDefaults(t *testing.T) {
	d := Default()
	if d.Ops.Listen != ":9090" || d.Ops.MetricsAuth || d.Ops.Pprof {
		t.Errorf("ops defaults = %+v", d.Ops)
	}
	if d.DeadLetter.Retention < 365*24*time.Hour {
		t.Errorf("dead_letter.retention = %v, want at least a year", d.DeadLetter.Retention)
	}
	if d.DeadLetter.MaxEntries <= 0 || d.DeadLetter.MaxBytes <= 0 || d.Status.MaxRecords <= 0 || d.Status.Retention <= 0 {
		t.Errorf("unbounded defaults: %+v %+v", d.DeadLetter, d.Status)
	}
}

// Only a process that serves the admin API needs its credentials: a worker started without
// them in its environment must not fail.
func TestAdminSecretsOnlyForTheAdminRole(t *testing.T) {
	env := map[string]string{"TEST_HUBSPOT_TOKEN": "h", "TEST_PHONE_KEY": "k"}
	cfg, err := LoadFor("testdata/ops.yaml", envMap(env), Role{Worker: true})
	if err != nil {
		t.Fatalf("worker without admin secrets: %v", err)
	}
	if cfg.Admin.Tokens[0].Token.Value() != "" {
		t.Error("a worker resolved the admin tokens")
	}
	if _, err := LoadFor("testdata/ops.yaml", envMap(env), Role{Admin: true}); err == nil || !strings.Contains(err.Error(), "admin.tokens[0].token") {
		t.Errorf("admin role without its secrets: err = %v", err)
	}
}

func TestOpsValidation(t *testing.T) {
	cfg := Default()
	cfg.Routes = []Route{defaultRoute()}
	cfg.Ops.Listen = "nine"
	cfg.Admin.Tokens = []AdminToken{{Role: "admin"}}
	cfg.Admin.Basic = []AdminBasic{{Username: "a:b", Password: FromValue("x"), Role: RoleReadOnly}}
	cfg.Status.Retention = 0
	cfg.Status.MaxRecords = 0
	cfg.Status.TimeZone = "Mars/Olympus"
	cfg.Status.PhoneSearch.Enabled = true
	cfg.DeadLetter.MaxEntries = 0
	cfg.DeadLetter.MaxBytes = 10
	cfg.Connections = []Connection{{Name: "dry", Type: "dryrun", RecordURL: "https://crm.example/records/"}}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"ops.listen", "admin.tokens[0].token: required", `admin.tokens[0].role: "admin"`, "admin.basic[0].username",
		"status.retention", "status.max_records", "status.time_zone", "status.phone_search.secret",
		"dead_letter.max_entries", "dead_letter.max_bytes", "connections[0].record_url",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

// worker.metrics_listen is deprecated for ops.listen: unset by default and absent from the
// effective configuration, it still moves the ops listener where an old file sets it.
func TestDeprecatedMetricsListen(t *testing.T) {
	cfg, err := Load("", envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Dump(); strings.Contains(d, "metrics_listen") {
		t.Errorf("the effective configuration shows the deprecated worker.metrics_listen:\n%s", d)
	}
	if cfg.Ops.Listen != ":9090" {
		t.Errorf("ops.listen = %q, want the default :9090", cfg.Ops.Listen)
	}
	cfg, err = Load("", envMap(map[string]string{"MCS_WORKER_METRICS_LISTEN": ":9191"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Ops.Listen != ":9191" {
		t.Errorf("ops.listen = %q, want :9191 from the deprecated worker.metrics_listen", cfg.Ops.Listen)
	}
	if d := cfg.Dump(); !strings.Contains(d, "metrics_listen") {
		t.Errorf("a set worker.metrics_listen is missing from the effective configuration:\n%s", d)
	}
}
