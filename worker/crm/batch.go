package crm

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Batching changes how a connector's requests are grouped, never what a call detail gets: each
// asynq task still delivers its own record through Connector.Deliver, and Deliver blocks until
// the batch that carried the record has answered for it. So each task keeps its own retry
// count, error class, dead letter and replay, and asynq's semantics stay untouched (unlike
// asynq's group aggregation, which rebuilds tasks without their ids, retry counts and unique
// locks).
//
// A Batcher gathers the items that concurrent Deliver calls submit for one kind of request
// (HubSpot batch upsert, Salesforce collection upsert, a multi-number contact search, ...):
//
//  1. The first item of a batch starts the linger clock. The batch is due when it is full
//     (MaxSize) or the linger has passed, so a lone call waits at most Linger.
//  2. A due batch first waits for its rate-limit budget (Ready). Items keep arriving while it
//     waits and join it, up to MaxSize: under a rate limit, batches fill up by themselves and
//     a burst goes out in as few requests as the limit allows.
//  3. The batch is taken: items whose caller has gone (task timeout, shutdown) are left out,
//     then Flush sends the rest in one request and returns one result per item, in order.
//     Every caller gets its own result, success or a classified *Error of its own.
//
// Flushes run on the Batcher's long-lived context, never on one caller's: a task that times
// out must not cancel the request that also carries its neighbours.

// BatchResult is what a batch answered for one item.
type BatchResult[Out any] struct {
	Value Out
	Err   error
}

// BatchOptions configure a Batcher.
type BatchOptions[In, Out any] struct {
	// Connection and Op label the metrics and errors, e.g. "hubspot", "upsert calls".
	Connection, Op string
	// MaxSize is the most items one request carries (HubSpot batch inputs: 100; Salesforce
	// collections: 200). Required.
	MaxSize int
	// Linger is how long the first item of a batch waits for others (0: no wait; a batch
	// still fills up while it waits for Ready).
	Linger time.Duration
	// Ready waits until the batch may be sent (the rate-limit budget for one request) and
	// takes that budget. It should give up after a bounded wait with a Throttled *Error, which
	// every item of the batch then gets. Nil: always ready.
	Ready func(ctx context.Context) error
	// Flush sends items as one request and returns one result per item, in order. ctx is
	// the Batcher's (bounded by FlushTimeout), carrying WithPrepaidBudget when Ready took
	// the budget. Required.
	Flush func(ctx context.Context, items []In) []BatchResult[Out]
	// MaxInFlight bounds concurrent flushes (default 4).
	MaxInFlight int
	// FlushTimeout bounds one flush (default 2m).
	FlushTimeout time.Duration
	Metrics      *Metrics
}

// Batcher groups concurrent submissions into batches (see above). It is safe for concurrent
// use and runs until the context given to NewBatcher is done.
type Batcher[In, Out any] struct {
	o   BatchOptions[In, Out]
	ctx context.Context
	m   *Metrics

	mu    sync.Mutex
	queue []*pendingItem[In, Out]
	wake  chan struct{}

	slots chan struct{}
	start sync.Once

	// newTimer is time.NewTimer; tests replace it to fire the linger by hand.
	newTimer func(time.Duration) (<-chan time.Time, func() bool)
}

type pendingItem[In, Out any] struct {
	item  In
	at    time.Time
	gone  atomic.Bool // the caller stopped waiting
	taken atomic.Bool // the item is in a flush
	done  chan BatchResult[Out]
}

// NewBatcher returns a batcher whose flushes run on ctx (the worker's long-lived context).
func NewBatcher[In, Out any](ctx context.Context, o BatchOptions[In, Out]) *Batcher[In, Out] {
	if o.MaxSize <= 0 {
		panic("crm: NewBatcher: MaxSize must be positive")
	}
	if o.Flush == nil {
		panic("crm: NewBatcher: Flush is required")
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 4
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = 2 * time.Minute
	}
	return &Batcher[In, Out]{
		o: o, ctx: ctx, m: orNop(o.Metrics),
		wake:  make(chan struct{}, 1),
		slots: make(chan struct{}, o.MaxInFlight),
		newTimer: func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		},
	}
}

// Do submits item and waits for the result of the batch that carries it. When ctx ends first
// it returns ctx's error at once; if the item was already sent, its result is dropped (the
// CRM write is an upsert, so the task's retry is harmless).
func (b *Batcher[In, Out]) Do(ctx context.Context, item In) (Out, error) {
	var zero Out
	if err := b.ctx.Err(); err != nil {
		return zero, b.stopped()
	}
	b.start.Do(func() { go b.loop() })
	p := &pendingItem[In, Out]{item: item, at: time.Now(), done: make(chan BatchResult[Out], 1)}
	b.mu.Lock()
	b.queue = append(b.queue, p)
	b.mu.Unlock()
	b.signal()
	select {
	case r := <-p.done:
		return r.Value, r.Err
	case <-ctx.Done():
		p.gone.Store(true)
		if !p.taken.Load() {
			b.signal() // a full batch may have become a short one: let the loop recount
		}
		return zero, ctx.Err()
	}
}

func (b *Batcher[In, Out]) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *Batcher[In, Out]) stopped() error {
	// Not a failure of the call: the task is requeued by asynq's shutdown, or retried after
	// a short wait without counting an attempt.
	return &Error{Class: Throttled, Op: "crm: " + b.o.Op, Msg: "the worker is shutting down", After: time.Second}
}

// live drops items whose callers have gone and returns how many remain, and when the oldest
// remaining arrived. Called with mu held.
func (b *Batcher[In, Out]) live() (int, time.Time) {
	kept := b.queue[:0]
	for _, p := range b.queue {
		if !p.gone.Load() {
			kept = append(kept, p)
		}
	}
	clear(b.queue[len(kept):])
	b.queue = kept
	if len(kept) == 0 {
		return 0, time.Time{}
	}
	return len(kept), kept[0].at
}

func (b *Batcher[In, Out]) loop() {
	for {
		if !b.waitDue() {
			b.failQueued()
			return
		}
		select { // a flush slot: at most MaxInFlight requests of this kind at once
		case b.slots <- struct{}{}:
		case <-b.ctx.Done():
			b.failQueued()
			return
		}
		var readyErr error
		ctx := b.ctx
		if b.o.Ready != nil {
			readyErr = b.o.Ready(ctx)
			if readyErr == nil {
				ctx = WithPrepaidBudget(ctx)
			}
		}
		batch := b.take()
		if len(batch) == 0 {
			<-b.slots
			continue
		}
		if readyErr != nil {
			if b.ctx.Err() != nil {
				readyErr = b.stopped()
			}
			for _, p := range batch {
				p.done <- BatchResult[Out]{Err: readyErr}
			}
			<-b.slots
			continue
		}
		go b.flush(ctx, batch)
	}
}

// waitDue blocks until there is a due batch (full, or its oldest item has lingered long
// enough). It returns false when the batcher's context is done.
func (b *Batcher[In, Out]) waitDue() bool {
	for {
		b.mu.Lock()
		n, oldest := b.live()
		b.mu.Unlock()
		var timer <-chan time.Time
		stop := func() bool { return false }
		switch {
		case n >= b.o.MaxSize:
			return true
		case n > 0:
			wait := b.o.Linger - time.Since(oldest)
			if wait <= 0 {
				return true
			}
			timer, stop = b.newTimer(wait)
		}
		select {
		case <-b.wake:
			stop()
		case <-timer:
			return true
		case <-b.ctx.Done():
			stop()
			return false
		}
	}
}

// take removes up to MaxSize live items from the queue, oldest first.
func (b *Batcher[In, Out]) take() []*pendingItem[In, Out] {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, _ := b.live()
	n = min(n, b.o.MaxSize)
	batch := make([]*pendingItem[In, Out], n)
	copy(batch, b.queue[:n])
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	for _, p := range batch {
		p.taken.Store(true)
	}
	return batch
}

func (b *Batcher[In, Out]) flush(ctx context.Context, batch []*pendingItem[In, Out]) {
	defer func() { <-b.slots }()
	ctx, cancel := context.WithTimeout(ctx, b.o.FlushTimeout)
	defer cancel()
	now := time.Now()
	items := make([]In, len(batch))
	for i, p := range batch {
		items[i] = p.item
		b.m.BatchWait.WithLabelValues(b.o.Connection, b.o.Op).Observe(now.Sub(p.at).Seconds())
	}
	b.m.BatchSize.WithLabelValues(b.o.Connection, b.o.Op).Observe(float64(len(items)))
	results := b.safeFlush(ctx, items)
	if len(results) != len(items) {
		err := &Error{Class: Transient, Op: "crm: " + b.o.Op,
			Msg: fmt.Sprintf("batch answered %d results for %d items", len(results), len(items))}
		for _, p := range batch {
			p.done <- BatchResult[Out]{Err: err}
		}
		return
	}
	for i, p := range batch {
		p.done <- results[i]
	}
}

// safeFlush turns a panic in Flush into an error for every item: a connector bug must not
// take the worker down with every caller of the batch waiting forever.
func (b *Batcher[In, Out]) safeFlush(ctx context.Context, items []In) (results []BatchResult[Out]) {
	defer func() {
		if r := recover(); r != nil {
			results = nil
			err := &Error{Class: Transient, Op: "crm: " + b.o.Op, Msg: fmt.Sprintf("panic in batch flush: %v", r)}
			for range items {
				results = append(results, BatchResult[Out]{Err: err})
			}
		}
	}()
	return b.o.Flush(ctx, items)
}

// failQueued answers every item still queued when the batcher stops.
func (b *Batcher[In, Out]) failQueued() {
	b.mu.Lock()
	q := b.queue
	b.queue = nil
	b.mu.Unlock()
	err := b.stopped()
	for _, p := range q {
		p.done <- BatchResult[Out]{Err: err}
	}
}

// prepaidKey marks a context whose first request's budget was already taken (by a Batcher's
// Ready), so RateLimitTransport lets that one request through without drawing again.
type prepaidKey struct{}

// WithPrepaidBudget returns ctx marked so that the first request sent with it (or a context
// derived from it) does not draw on the rate limit again; later ones (a 429 resend) do.
func WithPrepaidBudget(ctx context.Context) context.Context {
	f := new(atomic.Bool)
	f.Store(true)
	return context.WithValue(ctx, prepaidKey{}, f)
}

// usePrepaid consumes the mark; true when this request's budget was already taken.
func usePrepaid(ctx context.Context) bool {
	f, ok := ctx.Value(prepaidKey{}).(*atomic.Bool)
	return ok && f.CompareAndSwap(true, false)
}
