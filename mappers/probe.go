package mappers

import (
	"errors"
	"fmt"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// probe renders a set of synthetic events that cover the shapes MiiTel sends (a detail with
// nothing set, a missed call full of nulls, a minutes-only event, a fully analysed call, an
// internal call). An expression that fails on one of them, such as detail.analysis.score
// without ?. on a missed call, would dead-letter real calls; Parse reports it instead, at the
// expression, naming the shape it failed on.
func (c *compiler) probe(m *Mapping) {
	reported := map[string]bool{}
	for _, p := range probes() {
		_, _, err := m.Render(p.ev)
		var re *RenderError
		if !errors.As(err, &re) {
			if err != nil {
				c.errs = append(c.errs, &Error{File: c.file, Msg: fmt.Sprintf("fails on %s: %v", p.name, err)})
			}
			continue
		}
		if reported[re.Path] {
			continue
		}
		reported[re.Path] = true
		c.errs = append(c.errs, &Error{File: c.file, Line: re.Line, Col: re.Col, Path: re.Path,
			Msg: fmt.Sprintf("fails on %s: %v", p.name, re.Err)})
	}
}

type probeEvent struct {
	name string
	ev   *miitel.Event
}

func strp(v string) *string   { return &v }
func f64p(v float64) *float64 { return &v }
func i64p(v int64) *int64     { return &v }

func probes() []probeEvent {
	received := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	base := func(kind miitel.Kind, d miitel.Detail) *miitel.Event {
		return &miitel.Event{Route: "probe", CallID: "00000000-0000-0000-0000-000000000001", TenantCode: "probe",
			Kind: kind, ReceivedAt: received, Detail: d}
	}
	rep := miitel.Participant{ID: "p-rep", FromTo: "FROM", Name: strp("Rep"), LoginID: strp("rep@example.com"),
		Analysis: &miitel.ParticipantAnalysis{F0: f64p(100), SpeechRate: f64p(8), FillerCount: f64p(1)}}
	customer := miitel.Participant{ID: "p-cus", FromTo: "TO"}
	item := func(order int64, text string) miitel.PhraseItem {
		return miitel.PhraseItem{Order: order, Phrase: "えー" + text, PhraseNoFiller: text, StartAt: float64(order * 3), EndAt: float64(order*3 + 2), FillerNum: i64p(1)}
	}
	full := miitel.Detail{
		ID: "00000000-0000-0000-0000-000000000002", DialStartsAt: strp("2024-01-01T00:00:00+00:00"),
		DialAnsweredAt: strp("2024-01-01T00:00:05+00:00"), DialEndsAt: strp("2024-01-01T00:03:05+00:00"),
		CallType: "OUTGOING_CALL", CircuitNumber: strp("0312345678"), CircuitName: strp("main"),
		ToNumber: strp("090-1234-5678"), DTMF: strp("0"), Minutes: strp("minutes"),
		Analysis: &miitel.Analysis{Score: f64p(50), TLR: f64p(0.5), RallyCount: i64p(3), OverlapCount: i64p(0), SilenceCount: i64p(1),
			SilencePositions: [][]float64{{1, 2}}, OverlapPositions: [][]float64{}},
		Participants: []miitel.Participant{rep, customer},
		Tags:         []miitel.Tag{{CreatedBy: "Rep", CreatorType: "TENANT_USER", Value: "memo"}},
		Comments:     []miitel.Comment{{CreatedAt: "2024-01-01T00:05:00+00:00", CreatedBy: "Rep", Value: "comment"}},
		Keywords:     []miitel.Keyword{{StartsAt: 1, ParticipantID: "p-cus", Value: "keyword"}},
		Phrases: []miitel.Phrase{
			{ParticipantID: "p-rep", Raw: []miitel.PhraseItem{item(0, "hello")}, Summary: []miitel.PhraseItem{item(0, "hello")}},
			{ParticipantID: "p-cus", Raw: []miitel.PhraseItem{item(1, "hi")}, Summary: []miitel.PhraseItem{}},
		},
		SpeechRecognition: &miitel.SpeechRecognition{Raw: "0:00 (Rep) hello\n0:03 (Customer) hi", Summary: "0:00 (Rep) hello"},
	}
	return []probeEvent{
		{"a detail with no data (every optional key absent)", base(miitel.KindAnalysis, miitel.Detail{ID: "00000000-0000-0000-0000-000000000003"})},
		{"a missed incoming call (nulls, no analysis)", base(miitel.KindMissed, miitel.Detail{
			ID: "00000000-0000-0000-0000-000000000004", DialStartsAt: strp("2024-01-01T00:00:00+00:00"), DialEndsAt: strp("2024-01-01T00:00:20+00:00"),
			CallType: "INCOMING_CALL", FromNumber: strp("03-1234-5678"), ToNumber: strp("0501234567"),
			Participants: []miitel.Participant{{ID: "p-cus", FromTo: "FROM"}, {ID: "p-rep", FromTo: "TO", LoginID: strp("rep@example.com")}},
			Tags:         []miitel.Tag{}, Comments: []miitel.Comment{}, Keywords: []miitel.Keyword{}, Phrases: []miitel.Phrase{},
			SpeechRecognition: &miitel.SpeechRecognition{},
		})},
		{"a minutes-only event", base(miitel.KindMinutes, miitel.Detail{
			ID: full.ID, DialStartsAt: full.DialStartsAt, DialAnsweredAt: full.DialAnsweredAt, DialEndsAt: full.DialEndsAt,
			CallType: "OUTGOING_CALL", CircuitNumber: full.CircuitNumber, ToNumber: full.ToNumber, Minutes: strp("minutes"),
			Participants: []miitel.Participant{{ID: "p-rep", FromTo: "FROM", Name: strp("Rep"), LoginID: strp("rep@example.com")}, {ID: "p-cus", FromTo: "TO"}},
		})},
		{"an analysed outgoing call", base(miitel.KindAnalysis, full)},
		{"an internal extension call", base(miitel.KindAnalysis, miitel.Detail{
			ID: "00000000-0000-0000-0000-000000000005", CallType: "EXTENSION", FromNumber: strp("101"), ToNumber: strp("102"),
			DialStartsAt: strp("2024-01-01T00:00:00+00:00"), DialAnsweredAt: strp("2024-01-01T00:00:01+00:00"), DialEndsAt: strp("2024-01-01T00:00:09+00:00"),
		})},
	}
}
