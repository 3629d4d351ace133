package hubspot

import (
	"context"
	"errors"
	"flag"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

var (
	load        = flag.Bool("load", false, "run TestLoadWorker (make load-worker; docs/BENCHMARKS.md, Worker: HubSpot)")
	loadCalls   = flag.Int("load.calls", 10000, "distinct calls per round")
	loadNumbers = flag.Int("load.numbers", 1000, "distinct customer numbers (each an existing contact)")
	loadRounds  = flag.Int("load.rounds", 3, "rounds (fresh fake and Redis each)")
	loadUnique  = flag.String("load.unique", "", "hubspot.unique_property (\"\": the id map path)")
)

// TestLoadWorker drives N distinct first events (M customer numbers, each an existing
// contact; one rep) through the real connector with 200 concurrent deliveries (as many
// asynq tasks at once), the default batch settings (100 per request, 1s linger) and the
// default rate-limit wait, into the strict fake enforcing HubSpot's limits (100 requests
// per rolling 10 s, search 5/s, 429 beyond). A delivery told Throttled is re-run after its
// RetryAfter, as the worker's retry does, without counting an attempt.
//
// It reports the CRM requests made against one request per call, and the drain time
// against the floor the fake's limits impose on the requests made: n requests in a rolling
// window of 100 per 10 s cannot finish before floor((n-1)/100)*10 s, s searches at 5/s not
// before floor((s-1)/5) s.
//
//	make load-worker     # = go test -run TestLoadWorker -load -v ./worker/crm/hubspot/
func TestLoadWorker(t *testing.T) {
	if !*load {
		t.Skip("a load run, not a test: make load-worker (see docs/BENCHMARKS.md)")
	}
	const concurrency = 200
	n, numbers := *loadCalls, *loadNumbers
	type sample struct {
		requests, searches, writes, assocs, throttled int
		drain, floor                                  time.Duration
		routes                                        map[string]int
	}
	run := func() sample {
		e := newEnv(t)
		e.fake.AddOwner("rep@example.com")
		e.fake.DefineCallProperty("miitel_detail_id", true)
		addContacts(e.fake, numbers)
		c := e.connector(t, func(o *Options) {
			o.Connection.Batch = config.Batch{MaxSize: config.HubSpotMaxBatch, Linger: config.BatchLinger}
			o.Connection.HubSpot.UniqueProperty = *loadUnique
		})
		recs := make(chan *mappers.Record, n)
		for i := range n {
			recs <- numbered(i, numbers)
		}
		close(recs)
		var mu sync.Mutex
		throttled := 0
		start := time.Now()
		var wg sync.WaitGroup
		for range concurrency {
			wg.Go(func() {
				for r := range recs {
					for {
						_, err := c.Deliver(context.Background(), r)
						var ce *crm.Error
						if err != nil && crm.ClassOf(err) == crm.Throttled && errors.As(err, &ce) {
							mu.Lock()
							throttled++
							mu.Unlock()
							time.Sleep(max(ce.After, 10*time.Millisecond)) // the task's retry delay
							continue
						}
						if err != nil {
							t.Errorf("%s: %v", r.ExternalID.Value, err)
						}
						break
					}
				}
			})
		}
		wg.Wait()
		s := sample{drain: time.Since(start), throttled: throttled}
		if got := len(e.fake.Calls()); got != n {
			t.Fatalf("%d calls in HubSpot, want %d", got, n)
		}
		s.routes = map[string]int{}
		for _, r := range e.fake.Requests() {
			s.requests++
			s.routes[r.Route]++
			switch r.Route {
			case "POST /crm/v3/objects/contacts/search", "POST /crm/v3/objects/calls/search":
				s.searches++
			case "POST " + PathBatchCreate, "POST " + PathBatchUpdate, "POST " + PathBatchUpsert:
				s.writes++
			case "POST " + PathBatchAssociate:
				s.assocs++
			}
		}
		window := time.Duration((s.requests-1)/100) * 10 * time.Second
		search := time.Duration((s.searches-1)/5) * time.Second
		s.floor = max(window, search)
		return s
	}
	var samples []sample
	for round := range *loadRounds {
		s := run()
		samples = append(samples, s)
		t.Logf("round %d: %d calls, %d numbers: %d requests (%d writes, %d associations, %d searches, %d other); %.1fx fewer than one per call; drain %v, floor %v, ratio %.3f; %d throttled deliveries re-run",
			round+1, n, numbers, s.requests, s.writes, s.assocs, s.searches, s.requests-s.writes-s.assocs-s.searches,
			float64(n)/float64(s.requests), s.drain.Round(10*time.Millisecond), s.floor, ratio(s.drain, s.floor), s.throttled)
		t.Logf("round %d: requests by route: %v", round+1, s.routes)
	}
	med := func(f func(sample) float64) float64 {
		v := make([]float64, len(samples))
		for i, s := range samples {
			v[i] = f(s)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	t.Logf("medians over %d rounds: %.0f requests (%.1fx fewer than %d), drain %.2fs, floor %.0fs, drain/floor %.3f",
		len(samples), med(func(s sample) float64 { return float64(s.requests) }), float64(n)/med(func(s sample) float64 { return float64(s.requests) }), n,
		med(func(s sample) float64 { return s.drain.Seconds() }), med(func(s sample) float64 { return s.floor.Seconds() }),
		med(func(s sample) float64 { return ratio(s.drain, s.floor) }))
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return a.Seconds() / b.Seconds()
}
