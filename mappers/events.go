package mappers

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// Events splits a MiiTel request body into one event per call detail, the way the receiver
// queues them: the call-level fields copied into each, the kind classified from the detail's
// shape, and every top-level key other than "call" and "challenge" kept as an
// additional-payload key. It serves `mapping preview` and tests; the receiver additionally
// removes the payload keys it authenticated with.
func Events(route string, body []byte, received time.Time) ([]*miitel.Event, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("mappers: payload: %w", err)
	}
	var call *miitel.Call
	if raw, ok := top["call"]; ok {
		if err := json.Unmarshal(raw, &call); err != nil {
			return nil, fmt.Errorf("mappers: payload: call: %w", err)
		}
	}
	if call == nil { // absent or null
		if _, ok := top["challenge"]; ok {
			return nil, errors.New("mappers: payload: a challenge request (webhook setup), not a call")
		}
		return nil, errors.New(`mappers: payload: no "call" object: not a MiiTel call history request`)
	}
	var payload map[string]any
	for k, raw := range top {
		if k == "call" || k == "challenge" {
			continue
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("mappers: payload key %q: %w", k, err)
		}
		if payload == nil {
			payload = map[string]any{}
		}
		payload[k] = v
	}
	evs := make([]*miitel.Event, 0, len(call.Details))
	for _, d := range call.Details {
		evs = append(evs, &miitel.Event{
			Route:      route,
			CallID:     call.ID,
			TenantCode: call.TenantCode,
			Kind:       miitel.Classify(&d),
			ReceivedAt: received,
			Detail:     d,
			Payload:    payload,
		})
	}
	return evs, nil
}
