package receiver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

func TestNewRejectsBadConfig(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled by New
	t.Cleanup(func() { _ = rdb.Close() })
	tests := []struct {
		name   string
		modify func(o *Options)
		want   []string
	}{
		{"route without credentials", func(o *Options) {
			o.Routes = []config.Route{{Name: "closed"}}
		}, []string{`route "closed": no credentials configured`}},
		{"unresolved secrets", func(o *Options) {
			o.Routes = []config.Route{{Name: "r", Auth: config.Auth{
				Bearer:  []config.Secret{config.FromEnv("UNSET")},
				Basic:   []config.BasicCredential{{Username: "a:b", Password: config.FromValue("p")}},
				Headers: []config.HeaderCredential{{Name: "", Value: config.FromValue("v")}},
				Payload: []config.PayloadCredential{{Key: "call", Value: config.FromValue("v")}},
			}}}
		}, []string{
			`route "r": auth.bearer[0] is empty (unresolved secret?)`,
			`route "r": auth.basic[0].username must not contain ':'`,
			`route "r": auth.headers[0].name is empty`,
			`route "r": auth.payload[0].key "call" cannot carry a credential`,
		}},
		{"bad CIDRs", func(o *Options) {
			o.Routes[0].Auth.AllowCIDRs = []string{"18.177.83.94/33", "nonsense"}
			o.Server.TrustedProxies = []string{"10.0.0.0/8", "proxy.local"}
		}, []string{`auth.allow_cidrs[0]: "18.177.83.94/33" is not a CIDR`, `auth.allow_cidrs[1]: "nonsense" is not an IP address or CIDR`, "server.trusted_proxies:"}},
		{"duplicate route", func(o *Options) { o.Routes = append(o.Routes, o.Routes[0]) }, []string{`route "seed" is configured twice`}},
		{"server and queue", func(o *Options) {
			o.Redis, o.Server.MaxBodyBytes, o.Server.EnqueueTimeout, o.Queue.Name = nil, 0, 0, ""
		}, []string{"a redis client is required", "server.max_body_bytes must be positive", "server.enqueue_timeout must be positive", "queue.name must not be empty"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Routes: testRoutes(), Server: testServer(), Queue: testQueueConfig(), Redis: rdb}
			tc.modify(&o)
			_, err := New(o)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("New: %v, want ErrConfig", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not mention %q", err, w)
				}
			}
		})
	}
	t.Run("insecure route needs no credentials", func(t *testing.T) {
		_, err := New(Options{Routes: []config.Route{{Name: "default", Auth: config.Auth{Insecure: true}}},
			Server: testServer(), Queue: testQueueConfig(), Redis: rdb})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestMetrics gathers the receiver's metrics after a few requests.
func TestMetrics(t *testing.T) {
	h := newHarness(t)
	seed := sample(t, "call_analysis_completed/seed_sample.json")
	h.post("/webhooks/miitel/seed", seed, nil)
	h.post("/webhooks/miitel/seed", seed, nil)
	h.post("/webhooks/miitel/bearer", seed, nil)
	h.post("/webhooks/miitel/nope", seed, nil)
	h.post("/webhooks/miitel/open", []byte(`{"challenge":"x"}`), nil)

	want := `
# HELP mcs_receiver_requests_total Webhook requests by route, outcome and HTTP status.
# TYPE mcs_receiver_requests_total counter
mcs_receiver_requests_total{outcome="challenge",route="open",status="200"} 1
mcs_receiver_requests_total{outcome="duplicate",route="seed",status="200"} 1
mcs_receiver_requests_total{outcome="not_found",route="_unknown",status="404"} 1
mcs_receiver_requests_total{outcome="queued",route="seed",status="200"} 1
mcs_receiver_requests_total{outcome="unauthorized",route="bearer",status="401"} 1
# HELP mcs_receiver_enqueued_tasks_total Call-detail tasks accepted by Redis, by route and event kind.
# TYPE mcs_receiver_enqueued_tasks_total counter
mcs_receiver_enqueued_tasks_total{kind="analysis",route="seed"} 1
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want),
		"mcs_receiver_requests_total", "mcs_receiver_enqueued_tasks_total"); err != nil {
		t.Error(err)
	}
	// seed and open; the bearer request got its 401 before its body was read.
	if n := testutil.CollectAndCount(h.r.m.bodyBytes); n != 2 {
		t.Errorf("body_bytes series: %d, want 2", n)
	}
	if n := testutil.CollectAndCount(h.r.m.enqueueDur); n != 1 {
		t.Errorf("enqueue_duration series: %d", n)
	}
}

// TestWebhookPortServesNoOps: the public port answers liveness and the webhook routes only;
// readiness, metrics, pprof and the admin API are the ops listener's.
func TestWebhookPortServesNoOps(t *testing.T) {
	h := newHarness(t)
	for _, path := range []string{"/readyz", "/metrics", "/admin/calls/x", "/admin/queues", "/debug/pprof/"} {
		if code := get(t, h, path); code != http.StatusNotFound {
			t.Errorf("GET %s on the webhook port: %d, want 404", path, code)
		}
	}
	if code := get(t, h, "/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz: %d", code)
	}
}

// TestSharedRegistry: two receivers on one registry share collectors instead of failing.
func TestSharedRegistry(t *testing.T) {
	h := newHarness(t)
	if _, err := New(Options{Routes: testRoutes(), Server: testServer(), Queue: testQueueConfig(), Redis: h.rdb, Registerer: h.reg}); err != nil {
		t.Fatal(err)
	}
}

// TestLogsKeepSecretsOut sends requests that fail and succeed and checks the log holds
// identifiers but no credential, phone number or transcript.
func TestLogsKeepSecretsOut(t *testing.T) {
	h := newHarness(t)
	seed := sample(t, "call_analysis_completed/seed_sample.json")
	h.post("/webhooks/miitel/seed", seed, nil)
	h.post("/webhooks/miitel/bearer", seed, bearer(bearerOld))
	h.post("/webhooks/miitel/bearer", seed, bearer("wrong-token-value"))
	h.post("/webhooks/miitel/seed", []byte(strings.Replace(string(seed), `"to_number": "4800000000"`, `"to_number": 4800000000`, 1)), nil)
	h.redis.Stop()
	h.post("/webhooks/miitel/seed", seed, nil)

	logs := h.logs.String()
	for _, secret := range []string{seedParamsKey, bearerOld, "wrong-token-value", "4800000000", "8330000000", "Arizona", "Left Message"} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains %q", secret)
		}
	}
	for _, want := range []string{`"call_id":"99e2fdb7-845a-46de-8d94-882add220551"`, `"outcome":"forbidden"`,
		`"error":"call.details[0].to_number must be a string, got number"`, `"outcome":"unavailable"`, `"kinds":["analysis"]`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s", want)
		}
	}
}

// TestServeGracefulShutdown: cancelling Serve's context stops new connections but lets a
// request already being received finish and get its answer.
func TestServeGracefulShutdown(t *testing.T) {
	h := newHarness(t)
	// Shutdown waits for requests whose handler runs. One whose headers are read but whose
	// handler has not started is dropped by net/http (the client sees a reset and sends
	// again), so the test cancels only once the handler has begun.
	inHandler := make(chan struct{}, 1)
	next := h.r.handler
	h.r.handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		select {
		case inHandler <- struct{}{}:
		default:
		}
		next.ServeHTTP(w, req)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- h.r.Serve(ctx, ln) }()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := sample(t, "call_analysis_completed/seed_sample.json")
	head := fmt.Sprintf("POST /webhooks/miitel/seed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json; charset=utf-8\r\nUser-Agent: MiiTel-Webhook/v1\r\nContent-Length: %d\r\n\r\n", len(body))
	if _, err := io.WriteString(conn, head+string(body[:100])); err != nil {
		t.Fatal(err)
	}
	<-inHandler // the handler is reading our body
	cancel()

	// New connections are refused once shutdown began; Shutdown closes the listener first,
	// so poll by dialling until refused (each dial is a real attempt, not a sleep).
	for {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			break
		}
		c.Close()
	}
	if _, err := conn.Write(body[100:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request lost on shutdown: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("in-flight request: %d", resp.StatusCode)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if n := len(h.pending()); n != 1 {
		t.Errorf("%d tasks queued, want 1", n)
	}
}

func TestRunListenError(t *testing.T) {
	h := newHarness(t)
	h.r.server.Listen = "256.0.0.1:99999"
	if err := h.r.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "receiver: listen") {
		t.Errorf("Run: %v", err)
	}
}

// TestEmbeddedRedis: the embedded default runs asynq on miniredis through the same
// redis.UniversalClient; the accept, dedupe and dead-letter paths work there too.
func TestEmbeddedRedis(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	h := newHarnessOn(t, rdb)
	seed := sample(t, "call_analysis_completed/seed_sample.json")
	if a := h.postOK("/webhooks/miitel/seed", seed); a.Queued != 1 {
		t.Fatalf("first: %+v", a)
	}
	if a := h.postOK("/webhooks/miitel/seed", seed); a.Duplicates != 1 {
		t.Fatalf("re-send: %+v", a)
	}
	evs := h.pending()
	if len(evs) != 1 {
		t.Fatalf("%d pending", len(evs))
	}
	if err := h.insp.ArchiveTask(testQueue, evs[0].DedupeKey); err != nil {
		t.Fatal(err)
	}
	if a := h.postOK("/webhooks/miitel/seed", seed); a.Queued != 1 {
		t.Fatalf("re-send after dead letter: %+v", a)
	}
	if err := h.r.Ready(context.Background()); err != nil {
		t.Errorf("Ready: %v", err)
	}
}

// TestLedgerEntrySize measures what one ledger entry costs in a real Redis, as the worker
// writes it (key mcs:ledger:<32 hex>, value the kind, TTL the dedupe window): MEMORY USAGE of
// one key, and used_memory grown by 10,000 keys, which also counts the expiry entries.
func TestLedgerEntrySize(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var one int64
	for _, kind := range []string{"analysis", "minutes", "unanswered"} {
		key := tasks.LedgerKey(testQueue, strings.Repeat("0123456789abcdef", 2))
		if err := h.rdb.Set(ctx, key, kind, 24*time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		n, err := h.rdb.MemoryUsage(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		one = max(one, n)
	}
	const n = 10000
	before := usedMemory(t, h.rdb)
	pipe := h.rdb.Pipeline()
	for i := range n {
		pipe.Set(ctx, tasks.LedgerKey(testQueue, fmt.Sprintf("%032x", i)), "unanswered", 24*time.Hour)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	perEntry := float64(usedMemory(t, h.rdb)-before) / n
	t.Logf("ledger entry: MEMORY USAGE %d bytes; used_memory growth %.1f bytes/entry over %d entries", one, perEntry, n)
	// For scale: what asynq Retention would have kept per event instead.
	a := h.postOK("/webhooks/miitel/seed", sample(t, "call_analysis_completed/seed_sample.json"))
	taskBytes, err := h.rdb.MemoryUsage(ctx, "asynq:{"+testQueue+"}:t:"+h.pending()[0].DedupeKey).Result()
	if err != nil || a.Queued != 1 {
		t.Fatalf("task memory: %v (%+v)", err, a)
	}
	t.Logf("the seed_sample task itself: MEMORY USAGE %d bytes (what Retention would keep per event)", taskBytes)
	if one >= 200 {
		t.Errorf("a ledger entry costs %d bytes (MEMORY USAGE), want < 200", one)
	}
	// used_memory also holds the hash tables' bucket arrays, sized in powers of two and
	// possibly mid-rehash, so it gets headroom; it still proves no hidden per-entry cost.
	if perEntry >= 300 {
		t.Errorf("used_memory grew %.1f bytes per ledger entry, want < 300", perEntry)
	}
}

func usedMemory(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.InfoMap(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	var v int64
	if _, err := fmt.Sscan(info["Memory"]["used_memory"], &v); err != nil {
		t.Fatalf("used_memory: %v", err)
	}
	return v
}
