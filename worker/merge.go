package worker

import "github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"

// merge folds an event into the stored state of its call detail and returns the merged
// event the mapping renders. The rules make the analysis and minutes events converge on the
// same record in either order, and keep a poorer event from blanking what a richer one
// brought:
//   - a value that is absent (nil, empty list, empty string) never replaces a present one;
//   - between two present values, the newer event's (ReceivedAt) wins, so an edited memo
//     re-sent later replaces the old one, while an older event processed late does not;
//   - participants merge by id, so the minutes event's participants (without analysis)
//     keep the analysis event's voice evaluation;
//   - the kind stays the call's outcome (analysis, missed, ...) once one is known: the
//     minutes event adds minutes, it does not turn an answered call into "minutes".
//
// merge does not modify its arguments' lists in place; it returns a new event.
func merge(state, ev *miitel.Event) *miitel.Event {
	if state == nil {
		out := *ev
		return &out
	}
	newer, older := ev, state
	if ev.ReceivedAt.Before(state.ReceivedAt) {
		newer, older = state, ev
	}
	out := *newer
	out.CallID = str(newer.CallID, older.CallID)
	out.TenantCode = str(newer.TenantCode, older.TenantCode)
	out.Route = str(newer.Route, older.Route)
	out.Kind = mergeKind(state.Kind, ev.Kind)
	out.DedupeKey = ev.DedupeKey // the ledger records the event being processed now
	out.Payload = mergePayload(older.Payload, newer.Payload)
	out.Detail = mergeDetail(&older.Detail, &newer.Detail)
	return &out
}

func mergeKind(a, b miitel.Kind) miitel.Kind {
	switch {
	case a == "" || a == miitel.KindMinutes:
		if b != "" {
			return b
		}
		return a
	case b == "" || b == miitel.KindMinutes:
		return a
	default:
		return b // e.g. the IVR leg answered later: the later outcome is the current one
	}
}

func mergePayload(older, newer map[string]any) map[string]any {
	if len(older) == 0 {
		return newer
	}
	if len(newer) == 0 {
		return older
	}
	out := make(map[string]any, len(older)+len(newer))
	for k, v := range older {
		out[k] = v
	}
	for k, v := range newer {
		if v != nil {
			out[k] = v
		}
	}
	return out
}

func mergeDetail(o, n *miitel.Detail) miitel.Detail {
	d := *n
	d.ID = str(n.ID, o.ID)
	d.CallType = str(n.CallType, o.CallType)
	d.DialStartsAt = ptr(n.DialStartsAt, o.DialStartsAt)
	d.DialAnsweredAt = ptr(n.DialAnsweredAt, o.DialAnsweredAt)
	d.DialEndsAt = ptr(n.DialEndsAt, o.DialEndsAt)
	d.QueueingStartsAt = ptr(n.QueueingStartsAt, o.QueueingStartsAt)
	d.QueueingAnsweredAt = ptr(n.QueueingAnsweredAt, o.QueueingAnsweredAt)
	d.QueueingEndsAt = ptr(n.QueueingEndsAt, o.QueueingEndsAt)
	d.CircuitNumber = ptr(n.CircuitNumber, o.CircuitNumber)
	d.CircuitName = ptr(n.CircuitName, o.CircuitName)
	d.FromNumber = ptr(n.FromNumber, o.FromNumber)
	d.ToNumber = ptr(n.ToNumber, o.ToNumber)
	d.PreviousID = ptr(n.PreviousID, o.PreviousID)
	d.DTMF = ptr(n.DTMF, o.DTMF)
	d.Minutes = ptr(n.Minutes, o.Minutes)
	if n.Analysis == nil {
		d.Analysis = o.Analysis
	}
	d.Participants = mergeParticipants(o.Participants, n.Participants)
	d.Tags = list(n.Tags, o.Tags)
	d.Comments = list(n.Comments, o.Comments)
	d.Keywords = list(n.Keywords, o.Keywords)
	d.Phrases = list(n.Phrases, o.Phrases)
	d.SpeechRecognition = mergeSpeech(o.SpeechRecognition, n.SpeechRecognition)
	return d
}

func mergeParticipants(o, n []miitel.Participant) []miitel.Participant {
	if len(n) == 0 {
		return o
	}
	if len(o) == 0 {
		return n
	}
	byID := make(map[string]*miitel.Participant, len(o))
	for i := range o {
		byID[o[i].ID] = &o[i]
	}
	out := make([]miitel.Participant, len(n), len(n)+len(o))
	seen := make(map[string]bool, len(n))
	for i, p := range n {
		seen[p.ID] = true
		if old, ok := byID[p.ID]; ok {
			p.FromTo = str(p.FromTo, old.FromTo)
			p.Name = ptr(p.Name, old.Name)
			p.CompanyName = ptr(p.CompanyName, old.CompanyName)
			p.LoginID = ptr(p.LoginID, old.LoginID)
			if p.Analysis == nil {
				p.Analysis = old.Analysis
			}
		}
		out[i] = p
	}
	for _, p := range o {
		if !seen[p.ID] {
			out = append(out, p)
		}
	}
	return out
}

func mergeSpeech(o, n *miitel.SpeechRecognition) *miitel.SpeechRecognition {
	if n == nil {
		return o
	}
	if o == nil {
		return n
	}
	return &miitel.SpeechRecognition{Raw: str(n.Raw, o.Raw), Summary: str(n.Summary, o.Summary)}
}

func str(n, o string) string {
	if n != "" {
		return n
	}
	return o
}

func ptr(n, o *string) *string {
	if n != nil && *n != "" {
		return n
	}
	if o != nil && *o != "" {
		return o
	}
	return n
}

func list[T any](n, o []T) []T {
	if len(n) > 0 {
		return n
	}
	return o
}
