package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/examples"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// Credentials of the test routes. seedParamsKey is the params_key of MiiTel's own sample.
const (
	seedParamsKey = "z&aH+&Kz8saC"
	bearerOld     = "old-token-0123456789"
	bearerNew     = "new-token-abcdefghij-longer"
	basicUser     = "miitel"
	basicPass     = "s3cret:with:colons"
	headerName    = "X-Webhook-Key"
	headerValue   = "hdr-value-42"
	testQueue     = "miitel-test"
)

// fixedNow stamps ReceivedAt so queued events compare exactly.
var fixedNow = time.Date(2024, 5, 1, 9, 30, 0, 0, time.UTC)

func testRoutes() []config.Route {
	return []config.Route{
		{Name: "seed", Auth: config.Auth{Payload: []config.PayloadCredential{
			{Key: "params_key", Value: config.FromValue(seedParamsKey)},
		}}},
		{Name: "bearer", Auth: config.Auth{Bearer: []config.Secret{
			config.FromValue(bearerOld), config.FromValue(bearerNew),
		}}},
		{Name: "basic", Auth: config.Auth{Basic: []config.BasicCredential{
			{Username: basicUser, Password: config.FromValue(basicPass)},
		}}},
		{Name: "header", Auth: config.Auth{Headers: []config.HeaderCredential{
			{Name: headerName, Value: config.FromValue(headerValue)},
		}}},
		{Name: "open", Auth: config.Auth{Insecure: true}},
	}
}

func testServer() config.Server {
	return config.Server{
		Listen:              "127.0.0.1:0",
		MaxBodyBytes:        1 << 20,
		ReadHeaderTimeout:   5 * time.Second,
		ReadTimeout:         10 * time.Second,
		WriteTimeout:        10 * time.Second,
		IdleTimeout:         10 * time.Second,
		EnqueueTimeout:      5 * time.Second,
		ShutdownTimeout:     5 * time.Second,
		RetryAfter:          30 * time.Second,
		MaxInflightRequests: 64,
		MaxInflightBytes:    64 << 20,
	}
}

func testQueueConfig() config.Queue {
	return config.Queue{Name: testQueue, DedupeWindow: 24 * time.Hour, MaxRetry: 7, TaskTimeout: 90 * time.Second}
}

// harness is one receiver on a private redis-server, served over loopback HTTP.
type harness struct {
	t     testing.TB
	redis *redistest.Server
	rdb   *redis.Client
	r     *Receiver
	http  *httptest.Server
	reg   *prometheus.Registry
	logs  *syncBuffer
	insp  *asynq.Inspector
}

type harnessOption func(*Options)

// newHarness starts a private redis-server and a receiver on it. The go-redis client fails
// fast (short timeouts, no retries) so outage tests answer quickly.
func newHarness(t testing.TB, opts ...harnessOption) *harness {
	t.Helper()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{
		Addr: srv.Addr(), DialTimeout: time.Second, ReadTimeout: 2 * time.Second,
		WriteTimeout: 2 * time.Second, MaxRetries: -1,
	})
	t.Cleanup(func() { _ = rdb.Close() })
	h := newHarnessOn(t, rdb, opts...)
	h.redis = srv
	return h
}

func newHarnessOn(t testing.TB, rdb *redis.Client, opts ...harnessOption) *harness {
	t.Helper()
	h := newHarnessOnUniversal(t, rdb, opts...)
	h.rdb, h.insp = rdb, asynq.NewInspectorFromRedisClient(rdb)
	return h
}

// newHarnessOnUniversal is newHarnessOn for any client (a Cluster's); the harness's
// *redis.Client helpers (pending, redisKeys, the inspector) are not available on it.
func newHarnessOnUniversal(t testing.TB, rdb redis.UniversalClient, opts ...harnessOption) *harness {
	t.Helper()
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	o := Options{
		Routes: testRoutes(), Server: testServer(), Queue: testQueueConfig(), Redis: rdb,
		Logger:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: reg, Now: func() time.Time { return fixedNow },
	}
	for _, f := range opts {
		f(&o)
	}
	r, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs := httptest.NewServer(r.Handler())
	t.Cleanup(hs.Close)
	return &harness{t: t, r: r, http: hs, reg: reg, logs: logs}
}

// post sends body to path the way MiiTel does, plus hdr.
func (h *harness) post(path string, body []byte, hdr http.Header) (*http.Response, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.http.URL+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "MiiTel-Webhook/v1")
	for k, vs := range hdr {
		req.Header.Del(k)
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := h.http.Client().Do(req)
	if err != nil {
		h.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("read response: %v", err)
	}
	return resp, b
}

// pending decodes the events waiting in the test queue, oldest first.
func (h *harness) pending() []*miitel.Event {
	h.t.Helper()
	infos, err := h.insp.ListPendingTasks(testQueue, asynq.PageSize(1000))
	if err != nil {
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return nil
		}
		h.t.Fatalf("list pending: %v", err)
	}
	var out []*miitel.Event
	for _, ti := range infos {
		ev, err := tasks.DecodeCallEvent(asynq.NewTask(ti.Type, ti.Payload))
		if err != nil {
			h.t.Fatalf("decode task %s: %v", ti.ID, err)
		}
		if ti.ID != ev.DedupeKey {
			h.t.Errorf("task id %q != event dedupe key %q", ti.ID, ev.DedupeKey)
		}
		if ti.MaxRetry != 8 || ti.Timeout != 90*time.Second || ti.Retention != 0 { // tasks.MaxRetry(7): see its comment
			h.t.Errorf("task options: max_retry=%d timeout=%s retention=%s, want 8, 1m30s, 0", ti.MaxRetry, ti.Timeout, ti.Retention)
		}
		out = append(out, ev)
	}
	return out
}

// redisKeys counts the keys in the private Redis (proof that a path wrote nothing).
func (h *harness) redisKeys() int64 {
	h.t.Helper()
	n, err := h.rdb.DBSize(context.Background()).Result()
	if err != nil {
		h.t.Fatalf("dbsize: %v", err)
	}
	return n
}

// sample reads one of the payloads the project ships (examples/payloads: MiiTel's published
// samples and our multi-detail call), e.g. "call_analysis_completed/seed_sample.json".
func sample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := examples.Payload(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edit decodes a JSON body, lets f change it and encodes it again.
func edit(t testing.TB, body []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// detail0 returns details[0] of a decoded body.
func detail0(m map[string]any) map[string]any {
	return m["call"].(map[string]any)["details"].([]any)[0].(map[string]any)
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// syncBuffer is a log sink safe for the concurrent writes of a server.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tcpProxy forwards loopback TCP to a Redis and can cut every connection and refuse new
// ones while the Redis behind it keeps its data: a network failure, not a data loss. It can
// also swallow Redis's replies while still forwarding requests: a reply lost on the way.
type tcpProxy struct {
	t      testing.TB
	target string
	addr   string

	mu      sync.Mutex
	ln      net.Listener
	conns   []net.Conn
	drop    bool
	dropped chan struct{} // closed at the first reply swallowed
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	p := &tcpProxy{t: t, target: target}
	p.listen("127.0.0.1:0")
	t.Cleanup(p.cut)
	return p
}

func (p *tcpProxy) listen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatalf("proxy listen: %v", err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { p.replies(c, up); c.Close() }()
		}
	}()
}

// replies copies Redis's answers to the client unless they are being dropped.
func (p *tcpProxy) replies(c, up net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			p.mu.Lock()
			drop, ch := p.drop, p.dropped
			if drop && ch != nil {
				close(ch)
				p.dropped = nil
			}
			p.mu.Unlock()
			if !drop {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// dropReplies swallows every reply from now on; the channel is closed at the first.
func (p *tcpProxy) dropReplies() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop, p.dropped = true, make(chan struct{})
	return p.dropped
}

// cut closes the listener and every proxied connection.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// restore listens again on the same address, forwarding replies again.
func (p *tcpProxy) restore() {
	p.mu.Lock()
	p.drop = false
	p.mu.Unlock()
	p.listen(p.addr)
}
