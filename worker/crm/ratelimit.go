package crm

import (
	"context"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Budget is one request allowance of a connection: at most Requests in any window of Per.
// A CRM may have several (HubSpot: the 10-second budget for every request and 5/s for
// search; a request may draw on more than one).
type Budget struct {
	Name     string
	Requests int
	Per      time.Duration
}

// limit turns a rolling-window budget into GCRA parameters. GCRA with burst B and rate r
// admits up to B + r*Per requests in a window of Per, so the burst is taken out of the rate:
// B = Requests/10 (at least 1), r = Requests - B per Per. The vendor's rolling window is then
// never exceeded, at the cost of a tenth of the allowance.
func (b Budget) limit() redis_rate.Limit {
	burst := max(1, b.Requests/10)
	rate := max(1, b.Requests-burst)
	return redis_rate.Limit{Rate: rate, Burst: burst, Period: b.Per}
}

// RateLimiter is a connection's request budgets, shared by every worker replica through
// Redis with github.com/go-redis/redis_rate (GCRA in one Lua script per decision, so it is
// exact across replicas and costs one round trip). A request that is over budget waits when
// its turn comes within MaxWait, otherwise it fails with a Throttled *Error carrying the
// wait, so the task is retried later without counting as a failure.
type RateLimiter struct {
	lim     *redis_rate.Limiter
	conn    string
	budgets map[string]Budget
	maxWait time.Duration
	m       *Metrics
}

// NewRateLimiter builds the limiter of a connection. maxWait bounds how long Wait blocks
// (default 2s); budgets with zero Requests or Per are ignored.
func NewRateLimiter(rdb redis.UniversalClient, connection string, maxWait time.Duration, m *Metrics, budgets ...Budget) *RateLimiter {
	if maxWait <= 0 {
		maxWait = 2 * time.Second
	}
	bs := make(map[string]Budget, len(budgets))
	for _, b := range budgets {
		if b.Requests > 0 && b.Per > 0 {
			bs[b.Name] = b
		}
	}
	return &RateLimiter{lim: redis_rate.NewLimiter(rdb), conn: connection, budgets: bs, maxWait: maxWait, m: orNop(m)}
}

// Wait takes one request from each named budget (unknown names are ignored), in order. It
// returns nil when the request may go, or a Throttled *Error with After set.
func (l *RateLimiter) Wait(ctx context.Context, budgets ...string) error {
	deadline := time.Now().Add(l.maxWait)
	for _, name := range budgets {
		b, ok := l.budgets[name]
		if !ok {
			continue
		}
		if err := l.take(ctx, b, deadline); err != nil {
			return err
		}
	}
	return nil
}

func (l *RateLimiter) take(ctx context.Context, b Budget, deadline time.Time) error {
	key := connKey(l.conn, "rate", b.Name)
	waited := false
	for {
		res, err := l.lim.Allow(ctx, key, b.limit())
		if err != nil {
			return &Error{Class: Transient, Op: "crm: rate limit", Err: err}
		}
		if res.Allowed > 0 {
			if waited {
				l.m.RateLimited.WithLabelValues(l.conn, b.Name, "waited").Inc()
			}
			return nil
		}
		if time.Now().Add(res.RetryAfter).After(deadline) {
			l.m.RateLimited.WithLabelValues(l.conn, b.Name, "throttled").Inc()
			return &Error{Class: Throttled, Op: "crm: rate limit", Code: "LOCAL_RATE_LIMIT",
				Msg: fmt.Sprintf("%s budget of %d per %s used up", b.Name, b.Requests, b.Per), After: res.RetryAfter}
		}
		waited = true
		t := time.NewTimer(res.RetryAfter)
		select {
		case <-ctx.Done():
			t.Stop()
			return &Error{Class: Throttled, Op: "crm: rate limit", Err: ctx.Err(), After: res.RetryAfter}
		case <-t.C:
		}
	}
}
