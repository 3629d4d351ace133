package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/examples"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/callstatus"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/replay"
)

const (
	rwOld = "rw-token-2025"
	rwNew = "rw-token-2026"
	ro    = "ro-token"
)

type env struct {
	srv       *httptest.Server
	rdb       redis.UniversalClient
	status    *callstatus.Store
	dead      *deadletter.Store
	inspector *asynq.Inspector
	queue     config.Queue
}

type renderer struct{}

func (renderer) Render(ev *miitel.Event) (*mappers.Record, *mappers.Skip, error) {
	return &mappers.Record{Object: "calls", ExternalID: mappers.ExternalID{Value: ev.Detail.ID}, MappingVersion: "v2",
		Fields: []mappers.Field{{Name: "body", Value: transcriptOf(ev), KeepLonger: true}}}, nil, nil
}

func transcriptOf(ev *miitel.Event) string {
	if ev.Detail.SpeechRecognition != nil {
		return ev.Detail.SpeechRecognition.Raw
	}
	return ""
}

var routes = []config.Route{{Name: "sales", Connection: "hubspot", Auth: config.Auth{Payload: []config.PayloadCredential{{Key: "params_key"}}}}}

func newEnv(t *testing.T) *env {
	t.Helper()
	rdb := redistest.Start(t).Client()
	cfg := config.Default()
	st, err := callstatus.New(rdb, callstatus.Options{Queue: cfg.Queue.Name, Config: cfg.Status, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	dl, err := deadletter.New(rdb, deadletter.Options{Queue: cfg.Queue.Name, Config: cfg.DeadLetter, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	rp, err := replay.New(replay.Options{Redis: rdb, Queue: cfg.Queue, DeadLetter: dl, Status: st,
		Mapping: func(string) (replay.Renderer, bool) { return renderer{}, true }})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{
		Auth: config.Admin{
			Tokens: []config.AdminToken{
				{Token: config.FromValue(rwOld), Role: config.RoleReadWrite},
				{Token: config.FromValue(rwNew), Role: config.RoleReadWrite},
				{Token: config.FromValue(ro), Role: config.RoleReadOnly},
			},
			Basic: []config.AdminBasic{{Username: "auditor", Password: config.FromValue("s3cret"), Role: config.RoleReadOnly}},
		},
		Status: st, DeadLetter: dl, Replayer: rp, Backfill: receiverEnqueue(t, rdb, cfg.Queue, st),
		Routes: routes, MaxLineBytes: cfg.Server.MaxBodyBytes, Redis: rdb,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{srv: srv, rdb: rdb, status: st, dead: dl, inspector: asynq.NewInspectorFromRedisClient(rdb), queue: cfg.Queue}
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (e *env) do(t *testing.T, method, path, auth string, body io.Reader) reply {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return reply{res.StatusCode, res.Header, string(b)}
}

func bearer(tok string) string { return "Bearer " + tok }

func parse(t *testing.T, name string) []*miitel.Event {
	t.Helper()
	b, err := examples.Payload(name)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := receiver.ParseEvents("sales", b, []string{"params_key"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	replayBody := func() io.Reader { return strings.NewReader(`{"route": "sales", "dry_run": true}`) }
	basic := func(u, p string) string {
		r := http.Request{Header: http.Header{}}
		r.SetBasicAuth(u, p)
		return r.Header.Get("Authorization")
	}
	tests := []struct {
		name, method, path, auth string
		body                     func() io.Reader
		want                     int
	}{
		{"no credential", "GET", "/admin/deadletter", "", nil, 401},
		{"wrong token", "GET", "/admin/deadletter", bearer("guess"), nil, 401},
		{"wrong basic password", "GET", "/admin/deadletter", basic("auditor", "nope"), nil, 401},
		{"read-only token reads", "GET", "/admin/deadletter", bearer(ro), nil, 200},
		{"read-only basic reads", "GET", "/admin/calls?since=1h", basic("auditor", "s3cret"), nil, 200},
		{"read-only replay", "POST", "/admin/replay", bearer(ro), replayBody, 403},
		{"read-only backfill", "POST", "/admin/backfill?route=sales", bearer(ro), func() io.Reader { return strings.NewReader("") }, 403},
		{"old read-write token", "POST", "/admin/replay", bearer(rwOld), replayBody, 200},
		{"new read-write token", "POST", "/admin/replay", bearer(rwNew), replayBody, 200},
		{"no credential on asynqmon", "GET", "/admin/queues/api/queues", "", nil, 401},
		{"unknown endpoint", "GET", "/admin/nothing", bearer(ro), nil, 404},
	}
	for _, tt := range tests {
		var body io.Reader
		if tt.body != nil {
			body = tt.body()
		}
		r := e.do(t, tt.method, tt.path, tt.auth, body)
		if r.status != tt.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path, r.status, r.body, tt.want)
		}
		if tt.want == 401 {
			got := r.header.Values("WWW-Authenticate")
			if len(got) != 2 || !strings.HasPrefix(got[0], "Bearer ") || !strings.HasPrefix(got[1], "Basic ") {
				t.Errorf("%s: WWW-Authenticate = %q", tt.name, got)
			}
		}
		if tt.want >= 400 {
			var ae apiError
			if err := json.Unmarshal([]byte(r.body), &ae); err != nil || ae.Error.Code == "" {
				t.Errorf("%s: error body %q is not {error: {code, message}}", tt.name, r.body)
			}
		}
	}
}

func TestRequireGuardsOtherHandlers(t *testing.T) {
	t.Parallel()
	h, err := New(Options{Auth: config.Admin{Tokens: []config.AdminToken{{Token: config.FromValue(ro), Role: config.RoleReadOnly}}}})
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	for _, tt := range []struct {
		need Role
		auth string
		want int
	}{{ReadOnly, "", 401}, {ReadOnly, bearer(ro), 200}, {ReadWrite, bearer(ro), 403}} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/metrics", nil)
		if tt.auth != "" {
			r.Header.Set("Authorization", tt.auth)
		}
		h.Require(tt.need, ok).ServeHTTP(w, r)
		if w.Code != tt.want {
			t.Errorf("need %s with %q: %d, want %d", tt.need, tt.auth, w.Code, tt.want)
		}
	}
	if _, err := New(Options{Auth: config.Admin{Tokens: []config.AdminToken{{Token: config.FromValue("x"), Role: "admin"}}}}); err == nil {
		t.Error("an unknown role must be refused")
	}
}

func TestCallEndpoints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	ev := parse(t, "call_analysis_completed/sample1.json")[0] // has a rep (login_id) and a transcript
	if err := e.status.Received(ctx, ev, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := e.status.Started(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if err := e.status.Delivered(ctx, ev, callstatus.Delivery{Record: &mappers.Record{Object: "calls"}, Result: crm.Result{ID: "77", URL: "https://crm.example/77"}}); err != nil {
		t.Fatal(err)
	}
	r := e.do(t, "GET", "/admin/calls/"+ev.CallID, bearer(ro), nil)
	if r.status != 200 {
		t.Fatalf("GET call = %d %s", r.status, r.body)
	}
	var got struct {
		ID      string `json:"id"`
		Details []struct {
			DetailID string `json:"detail_id"`
			State    string `json:"state"`
			To       string `json:"to"`
			CRM      struct {
				ID  string `json:"id"`
				URL string `json:"url"`
			} `json:"crm"`
			Events []struct {
				DedupeKey string `json:"dedupe_key"`
			} `json:"events"`
		} `json:"details"`
		DeadLetter []any `json:"dead_letter"`
	}
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Details) != 1 || got.Details[0].State != "done" || got.Details[0].CRM.URL != "https://crm.example/77" ||
		got.Details[0].Events[0].DedupeKey != ev.DedupeKey || got.DeadLetter == nil {
		t.Errorf("call = %s", r.body)
	}
	if !strings.Contains(got.Details[0].To, "****") {
		t.Errorf("to = %q, want masked", got.Details[0].To)
	}
	assertSafe(t, r.body, ev)

	r = e.do(t, "GET", "/admin/calls/never-sent", bearer(ro), nil)
	if r.status != 404 || !strings.Contains(r.body, "MiiTel has not sent this call (or it is older than the status retention of 30 days)") {
		t.Errorf("never sent = %d %s", r.status, r.body)
	}
	r = e.do(t, "GET", "/admin/calls?since=1h&state=done&rep=test%40example.com", bearer(ro), nil)
	if r.status != 200 || !strings.Contains(r.body, `"count": 1`) {
		t.Errorf("list = %d %s", r.status, r.body)
	}
	r = e.do(t, "GET", "/admin/calls?since=1h&state=dead", bearer(ro), nil)
	if r.status != 200 || !strings.Contains(r.body, `"count": 0`) || !strings.Contains(r.body, `"calls": []`) {
		t.Errorf("empty list = %d %s", r.status, r.body)
	}
	for q, code := range map[string]string{"state=lost": "invalid_query", "since=soon": "invalid_query", "phone=0312345678": "phone_search_off", "limit=-1": "invalid_query"} {
		if r := e.do(t, "GET", "/admin/calls?"+q, bearer(ro), nil); r.status != 400 || !strings.Contains(r.body, code) {
			t.Errorf("%s = %d %s, want 400 %s", q, r.status, r.body, code)
		}
	}
}

// A misspelt parameter is refused, naming itself and the ones the endpoint takes, rather
// than ignored: ?sate=dead would otherwise list every call, and a backfill with ?rout=
// would fail on the route while the typo goes unnoticed.
func TestUnknownQueryParameters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct{ method, path, auth, want string }{
		{"GET", "/admin/calls?since=1h&sate=dead", ro, `unknown query parameter \"sate\": GET /admin/calls takes since, until, route, rep, state, phone, limit`},
		{"GET", "/admin/calls/some-call?verbose=1", ro, `unknown query parameter \"verbose\": GET /admin/calls/some-call takes none`},
		{"GET", "/admin/deadletter?clas=permanent", ro, `unknown query parameter \"clas\"`},
		{"POST", "/admin/backfill?route=sales&dryrun=true", rwOld, `unknown query parameter \"dryrun\"`},
	} {
		r := e.do(t, tc.method, tc.path, bearer(tc.auth), strings.NewReader(""))
		if r.status != 400 || !strings.Contains(r.body, "invalid_query") || !strings.Contains(r.body, tc.want) {
			t.Errorf("%s %s = %d %s, want 400 with %s", tc.method, tc.path, r.status, r.body, tc.want)
		}
	}
	if qs, _ := e.inspector.Queues(); len(qs) != 0 {
		t.Errorf("a refused backfill queued something: %v", qs)
	}
}

// assertSafe fails if an answer carries a phone number or any of the transcript.
func assertSafe(t *testing.T, body string, ev *miitel.Event) {
	t.Helper()
	for _, n := range []*string{ev.Detail.ToNumber, ev.Detail.FromNumber} {
		if n != nil && *n != "" && strings.Contains(body, *n) {
			t.Errorf("answer shows the number %s", *n)
		}
	}
	if sr := ev.Detail.SpeechRecognition; sr != nil && len(sr.Raw) > 20 {
		if strings.Contains(body, sr.Raw[:20]) {
			t.Error("answer shows the transcript")
		}
	}
}

func TestDeadLetterAndReplayEndpoints(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	ev := parse(t, "call_analysis_completed/seed_sample.json")[0]
	if err := e.dead.Record(ctx, deadletter.Death{Event: ev, TaskID: ev.DedupeKey, Attempts: 1, MappingVersion: "v1",
		Error: deadletter.Error{Class: "permanent", Code: "VALIDATION_ERROR", Status: 400, Message: "hs_call_to_number 090-1234-5678 invalid"}}); err != nil {
		t.Fatal(err)
	}
	r := e.do(t, "GET", "/admin/deadletter?error_code=validation_error&route=sales", bearer(ro), nil)
	var list struct {
		Entries []deadletter.Entry `json:"entries"`
		Total   int                `json:"total"`
	}
	if err := json.Unmarshal([]byte(r.body), &list); err != nil || r.status != 200 {
		t.Fatalf("GET deadletter = %d %s", r.status, r.body)
	}
	if len(list.Entries) != 1 || list.Total != 1 || list.Entries[0].Error.Message != "hs_call_to_number 090-****-5678 invalid" {
		t.Errorf("entries = %s", r.body)
	}
	assertSafe(t, r.body, ev)
	if r := e.do(t, "GET", "/admin/deadletter?error_class=fatal", bearer(ro), nil); r.status != 400 {
		t.Errorf("bad class = %d", r.status)
	}

	// A dry run queues nothing and shows the body by its length only.
	r = e.do(t, "POST", "/admin/replay", bearer(rwNew), strings.NewReader(`{"call_id": ["`+ev.CallID+`"], "dry_run": true}`))
	if r.status != 200 || !strings.Contains(r.body, `"would_send": 1`) || !strings.Contains(r.body, `"chars"`) {
		t.Fatalf("dry run = %d %s", r.status, r.body)
	}
	assertSafe(t, r.body, ev)
	if qs, _ := e.inspector.Queues(); len(qs) != 0 {
		t.Errorf("a dry run created queues %v", qs)
	}
	r = e.do(t, "POST", "/admin/replay", bearer(rwNew), strings.NewReader(`{"call_id": ["`+ev.CallID+`"]}`))
	if r.status != 200 || !strings.Contains(r.body, `"queued": 1`) {
		t.Fatalf("replay = %d %s", r.status, r.body)
	}
	if info, err := e.inspector.GetTaskInfo(e.queue.Name, ev.DedupeKey); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("replayed task: %v, %v", info, err)
	}
	r = e.do(t, "POST", "/admin/replay", bearer(rwNew), strings.NewReader(`{"call_id": ["`+ev.CallID+`"]}`))
	if !strings.Contains(r.body, `"already_queued": 1`) {
		t.Errorf("second replay = %s", r.body)
	}
	for body, code := range map[string]string{`{}`: "unnarrowed", `{"route": 1}`: "invalid_body", `{"colour": "red"}`: "invalid_body", `{"since": "soon"}`: "invalid_query"} {
		if r := e.do(t, "POST", "/admin/replay", bearer(rwNew), strings.NewReader(body)); r.status != 400 || !strings.Contains(r.body, code) {
			t.Errorf("replay %s = %d %s, want 400 %s", body, r.status, r.body, code)
		}
	}
}

func TestBackfillEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	src, _ := examples.Payload("call_analysis_completed/seed_sample.json")
	var line bytes.Buffer
	if err := json.Compact(&line, src); err != nil {
		t.Fatal(err)
	}
	body := line.String() + "\n{broken\n" + line.String() + "\n"
	r := e.do(t, "POST", "/admin/backfill?route=sales", bearer(rwOld), strings.NewReader(body))
	if r.status != 200 || !strings.Contains(r.body, `"queued": 1`) || !strings.Contains(r.body, `"duplicates": 1`) || !strings.Contains(r.body, `"invalid": 1`) {
		t.Fatalf("backfill = %d %s", r.status, r.body)
	}
	pending, _ := e.inspector.ListPendingTasks(e.queue.Name)
	if len(pending) != 1 || bytes.Contains(pending[0].Payload, []byte("params_key")) {
		t.Errorf("pending = %d tasks; the route's payload credential must be removed", len(pending))
	}
	if r := e.do(t, "POST", "/admin/backfill?route=nope", bearer(rwOld), strings.NewReader(body)); r.status != 400 || !strings.Contains(r.body, "unknown_route") {
		t.Errorf("unknown route = %d %s", r.status, r.body)
	}
	if r := e.do(t, "POST", "/admin/backfill?route=sales&dry_run=true", bearer(rwOld), strings.NewReader(body)); r.status != 200 || !strings.Contains(r.body, `"events": 2`) {
		t.Errorf("dry run = %d %s", r.status, r.body)
	}
}

// asynqmon (built against asynq v0.24) works on our asynq v0.26 queue under /admin/queues:
// read-only credentials see it, only read-write ones act on it, and payloads never show.
func TestAsynqmon(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ev := parse(t, "call_analysis_completed/seed_sample.json")[0]
	enq := receiverEnqueue(t, e.rdb, e.queue, nil)
	if _, err := enq.Enqueue(context.Background(), "sales", []*miitel.Event{ev}); err != nil {
		t.Fatal(err)
	}
	r := e.do(t, "GET", "/admin/queues/api/queues", bearer(ro), nil)
	if r.status != 200 || !strings.Contains(r.body, `"queue":"`+e.queue.Name+`"`) {
		t.Fatalf("queues = %d %s", r.status, r.body)
	}
	r = e.do(t, "GET", "/admin/queues/api/queues/"+e.queue.Name+"/pending_tasks", bearer(ro), nil)
	if r.status != 200 || !strings.Contains(r.body, ev.DedupeKey) || !strings.Contains(r.body, "detail_id="+ev.Detail.ID) {
		t.Fatalf("pending tasks = %d %s", r.status, r.body)
	}
	assertSafe(t, r.body, ev)
	archive := "/admin/queues/api/queues/" + e.queue.Name + "/pending_tasks:archive_all"
	if r := e.do(t, "POST", archive, bearer(ro), nil); r.status != 403 {
		t.Errorf("read-only POST = %d %s, want 403", r.status, r.body)
	}
	if qi, _ := e.inspector.GetQueueInfo(e.queue.Name); qi.Pending != 1 {
		t.Fatalf("a refused POST changed the queue: %d pending", qi.Pending)
	}
	if r := e.do(t, "POST", archive, bearer(rwOld), nil); r.status >= 300 {
		t.Errorf("read-write POST = %d %s", r.status, r.body)
	}
	if qi, _ := e.inspector.GetQueueInfo(e.queue.Name); qi.Archived != 1 {
		t.Errorf("after archive_all: %+v", qi)
	}
	if r := e.do(t, "GET", "/admin/queues/", bearer(ro), nil); r.status != 200 || !strings.Contains(r.body, "<html") {
		t.Errorf("UI = %d", r.status)
	}
}

// asynqmon closes the client it is given when it is closed; ours must survive that.
func TestAsynqmonCannotCloseOurClient(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	c := sharedConn{rdb}.MakeRedisClient().(redis.UniversalClient)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Errorf("our client after asynqmon closed its copy: %v", err)
	}
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Errorf("the shared client: %v", err)
	}
}

// receiverEnqueue is the receiver's own enqueue, as cmd gives the admin API for backfills.
func receiverEnqueue(t *testing.T, rdb redis.UniversalClient, q config.Queue, st *callstatus.Store) replay.Enqueuer {
	t.Helper()
	o := receiver.EnqueueOptions{Redis: rdb, Queue: q, Timeout: 5 * time.Second}
	if st != nil {
		o.Status = receiver.Status{Lua: callstatus.NoteLua, Args: st}
	}
	e, err := receiver.NewEnqueuer(o)
	if err != nil {
		t.Fatal(err)
	}
	return replay.ReceiverEnqueuer(e)
}
