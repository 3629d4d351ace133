package receiver

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/callstatus"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// replicaSet is a master with replicas (no Sentinel: the receiver's wait needs only
// replication), and a fail-fast client of the master.
type replicaSet struct {
	master   *redistest.Server
	replicas []*redistest.Server
	rdb      *redis.Client
}

func startReplicaSet(t *testing.T, n int) *replicaSet { return startReplicaSetB(t, n) }

func startReplicaSetB(t testing.TB, n int) *replicaSet {
	t.Helper()
	m := redistest.Start(t, "--repl-diskless-sync-delay", "0") // Redis 7 waits 5s by default
	_, port, _ := strings.Cut(m.Addr(), ":")
	rs := &replicaSet{master: m}
	for range n {
		rs.replicas = append(rs.replicas, redistest.Start(t, "--replicaof", "127.0.0.1", port))
	}
	rs.rdb = redis.NewClient(&redis.Options{Addr: m.Addr(), DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = rs.rdb.Close() })
	rs.waitOnline(t, n)
	return rs
}

func (rs *replicaSet) waitOnline(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := rs.rdb.Info(context.Background(), "replication").Result()
		if err == nil && strings.Count(info, "state=online") == n && strings.Contains(info, "connected_slaves:"+strconv.Itoa(n)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("master does not report %d replicas: %s %v", n, info, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the master's view of its replicas
	}
}

func (rs *replicaSet) pause(t *testing.T) {
	for _, r := range rs.replicas {
		r.Pause()
	}
	t.Cleanup(rs.resume)
}

func (rs *replicaSet) resume() {
	for _, r := range rs.replicas {
		r.Resume()
	}
}

func withAck(n config.AckReplicas, timeout time.Duration) harnessOption {
	return func(o *Options) { o.AckReplicas, o.AckTimeout = n, timeout }
}

func newStatus(t *testing.T, rdb redis.UniversalClient) *callstatus.Store {
	t.Helper()
	st, err := callstatus.New(rdb, callstatus.Options{
		Queue: testQueue, Config: config.Status{Retention: time.Hour, MaxRecords: 1000}, Routes: testRoutes(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestAckReplicasNever2xxUnreplicated: with replicas stalled (connected, acknowledging
// nothing), a call is answered 503 with Retry-After, never 2xx, and so is MiiTel's
// re-send; /readyz's check says why. Once the replicas are back, the re-send is answered
// 200 (a duplicate: the first copy is queued, and now replicated), Ready is nil again, and
// every replica holds the task.
func TestAckReplicasNever2xxUnreplicated(t *testing.T) {
	rs := startReplicaSet(t, 2)
	h := newHarnessOn(t, rs.rdb, withAck(config.AckAuto, 800*time.Millisecond))
	seed := sample(t, "call_analysis_completed/seed_sample.json")
	other := edit(t, seed, func(m map[string]any) { detail0(m)["id"] = "other-detail" })
	waitReady(t, h.r) // as in TestReadyTransitions: the replicas acknowledge once before the test
	if resp, body := h.post("/webhooks/miitel/seed", other, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("with replicas healthy: %d %s\n%s", resp.StatusCode, body, h.logs)
	}
	if err := h.r.Ready(context.Background()); err != nil {
		t.Fatalf("Ready with replicas healthy: %v", err)
	}
	if got := testutil.ToFloat64(h.r.enq.m.ackReplicas); got != 2 {
		t.Errorf("ack_replicas gauge %v, want 2 (auto)", got)
	}

	rs.pause(t)
	for i := range 2 { // the call and MiiTel's re-send
		resp, body := h.post("/webhooks/miitel/seed", seed, nil)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("send %d with replicas stalled: %d %s, want 503", i, resp.StatusCode, body)
		}
		if ra := resp.Header.Get("Retry-After"); ra != "30" {
			t.Errorf("Retry-After %q", ra)
		}
	}
	if got := testutil.ToFloat64(h.r.enq.m.ackFailures.WithLabelValues(reasonReplicas)); got != 2 {
		t.Errorf("enqueue_failures_total{reason=too_few_replicas} = %v, want 2", got)
	}
	err := h.r.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), "0 of 2 replicas") {
		t.Errorf("Ready with replicas stalled: %v", err)
	}
	if got := testutil.ToFloat64(h.r.enq.m.ready); got != 0 {
		t.Errorf("ready gauge %v, want 0", got)
	}
	if !strings.Contains(h.logs.String(), "replicas confirmed the write") {
		t.Errorf("the 503's log line does not say why:\n%s", h.logs)
	}

	rs.resume()
	// A resumed replica first works off what piled up; Ready turns nil once it confirms.
	waitReady(t, h.r)
	resp, body := h.post("/webhooks/miitel/seed", seed, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"duplicates":1`) {
		t.Fatalf("re-send after resume: %d %s, want 200 duplicate", resp.StatusCode, body)
	}
	pending := h.pending()
	if len(pending) != 2 {
		t.Fatalf("%d tasks queued, want 2", len(pending))
	}
	for i, r := range rs.replicas {
		keys, err := r.Client().Keys(context.Background(), "asynq:{"+testQueue+"}:t:*").Result()
		if err != nil || len(keys) != 2 {
			t.Errorf("replica %d holds %d tasks (%v), want 2", i, len(keys), err)
		}
	}
}

// TestReadyTransitions: Ready follows what an enqueue would meet: NOREPLICAS
// (min-replicas-to-write with the replica gone), back when the replica returns; Redis down,
// back when it answers.
func TestReadyTransitions(t *testing.T) {
	rs := startReplicaSet(t, 1)
	h := newHarnessOn(t, rs.rdb, withAck(1, 800*time.Millisecond))
	ctx := context.Background()
	// A replica the master reports online may still be starved of CPU on a loaded machine
	// (a clean-clone run saw its first WAIT time out): what this test is about starts once
	// one acknowledgement came through.
	waitReady(t, h.r)
	if err := rs.rdb.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	rs.replicas[0].Stop()
	rs.waitOnline(t, 0)
	if err := h.r.Ready(ctx); err == nil || !strings.Contains(err.Error(), "min-replicas-to-write") {
		t.Errorf("Ready with NOREPLICAS: %v", err)
	}
	seed := sample(t, "call_analysis_completed/seed_sample.json")
	if resp, body := h.post("/webhooks/miitel/seed", seed, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("call with NOREPLICAS: %d %s", resp.StatusCode, body)
	}
	if got := testutil.ToFloat64(h.r.enq.m.ackFailures.WithLabelValues(reasonNoReplicas)); got != 1 {
		t.Errorf("enqueue_failures_total{reason=noreplicas} = %v, want 1", got)
	}
	rs.replicas[0].Restart() // empty, resyncs from the master
	rs.waitOnline(t, 1)
	waitReady(t, h.r)
	if resp, body := h.post("/webhooks/miitel/seed", seed, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("call with the replica back: %d %s", resp.StatusCode, body)
	}

	rs.master.Stop()
	if err := h.r.Ready(ctx); err == nil || !isRedisDown(err) {
		t.Errorf("Ready with the master down: %v", err)
	}
	rs.master.Restart() // empty: the replica resyncs, min-replicas-to-write is gone with it
	rs.waitOnline(t, 1)
	waitReady(t, h.r)
}

// TestStatusRecordedAtReceipt: the enqueue script records each event received in the call
// status, a re-send as a duplicate, so a call queued while no worker runs reads as pending,
// not as "never sent".
func TestStatusRecordedAtReceipt(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	st := newStatus(t, rdb)
	h := newHarnessOn(t, rdb, func(o *Options) { o.Status = Status{Lua: callstatus.NoteLua, Args: st} })
	seed := sample(t, "call_analysis_completed/seed_sample.json")
	for range 2 {
		if resp, body := h.post("/webhooks/miitel/seed", seed, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("post: %d %s", resp.StatusCode, body)
		}
	}
	var call struct {
		Call struct {
			ID string `json:"id"`
		} `json:"call"`
	}
	if err := json.Unmarshal(seed, &call); err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(context.Background(), call.Call.ID)
	if err != nil || len(got) != 1 {
		t.Fatalf("status of %s: %+v %v", call.Call.ID, got, err)
	}
	s := got[0]
	if s.State != callstatus.Pending || s.Route != "seed" || len(s.Events) != 1 || s.Events[0].Duplicates != 1 {
		t.Errorf("status %+v, want pending on route seed, one event with one duplicate", s)
	}
}

// TestStatusNeedsQueueSlot: a status store of another queue (its keys in another hash
// slot, which a Cluster refuses in one script) is refused before anything is written.
func TestStatusNeedsQueueSlot(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	st, err := callstatus.New(rdb, callstatus.Options{Queue: "elsewhere", Config: config.Status{Retention: time.Hour, MaxRecords: 10}})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessOn(t, rdb, func(o *Options) { o.Status = Status{Lua: callstatus.NoteLua, Args: st} })
	resp, body := h.post("/webhooks/miitel/seed", sample(t, "call_analysis_completed/seed_sample.json"), nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("post: %d %s", resp.StatusCode, body)
	}
	if n := h.redisKeys(); n != 0 {
		t.Errorf("%d keys written", n)
	}
	if !strings.Contains(h.logs.String(), "not in the slot of queue") {
		t.Errorf("log does not say why:\n%s", h.logs)
	}
}

// TestStatusOnCluster: on a Redis Cluster the task, the ledger and the status keys of one
// request run in one script (no CROSSSLOT), and the wait goes to the slot's master.
func TestStatusOnCluster(t *testing.T) {
	cs := redistest.StartCluster(t, 3, 0)
	cl := cs.Client()
	st := newStatus(t, cl)
	h := newHarnessOnUniversal(t, cl, func(o *Options) {
		o.Status = Status{Lua: callstatus.NoteLua, Args: st}
		o.AckReplicas, o.AckTimeout = config.AckAuto, time.Second
	})
	seed := sample(t, "call_analysis_completed/seed_sample.json")
	if resp, body := h.post("/webhooks/miitel/seed", seed, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("post on the cluster: %d %s", resp.StatusCode, body)
	}
	got, err := st.Get(context.Background(), "99e2fdb7-845a-46de-8d94-882add220551")
	if err != nil || len(got) != 1 || got[0].State != callstatus.Pending {
		t.Errorf("status on the cluster: %+v %v", got, err)
	}
	if err := h.r.Ready(context.Background()); err != nil {
		t.Errorf("Ready on the cluster: %v", err)
	}
}

// isRedisDown: Ready's error for a Redis that refuses connections, which takes go-redis a
// few dial attempts, so it may be over before or after Ready's own deadline.
func isRedisDown(err error) bool {
	return strings.Contains(err.Error(), "redis is not reachable") || strings.Contains(err.Error(), "redis did not answer within")
}

// waitReady polls Ready until it is nil: readiness returning is a transition the test
// observes, on the replicas' schedule.
func waitReady(t *testing.T, r *Receiver) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := r.Ready(context.Background())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready again: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
