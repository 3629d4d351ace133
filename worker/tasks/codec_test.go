package tasks

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

func TestCompressEventRoundTrip(t *testing.T) {
	raw := strings.Repeat("こんにちは、お世話になっております。", 200)
	ev := &miitel.Event{Route: "r", CallID: "c", Kind: miitel.KindAnalysis, DedupeKey: "k",
		ReceivedAt: time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC),
		Detail:     miitel.Detail{ID: "d", CallType: "OUTGOING_CALL", SpeechRecognition: &miitel.SpeechRecognition{Raw: raw}}}
	b, err := CompressEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) >= len(raw)/4 {
		t.Errorf("compressed to %d bytes from a %d-byte transcript: not compressed", len(b), len(raw))
	}
	back, err := DecompressEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ev, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if _, err := DecompressEvent([]byte("not deflate")); err == nil || !strings.Contains(err.Error(), "tasks: decompress") {
		t.Errorf("garbage: err = %v", err)
	}
}
