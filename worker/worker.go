package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// Processor does the work for one event. The error decides what asynq does next (see the
// package comment).
type Processor interface {
	Process(ctx context.Context, ev *miitel.Event) error
}

// Options is what New needs.
type Options struct {
	Redis      redis.UniversalClient
	Queue      config.Queue
	Worker     config.Worker
	Processor  Processor
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Worker is the asynq server that runs the Processor for every queued event.
type Worker struct {
	srv     *asynq.Server
	mux     *asynq.ServeMux
	rdb     redis.UniversalClient
	proc    Processor
	log     *slog.Logger
	queue   config.Queue
	metrics *metrics
}

type metrics struct {
	tasks    *prometheus.CounterVec
	duration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcs_worker_tasks_total",
			Help: "Task attempts by outcome: delivered, retry, throttled, dead (archived), or skipped (mapping when-rule).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mcs_worker_task_duration_seconds",
			Help:    "Time spent on one task attempt, including CRM requests.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.tasks, m.duration)
	}
	return m
}

// New builds the worker. Nothing runs until Run.
func New(o Options) (*Worker, error) {
	if o.Redis == nil || o.Processor == nil || o.Logger == nil {
		return nil, errors.New("worker: Redis, Processor and Logger are required")
	}
	w := &Worker{rdb: o.Redis, proc: o.Processor, log: o.Logger, queue: o.Queue, metrics: newMetrics(o.Registerer)}
	policy := retryPolicy{base: o.Worker.RetryBase, max: o.Worker.RetryMax}
	w.srv = asynq.NewServerFromRedisClient(o.Redis, asynq.Config{
		Concurrency:     o.Worker.Concurrency,
		Queues:          map[string]int{o.Queue.Name: 1},
		RetryDelayFunc:  policy.delay,
		IsFailure:       isFailure,
		ShutdownTimeout: o.Worker.ShutdownTimeout,
		ErrorHandler:    asynq.ErrorHandlerFunc(w.onError),
		Logger:          asynqLogger{o.Logger.With("component", "asynq")},
		LogLevel:        asynq.WarnLevel,

		// worker.poll_interval: how often due retries are picked up; an idle worker also
		// looks for new work at least this often (asynq's own default there is 1s).
		DelayedTaskCheckInterval: o.Worker.PollInterval,
		TaskCheckInterval:        taskCheckInterval(o.Worker.PollInterval),
	})
	w.mux = asynq.NewServeMux()
	w.mux.HandleFunc(tasks.TypeCallEvent, w.handle)
	return w, nil
}

// taskCheckInterval is how long an idle worker waits before looking for new tasks again:
// asynq's 1s default, or less when the poll interval is shorter.
func taskCheckInterval(poll time.Duration) time.Duration {
	if poll > 0 && poll < time.Second {
		return poll
	}
	return 0 // asynq's default
}

// Run processes tasks until ctx is done, then stops taking new tasks and gives in-flight ones
// worker.shutdown_timeout to finish (asynq's Start/Shutdown, not Run, which grabs signals).
func (w *Worker) Run(ctx context.Context) error {
	if err := w.srv.Start(w.mux); err != nil {
		return fmt.Errorf("worker: start: %w", err)
	}
	w.log.Info("worker started", "queue", w.queue.Name)
	<-ctx.Done()
	w.srv.Shutdown()
	w.log.Info("worker stopped")
	return nil
}

// handle is the asynq handler: decode, process, then record delivery in the ledger.
func (w *Worker) handle(ctx context.Context, t *asynq.Task) error {
	start := time.Now()
	defer func() { w.metrics.duration.Observe(time.Since(start).Seconds()) }()
	ev, err := tasks.DecodeCallEvent(t)
	if err != nil {
		return err
	}
	if err := w.proc.Process(ctx, ev); err != nil {
		return w.exhausted(ctx, err)
	}
	// The ledger is written only after delivery, so an event that ends in the dead letter
	// leaves no mark and MiiTel's next re-send of it is queued again.
	if ev.DedupeKey != "" && w.queue.DedupeWindow > 0 {
		if err := w.rdb.Set(ctx, tasks.LedgerKey(w.queue.Name, ev.DedupeKey), string(ev.Kind), w.queue.DedupeWindow).Err(); err != nil {
			// Delivered but not recorded: retrying re-delivers, which the CRM upsert absorbs.
			return fmt.Errorf("worker: write ledger: %w", err)
		}
	}
	w.metrics.tasks.WithLabelValues("delivered").Inc()
	return nil
}

// exhausted archives the failure that uses up queue.max_retry. asynq would archive it too,
// but only by comparing its retry count with the task's MaxRetry, which it does for every
// error: a throttled attempt after the last allowed failure would be archived as well. Tasks
// carry one retry more than the budget (tasks.MaxRetry) and the budget is enforced here, on
// failures only.
func (w *Worker) exhausted(ctx context.Context, err error) error {
	retried, _ := asynq.GetRetryCount(ctx)
	if isFailure(err) && retried >= w.queue.MaxRetry && !errors.Is(err, asynq.SkipRetry) {
		return fmt.Errorf("%w (retries exhausted: %w)", err, asynq.SkipRetry)
	}
	return err
}

// onError counts and logs every failed attempt with its classification; no payload data.
func (w *Worker) onError(ctx context.Context, t *asynq.Task, err error) {
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	id, _ := asynq.GetTaskID(ctx)
	outcome := "retry"
	switch {
	case errors.Is(err, asynq.SkipRetry) || retried >= maxRetry: // asynq's archive rule
		outcome = "dead"
	case !isFailure(err):
		outcome = "throttled"
	}
	w.metrics.tasks.WithLabelValues(outcome).Inc()
	level := slog.LevelWarn
	if outcome == "dead" {
		level = slog.LevelError
	}
	w.log.Log(ctx, level, "task failed", "task_id", id, "outcome", outcome, "retried", retried, "max_retry", maxRetry, "error", err.Error())
}

// retryAfter and throttled are the small interfaces the retry policy reads from errors; CRM
// connectors' errors (worker/crm.Error) implement both.
type retryAfter interface{ RetryAfter() time.Duration }
type throttled interface{ Throttled() bool }

// isFailure is asynq's IsFailure: throttling does not count against a task's retries.
func isFailure(err error) bool {
	var th throttled
	if errors.As(err, &th) && th.Throttled() {
		return false
	}
	return true
}

type retryPolicy struct{ base, max time.Duration }

// delay honours an error's RetryAfter; otherwise backs off exponentially from base, capped at
// max, with up to 20% jitter so a burst of failures does not come back as a burst.
func (p retryPolicy) delay(n int, err error, _ *asynq.Task) time.Duration {
	var ra retryAfter
	if errors.As(err, &ra) {
		if d := ra.RetryAfter(); d > 0 {
			return d
		}
	}
	d := p.base
	for i := 0; i < n && d < p.max; i++ {
		d *= 2
	}
	if d > p.max {
		d = p.max
	}
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}
