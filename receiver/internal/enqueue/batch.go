package enqueue

import (
	"context"
	"fmt"
	"sync"
)

// Batcher runs concurrent Enqueue calls together in one script (group commit). A call
// that finds fewer than MaxInFlight scripts running runs at once, alone or with whatever
// is waiting, so a lone request waits for nothing; only while that many scripts are on
// their way do calls wait, and the next script takes them all. Under load a script then
// carries many requests' tasks: Redis reads, parses and answers one command instead of
// one per request, and the receiver writes and reads one socket message. That per-command
// cost, not the script's own work, is most of what Redis spends on a small request.
//
// Every guarantee of one request's script holds for a batch: Redis runs a script
// atomically, so each request's tasks are decided and written together; a duplicate within
// a batch (the same detail in two requests) is found as in two scripts, in the order the
// calls were taken; WAIT covers the whole script, so every call in it is acknowledged or
// none. An error fails every call of the batch, and each sender re-sends, as it would
// after its own script failed.
type Batcher struct {
	q script
	o BatchOptions
	// queued, when set (tests), is called with each call put in waiting.
	queued func()

	mu      sync.Mutex
	waiting []*call // in arrival order
	running int     // scripts on their way
}

// script is what a Batcher runs its batches with (*Queue; a fake in tests, which holds a
// script on its way as long as a test needs).
type script interface {
	check(ts []Task) (prefix string, err error)
	enqueueChecked(ctx context.Context, ts []Task, prefix string) ([]Result, Acked, error)
	Probe(ctx context.Context) (Acked, error)
}

// BatchOptions bound a batch. The zero value of a field means its default.
type BatchOptions struct {
	// MaxInFlight is how many scripts may run at once (default 2): with one, a request
	// arriving while Redis answers waits a whole round trip; with many, batches stay small.
	MaxInFlight int
	// MaxTasks and MaxBytes bound one script's tasks and their messages' bytes (defaults
	// 256 and 4 MiB), so one script never holds Redis for long; a call larger than either
	// runs alone.
	MaxTasks, MaxBytes int
	// OnBatch, when set, is told each script's calls and tasks (a metric).
	OnBatch func(calls, tasks int)
}

// call is one Enqueue waiting for its batch.
type call struct {
	ctx    context.Context
	ts     []Task
	prefix string
	bytes  int
	done   chan struct{} // closed when res, acked and err are set
	res    []Result
	acked  Acked
	err    error
}

// NewBatcher batches q's enqueues.
func NewBatcher(q *Queue, o BatchOptions) *Batcher { return newBatcher(q, o) }

func newBatcher(q script, o BatchOptions) *Batcher {
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 2
	}
	if o.MaxTasks <= 0 {
		o.MaxTasks = 256
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 4 << 20
	}
	return &Batcher{q: q, o: o}
}

// Probe is Queue.Probe: a probe enqueues nothing to batch.
func (b *Batcher) Probe(ctx context.Context) (Acked, error) { return b.q.Probe(ctx) }

// Enqueue is Queue.Enqueue, run in a script with other calls waiting at the same time. It
// returns by ctx's deadline; a call whose ctx is done before its batch is taken is left
// out of it (nothing of it is written), one already taken may still be written (a
// duplicate on the sender's re-send, as with a late reply of its own script).
func (b *Batcher) Enqueue(ctx context.Context, ts []Task) ([]Result, Acked, error) {
	if len(ts) == 0 {
		return nil, Acked{}, nil
	}
	prefix, err := b.q.check(ts)
	if err != nil {
		return nil, Acked{}, err
	}
	c := &call{ctx: ctx, ts: ts, prefix: prefix, done: make(chan struct{})}
	for _, t := range ts {
		c.bytes += len(t.Message)
	}
	b.mu.Lock()
	b.waiting = append(b.waiting, c)
	lead := b.running < b.o.MaxInFlight
	if lead {
		b.running++
	}
	queued := b.queued
	b.mu.Unlock()
	if queued != nil {
		queued()
	}
	if lead {
		// Run one script on this goroutine (it holds this call unless another script took
		// it meanwhile); what waits after it is run by a goroutine of its own, so this
		// request answers as soon as its own script has.
		if b.runOne() {
			go b.drain()
		}
	}
	select {
	case <-c.done:
		return c.res, c.acked, c.err
	case <-ctx.Done():
		return nil, Acked{}, ctx.Err()
	}
}

// drain runs scripts until no call waits.
func (b *Batcher) drain() {
	for b.runOne() {
	}
}

// runOne takes the waiting calls that fit one script and runs it. It reports whether
// calls still wait; when none does, it gives up its running slot.
func (b *Batcher) runOne() (more bool) {
	batch := b.take()
	if len(batch) > 0 {
		b.run(batch)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiting) > 0 {
		return true
	}
	b.running--
	return false
}

// take removes from waiting the calls of the next script: in arrival order, those of the
// first live call's status prefix, within MaxTasks and MaxBytes (the first always). A
// call whose ctx is done has returned: it is dropped.
func (b *Batcher) take() []*call {
	b.mu.Lock()
	defer b.mu.Unlock()
	var batch []*call
	tasks, bytes := 0, 0
	keep := b.waiting[:0]
	for _, c := range b.waiting {
		switch {
		case c.ctx.Err() != nil:
			continue
		case len(batch) > 0 && (c.prefix != batch[0].prefix ||
			tasks+len(c.ts) > b.o.MaxTasks || bytes+c.bytes > b.o.MaxBytes):
			keep = append(keep, c)
			continue
		}
		batch = append(batch, c)
		tasks += len(c.ts)
		bytes += c.bytes
	}
	clear(b.waiting[len(keep):])
	b.waiting = keep
	return batch
}

// run enqueues the batch's tasks in one script and hands each call its results. The
// script runs under the first call's deadline (the earliest: calls are taken in arrival
// order and share one timeout) but not its cancellation, which would fail the others.
func (b *Batcher) run(batch []*call) {
	first := batch[0]
	ctx := context.WithoutCancel(first.ctx)
	if dl, ok := first.ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	ts := first.ts
	if len(batch) > 1 {
		n := 0
		for _, c := range batch {
			n += len(c.ts)
		}
		ts = make([]Task, 0, n)
		for _, c := range batch {
			ts = append(ts, c.ts...)
		}
	}
	if b.o.OnBatch != nil {
		b.o.OnBatch(len(batch), len(ts))
	}
	res, acked, err := b.enqueue(ctx, ts, first.prefix)
	for _, c := range batch {
		c.acked, c.err = acked, err
		if err == nil {
			c.res, res = res[:len(c.ts):len(c.ts)], res[len(c.ts):]
		}
		close(c.done)
	}
}

// enqueue runs the script, a panic in it made an error: the calls of the batch must get
// an answer and the running slot must be given back, or every later request would wait
// for a script that never ends.
func (b *Batcher) enqueue(ctx context.Context, ts []Task, prefix string) (res []Result, acked Acked, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, fmt.Errorf("enqueue: the script's run panicked: %v", p)
		}
	}()
	return b.q.enqueueChecked(ctx, ts, prefix)
}
