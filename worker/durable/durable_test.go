package durable_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/durable"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// fast makes replicas sync at once instead of after Redis's 5s diskless-sync delay.
var fast = []string{"--repl-diskless-sync-delay", "0"}

func set(key, val string) func(ctx context.Context, c redis.Cmdable) error {
	return func(ctx context.Context, c redis.Cmdable) error { return c.Set(ctx, key, val, time.Minute).Err() }
}

func pause(t *testing.T, n *redistest.Server, _ time.Duration) { t.Helper(); n.Pause() }

func awake(t *testing.T, n *redistest.Server) { t.Helper(); n.Resume() }

// TestSentinel runs every case against one Sentinel set (master and two replicas) through
// a FailoverClient, the client config builds for redis.sentinel.
func TestSentinel(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Sentinels: 1, Extra: fast})
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName, SentinelAddrs: s.SentinelAddrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	replicas := s.Nodes[1:]

	t.Run("auto waits for every replica", func(t *testing.T) {
		a := durable.New(rdb, config.AckAuto, time.Second)
		for i := range 20 {
			key, val := fmt.Sprintf("auto:%d", i), fmt.Sprint(i)
			if err := a.Write(ctx, "test: set", key, set(key, val)); err != nil {
				t.Fatal(err)
			}
			// Confirmed by WAIT: every replica answers it now, not eventually.
			for _, r := range replicas {
				if got, err := r.Client().Get(ctx, key).Result(); err != nil || got != val {
					t.Fatalf("replica %s: GET %s = %q, %v right after a confirmed write; want %q", r.Addr(), key, got, err, val)
				}
			}
		}
	})

	t.Run("a paused replica makes auto time out", func(t *testing.T) {
		a := durable.New(rdb, config.AckAuto, testAckTimeout)
		if err := a.Write(ctx, "test: set", "warm", set("warm", "1")); err != nil {
			t.Fatal(err) // reads the replica count before the pause
		}
		pause(t, replicas[0], time.Second)
		start := time.Now()
		err := a.Write(ctx, "test: set", "paused", set("paused", "1"))
		var de *durable.Error
		if !errors.As(err, &de) {
			t.Fatalf("Write with a paused replica = %v, want a *durable.Error", err)
		}
		if de.Want != 2 || de.Got != 1 || !de.Throttled() || de.RetryAfter() <= 0 {
			t.Errorf("error = %+v (throttled %v, retry after %s); want 1 of 2, throttled, a retry delay", de, de.Throttled(), de.RetryAfter())
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Write took %s with ack_timeout 100ms", took)
		}
		awake(t, replicas[0])
	})

	t.Run("a number waits for that many", func(t *testing.T) {
		pause(t, replicas[1], time.Second)
		if err := durable.New(rdb, 1, 500*time.Millisecond).Write(ctx, "test: set", "one", set("one", "1")); err != nil {
			t.Errorf("ack_replicas 1 with one replica paused: %v", err)
		}
		err := durable.New(rdb, 2, testAckTimeout).Write(ctx, "test: set", "two", set("two", "1"))
		if de := (*durable.Error)(nil); !errors.As(err, &de) || de.Got != 1 {
			t.Errorf("ack_replicas 2 with one replica paused = %v, want 1 of 2 confirmed", err)
		}
		// More than exist can never be confirmed: a clear error, not a hang.
		err = durable.New(rdb, 3, testAckTimeout).Write(ctx, "test: set", "three", set("three", "1"))
		if de := (*durable.Error)(nil); !errors.As(err, &de) || de.Want != 3 {
			t.Errorf("ack_replicas 3 of 2 = %v, want a *durable.Error", err)
		}
		awake(t, replicas[1])
	})

	t.Run("off never waits", func(t *testing.T) {
		pause(t, replicas[0], time.Second)
		pause(t, replicas[1], time.Second)
		start := time.Now()
		if err := durable.New(rdb, 0, time.Second).Write(ctx, "test: set", "off", set("off", "1")); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took >= time.Second {
			t.Errorf("ack_replicas 0 took %s: it waited", took)
		}
		awake(t, replicas[0])
		awake(t, replicas[1])
	})

	t.Run("the write's own error is returned, without a WAIT", func(t *testing.T) {
		boom := errors.New("boom")
		err := durable.New(rdb, config.AckAuto, time.Second).Write(ctx, "test: set", "x", func(context.Context, redis.Cmdable) error { return boom })
		if !errors.Is(err, boom) {
			t.Fatalf("Write = %v, want the write's error", err)
		}
		if de := (*durable.Error)(nil); errors.As(err, &de) {
			t.Errorf("a failed write came back as a replication error: %v", err)
		}
	})
}

// TestAutoFollowsTheReplicas: a replica the master stops reporting is still waited for
// within the hold (the old master of a planned failover keeps a replica that would confirm
// writes the demotion flushes), and no longer after it: auto does not turn every write into
// a timeout for good.
func TestAutoFollowsTheReplicas(t *testing.T) {
	nodes := redistest.StartReplicated(t, 2)
	master, replicas := nodes[0], nodes[1:]
	ctx := context.Background()
	rdb := master.Client()
	online := func(want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			info, err := rdb.Info(ctx, "replication").Result()
			n, _ := durable.OnlineReplicas(info)
			if err == nil && n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("master reports %d online replicas, want %d:\n%s", n, want, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	online(2)
	// 1s: the writes that must be confirmed are, on a loaded machine too.
	held := durable.New(rdb, config.AckAuto, time.Second)
	a := durable.New(rdb, config.AckAuto, time.Second).WithHold(0)
	for _, x := range []*durable.Acks{held, a} {
		if err := x.Write(ctx, "test: set", "k", set("k", "1")); err != nil {
			t.Fatal(err)
		}
	}
	replicas[1].Stop()
	online(1)
	for range 2 {
		err := held.Write(ctx, "test: set", "k", set("k", "held"))
		if de := (*durable.Error)(nil); !errors.As(err, &de) || de.Want != 2 {
			t.Fatalf("within the hold: Write = %v, want 2 replicas still waited for", err)
		}
	}
	// The cached count (2) may still be used once; the shortfall forgets it.
	var err error
	for range 2 {
		if err = a.Write(ctx, "test: set", "k", set("k", "2")); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("auto still waits for a replica that left: %v", err)
	}
	if got, _ := replicas[0].Client().Get(ctx, "k").Result(); got != "2" {
		t.Errorf("the remaining replica holds %q after a confirmed write, want 2", got)
	}
}

// TestStandaloneAutoIsFree: auto on a Redis without replicas waits for none.
func TestStandaloneAutoIsFree(t *testing.T) {
	rdb := redistest.Start(t).Client()
	if err := durable.New(rdb, config.AckAuto, time.Second).Write(context.Background(), "test: set", "k", set("k", "1")); err != nil {
		t.Fatal(err)
	}
	err := durable.New(rdb, 1, testAckTimeout).Write(context.Background(), "test: set", "k", set("k", "1"))
	if de := (*durable.Error)(nil); !errors.As(err, &de) || de.Got != 0 {
		t.Errorf("ack_replicas 1 on a standalone Redis = %v, want 0 of 1 confirmed", err)
	}
}

// TestCluster: on a Cluster each write and its WAIT go to the key's own master, so keys in
// every slot range are confirmed by that master's replica (and no CROSSSLOT, no MOVED).
func TestCluster(t *testing.T) {
	cs := redistest.StartCluster(t, 3, 1, fast...)
	rdb := cs.Client()
	ctx := context.Background()
	// auto counts replicas in sync; StartCluster returns before they are.
	deadline := time.Now().Add(20 * time.Second)
	for _, m := range cs.Masters {
		for {
			info, _ := m.Client().Info(ctx, "replication").Result()
			if n, _ := durable.OnlineReplicas(info); n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("master %s: replica not in sync:\n%s", m.Addr(), info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	a := durable.New(rdb, config.AckAuto, time.Second)
	replicaOf := map[string]*redis.Client{} // master addr -> its replica
	for _, n := range cs.Nodes[3:] {
		c := n.Client()
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			t.Fatal(err)
		}
		var host, port string
		for _, l := range splitLines(info) {
			if v, ok := cut(l, "master_host:"); ok {
				host = v
			}
			if v, ok := cut(l, "master_port:"); ok {
				port = v
			}
		}
		replicaOf[host+":"+port] = c
	}
	for i := range 30 {
		key := fmt.Sprintf("cluster:%d", i)
		if err := a.Write(ctx, "test: set", key, set(key, "v")); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		m, err := rdb.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		r := replicaOf[m.Options().Addr]
		if r == nil {
			t.Fatalf("no replica found for master %s", m.Options().Addr)
		}
		// A replica answers reads of its slots with READONLY set on the connection.
		conn := r.Conn()
		_ = conn.ReadOnly(ctx).Err()
		got, err := conn.Get(ctx, key).Result()
		_ = conn.Close()
		if err != nil || got != "v" {
			t.Fatalf("replica of %s: GET %s = %q, %v right after a confirmed write", m.Options().Addr, key, got, err)
		}
	}
}

func splitLines(s string) []string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		out = append(out, strings.TrimSpace(l))
	}
	return out
}

func cut(l, prefix string) (string, bool) { return strings.CutPrefix(l, prefix) }

// testAckTimeout leaves a loaded 2-core machine under -race time to replicate what should
// succeed; the waits meant to fail (a paused replica) take this long each.
const testAckTimeout = time.Second
