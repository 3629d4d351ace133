package worker

import (
	"slices"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// QueueCollector exports the queue's state at scrape time: how many calls wait, run, retry
// or sit in the dead letter, and how long the oldest pending one has waited. Written here
// rather than taken from asynq's x/metrics, whose last release predates the asynq we use.
type QueueCollector struct {
	in    *asynq.Inspector
	queue string

	size, latency, memory, up *prometheus.Desc
}

// NewQueueCollector returns a collector for the queue.
func NewQueueCollector(rdb redis.UniversalClient, queue string) *QueueCollector {
	return &QueueCollector{
		in:      asynq.NewInspectorFromRedisClient(rdb),
		queue:   queue,
		size:    prometheus.NewDesc("mcs_queue_tasks", "Tasks in the queue by state (pending, active, scheduled, retry, archived = dead letter).", []string{"queue", "state"}, nil),
		latency: prometheus.NewDesc("mcs_queue_latency_seconds", "How long the oldest pending task has waited.", []string{"queue"}, nil),
		memory:  prometheus.NewDesc("mcs_queue_memory_bytes", "Approximate Redis memory the queue's tasks use (sampled by asynq).", []string{"queue"}, nil),
		up:      prometheus.NewDesc("mcs_queue_scrape_ok", "1 when the queue could be read from Redis at scrape time.", []string{"queue"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.size
	ch <- c.latency
	ch <- c.memory
	ch <- c.up
}

// Collect implements prometheus.Collector.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	queues, err := c.in.Queues()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0, c.queue)
		return
	}
	if !slices.Contains(queues, c.queue) {
		// Nothing was ever enqueued: the queue does not exist yet, which is not a failure.
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1, c.queue)
		return
	}
	qi, err := c.in.GetQueueInfo(c.queue)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0, c.queue)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1, c.queue)
	for state, n := range map[string]int{"pending": qi.Pending, "active": qi.Active, "scheduled": qi.Scheduled, "retry": qi.Retry, "archived": qi.Archived} {
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(n), c.queue, state)
	}
	ch <- prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, qi.Latency.Seconds(), c.queue)
	ch <- prometheus.MustNewConstMetric(c.memory, prometheus.GaugeValue, float64(qi.MemoryUsage), c.queue)
}
