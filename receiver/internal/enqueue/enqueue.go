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
// Replicated acknowledgements (Ack): the script and WAIT numreplicas timeout go in one
// pipeline on one connection to the master (on a Cluster, the master owning the queue's
// slot), so an enqueue is done only once that many replicas hold it, still in one round
// trip. The call status (worker/callstatus) notes each receipt in the same script.
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

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
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

// Task is one encoded task: its id (the dedupe key) and its asynq TaskMessage, and the
// three values (callstatus.Store.ReceiveArgs) that note it in the call status; empty
// notes nothing.
type Task struct {
	ID      string
	Message []byte
	// StatusPrefix, StatusMember and Status are ReceiveArgs's prefix, member and argument.
	StatusPrefix, StatusMember, Status string
}

// AckAuto is Ack.Replicas's "auto": wait for the replicas the master reports online,
// never fewer than the most seen within Ack.Hold, none on a standalone Redis. The policy is
// durable.Replicas, the one the worker's exactly-once writes use: both refuse the same
// writes in a failover.
const AckAuto = -1

// Ack is what makes an enqueue count as done: Redis WAIT for Replicas replicas within
// Timeout, sent on the connection that ran the script, in the same pipeline (one round
// trip). WAIT waits for the connection's writes, so it covers the script's own; a script
// that wrote nothing (every task a duplicate, no status recorded) writes a marker key so
// that WAIT covers what the script read, too (the task another connection wrote, maybe
// never replicated): the replication stream is ordered, so replicas that hold the marker
// hold every write before it. (Redis 7.0 also moves a connection's WAIT offset on a read;
// the marker does not depend on that.) The zero Ack waits for nothing.
type Ack struct {
	// Replicas: AckAuto, 0 (off) or how many replicas must confirm.
	Replicas int
	// Timeout bounds WAIT; 0 means 300ms. It must stay below the client's read timeout.
	Timeout time.Duration
	// Refresh is how long a discovered replica count (AckAuto) is used before it is asked
	// again; 0 means durable.DefaultRefresh. A failure or a short WAIT asks again on the
	// next request.
	Refresh time.Duration
	// Hold is how long AckAuto keeps waiting for the most replicas it saw after the master
	// stopped reporting one; 0 means durable.DefaultHold, negative none (tests).
	Hold time.Duration
}

// Acked says what an enqueue waited for: Want replicas (0: it did not wait), Got of them
// confirmed.
type Acked struct{ Want, Got int }

// AckError is an enqueue the script ran but too few replicas confirmed within the timeout:
// the tasks are on the master and may yet replicate, or be lost in a failover. It is never
// acknowledged; the sender's re-send waits again (see Ack) and is a duplicate only of what
// is then on the replicas.
type AckError struct {
	Want, Got int
	Timeout   time.Duration
}

func (e *AckError) Error() string {
	return fmt.Sprintf("%d of %d replicas confirmed the write within %s (WAIT)", e.Got, e.Want, e.Timeout)
}

// IsNoReplicas reports a write Redis refused because too few replicas are connected
// (min-replicas-to-write): NOREPLICAS.
func IsNoReplicas(err error) bool {
	return err != nil && strings.Contains(err.Error(), "NOREPLICAS")
}

// Queue enqueues into one asynq queue.
type Queue struct {
	rdb      redis.UniversalClient
	cluster  *redis.ClusterClient // rdb, when it is one: the script goes to the slot's master
	name     string
	pending  string
	archived string
	mark     string // written where a script wrote nothing else, and by Probe
	// taskPrefix and ledgerPrefix make a task's two keys (TaskKey, tasks.LedgerKey);
	// pendingArg, archivedArg and markArg are the queue's keys boxed once for the script.
	taskPrefix, ledgerPrefix         string
	pendingArg, archivedArg, markArg any
	evalSha, evalSrc                 any // the script's hash and source, boxed once
	ack                              Ack
	src                              string        // the script: the status library, then scriptLua
	script                           *redis.Script // of src
	hasStatus                        bool          // a status library was given
	published                        atomic.Bool   // SADD asynq:queues done by this process
	now                              func() time.Time
	auto                             *durable.Replicas // AckAuto's count, by master address ("" outside a cluster)
}

// New returns a Queue for the asynq queue name on rdb that waits for replicas as ack says.
// statusLua is the call status's Lua library (callstatus.NoteLua), which defines
// mcs_status_defer; "" when no status is recorded.
func New(rdb redis.UniversalClient, name string, ack Ack, statusLua string) *Queue {
	prefix := "asynq:{" + name + "}:" // base.QueueKeyPrefix
	if ack.Timeout <= 0 {
		ack.Timeout = 300 * time.Millisecond
	}
	switch {
	case ack.Hold == 0:
		ack.Hold = durable.DefaultHold
	case ack.Hold < 0:
		ack.Hold = 0
	}
	q := &Queue{rdb: rdb, name: name, pending: prefix + "pending", archived: prefix + "archived",
		mark: tasks.KeyPrefix + "{" + name + "}:acked", ack: ack, now: time.Now, auto: durable.NewReplicas(ack.Refresh, ack.Hold),
		src: statusLua + "\n" + scriptLua, hasStatus: statusLua != ""}
	q.script = redis.NewScript(q.src)
	q.taskPrefix, q.ledgerPrefix = prefix+"t:", tasks.LedgerKey(name, "")
	q.pendingArg, q.archivedArg, q.markArg = q.pending, q.archived, q.mark
	q.evalSha, q.evalSrc = q.script.Hash(), q.src
	q.cluster, _ = rdb.(*redis.ClusterClient)
	return q
}

// Name is the asynq queue name.
func (q *Queue) Name() string { return q.name }

// TaskKey is asynq's hash of one task (base.TaskKey).
func (q *Queue) TaskKey(id string) string { return q.taskPrefix + id }

// script's KEYS are, per task i (1-based), KEYS[2i-1] = its asynq task hash and
// KEYS[2i] = its ledger key; then the queue's pending list, its archived zset and the
// marker key. ARGV[1] is the current Unix time in nanoseconds (asynq's pending_since),
// ARGV[2] "1" when a script that wrote nothing must write the marker (an enqueue that
// waits for replicas), ARGV[3] the call status prefix ("" records no status); then per task
// its message, id, call status member and call status argument. It returns one Result per
// task.
//
// Per task, in order: a ledger entry means Delivered. An existing task hash means a TaskID
// conflict (asynq's enqueueCmd returns 0 there): archived tasks are deleted the way
// asynq's deleteTaskCmd deletes them and the task is enqueued in their place (Requeued);
// any other state is a Duplicate. Otherwise the task is enqueued exactly as enqueueCmd
// does: HSET msg/state/pending_since, LPUSH the id onto pending. Then the event is
// noted in the call status (callstatus.NoteLua's mcs_status_defer), a duplicate as a
// duplicate.
//
// The call status library (callstatus.NoteLua, given to New: this package cannot import
// the worker's) is prepended to the script's source.
const scriptLua = `
local n = (#KEYS - 3) / 2
local pending = KEYS[#KEYS - 2]
local archived = KEYS[#KEYS - 1]
local mark = KEYS[#KEYS]
local sp = ARGV[3]
local wrote = false
local out = {}
for i = 1, n do
	local tk, lk = KEYS[2 * i - 1], KEYS[2 * i]
	local msg, id, sm, st = ARGV[4 * i], ARGV[4 * i + 1], ARGV[4 * i + 2], ARGV[4 * i + 3]
	local res = 1
	-- One EXISTS for both keys: neither exists for nearly every event, and then one call
	-- decides it; only a hit asks which.
	local hit = redis.call("EXISTS", lk, tk) > 0
	if hit and redis.call("EXISTS", lk) == 1 then
		res = -1
	elseif hit then
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
		wrote = true
	end
	if sp ~= "" and st ~= "" then
		mcs_status_defer(sp, sm, st, res <= 0)
		wrote = true
	end
	out[i] = res
end
if not wrote and ARGV[2] == "1" then
	redis.call("SET", mark, ARGV[1], "PX", 600000)
end
return out
`

// Enqueue runs the script for every task in one round trip and returns one Result per
// task, in order, and what it waited for. The script is atomic in Redis: either every
// task's outcome is decided and written, or (an error before it ran) none; a lost reply
// leaves everything written, and the sender's re-send then finds each task as a Duplicate.
// An *AckError means the script ran and too few replicas confirmed it: not done.
func (q *Queue) Enqueue(ctx context.Context, ts []Task) ([]Result, Acked, error) {
	if len(ts) == 0 {
		return nil, Acked{}, nil
	}
	prefix, err := q.check(ts)
	if err != nil {
		return nil, Acked{}, err
	}
	return q.enqueueChecked(ctx, ts, prefix)
}

// enqueueChecked is Enqueue of tasks check accepted, prefix their call status prefix (a
// Batcher checks each call once, as it arrives, and puts only calls of one prefix in a
// script).
func (q *Queue) enqueueChecked(ctx context.Context, ts []Task, prefix string) ([]Result, Acked, error) {
	node, addr, err := q.node(ctx)
	if err != nil {
		return nil, Acked{}, fmt.Errorf("enqueue: %w", err)
	}
	want, err := q.want(ctx, node, addr)
	if err != nil {
		return nil, Acked{}, fmt.Errorf("enqueue: %w", err)
	}
	args := q.scriptArgs(ts, want > 0, prefix)
	raw, acked, err := q.run(ctx, node, addr, want, args)
	if err != nil {
		return nil, acked, fmt.Errorf("enqueue: %w", err)
	}
	codes, ok := raw.([]any)
	if !ok || len(codes) != len(ts) {
		return nil, acked, fmt.Errorf("enqueue: unexpected script reply %T (%d tasks)", raw, len(ts))
	}
	out := make([]Result, len(ts))
	for i, c := range codes {
		n, ok := c.(int64)
		if !ok || n < -1 || n > 2 {
			return nil, acked, fmt.Errorf("enqueue: unexpected script result %v", c)
		}
		out[i] = Result(n)
	}
	return out, acked, nil
}

// check returns the tasks' call status prefix, refusing tasks the script cannot run
// together.
func (q *Queue) check(ts []Task) (string, error) {
	prefix := ts[0].StatusPrefix
	for _, t := range ts {
		if t.StatusPrefix != prefix {
			return "", errors.New("enqueue: the tasks of one request name different call status prefixes")
		}
	}
	// Every key of one script must hash to one slot (Redis Cluster refuses others, and a
	// standalone Redis would accept what a cluster later refuses): the status keys carry
	// the queue's hash tag like the asynq keys.
	if prefix != "" && !q.hasStatus {
		return "", errors.New("enqueue: tasks carry call status arguments but the queue has no status library")
	}
	if prefix != "" && !strings.HasPrefix(prefix, tasks.KeyPrefix+"{"+q.name+"}:") {
		return "", fmt.Errorf("enqueue: call status prefix %q is not in the slot of queue %q", prefix, q.name)
	}
	return prefix, nil
}

// scriptArgs is the script's command after its first two words (EVALSHA sha or EVAL
// source): numkeys, KEYS and ARGV as the comment on scriptLua lays them out. It is built
// here rather than by go-redis's EvalSha, which copies keys and args into a slice of its
// own and boxes each into an interface: the strings go into one backing array and are
// passed by pointer (go-redis writes a *string as the string), each task's two keys are
// one string sliced in two, and the queue's own keys are boxed once in New. What Redis
// receives is the same bytes.
func (q *Queue) scriptArgs(ts []Task, mark bool, prefix string) []any {
	n := len(ts)
	nkeys := 2*n + 3
	args := make([]any, 2, 2+1+nkeys+3+4*n)
	args = append(args, nkeys)
	// strs holds per task its task key, ledger key, id, status member and status; then the
	// prefix.
	const per = 5
	strs := make([]string, per*n+1)
	for i, t := range ts {
		k := q.taskPrefix + t.ID + q.ledgerPrefix + t.ID
		split := len(q.taskPrefix) + len(t.ID)
		s := strs[per*i : per*i+per]
		s[0], s[1], s[2], s[3], s[4] = k[:split], k[split:], t.ID, t.StatusMember, t.Status
		args = append(args, &s[0], &s[1])
	}
	args = append(args, q.pendingArg, q.archivedArg, q.markArg)
	markFlag := argNoMark
	if mark {
		markFlag = argMark
	}
	strs[per*n] = prefix
	args = append(args, q.now().UnixNano(), markFlag, &strs[per*n])
	for i, t := range ts {
		args = append(args, t.Message, &strs[per*i+2], &strs[per*i+3], &strs[per*i+4])
	}
	return args
}

// ARGV[2]'s two values, boxed once.
var argNoMark, argMark any = "0", "1"

// Probe checks the enqueue path without enqueueing: it writes the marker key and waits
// for the replicas as an enqueue would, on the same kind of connection, in one round trip.
// nil means an enqueue now would be acknowledged.
func (q *Queue) Probe(ctx context.Context) (Acked, error) {
	node, addr, err := q.node(ctx)
	if err != nil {
		return Acked{}, err
	}
	want, err := q.want(ctx, node, addr)
	if err != nil {
		return Acked{}, err
	}
	pipe := node.Pipeline()
	set := pipe.Set(ctx, q.mark, q.now().UnixNano(), 10*time.Minute)
	var wait *redis.Cmd
	if want > 0 {
		wait = q.wait(ctx, pipe, want)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command below
	if err := set.Err(); err != nil {
		q.failed(ctx, addr)
		return Acked{Want: want}, err
	}
	return q.acked(ctx, addr, want, wait)
}

// node is the client whose pipeline pins one connection to the master that owns the
// queue's slot: rdb itself (standalone, Sentinel: one master), or on a Cluster that
// master's own client, so the script and WAIT share a connection. addr keys the replica
// count of that master.
func (q *Queue) node(ctx context.Context) (pipeliner, string, error) {
	if q.cluster == nil {
		return q.rdb, "", nil
	}
	c, err := q.cluster.MasterForKey(ctx, q.pending)
	if err != nil {
		return nil, "", fmt.Errorf("the master of queue %q's slot: %w", q.name, err)
	}
	return c, c.Options().Addr, nil
}

// pipeliner is what node returns: *redis.Client or the UniversalClient.
type pipeliner interface {
	Pipeline() redis.Pipeliner
	Process(ctx context.Context, cmd redis.Cmder) error
	Info(ctx context.Context, section ...string) *redis.StringCmd
}

// run sends the script (EVALSHA, EVAL when Redis does not have it cached), then WAIT when
// want > 0, and, until it succeeded once, asynq's SADD of the queue name, in one pipeline
// on one connection; with neither WAIT nor SADD, the script alone (one command, one round
// trip, without a pipeline's own allocations). args is scriptArgs's, its first two
// elements left for the command's name and the hash or source.
func (q *Queue) run(ctx context.Context, node pipeliner, addr string, want int, args []any) (any, Acked, error) {
	publish := !q.published.Load()
	if publish && q.cluster != nil {
		// asynq:queues lives in another slot, maybe on another master: its own round trip,
		// once per process; a failure is retried with the next request.
		if q.cluster.SAdd(ctx, allQueues, q.name).Err() == nil {
			q.published.Store(true)
		}
		publish = false
	}
	for _, sha := range []bool{true, false} {
		if sha {
			args[0], args[1] = "evalsha", q.evalSha
		} else {
			args[0], args[1] = "eval", q.evalSrc
		}
		// What go-redis's EvalSha and Eval build, on args as they are.
		cmd := redis.NewCmd(ctx, args...)
		cmd.SetFirstKeyPos(3)
		var sadd *redis.IntCmd
		var wait *redis.Cmd
		if !publish && want <= 0 {
			_ = node.Process(ctx, cmd) // the error is read below
		} else {
			pipe := node.Pipeline()
			if publish {
				sadd = pipe.SAdd(ctx, allQueues, q.name)
			}
			_ = pipe.Process(ctx, cmd)
			if want > 0 {
				wait = q.wait(ctx, pipe, want)
			}
			_, _ = pipe.Exec(ctx) // errors are read per command below
		}
		if sadd != nil && sadd.Err() == nil {
			q.published.Store(true)
		}
		if sha && isNoScript(cmd.Err()) {
			continue // Redis restarted or flushed its script cache: send the source once
		}
		// A failed SADD with a script that ran: the tasks are queued; the queue set is
		// retried with the next request, as asynq's client would (it publishes before
		// enqueueing; the worker does not need the set, only the Inspector does).
		if err := cmd.Err(); err != nil {
			q.failed(ctx, addr)
			return nil, Acked{Want: want}, err
		}
		acked, err := q.acked(ctx, addr, want, wait)
		if err != nil {
			return nil, acked, err
		}
		return cmd.Val(), acked, nil
	}
	return nil, Acked{}, errors.New("script not loaded") // unreachable: the EVAL round returns
}

// wait queues WAIT numreplicas timeout on pipe (Pipeliner has no Wait method; it is
// meaningful only on a pinned connection, which a pipeline is).
func (q *Queue) wait(ctx context.Context, pipe redis.Pipeliner, want int) *redis.Cmd {
	return pipe.Do(ctx, "wait", want, max(1, q.ack.Timeout.Milliseconds())) // 0 would wait forever
}

// acked reads WAIT's answer.
func (q *Queue) acked(ctx context.Context, addr string, want int, wait *redis.Cmd) (Acked, error) {
	a := Acked{Want: want}
	if wait == nil {
		return a, nil
	}
	if err := wait.Err(); err != nil {
		q.failed(ctx, addr)
		return a, fmt.Errorf("WAIT: %w", err)
	}
	got, err := wait.Int64()
	if err != nil {
		q.failed(ctx, addr)
		return a, fmt.Errorf("WAIT: %w", err)
	}
	a.Got = int(got)
	if a.Got < want {
		// Maybe a replica is gone for good: under auto, the next request asks the master
		// again how many it has.
		q.failed(ctx, addr)
		return a, &AckError{Want: want, Got: a.Got, Timeout: q.ack.Timeout}
	}
	return a, nil
}

// failed makes the next request ask again what it asked once: the replica count (a
// failover or a replica lost changes it) and, on a Cluster, which master owns the slot.
func (q *Queue) failed(ctx context.Context, addr string) {
	q.auto.Forget(addr)
	if q.cluster != nil {
		q.cluster.ReloadState(ctx)
	}
}

// want is how many replicas to wait for: Ack.Replicas, or under AckAuto durable.Replicas's
// count for the master. (INFO goes through node's pool, not the pipeline's connection: on
// Sentinel both dial the master the Sentinels name, on a Cluster node is the master.)
func (q *Queue) want(ctx context.Context, node pipeliner, addr string) (int, error) {
	if q.ack.Replicas >= 0 {
		return q.ack.Replicas, nil
	}
	return q.auto.Want(ctx, addr, func(ctx context.Context) (string, error) { return node.Info(ctx, "replication").Result() })
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
