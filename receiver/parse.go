package receiver

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// ErrChallenge is what ParseEvents returns for MiiTel's setup handshake, which is not a call.
var ErrChallenge = errors.New("receiver: a challenge (the webhook setup handshake), not a call")

// ErrVideoEvent is wrapped by the error for MiiTel's video_analysis_completed event (a body
// with a top-level "video" and no "call"): video meetings are not call history. The
// receiver answers it 422 unsupported_event; `mapping preview` recognises it with errors.Is.
var ErrVideoEvent = errors.New("video_analysis_completed events (MiiTel video meetings) are not call history; this service syncs calls")

// ParseEvents turns a request body into the events the receiver queues for it, checked as
// the receiver checks them, without authentication or Redis. `mapping preview` renders
// these, so an admin sees what production makes of a payload, or the 400 it would get.
// credentialKeys are the route's payload-credential keys, left out of each event's payload.
func ParseEvents(route string, body []byte, credentialKeys []string, receivedAt time.Time) ([]*miitel.Event, error) {
	top, err := decodeTop(body)
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	if _, isChallenge, err := challengeOf(top); err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	} else if isChallenge {
		return nil, ErrChallenge
	}
	payload, err := additionalPayload(top, credentialKeys)
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", invalidf("additional payload: %v", err))
	}
	events, err := parseCall(route, top, payload, receivedAt)
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	return events, nil
}

// invalidError is a request the sender must fix: 400 with code and a message that names
// the offending field (never its value: values may be phone numbers or transcript).
type invalidError struct {
	code   string
	msg    string
	status int   // 0 means 400
	is     error // a sentinel the error matches (errors.Is), or nil
}

func (e *invalidError) Error() string { return e.msg }

func (e *invalidError) Unwrap() error { return e.is }

// httpStatus is the answer's status: 400 unless the error says otherwise.
func (e *invalidError) httpStatus() int {
	if e.status == 0 {
		return http.StatusBadRequest
	}
	return e.status
}

// errChallengeWithCall refuses a body with both keys. MiiTel sends a challenge only when an
// admin saves the webhook setting (with the admin's additional payload), never with a
// call; answering either half would acknowledge the other without acting on it.
var errChallengeWithCall = &invalidError{code: "challenge_with_call",
	msg: "a body with both challenge and call is ambiguous: MiiTel sends challenge only when the webhook setting is saved, never with a call; nothing was queued"}

var errVideoEvent = &invalidError{code: "unsupported_event", msg: ErrVideoEvent.Error(),
	status: http.StatusUnprocessableEntity, is: ErrVideoEvent}

func invalidf(format string, a ...any) error {
	return &invalidError{code: "invalid_payload", msg: fmt.Sprintf(format, a...)}
}

// decodeTop splits a body into its top-level keys. It is the first step of parsing and the
// only one needed before authentication (payload-key credentials live at the top level).
func decodeTop(body []byte) (map[string]json.RawMessage, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, &invalidError{code: "malformed_json", msg: "request body is empty"}
	}
	if err := checkText(body); err != nil {
		return nil, err
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
	if _, withCall := top["call"]; withCall {
		return "", false, errChallengeWithCall
	}
	if err := json.Unmarshal(raw, &token); err != nil || isNull(raw) {
		return "", true, invalidf("challenge must be a string")
	}
	return token, true, nil
}

// parseCall validates the call in top and builds one event per detail, its dedupe key set.
// payload is the additional payload to queue (auth keys already removed); route names the
// webhook setting.
//
// The call is decoded in one typed pass: with a long transcript, decoding is most of the
// accept path's CPU, and every further json.Unmarshal of the same bytes scans them twice
// more. Only a call whose typed decode fails is walked again, piece by piece, by
// explainDecodeError, so that the 400 names the offending field with its detail index.
func parseCall(route string, top map[string]json.RawMessage, payload map[string]any, receivedAt time.Time) ([]*miitel.Event, error) {
	rawCall, ok := top["call"]
	if _, video := top["video"]; video && !ok {
		return nil, errVideoEvent
	}
	if !ok || isNull(rawCall) {
		return nil, invalidf("call is required")
	}
	var call miitel.Call
	if err := json.Unmarshal(rawCall, &call); err != nil {
		return nil, explainDecodeError(rawCall, err)
	}
	if err := checkCall(&call); err != nil {
		return nil, err
	}
	payloadHash, err := canonicalHash(payload, call.TenantCode)
	if err != nil {
		return nil, fmt.Errorf("receiver: hash payload: %w", err)
	}
	events := make([]*miitel.Event, len(call.Details))
	for i := range call.Details {
		d := &call.Details[i]
		ev := &miitel.Event{
			Route: route, CallID: call.ID, TenantCode: call.TenantCode, Kind: miitel.Classify(d),
			ReceivedAt: receivedAt, Detail: *d, Payload: payload,
		}
		ev.DedupeKey, err = dedupeKey(route, call.ID, ev.Kind, &ev.Detail, payloadHash)
		if err != nil {
			return nil, fmt.Errorf("receiver: dedupe key: %w", err)
		}
		events[i] = ev
	}
	return events, nil
}

// checkCall checks what the worker cannot do without: a call id and tenant, and per detail
// an id, a call type and readable timestamps.
func checkCall(c *miitel.Call) error {
	switch {
	case strings.TrimSpace(c.ID) == "":
		return invalidf("call.id is required")
	case strings.TrimSpace(c.TenantCode) == "":
		return invalidf("call.tenant_code is required")
	case c.Details == nil: // absent or null
		return invalidf("call.details is required")
	case len(c.Details) == 0:
		return invalidf("call.details must not be empty")
	}
	for i := range c.Details {
		d := &c.Details[i]
		if strings.TrimSpace(d.ID) == "" {
			return invalidf("call.details[%d].id is required", i)
		}
		if strings.TrimSpace(d.CallType) == "" {
			return invalidf("call.details[%d].call_type is required", i)
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
				return invalidf("call.details[%d].%s is not an RFC 3339 time", i, f.name)
			}
		}
	}
	return nil
}

// explainDecodeError finds, for a call the typed decode refused, the first value of the
// wrong JSON type, in the order checkCall looks at them. A typed decode error names the
// field without the detail's index, which an admin with a multi-detail call needs.
func explainDecodeError(rawCall json.RawMessage, err error) error {
	var call map[string]json.RawMessage
	if json.Unmarshal(rawCall, &call) != nil {
		return invalidf("call must be an object")
	}
	for _, f := range []struct{ key, where string }{{"id", "call.id"}, {"tenant_code", "call.tenant_code"}} {
		var s string
		if raw, ok := call[f.key]; ok && json.Unmarshal(raw, &s) != nil {
			return invalidf("%s must be a string", f.where)
		}
	}
	var details []json.RawMessage
	if raw, ok := call["details"]; ok && json.Unmarshal(raw, &details) != nil {
		return invalidf("call.details must be an array")
	}
	for i, raw := range details {
		var d miitel.Detail
		derr := json.Unmarshal(raw, &d)
		if derr == nil {
			continue
		}
		where := fmt.Sprintf("call.details[%d]", i)
		var te *json.UnmarshalTypeError
		if errors.As(derr, &te) && te.Field != "" {
			return invalidf("%s.%s must be %s, got %s", where, te.Field, jsonKind(te.Type.String()), te.Value)
		}
		return invalidf("%s must be an object", where)
	}
	return invalidf("call: %v", err) // the walk and the typed decode disagree: say what the decoder said
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

// checkText refuses a body that is not UTF-8 text: encoding/json would silently replace
// each bad byte with U+FFFD and the CRM would store the damage. JSON escapes of lone UTF-16
// surrogates (\ud800 without its pair) are the same defect in escaped form (a sender whose
// text held undecodable bytes: Python's surrogateescape, for one) and decode to U+FFFD just
// the same, so they are refused alike. The common case costs one utf8.Valid pass and, only
// when the body has a \u escape that could be a surrogate, one walk over its backslashes.
func checkText(body []byte) error {
	if !utf8.Valid(body) {
		return &invalidError{code: "invalid_utf8",
			msg: fmt.Sprintf("request body is not valid UTF-8: invalid byte at offset %d", firstInvalidUTF8(body))}
	}
	if !bytes.Contains(body, []byte(`\ud`)) && !bytes.Contains(body, []byte(`\uD`)) {
		return nil
	}
	for i := 0; ; {
		j := bytes.IndexByte(body[i:], '\\')
		if j < 0 {
			return nil
		}
		i += j
		if i+1 >= len(body) {
			return nil // a trailing backslash: the JSON parser reports it
		}
		if body[i+1] != 'u' {
			i += 2 // \\, \n, ...: the escaped byte cannot start an escape
			continue
		}
		r, ok := hex4(body, i+2)
		switch {
		case !ok || r < 0xd800 || r > 0xdfff:
			// not a surrogate (or not hex: the JSON parser reports it)
		case r <= 0xdbff:
			if lowSurrogateAt(body, i+6) {
				i += 12
				continue
			}
			return loneSurrogate(body, i)
		default:
			return loneSurrogate(body, i)
		}
		i += 6
	}
}

func loneSurrogate(body []byte, i int) error {
	return &invalidError{code: "invalid_utf8", msg: fmt.Sprintf(
		"request body is not valid UTF-8: the escape %s at offset %d is a lone UTF-16 surrogate, not a character", body[i:i+6], i)}
}

// lowSurrogateAt reports whether body[i:] starts with a \uDC00-\uDFFF escape.
func lowSurrogateAt(body []byte, i int) bool {
	if i+1 >= len(body) || body[i] != '\\' || body[i+1] != 'u' {
		return false
	}
	r, ok := hex4(body, i+2)
	return ok && r >= 0xdc00 && r <= 0xdfff
}

// hex4 decodes the four hex digits at body[i:].
func hex4(body []byte, i int) (rune, bool) {
	if i+4 > len(body) {
		return 0, false
	}
	var r rune
	for _, c := range body[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// firstInvalidUTF8 is the offset of the first byte that does not start a valid UTF-8
// sequence; only called once utf8.Valid said there is one.
func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}
