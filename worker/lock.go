package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// callLock serialises the events of one call detail across worker replicas: merge, render
// and deliver must not interleave, or two events could each miss the other's fields, and
// the CRM id map protocol assumes one delivery per external id at a time.
//
// It is a lease, not a lock held for the whole task timeout: a short TTL, renewed while the
// handler runs and released on every way out (success, error, panic, shutdown). A worker that
// dies (kill -9, OOM, a lost node) therefore blocks the call for at most one lease, so the
// task asynq recovers from it runs at once instead of retrying against a dead holder's lock
// for minutes. If a renewal finds the lease gone (Redis lost it, or the holder stalled longer
// than a lease and another worker took over), the handler's context is cancelled: it must
// not go on writing as if it still held the call.
//
// Taking the lease waits for replicas (durable.Acks): a lease only the old master held
// vanishes in a failover, and a second worker would then deliver the same call beside the
// first, which is how the id map protocol creates a second HubSpot call. Renewals and the
// release do not wait: a lost renewal is repeated at the next tick (the lease survives two),
// and a lost release only delays the call's next event by one lease.
type callLock struct {
	rdb  redis.UniversalClient
	acks *durable.Acks
	// ttl is the lease; renewals run every ttl/3, so two renewals may fail before it lapses.
	ttl time.Duration
}

// DefaultLockLease is the call lease's TTL when PipelineOptions.LockTTL is zero: long enough
// to ride out a Redis hiccup of a few seconds, short enough that an orphaned call is picked up
// seconds after asynq recovers its task.
const DefaultLockLease = 15 * time.Second

// busyError says another worker holds the call's lock: retry soon, without counting a
// failure.
type busyError struct{ after time.Duration }

func (e busyError) Error() string             { return "worker: call is being processed by another worker" }
func (e busyError) Throttled() bool           { return true }
func (e busyError) RetryAfter() time.Duration { return e.after }

// errLeaseLost is the cause of the handler context's cancellation when the lease lapsed.
var errLeaseLost = errors.New("worker: the call's lease was lost while processing it")

var (
	unlockScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
	renewScript  = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)
)

// orOff is a, or an Acks that waits for no replica when the lock or state was built
// without one.
func orOff(a *durable.Acks, rdb redis.UniversalClient) *durable.Acks {
	if a == nil {
		return durable.Off(rdb)
	}
	return a
}

func lockKey(route, detailID string) string {
	return tasks.KeyPrefix + "lock:" + route + ":" + detailID
}

// acquire takes the call's lease. It returns a context that is cancelled if the lease is
// lost, and release, which must be called on every way out (defer it).
func (l callLock) acquire(ctx context.Context, route, detailID string) (context.Context, func(), error) {
	ttl := l.ttl
	if ttl <= 0 {
		ttl = DefaultLockLease
	}
	key := lockKey(route, detailID)
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	var ok bool
	err := orOff(l.acks, l.rdb).Write(ctx, "worker: lock call", key, func(ctx context.Context, c redis.Cmdable) error {
		var err error
		ok, err = c.SetNX(ctx, key, token, ttl).Result()
		return err
	})
	var notReplicated *durable.Error
	if errors.As(err, &notReplicated) {
		// Held on the master only: give it back rather than deliver under a lease a
		// failover could hand to another worker.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer rcancel()
		_ = unlockScript.Run(rctx, l.rdb, []string{key}, token).Err()
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, fmt.Errorf("worker: lock call: %w", err)
	}
	if !ok {
		// The holder renews every ttl/3; a dead holder's lease lapses within ttl.
		return nil, nil, busyError{after: min(2*time.Second, ttl)}
	}
	held, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		l.renew(held, stop, key, token, ttl, cancel)
	}()
	return held, func() {
		close(stop)
		<-renewed
		cancel(nil)
		// Released on a fresh context: the task's may be done, and a lease left behind would
		// delay the call's next event until it lapses.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer rcancel()
		_ = unlockScript.Run(rctx, l.rdb, []string{key}, token).Err()
	}, nil
}

// renew extends the lease every ttl/3 until stop closes. A renewal that finds the lease
// gone cancels the handler; one that cannot reach Redis is retried at the next tick (the
// lease survives two missed renewals).
func (l callLock) renew(ctx context.Context, stop <-chan struct{}, key, token string, ttl time.Duration, cancel context.CancelCauseFunc) {
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), ttl/3)
		n, err := renewScript.Run(rctx, l.rdb, []string{key}, token, ttl.Milliseconds()).Int()
		rcancel()
		if err == nil && n == 0 {
			cancel(errLeaseLost)
			return
		}
	}
}
