package replay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/callstatus"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// fakeCRM fails per detail id (the record's external id) and counts deliveries.
type fakeCRM struct {
	mu        sync.Mutex
	fail      map[string]error
	delivered map[string]int
}

func (c *fakeCRM) set(detail string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail[detail] = err
}

func (c *fakeCRM) heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.fail)
}

func (c *fakeCRM) counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.delivered {
		out[k] = v
	}
	return out
}

func (c *fakeCRM) total() int {
	n := 0
	for _, v := range c.counts() {
		n += v
	}
	return n
}

func (c *fakeCRM) Deliver(_ context.Context, rec *mappers.Record) (crm.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.fail[rec.ExternalID.Value]; err != nil {
		return crm.Result{}, err
	}
	c.delivered[rec.ExternalID.Value]++
	return crm.Result{ID: "crm-" + rec.ExternalID.Value}, nil
}

// mapping renders a record keyed by the detail id; version tells mapping versions apart.
type mapping struct {
	version string
	fail    bool
}

func (m mapping) Version() string { return m.version }
func (m mapping) Render(ev *miitel.Event) (*mappers.Record, *mappers.Skip, error) {
	if m.fail {
		return nil, nil, errors.New("mappers: render fields[1].value (m.yaml:9:12): cannot fetch name from nil")
	}
	if ev.Detail.CallType == "EXTENSION" {
		return nil, &mappers.Skip{Reason: "internal call"}, nil
	}
	transcript := ""
	if ev.Detail.SpeechRecognition != nil {
		transcript = ev.Detail.SpeechRecognition.Raw
	}
	to := ""
	if ev.Detail.ToNumber != nil {
		to = *ev.Detail.ToNumber
	}
	return &mappers.Record{Object: "calls", ExternalID: mappers.ExternalID{Value: ev.Detail.ID}, MappingVersion: m.version,
		Contact: &mappers.ContactLookup{E164: "+819012345678"},
		Fields: []mappers.Field{
			{Name: "title", Value: "Outbound call"},
			{Name: "body", Value: "<p>" + transcript + "</p>", KeepLonger: true},
			{Name: "to_number", Value: to},
			{Name: "duration", Value: int64(53000)},
		}}, nil, nil
}

type rig struct {
	srv       *redistest.Server
	rdb       redis.UniversalClient
	crm       *fakeCRM
	dead      *deadletter.Store
	status    *callstatus.Store
	replayer  *Replayer
	client    *asynq.Client
	inspector *asynq.Inspector
	queue     config.Queue
	mu        sync.Mutex
	mappings  map[string]Renderer
}

var routes = []config.Route{{Name: "r", Connection: "hubspot"}, {Name: "s", Connection: "salesforce"}}

func newRig(t *testing.T) *rig {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client()
	cfg := config.Default()
	cfg.Queue.MaxRetry = 1
	cfg.Worker.RetryBase, cfg.Worker.RetryMax = time.Millisecond, 5*time.Millisecond
	cfg.Worker.PollInterval = 20 * time.Millisecond
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dl, err := deadletter.New(rdb, deadletter.Options{Queue: cfg.Queue.Name, Config: cfg.DeadLetter, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	st, err := callstatus.New(rdb, callstatus.Options{Queue: cfg.Queue.Name, Config: cfg.Status, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{srv: srv, rdb: rdb, crm: &fakeCRM{fail: map[string]error{}, delivered: map[string]int{}}, dead: dl, status: st,
		client: asynq.NewClientFromRedisClient(rdb), inspector: asynq.NewInspectorFromRedisClient(rdb), queue: cfg.Queue,
		mappings: map[string]Renderer{"r": mapping{version: "v1"}, "s": mapping{version: "v1"}}}
	wroutes := map[string]worker.Route{}
	for _, name := range []string{"r", "s"} {
		wroutes[name] = worker.Route{Mapping: func() worker.Renderer { return r.mapping(name) }, Connector: r.crm}
	}
	proc := worker.NewPipeline(worker.PipelineOptions{Redis: rdb, Routes: wroutes, StateTTL: time.Hour, WrittenTTL: time.Hour, Logger: log})
	w, err := worker.New(worker.Options{Redis: rdb, Queue: cfg.Queue, Worker: cfg.Worker, Processor: proc, Logger: log,
		Registerer: prometheus.NewRegistry(), DeadLetter: dl, Status: st})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	r.replayer, err = New(Options{Redis: rdb, Queue: cfg.Queue, DeadLetter: dl, Status: st,
		Mapping: func(route string) (Renderer, bool) {
			m := r.mapping(route)
			return m, m != nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) mapping(route string) Renderer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mappings[route]
}

func (r *rig) setMapping(route string, m Renderer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mappings[route] = m
}

func event(route, detail string) *miitel.Event {
	at, to := "2026-04-01T09:00:00+09:00", "090-1234-5678"
	return &miitel.Event{Route: route, CallID: "call-" + detail, Kind: miitel.KindAnalysis, DedupeKey: "key-" + route + "-" + detail,
		ReceivedAt: time.Now(), Detail: miitel.Detail{ID: detail, CallType: "OUTGOING_CALL", DialStartsAt: &at, DialAnsweredAt: &at,
			ToNumber: &to, SpeechRecognition: &miitel.SpeechRecognition{Raw: "お世話になっております。" + strings.Repeat("はい。", 40)}}}
}

func (r *rig) enqueue(t *testing.T, ev *miitel.Event) {
	t.Helper()
	res, err := r.replayer.q.enqueue(context.Background(), ev, true)
	if err != nil || res != resultQueued {
		t.Fatalf("enqueue %s: %s, %v", ev.Detail.ID, res, err)
	}
}

// kill makes each call die: the CRM refuses it, the worker dead-letters it.
func (r *rig) kill(t *testing.T, evs []*miitel.Event, errs []error) {
	t.Helper()
	before, archived := r.count(t), r.archived()
	for i, ev := range evs {
		r.crm.set(ev.Detail.ID, errs[i])
		r.enqueue(t, ev)
	}
	// The dead letter is written before asynq archives: wait for both.
	waitFor(t, "calls dead", func() bool { return r.count(t) == before+len(evs) && r.archived() == archived+len(evs) })
}

func (r *rig) archived() int {
	qi, err := r.inspector.GetQueueInfo(r.queue.Name)
	if err != nil {
		return 0
	}
	return qi.Archived
}

func (r *rig) count(t *testing.T) int {
	t.Helper()
	n, err := r.dead.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sel(t *testing.T, q deadletter.Query) deadletter.Selector {
	t.Helper()
	s, err := q.Selector(time.Now(), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func itemIDs(items []Item) []string {
	var out []string
	for _, it := range items {
		out = append(out, it.Route+"/"+it.DetailID)
	}
	sort.Strings(out)
	return out
}

var (
	errValidation = &crm.Error{Class: crm.Permanent, Op: "hubspot: update call", Status: 400, Code: "VALIDATION_ERROR", Msg: "Property hs_foo does not exist"}
	errField      = &crm.Error{Class: crm.Permanent, Op: "salesforce: upsert Task", Status: 400, Code: "INVALID_FIELD", Msg: "No such column 'Foo__c'"}
	errDown       = &crm.Error{Class: crm.Transient, Op: "hubspot: update call", Status: 503, Msg: "upstream connect error"}
)

// Each selector replays exactly the calls it selects: they reach the CRM once, the others
// stay dead.
func TestReplayBySelector(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t)
	r.kill(t, []*miitel.Event{event("r", "a"), event("r", "b"), event("s", "c"), event("s", "d")},
		[]error{errValidation, errDown, errField, errField})
	mid := time.Now()
	r.kill(t, []*miitel.Event{event("r", "e"), event("s", "f"), event("r", "g"), event("r", "h")},
		[]error{errValidation, errValidation, errValidation, errValidation})
	r.crm.heal() // the admin fixed the cause
	steps := []struct {
		name string
		q    deadletter.Query
		want []string
	}{
		{"call id", deadletter.Query{CallIDs: []string{"call-a"}}, []string{"r/a"}},
		{"detail id", deadletter.Query{DetailIDs: []string{"b"}}, []string{"r/b"}},
		{"error code", deadletter.Query{ErrorCode: "invalid_field", Until: mid.Format(time.RFC3339Nano)}, []string{"s/c", "s/d"}},
		{"since, route", deadletter.Query{Since: mid.Format(time.RFC3339Nano), Route: "s"}, []string{"s/f"}},
		{"text", deadletter.Query{Text: "HS_FOO", DetailIDs: []string{"e"}}, []string{"r/e"}},
		{"connection and class", deadletter.Query{Connection: "hubspot", ErrorClass: "permanent"}, []string{"r/g", "r/h"}},
	}
	delivered := map[string]int{}
	for _, st := range steps {
		sum, err := r.replayer.Replay(ctx, sel(t, st.q), RunOptions{})
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := itemIDs(sum.Items); !slices.Equal(got, st.want) || sum.Counts.Queued != len(st.want) {
			t.Fatalf("%s: replayed %v (%+v), want %v", st.name, got, sum.Counts, st.want)
		}
		for _, id := range st.want {
			delivered[strings.Split(id, "/")[1]]++
		}
		waitFor(t, st.name+" delivered", func() bool { return r.crm.total() == len(delivered) })
		waitFor(t, st.name+" resolved", func() bool { return r.count(t) == 8-len(delivered) })
		for d, n := range r.crm.counts() {
			if delivered[d] != n {
				t.Fatalf("%s: %s delivered %d times, want %d", st.name, d, n, delivered[d])
			}
		}
	}
	waitFor(t, "every entry resolved", func() bool { return r.count(t) == 0 })
}

// Replaying twice writes nothing twice: while the first replay is queued a second conflicts,
// and once it is delivered its entry is resolved and a third selects nothing.
func TestReplayIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t)
	r.kill(t, []*miitel.Event{event("r", "a")}, []error{errValidation})
	r.crm.heal()
	if err := r.inspector.PauseQueue(r.queue.Name); err != nil {
		t.Fatal(err)
	}
	s := sel(t, deadletter.Query{CallIDs: []string{"call-a"}})
	first, err := r.replayer.Replay(ctx, s, RunOptions{})
	if err != nil || first.Counts.Queued != 1 {
		t.Fatalf("first replay: %+v, %v", first.Counts, err)
	}
	second, err := r.replayer.Replay(ctx, s, RunOptions{})
	if err != nil || second.Counts.AlreadyQueued != 1 || second.Counts.Queued != 0 {
		t.Fatalf("second replay while queued: %+v, %v", second.Counts, err)
	}
	if err := r.inspector.UnpauseQueue(r.queue.Name); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "resolved", func() bool { return r.count(t) == 0 })
	third, err := r.replayer.Replay(ctx, s, RunOptions{})
	if err != nil || third.Selected != 0 {
		t.Fatalf("third replay after delivery: %+v, %v", third, err)
	}
	if n := r.crm.counts()["a"]; n != 1 {
		t.Errorf("delivered %d times, want once", n)
	}
	if st, _ := r.status.Get(ctx, "a"); st[0].State != callstatus.Done {
		t.Errorf("status = %s", st[0].State)
	}
}

// A dry run renders with the current mapping and writes nothing: no task in Redis, nothing at
// the CRM, the dead letter unchanged.
func TestDryRunWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t)
	skip := event("r", "internal")
	skip.Detail.CallType = "EXTENSION"
	r.kill(t, []*miitel.Event{event("r", "a"), event("s", "b")}, []error{errValidation, errField})
	// The skipped call dies in its own way: a mapping error, then the mapping is fixed.
	r.setMapping("r", mapping{version: "v1", fail: true})
	r.enqueue(t, skip)
	waitFor(t, "internal dead", func() bool { return r.count(t) == 3 && r.archived() == 3 })
	r.crm.heal()
	r.setMapping("r", mapping{version: "v2"})
	r.setMapping("s", mapping{version: "v2", fail: true})
	if e, _ := r.dead.Get(ctx, "r", "internal"); e.Error.Code != "MAPPING" {
		t.Errorf("a mapping failure's code = %q, want MAPPING", e.Error.Code)
	}
	keysBefore := r.rdb.Keys(ctx, "asynq:*").Val()
	sort.Strings(keysBefore)
	qBefore, _ := r.inspector.GetQueueInfo(r.queue.Name)

	var progress []int
	sum, err := r.replayer.Replay(ctx, deadletter.Selector{}, RunOptions{DryRun: true, All: true, Progress: func(p Progress) {
		progress = append(progress, p.Done)
		if p.Total != 3 {
			t.Errorf("progress total %d", p.Total)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(progress, []int{1, 2, 3}) {
		t.Errorf("progress = %v", progress)
	}
	if sum.Counts.WouldSend != 1 || sum.Counts.WouldSkip != 1 || sum.Counts.RenderFails != 1 || sum.Counts.Queued != 0 {
		t.Errorf("counts = %+v", sum.Counts)
	}
	for _, it := range sum.Items {
		switch it.DetailID {
		case "a":
			p := it.Preview
			if it.Outcome != WouldSend || p == nil || p.MappingVersion != "v2" {
				t.Fatalf("a: %+v", it)
			}
			fields := map[string]PreviewField{}
			for _, f := range p.Fields {
				fields[f.Name] = f
			}
			if fields["body"].Value != nil || fields["body"].Chars < 100 {
				t.Errorf("the body (transcript) must show as its length only: %+v", fields["body"])
			}
			if fields["to_number"].Value != "090-****-5678" || p.ContactNumber != "+819*****5678" {
				t.Errorf("numbers not masked: %+v, %q", fields["to_number"], p.ContactNumber)
			}
			if fields["title"].Value != "Outbound call" || fields["duration"].Value != int64(53000) {
				t.Errorf("plain fields: %+v", p.Fields)
			}
		case "internal":
			if it.Outcome != WouldSkip || it.Preview.Skip != "internal call" {
				t.Errorf("internal: %+v", it)
			}
		case "b":
			if it.Outcome != RenderFails || !strings.Contains(it.Error, "cannot fetch name") {
				t.Errorf("b: %+v", it)
			}
		}
	}
	keysAfter := r.rdb.Keys(ctx, "asynq:*").Val()
	sort.Strings(keysAfter)
	qAfter, _ := r.inspector.GetQueueInfo(r.queue.Name)
	if !slices.Equal(keysBefore, keysAfter) || qAfter.Pending != 0 || qAfter.Archived != qBefore.Archived {
		t.Errorf("a dry run changed the queue: keys %v -> %v, pending %d", keysBefore, keysAfter, qAfter.Pending)
	}
	if r.crm.total() != 0 || r.count(t) != 3 {
		t.Errorf("a dry run delivered %d or resolved entries (%d left)", r.crm.total(), r.count(t))
	}
}

// A call asynq's archive has dropped (beyond 10,000 or 90 days) is still replayable from the
// dead letter.
func TestReplayAfterAsynqDroppedTheTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t)
	r.kill(t, []*miitel.Event{event("r", "old")}, []error{errValidation})
	if n, err := r.inspector.DeleteAllArchivedTasks(r.queue.Name); err != nil || n != 1 {
		t.Fatalf("drop the archive: %d, %v", n, err)
	}
	r.crm.heal()
	sum, err := r.replayer.Replay(ctx, sel(t, deadletter.Query{DetailIDs: []string{"old"}}), RunOptions{})
	if err != nil || sum.Counts.Queued != 1 {
		t.Fatalf("replay: %+v, %v", sum.Counts, err)
	}
	waitFor(t, "delivered", func() bool { return r.crm.counts()["old"] == 1 })
	waitFor(t, "resolved", func() bool { return r.count(t) == 0 })
}

func TestReplayRefusesTheWholeDeadLetterUnconfirmed(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	if _, err := r.replayer.Replay(context.Background(), deadletter.Selector{Limit: 10}, RunOptions{}); !errors.Is(err, ErrUnnarrowed) {
		t.Errorf("err = %v, want ErrUnnarrowed", err)
	}
}

// A call that cannot be replayed (here its stored event is damaged) is reported on its item;
// the run goes on and the entry stays in the dead letter.
func TestReplayReportsAFailedCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t)
	r.kill(t, []*miitel.Event{event("r", "a"), event("r", "b")}, []error{errValidation, errValidation})
	r.crm.heal()
	if err := r.rdb.HSet(ctx, "mcs:{"+r.queue.Name+"}:dl:e:r:a", "event", "not deflate").Err(); err != nil {
		t.Fatal(err)
	}
	sum, err := r.replayer.Replay(ctx, sel(t, deadletter.Query{Route: "r"}), RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]Item{}
	for _, it := range sum.Items {
		byID[it.DetailID] = it
	}
	if byID["b"].Outcome != Queued || byID["a"].Outcome != Failed || !strings.Contains(byID["a"].Error, "decompress") {
		t.Errorf("items = %+v", sum.Items)
	}
	waitFor(t, "b resolved", func() bool { return r.count(t) == 1 })
	if _, err := r.dead.Get(ctx, "r", "a"); err != nil {
		t.Errorf("the failed call's entry: %v", err)
	}
}

// An entry resolved between the selection and its turn (delivered meanwhile) is reported as
// such, not as a failure.
func TestReplaySkipsWhatWasResolvedMeanwhile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t)
	r.kill(t, []*miitel.Event{event("r", "a"), event("r", "b")}, []error{errValidation, errValidation})
	r.crm.heal()
	// While the first is reported, the other is resolved by someone else.
	sum, err := r.replayer.Replay(ctx, sel(t, deadletter.Query{Route: "r"}), RunOptions{Progress: func(p Progress) {
		if p.Done == 1 {
			other := map[string]string{"a": "b", "b": "a"}[p.Last.DetailID]
			if ok, err := r.dead.Delete(ctx, "r", other); !ok || err != nil {
				t.Errorf("delete %s: %v, %v", other, ok, err)
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Counts.Queued != 1 || sum.Counts.Resolved != 1 || sum.Counts.Failed != 0 {
		t.Errorf("counts = %+v", sum.Counts)
	}
}
