package receiver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver/internal/enqueue"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// taskQueue is what the receiver needs of Redis: every task of a request enqueued, with
// the dedupe checks, in one round trip (*enqueue.Queue).
type taskQueue interface {
	Enqueue(ctx context.Context, ts []enqueue.Task) ([]enqueue.Result, error)
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

// enqueueAll enqueues every event of the request within Server.EnqueueTimeout, in one
// script: Redis runs it atomically, so the request is queued whole or (an error before it
// ran) not at all. It returns as soon as the deadline passes even if the script is still
// on its way (go-redis bounds a command by its own read timeout, which may be longer), so
// the 503 comes in time; tasks that still land afterwards are duplicates on MiiTel's
// re-send, never a loss.
func (r *Receiver) enqueueAll(ctx context.Context, route string, req *request) ([]detailResult, error) {
	ts, err := r.encodeTasks(req)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	codes, err := bounded(ctx, r.server.EnqueueTimeout, func(ctx context.Context) ([]enqueue.Result, error) {
		return r.tasks.Enqueue(ctx, ts)
	})
	r.m.enqueueDur.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("receiver: enqueue: %w", err)
	}
	results := make([]detailResult, len(req.events))
	for i, ev := range req.events {
		kind := string(ev.Kind)
		res := resultQueued
		switch codes[i] {
		case enqueue.Queued:
			r.m.enqueued.WithLabelValues(route, kind).Inc()
		case enqueue.Requeued:
			r.m.enqueued.WithLabelValues(route, kind).Inc()
			r.m.requeued.WithLabelValues(route).Inc()
			r.log.LogAttrs(ctx, slog.LevelWarn, "receiver: re-send of a dead-lettered event, queueing it afresh",
				slog.String("route", route), slog.String("call_id", ev.CallID),
				slog.String("detail_id", ev.Detail.ID), slog.String("kind", kind),
				slog.String("task_id", ev.DedupeKey))
		case enqueue.Duplicate:
			res = resultDuplicate
			r.m.duplicates.WithLabelValues(route, kind, "in_queue").Inc()
		case enqueue.Delivered:
			res = resultDuplicate
			r.m.duplicates.WithLabelValues(route, kind, "delivered").Inc()
		}
		results[i] = detailResult{ID: ev.Detail.ID, Kind: ev.Kind, Result: res}
	}
	return results, nil
}

// encodeTasks builds each event's asynq task message around the detail JSON the dedupe key
// was hashed from: the task payload is byte for byte what tasks.NewCallEvent (json.Marshal
// of the event) would carry, and the message what asynq.Client would store for it with
// TaskID, Queue, tasks.MaxRetry and Timeout (enqueue.Message).
func (r *Receiver) encodeTasks(req *request) ([]enqueue.Task, error) {
	env, err := newEnvelope(req.events[0])
	if err != nil {
		return nil, err
	}
	retries := tasks.Retries(r.queue.MaxRetry)
	ts := make([]enqueue.Task, len(req.events))
	for i, ev := range req.events {
		detail := req.details[i]
		size := env.size(ev, detail, req.payload)
		msg := enqueue.Message(tasks.TypeCallEvent, ev.DedupeKey, r.queue.Name, retries, r.queue.TaskTimeout, size,
			func(b []byte) []byte { return env.append(b, ev, detail, req.payload) })
		ts[i] = enqueue.Task{ID: ev.DedupeKey, Message: msg}
	}
	return ts, nil
}

// envelope is the JSON of the fields every event of a request shares, in miitel.Event's
// field order: what json.Marshal writes before and after the detail.
type envelope struct {
	head []byte // {"route":...,"call_id":...,"tenant_code":...,"kind":
	at   []byte // ,"received_at":...,"detail":
}

func newEnvelope(ev *miitel.Event) (envelope, error) {
	var e envelope
	e.head = append(e.head, `{"route":`...)
	for i, s := range []string{ev.Route, ev.CallID, ev.TenantCode} {
		q, err := json.Marshal(s)
		if err != nil {
			return e, err
		}
		e.head = append(append(e.head, []string{``, `,"call_id":`, `,"tenant_code":`}[i]...), q...)
	}
	e.head = append(e.head, `,"kind":`...)
	t, err := ev.ReceivedAt.MarshalJSON()
	if err != nil {
		return e, fmt.Errorf("receiver: encode received_at: %w", err)
	}
	e.at = append(append(append(e.at, `,"received_at":`...), t...), `,"detail":`...)
	return e, nil
}

const (
	payloadField   = `,"payload":`
	dedupeKeyField = `,"dedupe_key":`
)

// size is the length of what append writes.
func (e envelope) size(ev *miitel.Event, detail, payload []byte) int {
	n := len(e.head) + len(ev.Kind) + 2 + len(e.at) + len(detail) + 1
	if len(payload) > 0 {
		n += len(payloadField) + len(payload)
	}
	if ev.DedupeKey != "" {
		n += len(dedupeKeyField) + len(ev.DedupeKey) + 2
	}
	return n
}

// append writes the event's JSON. Kind and DedupeKey need no escaping: kinds are fixed
// ASCII words and dedupe keys hex.
func (e envelope) append(b []byte, ev *miitel.Event, detail, payload []byte) []byte {
	b = append(b, e.head...)
	b = append(append(append(b, '"'), ev.Kind...), '"')
	b = append(b, e.at...)
	b = append(b, detail...)
	if len(payload) > 0 {
		b = append(append(b, payloadField...), payload...)
	}
	if ev.DedupeKey != "" {
		b = append(append(append(append(b, dedupeKeyField...), '"'), ev.DedupeKey...), '"')
	}
	return append(b, '}')
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
