package crm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

func TestBudgetLimitNeverExceedsRollingWindow(t *testing.T) {
	tests := []struct {
		b    Budget
		want redis_rate.Limit
	}{
		{Budget{"requests", 100, 10 * time.Second}, redis_rate.Limit{Rate: 90, Burst: 10, Period: 10 * time.Second}},
		{Budget{"requests", 190, 10 * time.Second}, redis_rate.Limit{Rate: 171, Burst: 19, Period: 10 * time.Second}},
		{Budget{"search", 5, time.Second}, redis_rate.Limit{Rate: 4, Burst: 1, Period: time.Second}},
		{Budget{"tiny", 1, time.Second}, redis_rate.Limit{Rate: 1, Burst: 1, Period: time.Second}},
	}
	for _, tt := range tests {
		got := tt.b.limit()
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%+v (-want +got):\n%s", tt.b, diff)
		}
		// GCRA admits at most Burst + Rate in any Period window.
		if tt.b.Requests > 1 && got.Burst+got.Rate > tt.b.Requests {
			t.Errorf("%+v admits %d per window, over %d", tt.b, got.Burst+got.Rate, tt.b.Requests)
		}
	}
}

func TestRateLimiterSharedAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	m, _ := NewMetrics(nil)
	budget := Budget{Name: "requests", Requests: 30, Per: 10 * time.Second} // burst 3
	a := NewRateLimiter(rdb, "hs", time.Millisecond, m, budget)
	b := NewRateLimiter(rdb, "hs", time.Millisecond, m, budget)

	allowed := 0
	var throttled *Error
	for i := range 10 {
		l := a
		if i%2 == 1 {
			l = b
		}
		err := l.Wait(ctx, "requests")
		if err == nil {
			allowed++
			continue
		}
		if !errors.As(err, &throttled) {
			t.Fatalf("err = %v, want *Error", err)
		}
	}
	if allowed != 3 {
		t.Errorf("allowed %d requests at once across two replicas, want the burst of 3", allowed)
	}
	if throttled == nil || throttled.Class != Throttled || throttled.After <= 0 || throttled.After > 10*time.Second {
		t.Fatalf("throttled error = %+v, want Throttled with 0 < After <= 10s", throttled)
	}
	if got := testutil.ToFloat64(m.RateLimited.WithLabelValues("hs", "requests", "throttled")); got != 7 {
		t.Errorf("throttled metric = %v, want 7", got)
	}
	// Another connection has its own budget.
	if err := NewRateLimiter(rdb, "other", time.Millisecond, nil, budget).Wait(ctx, "requests"); err != nil {
		t.Errorf("other connection: %v", err)
	}
}

func TestRateLimiterWaitsWithinMaxWait(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	m, _ := NewMetrics(nil)
	// burst 1, then one every 1/9 s: the second and third requests wait.
	l := NewRateLimiter(rdb, "hs", 2*time.Second, m, Budget{Name: "search", Requests: 10, Per: time.Second})
	for i := range 3 {
		if err := l.Wait(ctx, "search", "unknown-budget"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if got := testutil.ToFloat64(m.RateLimited.WithLabelValues("hs", "search", "waited")); got != 2 {
		t.Errorf("waited metric = %v, want requests that waited", got)
	}
}

func TestRateLimiterContextCancelled(t *testing.T) {
	rdb := redistest.Start(t).Client()
	// One request per 3s: the second would wait within MaxWait, but its task ends first.
	l := NewRateLimiter(rdb, "hs", 5*time.Second, nil, Budget{Name: "requests", Requests: 1, Per: 3 * time.Second})
	if err := l.Wait(context.Background(), "requests"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := l.Wait(ctx, "requests")
	var ce *Error
	if !errors.As(err, &ce) || ce.Class != Throttled || !errors.Is(err, context.DeadlineExceeded) || ce.After <= 0 {
		t.Fatalf("err = %v, want Throttled wrapping the deadline, with After", err)
	}
}
