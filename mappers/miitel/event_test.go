package miitel

import "testing"

// Classify decides the event kind, which is part of the ingest dedupe key: a wrong kind
// either drops the minutes event as a re-send or queues a re-send twice.
func TestClassify(t *testing.T) {
	s := func(v string) *string { return &v }
	at := s("2023-11-28T07:26:23+00:00")
	tests := []struct {
		name string
		d    Detail
		want Kind
	}{
		{"answered outgoing", Detail{CallType: "OUTGOING_CALL", DialAnsweredAt: at}, KindAnalysis},
		{"answered at the queue only", Detail{CallType: "QUEUEING_CALL", QueueingAnsweredAt: at}, KindAnalysis},
		{"minutes win over everything", Detail{CallType: "READ_DTMF", Minutes: s("【議題】")}, KindMinutes},
		{"empty minutes are still the minutes event", Detail{CallType: "OUTGOING_CALL", DialAnsweredAt: at, Minutes: s("")}, KindMinutes},
		{"IVR digit, even answered", Detail{CallType: "READ_DTMF", DialAnsweredAt: at}, KindIVR},
		{"incoming not answered", Detail{CallType: "INCOMING_CALL"}, KindMissed},
		{"extension not answered", Detail{CallType: "EXTENSION", DialAnsweredAt: s("")}, KindMissed},
		{"outgoing not answered", Detail{CallType: "OUTGOING_CALL"}, KindUnanswered},
		{"predictive dialer not answered, empty strings", Detail{CallType: "PREDICTIVE_CALL", DialAnsweredAt: s(""), QueueingAnsweredAt: s("")}, KindUnanswered},
		{"unknown call type not answered", Detail{CallType: "SOMETHING_NEW"}, KindUnanswered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(&tt.d); got != tt.want {
				t.Errorf("Classify = %s, want %s", got, tt.want)
			}
		})
	}
}
