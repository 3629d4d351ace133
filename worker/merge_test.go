package worker

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/miitel-crm-sync/miitel-crm-sync/examples"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// sampleEvent reads a MiiTel sample and makes the event of its first detail, as the receiver
// would.
func sampleEvent(t testing.TB, path string, at time.Time) *miitel.Event {
	t.Helper()
	b, err := examples.Payload(path)
	if err != nil {
		t.Fatal(err)
	}
	var w miitel.Webhook
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	d := w.Call.Details[0]
	return &miitel.Event{Route: "default", CallID: w.Call.ID, TenantCode: w.Call.TenantCode,
		Kind: miitel.Classify(&d), ReceivedAt: at, Detail: d}
}

const (
	sampleAnalysis = "call_analysis_completed/sample1.json"
	sampleMinutes  = "call_summarization_completed/sample1.json"
	sampleSeed     = "call_analysis_completed/seed_sample.json"
)

// minutesFor makes the minutes event of the analysed call (MiiTel's samples are of different
// calls): same detail, the minutes sample's shape.
func minutesFor(t testing.TB, analysis *miitel.Event, at time.Time) *miitel.Event {
	m := sampleEvent(t, sampleMinutes, at)
	m.CallID, m.TenantCode, m.Detail.ID = analysis.CallID, analysis.TenantCode, analysis.Detail.ID
	for i := range m.Detail.Participants {
		if i < len(analysis.Detail.Participants) {
			m.Detail.Participants[i].ID = analysis.Detail.Participants[i].ID
		}
	}
	return m
}

func TestMergeConvergesInEitherOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := sampleEvent(t, sampleAnalysis, t0)
	m := minutesFor(t, a, t0.Add(time.Hour))

	ab := merge(merge(nil, a), m)
	ba := merge(merge(nil, m), a)
	ignore := cmp.FilterPath(func(p cmp.Path) bool {
		s := p.String()
		return s == "ReceivedAt" || s == "DedupeKey"
	}, cmp.Ignore())
	if d := cmp.Diff(ab, ba, ignore); d != "" {
		t.Errorf("analysis+minutes differs from minutes+analysis (-ab +ba):\n%s", d)
	}
	if ab.Kind != miitel.KindAnalysis {
		t.Errorf("kind = %s, want analysis: the minutes do not change the call's outcome", ab.Kind)
	}
	if ab.Detail.Minutes == nil || ab.Detail.SpeechRecognition == nil || ab.Detail.SpeechRecognition.Raw == "" {
		t.Error("merged state lost the minutes or the transcript")
	}
	if ab.Detail.Participants[0].Analysis == nil || ab.Detail.Participants[0].LoginID == nil {
		t.Error("participants merged by id must keep the voice analysis and the login id")
	}
	if ab.Detail.Analysis == nil || len(ab.Detail.Tags) == 0 {
		t.Error("merged state lost the analysis or the memos")
	}
}

func TestMergeNeverBlanksAndNewerWins(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := sampleEvent(t, sampleAnalysis, t0)

	edited := sampleEvent(t, sampleAnalysis, t0.Add(10*time.Minute))
	edited.Detail.Tags = []miitel.Tag{{CreatedBy: "rep", CreatorType: "TENANT_USER", Value: "Callback"}}
	edited.Detail.Phrases = nil // phrases switched off in a later re-send
	edited.Detail.SpeechRecognition = &miitel.SpeechRecognition{}

	got := merge(merge(nil, a), edited)
	if got.Detail.Tags[0].Value != "Callback" {
		t.Errorf("newer memo did not win: %+v", got.Detail.Tags)
	}
	if len(got.Detail.Phrases) == 0 || got.Detail.SpeechRecognition.Raw == "" {
		t.Error("an absent or empty section blanked what an earlier event brought")
	}

	// The same two events processed in the other order (the older one late) give the same.
	late := merge(merge(nil, edited), a)
	if late.Detail.Tags[0].Value != "Callback" {
		t.Errorf("an older event processed late replaced the newer memo: %+v", late.Detail.Tags)
	}
}

func TestMergeKind(t *testing.T) {
	cases := []struct{ state, ev, want miitel.Kind }{
		{"", miitel.KindMinutes, miitel.KindMinutes},
		{miitel.KindMinutes, miitel.KindAnalysis, miitel.KindAnalysis},
		{miitel.KindAnalysis, miitel.KindMinutes, miitel.KindAnalysis},
		{miitel.KindMissed, miitel.KindMinutes, miitel.KindMissed},
		{miitel.KindIVR, miitel.KindAnalysis, miitel.KindAnalysis},
	}
	for _, c := range cases {
		if got := mergeKind(c.state, c.ev); got != c.want {
			t.Errorf("mergeKind(%s, %s) = %s, want %s", c.state, c.ev, got, c.want)
		}
	}
}

func TestStateRoundTripAndSize(t *testing.T) {
	ev := sampleEvent(t, sampleSeed, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	b, err := encodeState(ev)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(ev, back, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("state round trip (-want +got):\n%s", d)
	}
	raw, _ := json.Marshal(ev)
	t.Logf("seed_sample state: %d bytes compressed, %d bytes JSON (%.0f%%)", len(b), len(raw), 100*float64(len(b))/float64(len(raw)))
	if len(b) >= len(raw)/2 {
		t.Errorf("compressed state %d bytes is not below half its JSON (%d)", len(b), len(raw))
	}
}
