package crm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// batchRig is a Batcher over ints whose flushes are recorded and can be held, with a linger
// timer fired by hand, so every test decides when things happen (no sleeps).
type batchRig struct {
	b *Batcher[int, string]

	mu      sync.Mutex
	batches [][]int

	flushed chan []int    // every flush's items, as it starts
	hold    chan struct{} // when not nil, each flush waits for a receive from it
	linger  chan time.Time
	timers  chan time.Duration // linger timers the batcher started
	fail    map[int]error      // per-item errors a flush answers
}

func newBatchRig(t *testing.T, max int, o func(*BatchOptions[int, string])) (*batchRig, context.CancelFunc) {
	t.Helper()
	r := &batchRig{
		flushed: make(chan []int, 100),
		linger:  make(chan time.Time),
		timers:  make(chan time.Duration, 100),
		fail:    map[int]error{},
	}
	opts := BatchOptions[int, string]{
		Connection: "test", Op: "upsert", MaxSize: max, Linger: time.Hour,
		Flush: func(ctx context.Context, items []int) []BatchResult[string] {
			r.mu.Lock()
			r.batches = append(r.batches, slices.Clone(items))
			hold := r.hold
			r.mu.Unlock()
			r.flushed <- slices.Clone(items)
			if hold != nil {
				<-hold
			}
			out := make([]BatchResult[string], len(items))
			for i, it := range items {
				r.mu.Lock()
				err := r.fail[it]
				r.mu.Unlock()
				out[i] = BatchResult[string]{Value: fmt.Sprintf("id-%d", it), Err: err}
			}
			return out
		},
	}
	if o != nil {
		o(&opts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r.b = NewBatcher(ctx, opts)
	r.b.newTimer = func(d time.Duration) (<-chan time.Time, func() bool) {
		r.timers <- d
		return r.linger, func() bool { return true }
	}
	return r, cancel
}

type doResult struct {
	item int
	v    string
	err  error
}

// submit runs Do for each item in its own goroutine and returns where the results arrive.
func (r *batchRig) submit(ctx context.Context, items ...int) <-chan doResult {
	out := make(chan doResult, len(items))
	for _, it := range items {
		go func() {
			v, err := r.b.Do(ctx, it)
			out <- doResult{it, v, err}
		}()
	}
	return out
}

// queued waits until n items are queued in the batcher (the callers run in goroutines of
// their own; there is no event to wait for but the queue's length).
func (r *batchRig) queued(t *testing.T, n int) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		r.b.mu.Lock()
		got := len(r.b.queue)
		r.b.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("only %d of %d items queued", got, n)
		}
	}
}

func collect(t *testing.T, ch <-chan doResult, n int) map[int]doResult {
	t.Helper()
	got := map[int]doResult{}
	for range n {
		select {
		case r := <-ch:
			got[r.item] = r
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d results arrived", len(got), n)
		}
	}
	return got
}

func TestBatcherFullBatchGoesWithoutLinger(t *testing.T) {
	r, _ := newBatchRig(t, 3, nil) // linger: an hour, never fired
	res := collect(t, r.submit(context.Background(), 1, 2, 3), 3)
	for it, got := range res {
		if got.err != nil || got.v != fmt.Sprintf("id-%d", it) {
			t.Errorf("item %d: %q, %v", it, got.v, got.err)
		}
	}
	if len(r.batches) != 1 || len(r.batches[0]) != 3 {
		t.Errorf("batches %v, want one of 3", r.batches)
	}
}

func TestBatcherLoneItemGoesAfterLinger(t *testing.T) {
	r, _ := newBatchRig(t, 100, func(o *BatchOptions[int, string]) { o.Linger = 700 * time.Millisecond })
	ch := r.submit(context.Background(), 7)
	var d time.Duration
	select {
	case d = <-r.timers:
	case <-time.After(10 * time.Second):
		t.Fatal("no linger timer started")
	}
	if d <= 0 || d > 700*time.Millisecond {
		t.Errorf("linger timer %v, want at most the 700ms linger", d)
	}
	select {
	case <-r.flushed:
		t.Fatal("flushed before the linger passed")
	default:
	}
	r.linger <- time.Now()
	if got := collect(t, ch, 1)[7]; got.err != nil || got.v != "id-7" {
		t.Errorf("lone item: %q, %v", got.v, got.err)
	}
}

// While a due batch waits for its rate-limit budget, later items join it.
func TestBatcherFillsWhileWaitingForBudget(t *testing.T) {
	release := make(chan struct{})
	readyCalled := make(chan struct{}, 10)
	r, _ := newBatchRig(t, 10, func(o *BatchOptions[int, string]) {
		o.Linger = 0
		o.Ready = func(ctx context.Context) error {
			readyCalled <- struct{}{}
			<-release
			return nil
		}
	})
	ch := r.submit(context.Background(), 1)
	<-readyCalled // the first item alone made a due batch, now waiting for budget
	ch2 := r.submit(context.Background(), 2, 3, 4, 5)
	r.queued(t, 5)
	close(release)
	collect(t, ch, 1)
	collect(t, ch2, 4)
	if len(r.batches) != 1 || len(r.batches[0]) != 5 {
		t.Errorf("batches %v, want the five items in one", r.batches)
	}
}

func TestBatcherSplitsAtMaxSize(t *testing.T) {
	r, _ := newBatchRig(t, 4, func(o *BatchOptions[int, string]) { o.Linger, o.MaxInFlight = 0, 1 })
	r.hold = make(chan struct{})
	var items []int
	for i := range 10 {
		items = append(items, i)
	}
	// Hold the first flush so the rest queue up behind it.
	ch := r.submit(context.Background(), items[0])
	<-r.flushed
	ch2 := r.submit(context.Background(), items[1:]...)
	r.queued(t, 9)
	r.mu.Lock()
	held := r.hold
	r.hold = nil
	r.mu.Unlock()
	held <- struct{}{}
	collect(t, ch, 1)
	collect(t, ch2, 9)
	sizes := []int{}
	for _, b := range r.batches {
		sizes = append(sizes, len(b))
	}
	if !slices.Equal(sizes, []int{1, 4, 4, 1}) {
		t.Errorf("batch sizes %v, want [1 4 4 1]", sizes)
	}
}

// One item's failure is that item's alone.
func TestBatcherPerItemResults(t *testing.T) {
	r, _ := newBatchRig(t, 3, nil)
	bad := &Error{Class: Permanent, Op: "test", Code: "VALIDATION_ERROR"}
	r.fail[2] = bad
	res := collect(t, r.submit(context.Background(), 1, 2, 3), 3)
	if res[1].err != nil || res[3].err != nil {
		t.Errorf("good items failed: %v, %v", res[1].err, res[3].err)
	}
	if !errors.Is(res[2].err, bad) {
		t.Errorf("bad item: %v, want its own error", res[2].err)
	}
}

// A caller that gives up before its batch is taken is left out of the request.
func TestBatcherDropsGoneCallers(t *testing.T) {
	r, _ := newBatchRig(t, 3, nil)
	ctx, cancel := context.WithCancel(context.Background())
	gone := r.submit(ctx, 99)
	r.queued(t, 1)
	cancel()
	if got := collect(t, gone, 1)[99]; !errors.Is(got.err, context.Canceled) {
		t.Fatalf("gone caller: %v, want context.Canceled", got.err)
	}
	collect(t, r.submit(context.Background(), 1, 2, 3), 3)
	for _, b := range r.batches {
		if slices.Contains(b, 99) {
			t.Errorf("batch %v carries the item whose caller left", b)
		}
	}
}

// A budget that does not come in time fails the batch's items with the limiter's Throttled
// error (not counted as a failed attempt), and the next batch tries again.
func TestBatcherReadyErrorFailsTheBatch(t *testing.T) {
	throttled := &Error{Class: Throttled, Op: "crm: rate limit", After: 3 * time.Second}
	calls := 0
	r, _ := newBatchRig(t, 2, func(o *BatchOptions[int, string]) {
		o.Ready = func(context.Context) error {
			calls++
			if calls == 1 {
				return throttled
			}
			return nil
		}
	})
	res := collect(t, r.submit(context.Background(), 1, 2), 2)
	for _, got := range res {
		if !errors.Is(got.err, throttled) || ClassOf(got.err) != Throttled {
			t.Errorf("item %d: %v, want the throttled error", got.item, got.err)
		}
	}
	if len(r.batches) != 0 {
		t.Errorf("flushed %v although no budget came", r.batches)
	}
	if got := collect(t, r.submit(context.Background(), 3, 4), 2); got[3].err != nil || got[4].err != nil {
		t.Errorf("next batch: %v", got)
	}
}

// The flush gets a prepaid context when Ready took the budget, so the request does not
// draw on the rate limit a second time.
func TestBatcherPrepaysTheRequest(t *testing.T) {
	var prepaid []bool
	r, _ := newBatchRig(t, 1, func(o *BatchOptions[int, string]) {
		o.Ready = func(context.Context) error { return nil }
		inner := o.Flush
		o.Flush = func(ctx context.Context, items []int) []BatchResult[string] {
			prepaid = append(prepaid, usePrepaid(ctx), usePrepaid(ctx))
			return inner(ctx, items)
		}
	})
	collect(t, r.submit(context.Background(), 1), 1)
	if !slices.Equal(prepaid, []bool{true, false}) {
		t.Errorf("prepaid marks %v, want the first request only", prepaid)
	}
	if usePrepaid(context.Background()) {
		t.Error("a plain context is prepaid")
	}
}

func TestBatcherShutdownAnswersQueuedItems(t *testing.T) {
	r, cancel := newBatchRig(t, 10, nil)
	ch := r.submit(context.Background(), 1, 2)
	r.queued(t, 2)
	cancel()
	for _, got := range collect(t, ch, 2) {
		if ClassOf(got.err) != Throttled {
			t.Errorf("item %d after shutdown: %v, want Throttled (no attempt burned)", got.item, got.err)
		}
	}
	if _, err := r.b.Do(context.Background(), 3); ClassOf(err) != Throttled {
		t.Errorf("Do after shutdown: %v, want Throttled", err)
	}
}

func TestBatcherFlushPanicFailsItsItems(t *testing.T) {
	r, _ := newBatchRig(t, 2, func(o *BatchOptions[int, string]) {
		o.Flush = func(context.Context, []int) []BatchResult[string] { panic("connector bug") }
	})
	for _, got := range collect(t, r.submit(context.Background(), 1, 2), 2) {
		if ClassOf(got.err) != Transient {
			t.Errorf("item %d: %v, want a Transient error", got.item, got.err)
		}
	}
}

func TestBatcherWrongResultCount(t *testing.T) {
	r, _ := newBatchRig(t, 2, func(o *BatchOptions[int, string]) {
		o.Flush = func(context.Context, []int) []BatchResult[string] { return []BatchResult[string]{{Value: "x"}} }
	})
	for _, got := range collect(t, r.submit(context.Background(), 1, 2), 2) {
		if got.err == nil {
			t.Errorf("item %d: no error although the batch answered for one item of two", got.item)
		}
	}
}

// Many concurrent callers, real timers: every caller gets exactly its own answer.
func TestBatcherConcurrentCallers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := NewBatcher(ctx, BatchOptions[int, int]{
		Connection: "test", Op: "square", MaxSize: 25, Linger: time.Millisecond, MaxInFlight: 3,
		Flush: func(_ context.Context, items []int) []BatchResult[int] {
			out := make([]BatchResult[int], len(items))
			for i, it := range items {
				out[i].Value = it * it
			}
			return out
		},
	})
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for i := range 1000 {
		wg.Go(func() {
			v, err := b.Do(context.Background(), i)
			if err != nil || v != i*i {
				errs <- fmt.Errorf("item %d: %d, %v", i, v, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A request whose budget a Batcher's Ready already took passes RateLimitTransport without
// drawing again; the next one (a 429 resend) draws as usual.
func TestRateLimitTransportHonoursPrepaid(t *testing.T) {
	rdb := redistest.Start(t).Client()
	m, _ := NewMetrics(nil)
	lim := NewRateLimiter(rdb, "hs", time.Millisecond, m, Budget{Name: "requests", Requests: 1, Per: time.Hour})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	client := &http.Client{Transport: &RateLimitTransport{Limiter: lim, Next: srv.Client().Transport}}
	get := func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := lim.Wait(context.Background(), "requests"); err != nil { // the batch's Ready
		t.Fatal(err)
	}
	ctx := WithPrepaidBudget(context.Background())
	if err := get(ctx); err != nil {
		t.Fatalf("prepaid request: %v", err)
	}
	if err := get(ctx); ClassOf(err) != Throttled {
		t.Errorf("second request on the same context: %v, want Throttled (the budget of 1 is spent)", err)
	}
}
