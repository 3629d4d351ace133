package salesforce_test

import (
	"flag"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

var (
	measure      = flag.Bool("measure", false, "run TestMeasureBatching (the figures of docs/BENCHMARKS.md, Worker: Salesforce)")
	measureCalls = flag.Int("measure.calls", 2000, "calls per variant and round")
)

// TestMeasureBatching measures what collections save: N first events of N calls, delivered
// by 200 concurrent deliveries (worker.concurrency's default) into the fake org over
// loopback, with batch.max_size 200 and with 1 (batching off, the floor), interleaved
// (A B, B A, A B) for 3 rounds on fresh fakes and Redis. It reports the API requests
// Salesforce counted and the wall time, per variant and round, and the medians.
//
//	go test -run TestMeasureBatching -measure -v ./worker/crm/salesforce/
func TestMeasureBatching(t *testing.T) {
	if !*measure {
		t.Skip("a measurement, not a test: run it with -measure (see docs/BENCHMARKS.md)")
	}
	const concurrency = 200
	n := *measureCalls
	type sample struct {
		requests int
		elapsed  time.Duration
	}
	run := func(maxSize int) sample {
		e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
		e.conn.Batch = config.Batch{MaxSize: maxSize} // linger: the default 1s
		c := e.connector(t)
		deliver(t, c, bare("warm")) // the token, outside the measurement
		before := e.fake.Count(salesforcefake.OpAPI)
		recs := make(chan *mappers.Record, n)
		for i := range n {
			recs <- bare(fmt.Sprintf("m%d-%06d", maxSize, i))
		}
		close(recs)
		start := time.Now()
		var wg sync.WaitGroup
		for range concurrency {
			wg.Go(func() {
				for r := range recs {
					if _, err := c.Deliver(t.Context(), r); err != nil {
						t.Errorf("%s: %v", r.ExternalID.Value, err)
					}
				}
			})
		}
		wg.Wait()
		s := sample{requests: e.fake.Count(salesforcefake.OpAPI) - before, elapsed: time.Since(start)}
		if got := len(e.fake.Tasks()); got != n+1 {
			t.Fatalf("max_size %d: %d tasks, want %d", maxSize, got, n+1)
		}
		return s
	}
	results := map[int][]sample{}
	for round := range 3 {
		order := []int{200, 1}
		if round%2 == 1 {
			order = []int{1, 200}
		}
		for _, size := range order {
			s := run(size)
			results[size] = append(results[size], s)
			t.Logf("round %d max_size %3d: %5d requests (%.3f per call), %v (%.0f calls/s)",
				round+1, size, s.requests, float64(s.requests)/float64(n), s.elapsed.Round(time.Millisecond), float64(n)/s.elapsed.Seconds())
		}
	}
	median := func(size int) (int, time.Duration) {
		rs, ts := []int{}, []time.Duration{}
		for _, s := range results[size] {
			rs, ts = append(rs, s.requests), append(ts, s.elapsed)
		}
		slices.Sort(rs)
		slices.Sort(ts)
		return rs[1], ts[1]
	}
	r200, t200 := median(200)
	r1, t1 := median(1)
	t.Logf("medians, %d calls: max_size 200: %d requests, %v; max_size 1: %d requests, %v; requests ratio %.4f, time ratio %.3f",
		n, r200, t200.Round(time.Millisecond), r1, t1.Round(time.Millisecond), float64(r200)/float64(r1), t200.Seconds()/t1.Seconds())
}
