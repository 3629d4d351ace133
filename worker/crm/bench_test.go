package crm

import (
	"context"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// BenchmarkTokenHit is the per-request cost of the shared token (one MGET and a JSON
// decode); BenchmarkRedisGetFloor is one plain GET on the same Redis, the floor to compare.
func BenchmarkTokenHit(b *testing.B) {
	rdb := redistest.Start(b).Client()
	ctx := context.Background()
	s, err := NewSharedToken(ctx, TokenOptions{Connection: "c", Redis: rdb, Fetch: SourceGrant(nil)})
	if err != nil {
		b.Fatal(err)
	}
	tok := storedToken{Access: "at-0123456789abcdef0123456789abcdef", Type: "Bearer", Expiry: time.Now().Add(time.Hour).UnixMilli()}
	if err := s.store.saveAccess(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Token(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRedisGetFloor(b *testing.B) {
	rdb := redistest.Start(b).Client()
	ctx := context.Background()
	rdb.Set(ctx, "k", "v", 0)
	b.ReportAllocs()
	for b.Loop() {
		if err := rdb.Get(ctx, "k").Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRateLimitAllow is one shared-limiter decision (one EVALSHA).
func BenchmarkRateLimitAllow(b *testing.B) {
	rdb := redistest.Start(b).Client()
	l := NewRateLimiter(rdb, "c", time.Millisecond, nil, Budget{Name: "requests", Requests: 1 << 30, Per: time.Second})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Wait(ctx, "requests"); err != nil {
			b.Fatal(err)
		}
	}
}
