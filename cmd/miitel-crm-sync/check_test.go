package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// fakeChecker is a connector whose connection check answers what the test says. The real
// connectors' Check methods talk to the CRMs (tested with their fakes in their packages);
// here what matters is everything around them.
type fakeChecker struct {
	mu    sync.Mutex
	calls []crm.CheckOptions
	// answer returns the lines of the n-th call (0-based).
	answer func(ctx context.Context, n int) []crm.CheckResult
}

func (f *fakeChecker) Deliver(context.Context, *mappers.Record) (crm.Result, error) {
	return crm.Result{}, fmt.Errorf("fake: not for delivery")
}

func (f *fakeChecker) Check(ctx context.Context, o crm.CheckOptions) []crm.CheckResult {
	f.mu.Lock()
	n := len(f.calls)
	f.calls = append(f.calls, o)
	f.mu.Unlock()
	return f.answer(ctx, n)
}

func (f *fakeChecker) options() []crm.CheckOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]crm.CheckOptions(nil), f.calls...)
}

// fakeConnectors builds the named connections' connectors from fakes and every other
// connection (the dry run) as the worker does.
func fakeConnectors(fakes map[string]crm.Connector) connectorBuilder {
	return func(ctx context.Context, cfg *config.Config, cn config.Connection, rdb redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer, out io.Writer) (crm.Connector, error) {
		if c, ok := fakes[cn.Name]; ok {
			return c, nil
		}
		return newConnector(ctx, cfg, cn, rdb, log, reg, out)
	}
}

func runWith(t *testing.T, env *environment, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env.stdout, env.stderr, env.stdin = &out, &errb, strings.NewReader("")
	if env.getenv == nil {
		env.getenv = func(string) string { return "" }
	}
	code := run(context.Background(), env, args)
	return code, out.String(), errb.String()
}

func answers(lines ...crm.CheckResult) func(context.Context, int) []crm.CheckResult {
	return func(context.Context, int) []crm.CheckResult { return lines }
}

const checkConfig = `routes:
  - {name: sales, connection: hs, auth: {insecure: true}}
  - {name: support, connection: sf, auth: {insecure: true}}
connections:
  - name: hs
    type: hubspot
    hubspot: {private_app_token: {env: HS}, unique_property: miitel_detail_id}
    check: {owner_email: rep@example.com}
  - name: sf
    type: salesforce
    salesforce: {login_url: "https://acme.my.salesforce.com", flow: client_credentials, client_id: id, client_secret: {env: SF}, external_id_field: MiiTel_Detail_Id__c}
  - name: dry
    type: dryrun
`

var checkEnv = envOf(map[string]string{"HS": "pat", "SF": "secret"})

func TestCheckCommand(t *testing.T) {
	cfg := writeConfig(t, checkConfig)
	hs := &fakeChecker{answer: answers(
		crm.CheckResult{Connection: "hs", Name: crm.CheckToken, Status: crm.CheckPass, Detail: "private-app token accepted"},
		crm.CheckResult{Connection: "hs", Name: crm.CheckRecordKey, Status: crm.CheckFail, Detail: "call property miitel_detail_id does not exist",
			Fix: "create the call property miitel_detail_id with hasUniqueValue: true (docs/crm-hubspot.md)"},
	)}
	sf := &fakeChecker{answer: answers(
		crm.CheckResult{Name: crm.CheckToken, Status: crm.CheckUnknown, Detail: "login.salesforce.com unreachable"}, // no Connection: filled in
	)}
	env := &environment{getenv: checkEnv, connectors: fakeConnectors(map[string]crm.Connector{"hs": hs, "sf": sf})}
	code, stdout, stderr := runWith(t, env, "check", "--config", cfg)
	if code != exitFailure || stderr != "miitel-crm-sync check: 1 check(s) failed\n" {
		t.Errorf("exit %d, stderr %q; want 1 and one line", code, stderr)
	}
	want := `pass     hs   token       private-app token accepted
FAIL     hs   record_key  call property miitel_detail_id does not exist
                          fix: create the call property miitel_detail_id with hasUniqueValue: true (docs/crm-hubspot.md)
unknown  sf   token       login.salesforce.com unreachable
skip     dry  connector   this connector has no check
1 passed, 1 failed, 1 unknown, 1 skipped
`
	if d := cmp.Diff(want, stdout); d != "" {
		t.Errorf("output (-want +got):\n%s", d)
	}
	// Each connection is checked for its own record key and the configured owner e-mail.
	if d := cmp.Diff([]crm.CheckOptions{{RecordKeys: []string{"miitel_detail_id"}, OwnerEmail: "rep@example.com"}}, hs.options()); d != "" {
		t.Errorf("hubspot check options (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]crm.CheckOptions{{RecordKeys: []string{"MiiTel_Detail_Id__c"}}}, sf.options()); d != "" {
		t.Errorf("salesforce check options (-want +got):\n%s", d)
	}

	code, stdout, _ = runWith(t, env, "check", "--config", cfg, "--json")
	var got []map[string]string
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || code != exitFailure || len(got) != 4 {
		t.Fatalf("--json: exit %d, %v\n%s", code, err, stdout)
	}
	if got[1]["status"] != "fail" || got[1]["fix"] == "" || got[2]["status"] != "unknown" || got[2]["connection"] != "sf" || got[3]["status"] != "skip" {
		t.Errorf("--json lines: %v", got)
	}
}

// Unknown (the CRM could not be asked) is printed but is not a failure: exit 0.
func TestCheckUnknownIsNotAFailure(t *testing.T) {
	cfg := writeConfig(t, checkConfig)
	unknown := &fakeChecker{answer: answers(crm.CheckResult{Name: crm.CheckToken, Status: crm.CheckUnknown, Detail: "HTTP 503"})}
	env := &environment{getenv: checkEnv, connectors: fakeConnectors(map[string]crm.Connector{"hs": unknown, "sf": unknown})}
	if code, stdout, stderr := runWith(t, env, "check", "--config", cfg); code != exitOK || !strings.Contains(stdout, "0 passed, 0 failed, 2 unknown, 1 skipped") {
		t.Errorf("exit %d\n%s\n%s", code, stdout, stderr)
	}
}

// Connections are checked at once, and one that does not answer within --timeout is
// unknown while the others' lines are printed.
func TestCheckTimeout(t *testing.T) {
	cfg := writeConfig(t, checkConfig)
	started := make(chan struct{})
	hang := &fakeChecker{answer: func(ctx context.Context, _ int) []crm.CheckResult {
		close(started)
		<-ctx.Done() // a CRM that never answers; the check's context ends it
		return []crm.CheckResult{{Name: crm.CheckToken, Status: crm.CheckUnknown, Detail: "late"}}
	}}
	// The second waits for the first to have started: both run at the same time.
	ok := &fakeChecker{answer: func(context.Context, int) []crm.CheckResult {
		<-started
		return []crm.CheckResult{{Name: crm.CheckToken, Status: crm.CheckPass}}
	}}
	env := &environment{getenv: checkEnv, connectors: fakeConnectors(map[string]crm.Connector{"hs": hang, "sf": ok})}
	code, stdout, _ := runWith(t, env, "check", "--config", cfg, "--timeout", "200ms")
	if code != exitOK || !strings.Contains(stdout, "unknown  hs   connector  the check did not finish within 200ms") || !strings.Contains(stdout, "pass     sf   token") {
		t.Errorf("exit %d\n%s", code, stdout)
	}
}

func TestCheckWithoutConnectionsOrWithBadConfig(t *testing.T) {
	if code, stdout, _ := runCLI(t, nil, "check"); code != exitOK || !strings.Contains(stdout, "no connections configured") {
		t.Errorf("embedded default: exit %d %q", code, stdout)
	}
	bad := writeConfig(t, "routes: [{name: a, auth: {insecure: true}}]\nconnections: [{name: d, type: dryrun, check: {owner_email: nobody}}]\n")
	if code, _, stderr := runCLI(t, nil, "check", "--config", bad); code != exitUsage || !strings.Contains(stderr, "connections[0].check.owner_email") {
		t.Errorf("bad owner_email: exit %d %q", code, stderr)
	}
	if code, _, stderr := runCLI(t, nil, "check", "--timeout", "0s"); code != exitUsage || !strings.Contains(stderr, "--timeout must be positive") {
		t.Errorf("--timeout 0: exit %d %q", code, stderr)
	}
}

// The record keys a connection is checked for: its own, and what the mappings of the
// routes that use it name (deduplicated, empty ones left out).
func TestCheckTargetsRecordKeys(t *testing.T) {
	cfg := &config.Config{
		Routes: []config.Route{{Name: "a", Connection: "sf"}, {Name: "b", Connection: "sf"}, {Name: "c", Connection: "hs"}},
		Connections: []config.Connection{
			{Name: "sf", Type: "salesforce", Salesforce: &config.Salesforce{ExternalIDField: "A__c"}},
			{Name: "hs", Type: "hubspot", HubSpot: &config.HubSpot{}, Check: config.Check{OwnerEmail: "r@example.com"}},
		},
	}
	m, err := mappers.Builtin("salesforce")
	if err != nil {
		t.Fatal(err)
	}
	get := func() *mappers.Mapping { return m }
	got := checkTargets(cfg, map[string]crm.Connector{}, map[string]func() *mappers.Mapping{"a": get, "b": get, "c": get})
	wantSF := []string{"A__c"}
	if f := mappingRecordKey(m); f != "" { // once mappers exposes external_id.field
		wantSF = append(wantSF, f)
	}
	if d := cmp.Diff(wantSF, got[0].opts.RecordKeys); d != "" || got[0].name != "sf" {
		t.Errorf("sf keys (-want +got):\n%s", d)
	}
	if got[1].name != "hs" || got[1].opts.OwnerEmail != "r@example.com" {
		t.Errorf("hs target %+v", got[1])
	}
}

type fieldMapping string

func (f fieldMapping) ExternalIDField() string { return string(f) }

func TestRecordKeyDecision(t *testing.T) {
	if mappingRecordKey(fieldMapping("X__c")) != "X__c" || mappingRecordKey(struct{}{}) != "" {
		t.Error("mappingRecordKey does not read the accessor")
	}
	tests := []struct {
		mapping, connection, field, source string
		conflict                           bool
	}{
		{"", "MiiTel_Detail_Id__c", "MiiTel_Detail_Id__c", "connection", false},
		{"Other__c", "", "Other__c", "mapping external_id.field", false},
		{"Same__c", "Same__c", "Same__c", "mapping external_id.field", false},
		{"Other__c", "MiiTel_Detail_Id__c", "Other__c", "mapping external_id.field", true},
		{"", "", "", "", false},
	}
	for _, tt := range tests {
		field, source, conflict := recordKey(tt.mapping, tt.connection)
		if field != tt.field || source != tt.source || conflict != tt.conflict {
			t.Errorf("recordKey(%q, %q) = %q %q %v", tt.mapping, tt.connection, field, source, conflict)
		}
	}
	// At start, each route's decision is logged.
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	cfg := &config.Config{
		Routes:      []config.Route{{Name: "support", Connection: "sf"}, {Name: "sales", Connection: "hs"}, {Name: "trial"}},
		Connections: []config.Connection{{Name: "sf", Type: "salesforce", Salesforce: &config.Salesforce{ExternalIDField: "MiiTel_Detail_Id__c"}}, {Name: "hs", Type: "hubspot", HubSpot: &config.HubSpot{}}},
	}
	m, _ := mappers.Builtin("salesforce")
	get := func() *mappers.Mapping { return m }
	logRecordKeys(log, cfg, map[string]func() *mappers.Mapping{"support": get, "sales": get, "trial": get})
	out := buf.String()
	if mappingRecordKey(m) == "" {
		for _, want := range []string{
			`level=INFO msg="record key" route=support connection=sf record_key=MiiTel_Detail_Id__c from=connection`,
			`level=INFO msg="record key: none; the connection keeps a MiiTel id -> CRM id map" route=sales connection=hs`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
	}
	if strings.Contains(out, "route=trial") {
		t.Errorf("the dry-run route was logged:\n%s", out)
	}
}

// At worker start the check runs in the background: each line is logged at its level and
// exported as mcs_crm_check; while a line fails it runs again, and a fixed field clears.
func TestConnChecksRecheckUntilFixed(t *testing.T) {
	var logs lockedBuffer
	reg := prometheus.NewRegistry()
	c, err := newConnChecks(time.Millisecond, slog.New(slog.NewJSONHandler(&logs, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	fixedAfter := 2 // the admin creates the field after the second check
	hs := &fakeChecker{answer: func(_ context.Context, n int) []crm.CheckResult {
		if n < fixedAfter {
			return []crm.CheckResult{
				{Name: crm.CheckToken, Status: crm.CheckPass},
				{Name: crm.CheckRecordKey, Status: crm.CheckFail, Detail: "missing", Fix: "create it"},
				{Name: crm.CheckOwnerLookup, Status: crm.CheckUnknown, Detail: "HTTP 503"},
			}
		}
		return []crm.CheckResult{{Name: crm.CheckToken, Status: crm.CheckPass}, {Name: crm.CheckRecordKey, Status: crm.CheckPass}, {Name: crm.CheckOwnerLookup, Status: crm.CheckPass}}
	}}
	c.targets = []checkTarget{{name: "hs", conn: hs}, {name: "dry", conn: &fakeNoCheck{}}}
	if r := c.results(); fmt.Sprint(r) != "[]" {
		t.Errorf("results before the first check = %v, want []", r)
	}

	done := make(chan struct{})
	go func() { c.Run(t.Context()); close(done) }()
	<-done // all pass on the third check: Run returns
	if n := len(hs.options()); n != 3 {
		t.Errorf("%d checks, want 3 (two failing, one passing)", n)
	}
	for check, want := range map[string]float64{crm.CheckToken: 1, crm.CheckRecordKey: 1, crm.CheckOwnerLookup: 1} {
		if got := testutil.ToFloat64(c.gauge.WithLabelValues("hs", check)); got != want {
			t.Errorf("mcs_crm_check{hs,%s} = %v, want %v", check, got, want)
		}
	}
	if n := testutil.CollectAndCount(c.gauge); n != 3 {
		t.Errorf("%d series, want 3 (a skipped line is not exported)", n)
	}
	res, _ := c.results().([]crm.CheckResult)
	if len(res) != 4 || res[1].Status != crm.CheckPass || res[3].Status != crm.CheckSkipped {
		t.Errorf("results = %+v", res)
	}
	var levels []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var l struct{ Level, Msg, Check, Status, Fix string }
		_ = json.Unmarshal([]byte(line), &l)
		if l.Msg == "connection check" {
			levels = append(levels, l.Check+" "+l.Status+" "+l.Level+" "+l.Fix)
		}
	}
	want := []string{"token pass INFO ", "record_key fail ERROR create it", "owner_lookup unknown WARN ", "connector skip INFO "}
	if len(levels) < 4 {
		t.Fatalf("check lines logged: %v", levels)
	}
	if d := cmp.Diff(want, levels[:4]); d != "" {
		t.Errorf("first check's log lines (-want +got):\n%s", d)
	}
	if len(levels) != 12 {
		t.Errorf("%d check lines logged, want 12 (three checks of four lines)", len(levels))
	}
}

// The fail state is visible while it lasts: gauge 0 and -1, and the lines in /readyz.
func TestConnChecksPublishFailures(t *testing.T) {
	c, err := newConnChecks(time.Hour, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c.publish([]crm.CheckResult{{Connection: "sf", Name: crm.CheckRecordKey, Status: crm.CheckFail}, {Connection: "sf", Name: crm.CheckToken, Status: crm.CheckUnknown}})
	if testutil.ToFloat64(c.gauge.WithLabelValues("sf", crm.CheckRecordKey)) != 0 || testutil.ToFloat64(c.gauge.WithLabelValues("sf", crm.CheckToken)) != -1 {
		t.Error("fail is not 0 or unknown is not -1")
	}
	b, _ := json.Marshal(c.results())
	if string(b) != `[{"connection":"sf","check":"record_key","status":"fail"},{"connection":"sf","check":"token","status":"unknown"}]` {
		t.Errorf("readyz detail %s", b)
	}
}

type fakeNoCheck struct{}

func (fakeNoCheck) Deliver(context.Context, *mappers.Record) (crm.Result, error) {
	return crm.Result{}, nil
}

// serve and worker start although the check fails, log it, and show it in /readyz on the ops
// listener and as mcs_crm_check, while /readyz stays 200: readiness is Redis's alone.
func TestWorkerStartRunsTheCheckInTheBackground(t *testing.T) {
	for _, sub := range []string{"serve", "worker"} {
		t.Run(sub, func(t *testing.T) {
			addrs := freeAddrs(t, 2)
			addr := addrs[1] // the ops listener, where /readyz and /metrics are
			listen := fmt.Sprintf("server: {listen: %q}\nops: {listen: %q}\n", addrs[0], addr)
			cfg := writeConfig(t, listen+checkConfig)
			release := make(chan struct{})
			hs := &fakeChecker{answer: func(ctx context.Context, _ int) []crm.CheckResult {
				select { // the worker must be serving before the check has answered
				case <-release:
				case <-ctx.Done():
				}
				return []crm.CheckResult{{Name: crm.CheckRecordKey, Status: crm.CheckFail, Detail: "missing", Fix: "create it"}}
			}}
			sf := &fakeChecker{answer: answers(crm.CheckResult{Name: crm.CheckToken, Status: crm.CheckPass})}
			logs := &lockedBuffer{}
			env := &environment{stdout: logs, stderr: logs, stdin: strings.NewReader(""), getenv: checkEnv,
				connectors: fakeConnectors(map[string]crm.Connector{"hs": hs, "sf": sf})}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan int, 1)
			go func() { done <- run(ctx, env, []string{sub, "--config", cfg}) }()
			t.Cleanup(func() {
				cancel()
				if code := <-done; code != 0 {
					t.Errorf("%s exited %d:\n%s", sub, code, tail(logs.String(), 3000))
				}
			})
			readyz := func() (int, string) {
				resp, err := http.Get("http://" + addr + "/readyz")
				if err != nil {
					return 0, err.Error()
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			eventually(t, startTimeout, sub+" ready before the check answered", func() (bool, string) {
				code, body := readyz()
				return code == http.StatusOK && strings.Contains(body, `"checks":[]`), body
			})
			close(release)
			eventually(t, startTimeout, "the failed check in /readyz", func() (bool, string) {
				code, body := readyz()
				return code == http.StatusOK && strings.Contains(body, `{"connection":"hs","check":"record_key","status":"fail","detail":"missing","fix":"create it"}`) &&
					strings.Contains(body, `{"connection":"sf","check":"token","status":"pass"}`) && strings.Contains(body, `"status":"ready"`), body
			})
			s := &stack{ops: addr}
			if v := s.metric(t, "mcs_crm_check", map[string]string{"connection": "hs", "check": "record_key"}); v != 0 {
				t.Errorf("mcs_crm_check{hs,record_key} = %v, want 0", v)
			}
			if v := s.metric(t, "mcs_crm_check", map[string]string{"connection": "sf", "check": "token"}); v != 1 {
				t.Errorf("mcs_crm_check{sf,token} = %v, want 1", v)
			}
			if !strings.Contains(logs.String(), `"level":"ERROR","msg":"connection check","component":"check","connection":"hs","check":"record_key","status":"fail","detail":"missing","fix":"create it"`) {
				t.Errorf("the failure is not logged with its fix:\n%s", tail(logs.String(), 3000))
			}
		})
	}
}
