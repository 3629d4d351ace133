package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// callLock serialises the events of one call detail across worker replicas: merge, render
// and deliver must not interleave, or two events could each miss the other's fields, and
// the CRM id map protocol assumes one delivery per external id at a time. It is a Redis
// lock with an expiry (the task timeout), so a crashed worker cannot hold it forever.
type callLock struct {
	rdb redis.UniversalClient
	ttl time.Duration
}

// busyError says another worker holds the call's lock: retry soon, without counting a
// failure.
type busyError struct{ after time.Duration }

func (e busyError) Error() string             { return "worker: call is being processed by another worker" }
func (e busyError) Throttled() bool           { return true }
func (e busyError) RetryAfter() time.Duration { return e.after }

var unlockScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

func (l callLock) acquire(ctx context.Context, route, detailID string) (release func(), err error) {
	key := tasks.KeyPrefix + "lock:" + route + ":" + detailID
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	ok, err := l.rdb.SetNX(ctx, key, token, l.ttl).Result()
	if err != nil {
		return nil, fmt.Errorf("worker: lock call: %w", err)
	}
	if !ok {
		return nil, busyError{after: 2 * time.Second}
	}
	return func() {
		// Released on a fresh context: the task's may be done, and a lock left behind would
		// only delay the next event until it expires.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = unlockScript.Run(ctx, l.rdb, []string{key}, token).Err()
	}, nil
}
