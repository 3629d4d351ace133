package main

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot/hubspotfake"
)

const (
	hsBatchCreate = "POST /crm/v3/objects/calls/batch/create"
	hsCallSearch  = "POST /crm/v3/objects/calls/search"
)

// 200 calls through receiver -> Redis -> worker -> HubSpot, each its own asynq task, in
// batches of up to 100, with one call HubSpot refuses (validation) and one it fails alone
// once (INTERNAL_ERROR in the 207). The refused call goes to the dead letter alone, on its
// first attempt; the failed one is retried alone; no other call is sent twice or lost. 200
// calls plus the one retry go in three batch creates: the linger (10s) is far longer than
// 200 tasks take to join a batch, so a batch goes when it is full, and only the retried
// call is left over for a third. Lookups: one owner request, at most two searches.
func TestE2EHubSpotBatchesBadCallAlone(t *testing.T) {
	t.Parallel()
	const n = 200
	s := newStack(t, stackOptions{workerConcurrency: n, hubspotBatch: "{max_size: 100, linger: 10s}"})
	bodies, ids := batchCalls(t, n)
	refused, failed := ids[37], ids[171]
	s.hs.FailCall(refused, 1, hubspotfake.Fault{Category: "VALIDATION_ERROR", Message: "Property values were not valid: hs_call_body refused by a validation rule"})
	s.hs.FailCall(failed, 1, hubspotfake.Fault{Category: "INTERNAL_ERROR", Message: "internal error, try again"})
	s.start(t, "serve")
	for _, b := range bodies {
		if a := s.post(t, hubspotRoute, b); a.Queued != 1 {
			t.Fatalf("queued %d, want 1", a.Queued)
		}
	}

	in := s.inspector(t)
	eventually(t, deliveryTimeout, "every call delivered or dead-lettered", func() (bool, string) {
		qi, err := in.GetQueueInfo(queueName)
		if err != nil {
			return false, err.Error()
		}
		return qi.Pending+qi.Active+qi.Scheduled+qi.Retry == 0 && qi.Archived == 1,
			fmt.Sprintf("pending %d active %d scheduled %d retry %d archived %d", qi.Pending, qi.Active, qi.Scheduled, qi.Retry, qi.Archived)
	})
	archived, err := in.ListArchivedTasks(queueName)
	if err != nil || len(archived) != 1 {
		t.Fatalf("archived: %d tasks, %v; want 1", len(archived), err)
	}
	if a := archived[0]; a.Retried != 0 || !strings.Contains(a.LastErr, "VALIDATION_ERROR") || !strings.Contains(string(a.Payload), refused) {
		t.Errorf("dead letter: retried %d, %q; want the refused call, not retried, with HubSpot's category", a.Retried, a.LastErr)
	}
	for outcome, want := range map[string]float64{"delivered": n - 1, "retry": 1, "dead": 1, "throttled": 0} {
		if got := s.metric(t, "mcs_worker_tasks_total", map[string]string{"outcome": outcome}); got != want {
			t.Errorf("mcs_worker_tasks_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}
	calls := s.hubspotCalls(t) // fails on a second call for a detail
	if len(calls) != n-1 {
		t.Errorf("HubSpot holds %d calls, want %d", len(calls), n-1)
	}
	for _, id := range ids {
		c, ok := calls[id]
		if ok == (id == refused) {
			t.Errorf("detail %s: in HubSpot %v", id, ok)
		}
		if ok && len(c.Contacts) != 1 {
			t.Errorf("detail %s: associated with %v, want the caller", id, c.Contacts)
		}
	}
	sizes := s.hs.BatchInputs(hsBatchCreate)
	slices.Sort(sizes)
	if !slices.Equal(sizes, []int{1, 100, 100}) {
		t.Errorf("inputs per batch create %v, want [1 100 100]", sizes)
	}
	sent := map[string]int{}
	for _, r := range s.hs.Requests() {
		if r.Route == hsBatchCreate {
			for _, id := range ids {
				sent[id] += strings.Count(r.Body, `"hs_call_external_id":"`+id+`"`)
			}
		}
	}
	for _, id := range ids {
		want := 1
		if id == failed {
			want = 2
		}
		if sent[id] != want {
			t.Errorf("detail %s sent %d times, want %d", id, sent[id], want)
		}
	}
	if o, c := s.hs.Count("GET /crm/v3/owners"), s.hs.Count("POST /crm/v3/objects/contacts/search"); o != 1 || c > 2 {
		t.Errorf("%d owner lookups and %d contact searches for %d calls, want 1 and at most 2", o, c, n)
	}
	if n := s.hs.Count(hsCallSearch); n != 0 {
		t.Errorf("%d call searches: no create's outcome was unknown", n)
	}
}

// A worker killed (SIGKILL) while HubSpot's answer to a batch create of 50 calls is on its
// way: HubSpot holds the 50 calls, the worker never learned their ids. A fresh worker
// recovers the 50 tasks, finds the calls in one search by hs_call_external_id and adopts
// them: exactly one call per detail, none created twice.
func TestE2EHubSpotWorkerKilledMidBatch(t *testing.T) {
	t.Parallel()
	const n = 50
	var proxy *holdProxy
	isCreate := func(r *http.Request) bool {
		return r.Method == http.MethodPost && r.URL.Path == "/crm/v3/objects/calls/batch/create"
	}
	s := newStack(t, stackOptions{workerConcurrency: n, hubspotBatch: "{max_size: 50, linger: 10s}",
		hubspotVia: func(fake string) string { proxy = newHoldProxy(t, fake, isCreate); return proxy.url }})
	s.start(t, "receiver")
	bodies, ids := batchCalls(t, n)
	w1 := s.startWorkerProcess(t, "worker-1")
	proxy.armed.Store(true)
	for _, b := range bodies {
		s.post(t, hubspotRoute, b)
	}
	waitHeld(t, proxy, w1)
	w1.kill(t)
	proxy.let()
	if got := len(s.hs.Calls()); got != n {
		t.Fatalf("after the kill HubSpot holds %d calls, want the %d of the held batch", got, n)
	}
	if sizes := s.hs.BatchInputs(hsBatchCreate); !slices.Equal(sizes, []int{n}) {
		t.Fatalf("batch creates %v, want one of %d", sizes, n)
	}
	in := s.inspector(t)
	active, err := in.ListActiveTasks(queueName, asynq.PageSize(n+10))
	if err != nil || len(active) != n {
		t.Fatalf("after the kill: %d active tasks (%v), want the killed worker's %d", len(active), err, n)
	}
	for _, task := range active {
		i := slices.IndexFunc(ids, func(id string) bool { return strings.Contains(string(task.Payload), id) })
		if i < 0 {
			t.Fatalf("task %s carries none of the details", task.ID)
		}
		skipAhead(t, s, task.ID, hubspotRoute, ids[i])
	}

	w2 := s.startWorkerProcess(t, "worker-2")
	s.waitDelivered(t)
	calls := s.hubspotCalls(t) // fails on a second call for a detail
	if len(calls) != n {
		t.Errorf("HubSpot holds %d calls, want %d", len(calls), n)
	}
	for _, id := range ids {
		if c, ok := calls[id]; !ok || len(c.Contacts) != 1 {
			t.Errorf("detail %s: %+v, %v; want one call associated with the caller", id, c, ok)
		}
	}
	if sizes := s.hs.BatchInputs(hsBatchCreate); !slices.Equal(sizes, []int{n}) {
		t.Errorf("batch creates %v, want only the held one of %d", sizes, n)
	}
	if got := s.hs.Count(hsCallSearch); got < 1 || got > 2 {
		t.Errorf("%d call searches for %d recovered tasks, want 1 (2 if they split)", got, n)
	}
	w2.stop(t)
}
