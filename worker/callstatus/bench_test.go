package callstatus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// BenchmarkBookkeeping measures what call status adds to one task in the worker (Started,
// then Delivered) and to one accepted event (Received: recorded at once; note: what the
// receiver's script does instead, one round trip each; fold: what the folder later does
// with the notes, per note; fold_resends: the same for many re-sends of one call), against
// a floor measured in the same run: the ledger SET the
// worker already writes per task, one round trip to the same Redis.
// Run: go test -run '^$' -bench Bookkeeping -count 5 ./worker/callstatus (sub-benchmarks
// alternate within each count, so the variants interleave).
func BenchmarkBookkeeping(b *testing.B) {
	ctx := context.Background()
	s, _, rdb := newStore(b, nil, nil)
	b.Run("floor_ledger_set", func(b *testing.B) {
		for i := range b.N {
			if err := rdb.Set(ctx, tasks.LedgerKey("miitel", fmt.Sprintf("k%d", i%1000)), "analysis", time.Hour).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	rec := &mappers.Record{Object: "calls", MappingVersion: "0123456789abcdef", Contact: &mappers.ContactLookup{E164: "+819012345678"}}
	b.Run("started_delivered", func(b *testing.B) {
		for i := range b.N {
			ev := call("sales", i%1000, "sato@example.co.jp", t0)
			if err := s.Started(ctx, ev); err != nil {
				b.Fatal(err)
			}
			if err := s.Delivered(ctx, ev, Delivery{Record: rec, Result: crm.Result{ID: "31415926535", ContactID: "1"}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("received", func(b *testing.B) {
		for i := range b.N {
			if err := s.Received(ctx, call("sales", i%1000, "sato@example.co.jp", t0), i%2 == 1, t0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("note", func(b *testing.B) {
		for i := range b.N {
			note(b, s, rdb, call("sales", i%1000, "sato@example.co.jp", t0), i%2 == 1, t0)
		}
		b.StopTimer()
		if _, err := s.Fold(ctx, 0); err != nil { // the next sub-benchmark starts clean
			b.Fatal(err)
		}
	})
	b.Run("fold", func(b *testing.B) {
		b.StopTimer()
		for i := range b.N { // every note a call of its own, as MiiTel's traffic is
			note(b, s, rdb, call("sales", 1000+i, "sato@example.co.jp", t0), false, t0)
		}
		b.StartTimer()
		if _, err := s.Fold(ctx, 0); err != nil {
			b.Fatal(err)
		}
	})
	// A flood of re-sends of one detail before a fold: folded in one pass, one load and
	// one store of the record for all of them.
	b.Run("fold_resends", func(b *testing.B) {
		b.StopTimer()
		ev := call("sales", 1, "sato@example.co.jp", t0)
		note(b, s, rdb, ev, false, t0)
		for range b.N {
			note(b, s, rdb, ev, true, t0)
		}
		b.StartTimer()
		if _, err := s.Fold(ctx, 0); err != nil {
			b.Fatal(err)
		}
	})
}
