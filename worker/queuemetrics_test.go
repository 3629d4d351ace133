package worker

import (
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

func TestQueueCollector(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := srv.Client()
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewQueueCollector(rdb, "q"))

	// Before anything was enqueued the queue does not exist: readable, nothing reported.
	if err := testutil.GatherAndCompare(reg, strings.NewReader("# HELP mcs_queue_scrape_ok 1 when the queue could be read from Redis at scrape time.\n# TYPE mcs_queue_scrape_ok gauge\nmcs_queue_scrape_ok{queue=\"q\"} 1\n"), "mcs_queue_scrape_ok", "mcs_queue_tasks"); err != nil {
		t.Error(err)
	}
	c := asynq.NewClientFromRedisClient(rdb)
	for _, id := range []string{"a", "b", "c"} {
		if _, err := c.Enqueue(asynq.NewTask("t", nil), asynq.Queue("q"), asynq.TaskID(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := asynq.NewInspectorFromRedisClient(rdb).ArchiveTask("q", "c"); err != nil {
		t.Fatal(err)
	}
	want := `# HELP mcs_queue_tasks Tasks in the queue by state (pending, active, scheduled, retry, archived = dead letter).
# TYPE mcs_queue_tasks gauge
mcs_queue_tasks{queue="q",state="active"} 0
mcs_queue_tasks{queue="q",state="archived"} 1
mcs_queue_tasks{queue="q",state="pending"} 2
mcs_queue_tasks{queue="q",state="retry"} 0
mcs_queue_tasks{queue="q",state="scheduled"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "mcs_queue_tasks"); err != nil {
		t.Error(err)
	}
	srv.Stop()
	if err := testutil.GatherAndCompare(reg, strings.NewReader("# HELP mcs_queue_scrape_ok 1 when the queue could be read from Redis at scrape time.\n# TYPE mcs_queue_scrape_ok gauge\nmcs_queue_scrape_ok{queue=\"q\"} 0\n"), "mcs_queue_scrape_ok"); err != nil {
		t.Errorf("with Redis down: %v", err)
	}
}
