// Package enqueue puts a request's call-event tasks into Redis in one round trip, in exactly
// the layout asynq v0.26 writes (so asynq's server, inspector and the replay command see
// ordinary asynq tasks), with the dedupe checks folded into the same Lua script: the ledger
// (delivered within the window), a TaskID conflict with a queued task (a duplicate) and
// one with a dead-lettered task (replaced, so a re-send of a dead-lettered event is queued
// afresh).
//
// asynq's Client cannot do this: it takes one task per call, one script per task, and no
// extra keys. What the script writes mirrors asynq v0.26's enqueueCmd (internal/rdb/rdb.go)
// and, for the archived case, deleteTaskCmd (internal/rdb/inspect.go); the task message is
// asynq's protobuf TaskMessage (internal/proto/asynq.proto) encoded with protowire. A
// compatibility test enqueues the same event through asynq.Client and through this package
// and compares what asynq's Inspector and Server see.
//
// Redis Cluster: every key one script touches carries the queue's hash tag ({queue}), the
// ledger keys included (tasks.LedgerKey), so they all hash to one slot. asynq's queue set
// (asynq:queues, another slot) is written with SADD once per process, as asynq's client
// does, in the same pipeline as the first request's script.
//
// The script runs through a pipeline on the caller's client so a later change can send
// WAIT numreplicas timeout on the same connection right after it (issue 11) without
// another structure.
package enqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// allQueues is asynq's set of queue names (base.AllQueues); the Inspector lists only the
// queues in it.
const allQueues = "asynq:queues"

// Result is what happened to one task.
type Result int8

const (
	// Duplicate: a task with this id is pending, active, retrying or scheduled.
	Duplicate Result = 0
	// Queued: the task is now pending.
	Queued Result = 1
	// Requeued: a dead-lettered (archived) task with this id was deleted and the task is
	// now pending in its place.
	Requeued Result = 2
	// Delivered: the ledger says the event was delivered within the dedupe window.
	Delivered Result = -1
)

// Task is one encoded task: its id (the dedupe key) and its asynq TaskMessage.
type Task struct {
	ID      string
	Message []byte
}

// Queue enqueues into one asynq queue.
type Queue struct {
	rdb       redis.UniversalClient
	name      string
	pending   string
	archived  string
	published atomic.Bool // SADD asynq:queues done by this process
	now       func() time.Time
}

// New returns a Queue for the asynq queue name on rdb.
func New(rdb redis.UniversalClient, name string) *Queue {
	prefix := "asynq:{" + name + "}:" // base.QueueKeyPrefix
	return &Queue{rdb: rdb, name: name, pending: prefix + "pending", archived: prefix + "archived", now: time.Now}
}

// Name is the asynq queue name.
func (q *Queue) Name() string { return q.name }

// TaskKey is asynq's hash of one task (base.TaskKey).
func (q *Queue) TaskKey(id string) string { return "asynq:{" + q.name + "}:t:" + id }

// script's KEYS are, per task i (1-based), KEYS[2i-1] = its asynq task hash and
// KEYS[2i] = its ledger key; then the queue's pending list and archived zset. ARGV[1] is
// the current Unix time in nanoseconds (asynq's pending_since), then per task its message
// and id. It returns one Result per task.
//
// Per task, in order: a ledger entry means Delivered. An existing task hash means a TaskID
// conflict (asynq's enqueueCmd returns 0 there): archived tasks are deleted the way
// asynq's deleteTaskCmd deletes them and the task is enqueued in their place (Requeued);
// any other state is a Duplicate. Otherwise the task is enqueued exactly as enqueueCmd
// does: HSET msg/state/pending_since, LPUSH the id onto pending.
const scriptLua = `
local n = (#KEYS - 2) / 2
local pending = KEYS[#KEYS - 1]
local archived = KEYS[#KEYS]
local out = {}
for i = 1, n do
	local tk, lk = KEYS[2 * i - 1], KEYS[2 * i]
	local msg, id = ARGV[2 * i], ARGV[2 * i + 1]
	local res = 1
	if redis.call("EXISTS", lk) == 1 then
		res = -1
	elseif redis.call("EXISTS", tk) == 1 then
		res = 0
		if redis.call("HGET", tk, "state") == "archived" then
			redis.call("ZREM", archived, id)
			local unique_key = redis.call("HGET", tk, "unique_key")
			if unique_key and unique_key ~= "" and redis.call("GET", unique_key) == id then
				redis.call("DEL", unique_key)
			end
			redis.call("DEL", tk)
			res = 2
		end
	end
	if res > 0 then
		redis.call("HSET", tk, "msg", msg, "state", "pending", "pending_since", ARGV[1])
		redis.call("LPUSH", pending, id)
	end
	out[i] = res
end
return out
`

var script = redis.NewScript(scriptLua)

// Enqueue runs the script for every task in one round trip and returns one Result per
// task, in order. The script is atomic in Redis: either every task's outcome is decided
// and written, or (an error before it ran) none; a lost reply leaves everything written,
// and the sender's re-send then finds each task as a Duplicate.
func (q *Queue) Enqueue(ctx context.Context, ts []Task) ([]Result, error) {
	if len(ts) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, 2*len(ts)+2)
	args := make([]any, 0, 2*len(ts)+1)
	args = append(args, q.now().UnixNano())
	for _, t := range ts {
		keys = append(keys, q.TaskKey(t.ID), tasks.LedgerKey(q.name, t.ID))
		args = append(args, t.Message, t.ID)
	}
	keys = append(keys, q.pending, q.archived)

	raw, err := q.run(ctx, keys, args)
	if err != nil {
		return nil, fmt.Errorf("enqueue: %w", err)
	}
	codes, ok := raw.([]any)
	if !ok || len(codes) != len(ts) {
		return nil, fmt.Errorf("enqueue: unexpected script reply %T (%d tasks)", raw, len(ts))
	}
	out := make([]Result, len(ts))
	for i, c := range codes {
		n, ok := c.(int64)
		if !ok || n < -1 || n > 2 {
			return nil, fmt.Errorf("enqueue: unexpected script result %v", c)
		}
		out[i] = Result(n)
	}
	return out, nil
}

// run sends the script (EVALSHA, EVAL when Redis does not have it cached) and, until it
// succeeded once, asynq's SADD of the queue name, in one pipeline. WAIT for replicas would
// go right after the script here.
func (q *Queue) run(ctx context.Context, keys []string, args []any) (any, error) {
	publish := !q.published.Load()
	for _, sha := range []bool{true, false} {
		pipe := q.rdb.Pipeline()
		var sadd *redis.IntCmd
		if publish {
			sadd = pipe.SAdd(ctx, allQueues, q.name)
		}
		var cmd *redis.Cmd
		if sha {
			cmd = pipe.EvalSha(ctx, script.Hash(), keys, args...)
		} else {
			cmd = pipe.Eval(ctx, scriptLua, keys, args...)
		}
		_, _ = pipe.Exec(ctx) // errors are read per command below
		if sadd != nil && sadd.Err() == nil {
			q.published.Store(true)
		}
		if sha && isNoScript(cmd.Err()) {
			continue // Redis restarted or flushed its script cache: send the source once
		}
		if sadd != nil && sadd.Err() != nil && cmd.Err() == nil {
			// The tasks are queued; the queue set is retried with the next request, as
			// asynq's client would (it publishes before enqueueing; the worker does not
			// need the set, only the Inspector does).
			return cmd.Val(), nil
		}
		return cmd.Result()
	}
	return nil, errors.New("script not loaded") // unreachable: the EVAL round returns
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// Message encodes asynq's TaskMessage for a task enqueued now with no deadline, no
// uniqueness, no group and no retention (what asynq.Client.Enqueue writes for
// asynq.NewTask(typ, payload) with TaskID, Queue, MaxRetry and Timeout options), with the
// fields in field-number order as proto.Marshal writes them. payload is written by
// writePayload into the message buffer itself, so the largest part of a task is copied
// once; size is its exact length.
func Message(typ, id, queue string, retry int, timeout time.Duration, size int, writePayload func([]byte) []byte) []byte {
	n := protowire.SizeTag(1) + protowire.SizeBytes(len(typ)) +
		protowire.SizeTag(2) + protowire.SizeBytes(size) +
		protowire.SizeTag(3) + protowire.SizeBytes(len(id)) +
		protowire.SizeTag(4) + protowire.SizeBytes(len(queue))
	secs := int64(timeout / time.Second)
	if retry != 0 {
		n += protowire.SizeTag(5) + protowire.SizeVarint(uint64(int64(int32(retry))))
	}
	if secs != 0 {
		n += protowire.SizeTag(8) + protowire.SizeVarint(uint64(secs))
	}
	b := make([]byte, 0, n)
	// proto3 omits empty strings; type and queue never are, id and payload never are here.
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, typ)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	start := len(b)
	b = writePayload(b)
	if len(b)-start != size {
		panic(fmt.Sprintf("enqueue: payload writer wrote %d bytes, declared %d", len(b)-start, size))
	}
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, id)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, queue)
	if retry != 0 {
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(int32(retry)))) // int32: negative values sign-extend
	}
	// 6 retried, 7 error_msg: zero for a new task. 8 timeout in seconds:
	if secs != 0 {
		b = protowire.AppendTag(b, 8, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(secs))
	}
	// 9 deadline: asynq writes noDeadline.Unix() == 0, omitted; 10-15: empty.
	return b
}
