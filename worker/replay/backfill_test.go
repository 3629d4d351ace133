package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/examples"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/callstatus"
)

// jsonl makes a backfill file: one compact webhook body per line.
func jsonl(t *testing.T, lines ...string) string {
	t.Helper()
	var b strings.Builder
	for _, l := range lines {
		if src, err := examples.Payload(l); err == nil {
			var c bytes.Buffer
			if err := json.Compact(&c, src); err != nil {
				t.Fatal(err)
			}
			l = c.String()
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

const (
	seed    = "call_analysis_completed/seed_sample.json"
	sample1 = "call_analysis_completed/sample1.json"
	minutes = "call_summarization_completed/sample1.json"
)

// Stored payloads go through the receiver's path: parsed and checked, credential keys
// removed, queued with dedupe; a line sent twice is a duplicate, and the whole file sent
// again after delivery is all duplicates.
func TestBackfillThroughTheReceiverPath(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t)
	if err := r.inspector.PauseQueue(r.queue.Name); err != nil {
		t.Fatal(err)
	}
	file := jsonl(t, seed, `{"challenge": "abc"}`, "", `{"call": {"id": "x"`, sample1, seed, `{"call": {"id": "c", "tenant_code": "t"}}`, minutes)
	enq := receiverEnqueue(t, r.rdb, r.queue, r.status)
	var lines []int
	sum, err := Backfill(ctx, strings.NewReader(file), enq, BackfillOptions{Route: "r", CredentialKeys: []string{"params_key"},
		Progress: func(p BackfillProgress) { lines = append(lines, p.Line) }})
	if err != nil {
		t.Fatal(err)
	}
	want := BackfillCounts{Lines: 7, Events: 4, Queued: 3, Duplicates: 1, Challenges: 1, Invalid: 2}
	if sum.BackfillCounts != want {
		t.Errorf("counts = %+v, want %+v", sum.BackfillCounts, want)
	}
	if len(sum.Errors) != 2 || sum.Errors[0].Line != 4 || sum.Errors[1].Line != 7 || !strings.Contains(sum.Errors[1].Error, "details is required") {
		t.Errorf("errors = %+v", sum.Errors)
	}
	if len(lines) != 7 || lines[0] != 1 || lines[6] != 8 {
		t.Errorf("progress lines = %v", lines)
	}
	// The additional-payload credential never reaches the queue.
	pending, err := r.inspector.ListPendingTasks(r.queue.Name)
	if err != nil || len(pending) != 3 {
		t.Fatalf("pending = %d, %v", len(pending), err)
	}
	for _, p := range pending {
		if bytes.Contains(p.Payload, []byte("params_key")) {
			t.Errorf("task %s carries the payload credential", p.ID)
		}
	}
	if err := r.inspector.UnpauseQueue(r.queue.Name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivered", func() bool { return r.crm.total() == 3 })
	waitFor(t, "every call done", func() bool {
		sts, err := r.status.List(ctx, callstatus.Query{State: "done"})
		return err == nil && len(sts) == 3 // three calls: MiiTel's samples are of different calls
	})
	sts, err := r.status.Get(ctx, "99e2fdb7-845a-46de-8d94-882add220551")
	if err != nil || len(sts) != 1 || len(sts[0].Events) != 1 || sts[0].Events[0].Duplicates != 1 {
		t.Fatalf("seed status = %+v, %v", sts, err)
	}

	again, err := Backfill(ctx, strings.NewReader(file), enq, BackfillOptions{Route: "r", CredentialKeys: []string{"params_key"}})
	if err != nil {
		t.Fatal(err)
	}
	if again.Queued != 0 || again.Duplicates != 4 {
		t.Errorf("the same file again: %+v, want every event a duplicate", again.BackfillCounts)
	}
	if r.crm.total() != 3 {
		t.Errorf("delivered %d, want 3: nothing twice", r.crm.total())
	}
}

func TestBackfillDryRunQueuesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t)
	sum, err := Backfill(ctx, strings.NewReader(jsonl(t, seed, sample1, "[1]")), nil, BackfillOptions{Route: "r", DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Events != 2 || sum.Queued != 0 || sum.Invalid != 1 || !sum.DryRun {
		t.Errorf("summary = %+v", sum)
	}
	if qs, _ := r.inspector.Queues(); len(qs) != 0 {
		t.Errorf("a dry run created queues %v", qs)
	}
	for _, pattern := range []string{"asynq:{*", "mcs:*"} {
		if keys := r.rdb.Keys(ctx, pattern).Val(); len(keys) != 0 {
			t.Errorf("a dry run wrote %v", keys)
		}
	}
}

// failingEnqueuer fails on its nth call, as a Redis outage mid-way would.
type failingEnqueuer struct {
	Enqueuer
	n, calls int
}

func (f *failingEnqueuer) Enqueue(ctx context.Context, route string, evs []*miitel.Event) ([]Enqueued, error) {
	f.calls++
	if f.calls == f.n {
		return nil, errors.New("redis: i/o timeout")
	}
	return f.Enqueuer.Enqueue(ctx, route, evs)
}

// An enqueue failure stops the backfill at its line; resuming from that line finishes it,
// and what was queued before counts as duplicates, never twice.
func TestBackfillStopsAndResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t)
	if err := r.inspector.PauseQueue(r.queue.Name); err != nil {
		t.Fatal(err)
	}
	file := jsonl(t, seed, sample1, minutes)
	enq := &failingEnqueuer{Enqueuer: receiverEnqueue(t, r.rdb, r.queue, nil), n: 2}
	sum, err := Backfill(ctx, strings.NewReader(file), enq, BackfillOptions{Route: "r"})
	if err == nil || sum.StoppedAt != 2 || sum.Queued != 1 || !strings.Contains(err.Error(), "resume from line 2") {
		t.Fatalf("summary %+v, err %v", sum, err)
	}
	sum, err = Backfill(ctx, strings.NewReader(file), enq, BackfillOptions{Route: "r", FromLine: sum.StoppedAt})
	if err != nil || sum.Lines != 2 || sum.Queued != 2 {
		t.Fatalf("resumed: %+v, %v", sum, err)
	}
	if pending, _ := r.inspector.ListPendingTasks(r.queue.Name, asynq.PageSize(10)); len(pending) != 3 {
		t.Errorf("pending = %d, want the 3 events once each", len(pending))
	}
}

func TestBackfillRefusesAnOverlongLine(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	_, err := Backfill(context.Background(), strings.NewReader(jsonl(t, seed)), receiverEnqueue(t, r.rdb, r.queue, nil),
		BackfillOptions{Route: "r", MaxLineBytes: 1024})
	if err == nil || !strings.Contains(err.Error(), "line 1 is over 1024 bytes") {
		t.Errorf("err = %v", err)
	}
}

// receiverEnqueue is the receiver's own enqueue on rdb, as cmd wires it for a backfill;
// st nil records no call status.
func receiverEnqueue(t *testing.T, rdb redis.UniversalClient, q config.Queue, st *callstatus.Store) Enqueuer {
	t.Helper()
	o := receiver.EnqueueOptions{Redis: rdb, Queue: q, Timeout: 5 * time.Second}
	if st != nil {
		o.Status = receiver.Status{Lua: callstatus.NoteLua, Args: st}
	}
	e, err := receiver.NewEnqueuer(o)
	if err != nil {
		t.Fatal(err)
	}
	return ReceiverEnqueuer(e)
}
