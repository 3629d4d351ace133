package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/callstatus"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// Processor does the work for one event. The error decides what asynq does next (see the
// package comment).
type Processor interface {
	Process(ctx context.Context, ev *miitel.Event) error
}

// DeadLetter keeps every call that went dead until it is delivered (worker/deadletter.Store).
type DeadLetter interface {
	Record(ctx context.Context, d deadletter.Death) error
	Resolve(ctx context.Context, route, detailID, taskID string, anyEvent bool) (bool, error)
}

// Status hears what each attempt did (worker/callstatus.Store).
type Status interface {
	Started(ctx context.Context, ev *miitel.Event) error
	Failed(ctx context.Context, ev *miitel.Event, f callstatus.Failure) error
	Delivered(ctx context.Context, ev *miitel.Event, d callstatus.Delivery) error
	Skipped(ctx context.Context, ev *miitel.Event, reason string) error
}

// Options is what New needs.
type Options struct {
	Redis      redis.UniversalClient
	Queue      config.Queue
	Worker     config.Worker
	Processor  Processor
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// DeadLetter, when set, records each call that goes dead before asynq archives it, and
	// resolves it when the call is delivered. Status, when set, records every attempt.
	DeadLetter DeadLetter
	Status     Status
	// Acks holds the dedupe ledger to redis.ack_replicas (worker/durable); nil waits for no
	// replica.
	Acks *durable.Acks
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
	policy  retryPolicy
	dead    DeadLetter
	status  Status
	acks    *durable.Acks
	now     func() time.Time
	// running counts handlers still on their way out; Run waits for them (handlerExitGrace).
	running sync.WaitGroup
}

// handlerExitGrace is how long Run waits, after asynq's shutdown, for handlers it gave up on.
// asynq's shutdown_timeout requeues a task whose handler is still running and cancels its
// context, but does not wait for it to return: without this wait the process could exit
// before the handler's way out ran, leaving the call's lease (released with a 2s bound) in
// Redis to hold the requeued task back until it lapses. Kept short: the chart's
// terminationGracePeriodSeconds only has to exceed shutdown_timeout.
const handlerExitGrace = 2 * time.Second

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
	policy := retryPolicy{base: o.Worker.RetryBase, max: o.Worker.RetryMax}
	w := &Worker{rdb: o.Redis, proc: o.Processor, log: o.Logger, queue: o.Queue, metrics: newMetrics(o.Registerer),
		policy: policy, dead: o.DeadLetter, status: o.Status, acks: o.Acks, now: time.Now}
	if w.acks == nil {
		w.acks = durable.Off(o.Redis)
	}
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
	exited := make(chan struct{})
	go func() { w.running.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(handlerExitGrace):
		w.log.Warn("worker: handlers still running after the shutdown; their calls' leases lapse by themselves", "waited", handlerExitGrace)
	}
	w.log.Info("worker stopped")
	return nil
}

// handle is the asynq handler: decode, process, then record delivery in the ledger.
func (w *Worker) handle(ctx context.Context, t *asynq.Task) error {
	// No handler starts after Shutdown, so Add never races with Run's Wait from zero.
	w.running.Add(1)
	defer w.running.Done()
	start := time.Now()
	defer func() { w.metrics.duration.Observe(time.Since(start).Seconds()) }()
	ev, err := tasks.DecodeCallEvent(t)
	if err != nil {
		return err
	}
	if w.status != nil {
		w.note(ctx, ev, "started", func(ctx context.Context) error { return w.status.Started(ctx, ev) })
	}
	att := &attemptNotes{}
	if err := w.proc.Process(withAttempt(ctx, att), ev); err != nil {
		return w.failed(ctx, ev, att, w.exhausted(ctx, err))
	}
	// The ledger is written only after delivery, so an event that ends in the dead letter
	// leaves no mark and MiiTel's next re-send of it is queued again. It waits for replicas
	// before the task is done: a ledger entry lost in a failover lets MiiTel's re-send of
	// the event (every 10 minutes with the fixed-IP option) be queued again, and merged as
	// the newest event it would undo what a later event of the call changed.
	if ev.DedupeKey != "" && w.queue.DedupeWindow > 0 {
		key := tasks.LedgerKey(w.queue.Name, ev.DedupeKey)
		err := w.acks.Write(ctx, "worker: write ledger", key, func(ctx context.Context, c redis.Cmdable) error {
			return c.Set(ctx, key, string(ev.Kind), w.queue.DedupeWindow).Err()
		})
		var de *durable.Error
		if err != nil && !errors.As(err, &de) {
			err = fmt.Errorf("worker: write ledger: %w", err)
		}
		if err != nil {
			// Delivered but not recorded: retrying re-delivers, which the CRM upsert absorbs.
			return err
		}
	}
	if err := w.delivered(ctx, ev, att); err != nil {
		return err
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
// Failures handle did not see through (a panic, the task timeout, which asynq raises
// itself) are recorded in the dead letter and the call status here.
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
	var h *handledError
	if !errors.As(err, &h) {
		w.unhandled(ctx, t, err, outcome == "dead")
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
//
// A task whose asynq lease expired (its worker was killed, or lost Redis for longer than the
// lease) goes again at once: asynq's recoverer finds it a minute or so after the worker died
// and retries it through this function, and a backoff there (retry_base, 10s by default)
// only adds to that wait for a failure the CRM never had. The call's own lease (callLock)
// lapsed long before, and if its holder is alive after all, the attempt meets the lease and
// waits as a throttled retry.
func (p retryPolicy) delay(n int, err error, _ *asynq.Task) time.Duration {
	if errors.Is(err, asynq.ErrLeaseExpired) {
		return 0
	}
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

// handledError is a failure handle has recorded (dead letter, status). It carries the delay
// handle chose and wrote into the status as the next attempt, so asynq's RetryDelayFunc,
// which finds it first through RetryAfter, waits exactly that long.
type handledError struct {
	err   error
	delay time.Duration
}

func (e *handledError) Error() string             { return e.err.Error() }
func (e *handledError) Unwrap() error             { return e.err }
func (e *handledError) RetryAfter() time.Duration { return e.delay }

// bookkeepingTimeout bounds one dead-letter or status write. They run on a context that
// survives the task's: a task that failed on its deadline must still be recorded.
const bookkeepingTimeout = 5 * time.Second

func bookkeeping(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), bookkeepingTimeout)
}

// note runs a status write; status is best effort (a failed write is logged, the call goes
// on), unlike the dead letter.
func (w *Worker) note(ctx context.Context, ev *miitel.Event, what string, fn func(context.Context) error) {
	bctx, cancel := bookkeeping(ctx)
	defer cancel()
	if err := fn(bctx); err != nil {
		w.log.Warn("call status not recorded", "what", what, "route", ev.Route, "call_id", ev.CallID,
			"detail_id", ev.Detail.ID, "error", err.Error())
	}
}

// describe is the error as the dead letter and the status show it.
func describe(err error, att *attemptNotes) deadletter.Error {
	e := deadletter.Classify(err)
	if att != nil && att.renderFailed && e.Code == "" {
		e.Code = "MAPPING"
	}
	return e
}

// failed records a failed attempt and decides what asynq is told. A final failure (asynq
// will archive it) is written to the dead letter first; if that write fails, the task is
// retried instead of archived, so no call goes dead without its entry. Otherwise the delay
// is chosen here, so the status can say when the next attempt comes.
func (w *Worker) failed(ctx context.Context, ev *miitel.Event, att *attemptNotes, err error) error {
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	info := describe(err, att)
	if errors.Is(err, asynq.SkipRetry) || retried >= maxRetry { // asynq's archive rule
		if w.dead != nil {
			bctx, cancel := bookkeeping(ctx)
			derr := w.dead.Record(bctx, deadletter.Death{Event: att.event(ev), TaskID: taskKey(ctx, ev), Error: info,
				Attempts: retried + 1, MappingVersion: att.version})
			cancel()
			if derr != nil {
				w.log.Error("dead letter not recorded: the call is retried instead of archived",
					"route", ev.Route, "call_id", ev.CallID, "detail_id", ev.Detail.ID, "error", derr.Error())
				delay := w.policy.delay(retried, derr, nil)
				if w.status != nil {
					w.note(ctx, ev, "failed", func(ctx context.Context) error {
						return w.status.Failed(ctx, ev, callstatus.Failure{State: callstatus.Retry, NextAttempt: w.now().Add(delay), Error: info})
					})
				}
				// Not wrapping err: asynq must not see SkipRetry.
				return &handledError{err: fmt.Errorf("%s (not archived: the dead letter could not record it: %w)", err.Error(), derr), delay: delay}
			}
		}
		if w.status != nil {
			w.note(ctx, ev, "failed", func(ctx context.Context) error {
				return w.status.Failed(ctx, ev, callstatus.Failure{State: callstatus.Dead, Error: info})
			})
		}
		return &handledError{err: err}
	}
	delay := w.policy.delay(retried, err, nil)
	if w.status != nil {
		state := callstatus.Retry
		if info.Class == "broken" {
			state = callstatus.Parked // waits for an admin; not dead, not counted
		}
		w.note(ctx, ev, "failed", func(ctx context.Context) error {
			return w.status.Failed(ctx, ev, callstatus.Failure{State: state, NextAttempt: w.now().Add(delay), Error: info})
		})
	}
	return &handledError{err: err, delay: delay}
}

// delivered resolves the call's dead-letter entry and records the delivery. The entry goes
// when the delivered event is the dead one, or when it was merged with the call's stored
// state, which carries the dead event's fields. A failed resolve fails the task: it is
// delivered again (the upsert absorbs it) rather than leaving a delivered call in the dead
// letter.
func (w *Worker) delivered(ctx context.Context, ev *miitel.Event, att *attemptNotes) error {
	if w.dead != nil {
		bctx, cancel := bookkeeping(ctx)
		_, err := w.dead.Resolve(bctx, ev.Route, ev.Detail.ID, taskKey(ctx, ev), att.hadState)
		cancel()
		if err != nil {
			return fmt.Errorf("worker: resolve the dead letter: %w", err)
		}
	}
	if w.status == nil {
		return nil
	}
	if att.skip != nil {
		w.note(ctx, ev, "skipped", func(ctx context.Context) error { return w.status.Skipped(ctx, ev, att.skip.Reason) })
		return nil
	}
	w.note(ctx, ev, "delivered", func(ctx context.Context) error {
		return w.status.Delivered(ctx, ev, callstatus.Delivery{Record: att.rec, Result: att.res})
	})
	return nil
}

// unhandled records a failure asynq raised without handle's say (a panic, the task
// timeout): what handle does for its own, as far as onError can (it cannot stop an archive).
func (w *Worker) unhandled(ctx context.Context, t *asynq.Task, err error, final bool) {
	if w.dead == nil && w.status == nil {
		return
	}
	ev, derr := tasks.DecodeCallEvent(t)
	if derr != nil {
		return // never decoded: nothing to record under a call
	}
	retried, _ := asynq.GetRetryCount(ctx)
	info := describe(err, nil)
	if final {
		if w.dead != nil {
			bctx, cancel := bookkeeping(ctx)
			if derr := w.dead.Record(bctx, deadletter.Death{Event: ev, TaskID: taskKey(ctx, ev), Error: info, Attempts: retried + 1}); derr != nil {
				w.log.Error("dead letter not recorded", "route", ev.Route, "call_id", ev.CallID, "detail_id", ev.Detail.ID, "error", derr.Error())
			}
			cancel()
		}
		if w.status != nil {
			w.note(ctx, ev, "failed", func(ctx context.Context) error {
				return w.status.Failed(ctx, ev, callstatus.Failure{State: callstatus.Dead, Error: info})
			})
		}
		return
	}
	if w.status != nil {
		// asynq draws the delay after this handler: a draw of the same policy is within its
		// jitter (a fifth) of it.
		next := w.now().Add(w.policy.delay(retried, err, nil))
		w.note(ctx, ev, "failed", func(ctx context.Context) error {
			return w.status.Failed(ctx, ev, callstatus.Failure{State: callstatus.Retry, NextAttempt: next, Error: info})
		})
	}
}

// taskKey is the id a replay of the event conflicts with: its dedupe key, else the task id.
func taskKey(ctx context.Context, ev *miitel.Event) string {
	if ev.DedupeKey != "" {
		return ev.DedupeKey
	}
	id, _ := asynq.GetTaskID(ctx)
	return id
}
