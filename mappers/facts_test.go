package mappers

import (
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

func TestFactsOfFollowsTheMappingEnvironment(t *testing.T) {
	s := func(v string) *string { return &v }
	ev := &miitel.Event{Detail: miitel.Detail{
		CallType: "INCOMING_CALL", DialStartsAt: s("2026-04-01T09:00:00+09:00"), DialAnsweredAt: s("2026-04-01T09:00:05+09:00"),
		FromNumber: s("090-1234-5678"), CircuitNumber: s("0312345678"),
		Participants: []miitel.Participant{
			{ID: "c", FromTo: "FROM"},
			{ID: "r", FromTo: "TO", LoginID: s(" Sato@Example.co.jp ")},
		},
	}}
	f := FactsOf(ev)
	if f.RepEmail != "sato@example.co.jp" || f.Direction != "inbound" || f.Outcome != "answered" {
		t.Errorf("facts = %+v", f)
	}
	if f.CustomerNumber != "090-1234-5678" || f.ToNumber != "0312345678" {
		t.Errorf("numbers = %+v: want the customer's from_number and the circuit as to_number", f)
	}
	if !f.StartedAt.Equal(time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("started_at = %v", f.StartedAt)
	}
	if got := FactsOf(&miitel.Event{}); got.RepEmail != "" || !got.StartedAt.IsZero() {
		t.Errorf("empty event: %+v", got)
	}
}
