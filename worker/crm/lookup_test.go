package crm

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

func TestLookupCache(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	m, _ := NewMetrics(nil)
	c := NewLookupCache(rdb, "hs", time.Hour, time.Minute, m)

	fetches := 0
	answer := map[string]string{"+81312345678": "501"}
	fetch := func(phone string) func(context.Context) (string, error) {
		return func(context.Context) (string, error) { fetches++; return answer[phone], nil }
	}
	for range 3 {
		if id, err := c.Resolve(ctx, LookupContact, "+81312345678", fetch("+81312345678")); err != nil || id != "501" {
			t.Fatalf("Resolve = %q, %v", id, err)
		}
		if id, err := c.Resolve(ctx, LookupContact, "+81399999999", fetch("+81399999999")); err != nil || id != "" {
			t.Fatalf("Resolve miss = %q, %v", id, err)
		}
	}
	if fetches != 2 {
		t.Errorf("fetches = %d, want 2 (one per number, then cached)", fetches)
	}
	if got := testutil.ToFloat64(m.Lookups.WithLabelValues("hs", "contact", "hit")); got != 2 {
		t.Errorf("hits = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.Lookups.WithLabelValues("hs", "contact", "miss_cached")); got != 2 {
		t.Errorf("cached misses = %v, want 2", got)
	}

	keys := rdb.Keys(ctx, "*").Val()
	if len(keys) != 2 {
		t.Fatalf("keys = %v, want 2", keys)
	}
	for _, k := range keys {
		if strings.Contains(k, "312345678") || strings.Contains(k, "399999999") {
			t.Errorf("key %q holds the phone number", k)
		}
		ttl := rdb.PTTL(ctx, k).Val()
		if v := rdb.Get(ctx, k).Val(); v == "501" && (ttl <= 59*time.Minute || ttl > time.Hour) {
			t.Errorf("hit TTL %v, want 1h", ttl)
		} else if v != "501" && (ttl <= 59*time.Second || ttl > time.Minute) {
			t.Errorf("miss TTL %v, want 1m", ttl)
		}
	}

	// Errors are returned, not cached.
	boom := errors.New("search failed")
	if _, err := c.Resolve(ctx, LookupOwner, "rep@example.com", func(context.Context) (string, error) { return "", boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if n := rdb.DBSize(ctx).Val(); n != 2 {
		t.Errorf("an error was cached: %d keys", n)
	}
	// Forget drops the answer: the next Resolve fetches again.
	_ = c.Forget(ctx, LookupContact, "+81312345678")
	_, _ = c.Resolve(ctx, LookupContact, "+81312345678", fetch("+81312345678"))
	if fetches != 3 {
		t.Errorf("fetches after Forget = %d, want 3", fetches)
	}
}

func TestLookupCacheRedisDownStillResolves(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	srv.Stop()
	c := NewLookupCache(rdb, "hs", 0, 0, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := c.Resolve(ctx, LookupOwner, "rep@example.com", func(context.Context) (string, error) { return "77", nil })
	if err != nil || id != "77" {
		t.Fatalf("Resolve with redis down = %q, %v; want the fetched answer", id, err)
	}
}
