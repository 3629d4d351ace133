package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

var sampleDir = payloadDir

var seedSample = filepath.Join(sampleDir, "call_analysis_completed/seed_sample.json")

// seenRequest is what the fake MiiTel receiver saw of one request.
type seenRequest struct {
	Proto, Method, UserAgent, ContentType, Auth, Custom string
	Body                                                map[string]any
}

// fakeReceiver records requests and answers with respond(i) (status, body) for the i-th.
func fakeReceiver(t *testing.T, respond func(i int, body map[string]any) (int, string, string)) (*httptest.Server, func() []seenRequest) {
	var mu sync.Mutex
	var seen []seenRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(b, &body)
		mu.Lock()
		i := len(seen)
		seen = append(seen, seenRequest{r.Proto, r.Method, r.UserAgent(), r.Header.Get("Content-Type"),
			r.Header.Get("Authorization"), r.Header.Get("X-Custom"), body})
		mu.Unlock()
		status, ct, text := respond(i, body)
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(status)
		_, _ = io.WriteString(w, text)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []seenRequest {
		mu.Lock()
		defer mu.Unlock()
		return append([]seenRequest(nil), seen...)
	}
}

func ok200(int, map[string]any) (int, string, string) {
	return 200, "application/json", `{"status":"accepted"}`
}

func echo(_ int, body map[string]any) (int, string, string) {
	tok, _ := body["challenge"].(string)
	return 200, "text/plain", tok
}

func TestSendUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{seedSample}, "--url is required"},
		{[]string{"--url", "ftp://x/y", seedSample}, `--url "ftp://x/y" is not an http(s) URL`},
		{[]string{"--url", "http://127.0.0.1:1/x"}, "give at least one FILE to send, or --challenge"},
		{[]string{"--url", "http://127.0.0.1:1/x", "--challenge", seedSample}, "--challenge sends its own body: give no FILE"},
		{[]string{"--url", "http://127.0.0.1:1/x", "--count", "2", "--duration", "1s", seedSample}, "give --count or --duration, not both"},
		{[]string{"--url", "http://127.0.0.1:1/x", "--concurrency", "0", seedSample}, "--concurrency must be at least 1"},
		{[]string{"--url", "http://127.0.0.1:1/x", "--rate", "fast", seedSample}, `--rate: "fast" is not N, N/s, N/m or N/h`},
		{[]string{"--url", "http://127.0.0.1:1/x", "--header", "nocolon", seedSample}, `want K:V, got "nocolon"`},
		{[]string{"--url", "http://127.0.0.1:1/x", "--header", "User-Agent: curl", seedSample}, "MiiTel does not let an admin change User-Agent"},
		{[]string{"--url", "http://127.0.0.1:1/x", "--payload", "challenge=x", seedSample}, `"challenge" is not an additional payload key`},
		{[]string{"--url", "http://127.0.0.1:1/x", "no-such-file.json"}, "no-such-file.json: no such file or directory"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			code, _, stderr := runCLI(t, nil, append([]string{"send"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tc.want)
			}
		})
	}
	t.Run("--help", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, nil, "send", "--help")
		if code != exitOK || !strings.Contains(stdout, "MiiTel-Webhook/v1") || !strings.Contains(stdout, "--concurrency int") || stderr != "" {
			t.Errorf("exit %d, help on stdout %q, stderr %q", code, stdout, stderr)
		}
	})
}

// withKey appends a member to what mergePayload leaves, without decoding it: the result
// is the same object with one more key, and that key wins over one of the same name.
func TestWithKey(t *testing.T) {
	for _, in := range []string{`{}`, `{"call":{"id":"c"},"params_key":"k"}`, `{"mcs_send_seq":"from-the-file"}`} {
		merged, err := mergePayload([]byte(in), nil)
		if err != nil {
			t.Fatal(err)
		}
		var got, want map[string]any
		if err := json.Unmarshal(withKey(merged, "mcs_send_seq", "run-7"), &got); err != nil {
			t.Fatalf("%s: not JSON: %v", in, err)
		}
		_ = json.Unmarshal([]byte(in), &want)
		want["mcs_send_seq"] = "run-7"
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", in, d)
		}
	}
}

// An answer's excerpt is cut on a rune boundary: a Japanese message stays valid UTF-8.
func TestExcerptKeepsRunesWhole(t *testing.T) {
	got := excerpt([]byte(strings.Repeat("あ", 200))) // 600 bytes, cut at 300 = 100 runes
	if !utf8.ValidString(got) || got != strings.Repeat("あ", 100)+"..." {
		t.Errorf("excerpt = %q", got)
	}
	got = excerpt([]byte("x" + strings.Repeat("あ", 200))) // the cut falls inside a rune
	if !utf8.ValidString(got) || got != "x"+strings.Repeat("あ", 99)+"..." {
		t.Errorf("excerpt = %q", got)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]rate.Limit{"": 0, "0": 0, "20": 20, "20/s": 20, "120/m": 2, "3600/h": 1, "0.5": 0.5} {
		got, err := parseRate(in)
		if err != nil || got != want {
			t.Errorf("parseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"x", "-1", "5/d", "/s"} {
		if _, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) accepted", in)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[int]time.Duration{50: 50 * time.Millisecond, 90: 90 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond} {
		if got := percentile(d, p); got != want {
			t.Errorf("p%d = %s, want %s", p, got, want)
		}
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("p99 of one = %s", got)
	}
}

// TestSendLikeMiiTel checks the wire format: HTTP/1.1 POST, MiiTel's fixed headers, the
// admin's additional headers, the file body with the additional payload merged in.
func TestSendLikeMiiTel(t *testing.T) {
	srv, seen := fakeReceiver(t, ok200)
	code, stdout, stderr := runCLI(t, nil, "send", "--url", srv.URL+"/webhooks/miitel/x",
		"--header", "Authorization: Bearer tok", "--header", "X-Custom:v1", "--payload", "params_key=k2", "--payload", "team=sales",
		seedSample, filepath.Join(sampleDir, "call_analysis_completed/sample2.json"))
	if code != exitOK {
		t.Fatalf("exit %d: %s %s", code, stdout, stderr)
	}
	reqs := seen()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	for _, r := range reqs {
		want := seenRequest{"HTTP/1.1", "POST", "MiiTel-Webhook/v1", "application/json; charset=utf-8", "Bearer tok", "v1", r.Body}
		if diff := cmp.Diff(want, r); diff != "" {
			t.Errorf("request (-want +got):\n%s", diff)
		}
		if r.Body["params_key"] != "k2" || r.Body["team"] != "sales" || r.Body["call"] == nil {
			t.Errorf("body keys: params_key=%v team=%v call present=%v", r.Body["params_key"], r.Body["team"], r.Body["call"] != nil)
		}
	}
	for _, want := range []string{"seed_sample.json -> 200 OK", "sample2.json -> 200 OK",
		"sent 2 requests in", "accepted 2, rejected 0, failed 0", "latency p50 "} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}

func TestSendChallenge(t *testing.T) {
	tests := []struct {
		name     string
		respond  func(int, map[string]any) (int, string, string)
		wantCode int
		wantOut  string
	}{
		{"correct echo", echo, exitOK, "echoed the token"},
		{"wrong echo", func(int, map[string]any) (int, string, string) { return 200, "text/plain", "nope" }, exitFailure, `challenge echo wrong: got "nope"`},
		{"json answer", func(_ int, b map[string]any) (int, string, string) {
			return 200, "application/json", b["challenge"].(string)
		}, exitFailure, `challenge answered with content type "application/json", want text/plain`},
		{"rejected", func(int, map[string]any) (int, string, string) {
			return 401, "application/json", `{"code":"unauthorized"}`
		}, exitFailure, "401 Unauthorized"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, seen := fakeReceiver(t, tc.respond)
			code, stdout, stderr := runCLI(t, nil, "send", "--url", srv.URL, "--challenge", "--payload", "params_key=z&aH+&Kz8saC")
			if code != tc.wantCode || !strings.Contains(stdout, tc.wantOut) {
				t.Errorf("exit %d (want %d), stdout %q, stderr %q; want %q", code, tc.wantCode, stdout, stderr, tc.wantOut)
			}
			body := seen()[0].Body
			tok, _ := body["challenge"].(string)
			if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(tok) || body["params_key"] != "z&aH+&Kz8saC" || len(body) != 2 {
				t.Errorf("challenge body %v", body)
			}
		})
	}
}

// TestSendRepeated: --count cycles through files over several connections and the summary
// counts each class; any rejected or failed request is exit 1.
func TestSendRepeated(t *testing.T) {
	var n atomic.Int32
	srv, seen := fakeReceiver(t, func(i int, _ map[string]any) (int, string, string) {
		n.Add(1)
		switch i % 10 {
		case 3:
			return 403, "application/json", `{"code":"forbidden"}`
		case 7:
			return 503, "application/json", `{"code":"unavailable"}`
		}
		return 200, "application/json", `{}`
	})
	code, stdout, _ := runCLI(t, nil, "send", "--url", srv.URL, "--count", "30", "--concurrency", "4", "--rate", "10000/s", "--unique",
		seedSample, filepath.Join(sampleDir, "call_summarization_completed/sample1.json"))
	if code != exitFailure {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{"sent 30 requests", "accepted 24, rejected 3, failed 3", "rejected: 403 Forbidden", "failed: 503 Service Unavailable", "latency p50"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	seqs := map[any]bool{}
	calls := map[any]int{}
	for _, r := range seen() {
		seqs[r.Body["mcs_send_seq"]] = true
		calls[r.Body["call"].(map[string]any)["id"]]++
	}
	if len(seqs) != 30 || len(calls) != 2 {
		t.Errorf("%d distinct --unique keys over %d calls, want 30 over 2", len(seqs), len(calls))
	}
}

// TestSendDuration keeps sending until the duration is over.
func TestSendDuration(t *testing.T) {
	srv, seen := fakeReceiver(t, ok200)
	code, stdout, _ := runCLI(t, nil, "send", "--url", srv.URL, "--duration", "300ms", "--concurrency", "2", seedSample)
	if code != exitOK || len(seen()) == 0 || !strings.Contains(stdout, "rejected 0, failed 0") {
		t.Errorf("exit %d after %d requests: %s", code, len(seen()), stdout)
	}
}

func TestSendNetworkFailure(t *testing.T) {
	srv, _ := fakeReceiver(t, ok200)
	url := srv.URL
	srv.Close()
	code, stdout, _ := runCLI(t, nil, "send", "--url", url, seedSample)
	if code != exitFailure || !strings.Contains(stdout, "no response") || !strings.Contains(stdout, "failed 1") {
		t.Errorf("exit %d: %s", code, stdout)
	}
}

// TestSendToRealReceiver runs send against the real receiver on a private redis-server:
// the handshake with a payload credential, the seed sample (re-sends deduplicated), a
// bearer route, and a wrong credential.
func TestSendToRealReceiver(t *testing.T) {
	rs := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	rcv, err := receiver.New(receiver.Options{
		Routes: []config.Route{
			{Name: "seed", Auth: config.Auth{Payload: []config.PayloadCredential{{Key: "params_key", Value: config.FromValue("z&aH+&Kz8saC")}}}},
			{Name: "bearer", Auth: config.Auth{Bearer: []config.Secret{config.FromValue("tok-1")}}},
		},
		Server: config.Server{MaxBodyBytes: 1 << 20, EnqueueTimeout: 5 * time.Second, ShutdownTimeout: time.Second, RetryAfter: 30 * time.Second},
		Queue:  config.Queue{Name: "send-test", MaxRetry: 3, TaskTimeout: time.Minute, DedupeWindow: time.Hour},
		Redis:  rdb, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rcv.Handler())
	t.Cleanup(srv.Close)

	steps := []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{[]string{"--url", srv.URL + "/webhooks/miitel/seed", "--challenge", "--payload", "params_key=z&aH+&Kz8saC"}, exitOK, "echoed the token"},
		{[]string{"--url", srv.URL + "/webhooks/miitel/seed", "--challenge"}, exitFailure, "401 Unauthorized"},
		{[]string{"--url", srv.URL + "/webhooks/miitel/seed", "--count", "5", "--concurrency", "2", seedSample}, exitOK, "accepted 5, rejected 0, failed 0"},
		{[]string{"--url", srv.URL + "/webhooks/miitel/bearer", "--header", "Authorization: Bearer tok-1",
			filepath.Join(sampleDir, "call_analysis_completed/sample2.json"), filepath.Join(sampleDir, "call_summarization_completed/sample1.json")}, exitOK, `"queued":1`},
		{[]string{"--url", srv.URL + "/webhooks/miitel/bearer", "--header", "Authorization: Bearer tok-2", seedSample}, exitFailure, "403 Forbidden"},
		{[]string{"--url", srv.URL + "/webhooks/miitel/seed", "--unique", "--count", "4", seedSample}, exitOK, "accepted 4"},
	}
	for _, st := range steps {
		code, stdout, stderr := runCLI(t, nil, append([]string{"send"}, st.args...)...)
		if code != st.wantCode || !strings.Contains(stdout, st.wantOut) {
			t.Errorf("send %v: exit %d (want %d)\nstdout %s\nstderr %s\nwant %q", st.args, code, st.wantCode, stdout, stderr, st.wantOut)
		}
	}
	// seed once (+4 duplicates), sample2 and the minutes, and 4 --unique seeds.
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo("send-test")
	if err != nil {
		t.Fatal(err)
	}
	if info.Pending != 7 {
		t.Errorf("%d tasks pending, want 7", info.Pending)
	}
}
