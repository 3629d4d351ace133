package receiver

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// invalidError is a request the sender must fix: 400 with code and a message that names
// the offending field (never its value: values may be phone numbers or transcript).
type invalidError struct {
	code string
	msg  string
}

func (e *invalidError) Error() string { return e.msg }

func invalidf(format string, a ...any) error {
	return &invalidError{code: "invalid_payload", msg: fmt.Sprintf(format, a...)}
}

// decodeTop splits a body into its top-level keys. It is the first step of parsing and the
// only one needed before authentication (payload-key credentials live at the top level).
func decodeTop(body []byte) (map[string]json.RawMessage, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, &invalidError{code: "malformed_json", msg: "request body is empty"}
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, &invalidError{code: "malformed_json", msg: fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se)}
		case errors.As(err, &te):
			return nil, &invalidError{code: "malformed_json", msg: "request body must be a JSON object"}
		default:
			return nil, &invalidError{code: "malformed_json", msg: "malformed JSON: " + err.Error()}
		}
	}
	if top == nil { // the body was the JSON literal null
		return nil, &invalidError{code: "malformed_json", msg: "request body must be a JSON object"}
	}
	return top, nil
}

// challengeOf returns the challenge token when the body is MiiTel's setup handshake.
func challengeOf(top map[string]json.RawMessage) (token string, isChallenge bool, err error) {
	raw, ok := top["challenge"]
	if !ok {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &token); err != nil || isNull(raw) {
		return "", true, invalidf("challenge must be a string")
	}
	return token, true, nil
}

// parsedCall is a validated call: one event per detail, with its dedupe key set.
type parsedCall struct {
	events []*miitel.Event
}

// parseCall validates the call in top and builds the events. payload is the additional
// payload to queue (auth keys already removed); route names the webhook setting.
func parseCall(route string, top map[string]json.RawMessage, payload map[string]any, receivedAt time.Time) (*parsedCall, error) {
	rawCall, ok := top["call"]
	if !ok || isNull(rawCall) {
		return nil, invalidf("call is required")
	}
	var call map[string]json.RawMessage
	if err := json.Unmarshal(rawCall, &call); err != nil {
		return nil, invalidf("call must be an object")
	}
	callID, err := requiredString(call, "id", "call.id")
	if err != nil {
		return nil, err
	}
	tenant, err := requiredString(call, "tenant_code", "call.tenant_code")
	if err != nil {
		return nil, err
	}
	rawDetails, ok := call["details"]
	if !ok || isNull(rawDetails) {
		return nil, invalidf("call.details is required")
	}
	var details []json.RawMessage
	if err := json.Unmarshal(rawDetails, &details); err != nil {
		return nil, invalidf("call.details must be an array")
	}
	if len(details) == 0 {
		return nil, invalidf("call.details must not be empty")
	}
	payloadHash, err := canonicalHash(payload, tenant)
	if err != nil {
		return nil, fmt.Errorf("receiver: hash payload: %w", err)
	}
	pc := &parsedCall{events: make([]*miitel.Event, 0, len(details))}
	for i, raw := range details {
		ev, err := parseDetail(i, raw)
		if err != nil {
			return nil, err
		}
		ev.Route, ev.CallID, ev.TenantCode, ev.ReceivedAt, ev.Payload = route, callID, tenant, receivedAt, payload
		ev.DedupeKey, err = dedupeKey(route, callID, ev.Kind, &ev.Detail, payloadHash)
		if err != nil {
			return nil, fmt.Errorf("receiver: dedupe key: %w", err)
		}
		pc.events = append(pc.events, ev)
	}
	return pc, nil
}

// parseDetail decodes one detail straight into its type (one pass over its bytes) and
// checks what the worker cannot do without: an id, a call type and readable timestamps.
func parseDetail(i int, raw json.RawMessage) (*miitel.Event, error) {
	where := fmt.Sprintf("call.details[%d]", i)
	if isNull(raw) {
		return nil, invalidf("%s must be an object", where)
	}
	ev := &miitel.Event{}
	if err := json.Unmarshal(raw, &ev.Detail); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, invalidf("%s.%s must be %s, got %s", where, te.Field, jsonKind(te.Type.String()), te.Value)
		}
		return nil, invalidf("%s must be an object", where)
	}
	d := &ev.Detail
	if strings.TrimSpace(d.ID) == "" {
		return nil, invalidf("%s.id is required", where)
	}
	if strings.TrimSpace(d.CallType) == "" {
		return nil, invalidf("%s.call_type is required", where)
	}
	// The worker computes durations and CRM timestamps from these; "" counts as absent,
	// like null (Classify does the same).
	for _, f := range []struct {
		name string
		v    *string
	}{
		{"dial_starts_at", d.DialStartsAt}, {"dial_answered_at", d.DialAnsweredAt}, {"dial_ends_at", d.DialEndsAt},
		{"queueing_starts_at", d.QueueingStartsAt}, {"queueing_answered_at", d.QueueingAnsweredAt},
		{"queueing_ends_at", d.QueueingEndsAt},
	} {
		if f.v == nil || *f.v == "" {
			continue
		}
		if _, err := time.Parse(time.RFC3339, *f.v); err != nil {
			return nil, invalidf("%s.%s is not an RFC 3339 time", where, f.name)
		}
	}
	ev.Kind = miitel.Classify(d)
	return ev, nil
}

// jsonKind names a Go type the way a JSON sender thinks of it.
func jsonKind(goType string) string {
	t := strings.TrimLeft(goType, "*")
	switch {
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "float"):
		return "a number"
	case strings.HasPrefix(t, "[]"):
		return "an array"
	case t == "bool":
		return "a boolean"
	default:
		return "an object"
	}
}

func requiredString(obj map[string]json.RawMessage, key, where string) (string, error) {
	raw, ok := obj[key]
	if !ok || isNull(raw) {
		return "", invalidf("%s is required", where)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", invalidf("%s must be a string", where)
	}
	if strings.TrimSpace(s) == "" {
		return "", invalidf("%s is required", where)
	}
	return s, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// additionalPayload is every top-level key except call, challenge and the route's
// credential keys: what MiiTel's admin added to the body, queued with each event. Numbers
// keep their text (json.Number) so a re-send hashes the same.
func additionalPayload(top map[string]json.RawMessage, authKeys []string) (map[string]any, error) {
	var out map[string]any
	for k, raw := range top {
		if k == "call" || k == "challenge" || slices.Contains(authKeys, k) {
			continue
		}
		v, err := decodeAny(raw)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = map[string]any{}
		}
		out[k] = v
	}
	return out, nil
}

func decodeAny(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after JSON value")
	}
	return v, nil
}

// canonicalHash hashes the queued additional payload together with the tenant code: both
// are part of what the worker will write, so a change in either is not a re-send.
func canonicalHash(payload map[string]any, tenant string) ([sha256.Size]byte, error) {
	b, err := json.Marshal(payload) // maps marshal with sorted keys
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	h := sha256.New()
	h.Write(b)
	h.Write([]byte{0})
	h.Write([]byte(tenant))
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out, nil
}

// dedupeKeyLen is the length of a dedupe key: 128 bits of SHA-256 in hex, plenty against
// accidental collisions and short enough to keep ledger keys small.
const dedupeKeyLen = 32

// dedupeKey names one event's content: route, call id, detail id, kind and the hash of the
// detail as it is queued plus the payload hash. The detail is hashed in its typed JSON
// encoding: field order is fixed and keys the types do not know are dropped, exactly as in
// the task, so a re-send that differs only in key order, whitespace, number spelling (1.50
// vs 1.5) or a key the worker never sees maps to the same key. NUL separators keep ("ab","c")
// and ("a","bc") apart.
func dedupeKey(route, callID string, kind miitel.Kind, d *miitel.Detail, payloadHash [sha256.Size]byte) (string, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return "", err
	}
	content := sha256.Sum256(b)
	h := sha256.New()
	for _, s := range []string{route, callID, d.ID, string(kind)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	h.Write(content[:])
	h.Write(payloadHash[:])
	return hex.EncodeToString(h.Sum(nil))[:dedupeKeyLen], nil
}
