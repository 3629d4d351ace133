package receiver

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
)

// BenchmarkAckCost measures what waiting for replicas (redis.ack_replicas auto: WAIT 2,
// pipelined with the enqueue script on its connection) costs an accepted request, against
// the same receiver without it, on one master with two replicas on loopback. The variants
// run interleaved, off then ack, in 3 rounds of b.N requests each; it reports the medians
// over rounds of each variant's mean and p99 latency and their ratios:
//
//	x_mean  ack mean / off mean
//	x_p99   ack p99 / off p99
//
// Requests are sequential (one in flight), so 1/mean is the throughput of one connection.
func BenchmarkAckCost(b *testing.B) {
	rs := startReplicaSetB(b, 2)
	off := newHarnessOn(b, rs.rdb)
	ack := newHarnessOn(b, rs.rdb, withAck(config.AckAuto, 300*time.Millisecond))
	seed := sample(b, "call_analysis_completed/seed_sample.json")
	head, tail, ok := bytes.Cut(seed, []byte(`"dtmf": "0"`))
	if !ok {
		b.Fatal("seed sample has no dtmf field to vary")
	}
	ctx := context.Background()
	body := make([]byte, 0, len(seed)+16)
	seq := 0
	run := func(h *harness, n int) (mean, p99 float64) {
		handler := h.r.Handler()
		lat := make([]time.Duration, n)
		for i := range n {
			seq++
			body = append(append(append(append(body[:0], head...), `"dtmf": "`...), strconv.Itoa(seq)...), '"')
			body = append(body, tail...)
			req := httptest.NewRequest(http.MethodPost, "/webhooks/miitel/seed", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json; charset=utf-8")
			rec := httptest.NewRecorder()
			start := time.Now()
			handler.ServeHTTP(rec, req)
			lat[i] = time.Since(start)
			if rec.Code != http.StatusOK {
				b.Fatalf("request %d: %d %s", seq, rec.Code, rec.Body)
			}
		}
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		slices.Sort(lat)
		return float64(sum.Nanoseconds()) / float64(n), float64(lat[min(n-1, n*99/100)].Nanoseconds())
	}
	const rounds = 3
	var offMean, offP99, ackMean, ackP99 []float64
	b.ResetTimer()
	for range rounds {
		m, p := run(off, b.N)
		offMean, offP99 = append(offMean, m), append(offP99, p)
		m, p = run(ack, b.N)
		ackMean, ackP99 = append(ackMean, m), append(ackP99, p)
		b.StopTimer()
		if err := rs.rdb.FlushDB(ctx).Err(); err != nil { // private redis-server
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	med := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	b.ReportMetric(med(offMean), "off-mean-ns")
	b.ReportMetric(med(offP99), "off-p99-ns")
	b.ReportMetric(med(ackMean), "ack-mean-ns")
	b.ReportMetric(med(ackP99), "ack-p99-ns")
	b.ReportMetric(med(ackMean)/med(offMean), "x_mean")
	b.ReportMetric(med(ackP99)/med(offP99), "x_p99")
}
