package enqueue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

const (
	queue   = "miitel-q"
	retries = 8
	timeout = 90 * time.Second
)

func message(id string, payload []byte) []byte {
	return Message(tasks.TypeCallEvent, id, queue, retries, timeout, len(payload),
		func(b []byte) []byte { return append(b, payload...) })
}

func enqueueOne(t *testing.T, q *Queue, id string, payload []byte) Result {
	t.Helper()
	res, _, err := q.Enqueue(context.Background(), []Task{{ID: id, Message: message(id, payload)}})
	if err != nil {
		t.Fatal(err)
	}
	return res[0]
}

// asynqEnqueue enqueues the same task the way the receiver used to, through asynq.Client.
func asynqEnqueue(t *testing.T, rdb redis.UniversalClient, id string, payload []byte, opts ...asynq.Option) {
	t.Helper()
	c := asynq.NewClientFromRedisClient(rdb)
	task := asynq.NewTask(tasks.TypeCallEvent, payload)
	opts = append([]asynq.Option{asynq.TaskID(id), asynq.Queue(queue), asynq.MaxRetry(retries), asynq.Timeout(timeout)}, opts...)
	if _, err := c.Enqueue(task, opts...); err != nil {
		t.Fatal(err)
	}
}

// seen is what a real asynq.Server handler observes of a task.
type seen struct {
	Type, ID, Queue   string
	Payload           string
	Retried, MaxRetry int
	HasDeadline       bool
	DeadlineWithin    bool // no later than now + Timeout, and not much earlier
}

// process runs a real asynq.Server on rdb until it has handled one task, and reports it.
func process(t *testing.T, rdb redis.UniversalClient) seen {
	t.Helper()
	got := make(chan seen, 1)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{queue: 1}, LogLevel: asynq.FatalLevel,
		TaskCheckInterval: 10 * time.Millisecond,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeCallEvent, func(ctx context.Context, task *asynq.Task) error {
		start := time.Now()
		id, _ := asynq.GetTaskID(ctx)
		q, _ := asynq.GetQueueName(ctx)
		retried, _ := asynq.GetRetryCount(ctx)
		maxRetry, _ := asynq.GetMaxRetry(ctx)
		dl, ok := ctx.Deadline()
		got <- seen{Type: task.Type(), ID: id, Queue: q, Payload: string(task.Payload()), Retried: retried, MaxRetry: maxRetry,
			HasDeadline: ok, DeadlineWithin: ok && !dl.After(start.Add(timeout)) && dl.After(start.Add(timeout/2))}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	return <-got
}

// TestSameAsAsynqClient: a task written by the script and one written by asynq.Client for
// the same event are the same to Redis (every key and field but the enqueue time), to
// asynq's Inspector and to asynq's Server.
func TestSameAsAsynqClient(t *testing.T) {
	ours, theirs := redistest.Start(t).Client(), redistest.Start(t).Client()
	ctx := context.Background()
	payload := []byte(`{"route":"r","call_id":"c","detail":{"id":"d"},"dedupe_key":"0123456789abcdef0123456789abcdef"}`)
	const id = "0123456789abcdef0123456789abcdef"

	if res := enqueueOne(t, New(ours, queue, Ack{}), id, payload); res != Queued {
		t.Fatalf("result %d, want Queued", res)
	}
	asynqEnqueue(t, theirs, id, payload)

	for _, rdb := range []*redis.Client{ours, theirs} {
		if n, err := rdb.HLen(ctx, "asynq:{"+queue+"}:t:"+id).Result(); err != nil || n != 3 {
			t.Fatalf("task hash fields %d %v, want msg, state, pending_since", n, err)
		}
	}
	dump := func(rdb *redis.Client) map[string]string {
		out := map[string]string{}
		keys, err := rdb.Keys(ctx, "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			switch typ := rdb.Type(ctx, k).Val(); typ {
			case "hash":
				h := rdb.HGetAll(ctx, k).Val()
				delete(h, "pending_since") // the enqueue time
				out[k] = fmt.Sprint(h)
			case "list":
				out[k] = fmt.Sprint(rdb.LRange(ctx, k, 0, -1).Val())
			case "set":
				out[k] = fmt.Sprint(rdb.SMembers(ctx, k).Val())
			default:
				out[k] = typ
			}
		}
		return out
	}
	if diff := cmp.Diff(dump(theirs), dump(ours)); diff != "" {
		t.Errorf("redis contents (-asynq.Client +script):\n%s", diff)
	}
	since := func(rdb *redis.Client) int64 {
		v, err := rdb.HGet(ctx, "asynq:{"+queue+"}:t:"+id, "pending_since").Int64()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if s := since(ours); s < time.Now().Add(-time.Hour).UnixNano() || s > time.Now().UnixNano() {
		t.Errorf("pending_since %d is not an enqueue time in Unix nanoseconds", s)
	}

	info := func(rdb *redis.Client) *asynq.TaskInfo {
		ti, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(queue, id)
		if err != nil {
			t.Fatal(err)
		}
		return ti
	}
	want, got := info(theirs), info(ours)
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(asynq.TaskInfo{}, "NextProcessAt")); diff != "" {
		t.Errorf("Inspector.GetTaskInfo (-asynq.Client +script):\n%s", diff)
	}
	if got.State != asynq.TaskStatePending || got.MaxRetry != retries || got.Timeout != timeout || got.Queue != queue {
		t.Errorf("task info %+v", got)
	}

	wantSeen, gotSeen := process(t, theirs), process(t, ours)
	if diff := cmp.Diff(wantSeen, gotSeen); diff != "" {
		t.Errorf("what the handler sees (-asynq.Client +script):\n%s", diff)
	}
	if !gotSeen.DeadlineWithin || gotSeen.MaxRetry != retries || gotSeen.ID != id || gotSeen.Payload != string(payload) {
		t.Errorf("handler saw %+v", gotSeen)
	}
}

// TestConflicts: a TaskID conflict with a pending, active, retrying or scheduled task is a
// duplicate and leaves that task alone; a ledger entry is Delivered; an archived task is
// replaced by the new one and queued afresh.
func TestConflicts(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	q := New(rdb, queue, Ack{})
	insp := asynq.NewInspectorFromRedisClient(rdb)
	old, fresh := []byte(`{"v":"old"}`), []byte(`{"v":"new"}`)

	// pending
	if res := enqueueOne(t, q, "p", old); res != Queued {
		t.Fatalf("first: %d", res)
	}
	if res := enqueueOne(t, q, "p", fresh); res != Duplicate {
		t.Errorf("pending conflict: %d, want Duplicate", res)
	}
	// scheduled, by asynq itself
	asynqEnqueue(t, rdb, "s", old, asynq.ProcessIn(time.Hour))
	if res := enqueueOne(t, q, "s", fresh); res != Duplicate {
		t.Errorf("scheduled conflict: %d, want Duplicate", res)
	}
	// delivered within the window
	if err := rdb.Set(ctx, tasks.LedgerKey(queue, "l"), "analysis", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if res := enqueueOne(t, q, "l", fresh); res != Delivered {
		t.Errorf("ledger: %d, want Delivered", res)
	}
	// archived: replaced
	if res := enqueueOne(t, q, "a", old); res != Queued {
		t.Fatal(res)
	}
	if err := insp.ArchiveTask(queue, "a"); err != nil {
		t.Fatal(err)
	}
	if res := enqueueOne(t, q, "a", fresh); res != Requeued {
		t.Errorf("archived conflict: %d, want Requeued", res)
	}
	ti, err := insp.GetTaskInfo(queue, "a")
	if err != nil || ti.State != asynq.TaskStatePending || string(ti.Payload) != string(fresh) {
		t.Errorf("after replacing the archived task: %+v %v", ti, err)
	}
	if arch, err := insp.ListArchivedTasks(queue); err != nil || len(arch) != 0 {
		t.Errorf("archived left: %v %v", arch, err)
	}
	for id, want := range map[string]string{"p": `{"v":"old"}`, "s": `{"v":"old"}`} {
		ti, err := insp.GetTaskInfo(queue, id)
		if err != nil || string(ti.Payload) != want {
			t.Errorf("task %s after a duplicate: %+v %v", id, ti, err)
		}
	}
	pending, err := insp.ListPendingTasks(queue)
	if err != nil || len(pending) != 2 { // p and a: the pending list holds each id once
		t.Errorf("pending %d %v, want 2", len(pending), err)
	}

	// active and retry, through a real server
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	q = New(rdb, queue, Ack{})
	running, release := make(chan struct{}), make(chan struct{})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{queue: 1}, LogLevel: asynq.FatalLevel,
		TaskCheckInterval: 10 * time.Millisecond,
		RetryDelayFunc:    func(int, error, *asynq.Task) time.Duration { return time.Hour },
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeCallEvent, func(ctx context.Context, task *asynq.Task) error {
		running <- struct{}{}
		<-release
		return errors.New("fail once")
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	if res := enqueueOne(t, q, "r", old); res != Queued {
		t.Fatal(res)
	}
	<-running
	if res := enqueueOne(t, q, "r", fresh); res != Duplicate {
		t.Errorf("active conflict: %d, want Duplicate", res)
	}
	close(release)
	for { // the failed attempt moves the task to retry; wait for asynq to record it
		ti, err := insp.GetTaskInfo(queue, "r")
		if err == nil && ti.State == asynq.TaskStateRetry {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling asynq's own state change, not a guess
	}
	if res := enqueueOne(t, q, "r", fresh); res != Duplicate {
		t.Errorf("retry conflict: %d, want Duplicate", res)
	}
}

// TestOneRequestManyTasks: every task of a request in one script, in order; a detail that
// occurs twice in one request is queued once.
func TestOneRequestManyTasks(t *testing.T) {
	rdb := redistest.Start(t).Client()
	q := New(rdb, queue, Ack{})
	var ts []Task
	for i := range 20 {
		id := "t" + strconv.Itoa(i)
		ts = append(ts, Task{ID: id, Message: message(id, []byte(`{}`))})
	}
	ts = append(ts, ts[3])
	res, _, err := q.Enqueue(context.Background(), ts)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		want := Queued
		if i == 20 {
			want = Duplicate
		}
		if r != want {
			t.Errorf("task %d: %d, want %d", i, r, want)
		}
	}
	if n := rdb.LLen(context.Background(), "asynq:{"+queue+"}:pending").Val(); n != 20 {
		t.Errorf("pending %d, want 20", n)
	}
}

// TestScriptCacheFlushed: after Redis lost its script cache (restart, SCRIPT FLUSH), the
// next request still goes through (EVAL after NOSCRIPT).
func TestScriptCacheFlushed(t *testing.T) {
	rdb := redistest.Start(t).Client()
	q := New(rdb, queue, Ack{})
	enqueueOne(t, q, "x", []byte(`{}`))
	if err := rdb.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if res := enqueueOne(t, q, "y", []byte(`{}`)); res != Queued {
		t.Errorf("after SCRIPT FLUSH: %d", res)
	}
}

// TestCluster runs the script on a Redis Cluster (one node owning every slot: Redis still
// refuses a script whose keys span slots, CROSSSLOT): the task, the ledger and the queue's
// lists hash to one slot, and asynq's Inspector reads the result.
func TestCluster(t *testing.T) {
	cl := startCluster(t)
	ctx := context.Background()
	q := New(cl, queue, Ack{})
	if res := enqueueOne(t, q, "c1", []byte(`{}`)); res != Queued {
		t.Fatal(res)
	}
	if err := cl.Set(ctx, tasks.LedgerKey(queue, "c2"), "analysis", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	res, _, err := q.Enqueue(ctx, []Task{{ID: "c1", Message: message("c1", []byte(`{}`))}, {ID: "c2", Message: message("c2", []byte(`{}`))}, {ID: "c3", Message: message("c3", []byte(`{}`))}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Result{Duplicate, Delivered, Queued}, res); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	ti, err := asynq.NewInspectorFromRedisClient(cl).GetTaskInfo(queue, "c3")
	if err != nil || ti.State != asynq.TaskStatePending {
		t.Errorf("inspector on the cluster: %+v %v", ti, err)
	}
	slot := func(k string) int64 { return cl.ClusterKeySlot(ctx, k).Val() }
	for _, k := range []string{q.TaskKey("c1"), tasks.LedgerKey(queue, "c1"), q.pending, q.archived} {
		if slot(k) != slot(q.pending) {
			t.Errorf("key %s is in slot %d, not the queue's %d", k, slot(k), slot(q.pending))
		}
	}
}

// startCluster starts a one-node Redis Cluster owning all 16384 slots.
func startCluster(t *testing.T) *redis.ClusterClient {
	t.Helper()
	srv := redistest.Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	c := srv.Client()
	ctx := context.Background()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(c.ClusterInfo(ctx).Val(), "cluster_state:ok") {
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok: %s", c.ClusterInfo(ctx).Val())
		}
		time.Sleep(10 * time.Millisecond) // polling the node's own state change
	}
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr()}})
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}
