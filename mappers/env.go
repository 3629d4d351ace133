package mappers

import (
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// Env is what a mapping expression sees: the event's call-level fields, the detail itself,
// shortcuts to the detail's lists and sections, and facts derived from the call type that
// every mapping would otherwise spell out (direction, the customer's number, the rep).
// Field names are the identifiers of the expression language (the expr tags).
type Env struct {
	// The event.
	Route      string         `expr:"route"`       // the receiver route the call came in on
	CallID     string         `expr:"call_id"`     // MiiTel call id (the id in the call's URL)
	TenantCode string         `expr:"tenant_code"` // MiiTel company id
	Kind       string         `expr:"kind"`        // analysis | minutes | missed | unanswered | ivr
	ReceivedAt time.Time      `expr:"received_at"` // when the receiver accepted the request
	Payload    map[string]any `expr:"payload"`     // the admin's additional-payload keys
	Detail     *miitel.Detail `expr:"detail"`      // the call detail, as MiiTel sent it

	// Shortcuts into the detail.
	CallType          string                    `expr:"call_type"`
	Participants      []miitel.Participant      `expr:"participants"`
	Tags              []miitel.Tag              `expr:"tags"` // call memos
	Comments          []miitel.Comment          `expr:"comments"`
	Keywords          []miitel.Keyword          `expr:"keywords"`
	Phrases           []miitel.Phrase           `expr:"phrases"`
	SpeechRecognition *miitel.SpeechRecognition `expr:"speech_recognition"`
	Minutes           *string                   `expr:"minutes"` // AI minutes (minutes event)
	Analysis          *miitel.Analysis          `expr:"analysis"`

	// Derived from the call type and the timestamps.
	Direction  string  `expr:"direction"`   // inbound | outbound | internal
	Incoming   bool    `expr:"incoming"`    // the call was placed to us (incl. IVR and extension calls)
	Internal   bool    `expr:"internal"`    // rep to rep: EXTENSION, EXTENSION_GROUP
	Answered   bool    `expr:"answered"`    // answered at dial or at queue level
	Outcome    string  `expr:"outcome"`     // answered | missed | unanswered
	StartedAt  *string `expr:"started_at"`  // dial_starts_at, else queueing_starts_at
	AnsweredAt *string `expr:"answered_at"` // dial_answered_at, else queueing_answered_at
	EndedAt    *string `expr:"ended_at"`    // dial_ends_at, else queueing_ends_at
	// FromNumber and ToNumber fill MiiTel's gaps: an outgoing call has no from_number, the
	// circuit number is ours; an incoming call without to_number reached the circuit.
	FromNumber *string `expr:"from_number"`
	ToNumber   *string `expr:"to_number"`
	// CustomerNumber is the other party's number: from_number of an incoming call,
	// to_number of an outgoing one, nothing for an internal call.
	CustomerNumber *string `expr:"customer_number"`
	// Rep is the participant with a MiiTel login (on our side of the call); RepEmail is
	// its login_id, the rep's e-mail. Customer is the participant on the other side.
	Rep      *miitel.Participant `expr:"rep"`
	RepEmail *string             `expr:"rep_email"`
	Customer *miitel.Participant `expr:"customer"`
}

// isInternal reports a call between reps (EXTENSION, EXTENSION_GROUP): no customer on the line.
func isInternal(callType string) bool {
	return callType == "EXTENSION" || callType == "EXTENSION_GROUP"
}

func firstSet(a, b *string) *string {
	if a != nil && *a != "" {
		return a
	}
	if b != nil && *b != "" {
		return b
	}
	return nil
}

// fill sets env from ev, reusing env's memory; nothing is copied but slice headers.
func (env *Env) fill(ev *miitel.Event) {
	d := &ev.Detail
	*env = Env{
		Route:             ev.Route,
		CallID:            ev.CallID,
		TenantCode:        ev.TenantCode,
		Kind:              string(ev.Kind),
		ReceivedAt:        ev.ReceivedAt,
		Payload:           ev.Payload,
		Detail:            d,
		CallType:          d.CallType,
		Participants:      d.Participants,
		Tags:              d.Tags,
		Comments:          d.Comments,
		Keywords:          d.Keywords,
		Phrases:           d.Phrases,
		SpeechRecognition: d.SpeechRecognition,
		Minutes:           d.Minutes,
		Analysis:          d.Analysis,
		StartedAt:         firstSet(d.DialStartsAt, d.QueueingStartsAt),
		AnsweredAt:        firstSet(d.DialAnsweredAt, d.QueueingAnsweredAt),
		EndedAt:           firstSet(d.DialEndsAt, d.QueueingEndsAt),
	}
	// An IVR detail is the caller pressing digits: incoming, though miitel.IsIncoming (made
	// for classifying unanswered calls) does not list READ_DTMF.
	env.Incoming = miitel.IsIncoming(d.CallType) || d.CallType == "READ_DTMF"
	env.Internal = isInternal(d.CallType)
	env.Answered = env.AnsweredAt != nil
	switch {
	case env.Internal:
		env.Direction = "internal"
	case env.Incoming:
		env.Direction = "inbound"
	default:
		env.Direction = "outbound"
	}
	switch {
	case env.Answered:
		env.Outcome = "answered"
	case env.Incoming:
		env.Outcome = "missed"
	default:
		env.Outcome = "unanswered"
	}
	env.FromNumber, env.ToNumber = firstSet(d.FromNumber, nil), firstSet(d.ToNumber, nil)
	if env.Incoming {
		env.ToNumber = firstSet(d.ToNumber, d.CircuitNumber)
	} else {
		env.FromNumber = firstSet(d.FromNumber, d.CircuitNumber)
	}
	if !env.Internal {
		if env.Incoming {
			env.CustomerNumber = firstSet(d.FromNumber, nil)
		} else {
			env.CustomerNumber = firstSet(d.ToNumber, nil)
		}
	}
	// The rep is on our side: FROM of an outgoing call, TO of an incoming one; failing that,
	// anyone with a login. The customer is whoever has no login on the other side.
	repSide, customerSide := "FROM", "TO"
	if env.Incoming {
		repSide, customerSide = "TO", "FROM"
	}
	for i := range d.Participants {
		p := &d.Participants[i]
		hasLogin := p.LoginID != nil && *p.LoginID != ""
		switch {
		case hasLogin && p.FromTo == repSide && (env.Rep == nil || env.Rep.FromTo != repSide):
			env.Rep = p
		case hasLogin && env.Rep == nil:
			env.Rep = p
		case !hasLogin && p.FromTo == customerSide && env.Customer == nil:
			env.Customer = p
		}
	}
	if env.Rep != nil {
		env.RepEmail = env.Rep.LoginID
	}
}
