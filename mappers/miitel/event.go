package miitel

import "time"

// Kind classifies what a request says about one call detail. It is part of the ingest dedupe
// key, so the later minutes event of a call is never mistaken for a re-send of its analysis.
type Kind string

const (
	KindAnalysis   Kind = "analysis"   // voice analysis finished (answered call)
	KindMinutes    Kind = "minutes"    // call_summarization_completed: AI minutes are ready
	KindMissed     Kind = "missed"     // an incoming call nobody answered
	KindUnanswered Kind = "unanswered" // an outgoing, predictive-dialer or transfer call not answered
	KindIVR        Kind = "ivr"        // the caller pressed an IVR digit (READ_DTMF)
)

// Kinds lists every kind, in a stable order, for mapping validation and docs.
var Kinds = []Kind{KindAnalysis, KindMinutes, KindMissed, KindUnanswered, KindIVR}

// incoming call types: not answered means the customer could not reach us (missed).
var incomingTypes = map[string]bool{
	"INCOMING_CALL": true, "INCOMING_CALL_USER": true, "QUEUEING_CALL": true,
	"EXTENSION": true, "EXTENSION_GROUP": true, "EXTENSION_TRANSFER": true,
	"EXTENSION_GROUP_TRANSFER": true, "AUTOMATIC_RECORD": true,
}

// IsIncoming reports whether call_type is a call the customer (or a colleague) placed to us.
func IsIncoming(callType string) bool { return incomingTypes[callType] }

// Classify tells the event kind from the shape of a detail, since MiiTel's request carries
// no event name: the minutes event is the one with "minutes"; READ_DTMF is the IVR event; a
// detail answered neither at dial nor at queue level is missed (incoming) or unanswered.
func Classify(d *Detail) Kind {
	switch {
	case d.Minutes != nil:
		return KindMinutes
	case d.CallType == "READ_DTMF":
		return KindIVR
	case isNull(d.DialAnsweredAt) && isNull(d.QueueingAnsweredAt):
		if IsIncoming(d.CallType) {
			return KindMissed
		}
		return KindUnanswered
	default:
		return KindAnalysis
	}
}

func isNull(s *string) bool { return s == nil || *s == "" }

// Event is the unit of work queued for the worker: one call detail with the call-level fields
// and the admin's additional-payload keys (credentials used for auth removed). It is what
// mapping expressions see, merged with the call's earlier events by the worker.
type Event struct {
	Route      string         `json:"route" expr:"route"`
	CallID     string         `json:"call_id" expr:"call_id"`
	TenantCode string         `json:"tenant_code" expr:"tenant_code"`
	Kind       Kind           `json:"kind" expr:"kind"`
	ReceivedAt time.Time      `json:"received_at" expr:"received_at"`
	Detail     Detail         `json:"detail" expr:"detail"`
	Payload    map[string]any `json:"payload,omitempty" expr:"payload"`
	// DedupeKey is the ingest dedupe key (also the asynq TaskID); the worker records it in
	// the ledger once the event is delivered.
	DedupeKey string `json:"dedupe_key,omitempty" expr:"-"`
}
