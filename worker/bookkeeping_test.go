package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/callstatus"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// These tests run the real worker (asynq server), pipeline, dead letter and call status on a
// private Redis, with a CRM connector scripted per call detail.

// scriptedCRM answers per detail id (the record's external id): an error, or a result.
type scriptedCRM struct {
	mu        sync.Mutex
	fail      map[string]error
	delivered map[string]int
}

func newScriptedCRM() *scriptedCRM {
	return &scriptedCRM{fail: map[string]error{}, delivered: map[string]int{}}
}

func (c *scriptedCRM) set(detail string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail[detail] = err
}

func (c *scriptedCRM) count(detail string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.delivered[detail]
}

func (c *scriptedCRM) Deliver(_ context.Context, rec *mappers.Record) (crm.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.fail[rec.ExternalID.Value]; err != nil {
		return crm.Result{}, err
	}
	c.delivered[rec.ExternalID.Value]++
	return crm.Result{ID: "crm-" + rec.ExternalID.Value, Created: c.delivered[rec.ExternalID.Value] == 1, ContactID: "c-1",
		URL: "https://crm.example/r/crm-" + rec.ExternalID.Value}, nil
}

// versioned renders a minimal record keyed by the detail id, with a version like a mapping.
type versioned struct{}

func (versioned) Version() string { return "v-test" }
func (versioned) Render(ev *miitel.Event) (*mappers.Record, *mappers.Skip, error) {
	if ev.Detail.CallType == "EXTENSION" {
		return nil, &mappers.Skip{Reason: "internal call"}, nil
	}
	return &mappers.Record{Object: "calls", ExternalID: mappers.ExternalID{Value: ev.Detail.ID}, MappingVersion: "v-test",
		Contact: &mappers.ContactLookup{E164: "+819012345678"}, Owner: &mappers.OwnerLookup{Email: "sato@example.co.jp"},
		Fields: []mappers.Field{{Name: "title", Value: "call"}}}, nil, nil
}

type bookHarness struct {
	*harness
	crm    *scriptedCRM
	dead   *deadletter.Store
	status *callstatus.Store
}

type bookOptions struct {
	retryBase time.Duration
	maxRetry  int
	proc      func(Processor) Processor // wraps the pipeline
	dead      func(*deadletter.Store) DeadLetter
}

func startBook(t *testing.T, o bookOptions) *bookHarness {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client()
	cfg := config.Default()
	cfg.Worker.RetryBase = max(o.retryBase, time.Millisecond)
	cfg.Worker.RetryMax = max(o.retryBase, 5*time.Millisecond)
	cfg.Queue.MaxRetry = o.maxRetry
	cfg.Worker.PollInterval = 20 * time.Millisecond
	routes := []config.Route{{Name: "r", Connection: "hubspot"}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dl, err := deadletter.New(rdb, deadletter.Options{Queue: cfg.Queue.Name, Config: cfg.DeadLetter, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	st, err := callstatus.New(rdb, callstatus.Options{Queue: cfg.Queue.Name, Config: cfg.Status, Routes: routes,
		Connections: []config.Connection{{Name: "hubspot", Type: "hubspot"}}})
	if err != nil {
		t.Fatal(err)
	}
	fake := newScriptedCRM()
	var proc Processor = NewPipeline(PipelineOptions{Redis: rdb, Logger: log, StateTTL: time.Hour, WrittenTTL: time.Hour,
		Routes: map[string]Route{"r": {Mapping: func() Renderer { return versioned{} }, Connector: fake}}})
	if o.proc != nil {
		proc = o.proc(proc)
	}
	var dead DeadLetter = dl
	if o.dead != nil {
		dead = o.dead(dl)
	}
	w, err := New(Options{Redis: rdb, Queue: cfg.Queue, Worker: cfg.Worker, Processor: proc, Logger: log,
		Registerer: prometheus.NewRegistry(), DeadLetter: dead, Status: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	h := &harness{client: asynq.NewClientFromRedisClient(rdb), inspector: asynq.NewInspectorFromRedisClient(rdb), w: w, queue: cfg.Queue, srv: srv}
	return &bookHarness{harness: h, crm: fake, dead: dl, status: st}
}

func bookEvent(detail string) *miitel.Event {
	at := "2026-04-01T09:00:00+09:00"
	login := "sato@example.co.jp"
	return &miitel.Event{Route: "r", CallID: "call-" + detail, Kind: miitel.KindAnalysis, DedupeKey: "key-" + detail,
		ReceivedAt: time.Date(2026, 4, 1, 0, 1, 0, 0, time.UTC),
		Detail: miitel.Detail{ID: detail, CallType: "OUTGOING_CALL", DialStartsAt: &at, DialAnsweredAt: &at,
			Participants: []miitel.Participant{{ID: "p", FromTo: "FROM", LoginID: &login}}}}
}

func (h *bookHarness) enqueueEvent(t *testing.T, ev *miitel.Event) {
	t.Helper()
	task, err := tasks.NewCallEvent(ev, asynq.Queue(h.queue.Name), tasks.MaxRetry(h.queue.MaxRetry))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.Enqueue(task); err != nil {
		t.Fatal(err)
	}
}

func (h *bookHarness) archived(t *testing.T) int {
	t.Helper()
	qi, err := h.inspector.GetQueueInfo(h.queue.Name)
	if err != nil {
		return 0
	}
	return qi.Archived
}

func (h *bookHarness) deadCount(t *testing.T) int {
	t.Helper()
	n, err := h.dead.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func (h *bookHarness) state(t *testing.T, detail string) callstatus.Status {
	t.Helper()
	sts, err := h.status.Get(context.Background(), detail)
	if err != nil || len(sts) != 1 {
		return callstatus.Status{}
	}
	return sts[0]
}

func (h *bookHarness) waitState(t *testing.T, detail string, want callstatus.State) callstatus.Status {
	t.Helper()
	var st callstatus.Status
	waitFor(t, fmt.Sprintf("%s %s", detail, want), func() bool {
		st = h.state(t, detail)
		return st.State == want
	})
	return st
}

var errValidation = &crm.Error{Class: crm.Permanent, Op: "hubspot: update call", Status: 400, Code: "VALIDATION_ERROR", Msg: "Property hs_foo does not exist"}

// The dead letter holds exactly what is dead: N calls that die are N entries (and asynq's
// archive agrees); one replayed and delivered leaves N-1; one that dies twice stays one
// entry, its attempts updated.
func TestDeadLetterCountEqualsWhatIsDead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := startBook(t, bookOptions{maxRetry: 1})
	const n = 4
	for i := range n {
		d := fmt.Sprintf("d%d", i)
		h.crm.set(d, errValidation)
		h.enqueueEvent(t, bookEvent(d))
	}
	waitFor(t, "every call archived", func() bool { return h.archived(t) == n })
	if got := h.deadCount(t); got != n {
		t.Fatalf("dead letter = %d entries, asynq archived %d", got, n)
	}
	e, err := h.dead.Get(ctx, "r", "d0")
	if err != nil {
		t.Fatal(err)
	}
	if e.Connection != "hubspot" || e.Error.Code != "VALIDATION_ERROR" || e.Error.Status != 400 || e.Error.Class != "permanent" ||
		e.MappingVersion != "v-test" || e.Attempts != 1 || e.Rep != "sato@example.co.jp" || e.TaskID != "key-d0" {
		t.Errorf("entry = %+v", e)
	}

	// The CRM field exists now: d0 is run again (the archived task, as `replay run` does).
	h.crm.set("d0", nil)
	if err := h.inspector.RunTask(h.queue.Name, "key-d0"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "d0 delivered", func() bool { return h.crm.count("d0") == 1 })
	waitFor(t, "d0 resolved", func() bool { return h.deadCount(t) == n-1 })
	if h.archived(t) != n-1 {
		t.Errorf("asynq archived %d, want %d", h.archived(t), n-1)
	}

	// d1 is run again while still broken: it dies twice, still one entry.
	if err := h.inspector.RunTask(h.queue.Name, "key-d1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "d1 dead again", func() bool {
		e, err := h.dead.Get(ctx, "r", "d1")
		return err == nil && e.Deaths == 2
	})
	e, _ = h.dead.Get(ctx, "r", "d1")
	if e.Attempts != 2 || h.deadCount(t) != n-1 {
		t.Errorf("after a second death: attempts %d, entries %d; want 2 and %d", e.Attempts, h.deadCount(t), n-1)
	}
	waitFor(t, "d1 archived again", func() bool { return h.archived(t) == n-1 })
	if st := h.state(t, "d0"); st.State != callstatus.Done {
		t.Errorf("d0 status = %s", st.State)
	}
	if st := h.state(t, "d1"); st.State != callstatus.Dead || st.LastError == nil || st.LastError.Code != "VALIDATION_ERROR" {
		t.Errorf("d1 status = %s %+v", st.State, st.LastError)
	}
}

// Exhausting the retry budget with transient errors is dead too, with the last error's class.
func TestRetriesExhaustedAreDead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := startBook(t, bookOptions{maxRetry: 2})
	h.crm.set("d", &crm.Error{Class: crm.Transient, Op: "hubspot: update call", Status: 503})
	h.enqueueEvent(t, bookEvent("d"))
	waitFor(t, "archived", func() bool { return h.archived(t) == 1 })
	e, err := h.dead.Get(ctx, "r", "d")
	if err != nil {
		t.Fatal(err)
	}
	if e.Attempts != 3 || e.Error.Class != "transient" || e.Error.Status != 503 {
		t.Errorf("entry = %+v, want 3 transient attempts", e)
	}
	st := h.waitState(t, "d", callstatus.Dead)
	if st.Attempts != 3 || st.NextAttemptAt != nil {
		t.Errorf("status attempts %d next %v", st.Attempts, st.NextAttemptAt)
	}
}

// A call waiting on a broken connection is parked, not dead, and is delivered once the
// connection works again.
func TestParkedOnABrokenConnectionIsNotDead(t *testing.T) {
	t.Parallel()
	h := startBook(t, bookOptions{maxRetry: 0})
	broken := &crm.Error{Class: crm.Broken, Op: "hubspot: token", Code: "invalid_grant", Msg: "refresh token revoked", After: 20 * time.Millisecond}
	h.crm.set("d", broken)
	h.enqueueEvent(t, bookEvent("d"))
	st := h.waitState(t, "d", callstatus.Parked)
	if st.NextAttemptAt == nil || st.LastError == nil || st.LastError.Class != "broken" || st.LastError.Code != "invalid_grant" {
		t.Errorf("parked status = %+v / %+v", st, st.LastError)
	}
	// Parked through many attempts: with max_retry 0 a single counted failure would be dead.
	waitFor(t, "several parked attempts", func() bool { return h.state(t, "d").Attempts >= 3 })
	if n := h.deadCount(t); n != 0 || h.archived(t) != 0 {
		t.Fatalf("a parked call is in the dead letter (%d) or archived (%d)", n, h.archived(t))
	}
	h.crm.set("d", nil) // reconnected
	st = h.waitState(t, "d", callstatus.Done)
	if st.CRM == nil || st.CRM.ID != "crm-d" {
		t.Errorf("after reconnecting: %+v", st.CRM)
	}
}

// The status of a retrying call says when asynq runs it next, to the second.
func TestRetryingCallShowsItsNextAttempt(t *testing.T) {
	t.Parallel()
	h := startBook(t, bookOptions{maxRetry: 5, retryBase: time.Hour})
	h.crm.set("d", &crm.Error{Class: crm.Transient, Op: "hubspot: update call", Status: 502})
	h.enqueueEvent(t, bookEvent("d"))
	st := h.waitState(t, "d", callstatus.Retry)
	var info *asynq.TaskInfo
	waitFor(t, "task in retry", func() bool {
		info, _ = h.inspector.GetTaskInfo(h.queue.Name, "key-d")
		return info != nil && info.State == asynq.TaskStateRetry
	})
	if st.NextAttemptAt == nil {
		t.Fatal("no next attempt")
	}
	if d := st.NextAttemptAt.Sub(info.NextProcessAt); d < -time.Second || d > time.Second {
		t.Errorf("status says next attempt %v, asynq %v", st.NextAttemptAt, info.NextProcessAt)
	}
	if until := time.Until(*st.NextAttemptAt); until < 50*time.Minute {
		t.Errorf("next attempt in %v, want the hour of retry_base", until)
	}
	if st.Attempts != 1 || st.LastError.Status != 502 {
		t.Errorf("status = %+v", st)
	}
}

// A delivered call says where it was written; a skipped one why nothing was.
func TestWrittenAndSkippedCalls(t *testing.T) {
	t.Parallel()
	h := startBook(t, bookOptions{maxRetry: 1})
	h.enqueueEvent(t, bookEvent("d"))
	skip := bookEvent("internal")
	skip.Detail.CallType = "EXTENSION"
	h.enqueueEvent(t, skip)
	st := h.waitState(t, "d", callstatus.Done)
	want := &callstatus.CRMRecord{Connection: "hubspot", Object: "calls", ID: "crm-d", URL: "https://crm.example/r/crm-d",
		Created: true, DeliveredAt: st.CRM.DeliveredAt, MappingVersion: "v-test"}
	if *st.CRM != *want {
		t.Errorf("crm = %+v, want %+v", st.CRM, want)
	}
	if st.Contact.Match != callstatus.Found || st.Owner.Match != callstatus.None || st.Rep != "sato@example.co.jp" {
		t.Errorf("contact %+v owner %+v rep %q", st.Contact, st.Owner, st.Rep)
	}
	if len(st.Events) != 1 || st.Events[0].DedupeKey != "key-d" || st.Events[0].State != callstatus.Done {
		t.Errorf("events = %+v", st.Events)
	}
	sk := h.waitState(t, "internal", callstatus.Skipped)
	if sk.SkipReason != "internal call" || sk.CRM != nil {
		t.Errorf("skipped = %+v", sk)
	}
}

// A later event of a dead call, delivered with the call's stored state, resolves the entry:
// the state carried the dead event's fields into the CRM.
func TestLaterEventResolvesTheDeadOne(t *testing.T) {
	t.Parallel()
	h := startBook(t, bookOptions{maxRetry: 0})
	h.crm.set("d", errValidation)
	h.enqueueEvent(t, bookEvent("d"))
	waitFor(t, "dead", func() bool { return h.deadCount(t) == 1 })
	h.crm.set("d", nil)
	minutes := bookEvent("d")
	minutes.Kind, minutes.DedupeKey = miitel.KindMinutes, "key-d-minutes"
	h.enqueueEvent(t, minutes)
	waitFor(t, "resolved", func() bool { return h.deadCount(t) == 0 })
	st := h.waitState(t, "d", callstatus.Done)
	if len(st.Events) != 2 {
		t.Errorf("events = %+v, want the dead analysis and the delivered minutes", st.Events)
	}
}

// flakyDeadLetter fails its first Record, as a Redis blip would.
type flakyDeadLetter struct {
	*deadletter.Store
	failed atomic.Bool
}

func (f *flakyDeadLetter) Record(ctx context.Context, d deadletter.Death) error {
	if f.failed.CompareAndSwap(false, true) {
		return errors.New("redis: connection reset")
	}
	return f.Store.Record(ctx, d)
}

// A call is never archived without its dead-letter entry: when the entry cannot be written,
// the task is retried instead, and archived once it is.
func TestNotArchivedWithoutItsEntry(t *testing.T) {
	t.Parallel()
	var flaky *flakyDeadLetter
	h := startBook(t, bookOptions{maxRetry: 3, dead: func(s *deadletter.Store) DeadLetter {
		flaky = &flakyDeadLetter{Store: s}
		return flaky
	}})
	h.crm.set("d", errValidation)
	h.enqueueEvent(t, bookEvent("d"))
	waitFor(t, "archived", func() bool { return h.archived(t) == 1 })
	if !flaky.failed.Load() || h.deadCount(t) != 1 {
		t.Errorf("entries = %d (first record failed: %v): the archived call must have its entry", h.deadCount(t), flaky.failed.Load())
	}
	e, _ := h.dead.Get(context.Background(), "r", "d")
	if e.Attempts != 2 {
		t.Errorf("attempts = %d, want 2 (the retry after the failed record)", e.Attempts)
	}
}

// panicking makes the processor panic: asynq recovers and fails the task without handle's
// bookkeeping, which onError then does.
type panicking struct{}

func (panicking) Process(context.Context, *miitel.Event) error { panic("bug") }

func TestFailuresAsynqRaisesAreRecorded(t *testing.T) {
	t.Parallel()
	h := startBook(t, bookOptions{maxRetry: 1, proc: func(Processor) Processor { return panicking{} }})
	h.enqueueEvent(t, bookEvent("d"))
	waitFor(t, "archived", func() bool { return h.archived(t) == 1 })
	waitFor(t, "entry", func() bool { return h.deadCount(t) == 1 })
	st := h.waitState(t, "d", callstatus.Dead)
	if st.LastError == nil || st.LastError.Class != "transient" {
		t.Errorf("status = %+v", st.LastError)
	}
}
