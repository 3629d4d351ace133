package enqueue

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// replicated is a master and its replicas, no Sentinel: the enqueue's wait needs only
// replication.
type replicated struct {
	master   *redistest.Server
	replicas []*redistest.Server
}

func startReplicated(t *testing.T, n int) *replicated {
	t.Helper()
	// No diskless-sync delay: Redis 7 waits 5s by default for more replicas to share a sync.
	m := redistest.Start(t, "--repl-diskless-sync-delay", "0")
	_, port, _ := strings.Cut(m.Addr(), ":")
	rs := &replicated{master: m}
	for range n {
		rs.replicas = append(rs.replicas, redistest.Start(t, "--replicaof", "127.0.0.1", port))
	}
	rs.waitConnected(t, n)
	return rs
}

// waitConnected polls until the master reports n replicas online.
func (rs *replicated) waitConnected(t *testing.T, n int) {
	t.Helper()
	c := rs.master.Client()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := c.Info(context.Background(), "replication").Result()
		if err == nil && strings.Count(info, "state=online") == n && strings.Contains(info, "connected_slaves:"+strconv.Itoa(n)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("master does not report %d replicas online: %s %v", n, info, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the master's own view of its replicas
	}
}

func (rs *replicated) pause(t *testing.T) {
	for _, r := range rs.replicas {
		r.Pause()
	}
	t.Cleanup(rs.resume) // a paused replica must not outlive a failed test
}

func (rs *replicated) resume() {
	for _, r := range rs.replicas {
		r.Resume()
	}
}

// client fails fast like the receiver's harness.
func client(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: 2 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func enqueueAck(t *testing.T, q *Queue, id string) (Result, Acked, error) {
	t.Helper()
	res, acked, err := q.Enqueue(context.Background(), []Task{{ID: id, Message: message(id, []byte(`{}`))}})
	if err != nil {
		return 0, acked, err
	}
	return res[0], acked, nil
}

// TestAckReplicatedBeforeDone: with auto, an enqueue waits for both replicas, so when it
// returns both hold the task (read on each replica at once, no polling).
func TestAckReplicatedBeforeDone(t *testing.T) {
	rs := startReplicated(t, 2)
	q := New(client(t, rs.master.Addr()), queue, Ack{Replicas: AckAuto, Timeout: time.Second}, "")
	res, acked, err := enqueueAck(t, q, "a1")
	if err != nil || res != Queued {
		t.Fatalf("enqueue: %v %v", res, err)
	}
	if acked != (Acked{Want: 2, Got: 2}) {
		t.Errorf("acked %+v, want 2 of 2 (auto: the master reports 2)", acked)
	}
	for i, r := range rs.replicas {
		if n := r.Client().Exists(context.Background(), q.TaskKey("a1")).Val(); n != 1 {
			t.Errorf("replica %d does not hold the task when the enqueue returned", i)
		}
	}
}

// TestAckStalledReplicas: replicas connected but not acknowledging (SIGSTOP) make every
// enqueue an AckError within the timeout, the first and its re-send alike. The re-send
// runs on a connection whose own last write the replicas did confirm (a pooled connection
// of another receiver): WAIT there would return at once, the duplicate being a read, were
// it not for the marker the script writes. Once the replicas are back the re-send is a
// Duplicate confirmed by both, and the replicas hold the task.
func TestAckStalledReplicas(t *testing.T) {
	rs := startReplicated(t, 2)
	ack := Ack{Replicas: AckAuto, Timeout: 500 * time.Millisecond}
	one := redis.NewClient(&redis.Options{Addr: rs.master.Addr(), PoolSize: 1, MaxRetries: -1})
	t.Cleanup(func() { _ = one.Close() })
	old := New(one, queue, ack, "")
	if _, acked, err := enqueueAck(t, old, "warm"); err != nil || acked.Got != 2 { // its one connection wrote, confirmed
		t.Fatal(acked, err)
	}
	rs.pause(t)
	q := New(client(t, rs.master.Addr()), queue, ack, "")
	_, acked, err := enqueueAck(t, q, "s1")
	var ae *AckError
	if !errors.As(err, &ae) || ae.Want != 2 || ae.Got != 0 || acked.Want != 2 {
		t.Fatalf("enqueue with stalled replicas: %+v %v, want an AckError 0 of 2", acked, err)
	}
	if res, _, err := enqueueAck(t, old, "s1"); !errors.As(err, &ae) {
		t.Fatalf("re-send with stalled replicas: %v %v, want an AckError (never a duplicate done)", res, err)
	}
	if _, err := old.Probe(context.Background()); !errors.As(err, &ae) {
		t.Errorf("Probe with stalled replicas: %v, want an AckError", err)
	}
	rs.resume()
	res, acked, err := enqueueAck(t, old, "s1")
	if err != nil || res != Duplicate || acked.Got != 2 {
		t.Fatalf("re-send after the replicas resumed: %v %+v %v, want a Duplicate confirmed by 2", res, acked, err)
	}
	for i, r := range rs.replicas {
		if r.Client().Exists(context.Background(), q.TaskKey("s1")).Val() != 1 {
			t.Errorf("replica %d lacks the task its duplicate was acknowledged for", i)
		}
	}
	if _, err := q.Probe(context.Background()); err != nil {
		t.Errorf("Probe after resume: %v", err)
	}
}

// TestAckFixedCountReplicaKilled: ack_replicas 2 with one replica killed is an AckError
// (1 of 2); auto without a hold follows the master, which now reports one.
func TestAckFixedCountReplicaKilled(t *testing.T) {
	rs := startReplicated(t, 2)
	rdb := client(t, rs.master.Addr())
	fixed := New(rdb, queue, Ack{Replicas: 2, Timeout: 500 * time.Millisecond}, "")
	auto := New(rdb, queue, Ack{Replicas: AckAuto, Timeout: 500 * time.Millisecond, Refresh: time.Hour, Hold: -1}, "")
	if _, acked, err := enqueueAck(t, auto, "k0"); err != nil || acked.Want != 2 {
		t.Fatalf("auto before: %+v %v", acked, err)
	}
	rs.replicas[1].Stop()
	rs.waitConnected(t, 1)
	_, _, err := enqueueAck(t, fixed, "k1")
	var ae *AckError
	if !errors.As(err, &ae) || ae.Got != 1 || ae.Want != 2 {
		t.Fatalf("fixed 2 with one replica: %v", err)
	}
	// auto still trusts its count of 2 (Refresh an hour): the first enqueue falls short,
	// which makes the next one ask the master again.
	if _, _, err := enqueueAck(t, auto, "k2"); !errors.As(err, &ae) {
		t.Fatalf("auto with a stale count: %v, want an AckError", err)
	}
	res, acked, err := enqueueAck(t, auto, "k2")
	if err != nil || acked != (Acked{Want: 1, Got: 1}) || res != Duplicate {
		t.Fatalf("auto after the failure: %v %+v %v, want a duplicate confirmed by the 1 replica left", res, acked, err)
	}
}

// TestAckNoReplicas: a master with min-replicas-to-write refuses the script (NOREPLICAS)
// once its replicas are gone; the enqueue says so, and so does Probe.
func TestAckNoReplicas(t *testing.T) {
	rs := startReplicated(t, 1)
	rdb := client(t, rs.master.Addr())
	if err := rdb.ConfigSet(context.Background(), "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	q := New(rdb, queue, Ack{Replicas: 1, Timeout: 500 * time.Millisecond}, "")
	rs.replicas[0].Stop()
	rs.waitConnected(t, 0)
	_, _, err := enqueueAck(t, q, "n1")
	if !IsNoReplicas(err) {
		t.Fatalf("enqueue: %v, want NOREPLICAS", err)
	}
	if n := rdb.Exists(context.Background(), q.TaskKey("n1")).Val(); n != 0 {
		t.Errorf("the refused script wrote the task")
	}
	if _, err := q.Probe(context.Background()); !IsNoReplicas(err) {
		t.Errorf("Probe: %v, want NOREPLICAS", err)
	}
}

// TestAckStandalone: auto on a Redis without replicas waits for none; a fixed count there
// is never satisfied.
func TestAckStandalone(t *testing.T) {
	rdb := client(t, redistest.Start(t).Addr())
	auto := New(rdb, queue, Ack{Replicas: AckAuto}, "")
	if res, acked, err := enqueueAck(t, auto, "x"); err != nil || res != Queued || acked.Want != 0 {
		t.Fatalf("auto standalone: %v %+v %v", res, acked, err)
	}
	one := New(rdb, queue, Ack{Replicas: 1, Timeout: 50 * time.Millisecond}, "")
	var ae *AckError
	if _, _, err := enqueueAck(t, one, "y"); !errors.As(err, &ae) {
		t.Fatalf("1 replica wanted on a standalone Redis: %v", err)
	}
}

// TestAckReplicaAsMaster: auto refuses to enqueue through a node that is not a master (a
// client left on a demoted master during a failover), before any write.
func TestAckReplicaAsMaster(t *testing.T) {
	rs := startReplicated(t, 1)
	q := New(client(t, rs.replicas[0].Addr()), queue, Ack{Replicas: AckAuto}, "")
	if _, _, err := enqueueAck(t, q, "r"); err == nil || !strings.Contains(err.Error(), "not a master") {
		t.Fatalf("enqueue on a replica: %v", err)
	}
}

// TestAckClusterReplicas: on a Redis Cluster of 3 masters with a replica each, the script
// and WAIT go to the master owning the queue's slot, and auto finds its one replica.
func TestAckClusterReplicas(t *testing.T) {
	cs := redistest.StartCluster(t, 3, 1, "--repl-diskless-sync-delay", "0")
	cl := cs.Client()
	q := New(cl, queue, Ack{Replicas: AckAuto, Timeout: time.Second}, "")
	// A replica joins its master after cluster_state turns ok: poll until auto sees it.
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		res, acked, err := enqueueAck(t, q, "c"+strconv.Itoa(i))
		if err == nil && res == Queued && acked == (Acked{Want: 1, Got: 1}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster enqueue: %v %+v %v", res, acked, err)
		}
		if _, addr, err := q.node(context.Background()); err == nil {
			q.failed(context.Background(), addr) // ask again rather than wait for Refresh
		}
		time.Sleep(50 * time.Millisecond) // polling the cluster's own convergence
	}
	if _, err := q.Probe(context.Background()); err != nil {
		t.Errorf("Probe on the cluster: %v", err)
	}
}

// TestAckAutoHoldsTheMostSeen: a replica leaving the master (here promoted, as the
// Sentinels do first in a planned failover, while the old master keeps its other replica)
// does not lower auto's count for the hold: the enqueue is an AckError (the receiver's 503),
// never done on the one replica left, even once the master was asked again. After the hold
// auto follows the master.
func TestAckAutoHoldsTheMostSeen(t *testing.T) {
	rs := startReplicated(t, 2)
	rdb := client(t, rs.master.Addr())
	ctx := context.Background()
	// 1s: the confirmations that must arrive do so on a loaded machine, too.
	q := New(rdb, queue, Ack{Replicas: AckAuto, Timeout: time.Second, Refresh: time.Millisecond, Hold: time.Hour}, "")
	if _, acked, err := enqueueAck(t, q, "h0"); err != nil || acked != (Acked{Want: 2, Got: 2}) {
		t.Fatalf("before: %+v %v", acked, err)
	}
	if err := rs.replicas[1].Client().ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	rs.waitConnected(t, 1)
	for i := range 2 { // each AckError makes the next enqueue read INFO again
		_, acked, err := enqueueAck(t, q, "h"+strconv.Itoa(i+1))
		var ae *AckError
		if !errors.As(err, &ae) || acked.Want != 2 || acked.Got != 1 {
			t.Fatalf("enqueue %d with one replica left: %+v %v, want an AckError waiting for the 2 seen", i, acked, err)
		}
	}
	// The same master and replica with a hold that has passed: the replica left counts.
	short := New(rdb, queue, Ack{Replicas: AckAuto, Timeout: time.Second, Refresh: time.Millisecond, Hold: -1}, "")
	if _, acked, err := enqueueAck(t, short, "h9"); err != nil || acked != (Acked{Want: 1, Got: 1}) {
		t.Fatalf("without a hold: %+v %v", acked, err)
	}
}

// TestAckAutoCountsOnlyOnline: a replica still in its first sync is in connected_slaves
// but cannot acknowledge; auto waits only for the online one, so enqueues are done, not
// refused until the sync ends.
func TestAckAutoCountsOnlyOnline(t *testing.T) {
	rs := startReplicated(t, 1)
	rdb := client(t, rs.master.Addr())
	ctx := context.Background()
	// The next replica's sync waits an hour for company (diskless sync delay): it stays
	// connected in wait_bgsave for the whole test.
	if err := rdb.ConfigSet(ctx, "repl-diskless-sync-delay", "3600").Err(); err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(rs.master.Addr(), ":")
	redistest.Start(t, "--replicaof", "127.0.0.1", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := rdb.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "connected_slaves:2") && strings.Count(info, "state=online") == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second replica is not connected and syncing: %s %v", info, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the master's own view of its replicas
	}
	q := New(rdb, queue, Ack{Replicas: AckAuto, Timeout: time.Second}, "")
	if res, acked, err := enqueueAck(t, q, "o1"); err != nil || res != Queued || acked != (Acked{Want: 1, Got: 1}) {
		t.Fatalf("auto with one replica online, one syncing: %v %+v %v, want done by the online one", res, acked, err)
	}
	if acked, err := q.Probe(ctx); err != nil || acked.Want != 1 {
		t.Errorf("Probe: %+v %v", acked, err)
	}
}
