package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Production runs Redis replicated (Sentinel) or sharded (Cluster); the failover and cluster
// tests need the same on loopback, started and broken by the test itself.

// Durable are the redis-server arguments of a production-shaped node: AOF with fsync every
// second (what the README asks for) and noeviction (an evicted key is a lost call).
var Durable = []string{"--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"}

// SentinelSet is a master, its replicas and the Sentinels watching them.
type SentinelSet struct {
	t          testing.TB
	MasterName string
	// Nodes are the data nodes; Nodes[0] was the master at start. After a failover the
	// master is whichever node the Sentinels name (Master).
	Nodes     []*Server
	Sentinels []*Server
}

// SentinelOptions shape StartSentinel.
type SentinelOptions struct {
	Replicas  int      // default 2
	Sentinels int      // default 3 (quorum 2)
	Extra     []string // redis-server arguments of every data node (e.g. Durable)
	// DownAfter is how long a master must be unreachable before the Sentinels agree it is
	// down (default 1s: tests want failovers in seconds, production uses 5-30s).
	DownAfter time.Duration
}

// StartSentinel starts a master with its replicas and Sentinels, all on free loopback ports,
// and waits until every replica is in sync and every Sentinel knows all of them.
func StartSentinel(t testing.TB, o SentinelOptions) *SentinelSet {
	t.Helper()
	if o.Replicas == 0 {
		o.Replicas = 2
	}
	if o.Sentinels == 0 {
		o.Sentinels = 3
	}
	if o.DownAfter == 0 {
		o.DownAfter = time.Second
	}
	s := &SentinelSet{t: t, MasterName: "mymaster"}
	master := Start(t, o.Extra...)
	s.Nodes = append(s.Nodes, master)
	for range o.Replicas {
		args := append(slices.Clone(o.Extra), "--replicaof", "127.0.0.1", strconv.Itoa(master.port))
		s.Nodes = append(s.Nodes, Start(t, args...))
	}
	ctx := context.Background()
	waitUntil(t, 20*time.Second, "replicas in sync", func() (bool, error) {
		info, err := master.Client().Info(ctx, "replication").Result()
		if err != nil {
			return false, err
		}
		return strings.Count(info, "state=online") == o.Replicas, nil
	})
	quorum := o.Sentinels/2 + 1
	for range o.Sentinels {
		port := freePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
			"sentinel monitor %s 127.0.0.1 %d %d\n"+
			"sentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s 10000\n"+
			"sentinel parallel-syncs %s 1\n",
			port, dir, s.MasterName, master.port, quorum, s.MasterName, o.DownAfter.Milliseconds(), s.MasterName, s.MasterName)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatalf("redistest: %v", err)
		}
		sn := &Server{t: t, port: port, args: []string{conf, "--sentinel"}}
		sn.start()
		t.Cleanup(sn.Stop)
		s.Sentinels = append(s.Sentinels, sn)
	}
	waitUntil(t, 30*time.Second, "sentinels to discover the replicas and each other", func() (bool, error) {
		for _, sn := range s.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr()})
			replicas, err := c.Replicas(ctx, s.MasterName).Result()
			others, err2 := c.Sentinels(ctx, s.MasterName).Result()
			_ = c.Close()
			if err != nil || err2 != nil || len(replicas) != o.Replicas || len(others) != o.Sentinels-1 {
				return false, nil
			}
		}
		return true, nil
	})
	return s
}

// SentinelAddrs are the Sentinels' host:port (config redis.sentinel.addrs).
func (s *SentinelSet) SentinelAddrs() []string {
	var out []string
	for _, sn := range s.Sentinels {
		out = append(out, sn.Addr())
	}
	return out
}

// Master returns the node the first answering Sentinel names as master.
func (s *SentinelSet) Master(ctx context.Context) (*Server, error) {
	for _, sn := range s.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr()})
		addr, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
		_ = c.Close()
		if err != nil || len(addr) != 2 {
			continue
		}
		for _, n := range s.Nodes {
			if n.Addr() == addr[0]+":"+addr[1] {
				return n, nil
			}
		}
	}
	return nil, fmt.Errorf("redistest: no sentinel names a master among the nodes")
}

// Failover asks a Sentinel for a planned failover (SENTINEL FAILOVER) and waits until every
// Sentinel names a new master and that node answers as one. It returns the new master.
func (s *SentinelSet) Failover(ctx context.Context) *Server {
	s.t.Helper()
	old, err := s.Master(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinels[0].Addr()})
	defer c.Close()
	if err := c.Failover(ctx, s.MasterName).Err(); err != nil {
		s.t.Fatalf("redistest: SENTINEL FAILOVER: %v", err)
	}
	return s.waitNewMaster(ctx, old)
}

// KillMaster SIGKILLs the current master and waits until the Sentinels promote a replica.
// It returns the killed node (Restart it to bring it back: on its AOF when started Durable;
// the Sentinels then make it a replica) and the new master.
func (s *SentinelSet) KillMaster(ctx context.Context) (killed, promoted *Server) {
	s.t.Helper()
	old, err := s.Master(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	old.Stop()
	return old, s.waitNewMaster(ctx, old)
}

func (s *SentinelSet) waitNewMaster(ctx context.Context, old *Server) *Server {
	s.t.Helper()
	var promoted *Server
	waitUntil(s.t, 60*time.Second, "a new master", func() (bool, error) {
		seen := map[string]bool{}
		for _, sn := range s.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr()})
			addr, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
			_ = c.Close()
			if err != nil || len(addr) != 2 {
				return false, nil
			}
			seen[addr[0]+":"+addr[1]] = true
		}
		if len(seen) != 1 {
			return false, nil
		}
		for a := range seen {
			if a == old.Addr() {
				return false, nil
			}
			for _, n := range s.Nodes {
				if n.Addr() == a {
					promoted = n
				}
			}
		}
		if promoted == nil {
			return false, nil
		}
		c := redis.NewClient(&redis.Options{Addr: promoted.Addr()})
		defer c.Close()
		role, err := c.Do(ctx, "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "master", nil
	})
	return promoted
}

// ClusterSet is a Redis Cluster of masters, each with its replicas.
type ClusterSet struct {
	t       testing.TB
	Masters []*Server
	Nodes   []*Server // masters first, then replicas
}

// StartCluster starts a Redis Cluster with masters (at least 3, as Redis requires for a
// failover-capable cluster) and replicasPerMaster replicas each, on free loopback ports, and
// waits until every node reports cluster_state:ok. extra are redis-server arguments of every
// node.
func StartCluster(t testing.TB, masters, replicasPerMaster int, extra ...string) *ClusterSet {
	t.Helper()
	if masters < 3 {
		t.Fatalf("redistest: a cluster needs at least 3 masters, got %d", masters)
	}
	cs := &ClusterSet{t: t}
	args := append([]string{"--cluster-enabled", "yes", "--cluster-node-timeout", "2000"}, extra...)
	for range masters * (1 + replicasPerMaster) {
		s := &Server{t: t, port: freePort(t)}
		dir := t.TempDir()
		s.args = append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--cluster-config-file", filepath.Join(dir, "nodes.conf")}, args...)
		s.start()
		t.Cleanup(s.Stop)
		cs.Nodes = append(cs.Nodes, s)
	}
	cs.Masters = cs.Nodes[:masters]
	ctx := context.Background()
	clients := make([]*redis.Client, len(cs.Nodes))
	ids := make([]string, len(cs.Nodes))
	for i, n := range cs.Nodes {
		clients[i] = n.Client()
		id, err := clients[i].Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatalf("redistest: CLUSTER MYID: %v", err)
		}
		ids[i] = id
	}
	// Slots split evenly over the masters (16384 in all), then every node meets node 0.
	const slots = 16384
	for i := range masters {
		lo, hi := i*slots/masters, (i+1)*slots/masters-1
		if err := clients[i].Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			t.Fatalf("redistest: CLUSTER ADDSLOTSRANGE: %v", err)
		}
	}
	for i := 1; i < len(cs.Nodes); i++ {
		if err := clients[i].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", cs.Nodes[0].port).Err(); err != nil {
			t.Fatalf("redistest: CLUSTER MEET: %v", err)
		}
	}
	waitUntil(t, 30*time.Second, "every node to know every other", func() (bool, error) {
		for _, c := range clients {
			nodes, err := c.Do(ctx, "CLUSTER", "NODES").Text()
			if err != nil {
				return false, err
			}
			if strings.Count(strings.TrimSpace(nodes), "\n")+1 != len(cs.Nodes) || strings.Contains(nodes, "handshake") {
				return false, nil
			}
		}
		return true, nil
	})
	for r := range masters * replicasPerMaster {
		replica, master := masters+r, r%masters
		if err := clients[replica].Do(ctx, "CLUSTER", "REPLICATE", ids[master]).Err(); err != nil {
			t.Fatalf("redistest: CLUSTER REPLICATE: %v", err)
		}
	}
	waitUntil(t, 30*time.Second, "cluster_state:ok on every node", func() (bool, error) {
		for _, c := range clients {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false, nil
			}
		}
		return true, nil
	})
	return cs
}

// Addrs are every node's host:port (config redis.cluster.addrs).
func (c *ClusterSet) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr())
	}
	return out
}

// Client returns a cluster client, closed when the test ends.
func (c *ClusterSet) Client() *redis.ClusterClient {
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	c.t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// waitUntil polls cond (a topology converges on its own schedule; there is nothing to wait
// on but what the nodes report) until it holds or d passes.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: timed out after %s waiting for %s (last error: %v)", d, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartReplicated starts a master with n replicas (no Sentinels) and waits until every
// replica is in sync. Nodes[0] is the master. Tests of WAIT use it: Pause a replica to keep
// it from acknowledging.
func StartReplicated(t testing.TB, n int, extra ...string) []*Server {
	t.Helper()
	// Replicas sync at once instead of after Redis's 5s diskless-sync delay.
	extra = append([]string{"--repl-diskless-sync-delay", "0"}, extra...)
	master := Start(t, extra...)
	nodes := []*Server{master}
	for range n {
		nodes = append(nodes, Start(t, append(slices.Clone(extra), "--replicaof", "127.0.0.1", strconv.Itoa(master.port))...))
	}
	waitUntil(t, 20*time.Second, "replicas in sync", func() (bool, error) {
		info, err := master.Client().Info(context.Background(), "replication").Result()
		if err != nil {
			return false, err
		}
		return strings.Count(info, "state=online") == n, nil
	})
	return nodes
}
