package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver/internal/enqueue"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// taskQueue is what the receiver needs of Redis: every task of a request enqueued, with
// the dedupe checks, the call status and the wait for replicas, in one round trip (shared
// with the requests arriving at the same time), and the same path checked without
// enqueueing (*enqueue.Batcher).
type taskQueue interface {
	Enqueue(ctx context.Context, ts []enqueue.Task) ([]enqueue.Result, enqueue.Acked, error)
	Probe(ctx context.Context) (enqueue.Acked, error)
}

// StatusRecorder gives the call status's arguments for one received event
// (callstatus.Store.ReceiveArgs: its key prefix, the detail's member and the JSON
// argument), which the enqueue script notes with the task, so the status costs no round
// trip.
type StatusRecorder interface {
	ReceiveArgs(ev *miitel.Event, at time.Time) (prefix, member, arg string, err error)
}

// Status is the call status the enqueue script notes each received event in: the Lua
// library defining mcs_status_defer (callstatus.NoteLua) and its arguments per event
// (a *callstatus.Store). The receiver cannot import the worker's callstatus (its tests
// import the receiver), so the caller passes both. The zero Status records nothing.
type Status struct {
	Lua  string
	Args StatusRecorder
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

// EnqueueOptions is what NewEnqueuer needs: the receiver's Options without HTTP.
type EnqueueOptions struct {
	Redis redis.UniversalClient
	Queue config.Queue
	// AckReplicas and AckTimeout are redis.ack_replicas and redis.ack_timeout: how many
	// replicas must hold an enqueue (WAIT) before it counts as done. The zero value waits
	// for none; config.AckAuto for as many as the master reports connected.
	AckReplicas config.AckReplicas
	AckTimeout  time.Duration
	// Timeout is server.enqueue_timeout: the script and the wait together.
	Timeout time.Duration
	// Status records each event received (queued or duplicate) inside the enqueue script;
	// the zero Status records nothing.
	Status     Status
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Enqueuer is the receiver's enqueue path on its own: the events of one webhook body queued
// in one script with the dedupe checks and the call status, acknowledged only once the
// replicas hold them. The receiver answers MiiTel with it; a backfill queues stored bodies
// with it (EnqueueEvents), so both get the same guarantees.
type Enqueuer struct {
	tasks taskQueue
	// ctxDeadlines: the client bounds its commands by the context's deadline (see bounded).
	ctxDeadlines bool
	queue        config.Queue
	status       StatusRecorder
	timeout      time.Duration
	m            *metrics
	log          *slog.Logger
	now          func() time.Time
}

// NewEnqueuer builds an Enqueuer outside a Receiver (a backfill).
func NewEnqueuer(o EnqueueOptions) (*Enqueuer, error) {
	if o.Redis == nil || o.Queue.Name == "" || o.Timeout <= 0 {
		return nil, fmt.Errorf("%w: an enqueuer needs a redis client, a queue name and a positive timeout", ErrConfig)
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("receiver: register metrics: %w", err)
	}
	return newEnqueuer(o, m), nil
}

func newEnqueuer(o EnqueueOptions, m *metrics) *Enqueuer {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	replicas := int(o.AckReplicas)
	if o.AckReplicas == config.AckAuto {
		replicas = enqueue.AckAuto
	}
	return &Enqueuer{
		tasks: enqueue.NewBatcher(enqueue.New(o.Redis, o.Queue.Name, enqueue.Ack{Replicas: replicas, Timeout: o.AckTimeout}, o.Status.Lua),
			enqueue.BatchOptions{OnBatch: func(calls, _ int) { m.batchSize.Observe(float64(calls)) }}),
		queue:        o.Queue,
		ctxDeadlines: honoursDeadlines(o.Redis),
		status:       o.Status.Args, timeout: o.Timeout, m: m, log: log, now: now,
	}
}

// EventResult is what became of one event: queued, or a duplicate of one queued or
// delivered.
type EventResult struct {
	DetailID  string
	Kind      miitel.Kind
	Duplicate bool
}

// EnqueueEvents queues events (receiver.ParseEvents's, their dedupe keys set) as the
// webhook queues a body's: one script, dedupe, status, the wait for replicas. An error
// means nothing of them is acknowledged (some may be queued: a retry finds them duplicates).
func (e *Enqueuer) EnqueueEvents(ctx context.Context, route string, events []*miitel.Event) ([]EventResult, error) {
	if len(events) == 0 {
		return nil, nil
	}
	retries := tasks.Retries(e.queue.MaxRetry)
	ts := make([]enqueue.Task, len(events))
	for i, ev := range events {
		if ev.DedupeKey == "" {
			return nil, fmt.Errorf("receiver: event %d (detail %s) has no dedupe key", i, ev.Detail.ID)
		}
		payload, err := json.Marshal(ev) // what tasks.NewCallEvent carries
		if err != nil {
			return nil, fmt.Errorf("receiver: encode event: %w", err)
		}
		msg := enqueue.Message(tasks.TypeCallEvent, ev.DedupeKey, e.queue.Name, retries, e.queue.TaskTimeout, len(payload),
			func(b []byte) []byte { return append(b, payload...) })
		ts[i] = enqueue.Task{ID: ev.DedupeKey, Message: msg}
	}
	codes, err := e.enqueue(ctx, route, events, ts)
	if err != nil {
		return nil, err
	}
	out := make([]EventResult, len(events))
	for i, ev := range events {
		out[i] = EventResult{DetailID: ev.Detail.ID, Kind: ev.Kind, Duplicate: codes[i] <= enqueue.Duplicate}
	}
	return out, nil
}

// enqueue runs the script for ts (one task per event) within the timeout, the status
// arguments added, and counts what happened.
func (e *Enqueuer) enqueue(ctx context.Context, route string, events []*miitel.Event, ts []enqueue.Task) ([]enqueue.Result, error) {
	if e.status != nil {
		at := e.now()
		for i, ev := range events {
			var err error
			if ts[i].StatusPrefix, ts[i].StatusMember, ts[i].Status, err = e.status.ReceiveArgs(ev, at); err != nil {
				return nil, err
			}
		}
	}
	start := time.Now()
	type reply struct {
		codes []enqueue.Result
		acked enqueue.Acked
	}
	rep, err := bounded(ctx, e.timeout, e.ctxDeadlines, func(ctx context.Context) (reply, error) {
		codes, acked, err := e.tasks.Enqueue(ctx, ts)
		return reply{codes, acked}, err
	})
	took := time.Since(start).Seconds()
	e.m.enqueueDur.Observe(took)
	if rep.acked.Want > 0 {
		e.m.ackReplicas.Set(float64(rep.acked.Want))
		e.m.ackWait.Observe(took)
	}
	if err != nil {
		e.m.ackFailures.WithLabelValues(failureReason(err)).Inc()
		return nil, fmt.Errorf("receiver: enqueue: %w", err)
	}
	for i, ev := range events {
		kind := string(ev.Kind)
		switch rep.codes[i] {
		case enqueue.Queued:
			e.m.enqueued.WithLabelValues(route, kind).Inc()
		case enqueue.Requeued:
			e.m.enqueued.WithLabelValues(route, kind).Inc()
			e.m.requeued.WithLabelValues(route).Inc()
			e.log.LogAttrs(ctx, slog.LevelWarn, "receiver: re-send of a dead-lettered event, queueing it afresh",
				slog.String("route", route), slog.String("call_id", ev.CallID),
				slog.String("detail_id", ev.Detail.ID), slog.String("kind", kind),
				slog.String("task_id", ev.DedupeKey))
		case enqueue.Duplicate:
			e.m.duplicates.WithLabelValues(route, kind, "in_queue").Inc()
		case enqueue.Delivered:
			e.m.duplicates.WithLabelValues(route, kind, "delivered").Inc()
		}
	}
	return rep.codes, nil
}

// Failure reasons of mcs_receiver_ack_failures_total.
const (
	reasonReplicas   = "too_few_replicas" // WAIT: fewer replicas than wanted within ack_timeout
	reasonNoReplicas = "noreplicas"       // Redis refused the write (min-replicas-to-write)
	reasonTimeout    = "timeout"          // no answer within server.enqueue_timeout
	reasonRedis      = "redis_error"      // anything else: down, a failover under way, ...
)

func failureReason(err error) string {
	var ae *enqueue.AckError
	switch {
	case errors.As(err, &ae):
		return reasonReplicas
	case enqueue.IsNoReplicas(err):
		return reasonNoReplicas
	case errors.Is(err, context.DeadlineExceeded):
		return reasonTimeout
	default:
		return reasonRedis
	}
}

// Ready checks the enqueue path (the marker write and the wait for replicas, on the
// connection kind an enqueue uses) within d: nil means an enqueue now would be acknowledged.
func (e *Enqueuer) Ready(ctx context.Context, d time.Duration) error {
	_, err := bounded(ctx, d, e.ctxDeadlines, func(ctx context.Context) (enqueue.Acked, error) { return e.tasks.Probe(ctx) })
	var ae *enqueue.AckError
	switch {
	case err == nil:
		e.m.ready.Set(1)
		return nil
	case errors.As(err, &ae):
		err = fmt.Errorf("cannot acknowledge calls: %w (redis.ack_replicas)", ae)
	case enqueue.IsNoReplicas(err):
		err = fmt.Errorf("cannot acknowledge calls: redis refuses writes for lack of replicas (min-replicas-to-write): %w", err)
	case errors.Is(err, context.DeadlineExceeded):
		err = fmt.Errorf("redis did not answer within %s", d)
	default:
		err = fmt.Errorf("redis is not reachable: %w", err)
	}
	e.m.ready.Set(0)
	return err
}

// enqueueAll enqueues every event of the request within Server.EnqueueTimeout, in one
// script: Redis runs it atomically, so the request is queued whole or (an error before it
// ran) not at all. It returns as soon as the deadline passes even if the script is still
// on its way (bounded: the client's read timeout may be longer), so the 503 comes in time; tasks that still land afterwards are duplicates on MiiTel's
// re-send, never a loss. With redis.ack_replicas, an error also means too few replicas
// hold the tasks: MiiTel's re-send waits for them again before its 2xx.
func (r *Receiver) enqueueAll(ctx context.Context, route string, req *request) ([]detailResult, error) {
	ts, err := r.encodeTasks(req)
	if err != nil {
		return nil, err
	}
	codes, err := r.enq.enqueue(ctx, route, req.events, ts)
	if err != nil {
		return nil, err
	}
	results := make([]detailResult, len(req.events))
	for i, ev := range req.events {
		res := resultQueued
		if codes[i] <= enqueue.Duplicate {
			res = resultDuplicate
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
	// One buffer for both parts (head and at are slices of it): the strings' length plus
	// the field names and quotes, and RFC 3339 with nanoseconds and a zone, fits unless a
	// string needs escaping.
	buf := make([]byte, 0, len(ev.Route)+len(ev.CallID)+len(ev.TenantCode)+128)
	buf = append(buf, `{"route":`...)
	for i, s := range [...]string{ev.Route, ev.CallID, ev.TenantCode} {
		buf = tasks.AppendJSONString(append(buf, [...]string{``, `,"call_id":`, `,"tenant_code":`}[i]...), s)
	}
	buf = append(buf, `,"kind":`...)
	head := len(buf)
	buf = append(buf, `,"received_at":"`...)
	buf, err := ev.ReceivedAt.AppendText(buf) // what Time.MarshalJSON writes between its quotes
	if err != nil {
		return envelope{}, fmt.Errorf("receiver: encode received_at: %w", err)
	}
	buf = append(buf, `","detail":`...)
	return envelope{head: buf[:head:head], at: buf[head:]}, nil
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

// bounded runs fn with a deadline d and returns by the deadline. A client that honours
// context deadlines (ContextTimeoutEnabled, as config.Redis.UniversalOptions and the
// embedded Redis's client set it) bounds its own socket reads and writes, its pool wait and
// its retries by ctx, so fn runs on the caller's goroutine; only for a client that ignores
// them (one built without that option) does fn run on a goroutine of its own, abandoned
// at the deadline. Either way an error after the deadline says so and wraps ctx.Err(), so
// it is counted as a timeout; a success that arrives just after the deadline stays one.
func bounded[T any](ctx context.Context, d time.Duration, ctxDeadlines bool, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if ctxDeadlines {
		v, err := fn(ctx)
		return v, timedOut(ctx, d, err)
	}
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
		return o.v, timedOut(ctx, d, o.err)
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("receiver: redis did not answer within %s: %w", d, ctx.Err())
	}
}

// timedOut says of an error that came with ctx's deadline that Redis did not answer in
// time. The error may come a moment before ctx reports it: the script that carried the
// request ran under a deadline of its own (enqueue.Batcher's, its first caller's), whose
// timer can fire first.
func timedOut(ctx context.Context, d time.Duration, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil: // go-redis's i/o timeout, or a retry given up
		return fmt.Errorf("receiver: redis did not answer within %s: %w (%w)", d, ctx.Err(), err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("receiver: redis did not answer within %s: %w", d, err)
	default:
		return err
	}
}

// honoursDeadlines reports whether rdb bounds a command's socket I/O by its context's
// deadline (go-redis's ContextTimeoutEnabled; off by default).
func honoursDeadlines(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client: // standalone and Sentinel (failover) clients
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	default:
		return false
	}
}
