package crm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// tokenEndpoint is a minimal RFC 6749 token endpoint for the refresh_token grant.
type tokenEndpoint struct {
	srv *httptest.Server

	mu        sync.Mutex
	calls     int
	seen      []string // refresh tokens presented
	valid     map[string]bool
	rotate    bool
	expiresIn int // 0: no expires_in (Salesforce)
	revoked   string
	gate      chan struct{} // when set, each call waits for it to close
	entered   chan struct{} // when set, receives once per call before the gate
	n         atomic.Int64
}

func newTokenEndpoint(t *testing.T, refresh ...string) *tokenEndpoint {
	te := &tokenEndpoint{valid: map[string]bool{}, expiresIn: 1800}
	for _, r := range refresh {
		te.valid[r] = true
	}
	te.srv = httptest.NewServer(http.HandlerFunc(te.serve))
	t.Cleanup(te.srv.Close)
	return te
}

func (te *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	te.mu.Lock()
	gate, entered := te.gate, te.entered
	te.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		<-gate
	}
	_ = r.ParseForm()
	te.mu.Lock()
	defer te.mu.Unlock()
	te.calls++
	rt := r.PostForm.Get("refresh_token")
	te.seen = append(te.seen, rt)
	w.Header().Set("Content-Type", "application/json")
	if r.PostForm.Get("grant_type") != "refresh_token" || r.PostForm.Get("client_id") != "cid" || r.PostForm.Get("client_secret") != "secret" {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_request"}`))
		return
	}
	if !te.valid[rt] {
		w.WriteHeader(http.StatusBadRequest)
		if te.revoked != "" {
			_, _ = w.Write([]byte(te.revoked))
		} else {
			_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"expired access/refresh token"}`))
		}
		return
	}
	resp := map[string]any{"access_token": fmt.Sprintf("at-%d", te.n.Add(1)), "token_type": "bearer", "instance_url": "https://example.my.salesforce.com"}
	if te.expiresIn > 0 {
		resp["expires_in"] = te.expiresIn
	}
	if te.rotate {
		next := fmt.Sprintf("rt-%d", te.n.Load())
		delete(te.valid, rt)
		te.valid[next] = true
		resp["refresh_token"] = next
	}
	_ = json.NewEncoder(w).Encode(resp)
}

func (te *tokenEndpoint) callCount() int {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.calls
}

func (te *tokenEndpoint) config() *oauth2.Config {
	return &oauth2.Config{ClientID: "cid", ClientSecret: "secret",
		Endpoint: oauth2.Endpoint{TokenURL: te.srv.URL, AuthStyle: oauth2.AuthStyleInParams}}
}

func newShared(t *testing.T, rdb redis.UniversalClient, te *tokenEndpoint, mut func(*TokenOptions)) *SharedToken {
	t.Helper()
	o := TokenOptions{Connection: "c1", Redis: rdb, Fetch: RefreshTokenGrant(te.config()), UsesRefreshToken: true, Credentials: "cid"}
	if mut != nil {
		mut(&o)
	}
	s, err := NewSharedToken(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSharedTokenOneRefreshAcrossReplicas(t *testing.T) {
	rdb := redistest.Start(t).Client()
	te := newTokenEndpoint(t, "rt-0")
	// Hold the endpoint until every caller is in flight, so they really race for the lock.
	te.gate = make(chan struct{})
	te.entered = make(chan struct{}, 100)
	if err := NewTokenStore(rdb, "c1").SaveRefreshToken(context.Background(), "rt-0"); err != nil {
		t.Fatal(err)
	}
	replicas := []*SharedToken{newShared(t, rdb, te, nil), newShared(t, rdb, te, nil), newShared(t, rdb, te, nil)}

	const callers = 30
	var wg sync.WaitGroup
	got := make(chan string, callers)
	errs := make(chan error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := replicas[i%len(replicas)].Token(context.Background())
			if err != nil {
				errs <- err
				return
			}
			got <- tok.AccessToken
		}()
	}
	// Release the endpoint once the lock holder reached it; the others are polling by then
	// or arrive later and find the stored token.
	<-te.entered
	close(te.gate)
	wg.Wait()
	close(got)
	close(errs)
	for err := range errs {
		t.Errorf("Token: %v", err)
	}
	tokens := map[string]int{}
	for a := range got {
		tokens[a]++
	}
	if len(tokens) != 1 || tokens["at-1"] != callers {
		t.Errorf("tokens handed out = %v, want at-1 x %d", tokens, callers)
	}
	if n := te.callCount(); n != 1 {
		t.Errorf("token endpoint called %d times, want 1", n)
	}
}

func TestSharedTokenRotationPersistedBeforeUse(t *testing.T) {
	srv := redistest.Start(t)
	// No client-side retries: the outage must fail fast, not be retried away.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	te := newTokenEndpoint(t, "rt-0")
	te.rotate = true
	ctx := context.Background()
	store := NewTokenStore(rdb, "c1")
	if err := store.SaveRefreshToken(ctx, "rt-0"); err != nil {
		t.Fatal(err)
	}
	base := RefreshTokenGrant(te.config())
	var stopRedis atomic.Bool
	s := newShared(t, rdb, te, func(o *TokenOptions) {
		o.Fetch = func(ctx context.Context, rt string) (*oauth2.Token, error) {
			tok, err := base(ctx, rt)
			if stopRedis.Load() {
				srv.Stop() // Redis dies between the endpoint's answer and the rotation write
			}
			return tok, err
		}
	})

	tok, err := s.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rt, _ := store.RefreshToken(ctx); rt != "rt-1" {
		t.Fatalf("stored refresh token = %q, want the rotated rt-1", rt)
	}
	if tok.AccessToken != "at-1" {
		t.Fatalf("access token = %q", tok.AccessToken)
	}

	// Next refresh: the rotated token rt-2 cannot be stored. The access token must not be
	// handed out, and rt-2 (the only valid one now) must be used next time.
	if err := s.Invalidate(ctx, nil); err != nil {
		t.Fatal(err)
	}
	stopRedis.Store(true)
	if _, err := s.Token(ctx); ClassOf(err) != Transient {
		t.Fatalf("Token with redis down during rotation: err = %v, want transient", err)
	}
	stopRedis.Store(false)
	srv.Restart()
	tok, err = s.Token(ctx)
	if err != nil {
		t.Fatalf("Token after redis came back: %v", err)
	}
	if tok.AccessToken != "at-3" {
		t.Errorf("access token = %q, want at-3", tok.AccessToken)
	}
	te.mu.Lock()
	seen := append([]string(nil), te.seen...)
	te.mu.Unlock()
	if want := []string{"rt-0", "rt-1", "rt-2"}; fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("refresh tokens presented = %v, want %v", seen, want)
	}
	if rt, _ := store.RefreshToken(ctx); rt != "rt-3" {
		t.Errorf("stored refresh token = %q, want rt-3", rt)
	}
}

func TestSharedTokenExpiry(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		expiresIn int
		lifetime  time.Duration
		wantTTL   time.Duration
	}{
		{"expires_in honoured", 1800, time.Hour, 30 * time.Minute},
		{"no expires_in gets the assumed lifetime", 0, 2 * time.Hour, 2 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb := redistest.Start(t).Client()
			te := newTokenEndpoint(t, "rt-0")
			te.expiresIn = tt.expiresIn
			_ = NewTokenStore(rdb, "c1").SaveRefreshToken(ctx, "rt-0")
			s := newShared(t, rdb, te, func(o *TokenOptions) { o.AssumedLifetime = tt.lifetime; o.KeepExtra = []string{"instance_url"} })
			tok, err := s.Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Until(tok.Expiry); d < tt.wantTTL-time.Minute || d > tt.wantTTL {
				t.Errorf("expiry in %v, want about %v", d, tt.wantTTL)
			}
			ttl := rdb.PTTL(ctx, oauthKey("c1", "access")).Val()
			if ttl < tt.wantTTL-time.Minute || ttl > tt.wantTTL {
				t.Errorf("redis TTL %v, want about %v", ttl, tt.wantTTL)
			}
			// A second replica reads the shared token, extras included, without a fetch.
			tok2, err := newShared(t, rdb, te, func(o *TokenOptions) { o.KeepExtra = []string{"instance_url"} }).Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tok2.AccessToken != tok.AccessToken || tok2.Extra("instance_url") != "https://example.my.salesforce.com" {
				t.Errorf("shared token = %q %v", tok2.AccessToken, tok2.Extra("instance_url"))
			}
			if te.callCount() != 1 {
				t.Errorf("endpoint calls = %d, want 1", te.callCount())
			}
		})
	}
}

func TestSharedTokenRefreshesBeforeExpiry(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	te := newTokenEndpoint(t, "rt-0")
	te.expiresIn = 30 // inside the one-minute margin: every Token call must refresh
	_ = NewTokenStore(rdb, "c1").SaveRefreshToken(ctx, "rt-0")
	s := newShared(t, rdb, te, nil)
	for want := 1; want <= 3; want++ {
		tok, err := s.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tok.AccessToken != fmt.Sprintf("at-%d", want) {
			t.Errorf("call %d: token %q", want, tok.AccessToken)
		}
	}
}

func TestSharedTokenInvalidate(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	te := newTokenEndpoint(t, "rt-0")
	_ = NewTokenStore(rdb, "c1").SaveRefreshToken(ctx, "rt-0")
	s := newShared(t, rdb, te, nil)
	first, _ := s.Token(ctx)

	// A replica holding an older rejected token must not drop the current one.
	if err := s.Invalidate(ctx, &oauth2.Token{AccessToken: "stale"}); err != nil {
		t.Fatal(err)
	}
	if tok, _ := s.Token(ctx); tok.AccessToken != first.AccessToken {
		t.Fatalf("token after stale invalidate = %q, want %q", tok.AccessToken, first.AccessToken)
	}
	if err := s.Invalidate(ctx, first); err != nil {
		t.Fatal(err)
	}
	second, err := s.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if second.AccessToken == first.AccessToken || te.callCount() != 2 {
		t.Errorf("after invalidate: token %q, endpoint calls %d; want a new token from a second call", second.AccessToken, te.callCount())
	}
}

func TestSharedTokenRevokedMarksBroken(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"invalid_grant", ""},
		{"hubspot BAD_REFRESH_TOKEN", `{"status":"BAD_REFRESH_TOKEN","message":"missing or invalid refresh token","correlationId":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			rdb := redistest.Start(t).Client()
			te := newTokenEndpoint(t) // no valid refresh token: revoked
			te.revoked = tt.body
			store := NewTokenStore(rdb, "c1")
			_ = store.SaveRefreshToken(ctx, "rt-0")
			reg := prometheus.NewRegistry()
			m, err := NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			s := newShared(t, rdb, te, func(o *TokenOptions) { o.Metrics = m; o.BrokenRetryAfter = 7 * time.Minute })

			_, err = s.Token(ctx)
			var ce *Error
			if !errors.As(err, &ce) || ce.Class != Broken || ce.After != 7*time.Minute {
				t.Fatalf("err = %v, want Broken with After 7m", err)
			}
			if !ce.Throttled() {
				t.Error("broken must not count as a failed attempt")
			}
			if got := testutil.ToFloat64(m.BrokenTotal.WithLabelValues("c1")); got != 1 {
				t.Errorf("broken_total = %v, want 1", got)
			}
			if got := testutil.ToFloat64(m.Broken.WithLabelValues("c1")); got != 1 {
				t.Errorf("broken gauge = %v, want 1", got)
			}
			if b, _ := store.Broken(ctx); b == nil {
				t.Fatal("broken mark not stored in redis")
			}
			// Another replica parks at once, without calling the endpoint.
			if _, err := newShared(t, rdb, te, nil).Token(ctx); ClassOf(err) != Broken {
				t.Errorf("second replica: err = %v, want Broken", err)
			}
			if te.callCount() != 1 {
				t.Errorf("endpoint calls = %d, want 1", te.callCount())
			}
			// An admin reconnects: the mark goes and tokens flow again.
			te.mu.Lock()
			te.valid["rt-new"] = true
			te.mu.Unlock()
			if err := store.SaveRefreshToken(ctx, "rt-new"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Token(ctx); err != nil {
				t.Fatalf("after reconnect: %v", err)
			}
			if got := testutil.ToFloat64(m.Broken.WithLabelValues("c1")); got != 0 {
				t.Errorf("broken gauge after reconnect = %v, want 0", got)
			}
		})
	}
}

func TestSharedTokenConfigSeed(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	te := newTokenEndpoint(t, "cfg-1")
	te.rotate = true
	store := NewTokenStore(rdb, "c1")
	withSeed := func(rt string) func(*TokenOptions) {
		return func(o *TokenOptions) { o.InitialRefreshToken = rt }
	}
	if _, err := newShared(t, rdb, te, withSeed("cfg-1")).Token(ctx); err != nil {
		t.Fatal(err)
	}
	if rt, _ := store.RefreshToken(ctx); rt != "rt-1" {
		t.Fatalf("after first refresh stored %q, want rotated rt-1", rt)
	}
	// A restart with the same config must keep the rotated token (Redis is the truth).
	_ = store.SaveRefreshToken(ctx, "rt-1") // drops the access token, forcing a refresh
	if _, err := newShared(t, rdb, te, withSeed("cfg-1")).Token(ctx); err != nil {
		t.Fatalf("restart with unchanged config: %v", err)
	}
	// The admin pastes a new refresh token into the config: it replaces Redis's.
	te.mu.Lock()
	te.valid["cfg-2"] = true
	te.mu.Unlock()
	_ = rdb.Del(ctx, oauthKey("c1", "access"))
	if _, err := newShared(t, rdb, te, withSeed("cfg-2")).Token(ctx); err != nil {
		t.Fatalf("new config token: %v", err)
	}
	te.mu.Lock()
	seen := fmt.Sprint(te.seen)
	te.mu.Unlock()
	if want := "[cfg-1 rt-1 cfg-2]"; seen != want {
		t.Errorf("refresh tokens presented = %s, want %s", seen, want)
	}
}

func TestSharedTokenWaitBoundedByContext(t *testing.T) {
	rdb := redistest.Start(t).Client()
	te := newTokenEndpoint(t, "rt-0")
	_ = NewTokenStore(rdb, "c1").SaveRefreshToken(context.Background(), "rt-0")
	// Another replica holds the lock and never finishes.
	rdb.Set(context.Background(), oauthKey("c1", "lock"), "someone-else", time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := newShared(t, rdb, te, nil).Token(ctx)
	if ClassOf(err) != Transient || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want transient deadline exceeded", err)
	}
	if te.callCount() != 0 {
		t.Errorf("endpoint called %d times while another replica held the lock", te.callCount())
	}
}

func TestSharedTokenNoRefreshToken(t *testing.T) {
	rdb := redistest.Start(t).Client()
	te := newTokenEndpoint(t)
	_, err := newShared(t, rdb, te, nil).Token(context.Background())
	var ce *Error
	if !errors.As(err, &ce) || ce.Class != Broken {
		t.Fatalf("err = %v, want Broken (no refresh token: run oauth connect)", err)
	}
}

func TestSharedTokenSourceGrant(t *testing.T) {
	// Client credentials style: no refresh token involved; the fetcher is any TokenSource.
	rdb := redistest.Start(t).Client()
	var calls atomic.Int32
	fetch := SourceGrant(func(ctx context.Context) oauth2.TokenSource {
		calls.Add(1)
		return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "cc", TokenType: "Bearer"})
	})
	s, err := NewSharedToken(context.Background(), TokenOptions{Connection: "sf", Redis: rdb, Fetch: fetch})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		tok, err := s.TokenSource().Token()
		if err != nil || tok.AccessToken != "cc" {
			t.Fatalf("Token = %v, %v", tok, err)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("fetches = %d, want 1", calls.Load())
	}
}
