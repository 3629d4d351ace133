package tasks

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// An event survives the task encoding as the worker will see it.
func TestCallEventRoundTrip(t *testing.T) {
	answered := "2023-11-28T07:26:23+00:00"
	want := &miitel.Event{
		Route: "sales", CallID: "c1", TenantCode: "tyo101", Kind: miitel.KindAnalysis,
		ReceivedAt: time.Date(2024, 5, 1, 9, 30, 0, 0, time.UTC), DedupeKey: "0123456789abcdef0123456789abcdef",
		Detail:  miitel.Detail{ID: "d1", CallType: "OUTGOING_CALL", DialAnsweredAt: &answered},
		Payload: map[string]any{"team": "sales"},
	}
	task, err := NewCallEvent(want)
	if err != nil {
		t.Fatal(err)
	}
	if task.Type() != TypeCallEvent {
		t.Errorf("type %q", task.Type())
	}
	got, err := DecodeCallEvent(task)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("decoded event (-want +got):\n%s", d)
	}
}

// A payload that does not decode can never succeed: asynq must archive it at once.
func TestDecodeCallEventRefusesForGood(t *testing.T) {
	_, err := DecodeCallEvent(asynq.NewTask(TypeCallEvent, []byte(`{"detail": [`)))
	if !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("err = %v, want one wrapping asynq.SkipRetry", err)
	}
}
