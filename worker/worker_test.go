package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// procFunc adapts a function to Processor.
type procFunc func(ctx context.Context, ev *miitel.Event) error

func (f procFunc) Process(ctx context.Context, ev *miitel.Event) error { return f(ctx, ev) }

type throttledErr struct{ after time.Duration }

func (e throttledErr) Error() string             { return "throttled" }
func (e throttledErr) Throttled() bool           { return true }
func (e throttledErr) RetryAfter() time.Duration { return e.after }

type attempt struct {
	detail  string
	retried int
}

type harness struct {
	client    *asynq.Client
	inspector *asynq.Inspector
	w         *Worker
	queue     config.Queue
	srv       *redistest.Server
}

func start(t *testing.T, proc Processor) *harness {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client()
	cfg := config.Default()
	cfg.Worker.RetryBase = time.Millisecond
	cfg.Worker.RetryMax = 5 * time.Millisecond
	cfg.Queue.MaxRetry = 2
	cfg.Worker.PollInterval = 50 * time.Millisecond
	reg := prometheus.NewRegistry()
	w, err := New(Options{Redis: rdb, Queue: cfg.Queue, Worker: cfg.Worker, Processor: proc,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	c := asynq.NewClientFromRedisClient(rdb)
	return &harness{client: c, inspector: asynq.NewInspectorFromRedisClient(rdb), w: w, queue: cfg.Queue, srv: srv}
}

func (h *harness) enqueue(t *testing.T, detailID string) {
	t.Helper()
	ev := &miitel.Event{Route: "r", CallID: "c", Detail: miitel.Detail{ID: detailID}, Kind: miitel.KindAnalysis, DedupeKey: "k-" + detailID}
	task, err := tasks.NewCallEvent(ev, asynq.Queue(h.queue.Name), tasks.MaxRetry(h.queue.MaxRetry))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.Enqueue(task); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls a condition that asynq reaches asynchronously (moving a task to the archive
// happens after the handler returned), bounded by a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeliveredEventIsRecordedInTheLedger(t *testing.T) {
	t.Parallel()
	got := make(chan attempt, 1)
	h := start(t, procFunc(func(ctx context.Context, ev *miitel.Event) error {
		n, _ := asynq.GetRetryCount(ctx)
		got <- attempt{ev.Detail.ID, n}
		return nil
	}))
	h.enqueue(t, "d1")
	if a := <-got; a.detail != "d1" {
		t.Fatalf("processed %+v", a)
	}
	rdb := h.srv.Client()
	waitFor(t, "ledger entry", func() bool { return rdb.Exists(context.Background(), tasks.LedgerKey(h.queue.Name, "k-d1")).Val() == 1 })
	ttl := rdb.TTL(context.Background(), tasks.LedgerKey(h.queue.Name, "k-d1")).Val()
	if ttl <= 23*time.Hour || ttl > 24*time.Hour {
		t.Errorf("ledger TTL = %v, want the 24h dedupe window", ttl)
	}
}

func TestPermanentErrorArchivesAtOnceWithReason(t *testing.T) {
	t.Parallel()
	calls := make(chan struct{}, 10)
	h := start(t, procFunc(func(ctx context.Context, ev *miitel.Event) error {
		calls <- struct{}{}
		return fmt.Errorf("hubspot: HTTP 400 VALIDATION_ERROR: Property hs_foo does not exist: %w", asynq.SkipRetry)
	}))
	h.enqueue(t, "d2")
	var info *asynq.TaskInfo
	waitFor(t, "archived task", func() bool {
		info, _ = h.inspector.GetTaskInfo(h.queue.Name, "k-d2")
		return info != nil && info.State == asynq.TaskStateArchived
	})
	if len(calls) != 1 {
		t.Errorf("attempts = %d, want 1 (no retry for a permanent error)", len(calls))
	}
	if !strings.Contains(info.LastErr, "VALIDATION_ERROR") || !strings.Contains(info.LastErr, "hs_foo") {
		t.Errorf("dead letter reason = %q, want the CRM's message", info.LastErr)
	}
	if v := testutil.ToFloat64(h.w.metrics.tasks.WithLabelValues("dead")); v != 1 {
		t.Errorf("dead counter = %v", v)
	}
	if h.srv.Client().Exists(context.Background(), tasks.LedgerKey(h.queue.Name, "k-d2")).Val() != 0 {
		t.Error("a dead-lettered event must not be in the ledger")
	}
}

func TestThrottlingDoesNotBurnRetries(t *testing.T) {
	t.Parallel()
	got := make(chan attempt, 10)
	n := 0
	h := start(t, procFunc(func(ctx context.Context, ev *miitel.Event) error {
		r, _ := asynq.GetRetryCount(ctx)
		got <- attempt{ev.Detail.ID, r}
		n++
		if n <= 4 { // more throttles than MaxRetry (2) allows failures
			return throttledErr{after: time.Millisecond}
		}
		return nil
	}))
	h.enqueue(t, "d3")
	var last attempt
	for i := 0; i < 5; i++ {
		last = <-got
	}
	if last.retried != 0 {
		t.Errorf("retry count after 4 throttles = %d, want 0", last.retried)
	}
}

func TestTransientErrorsRetryThenArchive(t *testing.T) {
	t.Parallel()
	got := make(chan attempt, 10)
	h := start(t, procFunc(func(ctx context.Context, ev *miitel.Event) error {
		r, _ := asynq.GetRetryCount(ctx)
		got <- attempt{ev.Detail.ID, r}
		return errors.New("salesforce: HTTP 503")
	}))
	h.enqueue(t, "d4")
	waitFor(t, "archived task", func() bool {
		info, _ := h.inspector.GetTaskInfo(h.queue.Name, "k-d4")
		return info != nil && info.State == asynq.TaskStateArchived
	})
	if len(got) != 3 {
		t.Errorf("attempts = %d, want 1 + MaxRetry(2)", len(got))
	}
	for outcome, want := range map[string]float64{"retry": 2, "dead": 1} {
		if v := testutil.ToFloat64(h.w.metrics.tasks.WithLabelValues(outcome)); v != want {
			t.Errorf("%s counter = %v, want %v", outcome, v, want)
		}
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	p := retryPolicy{base: 10 * time.Second, max: time.Minute}
	if d := p.delay(0, throttledErr{after: 7 * time.Second}, nil); d != 7*time.Second {
		t.Errorf("Retry-After not honoured: %v", d)
	}
	for n, want := range map[int]time.Duration{0: 10 * time.Second, 1: 20 * time.Second, 2: 40 * time.Second, 3: time.Minute, 30: time.Minute} {
		d := p.delay(n, errors.New("x"), nil)
		if d < want || d > want+want/5 {
			t.Errorf("delay(%d) = %v, want %v..+20%%", n, d, want)
		}
	}
}

func TestThrottlingAfterFailuresDoesNotArchive(t *testing.T) {
	t.Parallel()
	got := make(chan attempt, 10)
	var n atomic.Int32
	h := start(t, procFunc(func(ctx context.Context, ev *miitel.Event) error {
		r, _ := asynq.GetRetryCount(ctx)
		got <- attempt{ev.Detail.ID, r}
		switch n.Add(1) {
		case 1, 2: // every failure MaxRetry (2) allows
			return errors.New("hubspot: HTTP 503")
		case 3, 4:
			return throttledErr{after: time.Millisecond}
		}
		return nil
	}))
	h.enqueue(t, "d5")
	rdb := h.srv.Client()
	waitFor(t, "delivery or dead letter", func() bool {
		info, _ := h.inspector.GetTaskInfo(h.queue.Name, "k-d5")
		return rdb.Exists(context.Background(), tasks.LedgerKey(h.queue.Name, "k-d5")).Val() == 1 || (info != nil && info.State == asynq.TaskStateArchived)
	})
	if len(got) != 5 {
		t.Errorf("attempts = %d, want 5: throttling after the last allowed failure must not archive", len(got))
	}
}
