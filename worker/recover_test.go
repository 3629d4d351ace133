package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// A task left active by a worker that died is retried as soon as asynq's recoverer finds it,
// not after the backoff of a failure (here an hour): the CRM never failed it.
func TestRecoveredTaskRunsWithoutBackoff(t *testing.T) {
	t.Parallel()
	if d := (retryPolicy{base: time.Hour, max: time.Hour}).delay(3, asynq.ErrLeaseExpired, nil); d != 0 {
		t.Errorf("delay after a lease expiry = %v, want 0", d)
	}
	if d := (retryPolicy{base: time.Hour, max: time.Hour}).delay(0, errors.New("x"), nil); d < time.Hour {
		t.Errorf("delay after a failure = %v, want the backoff", d)
	}

	srv := redistest.Start(t)
	rdb := srv.Client()
	ctx := context.Background()
	cfg := config.Default()
	cfg.Worker.RetryBase, cfg.Worker.RetryMax = time.Hour, time.Hour
	cfg.Worker.PollInterval = 50 * time.Millisecond
	ev := &miitel.Event{Route: "r", CallID: "c", Detail: miitel.Detail{ID: "d1"}, Kind: miitel.KindAnalysis, DedupeKey: "k-d1"}
	task, err := tasks.NewCallEvent(ev, asynq.Queue(cfg.Queue.Name), tasks.MaxRetry(cfg.Queue.MaxRetry))
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClientFromRedisClient(rdb)
	info, err := client.Enqueue(task)
	if err != nil {
		t.Fatal(err)
	}

	// What a worker killed while running the task leaves: the task active under a lease
	// that expired long ago (asynq's dequeue script, done by hand; the dead worker never
	// extended the lease again).
	q := "asynq:{" + cfg.Queue.Name + "}:"
	if err := rdb.RPopLPush(ctx, q+"pending", q+"active").Err(); err != nil {
		t.Fatal(err)
	}
	rdb.HSet(ctx, q+"t:"+info.ID, "state", "active")
	rdb.HDel(ctx, q+"t:"+info.ID, "pending_since")
	rdb.ZAdd(ctx, q+"lease", redis.Z{Score: float64(time.Now().Add(-2 * time.Minute).Unix()), Member: info.ID})

	delivered := make(chan int, 1)
	w, err := New(Options{Redis: rdb, Queue: cfg.Queue, Worker: cfg.Worker, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Processor: procFunc(func(ctx context.Context, _ *miitel.Event) error {
			n, _ := asynq.GetRetryCount(ctx)
			delivered <- n
			return nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	select {
	case n := <-delivered:
		if n != 1 {
			t.Errorf("the recovered attempt sees retry count %d, want 1 (the dead worker's attempt counts)", n)
		}
	case <-time.After(20 * time.Second):
		in := asynq.NewInspectorFromRedisClient(rdb)
		ti, _ := in.GetTaskInfo(cfg.Queue.Name, info.ID)
		if ti == nil {
			t.Fatal("the orphaned task did not run, and it is gone")
		}
		t.Fatalf("the orphaned task did not run: %s, next attempt %s, %q", ti.State, ti.NextProcessAt.Format(time.RFC3339), ti.LastErr)
	}
}

// asynq's shutdown gives up on a handler after worker.shutdown_timeout (it requeues the
// task and cancels the handler's context) without waiting for it to return. Run waits for
// the handler's way out (in the pipeline: the call lease's release), so a process that exits
// when Run returns leaves no lease behind.
func TestRunWaitsForHandlersAsynqGaveUpOn(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	cfg := config.Default()
	cfg.Worker.ShutdownTimeout = 100 * time.Millisecond
	cfg.Worker.PollInterval = 50 * time.Millisecond
	started := make(chan struct{})
	var returned atomic.Bool
	w, err := New(Options{Redis: rdb, Queue: cfg.Queue, Worker: cfg.Worker, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Processor: procFunc(func(ctx context.Context, _ *miitel.Event) error {
			close(started)
			<-ctx.Done()
			// The way out takes a moment (a Redis round trip or two in the pipeline).
			time.Sleep(300 * time.Millisecond)
			returned.Store(true)
			return ctx.Err()
		})})
	if err != nil {
		t.Fatal(err)
	}
	ev := &miitel.Event{Route: "r", CallID: "c", Detail: miitel.Detail{ID: "d1"}, Kind: miitel.KindAnalysis}
	task, err := tasks.NewCallEvent(ev, asynq.Queue(cfg.Queue.Name), tasks.MaxRetry(cfg.Queue.MaxRetry))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(task); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the task did not start")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !returned.Load() {
		t.Error("Run returned while a handler asynq gave up on was still running")
	}
}
