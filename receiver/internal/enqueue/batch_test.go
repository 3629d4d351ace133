package enqueue

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// heldScript is a script that runs only when the test lets it: each Enqueue is handed to
// the test on runs and answers what the test replies, so a test decides what is on its way
// while other calls arrive.
type heldScript struct{ runs chan *heldRun }

type heldRun struct {
	ctx   context.Context
	ts    []Task
	reply chan heldReply
}

type heldReply struct {
	res   []Result
	err   error
	panic bool
}

func newHeldScript() *heldScript { return &heldScript{runs: make(chan *heldRun)} }

func (h *heldScript) check(ts []Task) (string, error) {
	for _, t := range ts {
		if t.StatusPrefix != ts[0].StatusPrefix {
			return "", errors.New("mixed prefixes")
		}
	}
	return ts[0].StatusPrefix, nil
}

func (h *heldScript) enqueueChecked(ctx context.Context, ts []Task, _ string) ([]Result, Acked, error) {
	r := &heldRun{ctx: ctx, ts: ts, reply: make(chan heldReply)}
	h.runs <- r
	select {
	case rep := <-r.reply:
		if rep.panic {
			panic("held script told to panic")
		}
		return rep.res, Acked{}, rep.err
	case <-ctx.Done():
		return nil, Acked{}, ctx.Err()
	}
}

func (h *heldScript) Probe(context.Context) (Acked, error) { return Acked{}, nil }

// next is the next script the batcher runs.
func (h *heldScript) next(t *testing.T) *heldRun {
	t.Helper()
	select {
	case r := <-h.runs:
		return r
	case <-time.After(10 * time.Second): // a hang, not a synchronisation
		t.Fatal("no script ran")
		return nil
	}
}

// ids are the task ids of a script, in order.
func (r *heldRun) ids() []string {
	out := make([]string, len(r.ts))
	for i, t := range r.ts {
		out[i] = t.ID
	}
	return out
}

// ok answers every task Queued.
func (r *heldRun) ok() { r.answer(nil) }

func (r *heldRun) answer(err error) {
	var res []Result
	if err == nil {
		res = make([]Result, len(r.ts))
		for i, t := range r.ts {
			res[i] = Queued
			if t.ID[0] == 'd' { // a test names duplicates d...
				res[i] = Duplicate
			}
		}
	}
	r.reply <- heldReply{res: res, err: err}
}

// batchTest drives a Batcher over a heldScript; each call runs on a goroutine of its own and
// reports on its channel.
type batchTest struct {
	t       *testing.T
	h       *heldScript
	b       *Batcher
	queued  chan struct{}
	mu      sync.Mutex
	batches [][2]int // OnBatch's calls and tasks
}

type outcome struct {
	res []Result
	err error
}

func newBatchTest(t *testing.T, o BatchOptions) *batchTest {
	bt := &batchTest{t: t, h: newHeldScript(), queued: make(chan struct{}, 64)}
	o.OnBatch = func(calls, tasks int) {
		bt.mu.Lock()
		defer bt.mu.Unlock()
		bt.batches = append(bt.batches, [2]int{calls, tasks})
	}
	bt.b = newBatcher(bt.h, o)
	bt.b.queued = func() { bt.queued <- struct{}{} }
	return bt
}

// call starts an Enqueue of tasks with ids (prefix "" unless an id is "prefix/id") and
// returns once the call waits in the batcher or runs.
func (bt *batchTest) call(ctx context.Context, ids ...string) chan outcome {
	ts := make([]Task, len(ids))
	for i, id := range ids {
		ts[i] = Task{ID: id, Message: []byte(id)}
		if p, rest, ok := strings.Cut(id, "/"); ok {
			ts[i] = Task{ID: rest, Message: []byte(rest), StatusPrefix: p}
		}
	}
	out := make(chan outcome, 1)
	go func() {
		res, _, err := bt.b.Enqueue(ctx, ts)
		out <- outcome{res, err}
	}()
	<-bt.queued
	return out
}

func (bt *batchTest) wait(c chan outcome) outcome {
	bt.t.Helper()
	select {
	case o := <-c:
		return o
	case <-time.After(10 * time.Second):
		bt.t.Fatal("the call never returned")
		return outcome{}
	}
}

func (bt *batchTest) wantIDs(r *heldRun, want ...string) {
	bt.t.Helper()
	if got := r.ids(); !slices.Equal(got, want) {
		bt.t.Fatalf("script ran tasks %q, want %q", got, want)
	}
}

// lone runs a call that must run alone in a script of its own (no script on its way), to
// the end, and returns what it got.
func (bt *batchTest) lone(ids ...string) outcome {
	bt.t.Helper()
	c := bt.call(context.Background(), ids...)
	r := bt.h.next(bt.t)
	bt.wantIDs(r, ids...)
	r.ok()
	return bt.wait(c)
}

// TestBatcherLoneCallRunsAtOnce: a call that finds no script on its way runs its own at
// once, waiting for no other.
func TestBatcherLoneCallRunsAtOnce(t *testing.T) {
	bt := newBatchTest(t, BatchOptions{MaxInFlight: 1})
	a := bt.call(context.Background(), "a1", "a2")
	r := bt.h.next(t)
	bt.wantIDs(r, "a1", "a2")
	r.ok()
	if o := bt.wait(a); o.err != nil || !slices.Equal(o.res, []Result{Queued, Queued}) {
		t.Fatalf("got %v, %v", o.res, o.err)
	}
	// The slot is free again: the next lone call runs alone too.
	bt.lone("b1")
}

// TestBatcherWaitingCallsShareOneScript: calls arriving while MaxInFlight scripts are on
// their way wait, and the next script carries them all, in arrival order; each call gets
// its own tasks' results. Afterwards a lone call runs alone again.
func TestBatcherWaitingCallsShareOneScript(t *testing.T) {
	bt := newBatchTest(t, BatchOptions{MaxInFlight: 2})
	a := bt.call(context.Background(), "a1")
	ra := bt.h.next(t)
	b := bt.call(context.Background(), "b1")
	rb := bt.h.next(t)
	// Two scripts on their way: these wait.
	c := bt.call(context.Background(), "c1", "dc2")
	d := bt.call(context.Background(), "dd1")
	e := bt.call(context.Background(), "e1", "e2", "e3")
	select {
	case r := <-bt.h.runs:
		t.Fatalf("a third script ran (%q) while two were on their way", r.ids())
	default:
	}
	rb.ok() // the second script answers first: it takes the waiting calls
	if o := bt.wait(b); o.err != nil {
		t.Fatal(o.err)
	}
	r := bt.h.next(t)
	bt.wantIDs(r, "c1", "dc2", "dd1", "e1", "e2", "e3")
	r.ok()
	for _, w := range []struct {
		c    chan outcome
		want []Result
	}{{c, []Result{Queued, Duplicate}}, {d, []Result{Duplicate}}, {e, []Result{Queued, Queued, Queued}}} {
		if o := bt.wait(w.c); o.err != nil || !slices.Equal(o.res, w.want) {
			t.Fatalf("got %v, %v; want %v", o.res, o.err, w.want)
		}
	}
	ra.ok()
	bt.wait(a)
	bt.lone("f1")
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if want := [][2]int{{1, 1}, {1, 1}, {3, 6}, {1, 1}}; !slices.Equal(bt.batches, want) {
		t.Fatalf("OnBatch saw %v, want %v", bt.batches, want)
	}
}

// TestBatcherErrorFailsEveryCall: a script that fails fails every call it carried (each
// sender re-sends, as after its own script's failure), and only those.
func TestBatcherErrorFailsEveryCall(t *testing.T) {
	bt := newBatchTest(t, BatchOptions{MaxInFlight: 1})
	a := bt.call(context.Background(), "a1")
	ra := bt.h.next(t)
	b := bt.call(context.Background(), "b1")
	c := bt.call(context.Background(), "c1")
	ra.ok()
	bt.wait(a)
	r := bt.h.next(t)
	bt.wantIDs(r, "b1", "c1")
	boom := errors.New("LOADING Redis is loading the dataset in memory")
	r.answer(boom)
	for _, ch := range []chan outcome{b, c} {
		if o := bt.wait(ch); !errors.Is(o.err, boom) || o.res != nil {
			t.Fatalf("got %v, %v; want the script's error", o.res, o.err)
		}
	}
	if o := bt.lone("e1"); o.err != nil {
		t.Fatalf("the call after a failed script: %v", o.err)
	}
}

// TestBatcherPanicFailsItsCalls: a script run that panics answers every call it carried
// with an error and gives its slot back; later calls still run.
func TestBatcherPanicFailsItsCalls(t *testing.T) {
	bt := newBatchTest(t, BatchOptions{MaxInFlight: 1})
	a := bt.call(context.Background(), "a1")
	ra := bt.h.next(t)
	b := bt.call(context.Background(), "b1")
	ra.reply <- heldReply{panic: true}
	if o := bt.wait(a); o.err == nil || !strings.Contains(o.err.Error(), "panicked") {
		t.Fatalf("the call whose script panicked: %v, %v", o.res, o.err)
	}
	r := bt.h.next(t) // b, run by the goroutine the leader left
	bt.wantIDs(r, "b1")
	r.reply <- heldReply{panic: true}
	if o := bt.wait(b); o.err == nil {
		t.Fatalf("the waiting call whose script panicked: %v", o.res)
	}
	if o := bt.lone("c1"); o.err != nil {
		t.Fatalf("a call after two panics: %v", o.err)
	}
}

// TestBatcherLeavesOutCallsWhoseContextEnded: a waiting call whose deadline passes
// returns at once with the context's error, and the next script leaves its tasks out:
// nothing of a request answered 503 is written by a script that runs later.
func TestBatcherLeavesOutCallsWhoseContextEnded(t *testing.T) {
	bt := newBatchTest(t, BatchOptions{MaxInFlight: 1})
	a := bt.call(context.Background(), "a1")
	ra := bt.h.next(t)
	ctx, cancel := context.WithCancel(context.Background())
	b := bt.call(ctx, "b1")
	c := bt.call(context.Background(), "c1")
	cancel()
	if o := bt.wait(b); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("the waiting call whose context ended: %v, %v", o.res, o.err)
	}
	ra.ok()
	bt.wait(a)
	r := bt.h.next(t)
	bt.wantIDs(r, "c1")
	r.ok()
	bt.wait(c)
}

// TestBatcherCancelledCallDoesNotFailItsScript: the script runs under its first call's
// deadline, not its cancellation: the first caller going away (MiiTel hung up) fails
// nobody else in the script.
func TestBatcherCancelledCallDoesNotFailItsScript(t *testing.T) {
	bt := newBatchTest(t, BatchOptions{MaxInFlight: 1})
	a := bt.call(context.Background(), "a1")
	ra := bt.h.next(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b := bt.call(ctx, "b1")
	c := bt.call(context.Background(), "c1")
	ra.ok()
	bt.wait(a)
	r := bt.h.next(t)
	bt.wantIDs(r, "b1", "c1")
	if dl, ok := r.ctx.Deadline(); !ok || dl != must(ctx.Deadline()) {
		t.Fatalf("script deadline %v (%v), want the first call's", dl, ok)
	}
	cancel()
	if o := bt.wait(b); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("the cancelled call: %v", o.err)
	}
	if r.ctx.Err() != nil {
		t.Fatalf("the script's context ended with its first call's: %v", r.ctx.Err())
	}
	r.ok()
	if o := bt.wait(c); o.err != nil || !slices.Equal(o.res, []Result{Queued}) {
		t.Fatalf("the other call: %v, %v", o.res, o.err)
	}
}

func must(dl time.Time, _ bool) time.Time { return dl }

// TestBatcherBounds: a script takes waiting calls while they fit MaxTasks and MaxBytes and
// share the first one's status prefix; a call larger than the bounds runs alone; a call
// passed over goes first in the next script.
func TestBatcherBounds(t *testing.T) {
	bt := newBatchTest(t, BatchOptions{MaxInFlight: 1, MaxTasks: 3, MaxBytes: 1 << 20})
	a := bt.call(context.Background(), "a1")
	ra := bt.h.next(t)
	b := bt.call(context.Background(), "b1", "b2")
	c := bt.call(context.Background(), "c1", "c2")             // does not fit beside b
	d := bt.call(context.Background(), "d1")                   // fits
	e := bt.call(context.Background(), "p/e1")                 // another status prefix
	f := bt.call(context.Background(), "f1", "f2", "f3", "f4") // over MaxTasks on its own
	ra.ok()
	bt.wait(a)
	for _, want := range [][]string{{"b1", "b2", "d1"}, {"c1", "c2"}, {"e1"}, {"f1", "f2", "f3", "f4"}} {
		r := bt.h.next(t)
		bt.wantIDs(r, want...)
		r.ok()
	}
	for _, ch := range []chan outcome{b, c, d, e, f} {
		if o := bt.wait(ch); o.err != nil {
			t.Fatal(o.err)
		}
	}

	big := string(make([]byte, 600<<10))
	bt = newBatchTest(t, BatchOptions{MaxInFlight: 1, MaxBytes: 1 << 20})
	a = bt.call(context.Background(), "a1")
	ra = bt.h.next(t)
	b = bt.call(context.Background(), "b1"+big)
	c = bt.call(context.Background(), "c1"+big)
	ra.ok()
	bt.wait(a)
	for _, want := range []string{"b1", "c1"} {
		r := bt.h.next(t)
		if len(r.ts) != 1 || r.ts[0].ID[:2] != want {
			t.Fatalf("a script of two 600 KiB calls under MaxBytes 1 MiB: %d tasks", len(r.ts))
		}
		r.ok()
	}
	bt.wait(b)
	bt.wait(c)
}

// TestBatcherRefusesUnrunnableCalls: a call the script could not run (Queue.check) is
// refused on its own as it arrives, before it can fail a batch; nothing reaches Redis
// (the client points at no server).
func TestBatcherRefusesUnrunnableCalls(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	inSlot := tasks.KeyPrefix + "{" + queue + "}:status:"
	for _, c := range []struct {
		name string
		lua  string
		ts   []Task
		want string
	}{
		{"two prefixes", "x", []Task{{ID: "x", StatusPrefix: inSlot}, {ID: "y"}}, "different call status prefixes"},
		{"no status library", "", []Task{{ID: "x", StatusPrefix: inSlot}}, "no status library"},
		{"another slot", "x", []Task{{ID: "x", StatusPrefix: "mcs:{other}:status:"}}, "not in the slot"},
	} {
		b := NewBatcher(New(rdb, queue, Ack{}, c.lua), BatchOptions{})
		if _, _, err := b.Enqueue(context.Background(), c.ts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

// TestBatcherOnRedis: many concurrent calls through one real Redis, each with a task of
// its own and one every call shares (one detail re-sent by many requests at once): every
// own task is queued once, the shared one exactly once across all calls, every call gets
// its own results, and Redis holds each task once.
func TestBatcherOnRedis(t *testing.T) {
	rdb := redistest.Start(t).Client()
	var mu sync.Mutex
	scripts, tasks := 0, 0
	b := NewBatcher(New(rdb, queue, Ack{}, ""), BatchOptions{MaxInFlight: 1, OnBatch: func(_, n int) {
		mu.Lock()
		defer mu.Unlock()
		scripts++
		tasks += n
	}})
	const calls = 64
	results := make([][]Result, calls)
	errs := make([]error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			own := "own-" + strconv.Itoa(i)
			results[i], _, errs[i] = b.Enqueue(context.Background(), []Task{
				{ID: own, Message: message(own, []byte(`{}`))},
				{ID: "shared", Message: message("shared", []byte(`{}`))},
			})
		})
	}
	wg.Wait()
	sharedQueued := 0
	for i := range calls {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if len(results[i]) != 2 || results[i][0] != Queued {
			t.Fatalf("call %d: results %v, want its own task queued", i, results[i])
		}
		switch results[i][1] {
		case Queued:
			sharedQueued++
		case Duplicate:
		default:
			t.Fatalf("call %d: shared task %v", i, results[i][1])
		}
	}
	if sharedQueued != 1 {
		t.Fatalf("the shared task was queued %d times", sharedQueued)
	}
	ids, err := rdb.LRange(context.Background(), "asynq:{"+queue+"}:pending", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != calls+1 {
		t.Fatalf("pending holds %d tasks, want %d", len(ids), calls+1)
	}
	mu.Lock()
	defer mu.Unlock()
	if tasks != 2*calls {
		t.Fatalf("scripts carried %d tasks, want %d", tasks, 2*calls)
	}
	t.Logf("%d calls in %d scripts", calls, scripts)
}
