package callstatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/examples"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

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

var t0 = time.Date(2026, 4, 1, 0, 30, 0, 0, time.UTC) // 09:30 in Tokyo

func newStore(t testing.TB, rdb redis.UniversalClient, mod func(*config.Status)) (*Store, *clock, redis.UniversalClient) {
	t.Helper()
	if rdb == nil {
		rdb = redistest.Start(t).Client()
	}
	cfg := config.Default().Status
	if mod != nil {
		mod(&cfg)
	}
	clk := &clock{t: t0}
	s, err := New(rdb, Options{Queue: "miitel", Config: cfg, Now: clk.now,
		Routes: []config.Route{{Name: "sales", Connection: "hubspot"}, {Name: "support", Connection: "salesforce"}},
		Connections: []config.Connection{
			{Name: "hubspot", Type: "hubspot", RecordURL: "https://app.hubspot.com/contacts/1234567/record/0-48/{id}"},
			{Name: "salesforce", Type: "salesforce"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	return s, clk, rdb
}

func parse(t *testing.T, route, payload string, at time.Time) []*miitel.Event {
	t.Helper()
	b, err := examples.Payload(payload)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := receiver.ParseEvents(route, b, []string{"params_key"}, at)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// call is a small event of its own call with a rep and a customer number.
func call(route string, i int, rep string, start time.Time) *miitel.Event {
	s := func(v string) *string { return &v }
	return &miitel.Event{Route: route, CallID: fmt.Sprintf("call-%d", i), Kind: miitel.KindAnalysis,
		DedupeKey: fmt.Sprintf("key-%d", i), ReceivedAt: start.Add(time.Minute),
		Detail: miitel.Detail{ID: fmt.Sprintf("detail-%d", i), CallType: "OUTGOING_CALL",
			DialStartsAt: s(start.Format(time.RFC3339)), DialAnsweredAt: s(start.Add(5 * time.Second).Format(time.RFC3339)),
			ToNumber: s(fmt.Sprintf("090-1234-%04d", i)), CircuitNumber: s("0312345678"),
			Participants: []miitel.Participant{{ID: "rep", FromTo: "FROM", LoginID: s(rep)}, {ID: "c", FromTo: "TO"}}}}
}

func get1(t *testing.T, s *Store, id string) Status {
	t.Helper()
	sts, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 {
		t.Fatalf("Get(%s) = %d records, want 1", id, len(sts))
	}
	return sts[0]
}

func TestReceivedThenDuplicates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, clk, _ := newStore(t, nil, nil)
	ev := parse(t, "sales", "call_analysis_completed/sample1.json", t0)[0]
	if err := s.Received(ctx, ev, false, t0); err != nil {
		t.Fatal(err)
	}
	clk.add(10 * time.Minute)
	if err := s.Received(ctx, ev, true, clk.now()); err != nil { // MiiTel's periodic re-send
		t.Fatal(err)
	}
	clk.add(10 * time.Minute)
	if err := s.Received(ctx, ev, true, clk.now()); err != nil {
		t.Fatal(err)
	}
	st := get1(t, s, ev.Detail.ID)
	last := clk.now()
	want := []Event{{Kind: ev.Kind, DedupeKey: ev.DedupeKey, ReceivedAt: t0, Duplicates: 2, LastDuplicateAt: &last, State: Pending}}
	if diff := cmp.Diff(want, st.Events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if st.State != Pending || st.CallID != ev.CallID || st.Rep != "test@example.com" || st.Route != "sales" {
		t.Errorf("status = %+v", st)
	}
	// The call id finds the same record.
	if byCall := get1(t, s, ev.CallID); byCall.DetailID != ev.Detail.ID {
		t.Errorf("by call id: %+v", byCall)
	}
}

// The worker's transitions, in the order a call goes through them.
func TestTransitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, clk, _ := newStore(t, nil, nil)
	ev := call("sales", 1, "sato@example.co.jp", t0)
	if err := s.Received(ctx, ev, false, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Started(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if st := get1(t, s, "detail-1"); st.State != Active || st.Attempts != 1 {
		t.Errorf("started: %s attempt %d", st.State, st.Attempts)
	}
	next := clk.now().Add(40 * time.Second)
	err503 := deadletter.Error{Class: "transient", Status: 503, Message: "hubspot: update call: HTTP 503 (transient) to 090-1234-0001"}
	if err := s.Failed(ctx, ev, Failure{State: Retry, NextAttempt: next, Error: err503}); err != nil {
		t.Fatal(err)
	}
	st := get1(t, s, "detail-1")
	if st.State != Retry || st.NextAttemptAt == nil || !st.NextAttemptAt.Equal(next) || st.LastError == nil ||
		st.LastError.Status != 503 || st.LastError.Message != "hubspot: update call: HTTP 503 (transient) to 090-****-0001" {
		t.Errorf("retry: %+v, error %+v", st, st.LastError)
	}
	clk.add(time.Minute)
	if err := s.Started(ctx, ev); err != nil {
		t.Fatal(err)
	}
	res := crm.Result{ID: "9001", Created: true, ContactID: "501", OwnerID: ""}
	rec := &mappers.Record{Object: "calls", MappingVersion: "abc", Contact: &mappers.ContactLookup{E164: "+819012340001"},
		Owner: &mappers.OwnerLookup{Email: "sato@example.co.jp", Field: "hubspot_owner_id"}}
	if err := s.Delivered(ctx, ev, Delivery{Record: rec, Result: res}); err != nil {
		t.Fatal(err)
	}
	st = get1(t, s, "detail-1")
	wantCRM := &CRMRecord{Connection: "hubspot", Object: "calls", ID: "9001", Created: true, DeliveredAt: clk.now(),
		URL: "https://app.hubspot.com/contacts/1234567/record/0-48/9001", MappingVersion: "abc"}
	if diff := cmp.Diff(wantCRM, st.CRM); diff != "" {
		t.Errorf("crm (-want +got):\n%s", diff)
	}
	if st.State != Done || st.Attempts != 2 || st.NextAttemptAt != nil {
		t.Errorf("done: %s attempts %d next %v", st.State, st.Attempts, st.NextAttemptAt)
	}
	if *st.Contact != (Lookup{Match: Found, ID: "501"}) || *st.Owner != (Lookup{Match: None}) {
		t.Errorf("contact %+v owner %+v", st.Contact, st.Owner)
	}
	if st.LastError == nil || st.LastError.Status != 503 {
		t.Error("the last error stays in the history after the success")
	}
	if st.Customer != "090-****-0001" || st.To != "090-****-0001" || st.From != "031***5678" {
		t.Errorf("numbers not masked: from %q to %q customer %q", st.From, st.To, st.Customer)
	}
}

func TestMatches(t *testing.T) {
	rec := &mappers.Record{Contact: &mappers.ContactLookup{E164: "+81312345678"}, Owner: &mappers.OwnerLookup{Email: "a@b"}}
	for _, tt := range []struct {
		name           string
		rec            *mappers.Record
		res            crm.Result
		contact, owner Match
	}{
		{"found", rec, crm.Result{ContactID: "1", OwnerID: "2"}, Found, Found},
		{"none", rec, crm.Result{}, None, None},
		{"not asked", &mappers.Record{}, crm.Result{ContactID: "1"}, Policy, Policy},
		{"dry run", rec, crm.Result{ContactID: "{contact_id}", OwnerID: "{owner_id}"}, Assumed, Assumed},
	} {
		c, o := Matches(tt.rec, tt.res)
		if c.Match != tt.contact || o.Match != tt.owner {
			t.Errorf("%s: contact %s owner %s, want %s %s", tt.name, c.Match, o.Match, tt.contact, tt.owner)
		}
	}
}

func TestNeverSent(t *testing.T) {
	t.Parallel()
	s, _, _ := newStore(t, nil, func(c *config.Status) { c.Retention = 14 * 24 * time.Hour })
	_, err := s.Get(context.Background(), "no-such-call")
	var nf *NotFoundError
	if !errors.As(err, &nf) {
		t.Fatalf("err = %v, want a NotFoundError", err)
	}
	if want := "no record of no-such-call: MiiTel has not sent this call (or it is older than the status retention of 14 days)"; err.Error() != want {
		t.Errorf("message = %q, want %q", err.Error(), want)
	}
}

// The receiver adds the status note to its own enqueue script: the library's function must
// work inside a foreign script, next to the script's own commands, in one round trip, and a
// read must see what it noted.
func TestLuaLibraryInsideAnotherScript(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, rdb := newStore(t, nil, nil)
	// Like the receiver's script: the duplicate decision is made inside it (here, whether a
	// ledger key exists), then the status is recorded in the same round trip.
	enqueue := redis.NewScript(LuaLibrary + `
local n = 0
for i = 1, #KEYS do
  local dup = redis.call('EXISTS', KEYS[i]) == 1
  if not dup then redis.call('SET', KEYS[i], 'queued') end
  n = n + mcs_status_defer(ARGV[3*i-2], ARGV[3*i-1], ARGV[3*i], dup)
end
return n`)
	evs := parse(t, "sales", "multi_detail.json", t0)
	if len(evs) < 2 {
		t.Fatalf("multi_detail has %d details", len(evs))
	}
	if err := rdb.Set(ctx, "mcs:{miitel}:ledger:"+evs[1].DedupeKey, "analysis", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var argv []any
	for _, ev := range evs[:2] {
		prefix, member, arg, err := s.ReceiveArgs(ev, t0)
		if err != nil {
			t.Fatal(err)
		}
		argv = append(argv, prefix, member, arg)
	}
	keys := []string{"mcs:{miitel}:ledger:" + evs[0].DedupeKey, "mcs:{miitel}:ledger:" + evs[1].DedupeKey}
	n, err := enqueue.Run(ctx, rdb, keys, argv...).Int()
	if err != nil || n != 2 {
		t.Fatalf("script = %d, %v", n, err)
	}
	all, err := s.Get(ctx, evs[0].CallID)
	if err != nil || len(all) != 2 {
		t.Fatalf("details of the call = %d, %v", len(all), err)
	}
	byDetail := map[string]Status{all[0].DetailID: all[0], all[1].DetailID: all[1]}
	if e := byDetail[evs[0].Detail.ID].Events; len(e) != 1 || e[0].Duplicates != 0 || e[0].State != Pending {
		t.Errorf("queued detail events = %+v", e)
	}
	if e := byDetail[evs[1].Detail.ID].Events; len(e) != 1 || e[0].Duplicates != 1 {
		t.Errorf("duplicate detail events = %+v", e)
	}
}

func TestListFilters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, clk, _ := newStore(t, nil, nil)
	clk.t = time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC) // 18:00 in Tokyo
	tokyo := s.Location()
	at := func(h, m int) time.Time { return time.Date(2026, 4, 1, h, m, 0, 0, tokyo) }
	type spec struct {
		route, rep string
		start      time.Time
		end        State
	}
	specs := []spec{
		{"sales", "sato@example.co.jp", at(8, 0), Done},    // before 9
		{"sales", "sato@example.co.jp", at(9, 30), Dead},   // today, failed
		{"sales", "Sato@Example.co.jp", at(11, 0), Done},   // same rep, other case
		{"sales", "suzuki@example.co.jp", at(10, 0), Dead}, // another rep
		{"support", "sato@example.co.jp", at(12, 0), Dead}, // another route
		{"sales", "sato@example.co.jp", at(-20, 0), Dead},  // the day before
	}
	for i, sp := range specs {
		ev := call(sp.route, i, sp.rep, sp.start)
		if err := s.Received(ctx, ev, false, sp.start); err != nil {
			t.Fatal(err)
		}
		if err := s.Started(ctx, ev); err != nil {
			t.Fatal(err)
		}
		var err error
		if sp.end == Dead {
			err = s.Failed(ctx, ev, Failure{State: Dead, Error: deadletter.Error{Class: "permanent", Message: "x"}})
		} else {
			err = s.Delivered(ctx, ev, Delivery{Result: crm.Result{ID: "1"}})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		q    Query
		want []string
	}{
		{"my failed calls today", Query{Since: "09:00", Rep: "SATO@example.co.jp", State: "dead"}, []string{"detail-4", "detail-1"}},
		{"... on one route", Query{Since: "09:00", Rep: "sato@example.co.jp", State: "dead", Route: "sales"}, []string{"detail-1"}},
		{"today, every state", Query{Since: "today"}, []string{"detail-4", "detail-2", "detail-3", "detail-1", "detail-0"}},
		{"until", Query{Since: "today", Until: "10:00"}, []string{"detail-1", "detail-0"}},
		{"done", Query{State: "done"}, []string{"detail-2", "detail-0"}},
		{"limit", Query{Limit: 2}, []string{"detail-4", "detail-2"}},
		{"all, latest first", Query{}, []string{"detail-4", "detail-2", "detail-3", "detail-1", "detail-0", "detail-5"}},
	}
	for _, tt := range tests {
		sts, err := s.List(ctx, tt.q)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var got []string
		for _, st := range sts {
			got = append(got, st.DetailID)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
	for _, bad := range []Query{{State: "lost"}, {Since: "soon"}, {Limit: MaxLimit + 1}} {
		if _, err := s.List(ctx, bad); err == nil {
			t.Errorf("List(%+v): want an error", bad)
		}
	}
}

// Phone numbers are masked everywhere and a search key only when the admin turned it on;
// then only a keyed hash of the number is stored.
func TestPhoneSearch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("off", func(t *testing.T) {
		s, _, rdb := newStore(t, nil, nil)
		ev := call("sales", 7, "sato@example.co.jp", t0)
		if err := s.Received(ctx, ev, false, t0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.List(ctx, Query{Phone: "090-1234-0007"}); !errors.Is(err, ErrPhoneSearchOff) {
			t.Errorf("phone query while off: %v", err)
		}
		if keys := rdb.Keys(ctx, "mcs:{miitel}:status:ph:*").Val(); len(keys) != 0 {
			t.Errorf("phone index written while off: %v", keys)
		}
		assertNoNumber(t, rdb, "1234-0007", "12340007")
	})
	t.Run("on", func(t *testing.T) {
		s, _, rdb := newStore(t, nil, func(c *config.Status) {
			c.PhoneSearch = config.PhoneSearch{Enabled: true, Secret: config.FromValue("k3y")}
		})
		for i := 7; i <= 8; i++ {
			at := t0.Add(time.Duration(i) * time.Minute)
			if err := s.Received(ctx, call("sales", i, "sato@example.co.jp", at), false, at); err != nil {
				t.Fatal(err)
			}
		}
		for _, form := range []string{"090-1234-0007", "09012340007", "+819012340007"} {
			sts, err := s.List(ctx, Query{Phone: form})
			if err != nil || len(sts) != 1 || sts[0].DetailID != "detail-7" {
				t.Errorf("phone %s: %d records, %v", form, len(sts), err)
			}
		}
		// The shared circuit number finds both calls.
		if sts, _ := s.List(ctx, Query{Phone: "03-1234-5678"}); len(sts) != 2 || sts[0].DetailID != "detail-8" {
			t.Errorf("circuit number: %d records", len(sts))
		}
		assertNoNumber(t, rdb, "1234-0007", "12340007")
	})
}

// assertNoNumber fails if any key name or value holds the number unmasked.
func assertNoNumber(t *testing.T, rdb redis.UniversalClient, forms ...string) {
	t.Helper()
	ctx := context.Background()
	for _, k := range rdb.Keys(ctx, "mcs:*").Val() {
		var v string
		switch rdb.Type(ctx, k).Val() {
		case "string":
			v = rdb.Get(ctx, k).Val()
		case "set":
			v = strings.Join(rdb.SMembers(ctx, k).Val(), " ")
		case "zset":
			v = strings.Join(rdb.ZRange(ctx, k, 0, -1).Val(), " ")
		}
		for _, f := range forms {
			if strings.Contains(k, f) || strings.Contains(v, f) {
				t.Errorf("%s holds the number %s unmasked: %s", k, f, v)
			}
		}
	}
}

// The store keeps at most max_records: the oldest calls go first.
func TestMaxRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, rdb := newStore(t, nil, func(c *config.Status) { c.MaxRecords = 3 })
	for i := range 5 {
		at := t0.Add(time.Duration(i) * time.Minute)
		if err := s.Received(ctx, call("sales", i, "a@b", at), false, at); err != nil {
			t.Fatal(err)
		}
	}
	sts, _ := s.List(ctx, Query{})
	if len(sts) != 3 || sts[2].DetailID != "detail-2" {
		t.Errorf("kept %d records, want the 3 latest", len(sts))
	}
	if n := len(rdb.Keys(ctx, "mcs:{miitel}:status:r:*").Val()); n != 3 {
		t.Errorf("%d record keys, want 3", n)
	}
	if _, err := s.Get(ctx, "detail-0"); err == nil {
		t.Error("the oldest call must be gone")
	}
	ttl := rdb.PTTL(ctx, "mcs:{miitel}:status:r:sales:detail-4").Val()
	if ttl <= 29*24*time.Hour || ttl > 30*24*time.Hour {
		t.Errorf("record TTL = %v, want the 30-day retention", ttl)
	}
}

// TestRecordFootprint measures what one call's status costs in Redis, for the README's
// sizing: the record and its share of the indexes. Run with -v to see the figures.
func TestRecordFootprint(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, rdb := newStore(t, nil, func(c *config.Status) {
		c.PhoneSearch = config.PhoneSearch{Enabled: true, Secret: config.FromValue("k")}
	})
	ev := parse(t, "sales", "call_analysis_completed/seed_sample.json", t0)[0]
	minutes := parse(t, "sales", "call_summarization_completed/sample1.json", t0.Add(time.Hour))[0]
	minutes.CallID, minutes.Detail.ID = ev.CallID, ev.Detail.ID
	for _, e := range []*miitel.Event{ev, minutes} {
		if err := s.Received(ctx, e, false, t0); err != nil {
			t.Fatal(err)
		}
		_ = s.Received(ctx, e, true, t0)
		_ = s.Started(ctx, e)
		_ = s.Failed(ctx, e, Failure{State: Retry, NextAttempt: t0.Add(time.Minute), Error: deadletter.Error{Class: "transient", Status: 503,
			Message: "hubspot: update call: HTTP 503: " + strings.Repeat("upstream unavailable ", 8)}})
		_ = s.Started(ctx, e)
		_ = s.Delivered(ctx, e, Delivery{Record: &mappers.Record{Object: "calls", MappingVersion: "0123456789abcdef"},
			Result: crm.Result{ID: "31415926535", Created: true, ContactID: "2718281828"}})
	}
	rec := rdb.MemoryUsage(ctx, "mcs:{miitel}:status:r:sales:"+ev.Detail.ID).Val()
	idSet := rdb.MemoryUsage(ctx, "mcs:{miitel}:status:id:"+ev.CallID).Val()
	var total int64
	for _, k := range rdb.Keys(ctx, "mcs:{miitel}:status:*").Val() {
		total += rdb.MemoryUsage(ctx, k).Val()
	}
	raw := rdb.Get(ctx, "mcs:{miitel}:status:r:sales:"+ev.Detail.ID).Val()
	var pretty map[string]any
	_ = json.Unmarshal([]byte(raw), &pretty)
	t.Logf("one call (analysis + minutes, a duplicate each, a retry, delivered): record %d bytes (%d of JSON), call-id set %d, all keys %d bytes (MEMORY USAGE)",
		rec, len(raw), idSet, total)
	if rec == 0 || rec > 4096 {
		t.Errorf("record uses %d bytes, want 1..4096", rec)
	}
}

// Every key of the call status shares the queue's hash tag, so its scripts, which touch
// index keys they compute, run on Redis Cluster.
func TestWorksOnRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 6 redis-server processes; skipped with -short")
	}
	t.Parallel()
	ctx := context.Background()
	cs := redistest.StartCluster(t, 3, 1)
	rdb := cs.Client()
	s, _, _ := newStore(t, rdb, func(c *config.Status) {
		c.MaxRecords = 2
		c.PhoneSearch = config.PhoneSearch{Enabled: true, Secret: config.FromValue("k")}
	})
	for i := range 3 {
		ev := call("sales", i, "sato@example.co.jp", t0.Add(time.Duration(i)*time.Minute))
		if err := s.Received(ctx, ev, false, t0.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := s.Started(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if st := get1(t, s, "call-2"); st.State != Active {
		t.Errorf("state on cluster = %s", st.State)
	}
	// A receipt noted by the receiver's script, folded by the read, on the cluster too.
	note(t, s, rdb, call("sales", 3, "sato@example.co.jp", t0.Add(3*time.Minute)), false, t0.Add(3*time.Minute))
	if st := get1(t, s, "call-3"); st.State != Pending {
		t.Errorf("noted call on cluster = %s", st.State)
	}
	sts, err := s.List(ctx, Query{Rep: "sato@example.co.jp"})
	if err != nil || len(sts) != 2 {
		t.Errorf("list on cluster = %d, %v (want the 2 records max_records keeps)", len(sts), err)
	}
	if sts, err := s.List(ctx, Query{Phone: "090-1234-0002"}); err != nil || len(sts) != 1 {
		t.Errorf("phone on cluster = %d, %v", len(sts), err)
	}
}
