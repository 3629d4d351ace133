package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// stateStore keeps the merged event of each call detail, so a later event of the same call
// (the minutes, an edited memo) renders on everything known about it. The state is the typed
// miitel.Event (unknown keys were dropped at ingest) as tasks.CompressEvent stores it: a
// seed-sized answered call with transcript and phrases compresses to a few KB. It is capped: above
// maxBytes the per-speaker phrases are dropped first (the transcript text stays), since they
// are the bulk and the least used by mappings.
//
// Both writes wait for replicas (durable.Acks). The state: a merged state lost in a
// failover makes the call's next event merge with an older one, and a record built without
// this event's fields can shorten a body the CRM holds (the written lengths are only read
// when no state is found). The written lengths: they are what keeps a poorer late event from
// shortening a body once the state expired, so they must hold before the task is done.
type stateStore struct {
	rdb      redis.UniversalClient
	acks     *durable.Acks
	ttl      time.Duration
	maxBytes int
}

func stateKey(route, detailID string) string {
	return tasks.KeyPrefix + "state:" + route + ":" + detailID
}

func writtenKey(route, detailID string) string {
	return tasks.KeyPrefix + "written:" + route + ":" + detailID
}

func (s *stateStore) load(ctx context.Context, route, detailID string) (*miitel.Event, error) {
	b, err := s.rdb.Get(ctx, stateKey(route, detailID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("worker: load call state: %w", err)
	}
	ev, err := decodeState(b)
	if err != nil {
		// A state we cannot read is treated as expired, not as a reason to lose the event.
		return nil, nil
	}
	return ev, nil
}

func (s *stateStore) save(ctx context.Context, ev *miitel.Event) (int, error) {
	b, err := encodeState(ev)
	if err != nil {
		return 0, err
	}
	if s.maxBytes > 0 && len(b) > s.maxBytes && len(ev.Detail.Phrases) > 0 {
		trimmed := *ev
		trimmed.Detail.Phrases = nil
		if b, err = encodeState(&trimmed); err != nil {
			return 0, err
		}
	}
	key := stateKey(ev.Route, ev.Detail.ID)
	err = orOff(s.acks, s.rdb).Write(ctx, "worker: save call state", key, func(ctx context.Context, c redis.Cmdable) error {
		return c.Set(ctx, key, b, s.ttl).Err()
	})
	if err := wrapUnlessDurable(err, "worker: save call state"); err != nil {
		return 0, err
	}
	return len(b), nil
}

func encodeState(ev *miitel.Event) ([]byte, error) {
	b, err := tasks.CompressEvent(ev)
	if err != nil {
		return nil, fmt.Errorf("worker: encode call state: %w", err)
	}
	return b, nil
}

func decodeState(b []byte) (*miitel.Event, error) { return tasks.DecompressEvent(b) }

// written remembers, per call detail, the length of each keep_longer field last sent to the
// CRM. It outlives the state (id-map TTL), so when the state has expired a late, poorer event
// (the minutes alone) cannot replace a body that held the transcript.
func (s *stateStore) writtenLengths(ctx context.Context, route, detailID string) (map[string]int, error) {
	m, err := s.rdb.HGetAll(ctx, writtenKey(route, detailID)).Result()
	if err != nil {
		return nil, fmt.Errorf("worker: load written fields: %w", err)
	}
	out := make(map[string]int, len(m))
	for k, v := range m {
		n, _ := strconv.Atoi(v)
		out[k] = n
	}
	return out, nil
}

func (s *stateStore) saveWritten(ctx context.Context, route, detailID string, lengths map[string]int, ttl time.Duration) error {
	if len(lengths) == 0 {
		return nil
	}
	key := writtenKey(route, detailID)
	vals := make([]any, 0, 2*len(lengths))
	for k, n := range lengths {
		vals = append(vals, k, n)
	}
	err := orOff(s.acks, s.rdb).Write(ctx, "worker: save written fields", key, func(ctx context.Context, c redis.Cmdable) error {
		_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, key, vals...)
			p.Expire(ctx, key, ttl)
			return nil
		})
		return err
	})
	return wrapUnlessDurable(err, "worker: save written fields")
}

// wrapUnlessDurable prefixes a write's own error with what was written; a *durable.Error
// already says it.
func wrapUnlessDurable(err error, op string) error {
	var de *durable.Error
	if err == nil || errors.As(err, &de) {
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}
