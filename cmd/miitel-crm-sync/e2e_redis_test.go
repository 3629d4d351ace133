package main

// Redis topologies end to end: a Cluster in the normal suite, and the Sentinel failover soak
// (make test-failover) that proves nothing acknowledged is lost or written twice when the
// master changes under steady traffic.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// uniqueCall is the sample analysis request with call and detail ids of its own, so every
// request is a new call (no dedupe), and the detail id it must land under.
func uniqueCall(t testing.TB, base []byte, tag string, i int) ([]byte, string) {
	t.Helper()
	var body map[string]any
	if err := json.Unmarshal(base, &body); err != nil {
		t.Fatal(err)
	}
	call := body["call"].(map[string]any)
	call["id"] = fmt.Sprintf("%s-call-%d", tag, i)
	detail := fmt.Sprintf("%s-detail-%d", tag, i)
	call["details"].([]any)[0].(map[string]any)["id"] = detail
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return b, detail
}

// hubspotByDetail counts the HubSpot fake's calls per MiiTel detail id.
func (s *stack) hubspotByDetail() map[string]int {
	n := map[string]int{}
	for _, c := range s.hs.Calls() {
		n[c.Properties["hs_call_external_id"]]++
	}
	return n
}

// TestE2EClusterLosesAndDuplicatesNothing: on a Redis Cluster (3 masters, a replica each,
// the worker and receiver waiting for them) every call sent through serve lands in each CRM
// exactly once: the queue, the ledger, the id map and the locks all work across slots, with
// no CROSSSLOT (it would fail the enqueue with a non-200 answer or dead-letter a task).
func TestE2EClusterLosesAndDuplicatesNothing(t *testing.T) {
	t.Parallel()
	cs := redistest.StartCluster(t, 3, 1, "--repl-diskless-sync-delay", "0")
	// The receiver's auto counts connected replicas, in sync or not: start once they are.
	eventually(t, startTimeout, "every cluster replica in sync", func() (bool, string) {
		for _, m := range cs.Masters {
			info, err := m.Client().Info(context.Background(), "replication").Result()
			if err != nil || !strings.Contains(info, "state=online") {
				return false, fmt.Sprintf("%s: %v %s", m.Addr(), err, info)
			}
		}
		return true, ""
	})
	addrs, _ := json.Marshal(cs.Addrs())
	s := newStack(t, stackOptions{redis: &redisTopology{
		section: fmt.Sprintf("{cluster: {addrs: %s}, ack_replicas: auto}", addrs), client: cs.Client()}})
	s.start(t, "serve")
	base := readSample(t, "call_analysis_completed/sample1.json")
	const calls = 40
	var details []string
	for i := range calls {
		body, detail := uniqueCall(t, base, "cluster", i)
		for _, route := range []string{hubspotRoute, salesforceRoute} {
			if a := s.post(t, route, body); a.Queued != 1 {
				t.Fatalf("call %d to %s: queued %d, want 1", i, route, a.Queued)
			}
		}
		details = append(details, detail)
	}
	s.waitDelivered(t)
	hs, sf := s.hubspotByDetail(), s.salesforceTasks(t) // salesforceTasks fails on a duplicate
	for _, d := range details {
		if hs[d] != 1 {
			t.Errorf("HubSpot holds %d calls for detail %s, want 1", hs[d], d)
		}
		if _, ok := sf[d]; !ok {
			t.Errorf("Salesforce holds no Task for detail %s", d)
		}
	}
	if len(hs) != calls || len(sf) != calls {
		t.Errorf("HubSpot holds %d calls, Salesforce %d Tasks; want %d each", len(hs), len(sf), calls)
	}
}

// ---- the failover soak (make test-failover) ----

// failoverEnv turns the soak on; make test-failover sets it.
const failoverEnv = "MCS_E2E_FAILOVER"

func envOr[T any](t *testing.T, name string, def T, parse func(string) (T, error)) T {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return x
}

// sent is one webhook request of the soak and what became of it.
type sent struct {
	detail   string
	at       time.Duration // since the traffic started
	took     time.Duration
	status   int // 0: no answer (error)
	err      string
	accepted bool
}

// soakResult is one run's figures.
type soakResult struct {
	kind, acks                  string
	sent, ok, unavailable, lost int
	dup, other                  int
	archived                    int           // dead-lettered after the run: counted lost, not in Redis's keeping
	lostFrom, lostTo            time.Duration // when the first and last lost call was answered
	window                      time.Duration // first 503 to the end of the last
	p50, p99, max               time.Duration // latency of the 2xx answers
}

// TestE2ERedisFailover sends steady webhook traffic through serve on a Sentinel set (a
// master, 2 replicas, 3 Sentinels, AOF everysec) and changes the master at +20s: a planned
// SENTINEL FAILOVER, or a SIGKILL of the master (restarted on its AOF, it rejoins as a
// replica). With redis.ack_replicas auto it proves every 2xx-answered call is in the CRM
// fake exactly once, every answer is a 2xx or a 503 within server.enqueue_timeout, and both
// receiver and worker recover without a restart. The same runs with ack_replicas 0,
// interleaved, are the floor the cost of waiting is measured against (they may lose calls:
// that is the issue this fixes, and is reported, not asserted).
//
// FAILOVER_ROUNDS (3), FAILOVER_DURATION (45s), FAILOVER_RATE (50/s), FAILOVER_AT (20s),
// FAILOVER_KINDS (failover,kill).
func TestE2ERedisFailover(t *testing.T) {
	if os.Getenv(failoverEnv) == "" {
		t.Skipf("the Redis failover soak runs minutes: make test-failover (%s=1)", failoverEnv)
	}
	rounds := envOr(t, "FAILOVER_ROUNDS", 3, strconv.Atoi)
	dur := envOr(t, "FAILOVER_DURATION", 45*time.Second, time.ParseDuration)
	rate := envOr(t, "FAILOVER_RATE", 50, strconv.Atoi)
	at := envOr(t, "FAILOVER_AT", 20*time.Second, time.ParseDuration)
	kinds := strings.Split(envOr(t, "FAILOVER_KINDS", "failover,kill", func(s string) (string, error) { return s, nil }), ",")
	var results []soakResult
	for r := range rounds {
		for _, kind := range kinds {
			for _, acks := range []string{"0", "auto"} { // interleaved: floor, then waiting
				name := fmt.Sprintf("%s/ack_replicas=%s/round%d", kind, acks, r+1)
				t.Run(name, func(t *testing.T) {
					res := soak(t, kind, acks, dur, rate, at, fmt.Sprintf("r%d%s%s", r, kind, acks))
					results = append(results, res)
					t.Logf("%+v", res)
				})
			}
		}
	}
	t.Logf("\n%s", soakTable(results))
}

func soak(t *testing.T, kind, acks string, dur time.Duration, rate int, at time.Duration, tag string) soakResult {
	ss := redistest.StartSentinel(t, redistest.SentinelOptions{Extra: append(slices.Clone(redistest.Durable), "--repl-diskless-sync-delay", "0")})
	addrs, _ := json.Marshal(ss.SentinelAddrs())
	client := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: ss.MasterName, SentinelAddrs: ss.SentinelAddrs()})
	t.Cleanup(func() { _ = client.Close() })
	s := newStack(t, stackOptions{hubspotRequests: 100000, workerConcurrency: 32, redis: &redisTopology{
		section: fmt.Sprintf("{sentinel: {master_name: %s, addrs: %s}, ack_replicas: %s}", ss.MasterName, addrs, acks), client: client}})
	s.start(t, "serve")
	const enqueueTimeout = 5 * time.Second // the config default the stack runs with
	base := readSample(t, "call_analysis_completed/sample1.json")

	hc := &http.Client{Timeout: enqueueTimeout + 5*time.Second}
	var mu sync.Mutex
	var out []sent
	var wg sync.WaitGroup
	start := time.Now()
	changed := make(chan struct{})
	go func() {
		defer close(changed)
		time.Sleep(time.Until(start.Add(at))) // a point in the traffic, not a synchronisation
		ctx := context.Background()
		switch kind {
		case "failover":
			ss.Failover(ctx)
		case "kill":
			killed, _ := ss.KillMaster(ctx)
			killed.Restart() // on its AOF (Durable); the Sentinels make it a replica
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := 0; time.Since(start) < dur; i++ {
		<-tick.C
		body, detail := uniqueCall(t, base, tag, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := sent{detail: detail, at: time.Since(start)}
			req, _ := http.NewRequest(http.MethodPost, "http://"+s.listen+"/webhooks/miitel/"+hubspotRoute, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json; charset=utf-8")
			req.Header.Set("User-Agent", "MiiTel-Webhook/v1")
			req.Header.Set("Authorization", "Bearer "+miitelToken)
			t0 := time.Now()
			resp, err := hc.Do(req)
			r.took = time.Since(t0)
			if err != nil {
				r.err = err.Error()
			} else {
				r.status = resp.StatusCode
				_ = resp.Body.Close()
				r.accepted = resp.StatusCode/100 == 2
			}
			mu.Lock()
			out = append(out, r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	<-changed

	// Everything answered 2xx must come out of the queue into the CRM once.
	in := s.inspector(t)
	eventually(t, 3*time.Minute, "queue drained after the failover", func() (bool, string) {
		qi, err := in.GetQueueInfo(queueName)
		if err != nil {
			return false, err.Error()
		}
		return qi.Pending+qi.Active+qi.Scheduled+qi.Retry == 0, fmt.Sprintf("pending %d active %d scheduled %d retry %d archived %d",
			qi.Pending, qi.Active, qi.Scheduled, qi.Retry, qi.Archived)
	})
	res := soakResult{kind: kind, acks: acks, sent: len(out)}
	if qi, err := in.GetQueueInfo(queueName); err == nil && qi.Archived > 0 {
		// A dead-lettered call is not lost by Redis but never reached the CRM: say why.
		res.archived = qi.Archived
		if ts, err := in.ListArchivedTasks(queueName, asynq.PageSize(3)); err == nil {
			for _, ti := range ts {
				t.Logf("archived %s: %s", ti.ID, ti.LastErr)
			}
		}
	}
	inCRM := s.hubspotByDetail()
	var lats []time.Duration
	var first, last time.Duration = -1, 0
	for _, r := range out {
		switch {
		case r.accepted:
			res.ok++
			lats = append(lats, r.took)
			switch n := inCRM[r.detail]; {
			case n == 0:
				if res.lost == 0 || r.at < res.lostFrom {
					res.lostFrom = r.at
				}
				res.lostTo = max(res.lostTo, r.at)
				res.lost++
			case n > 1:
				res.dup++
			}
		case r.status == http.StatusServiceUnavailable:
			res.unavailable++
			if first < 0 || r.at < first {
				first = r.at
			}
			last = max(last, r.at+r.took)
		default:
			res.other++
			t.Errorf("request at +%s: status %d %s: want a 2xx or a 503", r.at.Round(time.Millisecond), r.status, r.err)
		}
		if r.took > enqueueTimeout+time.Second {
			t.Errorf("request at +%s took %s, beyond server.enqueue_timeout (%s)", r.at.Round(time.Millisecond), r.took, enqueueTimeout)
		}
	}
	for d, n := range inCRM {
		if n > 1 && res.dup == 0 {
			t.Errorf("HubSpot holds %d calls for detail %s", n, d)
		}
	}
	if first >= 0 {
		res.window = last - first
	}
	slices.Sort(lats)
	if len(lats) > 0 {
		res.p50, res.p99, res.max = lats[len(lats)/2], lats[len(lats)*99/100], lats[len(lats)-1]
	}
	// Recovered without a restart: the last 5 s of traffic was acknowledged, and delivered.
	for _, r := range out {
		if r.at > dur-5*time.Second && !r.accepted {
			t.Errorf("request at +%s answered %d %s after the failover settled: the receiver did not recover", r.at.Round(time.Millisecond), r.status, r.err)
		}
	}
	if acks == "auto" && (res.lost > 0 || res.dup > 0) {
		t.Errorf("ack_replicas auto: %d acknowledged calls lost, %d duplicated", res.lost, res.dup)
	}
	// The floor (ack_replicas 0) is measured, not asserted: its worker does not wait either,
	// so a planned failover can flush its id map writes and duplicate calls (the issue).
	return res
}

// soakTable is the runs as the Markdown table docs/BENCHMARKS.md shows.
func soakTable(rs []soakResult) string {
	var b strings.Builder
	b.WriteString("| run | ack_replicas | sent | 2xx | 503 | 503 window | acknowledged and lost | duplicated | p50 | p99 | max |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %s | %d | %d | %s | %s | %s |\n", r.kind, r.acks, r.sent, r.ok, r.unavailable,
			r.window.Round(10*time.Millisecond), r.lost, r.dup, r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.max.Round(time.Millisecond))
	}
	return b.String()
}
