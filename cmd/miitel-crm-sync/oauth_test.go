package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot/hubspotfake"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// lineWriter is the command's stdout: it keeps everything and hands each line to the test,
// which plays the admin reading the terminal.
type lineWriter struct {
	mu    sync.Mutex
	all   bytes.Buffer
	part  string
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	w.part += string(p)
	for {
		i := strings.IndexByte(w.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		select {
		case w.lines <- w.part[:i]:
		default:
		}
		w.part = w.part[i+1:]
	}
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

type connectRun struct {
	out     *lineWriter
	errb    *bytes.Buffer
	done    chan int
	authURL *url.URL
}

// startConnect runs `oauth connect` in-process and waits for it to print the URL.
func startConnect(t *testing.T, getenv func(string) string, args ...string) *connectRun {
	t.Helper()
	r := &connectRun{out: &lineWriter{lines: make(chan string, 64)}, errb: &bytes.Buffer{}, done: make(chan int, 1)}
	env := &environment{stdout: r.out, stderr: r.errb, stdin: strings.NewReader(""), getenv: getenv}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { r.done <- run(ctx, env, append([]string{"oauth", "connect"}, args...)) }()
	for {
		select {
		case line := <-r.out.lines:
			if s := strings.TrimSpace(line); strings.HasPrefix(s, "http") {
				u, err := url.Parse(s)
				if err != nil {
					t.Fatalf("printed URL %q: %v", s, err)
				}
				r.authURL = u
				return r
			}
		case code := <-r.done:
			t.Fatalf("oauth connect exited %d before printing a URL; stderr: %s", code, r.errb)
		}
	}
}

func (r *connectRun) wait(t *testing.T) int {
	t.Helper()
	return <-r.done
}

// browse plays the browser: follow the URL and its redirects to the local listener.
func browse(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func TestOAuthConnectSalesforce(t *testing.T) {
	fake := salesforcefake.New(t, salesforcefake.Options{})
	rs := redistest.Start(t)
	cfg := writeConfig(t, fmt.Sprintf(`
redis:
  url: %s
routes:
  - name: sales
    connection: sf
    auth:
      bearer: [{env: ROUTE_TOKEN}]
connections:
  - name: sf
    type: salesforce
    salesforce:
      login_url: %s
      flow: refresh_token
      client_id: %s
      client_secret: {env: SF_SECRET}
      external_id_field: MiiTel_Detail_Id__c
      redirect_url: http://127.0.0.1:1/callback
`, rs.URL(), fake.URL, fake.ClientID()))
	// ROUTE_TOKEN is not set: connecting a CRM needs no webhook credential.
	getenv := envOf(map[string]string{"SF_SECRET": fake.ClientSecret()})

	parkCall(t, rs.Client(), "parked")

	r := startConnect(t, getenv, "salesforce", "--config", cfg, "--connection", "sf", "--listen", "127.0.0.1:0")
	q := r.authURL.Query()
	if q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256" || q.Get("client_id") != fake.ClientID() {
		t.Errorf("authorization URL %s lacks PKCE S256 or the client id", r.authURL)
	}
	if status, body := browse(t, r.authURL.String()); status != 200 || !strings.Contains(body, "Connected") {
		t.Errorf("browser landed on %d %q", status, body)
	}
	if code := r.wait(t); code != exitOK {
		t.Fatalf("oauth connect exited %d; stderr: %s", code, r.errb)
	}

	stored, err := crm.NewTokenStore(rs.Client(), "sf").RefreshToken(t.Context())
	if err != nil || stored == "" {
		t.Fatalf("stored refresh token = %q, %v", stored, err)
	}
	// The stored token works: the refresh grant accepts it.
	resp, err := http.PostForm(fake.TokenURL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {stored},
		"client_id": {fake.ClientID()}, "client_secret": {fake.ClientSecret()}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("refresh with the stored token = %d", resp.StatusCode)
	}
	out := r.out.String() + r.errb.String()
	for _, secret := range []string{stored, fake.ClientSecret()} {
		if strings.Contains(out, secret) {
			t.Errorf("output contains a secret: %s", out)
		}
	}
	if !strings.Contains(out, `connection "sf" is stored in Redis`) {
		t.Errorf("output does not confirm the store: %s", out)
	}
	if info, err := asynq.NewInspectorFromRedisClient(rs.Client()).GetTaskInfo("miitel", "parked"); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("the parked call was not queued for delivery now: %+v %v", info, err)
	}
	if !strings.Contains(out, "1 waiting call(s) queued for delivery now") {
		t.Errorf("output does not say the parked call was queued: %s", out)
	}
}

// parkCall leaves a call in the retry state with its next attempt an hour away, the way the
// worker parks calls of a broken connection.
func parkCall(t *testing.T, rdb redis.UniversalClient, id string) {
	t.Helper()
	task := asynq.NewTask(tasks.TypeCallEvent, []byte(`{}`))
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(task, asynq.Queue("miitel"), asynq.TaskID(id)); err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: map[string]int{"miitel": 1}, LogLevel: asynq.FatalLevel,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour }})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return errors.New("connection broken") })); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	in := asynq.NewInspectorFromRedisClient(rdb)
	eventually(t, 10*time.Second, "the call in the retry state", func() (bool, string) {
		info, err := in.GetTaskInfo("miitel", id)
		if err != nil {
			return false, err.Error()
		}
		return info.State == asynq.TaskStateRetry, info.State.String()
	})
}

func TestOAuthConnectHubSpot(t *testing.T) {
	hs := hubspotfake.New(t, hubspotfake.Options{})
	// hubspotfake serves the token endpoint only; this stands in for HubSpot's consent page
	// (app.hubspot.com/oauth/authorize): it issues a code for the redirect_uri and sends the
	// browser back, as when the admin clicks "Connect app".
	var gotAuthorize url.Values
	consent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		gotAuthorize = q
		if r.URL.Path != "/oauth/authorize" || q.Get("client_id") != "client-id" || q.Get("scope") == "" {
			http.Error(w, "bad authorize request", http.StatusBadRequest)
			return
		}
		hs.AddAuthCode("code-123", q.Get("redirect_uri"))
		back, _ := url.Parse(q.Get("redirect_uri"))
		back.RawQuery = url.Values{"code": {"code-123"}, "state": {q.Get("state")}}.Encode()
		http.Redirect(w, r, back.String(), http.StatusFound)
	}))
	t.Cleanup(consent.Close)
	rs := redistest.Start(t)
	cfg := writeConfig(t, fmt.Sprintf(`
redis:
  url: %s
routes:
  - name: sales
    connection: hs
    auth:
      bearer: [{env: ROUTE_TOKEN}]
connections:
  - name: hs
    type: hubspot
    hubspot:
      auth_url: %s/oauth/authorize
      token_url: %s
      client_id: client-id
      client_secret: {env: HS_SECRET}
`, rs.URL(), consent.URL, hs.TokenURL()))
	getenv := envOf(map[string]string{"ROUTE_TOKEN": "route-secret", "HS_SECRET": "client-secret"})

	r := startConnect(t, getenv, "hubspot", "--config", cfg, "--listen", "127.0.0.1:0")
	if status, body := browse(t, r.authURL.String()); status != 200 {
		t.Errorf("browser landed on %d %q", status, body)
	}
	if code := r.wait(t); code != exitOK {
		t.Fatalf("oauth connect exited %d; stderr: %s", code, r.errb)
	}
	if gotAuthorize.Get("code_challenge") != "" {
		t.Errorf("PKCE sent to HubSpot by default: %v", gotAuthorize)
	}
	stored, err := crm.NewTokenStore(rs.Client(), "hs").RefreshToken(t.Context())
	if err != nil || !strings.HasPrefix(stored, "rt-") {
		t.Fatalf("stored refresh token = %q, %v", stored, err)
	}
	if strings.Contains(r.out.String(), stored) {
		t.Error("output contains the refresh token")
	}
}

func TestOAuthConnectRefusedOrForeignRedirect(t *testing.T) {
	fake := salesforcefake.New(t, salesforcefake.Options{})
	rs := redistest.Start(t)
	cfg := writeConfig(t, fmt.Sprintf(`
redis: {url: %s}
routes: [{name: sales, connection: sf, auth: {bearer: [{env: ROUTE_TOKEN}]}}]
connections:
  - name: sf
    type: salesforce
    salesforce: {login_url: %s, flow: refresh_token, client_id: %s, client_secret: {env: SF_SECRET}, external_id_field: X__c}
`, rs.URL(), fake.URL, fake.ClientID()))
	getenv := envOf(map[string]string{"ROUTE_TOKEN": "t", "SF_SECRET": fake.ClientSecret()})
	r := startConnect(t, getenv, "salesforce", "--config", cfg, "--listen", "127.0.0.1:0")
	redirect := r.authURL.Query().Get("redirect_uri")
	// A redirect with another state is not ours: refused, and the command keeps waiting.
	if status, _ := browse(t, redirect+"?code=x&state=forged"); status != 400 {
		t.Errorf("forged state = %d, want 400", status)
	}
	// The admin clicks Deny.
	state := r.authURL.Query().Get("state")
	browse(t, redirect+"?"+url.Values{"error": {"access_denied"}, "error_description": {"end-user denied authorization"}, "state": {state}}.Encode())
	if code := r.wait(t); code != exitFailure || !strings.Contains(r.errb.String(), "access_denied") {
		t.Errorf("exit %d, stderr %q; want 1 naming access_denied", code, r.errb)
	}
	if stored, _ := crm.NewTokenStore(rs.Client(), "sf").RefreshToken(t.Context()); stored != "" {
		t.Error("a refresh token was stored after a refusal")
	}
}

func TestOAuthUsageErrors(t *testing.T) {
	rs := redistest.Start(t)
	cfg := writeConfig(t, fmt.Sprintf(`
redis: {url: %s}
routes: [{name: sales, connection: cc, auth: {bearer: [{env: ROUTE_TOKEN}]}}]
connections:
  - name: cc
    type: salesforce
    salesforce: {login_url: "https://x.my.salesforce.com", flow: client_credentials, client_id: id, client_secret: {env: ROUTE_TOKEN}, external_id_field: X__c}
  - name: rt
    type: salesforce
    salesforce: {login_url: "https://x.my.salesforce.com", flow: refresh_token, client_id: id, client_secret: {env: ROUTE_TOKEN}, external_id_field: X__c, redirect_url: "https://example.com/cb"}
`, rs.URL()))
	getenv := envOf(map[string]string{"ROUTE_TOKEN": "t"})
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"oauth"}, "want `oauth connect"},
		{"unknown crm", []string{"oauth", "connect", "zoho", "--config", cfg}, "want `oauth connect"},
		{"unknown connection", []string{"oauth", "connect", "salesforce", "--config", cfg, "--connection", "nope"}, `no connection named "nope"`},
		{"wrong type", []string{"oauth", "connect", "hubspot", "--config", cfg, "--connection", "cc"}, "is of type salesforce"},
		{"ambiguous", []string{"oauth", "connect", "salesforce", "--config", cfg}, "several salesforce connections"},
		{"flow without connect", []string{"oauth", "connect", "salesforce", "--config", cfg, "--connection", "cc"}, "needs no connect step"},
		{"non-loopback redirect", []string{"oauth", "connect", "salesforce", "--config", cfg, "--connection", "rt"}, "must be http://"},
		{"non-loopback listen", []string{"oauth", "connect", "salesforce", "--config", cfg, "--connection", "rt", "--listen", "0.0.0.0:0"}, "loopback"},
		{"bad pkce", []string{"oauth", "connect", "salesforce", "--config", cfg, "--pkce", "maybe"}, "--pkce"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, getenv, tt.args...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want %d containing %q", code, stderr, exitUsage, tt.want)
			}
		})
	}
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}
