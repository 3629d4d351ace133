package mappers

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// seedDetail is seed_sample.json's only detail: its event and its JSON.
func seedDetail(tb testing.TB) (*miitel.Event, []byte) {
	tb.Helper()
	body, err := os.ReadFile("testdata/render/seed_sample/payload.json")
	if err != nil {
		tb.Fatal(err)
	}
	evs, err := Events("bench", body, received)
	if err != nil || len(evs) != 1 {
		tb.Fatalf("seed sample: %d events, %v", len(evs), err)
	}
	raw, err := json.Marshal(evs[0].Detail)
	if err != nil {
		tb.Fatal(err)
	}
	return evs[0], raw
}

// floorNs is the time to json.Unmarshal the same detail, measured in this run (with the
// timer stopped): the cost the worker pays anyway to decode the task, and the yardstick
// renders are reported against. testing.Benchmark cannot be used here: it blocks inside a
// running benchmark.
func floorNs(b *testing.B, raw []byte) float64 {
	b.StopTimer()
	defer b.StartTimer()
	n, start := 0, time.Now()
	for time.Since(start) < 200*time.Millisecond {
		var d miitel.Detail
		if err := json.Unmarshal(raw, &d); err != nil {
			b.Fatal(err)
		}
		n++
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

// BenchmarkRender renders the seed sample's detail through each shipped mapping. Besides
// ns/op and allocs/op it reports x_unmarshal (render time / time to json.Unmarshal the same
// detail, measured in the same run) and allocs/field.
func BenchmarkRender(b *testing.B) {
	ev, raw := seedDetail(b)
	b.Run("floor_json_unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var d miitel.Detail
			if err := json.Unmarshal(raw, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, name := range []string{"hubspot", "salesforce"} {
		m, err := Builtin(name)
		if err != nil {
			b.Fatal(err)
		}
		rec, _, err := m.Render(ev)
		if err != nil {
			b.Fatal(err)
		}
		fields := float64(len(rec.Fields))
		b.Run(name, func(b *testing.B) {
			floor := floorNs(b, raw)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := m.Render(ev); err != nil {
					b.Fatal(err)
				}
			}
			ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(ns/floor, "x_unmarshal")
			allocs := testing.AllocsPerRun(100, func() { _, _, _ = m.Render(ev) })
			b.ReportMetric(allocs/fields, "allocs/field")
		})
	}
}
