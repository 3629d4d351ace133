package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// postOK posts and decodes the 200 answer.
func (h *harness) postOK(path string, body []byte) acceptedResponse {
	t := h.t
	t.Helper()
	resp, body := h.post(path, body, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var a acceptedResponse
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// deliver does what the worker does after a successful delivery: the task is gone (no
// retention) and the ledger remembers its dedupe key for the window.
func (h *harness) deliver(ev *miitel.Event) {
	h.t.Helper()
	if err := h.insp.DeleteTask(testQueue, ev.DedupeKey); err != nil {
		h.t.Fatalf("delete task: %v", err)
	}
	if err := h.rdb.Set(context.Background(), tasks.LedgerKey(testQueue, ev.DedupeKey), string(ev.Kind), 24*time.Hour).Err(); err != nil {
		h.t.Fatal(err)
	}
}

// TestDedupe walks the re-send cases of one call through a single receiver.
func TestDedupe(t *testing.T) {
	const path = "/webhooks/miitel/seed"
	seed := sample(t, "call_analysis_completed/seed_sample.json")
	minutes := edit(t, seed, func(m map[string]any) {
		d := detail0(m)
		for _, k := range []string{"analysis", "tags", "comments", "keywords", "phrases", "speech_recognition", "dtmf"} {
			delete(d, k)
		}
		d["minutes"] = "【議題】\n不明"
	})
	memo := edit(t, seed, func(m map[string]any) {
		detail0(m)["tags"] = []any{map[string]any{"created_by": "Edgardo", "creator_type": "TENANT_USER", "value": "Call back"}}
	})
	// The same content re-encoded: keys in another order, no indentation.
	reordered := edit(t, seed, func(map[string]any) {})

	steps := []struct {
		name        string
		body        []byte
		wantResult  string
		wantKind    miitel.Kind
		wantPending int
		thenDeliver bool
		thenArchive bool
		thenExpire  bool
	}{
		{name: "first analysis", body: seed, wantResult: resultQueued, wantKind: miitel.KindAnalysis, wantPending: 1},
		{name: "exact re-send while queued", body: seed, wantResult: resultDuplicate, wantKind: miitel.KindAnalysis, wantPending: 1},
		{name: "re-send with other key order", body: reordered, wantResult: resultDuplicate, wantKind: miitel.KindAnalysis, wantPending: 1, thenDeliver: true},
		{name: "re-send after delivery (ledger)", body: seed, wantResult: resultDuplicate, wantKind: miitel.KindAnalysis, wantPending: 0},
		{name: "changed memo", body: memo, wantResult: resultQueued, wantKind: miitel.KindAnalysis, wantPending: 1, thenArchive: true},
		{name: "re-send of a dead-lettered event", body: memo, wantResult: resultQueued, wantKind: miitel.KindAnalysis, wantPending: 1},
		{name: "minutes after analysis", body: minutes, wantResult: resultQueued, wantKind: miitel.KindMinutes, wantPending: 2},
		{name: "minutes re-sent", body: minutes, wantResult: resultDuplicate, wantKind: miitel.KindMinutes, wantPending: 2, thenExpire: true},
		{name: "after the window (ledger expired)", body: seed, wantResult: resultQueued, wantKind: miitel.KindAnalysis, wantPending: 3},
	}
	h := newHarness(t)
	for _, st := range steps {
		a := h.postOK(path, st.body)
		if len(a.Details) != 1 || a.Details[0].Result != st.wantResult || a.Details[0].Kind != st.wantKind {
			t.Fatalf("%s: response %+v, want one %s %s", st.name, a, st.wantKind, st.wantResult)
		}
		evs := h.pending()
		if len(evs) != st.wantPending {
			t.Fatalf("%s: %d pending, want %d", st.name, len(evs), st.wantPending)
		}
		switch {
		case st.thenDeliver:
			h.deliver(evs[0])
		case st.thenArchive:
			if err := h.insp.ArchiveTask(testQueue, evs[0].DedupeKey); err != nil {
				t.Fatal(err)
			}
		case st.thenExpire: // the dedupe window passes: every ledger entry expires
			keys, err := h.rdb.Keys(context.Background(), tasks.LedgerKey(testQueue, "*")).Result()
			if err != nil || len(keys) != 1 {
				t.Fatalf("ledger keys %v, %v: want the one delivered event", keys, err)
			}
			if err := h.rdb.Del(context.Background(), keys...).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n, err := h.insp.ListArchivedTasks(testQueue); err != nil || len(n) != 0 {
		t.Errorf("archived tasks left: %v %v", n, err)
	}
	for _, m := range []struct {
		name string
		got  float64
		want float64
	}{
		{"requeued", testutil.ToFloat64(h.r.m.requeued.WithLabelValues("seed")), 1},
		{"dup delivered", testutil.ToFloat64(h.r.m.duplicates.WithLabelValues("seed", "analysis", "delivered")), 1},
		{"dup in queue", testutil.ToFloat64(h.r.m.duplicates.WithLabelValues("seed", "analysis", "in_queue")), 2},
		{"dup minutes", testutil.ToFloat64(h.r.m.duplicates.WithLabelValues("seed", "minutes", "in_queue")), 1},
		{"enqueued analysis", testutil.ToFloat64(h.r.m.enqueued.WithLabelValues("seed", "analysis")), 4},
		{"enqueued minutes", testutil.ToFloat64(h.r.m.enqueued.WithLabelValues("seed", "minutes")), 1},
	} {
		if m.got != m.want {
			t.Errorf("metric %s = %v, want %v", m.name, m.got, m.want)
		}
	}
	if !strings.Contains(h.logs.String(), `"msg":"receiver: re-send of a dead-lettered event, queueing it afresh"`) {
		t.Error("no warning logged for the re-queued dead-lettered event")
	}
}

// TestDedupeKey pins what the key depends on: the route, the call, the detail, the kind and
// the queued content, and nothing else.
func TestDedupeKey(t *testing.T) {
	const base = `{"call":{"id":"c","tenant_code":"t","details":[{"id":"d1","call_type":"OUTGOING_CALL",
		"dial_answered_at":"2023-11-28T07:26:23+00:00","tags":[{"value":"a"}],"analysis":{"score":1.50}}]},"params_key":"k"}`
	keyOf := func(route, body string) string {
		t.Helper()
		events, err := ParseEvents(route, []byte(body), []string{"params_key"}, fixedNow)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		return events[0].DedupeKey
	}
	want := keyOf("r", base)
	if len(want) != dedupeKeyLen || strings.Trim(want, "0123456789abcdef") != "" {
		t.Errorf("key %q is not %d hex chars", want, dedupeKeyLen)
	}
	same := map[string]string{
		"key order and whitespace": `{"params_key":"k","call":{"details":[{"analysis":{"score":1.50},"tags":[{"value":"a"}],
			"dial_answered_at":"2023-11-28T07:26:23+00:00","call_type":"OUTGOING_CALL","id":"d1"}],"tenant_code":"t","id":"c"}}`,
		"number spelling":             strings.Replace(base, "1.50", "1.5", 1),
		"another credential value":    strings.Replace(base, `"k"`, `"k2"`, 1),
		"a key the types do not know": strings.Replace(base, `"id":"d1",`, `"id":"d1","brand_new":{"x":1},`, 1),
		"explicit nulls":              strings.Replace(base, `"id":"d1",`, `"id":"d1","from_number":null,"minutes_x":null,`, 1),
	}
	for name, body := range same {
		if got := keyOf("r", body); got != want {
			t.Errorf("%s changed the key", name)
		}
	}
	differs := map[string]string{
		"call id":            strings.Replace(base, `"id":"c"`, `"id":"c2"`, 1),
		"tenant":             strings.Replace(base, `"tenant_code":"t"`, `"tenant_code":"t2"`, 1),
		"detail id":          strings.Replace(base, `"id":"d1"`, `"id":"d2"`, 1),
		"memo":               strings.Replace(base, `"value":"a"`, `"value":"b"`, 1),
		"kind (unanswered)":  strings.Replace(base, `"2023-11-28T07:26:23+00:00"`, `null`, 1),
		"kind (minutes)":     strings.Replace(base, `"id":"d1",`, `"id":"d1","minutes":"m",`, 1),
		"additional payload": strings.Replace(base, `"params_key":"k"`, `"params_key":"k","team":"x"`, 1),
	}
	for name, body := range differs {
		if body == base {
			t.Fatalf("%s: edit did not apply", name)
		}
		if got := keyOf("r", body); got == want {
			t.Errorf("changing the %s kept the key", name)
		}
	}
	if keyOf("r2", base) == want {
		t.Error("another route kept the key")
	}
}

// TestPayloadChangesKey: additional payload keys are part of the content, credential keys
// are not (and never queued).
func TestPayloadChangesKey(t *testing.T) {
	h := newHarness(t)
	seed := sample(t, "call_analysis_completed/seed_sample.json")
	withTeam := edit(t, seed, func(m map[string]any) { m["team"] = "sales" })
	h.postOK("/webhooks/miitel/seed", seed)
	a := h.postOK("/webhooks/miitel/seed", withTeam)
	if a.Queued != 1 {
		t.Fatalf("changed additional payload was taken as a re-send: %+v", a)
	}
	var payloads []map[string]any
	for _, ev := range h.pending() {
		payloads = append(payloads, ev.Payload)
	}
	want := []map[string]any{nil, {"team": "sales"}}
	if diff := cmp.Diff(want, payloads); diff != "" {
		t.Errorf("queued payloads (-want +got):\n%s", diff)
	}
}

// TestLostReply: a request's tasks are enqueued by one script, so Redis queues all of its
// details or none; what remains is a reply lost on the way back (the connection breaks
// after Redis ran the script). The answer is 503 (nothing acknowledged); MiiTel's re-send
// after recovery finds every detail already queued, so every detail is queued exactly once.
func TestLostReply(t *testing.T) {
	h := newHarness(t)
	proxy := newTCPProxy(t, h.redis.Addr())
	rdb := redis.NewClient(&redis.Options{Addr: proxy.addr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	ph := newHarnessOn(t, rdb, func(o *Options) { o.Server.EnqueueTimeout = 300 * time.Millisecond })
	// Warm up: the connection exists and Redis has the script cached, so the next request
	// is one command whose reply is the script's. Two requests: the first (the queue set's
	// SADD with the script) goes through go-redis's pipeline pool, the next ones through its
	// main pool, each with its own connection.
	ph.postOK("/webhooks/miitel/open", sample(t, "call_analysis_completed/sample2.json"))
	ph.postOK("/webhooks/miitel/open", sample(t, "call_analysis_completed/seed_sample.json"))

	replied := proxy.dropReplies()
	body := sample(t, "multi_detail.json")
	resp, b := ph.post("/webhooks/miitel/seed", body, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "30" {
		t.Fatalf("lost reply: %d Retry-After=%q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	<-replied                            // Redis answered the script: it ran
	if n := len(h.pending()); n != 2+3 { // read through the direct client: the data is intact
		t.Fatalf("%d tasks queued, want the warm-ups' and all 3 details", n)
	}

	proxy.cut()
	proxy.restore()
	a := ph.postOK("/webhooks/miitel/seed", body)
	if a.Queued != 0 || a.Duplicates != 3 {
		t.Fatalf("re-send after recovery: %+v", a)
	}
	ids := map[string]int{}
	for _, ev := range h.pending() {
		ids[ev.Detail.ID]++
	}
	if len(ids) != 4 {
		t.Errorf("queued %v, want each detail once", ids)
	}
}

// TestEnqueueTimeout: a Redis that accepts connections and never answers gets a 503 once
// Server.EnqueueTimeout passes, although the client's read timeout is far longer: with the
// client config builds (context deadlines bound its socket I/O, no goroutine per request)
// and with a plain client (which ignores them; the receiver abandons the call instead).
func TestEnqueueTimeout(t *testing.T) {
	clients := map[string]func(addr string) (*redis.Client, error){
		"config client": func(addr string) (*redis.Client, error) {
			o, err := config.Redis{URL: "redis://" + addr, ReadTimeout: time.Minute, WriteTimeout: time.Minute}.UniversalOptions()
			if err != nil {
				return nil, err
			}
			return redis.NewClient(o.Simple()), nil // what NewUniversalClient builds for one address
		},
		"plain client": func(addr string) (*redis.Client, error) {
			return redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: time.Minute, WriteTimeout: time.Minute, MaxRetries: -1}), nil
		},
	}
	for name, newClient := range clients {
		t.Run(name, func(t *testing.T) {
			addr := hungRedis(t)
			rdb, err := newClient(addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rdb.Close() })
			h := newHarnessOn(t, rdb, func(o *Options) { o.Server.EnqueueTimeout = 200 * time.Millisecond })
			if got, want := h.r.enq.ctxDeadlines, name == "config client"; got != want {
				t.Fatalf("client honours context deadlines: %v, want %v", got, want)
			}

			resp, body := h.post("/webhooks/miitel/seed", sample(t, "call_analysis_completed/seed_sample.json"), nil)
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if !strings.Contains(h.logs.String(), "redis did not answer within 200ms") {
				t.Errorf("log does not say why: %s", h.logs.String())
			}
			if err := h.r.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "did not answer within 200ms") {
				t.Errorf("Ready against a hung redis: %v", err)
			}
		})
	}
}

// hungRedis listens on a free port, accepts connections and never answers; it returns the
// address.
func hungRedis(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn // read by the cleanup only after the accept loop has ended
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // read nothing, answer nothing
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-accepted
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestManyDetailsOneRequest: details are queued in order and the answer lists each.
func TestManyDetailsOneRequest(t *testing.T) {
	h := newHarness(t)
	body := edit(t, sample(t, "call_analysis_completed/sample2.json"), func(m map[string]any) {
		call := m["call"].(map[string]any)
		d := call["details"].([]any)[0].(map[string]any)
		var ds []any
		for i := range 20 {
			c := map[string]any{}
			for k, v := range d {
				c[k] = v
			}
			c["id"] = fmt.Sprintf("leg-%02d", i)
			ds = append(ds, c)
		}
		call["details"] = ds
	})
	a := h.postOK("/webhooks/miitel/open", body)
	if a.Queued != 20 || len(a.Details) != 20 || a.Details[19].ID != "leg-19" {
		t.Fatalf("response %+v", a)
	}
	if n := len(h.pending()); n != 20 {
		t.Errorf("%d pending, want 20", n)
	}
}

// TestConcurrentRequests: requests arriving together share enqueue scripts
// (enqueue.Batcher); each still gets the answer for its own details. Forty distinct calls
// are each queued, eight re-sends of one call at the same moment queue it once and answer
// the other seven as duplicates, Redis holds 41 tasks, and the scripts carried every
// request once (mcs_receiver_enqueue_batch_requests).
func TestConcurrentRequests(t *testing.T) {
	h := newHarness(t)
	base := sample(t, "call_analysis_completed/sample2.json")
	withDetail := func(id string) []byte {
		return edit(t, base, func(m map[string]any) {
			call := m["call"].(map[string]any)
			call["id"] = "call-" + id
			call["details"].([]any)[0].(map[string]any)["id"] = id
		})
	}
	const distinct, resends = 40, 8
	type answer struct {
		detail string
		a      acceptedResponse
		err    error
	}
	answers := make(chan answer, distinct+resends)
	post := func(detail string, body []byte) {
		resp, err := http.Post(h.http.URL+"/webhooks/miitel/open", "application/json; charset=utf-8", strings.NewReader(string(body)))
		if err != nil {
			answers <- answer{detail: detail, err: err}
			return
		}
		defer resp.Body.Close()
		var a acceptedResponse
		err = json.NewDecoder(resp.Body).Decode(&a)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		answers <- answer{detail, a, err}
	}
	shared := withDetail("shared")
	for i := range distinct {
		id := fmt.Sprintf("conc-%02d", i)
		go post(id, withDetail(id))
	}
	for range resends {
		go post("shared", shared)
	}
	sharedQueued := 0
	for range distinct + resends {
		ans := <-answers
		if ans.err != nil {
			t.Fatalf("detail %s: %v", ans.detail, ans.err)
		}
		if len(ans.a.Details) != 1 || ans.a.Details[0].ID != ans.detail {
			t.Fatalf("request for detail %s answered %+v", ans.detail, ans.a)
		}
		switch res := ans.a.Details[0].Result; {
		case ans.detail == "shared" && res == resultQueued:
			sharedQueued++
		case ans.detail == "shared" && res == resultDuplicate:
		case res != resultQueued:
			t.Fatalf("distinct detail %s: %s", ans.detail, res)
		}
	}
	if sharedQueued != 1 {
		t.Fatalf("eight simultaneous re-sends queued the call %d times, want once", sharedQueued)
	}
	if n := len(h.pending()); n != distinct+1 {
		t.Fatalf("%d pending, want %d", n, distinct+1)
	}
	var m dto.Metric
	if err := h.r.enq.m.batchSize.Write(&m); err != nil {
		t.Fatal(err)
	}
	if sum := m.GetHistogram().GetSampleSum(); sum != distinct+resends {
		t.Fatalf("scripts carried %v requests, want %d", sum, distinct+resends)
	}
	t.Logf("%d requests in %d scripts", distinct+resends, m.GetHistogram().GetSampleCount())
}

// TestBoundedSaysWhy: an enqueue that fails with a deadline says Redis did not answer in
// time, also when the deadline that ended it was the shared script's, which may pass a
// moment before the request's own context reports it (enqueue.Batcher).
func TestBoundedSaysWhy(t *testing.T) {
	for _, ctxDeadlines := range []bool{true, false} {
		_, err := bounded(context.Background(), time.Hour, ctxDeadlines, func(context.Context) (int, error) {
			return 0, fmt.Errorf("enqueue: %w", context.DeadlineExceeded) // the script's deadline, not ours
		})
		if err == nil || !strings.Contains(err.Error(), "redis did not answer within 1h0m0s") || failureReason(err) != reasonTimeout {
			t.Errorf("ctxDeadlines %v: %v (reason %s), want a timeout that says so", ctxDeadlines, err, failureReason(err))
		}
		boom := errors.New("ERR boom")
		if _, err := bounded(context.Background(), time.Hour, ctxDeadlines, func(context.Context) (int, error) { return 0, boom }); err != boom {
			t.Errorf("ctxDeadlines %v: another error came back as %v", ctxDeadlines, err)
		}
	}
}
