package mappers

import (
	"strings"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// Facts are what operators find a call by (call status, the dead letter), derived from an
// event exactly as mapping expressions see them, so "the rep" of a status query is the
// rep_email a mapping sends as the owner.
type Facts struct {
	RepEmail  string    // rep_email, lower-cased
	StartedAt time.Time // started_at; zero when MiiTel sent none or it does not parse
	Direction string    // inbound | outbound | internal
	Outcome   string    // answered | missed | unanswered
	// FromNumber, ToNumber and CustomerNumber are as MiiTel sent them (from_number,
	// to_number, customer_number): callers mask or hash them, never store them.
	FromNumber, ToNumber, CustomerNumber string
}

// FactsOf derives the Facts of ev.
func FactsOf(ev *miitel.Event) Facts {
	var env Env
	env.fill(ev)
	f := Facts{Direction: env.Direction, Outcome: env.Outcome,
		FromNumber: derefFact(env.FromNumber), ToNumber: derefFact(env.ToNumber), CustomerNumber: derefFact(env.CustomerNumber)}
	f.RepEmail = strings.ToLower(strings.TrimSpace(derefFact(env.RepEmail)))
	if s := derefFact(env.StartedAt); s != "" {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			f.StartedAt = t
		}
	}
	return f
}

func derefFact(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
