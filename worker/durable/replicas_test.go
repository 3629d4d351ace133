package durable

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// info is INFO replication of a master with online replicas and syncing ones.
func info(online, syncing int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Replication\r\nrole:master\r\nconnected_slaves:%d\r\n", online+syncing)
	for i := range online + syncing {
		state := "online"
		if i >= online {
			state = "wait_bgsave"
		}
		fmt.Fprintf(&b, "slave%d:ip=127.0.0.1,port=%d,state=%s,offset=1,lag=0\r\n", i, 7000+i, state)
	}
	return b.String()
}

// TestReplicasPolicy walks the shared auto policy on a fake clock: syncing replicas do not
// count, the most seen is held for the hold and then dropped, a rise counts at once, and a
// failed INFO keeps the known count.
func TestReplicasPolicy(t *testing.T) {
	now := time.Unix(0, 0)
	r := NewReplicas(time.Second, 15*time.Second)
	r.now = func() time.Time { return now }
	ctx := context.Background()
	reported, fail := info(2, 1), false
	read := func(context.Context) (string, error) {
		if fail {
			return "", errors.New("connection refused")
		}
		return reported, nil
	}
	want := func(step string, n int) {
		t.Helper()
		got, err := r.Want(ctx, "m", read)
		if err != nil || got != n {
			t.Fatalf("%s: %d %v, want %d", step, got, err, n)
		}
	}
	want("two online, one syncing", 2)
	reported = info(1, 0)
	want("within refresh: the count read", 2)
	now = now.Add(2 * time.Second)
	want("one left, within the hold", 2)
	r.Forget("m")
	want("asked again, within the hold", 2)
	now = now.Add(14 * time.Second)
	want("hold passed", 1)
	reported = info(3, 0)
	now = now.Add(2 * time.Second)
	want("a rise counts at once", 3)
	fail = true
	r.Forget("m")
	want("INFO failed: the known count", 3)
	if _, err := NewReplicas(0, 0).Want(ctx, "m", read); err == nil {
		t.Errorf("INFO failed with nothing known: no error")
	}
}

func TestOnlineReplicasRole(t *testing.T) {
	if _, err := OnlineReplicas("role:slave\r\nconnected_slaves:0\r\n"); err == nil || !strings.Contains(err.Error(), "not a master") {
		t.Errorf("a replica's INFO: %v", err)
	}
	if n, err := OnlineReplicas(info(1, 2)); err != nil || n != 1 {
		t.Errorf("1 online 2 syncing: %d %v", n, err)
	}
}
