package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/miitel-crm-sync/miitel-crm-sync/receiver/internal/naive"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/tasks"
)

// flushEvery keeps the private Redis small during long benchmark runs (outside the timer).
const flushEvery = 2000

// BenchmarkAccept measures one seed_sample request through the receiver's handler into a
// real redis-server on loopback: read, authenticate (payload key), parse, validate, hash,
// ledger check and enqueue. Each iteration changes one field so every request is new work,
// not a duplicate. After the timed loop the same run measures two floors with the same
// Redis and reports the ratios:
//
//	x_ping     accept time / one PING round trip (the cheapest possible Redis answer)
//	x_enqueue  accept time / one bare asynq Client.Enqueue of the same event payload
func BenchmarkAccept(b *testing.B) {
	h := newHarness(b)
	seed := sample(b, "call_analysis_completed/seed_sample.json")
	head, tail, ok := bytes.Cut(seed, []byte(`"dtmf": "0"`))
	if !ok {
		b.Fatal("seed sample has no dtmf field to vary")
	}
	handler := h.r.Handler()
	ctx := context.Background()
	body := make([]byte, 0, len(seed)+16)

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 && i%flushEvery == 0 {
			b.StopTimer()
			if err := h.rdb.FlushDB(ctx).Err(); err != nil { // private redis-server
				b.Fatal(err)
			}
			b.StartTimer()
		}
		body = append(append(append(append(body[:0], head...), `"dtmf": "`...), strconv.Itoa(i)...), '"')
		body = append(body, tail...)
		req := httptest.NewRequest(http.MethodPost, "/webhooks/miitel/seed", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("iteration %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	b.StopTimer()
	accept := float64(b.Elapsed().Nanoseconds()) / float64(b.N)

	n := min(b.N, 20000)
	ping := floor(b, n, func(int) error { return h.rdb.Ping(ctx).Err() })

	pc, err := parseBody(seed, []string{"params_key"})
	if err != nil {
		b.Fatal(err)
	}
	ev := pc[0]
	client := asynq.NewClientFromRedisClient(h.rdb)
	if err := h.rdb.FlushDB(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	enqueue := floor(b, n, func(i int) error {
		ev.DedupeKey = "floor-" + strconv.Itoa(i)
		t, err := tasks.NewCallEvent(ev, asynq.Queue(testQueue), asynq.MaxRetry(7), asynq.Timeout(90*time.Second))
		if err != nil {
			return err
		}
		_, err = client.EnqueueContext(ctx, t)
		return err
	})

	b.ReportMetric(ping, "ping-ns")
	b.ReportMetric(enqueue, "enqueue-ns")
	b.ReportMetric(accept/ping, "x_ping")
	b.ReportMetric(accept/enqueue, "x_enqueue")
}

// floor times n calls of fn and returns nanoseconds per call.
func floor(b *testing.B, n int, fn func(i int) error) float64 {
	b.Helper()
	start := time.Now()
	for i := range n {
		if err := fn(i); err != nil {
			b.Fatal(err)
		}
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

// BenchmarkParse measures the CPU part of the accept path on the seed sample, without Redis:
// split the body, take out the additional payload, decode and check the call, classify and
// hash each detail. x_unmarshal is its time over one json.Unmarshal of the same body into
// map[string]any, measured in the same run: the floor of looking at every byte once.
func BenchmarkParse(b *testing.B) {
	seed := sample(b, "call_analysis_completed/seed_sample.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(seed)))
	for b.Loop() {
		if _, err := parseBody(seed, []string{"params_key"}); err != nil {
			b.Fatal(err)
		}
	}
	parse := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	unmarshal := floor(b, min(b.N, 20000), func(int) error {
		var v map[string]any
		return json.Unmarshal(seed, &v)
	})
	b.ReportMetric(unmarshal, "unmarshal-ns")
	b.ReportMetric(parse/unmarshal, "x_unmarshal")
}

// benchBodies returns n request bodies: sample with a unique call id each, so every
// request is new work.
func benchBodies(b *testing.B, sampleBody []byte, n int) [][]byte {
	b.Helper()
	const id = `"99e2fdb7-845a-46de-8d94-882add220551"` // the call's and its detail's id
	if !bytes.Contains(sampleBody, []byte(id)) {
		b.Fatal("sample has no call id")
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.ReplaceAll(sampleBody, []byte(id), []byte(`"bench-`+run+`-`+strconv.Itoa(i)+`"`))
	}
	return out
}

// growTranscript returns the seed sample with its transcript grown to about size bytes.
func growTranscript(b *testing.B, size int) []byte {
	seed := sample(b, "call_analysis_completed/seed_sample.json")
	return edit(b, seed, func(m map[string]any) {
		sr := detail0(m)["speech_recognition"].(map[string]any)
		raw := sr["raw"].(string)
		for len(raw) < size {
			raw += "0:01 (Customer) はい、お電話ありがとうございます。ご用件をお伺いします。\n"
		}
		sr["raw"] = raw
	})
}

// BenchmarkAcceptVsBaselines measures, in one run and interleaved, the receiver's accept
// path, a naive receiver (gin, bind the JSON into a 2-field struct, one asynq Enqueue with
// TaskID, no auth) and the bare-enqueue floor (asynq Client.Enqueue of the same body, no
// HTTP), each on the same private redis-server, for the seed sample and a 270 KB one.
// Reported: ns per request of each and the ratios x_naive and x_floor (receiver / other).
func BenchmarkAcceptVsBaselines(b *testing.B) {
	for _, tc := range []struct {
		name string
		body func(*testing.B) []byte
	}{
		{"seed", func(b *testing.B) []byte { return sample(b, "call_analysis_completed/seed_sample.json") }},
		{"270KB", func(b *testing.B) []byte { return growTranscript(b, 270<<10) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := newHarness(b)
			body := tc.body(b)
			const batch = 200
			bodies := benchBodies(b, body, batch)
			ctx := context.Background()
			handler := h.r.Handler()
			client := asynq.NewClientFromRedisClient(h.rdb)
			baseline := naive.Handler(client, testQueue)
			var recv, nai, flo time.Duration
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if i%batch == 0 {
					b.StopTimer()
					if err := h.rdb.FlushDB(ctx).Err(); err != nil {
						b.Fatal(err)
					}
					bodies = benchBodies(b, body, batch) // new call ids: no duplicates
					b.StartTimer()
				}
				bd := bodies[i%batch]
				start := time.Now()
				serve(b, handler, "/webhooks/miitel/open", bd)
				recv += time.Since(start)
				b.StopTimer()
				start = time.Now()
				serve(b, baseline, "/naive", bd)
				nai += time.Since(start)
				start = time.Now()
				if _, err := client.EnqueueContext(ctx, asynq.NewTask(tasks.TypeCallEvent, bd),
					asynq.TaskID("floor-"+strconv.Itoa(i)), asynq.Queue(testQueue)); err != nil {
					b.Fatal(err)
				}
				flo += time.Since(start)
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(float64(nai.Nanoseconds())/n, "naive-ns")
			b.ReportMetric(float64(flo.Nanoseconds())/n, "floor-ns")
			b.ReportMetric(float64(recv)/float64(nai), "x_naive")
			b.ReportMetric(float64(recv)/float64(flo), "x_floor")
		})
	}
}

func serve(b *testing.B, h http.Handler, path string, body []byte) {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
	}
}

// BenchmarkDecodeAny: a top-level string with an escape, as Go's encoding/json
// writes MiiTel's params_key (the load runs' bodies are such).
func BenchmarkDecodeAny(b *testing.B) {
	raw := []byte(`"z\u0026aH+\u0026Kz8saC"`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeAny(raw); err != nil {
			b.Fatal(err)
		}
	}
}
