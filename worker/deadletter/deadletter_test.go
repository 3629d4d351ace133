package deadletter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/examples"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	s   *Store
	rdb redis.UniversalClient
	clk *clock
	reg *prometheus.Registry
}

func newFixture(t *testing.T, rdb redis.UniversalClient, cfg config.DeadLetter) *fixture {
	t.Helper()
	if rdb == nil {
		rdb = redistest.Start(t).Client()
	}
	clk := &clock{t: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)}
	reg := prometheus.NewRegistry()
	if cfg == (config.DeadLetter{}) {
		cfg = config.Default().DeadLetter
	}
	s, err := New(rdb, Options{Queue: "miitel", Config: cfg, Now: clk.now, Registerer: reg,
		Routes: []config.Route{{Name: "sales", Connection: "hubspot"}, {Name: "support", Connection: "salesforce"}}})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{s: s, rdb: rdb, clk: clk, reg: reg}
}

// events parses one of MiiTel's samples as the receiver does (dedupe keys included).
func events(t *testing.T, route, payload string) []*miitel.Event {
	t.Helper()
	b, err := examples.Payload(payload)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := receiver.ParseEvents(route, b, []string{"params_key"}, time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// synthetic is a small event of its own call, for tests that need many distinct calls.
func synthetic(route string, i int) *miitel.Event {
	return &miitel.Event{Route: route, CallID: fmt.Sprintf("call-%d", i), Kind: miitel.KindAnalysis,
		DedupeKey: fmt.Sprintf("key-%d", i), ReceivedAt: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC),
		Detail: miitel.Detail{ID: fmt.Sprintf("detail-%d", i), CallType: "OUTGOING_CALL"}}
}

func death(ev *miitel.Event, msg string) Death {
	return Death{Event: ev, TaskID: ev.DedupeKey, Attempts: 1, MappingVersion: "v1",
		Error: Error{Class: "permanent", Code: "VALIDATION_ERROR", Status: 400, Message: msg}}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not exported", name)
	return 0
}

// An entry keeps everything an operator needs, and the event it can be replayed from.
func TestRecordKeepsEveryField(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, nil, config.DeadLetter{})
	ev := events(t, "sales", "call_analysis_completed/sample1.json")[0]
	d := death(ev, "hubspot: update call: HTTP 400 VALIDATION_ERROR: Property values were not valid: hs_call_to_number '090-1234-5678'")
	d.Attempts = 3
	if err := f.s.Record(ctx, d); err != nil {
		t.Fatal(err)
	}
	e, err := f.s.Get(ctx, "sales", ev.Detail.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := Entry{
		Route: "sales", DetailID: ev.Detail.ID, CallID: ev.CallID, Kind: ev.Kind, TaskID: ev.DedupeKey,
		Connection: "hubspot", Rep: "test@example.com", CallAt: e.CallAt,
		Error: Error{Class: "permanent", Code: "VALIDATION_ERROR", Status: 400,
			Message: "hubspot: update call: HTTP 400 VALIDATION_ERROR: Property values were not valid: hs_call_to_number '090-****-5678'"},
		Attempts: 3, Deaths: 1, FirstDeadAt: f.clk.now(), DeadAt: f.clk.now(), MappingVersion: "v1", Bytes: e.Bytes,
	}
	if diff := cmp.Diff(want, *e); diff != "" {
		t.Errorf("entry (-want +got):\n%s", diff)
	}
	if e.CallAt.IsZero() || e.Bytes < 100 {
		t.Errorf("call_at %v, bytes %d: want the call's start and the stored size", e.CallAt, e.Bytes)
	}
	back, err := f.s.Event(ctx, "sales", ev.Detail.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ev, back, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("stored event (-want +got):\n%s", diff)
	}
	if got := gauge(t, f.reg, "mcs_deadletter_entries"); got != 1 {
		t.Errorf("mcs_deadletter_entries = %v, want 1", got)
	}
	if got, _ := f.s.Bytes(ctx); got != int64(e.Bytes) || gauge(t, f.reg, "mcs_deadletter_bytes") != float64(e.Bytes) {
		t.Errorf("bytes = %d, want the entry's %d", got, e.Bytes)
	}
	t.Logf("sample1 entry: %d bytes counted, MEMORY USAGE %d", e.Bytes, f.rdb.MemoryUsage(ctx, f.s.entryKey(member("sales", ev.Detail.ID))).Val())
}

// One entry per call detail: dying again updates it.
func TestDyingAgainUpdatesTheOneEntry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, nil, config.DeadLetter{})
	ev := synthetic("sales", 1)
	first := f.clk.now()
	if err := f.s.Record(ctx, death(ev, "first")); err != nil {
		t.Fatal(err)
	}
	f.clk.add(time.Hour)
	later := *ev
	later.Kind, later.DedupeKey = miitel.KindMinutes, "key-minutes"
	d := death(&later, "second")
	d.Attempts = 26
	d.Error.Class = "transient"
	if err := f.s.Record(ctx, d); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.s.Count(ctx); n != 1 {
		t.Fatalf("count = %d, want 1 entry per detail", n)
	}
	e, _ := f.s.Get(ctx, "sales", ev.Detail.ID)
	if e.Deaths != 2 || e.Attempts != 27 || !e.FirstDeadAt.Equal(first) || !e.DeadAt.Equal(f.clk.now()) ||
		e.Error.Message != "second" || e.Error.Class != "transient" || e.TaskID != "key-minutes" || e.Kind != miitel.KindMinutes {
		t.Errorf("entry after the second death = %+v", e)
	}
	if got, _ := f.s.Bytes(ctx); got != int64(e.Bytes) {
		t.Errorf("bytes = %d after an update, want the entry's %d (no double count)", got, e.Bytes)
	}
	// The counter counts deaths (each one went dead), the entries count details.
	if n := testutil.ToFloat64(f.s.recorded.WithLabelValues(e.Connection, "permanent")) + testutil.ToFloat64(f.s.recorded.WithLabelValues(e.Connection, "transient")); n != 2 {
		t.Errorf("mcs_deadletter_recorded_total = %v, want 2 deaths", n)
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, nil, config.DeadLetter{})
	ev := synthetic("sales", 1)
	if err := f.s.Record(ctx, death(ev, "x")); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.s.Resolve(ctx, "sales", ev.Detail.ID, "another-event", false); ok || err != nil {
		t.Errorf("resolve by another event = %v, %v; want kept (that event does not carry this one)", ok, err)
	}
	if ok, err := f.s.Resolve(ctx, "support", ev.Detail.ID, ev.DedupeKey, false); ok || err != nil {
		t.Errorf("resolve on another route = %v, %v; want kept", ok, err)
	}
	if ok, err := f.s.Resolve(ctx, "sales", ev.Detail.ID, ev.DedupeKey, false); !ok || err != nil {
		t.Errorf("resolve by the dead event = %v, %v; want removed", ok, err)
	}
	if err := f.s.Record(ctx, death(ev, "x")); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.s.Resolve(ctx, "sales", ev.Detail.ID, "later-event", true); !ok {
		t.Error("resolve by a later event delivered with the call's state: want removed")
	}
	if n, _ := f.s.Count(ctx); n != 0 {
		t.Errorf("count = %d", n)
	}
	if b, _ := f.s.Bytes(ctx); b != 0 {
		t.Errorf("bytes = %d after every entry was resolved", b)
	}
	if es, _ := f.s.Find(ctx, ev.CallID); len(es) != 0 {
		t.Errorf("find by call id after resolve = %v", es)
	}
	if keys := f.rdb.Keys(ctx, "mcs:{miitel}:dl:*").Val(); len(keys) != 1 || keys[0] != f.s.bytesKey() {
		t.Errorf("keys left after resolving everything: %v (want only the size counter)", keys)
	}
	if _, err := f.s.Get(ctx, "sales", ev.Detail.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("get after resolve: %v", err)
	}
}

func trimmed(f *fixture, reason string) float64 {
	return testutil.ToFloat64(f.s.trimmed.WithLabelValues(reason))
}

func TestTrimByEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, nil, config.DeadLetter{Retention: 24 * time.Hour, MaxEntries: 3, MaxBytes: 1 << 30})
	for i := range 5 {
		f.clk.add(time.Second)
		if err := f.s.Record(ctx, death(synthetic("sales", i), "x")); err != nil {
			t.Fatal(err)
		}
	}
	es, _ := f.s.List(ctx, Selector{})
	var got []string
	for _, e := range es {
		got = append(got, e.DetailID)
	}
	if diff := cmp.Diff([]string{"detail-4", "detail-3", "detail-2"}, got); diff != "" {
		t.Errorf("kept (-want +got), the oldest must go:\n%s", diff)
	}
	if v := trimmed(f, "entries"); v != 2 {
		t.Errorf("trimmed{entries} = %v, want 2", v)
	}
}

func TestTrimByBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	probe := newFixture(t, nil, config.DeadLetter{})
	if err := probe.s.Record(ctx, death(synthetic("sales", 0), "x")); err != nil {
		t.Fatal(err)
	}
	one, _ := probe.s.Bytes(ctx)
	f := newFixture(t, nil, config.DeadLetter{Retention: 24 * time.Hour, MaxEntries: 100, MaxBytes: one*5/2 + 1})
	for i := range 4 {
		f.clk.add(time.Second)
		if err := f.s.Record(ctx, death(synthetic("sales", i), "x")); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := f.s.Count(ctx); n != 2 {
		t.Errorf("count = %d, want the 2 entries that fit %d bytes", n, one*5/2+1)
	}
	if b, _ := f.s.Bytes(ctx); b > one*5/2+1 {
		t.Errorf("bytes = %d over the cap", b)
	}
	if v := trimmed(f, "bytes"); v != 2 {
		t.Errorf("trimmed{bytes} = %v, want 2", v)
	}
	if _, err := f.s.Get(ctx, "sales", "detail-3"); err != nil {
		t.Errorf("the newest entry must stay: %v", err)
	}
}

func TestTrimByAge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, nil, config.DeadLetter{Retention: 24 * time.Hour, MaxEntries: 100, MaxBytes: 1 << 30})
	if err := f.s.Record(ctx, death(synthetic("sales", 1), "old")); err != nil {
		t.Fatal(err)
	}
	f.clk.add(23 * time.Hour)
	if err := f.s.Record(ctx, death(synthetic("sales", 2), "young")); err != nil {
		t.Fatal(err)
	}
	f.clk.add(2 * time.Hour) // the first is 25h old, the second 2h
	if err := f.s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.s.Count(ctx); n != 1 {
		t.Errorf("count = %d after the sweep, want 1", n)
	}
	if _, err := f.s.Get(ctx, "sales", "detail-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the entry older than the retention: %v, want gone", err)
	}
	if v := trimmed(f, "age"); v != 1 {
		t.Errorf("trimmed{age} = %v, want 1", v)
	}
	if v := trimmed(f, "entries") + trimmed(f, "bytes"); v != 0 {
		t.Errorf("other trims = %v", v)
	}
}

// Run sweeps at once and then on every tick, and stops with its context.
func TestRunSweepsUntilCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	f := newFixture(t, nil, config.DeadLetter{Retention: time.Hour, MaxEntries: 10, MaxBytes: 1 << 20})
	if err := f.s.Record(ctx, death(synthetic("sales", 1), "x")); err != nil {
		t.Fatal(err)
	}
	f.clk.add(2 * time.Hour)
	done := make(chan error, 1)
	go func() { done <- f.s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := f.s.Count(ctx); n != 0; n, _ = f.s.Count(ctx) {
		if time.Now().After(deadline) {
			t.Fatal("Run did not sweep")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

func TestSelectors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, nil, config.DeadLetter{})
	type spec struct {
		route, class, code, msg string
	}
	specs := []spec{
		{"sales", "permanent", "VALIDATION_ERROR", "Property hs_foo does not exist"},
		{"sales", "transient", "", "hubspot: HTTP 503: upstream unavailable (retries exhausted)"},
		{"support", "permanent", "INVALID_FIELD", "No such column 'Foo__c' on entity 'Task'"},
		{"support", "permanent", "MAPPING", "mappers: render fields[2].value: division by zero"},
	}
	start := f.clk.now()
	for i, sp := range specs {
		f.clk.add(time.Hour)
		ev := synthetic(sp.route, i)
		d := death(ev, sp.msg)
		d.Error.Class, d.Error.Code = sp.class, sp.code
		if err := f.s.Record(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		q    Query
		want []string
	}{
		{"all, newest first", Query{}, []string{"detail-3", "detail-2", "detail-1", "detail-0"}},
		{"call id", Query{CallIDs: []string{"call-2"}}, []string{"detail-2"}},
		{"detail ids", Query{DetailIDs: []string{"detail-0", "detail-3", "missing"}}, []string{"detail-3", "detail-0"}},
		{"route", Query{Route: "sales"}, []string{"detail-1", "detail-0"}},
		{"connection", Query{Connection: "salesforce"}, []string{"detail-3", "detail-2"}},
		{"class", Query{ErrorClass: "Transient"}, []string{"detail-1"}},
		{"code", Query{ErrorCode: "invalid_field"}, []string{"detail-2"}},
		{"text", Query{Text: "DIVISION"}, []string{"detail-3"}},
		{"since", Query{Since: start.Add(150 * time.Minute).Format(time.RFC3339)}, []string{"detail-3", "detail-2"}},
		{"until", Query{Until: start.Add(150 * time.Minute).Format(time.RFC3339)}, []string{"detail-1", "detail-0"}},
		{"and", Query{Route: "support", ErrorCode: "MAPPING"}, []string{"detail-3"}},
		{"limit", Query{Limit: 1}, []string{"detail-3"}},
		{"nothing", Query{Route: "sales", ErrorCode: "MAPPING"}, nil},
	}
	for _, tt := range tests {
		sel, err := tt.q.Selector(f.clk.now(), time.UTC)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		es, err := f.s.List(ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range es {
			got = append(got, e.DetailID)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
	if _, err := (Query{ErrorClass: "fatal"}).Selector(f.clk.now(), time.UTC); err == nil || !strings.Contains(err.Error(), "error_class") {
		t.Errorf("unknown class: %v", err)
	}
	if (Selector{Limit: 5}).Narrowed() || !(Selector{Route: "sales"}).Narrowed() {
		t.Error("Narrowed: a limit alone narrows nothing")
	}
}

// Every key of the dead letter shares the queue's hash tag, so its scripts run on Redis
// Cluster (which refuses a script whose keys span slots).
func TestWorksOnRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 6 redis-server processes; skipped with -short")
	}
	t.Parallel()
	ctx := context.Background()
	cs := redistest.StartCluster(t, 3, 1)
	f := newFixture(t, cs.Client(), config.DeadLetter{Retention: 24 * time.Hour, MaxEntries: 2, MaxBytes: 1 << 30})
	for i := range 3 {
		f.clk.add(time.Second)
		if err := f.s.Record(ctx, death(synthetic("sales", i), "x")); err != nil {
			t.Fatal(err)
		}
	}
	if es, err := f.s.Find(ctx, "call-2"); err != nil || len(es) != 1 {
		t.Fatalf("find on cluster = %v, %v", es, err)
	}
	if ok, err := f.s.Resolve(ctx, "sales", "detail-2", "key-2", false); !ok || err != nil {
		t.Fatalf("resolve on cluster = %v, %v", ok, err)
	}
	if n, _ := f.s.Count(ctx); n != 1 || trimmed(f, "entries") != 1 {
		t.Errorf("count = %d, trimmed = %v", n, trimmed(f, "entries"))
	}
	if err := f.s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
}
