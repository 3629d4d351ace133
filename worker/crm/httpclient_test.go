package crm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"golang.org/x/oauth2"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

func TestClassify(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name      string
		status    int
		header    http.Header
		wantClass Class
		wantAfter time.Duration
	}{
		{"429 retry-after", 429, http.Header{"Retry-After": {"7"}}, Throttled, 7 * time.Second},
		{"429 hubspot interval", 429, http.Header{"X-Hubspot-Ratelimit-Interval-Milliseconds": {"10000"}}, Throttled, 10 * time.Second},
		{"429 bare", 429, nil, Throttled, time.Second},
		{"423 at least 2s", 423, http.Header{"Retry-After": {"1"}}, Transient, 2 * time.Second},
		{"423 longer", 423, http.Header{"Retry-After": {"5"}}, Transient, 5 * time.Second},
		{"477 retry-after", 477, http.Header{"Retry-After": {"3"}}, Transient, 3 * time.Second},
		{"502", 502, nil, Transient, 0},
		{"503 retry-after date", 503, http.Header{"Retry-After": {now.Add(90 * time.Second).UTC().Format(http.TimeFormat)}}, Transient, 89 * time.Second},
		{"504", 504, nil, Transient, 0},
		{"500", 500, nil, Transient, 0},
		{"401", 401, nil, Transient, 0},
		{"400", 400, nil, Permanent, 0},
		{"404", 404, nil, Permanent, 0},
		{"409", 409, nil, Permanent, 0},
		{"422", 422, nil, Permanent, 0},
		{"403", 403, nil, Permanent, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := Classify("op", &http.Response{StatusCode: tt.status, Header: tt.header}, "CODE", "msg")
			if e.Class != tt.wantClass || e.Status != tt.status || e.Code != "CODE" || e.Msg != "msg" {
				t.Errorf("Classify = %+v, want class %v", e, tt.wantClass)
			}
			// HTTP dates have second resolution: allow one second of slack.
			if e.After < tt.wantAfter || e.After > tt.wantAfter+time.Second {
				t.Errorf("After = %v, want %v", e.After, tt.wantAfter)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{"-1", 0, false},
		{"Fri, 02 Jan 2026 03:05:05 GMT", time.Minute, true},
		{"Fri, 02 Jan 2026 03:00:00 GMT", 0, true}, // in the past
		{"soon", 0, false},
	}
	for _, tt := range tests {
		got, ok := RetryAfter(http.Header{"Retry-After": {tt.v}}, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("RetryAfter(%q) = %v, %v; want %v, %v", tt.v, got, ok, tt.want, tt.ok)
		}
	}
}

// script answers requests with a fixed sequence of responses and records what it got.
type script struct {
	mu        sync.Mutex
	responses []func(w http.ResponseWriter)
	got       []recorded
}

type recorded struct {
	Method, Path, Auth, Body string
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, recorded{r.Method, r.URL.Path, r.Header.Get("Authorization"), string(b)})
	i := min(len(s.got)-1, len(s.responses)-1)
	s.responses[i](w)
}

func respond(status int, header map[string]string, body string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func parseTestError(body []byte) (string, string) {
	var e struct{ Category, Message string }
	_ = json.Unmarshal(body, &e)
	return e.Category, e.Message
}

func TestAPIDo(t *testing.T) {
	tests := []struct {
		name      string
		responses []func(http.ResponseWriter)
		wantClass Class // ignored when wantErr is false
		wantErr   bool
		wantCalls int
		wantMsg   string
	}{
		{"ok", []func(http.ResponseWriter){respond(201, nil, `{"id":"9"}`)}, 0, false, 1, ""},
		{"short 429 burst retried once", []func(http.ResponseWriter){
			respond(429, map[string]string{"Retry-After": "0"}, `{"status":"error","errorType":"RATE_LIMIT"}`),
			respond(201, nil, `{"id":"9"}`)}, 0, false, 2, ""},
		{"429 storm goes back to the queue", []func(http.ResponseWriter){
			respond(429, map[string]string{"Retry-After": "0"}, `{}`)}, Throttled, true, 2, ""},
		{"long 429 not waited in the task", []func(http.ResponseWriter){
			respond(429, map[string]string{"Retry-After": "30"}, `{}`)}, Throttled, true, 1, ""},
		{"validation is permanent with the CRM message", []func(http.ResponseWriter){
			respond(400, nil, `{"status":"error","message":"Property values were not valid","category":"VALIDATION_ERROR"}`)}, Permanent, true, 1, "Property values were not valid"},
		{"5xx transient", []func(http.ResponseWriter){respond(503, nil, `oops`)}, Transient, true, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &script{responses: tt.responses}
			srv := httptest.NewServer(s)
			defer srv.Close()
			api := &API{Client: &http.Client{Transport: &AuthTransport{Tokens: StaticToken("pat")}}, BaseURL: srv.URL, ParseError: parseTestError}
			var out struct{ ID string }
			_, err := api.Do(context.Background(), Request{Op: "test: create", Method: "POST", Path: "/x", Body: map[string]string{"a": "b"}}, &out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				var ce *Error
				if !errors.As(err, &ce) || ce.Class != tt.wantClass || (tt.wantMsg != "" && ce.Msg != tt.wantMsg) {
					t.Errorf("err = %v, want class %v msg %q", err, tt.wantClass, tt.wantMsg)
				}
				if (ce.Class == Permanent) != errors.Is(err, asynq.SkipRetry) {
					t.Errorf("SkipRetry must be reachable exactly for permanent errors: %v", err)
				}
			} else if out.ID != "9" {
				t.Errorf("decoded %+v", out)
			}
			if len(s.got) != tt.wantCalls {
				t.Fatalf("calls = %d, want %d", len(s.got), tt.wantCalls)
			}
			for _, g := range s.got {
				if diff := cmp.Diff(recorded{"POST", "/x", "Bearer pat", `{"a":"b"}`}, g); diff != "" {
					t.Errorf("request (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestAPIDoNetworkError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // nothing listens any more
	api := &API{Client: &http.Client{}, BaseURL: srv.URL}
	_, err := api.Do(context.Background(), Request{Op: "test: get", Method: "GET", Path: "/"}, nil)
	var ce *Error
	if !errors.As(err, &ce) || ce.Class != Transient || ce.Status != 0 {
		t.Fatalf("err = %v, want transient network error", err)
	}
}

// rotatingTokens hands out tok-1, tok-2, ... and records invalidations.
type rotatingTokens struct {
	n           atomic.Int32
	invalidated atomic.Int32
}

func (r *rotatingTokens) Token(context.Context) (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: "tok-" + string(rune('0'+r.n.Load()+1)), TokenType: "Bearer"}, nil
}

func (r *rotatingTokens) Invalidate(_ context.Context, rejected *oauth2.Token) error {
	r.invalidated.Add(1)
	r.n.Add(1)
	return nil
}

func TestAuthTransportUnauthorized(t *testing.T) {
	tests := []struct {
		name        string
		action      Reauth
		wantStatus  int
		wantAuth    []string
		invalidated int32
	}{
		{"keep", KeepToken, 401, []string{"Bearer tok-1"}, 0},
		{"drop", DropToken, 401, []string{"Bearer tok-1"}, 1},
		{"drop and retry once", DropTokenAndRetry, 201, []string{"Bearer tok-1", "Bearer tok-2"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &script{responses: []func(http.ResponseWriter){
				respond(401, nil, `[{"errorCode":"INVALID_SESSION_ID","message":"Session expired or invalid"}]`),
				respond(201, nil, `{}`)}}
			srv := httptest.NewServer(s)
			defer srv.Close()
			tokens := &rotatingTokens{}
			var sawBody string
			api := &API{Client: &http.Client{Transport: &AuthTransport{Tokens: tokens,
				OnUnauthorized: func(_ *http.Response, body []byte) Reauth { sawBody = string(body); return tt.action }}}, BaseURL: srv.URL}
			status, _ := api.Do(context.Background(), Request{Op: "t", Method: "PATCH", Path: "/x", Body: map[string]int{"n": 1}}, nil)
			if status != tt.wantStatus {
				t.Errorf("status = %d, want %d", status, tt.wantStatus)
			}
			var auths []string
			for _, g := range s.got {
				auths = append(auths, g.Auth)
				if g.Body != `{"n":1}` {
					t.Errorf("body resent as %q", g.Body)
				}
			}
			if diff := cmp.Diff(tt.wantAuth, auths); diff != "" {
				t.Errorf("authorization headers (-want +got):\n%s", diff)
			}
			if tokens.invalidated.Load() != tt.invalidated {
				t.Errorf("invalidated %d times, want %d", tokens.invalidated.Load(), tt.invalidated)
			}
			if sawBody == "" {
				t.Error("OnUnauthorized did not get the body")
			}
		})
	}
}

func TestTransportStackThrottlesBeforeSending(t *testing.T) {
	rdb := redistest.Start(t).Client()
	s := &script{responses: []func(http.ResponseWriter){respond(200, nil, `{}`)}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	lim := NewRateLimiter(rdb, "hs", time.Millisecond, nil, Budget{Name: "requests", Requests: 100, Per: time.Hour}, Budget{Name: "search", Requests: 1, Per: time.Hour})
	client := &http.Client{Transport: &RateLimitTransport{Limiter: lim,
		Budgets: func(r *http.Request) []string {
			if r.URL.Path == "/search" {
				return []string{"requests", "search"}
			}
			return []string{"requests"}
		},
		Next: &AuthTransport{Tokens: StaticToken("pat")}}}
	api := &API{Client: client, BaseURL: srv.URL}
	ctx := context.Background()
	if _, err := api.Do(ctx, Request{Op: "hs: search", Method: "POST", Path: "/search", Body: struct{}{}}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := api.Do(ctx, Request{Op: "hs: search", Method: "POST", Path: "/search", Body: struct{}{}}, nil)
	var ce *Error
	if !errors.As(err, &ce) || ce.Class != Throttled || ce.After <= 0 || ce.Op != "hs: search: rate limit" || !strings.HasPrefix(ce.Msg, "search budget") {
		t.Fatalf("second search: err = %#v, want Throttled from the search budget", err)
	}
	if len(s.got) != 1 {
		t.Errorf("server saw %d requests, want 1 (the throttled one is never sent)", len(s.got))
	}
}

// revokedAfterInvalidate hands out one token; once it is invalidated, fetching a new one
// fails the way a revoked refresh token does.
type revokedAfterInvalidate struct{ dropped atomic.Bool }

func (r *revokedAfterInvalidate) Token(context.Context) (*oauth2.Token, error) {
	if r.dropped.Load() {
		return nil, &Error{Class: Broken, Op: "crm: refresh token", Code: "invalid_grant", After: 5 * time.Minute}
	}
	return &oauth2.Token{AccessToken: "tok-1", TokenType: "Bearer"}, nil
}

func (r *revokedAfterInvalidate) Invalidate(context.Context, *oauth2.Token) error {
	r.dropped.Store(true)
	return nil
}

// A 401 whose resend cannot get a token because the grant was revoked must surface as
// Broken (tasks wait, the connection is reported), not as the first 401 (a transient retry).
func TestAuthTransportRevokedOnResendIsBroken(t *testing.T) {
	s := &script{responses: []func(http.ResponseWriter){
		respond(401, nil, `[{"errorCode":"INVALID_SESSION_ID","message":"Session expired or invalid"}]`)}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	api := &API{Client: &http.Client{Transport: &AuthTransport{Tokens: &revokedAfterInvalidate{},
		OnUnauthorized: func(*http.Response, []byte) Reauth { return DropTokenAndRetry }}}, BaseURL: srv.URL}
	_, err := api.Do(context.Background(), Request{Op: "t", Method: "PATCH", Path: "/x", Body: map[string]int{"n": 1}}, nil)
	if ClassOf(err) != Broken {
		t.Fatalf("error = %v (class %v), want Broken", err, ClassOf(err))
	}
	if len(s.got) != 1 {
		t.Errorf("requests sent = %d, want 1 (no token, no resend)", len(s.got))
	}
}

func TestSnippet(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"Property values were not valid", 8, "Property…"},
		// 大 is three bytes: a cut inside it backs off to the rune before.
		{"値: 大項目", 6, "値: …"},
		{"値: 大項目", 8, "値: 大…"},
	}
	for _, tt := range tests {
		got := Snippet(tt.in, tt.n)
		if got != tt.want || !utf8.ValidString(got) {
			t.Errorf("Snippet(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
