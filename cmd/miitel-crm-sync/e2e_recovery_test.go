package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

// crashEnv turns on the full-size crash run (make test-crash): 1,000 calls, and the wait
// for asynq's own recovery of the killed worker's tasks instead of skipping it.
const crashEnv = "MCS_TEST_CRASH"

// callLeasePrefix is the prefix of the per-call lease keys (worker/lock.go, lockKey).
const callLeasePrefix = "mcs:lock:"

// crashRun is one kill -9 of a worker in the middle of a run of batched Salesforce syncs.
type crashRun struct {
	calls       int
	concurrency int
	batch       string // the sf connection's batch section
	// heldCollection is the collection request whose answer is held when the worker is
	// killed (1-based): the ones before it were answered, it was stored by the fake.
	heldCollection int
	// realRecovery waits for asynq's recoverer to find the killed worker's tasks (a lease of
	// 30s, then 30s of grace, looked for every minute); otherwise their asynq leases are
	// dated back so the new worker's start-up recovery takes them at once. The per-call
	// leases are never touched: they lapse by themselves in either run.
	realRecovery bool
}

// crashMidBatch posts the run's calls, starts a worker, SIGKILLs it while a collection
// request is answered but not yet heard (others answered, the rest not sent), starts
// another and waits for the queue to empty. It checks that every call is in Salesforce
// exactly once, created once, and returns the times from the restart to asynq's recovery of
// the killed worker's tasks and to the empty queue.
func crashMidBatch(t *testing.T, r crashRun) (recovered, empty time.Duration) {
	t.Helper()
	var collections atomic.Int32
	var proxy *holdProxy
	isCollection := func(req *http.Request) bool {
		return req.Method == http.MethodPatch && strings.Contains(req.URL.Path, "/composite/sobjects/Task/"+externalIDField) &&
			int(collections.Add(1)) == r.heldCollection
	}
	s := newStack(t, stackOptions{
		workerConcurrency: r.concurrency,
		salesforceBatch:   r.batch,
		// The production retry_base: a recovered task is not held back by the backoff of
		// a failure it did not have (worker.leaseExpiredDelay).
		retryMax:      10 * time.Second,
		salesforceVia: func(fake string) string { proxy = newHoldProxy(t, fake, isCollection); return proxy.url },
	})
	s.start(t, "receiver")
	bodies, ids := batchCalls(t, r.calls)
	for _, b := range bodies {
		if a := s.post(t, salesforceRoute, b); a.Queued != 1 {
			t.Fatalf("queued %d, want 1", a.Queued)
		}
	}
	ctx := context.Background()
	in := s.inspector(t)

	proxy.armed.Store(true)
	w1 := s.startWorkerProcess(t, "worker-1")
	waitHeld(t, proxy, w1)
	w1.kill(t)
	proxy.let()

	// Batches were in flight: some collection requests answered, one stored but not heard,
	// not every call written; the killed worker's tasks are still active in the queue.
	written, colls := len(s.sf.Tasks()), len(s.sf.Collections())
	if colls < r.heldCollection || written >= r.calls {
		t.Fatalf("at the kill: %d collection requests, %d of %d calls written; want a run in the middle", colls, written, r.calls)
	}
	active, err := in.ListActiveTasks(queueName, asynq.PageSize(10000)) // the default page is 30
	if err != nil || len(active) == 0 {
		t.Fatalf("after the kill: %d active tasks (%v), want the killed worker's", len(active), err)
	}
	leases := callLeases(t, s.rdb)
	if len(leases) == 0 {
		t.Fatal("after the kill: no call lease in Redis; the killed worker's calls were running")
	}
	for k, ttl := range leases {
		if ttl <= 0 || ttl > worker.DefaultLockLease {
			t.Fatalf("call lease %s: ttl %v, want a lease of at most %v", k, ttl, worker.DefaultLockLease)
		}
	}
	t.Logf("at the kill: %d collection requests, %d of %d calls written, %d tasks active, %d call leases",
		colls, written, r.calls, len(active), len(leases))

	if !r.realRecovery {
		// What asynq's recoverer would find a minute later: every lease of the dead worker
		// expired long ago.
		lease := "asynq:{" + queueName + "}:lease"
		members, err := s.rdb.ZRange(ctx, lease, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		past := float64(time.Now().Add(-2 * time.Minute).Unix())
		for _, m := range members {
			if err := s.rdb.ZAddXX(ctx, lease, redis.Z{Score: past, Member: m}).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}

	restart := time.Now()
	w2 := s.startWorkerProcess(t, "worker-2")
	deadline := deliveryTimeout
	if r.realRecovery {
		deadline = 5 * time.Minute // a ceiling; the figure is measured, not asserted
	}
	// The floor: when asynq's recoverer has taken one of the killed worker's tasks back (all
	// of them go in one pass); what follows is ours.
	orphan := active[0].ID

	s.waitDrained(t, deadline, func(in *asynq.Inspector) {
		if recovered == 0 {
			ti, err := in.GetTaskInfo(queueName, orphan)
			if errors.Is(err, asynq.ErrTaskNotFound) || (err == nil && strings.Contains(ti.LastErr, asynq.ErrLeaseExpired.Error())) {
				recovered = time.Since(restart)
			}
		}
	})
	empty = time.Since(restart)
	if recovered == 0 {
		recovered = empty
	}

	tasks := s.salesforceTasks(t) // fails the test on a second Task for a detail
	if len(tasks) != r.calls {
		t.Errorf("Salesforce holds %d Tasks, want %d", len(tasks), r.calls)
	}
	for _, id := range ids {
		if _, ok := tasks[id]; !ok {
			t.Errorf("detail %s is not in Salesforce", id)
		}
	}
	created := 0
	for _, u := range s.sf.Upserts() {
		if u.Created {
			created++
		}
	}
	if created != r.calls {
		t.Errorf("Salesforce created %d Tasks, want %d (one per call)", created, r.calls)
	}
	w2.stop(t)
	if left := callLeases(t, s.rdb); len(left) != 0 {
		t.Errorf("after the stop, call leases remain: %v", left)
	}
	return recovered, empty
}

// callLeases returns the per-call lease keys in Redis with their TTLs.
func callLeases(t *testing.T, rdb *redis.Client) map[string]time.Duration {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, callLeasePrefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Duration{}
	for _, k := range keys {
		ttl, err := rdb.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		out[k] = ttl
	}
	return out
}

// kill -9 of a worker in the middle of batched syncs (collections of 20, a collection stored
// but its answer not heard, others lingering or waiting): after a restart every call is in
// Salesforce exactly once and the queue empties. asynq's 30s+30s lease wait is skipped (the
// leases are dated back); the per-call leases lapse by themselves. make test-crash runs the
// 1,000-call version without skipping anything.
func TestE2EWorkerKilledMidBatchRecoversEveryCallOnce(t *testing.T) {
	t.Parallel()
	rec, empty := crashMidBatch(t, crashRun{calls: 100, concurrency: 40, batch: "{max_size: 20, linger: 1s}", heldCollection: 3})
	t.Logf("after the restart: tasks recovered %.1fs, queue empty %.1fs", rec.Seconds(), empty.Seconds())
}

// The Done-when run of issue 9: 1,000 calls in collections of up to 200, kill -9 with
// batches in flight, nothing skipped. make test-crash; the time to empty is in
// docs/BENCHMARKS.md ("Worker: recovery").
func TestE2ECrash1000CallsRecoverWithinAsynqLease(t *testing.T) {
	if os.Getenv(crashEnv) == "" {
		t.Skipf("the 1,000-call crash run waits for asynq's recovery (about a minute): set %s=1 or run make test-crash", crashEnv)
	}
	rec, empty := crashMidBatch(t, crashRun{calls: 1000, concurrency: 400, batch: "{max_size: 200, linger: 1s}", heldCollection: 3, realRecovery: true})
	t.Logf("RECOVERY after the restart: asynq recovered the tasks %.1fs, queue empty %.1fs (%.2fx)", rec.Seconds(), empty.Seconds(), empty.Seconds()/rec.Seconds())
}

// SIGTERM while handlers run: one call waits on a CRM lookup that answers only after
// worker.shutdown_timeout (5s here), five wait in a lingering batch (linger 10s). The worker
// exits cleanly and leaves no call lease in Redis (a lease left behind would hold the call
// back until it lapses); after a restart every call is delivered exactly once.
func TestE2EWorkerSIGTERMLeavesNoLease(t *testing.T) {
	t.Parallel()
	const suzuki = "09000000000" // a seeded customer's number; the batch calls' is Takahashi's
	var proxy *holdProxy
	isSuzukiSearch := func(r *http.Request) bool {
		q := r.URL.Query().Get("q")
		return r.Method == http.MethodGet && strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "/"), "/search") &&
			(strings.Contains(q, suzuki) || strings.Contains(q, "0000-0000"))
	}
	s := newStack(t, stackOptions{workerConcurrency: 20, salesforceBatch: "{max_size: 200, linger: 10s}",
		salesforceVia: func(fake string) string { proxy = newHoldProxy(t, fake, isSuzukiSearch); return proxy.url }})
	s.start(t, "receiver")
	bodies, ids := batchCalls(t, 6)
	bodies[5] = bytes.ReplaceAll(bodies[5], []byte(`"to_number": "05099999999"`), []byte(`"to_number": "`+suzuki+`"`))
	if bytes.Contains(bodies[5], []byte("05099999999")) {
		t.Fatal("the sixth call still names Takahashi's number")
	}
	for _, b := range bodies {
		s.post(t, salesforceRoute, b)
	}

	proxy.armed.Store(true)
	w1 := s.startWorkerProcess(t, "worker-1")
	waitHeld(t, proxy, w1)
	eventually(t, deliveryTimeout, "every call running, none sent", func() (bool, string) {
		leases := len(callLeases(t, s.rdb))
		return leases == len(ids) && s.sf.Count(salesforcefake.OpSearch) >= 2 && len(s.sf.Collections()) == 0,
			fmt.Sprintf("%d call leases, %d searches, %d collections", leases, s.sf.Count(salesforcefake.OpSearch), len(s.sf.Collections()))
	})
	w1.stop(t)
	if left := callLeases(t, s.rdb); len(left) != 0 {
		t.Errorf("after SIGTERM, call leases remain in Redis: %v", left)
	}
	if n := len(s.sf.Tasks()); n != 0 {
		t.Fatalf("%d Tasks written before the stop; the test wants every call still in flight", n)
	}
	proxy.let()

	w2 := s.startWorkerProcess(t, "worker-2")
	s.waitDelivered(t)
	tasks := s.salesforceTasks(t) // fails the test on a second Task for a detail
	for _, id := range ids {
		if _, ok := tasks[id]; !ok {
			t.Errorf("detail %s is not in Salesforce", id)
		}
	}
	if len(tasks) != len(ids) {
		t.Errorf("Salesforce holds %d Tasks, want %d", len(tasks), len(ids))
	}
	w2.stop(t)
	if left := callLeases(t, s.rdb); len(left) != 0 {
		t.Errorf("after the second stop, call leases remain: %v", left)
	}
}
