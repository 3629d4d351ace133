package redistest

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestSentinelFailoverAndKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 6 redis-server processes and fails over twice; skipped with -short")
	}
	ctx := context.Background()
	s := StartSentinel(t, SentinelOptions{Extra: Durable})
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName, SentinelAddrs: s.SentinelAddrs()})
	defer c.Close()
	if err := c.Set(ctx, "k", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	first, _ := s.Master(ctx)
	second := s.Failover(ctx)
	if second == first {
		t.Fatal("failover kept the master")
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v1" {
		t.Fatalf("after failover: %q, %v", v, err)
	}
	killed, third := s.KillMaster(ctx)
	if killed != second || third == second {
		t.Fatalf("kill: killed %v, promoted %v", killed.Addr(), third.Addr())
	}
	killed.Restart() // on its AOF; the Sentinels turn it into a replica
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v1" {
		t.Fatalf("after kill: %q, %v", v, err)
	}
}

func TestClusterServesEverySlot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 6 redis-server processes; skipped with -short")
	}
	ctx := context.Background()
	cs := StartCluster(t, 3, 1)
	c := cs.Client()
	for i := range 100 {
		k := "key-" + string(rune('a'+i%26)) + string(rune('0'+i/26))
		if err := c.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
	}
	var n atomic.Int32 // ForEachMaster calls fn concurrently
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		keys, err := m.DBSize(ctx).Result()
		if keys > 0 {
			n.Add(1)
		}
		return err
	})
	if err != nil || n.Load() != 3 {
		t.Errorf("keys spread over %d masters (%v), want 3", n.Load(), err)
	}
}
