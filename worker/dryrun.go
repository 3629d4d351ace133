package worker

import (
	"context"
	"log/slog"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// DryRunSink is the Processor used when no CRM is configured: it logs what it received
// (identifiers and kinds only: no phone numbers, no transcript) and succeeds.
type DryRunSink struct{ Log *slog.Logger }

// Process logs the event.
func (d DryRunSink) Process(ctx context.Context, ev *miitel.Event) error {
	d.Log.InfoContext(ctx, "dry-run: call event received",
		"route", ev.Route, "call_id", ev.CallID, "detail_id", ev.Detail.ID, "kind", ev.Kind,
		"call_type", ev.Detail.CallType, "has_transcript", ev.Detail.SpeechRecognition != nil && ev.Detail.SpeechRecognition.Raw != "",
		"has_minutes", ev.Detail.Minutes != nil)
	return nil
}
