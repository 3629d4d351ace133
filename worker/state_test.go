package worker

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// Over the cap the phrases go and the transcript stays; the event being delivered keeps
// them, only the stored state loses them.
func TestStateSaveDropsPhrasesOverCap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ev := sampleEvent(t, sampleSeed, time.Now())
	if len(ev.Detail.Phrases) == 0 || ev.Detail.SpeechRecognition == nil || ev.Detail.SpeechRecognition.Raw == "" {
		t.Fatal("the seed sample has no phrases or transcript to test with")
	}
	full, err := encodeState(ev)
	if err != nil {
		t.Fatal(err)
	}
	s := stateStore{rdb: redistest.Start(t).Client(), ttl: time.Hour, maxBytes: len(full) - 1}
	n, err := s.save(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if n >= len(full) {
		t.Errorf("saved %d bytes, want fewer than the uncapped %d", n, len(full))
	}
	if len(ev.Detail.Phrases) == 0 {
		t.Error("save dropped the phrases of the event being delivered")
	}
	got, err := s.load(ctx, ev.Route, ev.Detail.ID)
	if err != nil || got == nil {
		t.Fatalf("load = %v, %v", got, err)
	}
	if len(got.Detail.Phrases) != 0 {
		t.Errorf("stored state kept %d phrases over the cap", len(got.Detail.Phrases))
	}
	if got.Detail.SpeechRecognition == nil || got.Detail.SpeechRecognition.Raw != ev.Detail.SpeechRecognition.Raw {
		t.Error("the transcript must survive the cap")
	}
}

// A state that does not decode (written by an incompatible version, or damaged) is treated
// as expired: the event is delivered on its own instead of failing forever.
func TestUnreadableStateCountsAsExpired(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	if err := rdb.Set(ctx, stateKey("r", "d"), "not deflate", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	s := stateStore{rdb: rdb, ttl: time.Hour}
	got, err := s.load(ctx, "r", "d")
	if got != nil || err != nil {
		t.Errorf("load = %v, %v; want nil, nil", got, err)
	}
}

// BenchmarkStateCodec is the per-task cost of saving and loading a call's state (seed sample),
// beside the floor of plain JSON without compression. Compare the two in one run:
//
//	go test -run XXX -bench StateCodec -benchmem ./worker
func BenchmarkStateCodec(b *testing.B) {
	ev := sampleEvent(b, sampleSeed, time.Now())
	b.Run("floor_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, err := json.Marshal(ev)
			if err != nil {
				b.Fatal(err)
			}
			var back miitel.Event
			if err := json.Unmarshal(buf, &back); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("state", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, err := encodeState(ev)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := decodeState(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
