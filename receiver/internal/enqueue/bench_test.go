package enqueue

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/callstatus"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// BenchmarkScriptRedisCost measures what Redis itself spends per task inside the enqueue
// script (INFO commandstats: evalsha microseconds over the tasks enqueued, reported as
// redis-us/task), beside the floor measured on the same private redis-server (AOF,
// everysec): asynq's own client enqueueing the same message, one script per task. The
// variants: this package's script with one task per script (a lone request) and with eight
// (a batch under load, enqueue.Batcher), each without and with the call status note. The
// payload is the seed sample's size (5.4 KB), each task id new.
// Run: go test -run '^$' -bench ScriptRedisCost -count 3 ./receiver/internal/enqueue, and
// run it again for a second round: each variant's counts run back to back, so only whole
// runs interleave the variants.
func BenchmarkScriptRedisCost(b *testing.B) {
	rdb := redistest.Start(b, "--appendonly", "yes", "--appendfsync", "everysec").Client()
	ctx := context.Background()
	payload := []byte(strings.Repeat("x", 5400))
	arg := strings.Repeat("a", 400) // about a call status argument's size
	statusPrefix := tasks.KeyPrefix + "{" + queue + "}:status:"
	n := 0
	nextID := func() string { n++; return fmt.Sprintf("bench-%d", n) }

	b.Run("floor_asynq_client", func(b *testing.B) {
		c := asynq.NewClientFromRedisClient(rdb)
		reset(b, rdb)
		for range b.N {
			id := nextID()
			if _, err := c.Enqueue(asynq.NewTask(tasks.TypeCallEvent, payload), asynq.TaskID(id),
				asynq.Queue(queue), asynq.MaxRetry(retries), asynq.Timeout(timeout)); err != nil {
				b.Fatal(err)
			}
		}
		report(b, rdb, b.N)
	})
	for _, v := range []struct {
		name   string
		per    int
		status bool
	}{{"script_1", 1, false}, {"script_8", 8, false}, {"script_1_status", 1, true}, {"script_8_status", 8, true}} {
		b.Run(v.name, func(b *testing.B) {
			lua := ""
			if v.status {
				lua = callstatus.NoteLua
			}
			q := New(rdb, queue, Ack{}, lua)
			reset(b, rdb)
			enqueued := 0
			for enqueued < b.N {
				ts := make([]Task, min(v.per, b.N-enqueued))
				for i := range ts {
					id := nextID()
					ts[i] = Task{ID: id, Message: message(id, payload)}
					if v.status {
						ts[i].StatusPrefix, ts[i].StatusMember, ts[i].Status = statusPrefix, "load:"+id, arg
					}
				}
				if _, _, err := q.Enqueue(ctx, ts); err != nil {
					b.Fatal(err)
				}
				enqueued += len(ts)
			}
			report(b, rdb, enqueued)
		})
	}
}

// reset empties Redis and its command statistics (a private server).
func reset(b *testing.B, rdb *redis.Client) {
	b.Helper()
	ctx := context.Background()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
}

// report adds redis-us/task: evalsha's microseconds over the tasks enqueued.
func report(b *testing.B, rdb *redis.Client, tasks int) {
	b.Helper()
	b.StopTimer()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var usec int64
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_evalsha:"); ok {
			var calls int64
			if _, err := fmt.Sscanf(rest, "calls=%d,usec=%d", &calls, &usec); err != nil {
				b.Fatalf("commandstats %q: %v", line, err)
			}
		}
	}
	b.ReportMetric(float64(usec)/float64(tasks), "redis-us/task")
}
