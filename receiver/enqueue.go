package receiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// taskQueue is the part of *asynq.Client the receiver uses.
type taskQueue interface {
	EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// taskInspector is the part of *asynq.Inspector used to tell a queued task from a
// dead-lettered one when a TaskID conflicts.
type taskInspector interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
	DeleteTask(queue, id string) error
}

// ledger answers whether a dedupe key was delivered within the window (the worker writes it).
type ledger interface {
	delivered(ctx context.Context, dedupeKey string) (bool, error)
}

// result of one detail.
const (
	resultQueued    = "queued"
	resultDuplicate = "duplicate"
)

// detailResult is what the response says about one detail.
type detailResult struct {
	ID     string      `json:"id"`
	Kind   miitel.Kind `json:"kind"`
	Result string      `json:"result"`
}

// maxConflictRounds bounds the loop of "conflict -> task gone or archived -> enqueue again";
// more rounds mean something else keeps racing us on the same TaskID, and 503 lets MiiTel
// come back later rather than spinning here.
const maxConflictRounds = 3

// errConflictLoop reports that the same TaskID kept conflicting.
var errConflictLoop = errors.New("receiver: task id kept conflicting with a task that went away")

// enqueueAll enqueues every event, in order, within Server.EnqueueTimeout. It returns as soon
// as the deadline passes even if a Redis command is still blocked (go-redis bounds a command
// by its own read timeout, which may be longer), so the 503 comes in time; a task that still
// lands afterwards is a duplicate on MiiTel's re-send, never a loss.
func (r *Receiver) enqueueAll(ctx context.Context, route string, events []*miitel.Event) ([]detailResult, error) {
	return bounded(ctx, r.server.EnqueueTimeout, func(ctx context.Context) ([]detailResult, error) {
		results := make([]detailResult, 0, len(events))
		for _, ev := range events {
			res, err := r.enqueueOne(ctx, route, ev)
			if err != nil {
				return results, err
			}
			results = append(results, detailResult{ID: ev.Detail.ID, Kind: ev.Kind, Result: res})
		}
		return results, nil
	})
}

// bounded runs fn with a deadline d and returns when fn does or when the deadline passes,
// whichever is first.
func bounded[T any](ctx context.Context, d time.Duration, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	type outcome struct {
		v   T
		err error
	}
	done := make(chan outcome, 1) // buffered: a late fn never blocks on a gone reader
	go func() {
		v, err := fn(ctx)
		done <- outcome{v, err}
	}()
	select {
	case o := <-done:
		return o.v, o.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("receiver: redis did not answer within %s: %w", d, ctx.Err())
	}
}

// enqueueOne enqueues one event unless it is a re-send. The ledger is checked first (the
// event was delivered within the window); then the TaskID decides: a conflict with a queued,
// retrying or running task is a duplicate, a conflict with an archived task is not.
func (r *Receiver) enqueueOne(ctx context.Context, route string, ev *miitel.Event) (string, error) {
	start := time.Now()
	defer func() { r.m.enqueueDur.Observe(time.Since(start).Seconds()) }()
	kind := string(ev.Kind)

	if seen, err := r.ledger.delivered(ctx, ev.DedupeKey); err != nil {
		return "", err
	} else if seen {
		r.m.duplicates.WithLabelValues(route, kind, "delivered").Inc()
		return resultDuplicate, nil
	}
	task, err := tasks.NewCallEvent(ev,
		asynq.Queue(r.queue.Name),
		tasks.MaxRetry(r.queue.MaxRetry),
		asynq.Timeout(r.queue.TaskTimeout),
	)
	if err != nil {
		return "", err
	}
	for range maxConflictRounds {
		_, err := r.tasks.EnqueueContext(ctx, task)
		if err == nil {
			r.m.enqueued.WithLabelValues(route, kind).Inc()
			return resultQueued, nil
		}
		if !errors.Is(err, asynq.ErrTaskIDConflict) {
			return "", fmt.Errorf("receiver: enqueue: %w", err)
		}
		info, err := r.inspector.GetTaskInfo(r.queue.Name, ev.DedupeKey)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
			// The task finished between our enqueue and this look-up. Delivered means the
			// worker wrote the ledger first; otherwise it was deleted: queue it again.
			seen, err := r.ledger.delivered(ctx, ev.DedupeKey)
			if err != nil {
				return "", err
			}
			if seen {
				r.m.duplicates.WithLabelValues(route, kind, "delivered").Inc()
				return resultDuplicate, nil
			}
			continue
		case errors.Is(err, asynq.ErrQueueNotFound):
			// The TaskID exists but the queue is not in asynq's queue set (Redis was emptied
			// under a running client): the task is there, its state unknown. Keep it.
			r.m.duplicates.WithLabelValues(route, kind, "in_queue").Inc()
			return resultDuplicate, nil
		case err != nil:
			return "", fmt.Errorf("receiver: inspect conflicting task: %w", err)
		case info.State == asynq.TaskStateArchived:
			if err := r.inspector.DeleteTask(r.queue.Name, ev.DedupeKey); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
				return "", fmt.Errorf("receiver: delete archived task: %w", err)
			}
			r.m.requeued.WithLabelValues(route).Inc()
			r.log.LogAttrs(ctx, slog.LevelWarn, "receiver: re-send of a dead-lettered event, queueing it afresh",
				slog.String("route", route), slog.String("call_id", ev.CallID),
				slog.String("detail_id", ev.Detail.ID), slog.String("kind", kind),
				slog.String("task_id", ev.DedupeKey))
			continue
		default:
			r.m.duplicates.WithLabelValues(route, kind, "in_queue").Inc()
			return resultDuplicate, nil
		}
	}
	return "", errConflictLoop
}
