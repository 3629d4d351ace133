package main

// The end-to-end tests (e2e_*_test.go) run the service as it is deployed: MiiTel requests go
// over loopback HTTP into the receiver, through a private redis-server (asynq) to the worker,
// which writes into strict fakes of HubSpot and Salesforce. Nothing in between is mocked.
// This file is their harness: one isolated "stack" per test (its own Redis, fakes, config),
// the serve/receiver/worker processes, and the bounded polls the tests synchronise with.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot/hubspotfake"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/e2e")

// e2eExecEnv makes the test binary behave as the miitel-crm-sync binary (see TestMain).
const e2eExecEnv = "MCS_E2E_EXEC"

// TestMain lets a test run the service as a separate OS process without building it: the
// test binary re-executes itself with e2eExecEnv set and the subcommand's arguments, and
// then runs main exactly as the real binary does (signals, exit codes).
func TestMain(m *testing.M) {
	if os.Getenv(e2eExecEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// Bounds for the polls below. They are ceilings, not waits: a poll returns as soon as its
// condition holds.
const (
	startTimeout    = 20 * time.Second
	deliveryTimeout = 45 * time.Second
	pollEvery       = 20 * time.Millisecond
)

// The rep and the customers every stack seeds. The rep's e-mail is the samples' login_id;
// the customers' numbers are the samples' customer numbers, stored the way a CRM user
// types them (with hyphens), so matching has to normalise.
const repEmail = "test@example.com"

var customers = []struct{ name, national, stored string }{
	{"Takahashi", "05099999999", "050-9999-9999"},
	{"Suzuki", "09000000000", "090-0000-0000"},
	{"Mark", "4800000000", "4800000000"},
}

// Secrets the config names by {env: ...}.
const (
	miitelToken         = "e2e-miitel-token"
	hubspotPrivateToken = "pat-e2e-private-app-token"
)

// Names in every stack's config; the Salesforce fake knows the shipped mapping's External
// ID field.
const (
	hubspotRoute    = "hubspot"
	salesforceRoute = "salesforce"
	externalIDField = "MiiTel_Detail_Id__c"
	adminReadOnly   = "admin-read-only-token"
	adminReadWrite  = "admin-read-write-token"
	queueName       = "miitel"
)

type stackOptions struct {
	// hubspotOAuth connects HubSpot as an OAuth app with a refresh token instead of a
	// private-app token.
	hubspotOAuth bool
	// salesforceFlow is client_credentials (default) or refresh_token.
	salesforceFlow string
	// hubspotVia and salesforceVia, when set, get a fake's URL and return the URL the
	// config names instead (a proxy in front of the fake).
	hubspotVia, salesforceVia func(fakeURL string) string
	// maxRetry is queue.max_retry (default 10).
	maxRetry int
	// workerConcurrency is worker.concurrency (default 4).
	workerConcurrency int
	// retryMax, when set, is both worker.retry_base and worker.retry_max: a failed call
	// then stays in retry for that long, which a test that looks at it needs (the default
	// 100ms..1s backoff has it bounce between retry and active).
	retryMax time.Duration
	// salesforceBatch is the sf connection's batch section, e.g. "{max_size: 200, linger:
	// 10s}" (default: none, the built-in defaults).
	salesforceBatch string
	// hubspotBatch is the hs connection's batch section (default: none).
	hubspotBatch string
	// salesforceFake adjusts the Salesforce fake's options (e.g. an org without the
	// External ID field).
	salesforceFake func(*salesforcefake.Options)
	// redis, when set, replaces the stack's own redis-server: the config's redis section
	// (flow YAML, e.g. a Sentinel or Cluster) and a client of that Redis for the test.
	redis *redisTopology
	// hubspotRequests raises the HubSpot account's 10-second limit (fake and config alike)
	// for load runs; 0 keeps HubSpot's default.
	hubspotRequests int
}

// redisTopology is a Redis a stack runs on instead of a standalone redis-server.
type redisTopology struct {
	section string
	client  redis.UniversalClient
}

// stack is one isolated installation: a private redis-server, a HubSpot and a Salesforce
// fake seeded with the rep and the customers, and a config file pointing at all of them
// with two routes, /webhooks/miitel/hubspot and /webhooks/miitel/salesforce.
type stack struct {
	redis *redistest.Server // nil on a stackOptions.redis topology
	rdb   *redis.Client     // nil on a stackOptions.redis topology
	// queue is the client the test inspects the queue with (rdb, or the topology's).
	queue redis.UniversalClient
	hs    *hubspotfake.Server
	sf    *salesforcefake.Fake

	hsOwner, sfUser string
	hsContact       map[string]string // national number -> HubSpot contact id
	sfContact       map[string]string // national number -> Salesforce contact id
	env             map[string]string // what the config's {env: NAME} secrets resolve to
	cfgPath, listen string
	// ops is the ops listener (metrics, probes, admin API) of the process start runs; worker
	// subprocesses take a free port of their own.
	ops string
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	if o.salesforceFlow == "" {
		o.salesforceFlow = "client_credentials"
	}
	if o.maxRetry == 0 {
		o.maxRetry = 10
	}
	if o.workerConcurrency == 0 {
		o.workerConcurrency = 4
	}
	retryBase, retryMax := 100*time.Millisecond, time.Second
	if o.retryMax > 0 {
		retryBase, retryMax = o.retryMax, o.retryMax
	}
	s := &stack{hsContact: map[string]string{}, sfContact: map[string]string{}}
	redisSection := ""
	if o.redis != nil {
		s.queue, redisSection = o.redis.client, o.redis.section
	} else {
		s.redis = redistest.Start(t)
		s.rdb = s.redis.Client()
		s.queue, redisSection = s.rdb, fmt.Sprintf("{url: %q}", s.redis.URL())
	}

	s.hs = hubspotfake.New(t, hubspotfake.Options{RequestsPer10s: o.hubspotRequests})
	s.hs.AddPrivateAppToken(hubspotPrivateToken)
	s.hs.AddOwner("someone.else@example.com") // the rep is not simply the first owner
	s.hsOwner = s.hs.AddOwner(repEmail)

	sfOpts := salesforcefake.Options{ExternalIDFields: []string{externalIDField}}
	if o.salesforceFake != nil {
		o.salesforceFake(&sfOpts)
	}
	s.sf = salesforcefake.New(t, sfOpts)
	s.sf.AddUser(salesforcefake.User{Username: "someone.else@example.com", Email: "someone.else@example.com"})
	s.sfUser = s.sf.AddUser(salesforcefake.User{Username: repEmail, Email: repEmail})

	// A decoy first, so "associated with the first contact" cannot pass by accident.
	s.hs.AddContact(map[string]string{"firstname": "Decoy", "phone": "03-1111-2222"})
	s.sf.AddContact(salesforcefake.Person{LastName: "Decoy", Phone: "03-1111-2222"})
	for _, c := range customers {
		s.hsContact[c.national] = s.hs.AddContact(map[string]string{"lastname": c.name, "phone": c.stored})
		s.sfContact[c.national] = s.sf.AddContact(salesforcefake.Person{LastName: c.name, Phone: c.stored})
	}

	s.env = map[string]string{
		"MIITEL_TOKEN":          miitelToken,
		"HUBSPOT_TOKEN":         hubspotPrivateToken,
		"HUBSPOT_CLIENT_SECRET": "client-secret",
		"SF_CLIENT_SECRET":      s.sf.ClientSecret(),
		"ADMIN_RO_TOKEN":        adminReadOnly,
		"ADMIN_RW_TOKEN":        adminReadWrite,
	}
	hsURL := s.hs.URL
	if o.hubspotVia != nil {
		hsURL = o.hubspotVia(hsURL)
	}
	hubspotCfg := fmt.Sprintf("      base_url: %q\n      private_app_token: {env: HUBSPOT_TOKEN}\n", hsURL)
	if o.hubspotOAuth {
		s.env["HUBSPOT_REFRESH_TOKEN"] = s.hs.IssueRefreshToken()
		hubspotCfg = fmt.Sprintf("      base_url: %q\n      token_url: %q\n      client_id: client-id\n"+
			"      client_secret: {env: HUBSPOT_CLIENT_SECRET}\n      refresh_token: {env: HUBSPOT_REFRESH_TOKEN}\n",
			hsURL, hsURL+"/oauth/v1/token")
	}
	if o.hubspotRequests > 0 {
		hubspotCfg = fmt.Sprintf("    rate_limit: {requests: %d, per: 10s}\n", o.hubspotRequests) + "    hubspot:\n" + hubspotCfg
	} else {
		hubspotCfg = "    hubspot:\n" + hubspotCfg
	}
	if o.hubspotBatch != "" {
		hubspotCfg += "    batch: " + o.hubspotBatch + "\n"
	}
	sfURL := s.sf.URL
	if o.salesforceVia != nil {
		sfURL = o.salesforceVia(sfURL)
	}
	salesforceCfg := fmt.Sprintf("      login_url: %q\n      flow: %s\n      client_id: %q\n      client_secret: {env: SF_CLIENT_SECRET}\n"+
		"      external_id_field: %s\n      request_limit_wait: 1s\n", sfURL, o.salesforceFlow, s.sf.ClientID(), externalIDField)
	if o.salesforceFlow == "refresh_token" {
		s.env["SF_REFRESH_TOKEN"] = s.sf.IssueRefreshToken(salesforcefake.IntegrationUsername)
		salesforceCfg += "      refresh_token: {env: SF_REFRESH_TOKEN}\n"
	}
	if o.salesforceBatch != "" {
		salesforceCfg += "    batch: " + o.salesforceBatch + "\n"
	}

	addrs := freeAddrs(t, 2)
	s.listen, s.ops = addrs[0], addrs[1]
	// Short retry and poll intervals keep retries (429, expired tokens, recovered tasks)
	// within a test's time; everything else is the production default.
	s.cfgPath = writeConfig(t, fmt.Sprintf(`log: {level: debug, format: json}
server:
  listen: %q
  shutdown_timeout: 5s
redis: %s
queue: {name: %s, max_retry: %d, task_timeout: 30s}
worker:
  concurrency: %d
  shutdown_timeout: 5s
  retry_base: %s
  retry_max: %s
  poll_interval: 100ms
ops: {listen: "127.0.0.1:0"}
admin:
  tokens:
    - {token: {env: ADMIN_RO_TOKEN}, role: read_only}
    - {token: {env: ADMIN_RW_TOKEN}, role: read_write}
routes:
  - name: %s
    connection: hs
    auth: {bearer: [{env: MIITEL_TOKEN}]}
  - name: %s
    connection: sf
    auth: {bearer: [{env: MIITEL_TOKEN}]}
connections:
  - name: hs
    type: hubspot
%s  - name: sf
    type: salesforce
    salesforce:
%s`, s.listen, redisSection, queueName, o.maxRetry, o.workerConcurrency, retryBase, retryMax, hubspotRoute, salesforceRoute, hubspotCfg, salesforceCfg))
	return s
}

func (s *stack) getenv(k string) string { return s.env[k] }

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	return freeAddrs(t, 1)[0]
}

// freeAddrs is n distinct free loopback addresses: each port is held until all are picked,
// so two calls in a row cannot hand out the same port (freeAddr twice could).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs[i] = l.Addr().String()
	}
	return addrs
}

// lockedBuffer collects a process's log output; written by its goroutines, read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tail is the end of a log, enough to see why a test failed without flooding the output.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// start runs a long-running subcommand (serve, receiver) in-process, as `run` does for the
// binary, waits until the receiver answers /healthz, and stops it when the test ends,
// failing the test when it exits with an error. Its log is printed when the test failed.
func (s *stack) start(t *testing.T, subcommand string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &lockedBuffer{}
	done := make(chan int, 1)
	go func() {
		getenv := func(k string) string {
			if k == "MCS_OPS_LISTEN" {
				return s.ops
			}
			return s.getenv(k)
		}
		done <- run(ctx, &environment{stdout: logs, stderr: logs, stdin: strings.NewReader(""), getenv: getenv},
			[]string{subcommand, "--config", s.cfgPath})
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("%s exited with code %d", subcommand, code)
		}
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", subcommand, tail(logs.String(), 20000))
		}
	})
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case code := <-done:
			done <- code
			t.Fatalf("%s exited with code %d before it was ready:\n%s", subcommand, code, tail(logs.String(), 5000))
		default:
		}
		resp, err := http.Get("http://" + s.listen + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not answering /healthz after %s: %v\n%s", subcommand, startTimeout, err, tail(logs.String(), 5000))
		}
		time.Sleep(pollEvery)
	}
}

// accepted is the receiver's 200 answer.
type accepted struct {
	Queued     int `json:"queued"`
	Duplicates int `json:"duplicates"`
}

// post sends a MiiTel request to a route the way MiiTel does and returns the receiver's
// answer; anything but 200 fails the test.
func (s *stack) post(t *testing.T, route string, body []byte) accepted {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+s.listen+"/webhooks/miitel/"+route, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "MiiTel-Webhook/v1")
	req.Header.Set("Authorization", "Bearer "+miitelToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", route, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", route, resp.StatusCode, b)
	}
	var a accepted
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("POST %s: answer %s: %v", route, b, err)
	}
	return a
}

// postBoth sends a request to the HubSpot route and to the Salesforce route.
func (s *stack) postBoth(t *testing.T, body []byte) {
	t.Helper()
	s.post(t, hubspotRoute, body)
	s.post(t, salesforceRoute, body)
}

// eventually polls cond until it holds or timeout passes; then the test fails with what
// cond last reported.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, status := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached after %s; last: %s", what, timeout, status)
		}
		time.Sleep(pollEvery)
	}
}

func (s *stack) inspector(t *testing.T) *asynq.Inspector {
	in := asynq.NewInspectorFromRedisClient(s.queue)
	t.Cleanup(func() { _ = in.Close() })
	return in
}

// waitDelivered waits until the queue holds nothing pending, running, scheduled or waiting
// for a retry: every queued event was delivered (a completed task is deleted at once). A
// dead-lettered task fails the test with its reason.
func (s *stack) waitDelivered(t *testing.T) {
	t.Helper()
	s.waitDrained(t, deliveryTimeout, nil)
}

// waitDrained is waitDelivered with its own ceiling; each poll first runs onPoll, when set.
func (s *stack) waitDrained(t *testing.T, timeout time.Duration, onPoll func(*asynq.Inspector)) {
	t.Helper()
	in := s.inspector(t)
	eventually(t, timeout, "queue drained", func() (bool, string) {
		if onPoll != nil {
			onPoll(in)
		}
		qi, err := in.GetQueueInfo(queueName)
		if err != nil {
			return false, err.Error()
		}
		if qi.Archived > 0 {
			t.Fatalf("%d task(s) dead-lettered:\n%s", qi.Archived, deadLetters(in))
		}
		return qi.Pending+qi.Active+qi.Scheduled+qi.Retry == 0,
			fmt.Sprintf("pending %d active %d scheduled %d retry %d", qi.Pending, qi.Active, qi.Scheduled, qi.Retry)
	})
}

// deadLetters lists the archived tasks with their reasons.
func deadLetters(in *asynq.Inspector) string {
	archived, err := in.ListArchivedTasks(queueName)
	if err != nil {
		return err.Error()
	}
	var reasons []string
	for _, a := range archived {
		reasons = append(reasons, a.ID+": "+a.LastErr)
	}
	return strings.Join(reasons, "\n")
}

// metric returns the value of a counter or gauge series on the ops listener's /metrics (the
// one registry of a serve process), 0 when the series does not exist.
func (s *stack) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.ops + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	fam, ok := fams[name]
	if !ok {
		return 0
	}
	total := 0.0
	for _, m := range fam.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			total += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			total += m.GetGauge().GetValue()
		}
	}
	return total
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// ---- fixtures ----

// The requests the tests send are the payloads the project ships (examples/payloads):
// MiiTel's published samples and a multi-detail request. Names are relative to payloadDir;
// tests that run the CLI pass these paths as a user would.
const payloadDir = "../../examples/payloads"

var samplePayloads = []string{
	"call_analysis_completed/sample1.json",
	"call_analysis_completed/sample2.json",
	"call_analysis_completed/seed_sample.json",
	"call_summarization_completed/sample1.json",
	"multi_detail.json",
}

func samplePath(name string) string { return filepath.Join(payloadDir, name) }

func readSample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(samplePath(name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// detailIDs lists the call detail ids of a request body.
func detailIDs(t *testing.T, body []byte) []string {
	t.Helper()
	var w struct {
		Call struct {
			Details []struct {
				ID string `json:"id"`
			} `json:"details"`
		} `json:"call"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range w.Call.Details {
		ids = append(ids, d.ID)
	}
	return ids
}

// ---- what the fakes hold, normalised ----

// hubspotCall is a stored HubSpot call without what the fake makes up (ids, timestamps),
// with owner and contact ids replaced by who they are.
type hubspotCall struct {
	Properties map[string]string `json:"properties"`
	Contacts   []string          `json:"contacts"`
}

// hubspotCalls returns the fake's calls by hs_call_external_id, failing the test when a
// detail has more than one call.
func (s *stack) hubspotCalls(t *testing.T) map[string]hubspotCall {
	t.Helper()
	names := map[string]string{s.hsOwner: "<owner " + repEmail + ">"}
	for _, c := range customers {
		names[s.hsContact[c.national]] = "<contact " + c.stored + ">"
	}
	out := map[string]hubspotCall{}
	for _, c := range s.hs.Calls() {
		ext := c.Properties["hs_call_external_id"]
		if _, dup := out[ext]; dup {
			t.Errorf("HubSpot holds more than one call for detail %q", ext)
		}
		p := map[string]string{}
		for k, v := range c.Properties {
			switch k {
			case "hs_object_id", "hs_createdate", "hs_lastmodifieddate":
				continue
			case "hubspot_owner_id":
				v = cmp.Or(names[v], "<unknown owner "+v+">")
			}
			p[k] = v
		}
		hc := hubspotCall{Properties: p, Contacts: []string{}}
		for _, id := range c.Contacts {
			hc.Contacts = append(hc.Contacts, cmp.Or(names[id], "<unknown contact "+id+">"))
		}
		sort.Strings(hc.Contacts)
		out[ext] = hc
	}
	return out
}

// salesforceTasks returns the fake's Tasks by external id, normalised like hubspotCalls,
// failing the test when a detail has more than one Task.
func (s *stack) salesforceTasks(t *testing.T) map[string]map[string]any {
	t.Helper()
	names := map[string]string{s.sfUser: "<user " + repEmail + ">", s.sf.UserID(salesforcefake.IntegrationUsername): "<integration user>"}
	for _, c := range customers {
		names[s.sfContact[c.national]] = "<contact " + c.stored + ">"
	}
	out := map[string]map[string]any{}
	for _, task := range s.sf.Tasks() {
		ext, _ := task[externalIDField].(string)
		if _, dup := out[ext]; dup {
			t.Errorf("Salesforce holds more than one Task for detail %q", ext)
		}
		f := map[string]any{}
		for k, v := range task {
			switch k {
			case "Id", "LastModifiedDate":
				continue
			case "OwnerId", "WhoId":
				id := fmt.Sprint(v)
				v = cmp.Or(names[id], "<unknown "+id+">")
			default:
				// JSON numbers compare as their text: 23 and json.Number("23") alike.
				if n, ok := v.(json.Number); ok {
					v = n.String()
				} else if n, ok := v.(float64); ok {
					v = fmt.Sprint(n)
				}
			}
			f[k] = v
		}
		out[ext] = f
	}
	return out
}

// golden compares got, as indented JSON, with testdata/e2e/<name>; -update rewrites it.
func golden(t *testing.T, name string, got any) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // the bodies are HTML; keep them readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(got); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	path := filepath.Join("testdata", "e2e", name)
	if *updateGolden {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(b, want) {
		t.Errorf("%s differs from what the fake holds (-want +got; go test -update rewrites it):\n%s", path, gocmp.Diff(string(want), string(b)))
	}
}
