package callstatus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/deadletter"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// noteScript is what the receiver's enqueue script does for the status: mcs_status_defer.
var noteScript = redis.NewScript(LuaLibrary + "\nreturn mcs_status_defer(ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1')")

// note notes a receipt as the receiver's enqueue script does.
func note(t testing.TB, s *Store, rdb redis.UniversalClient, ev *miitel.Event, duplicate bool, at time.Time) {
	t.Helper()
	prefix, member, arg, err := s.ReceiveArgs(ev, at)
	if err != nil {
		t.Fatal(err)
	}
	dup := "0"
	if duplicate {
		dup = "1"
	}
	if err := noteScript.Run(context.Background(), rdb, []string{s.prefix + "in"}, prefix, member, arg, dup).Err(); err != nil {
		t.Fatal(err)
	}
}

// rawState reads a record as stored, without the fold a Get does first.
func rawState(t *testing.T, s *Store, rdb redis.UniversalClient, m string) (State, bool) {
	t.Helper()
	b, err := rdb.Get(context.Background(), s.prefix+"r:"+m).Bytes()
	if err == redis.Nil {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	st, err := decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return st.State, true
}

func noted(t *testing.T, s *Store, rdb redis.UniversalClient) int64 {
	t.Helper()
	n, err := rdb.HLen(context.Background(), s.prefix+"in").Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A worker can take a call before anything folded its receipt (the folder runs every
// FoldInterval): its transitions fold the detail's receipts first, so a fold afterwards
// never sets a delivered call back to pending.
func TestTransitionFoldsItsReceiptsFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, clk, rdb := newStore(t, nil, nil)
	ev := call("sales", 1, "sato@example.co.jp", t0)
	note(t, s, rdb, ev, false, t0)
	note(t, s, rdb, ev, true, t0.Add(time.Second)) // a re-send before the worker took it
	if st, ok := rawState(t, s, rdb, "sales:detail-1"); ok {
		t.Fatalf("a noted receipt is already in the record (%s): nothing to test", st)
	}
	clk.add(2 * time.Second)
	if err := s.Started(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if st, _ := rawState(t, s, rdb, "sales:detail-1"); st != Active {
		t.Fatalf("after Started, stored state = %q, want active", st)
	}
	if err := s.Delivered(ctx, ev, Delivery{Result: crm.Result{ID: "9001", Created: true}}); err != nil {
		t.Fatal(err)
	}
	if done, err := s.Fold(ctx, 0); err != nil || !done {
		t.Fatalf("Fold = %v, %v", done, err)
	}
	st := get1(t, s, "detail-1")
	if st.State != Done || st.Attempts != 1 || len(st.Events) != 1 || st.Events[0].Duplicates != 1 ||
		!st.Events[0].ReceivedAt.Equal(t0) || !st.FirstReceivedAt.Equal(t0) {
		t.Errorf("status = %s, %d attempts, events %+v, first received %s", st.State, st.Attempts, st.Events, st.FirstReceivedAt)
	}
	if n := noted(t, s, rdb); n != 0 {
		t.Errorf("%d members still noted", n)
	}
	if held, _ := rdb.HExists(ctx, s.prefix+"in", "sales:detail-1").Result(); held {
		t.Error("the detail's receipts stay noted after the fold")
	}
}

// MiiTel's re-send of a dead-lettered event is queued afresh: its receipt (pending) must land
// between the dead letter and the new attempt, even when only the new attempt folds it.
func TestRequeuedReceiptFoldsBeforeTheNewAttempt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, clk, rdb := newStore(t, nil, nil)
	ev := call("sales", 1, "sato@example.co.jp", t0)
	note(t, s, rdb, ev, false, t0)
	if err := s.Started(ctx, ev); err != nil {
		t.Fatal(err)
	}
	dead := Failure{State: Dead, Error: deadletter.Error{Class: "permanent", Status: 400, Message: "bad property"}}
	if err := s.Failed(ctx, ev, dead); err != nil {
		t.Fatal(err)
	}
	clk.add(time.Hour)
	note(t, s, rdb, ev, false, clk.now()) // requeued by the receiver's script
	if st, _ := rawState(t, s, rdb, "sales:detail-1"); st != Dead {
		t.Fatalf("before the new attempt, stored state = %q, want dead", st)
	}
	clk.add(time.Second)
	if err := s.Started(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Fold(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if st := get1(t, s, "detail-1"); st.State != Active || st.Attempts != 2 {
		t.Errorf("after the requeue's attempt: %s, %d attempts; want active, 2", st.State, st.Attempts)
	}
}

// Reads fold first: a call noted a moment ago is found by its call id, its detail id and a
// list, as pending, with its duplicates counted.
func TestReadsSeeNotedReceipts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, rdb := newStore(t, nil, nil)
	evs := parse(t, "sales", "multi_detail.json", t0)
	for _, ev := range evs {
		note(t, s, rdb, ev, false, t0)
	}
	note(t, s, rdb, evs[1], true, t0.Add(time.Minute))
	all, err := s.Get(ctx, evs[0].CallID)
	if err != nil || len(all) != len(evs) {
		t.Fatalf("Get(call) = %d records, %v; want %d", len(all), err, len(evs))
	}
	for _, st := range all {
		if st.State != Pending {
			t.Errorf("%s: %s, want pending", st.DetailID, st.State)
		}
	}
	if st := get1(t, s, evs[1].Detail.ID); len(st.Events) != 1 || st.Events[0].Duplicates != 1 { // [0]'s id is the call's
		t.Errorf("events = %+v, want one with a duplicate", st.Events)
	}
	note(t, s, rdb, call("sales", 7, "sato@example.co.jp", t0), false, t0)
	list, err := s.List(ctx, Query{Rep: "sato@example.co.jp"})
	if err != nil || len(list) != 1 || list[0].DetailID != "detail-7" {
		t.Fatalf("List = %+v, %v; want detail-7", list, err)
	}
}

// A backlog larger than one fold's chunk (a worker outage) folds chunk by chunk, every
// receipt into its record, trimmed to max_records as a record-by-record write would be.
func TestFoldBacklogInChunks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const calls, max = 3*foldChunk + 17, 2 * foldChunk
	s, _, rdb := newStore(t, nil, func(c *config.Status) { c.MaxRecords = max })
	for i := range calls {
		note(t, s, rdb, call("sales", i, "sato@example.co.jp", t0.Add(time.Duration(i)*time.Second)), false, t0.Add(time.Duration(i)*time.Second))
	}
	if done, err := s.Fold(ctx, 1); err != nil || done {
		t.Fatalf("one round of %d = done %v, %v; want more left", calls, done, err)
	}
	if done, err := s.Fold(ctx, 0); err != nil || !done {
		t.Fatalf("Fold = %v, %v", done, err)
	}
	if n, _ := rdb.ZCard(ctx, s.prefix+"idx").Result(); n != max {
		t.Errorf("index holds %d calls, want max_records %d", n, max)
	}
	if _, ok := rawState(t, s, rdb, "sales:detail-0"); ok {
		t.Error("the oldest call outlived max_records")
	}
	if st, ok := rawState(t, s, rdb, fmt.Sprintf("sales:detail-%d", calls-1)); !ok || st != Pending {
		t.Errorf("the newest call: %q, %v", st, ok)
	}
}

// The workers' folder keeps records current without a read: it folds what is noted, and
// stops with its context.
func TestRunFolder(t *testing.T) {
	t.Parallel()
	s, _, rdb := newStore(t, nil, nil)
	for i := range 5 {
		note(t, s, rdb, call("sales", i, "a@b", t0), false, t0)
	}
	if n := testutil.ToFloat64(s.Collector()); n != 5 {
		t.Errorf("mcs_status_unfolded = %v before the folder ran, want 5", n)
	}
	stop := startFolder(t, s, 5*time.Millisecond)
	awaitFolded(t, s, rdb)
	stop()
	if n := testutil.ToFloat64(s.Collector()); n != 0 {
		t.Errorf("mcs_status_unfolded = %v after the folder ran, want 0", n)
	}
	for i := range 5 {
		if st, ok := rawState(t, s, rdb, fmt.Sprintf("sales:detail-%d", i)); !ok || st != Pending {
			t.Errorf("detail-%d: %q, %v", i, st, ok)
		}
	}
}

// logTap keeps the messages logged, and signals each.
type logTap struct {
	mu   sync.Mutex
	msgs []string
	ch   chan struct{}
}

func (l *logTap) Enabled(context.Context, slog.Level) bool { return true }
func (l *logTap) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logTap) WithGroup(string) slog.Handler            { return l }
func (l *logTap) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Level.String()+" "+r.Message)
	l.mu.Unlock()
	select {
	case l.ch <- struct{}{}:
	default:
	}
	return nil
}

func (l *logTap) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// await returns once cond holds, failing the test after 15 s.
func (l *logTap) await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for !cond() {
		select {
		case <-l.ch:
		case <-timeout:
			t.Fatalf("no %s within 15s; logged: %q", what, l.msgs)
		}
	}
}

// Redis going away does not stop the folder, nor flood the log: one warning for the outage,
// one line when folding works again, and the notes made meanwhile are folded.
func TestRunFolderSurvivesAnOutage(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	tap := &logTap{ch: make(chan struct{}, 1)}
	s, err := New(rdb, Options{Queue: "miitel", Config: config.Default().Status, Logger: slog.New(tap)})
	if err != nil {
		t.Fatal(err)
	}
	stop := startFolder(t, s, time.Millisecond)
	srv.Stop()
	tap.await(t, "warning", func() bool { return tap.count("WARN call status: folding received events failed") > 0 })
	srv.Restart()
	tap.await(t, "recovery line", func() bool { return tap.count("INFO call status: folding received events works again") > 0 })
	if n := tap.count("WARN"); n != 1 {
		t.Errorf("%d warnings for one outage, want 1: %q", n, tap.msgs)
	}
	note(t, s, rdb, call("sales", 1, "a@b", t0), false, t0)
	awaitFolded(t, s, rdb)
	stop()
}

// startFolder runs s's folder until the returned stop, which checks that it ended cleanly.
func startFolder(t *testing.T, s *Store, interval time.Duration) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.RunFolder(ctx, interval) }()
	return func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("RunFolder = %v", err)
		}
	}
}

// awaitFolded returns once nothing is noted (the folder has run), failing after 15 s.
func awaitFolded(t *testing.T, s *Store, rdb redis.UniversalClient) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for noted(t, s, rdb) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the folder did not fold within 15s")
		}
	}
}

// A flood of re-sends of one detail before any fold: each costs one command of constant
// size (the first receipt stays as it is in the hash, later ones are appended to a list),
// and the fold counts every one, in order.
func TestNotedFloodOfResends(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, rdb := newStore(t, nil, nil)
	ev := call("sales", 1, "sato@example.co.jp", t0)
	note(t, s, rdb, ev, false, t0)
	first, err := rdb.HStrLen(ctx, s.prefix+"in", "sales:detail-1").Result()
	if err != nil {
		t.Fatal(err)
	}
	const resends = 300
	for i := range resends {
		note(t, s, rdb, ev, true, t0.Add(time.Duration(i+1)*time.Second))
	}
	if n, _ := rdb.HStrLen(ctx, s.prefix+"in", "sales:detail-1").Result(); n != first {
		t.Errorf("the first receipt's note grew from %d to %d bytes with the re-sends", first, n)
	}
	if n, _ := rdb.LLen(ctx, s.prefix+"in:sales:detail-1").Result(); n != resends {
		t.Errorf("%d later receipts noted, want %d", n, resends)
	}
	st := get1(t, s, "detail-1")
	last := t0.Add(resends * time.Second)
	if len(st.Events) != 1 || st.Events[0].Duplicates != resends || st.State != Pending ||
		!st.Events[0].ReceivedAt.Equal(t0) || st.Events[0].LastDuplicateAt == nil || !st.Events[0].LastDuplicateAt.Equal(last) {
		t.Errorf("status = %s, events %+v; want pending, %d duplicates, the last at %s", st.State, st.Events, resends, last)
	}
	if n, _ := rdb.Exists(ctx, s.prefix+"in:sales:detail-1").Result(); n != 0 || noted(t, s, rdb) != 0 {
		t.Error("notes left after the fold")
	}
}

// Notes of one detail folded in one pass keep every note's indexes, as one store per note
// did: a later event that carries another number (a transfer, say) finds the call by both.
func TestFoldKeepsEveryNotesIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _, rdb := newStore(t, nil, func(c *config.Status) {
		c.PhoneSearch = config.PhoneSearch{Enabled: true, Secret: config.FromValue("k")}
	})
	first := call("sales", 1, "sato@example.co.jp", t0)
	later := call("sales", 1, "sato@example.co.jp", t0)
	other := "080-5555-0001"
	later.DedupeKey, later.Kind, later.Detail.ToNumber = "key-1-minutes", miitel.KindMinutes, &other
	note(t, s, rdb, first, false, t0)
	note(t, s, rdb, later, false, t0.Add(time.Minute))
	// The same, folded by a worker's transition (its argument carries the first number).
	second := call("sales", 2, "sato@example.co.jp", t0)
	secondLater := call("sales", 2, "sato@example.co.jp", t0)
	other2 := "080-5555-0002"
	secondLater.DedupeKey, secondLater.Kind, secondLater.Detail.ToNumber = "key-2-minutes", miitel.KindMinutes, &other2
	note(t, s, rdb, second, false, t0)
	note(t, s, rdb, secondLater, false, t0.Add(time.Minute))
	if err := s.Started(ctx, second); err != nil {
		t.Fatal(err)
	}
	for number, detail := range map[string]string{"090-1234-0001": "detail-1", other: "detail-1", "090-1234-0002": "detail-2", other2: "detail-2"} {
		sts, err := s.List(ctx, Query{Phone: number})
		if err != nil || len(sts) != 1 || sts[0].DetailID != detail || len(sts[0].Events) != 2 {
			t.Errorf("List(phone %s) = %+v, %v; want %s with both events", number, sts, err, detail)
		}
	}
}
