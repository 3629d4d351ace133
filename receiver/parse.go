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

	"github.com/zeebo/xxh3"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// ErrChallenge is what ParseEvents returns for MiiTel's setup handshake, which is not a call.
var ErrChallenge = errors.New("receiver: a challenge (the webhook setup handshake), not a call")

// ErrVideoEvent is wrapped by the error for MiiTel's video_analysis_completed event (a body
// with a top-level "video" and no "call"): video meetings are not call history. The
// receiver answers it 422 unsupported_event; `mapping preview` recognises it with errors.Is.
var ErrVideoEvent = errors.New("video_analysis_completed events (MiiTel video meetings) are not call history; this service syncs calls")

// maxDetails bounds the details of one call. A call has a handful of legs (transfers,
// queues, IVR); each detail is a task in the request's one enqueue script.
const maxDetails = 1000

// ParseEvents turns a request body into the events the receiver queues for it, checked as
// the receiver checks them, without authentication or Redis. `mapping preview` renders
// these, so an admin sees what production makes of a payload, or the 400 it would get.
// credentialKeys are the route's payload-credential keys, left out of each event's payload.
func ParseEvents(route string, body []byte, credentialKeys []string, receivedAt time.Time) ([]*miitel.Event, error) {
	body = bytes.Clone(body) // the events' strings may share the body's memory (decodeCall)
	top, err := splitTop(body)
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	if _, isChallenge, err := top.challengeToken(); err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	} else if isChallenge {
		return nil, ErrChallenge
	}
	req, err := top.parse(route, credentialKeys, receivedAt)
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	req.release() // the events do not refer to the encoded details
	return req.events, nil
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

func invalidf(format string, a ...any) error {
	return &invalidError{code: "invalid_payload", msg: fmt.Sprintf(format, a...)}
}

func malformedf(format string, a ...any) error {
	return &invalidError{code: "malformed_json", msg: fmt.Sprintf(format, a...)}
}

// errChallengeWithCall refuses a body with both keys. MiiTel sends a challenge only when an
// admin saves the webhook setting (with the admin's additional payload), never with a
// call; answering either half would acknowledge the other without acting on it.
var errChallengeWithCall = &invalidError{code: "challenge_with_call",
	msg: "a body with both challenge and call is ambiguous: MiiTel sends challenge only when the webhook setting is saved, never with a call; nothing was queued"}

var errVideoEvent = &invalidError{code: "unsupported_event", msg: ErrVideoEvent.Error(),
	status: http.StatusUnprocessableEntity, is: ErrVideoEvent}

// member is one top-level key other than call, challenge and video, with its value
// decoded (numbers as json.Number, so a re-send hashes the same) and its bytes.
type member struct {
	key string
	raw []byte
	val any
}

// topLevel is a body split into its top-level members: the call's bytes, to be decoded
// into the typed call once, after authentication; the challenge; and every other key
// (additional payload and payload credentials) decoded on the way. The split walks the
// body once, without decoding the call, and counts its containers and elements so a call
// that would decode into far more memory than its size can be charged for it (decodeCost).
type topLevel struct {
	body      []byte
	call      []byte // nil: absent
	callAt    int    // offset of call in body
	challenge *member
	video     bool
	others    []member

	objects, arrays, elems int64
}

// splitTop checks that body is UTF-8 text holding one JSON object and splits that object
// into its members. Every byte is checked: the structure here, every value but the call
// by encoding/json now, the call by encoding/json when it is decoded. A syntax error is
// reported as encoding/json reports it for the whole body (malformedAt).
func splitTop(body []byte) (*topLevel, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, malformedf("request body is empty")
	}
	if err := checkText(body); err != nil {
		return nil, err
	}
	if !validEscapes(body) {
		return nil, malformedAt(body, "")
	}
	t := &topLevel{body: body}
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return nil, malformedAt(body, "request body must be a JSON object")
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return t, t.end(i + 1)
	}
	seen := map[string]bool{}
	for {
		if i >= len(body) || body[i] != '"' {
			return nil, malformedAt(body, "")
		}
		kEnd, ok := skipString(body, i)
		if !ok {
			return nil, malformedAt(body, "")
		}
		key, ok := keyOf(body[i:kEnd])
		if !ok {
			return nil, malformedAt(body, "")
		}
		i = skipSpace(body, kEnd)
		if i >= len(body) || body[i] != ':' {
			return nil, malformedAt(body, "")
		}
		vStart := skipSpace(body, i+1)
		vEnd, ok := t.skipValue(body, vStart)
		if !ok {
			return nil, malformedAt(body, "")
		}
		val := body[vStart:vEnd]
		if seen[key] {
			// Last-one-wins (encoding/json) would drop the first call or credential silently.
			return nil, malformedAt(body, fmt.Sprintf("duplicate top-level key %q: each key may appear once", key))
		}
		seen[key] = true
		switch key {
		case "call":
			t.call, t.callAt = val, vStart
		default:
			// "video" marks MiiTel's video event when there is no call; beside a call it
			// is an additional payload key like any other.
			t.video = t.video || key == "video"
			v, err := decodeAny(val)
			if err != nil {
				return nil, malformedAt(body, "")
			}
			m := member{key: key, raw: val, val: v}
			if key == "challenge" {
				t.challenge = &m
			} else {
				t.others = append(t.others, m)
			}
		}
		i = skipSpace(body, vEnd)
		if i >= len(body) {
			return nil, malformedAt(body, "")
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
			continue
		case '}':
			return t, t.end(i + 1)
		}
		return nil, malformedAt(body, "")
	}
}

// end checks that nothing but white space follows the object.
func (t *topLevel) end(i int) error {
	if skipSpace(t.body, i) != len(t.body) {
		return malformedAt(t.body, "")
	}
	return nil
}

// malformedAt reports a body the split refused the way encoding/json reports it for the
// whole body (the first syntax error and its offset), so the message does not depend on
// which check found it. msg is used when encoding/json finds the body valid: a valid
// non-object, or a rule of ours (duplicate keys).
func malformedAt(body []byte, msg string) error {
	var v struct{}
	err := json.Unmarshal(body, &v)
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return malformedf("malformed JSON at byte %d: %v", se.Offset, se)
	case errors.As(err, &te), err == nil && body[skipSpace(body, 0)] != '{':
		return malformedf("request body must be a JSON object")
	case err != nil:
		return malformedf("malformed JSON: %v", err)
	case msg != "":
		return malformedf("%s", msg)
	}
	return malformedf("malformed JSON") // the split and encoding/json disagree
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the offset after the string starting with the quote at b[i]. It
// finds the closing quote (one not escaped by an odd run of backslashes) without looking
// at the bytes in between; whoever decodes the string checks them.
func skipString(b []byte, i int) (int, bool) {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return 0, false
		}
		j += k
		n := 0
		for p := j - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return j + 1, true
		}
		j++
	}
}

// keyOf decodes a quoted top-level key.
func keyOf(q []byte) (string, bool) {
	inner := q[1 : len(q)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		for _, c := range inner {
			if c < 0x20 {
				return "", false
			}
		}
		return string(inner), true
	}
	var s string
	if json.Unmarshal(q, &s) != nil {
		return "", false
	}
	return s, true
}

// skipValue returns the end of the value starting at b[i], counting containers and
// elements on the way. It only finds the end; the value's decoder checks the rest.
//
// It walks every byte of the call, so it is written for speed: a table says which bytes
// matter (most of a compact call is numbers, literals and short strings between them, and
// of an indented one white space), strings are skipped by skipString, and the counts stay
// in locals until the end.
func (t *topLevel) skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
	default: // number or literal: up to the next delimiter
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j, j > i
			}
			j++
		}
		return j, j > i
	}
	depth := 0
	var objects, arrays, elems int64
	for j := i; j < len(b); j++ {
		c := b[j]
		if !structural[c] {
			continue
		}
		switch c {
		case '"':
			k, ok := skipString(b, j)
			if !ok {
				return 0, false
			}
			j = k - 1
		case '{':
			objects++
			depth++
		case '[':
			arrays++
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				t.objects += objects
				t.arrays += arrays
				t.elems += elems
				return j + 1, true
			}
		case ',':
			elems++
		}
	}
	return 0, false
}

// structural marks the bytes skipValue acts on inside a container.
var structural = [256]bool{'"': true, '{': true, '[': true, '}': true, ']': true, ',': true}

// Decoding can take far more memory than the JSON it comes from: `{}` becomes a Detail or
// PhraseItem struct of hundreds of bytes, every element a slice slot. decodeCost bounds
// what decoding this body can allocate beyond its own size (an upper bound per
// container and element, from the largest types of the call), so the in-flight budget is
// charged for it before decoding starts.
const (
	costPerObject  = 320 // miitel.Detail (the largest struct decoded) and map headers
	costPerArray   = 48  // slice header and its first growth
	costPerElement = 48  // a slot of a grown slice, an interface value, a json.Number
)

func (t *topLevel) decodeCost() int64 {
	return int64(len(t.body)) + t.objects*costPerObject + t.arrays*costPerArray + t.elems*costPerElement
}

// challengeToken returns the challenge token when the body is MiiTel's setup handshake.
func (t *topLevel) challengeToken() (token string, isChallenge bool, err error) {
	if t.challenge == nil {
		return "", false, nil
	}
	if t.call != nil {
		return "", false, errChallengeWithCall
	}
	s, ok := t.challenge.val.(string)
	if !ok {
		return "", true, invalidf("challenge must be a string")
	}
	return s, true, nil
}

// credential returns the value of a top-level payload credential key as it is compared: a
// JSON string unquoted, any other JSON value by its text, so {"key": 1234} matches "1234".
func (t *topLevel) credential(key string) (string, bool) {
	for i := range t.others {
		if m := &t.others[i]; m.key == key {
			if s, ok := m.val.(string); ok {
				return s, true
			}
			return string(m.raw), true
		}
	}
	return "", false
}

// request is a parsed call: its events, and per event the JSON of its detail, encoded
// once, hashed into its dedupe key and spliced into its task (taskPayload).
type request struct {
	events  []*miitel.Event
	details [][]byte
	payload []byte    // JSON of the additional payload; nil when there is none
	buffers []*[]byte // pooled, holding details (release)
}

// parse decodes and validates the call and builds one event per detail, its dedupe key
// set. credentialKeys are left out of the queued additional payload; route names the
// webhook setting.
//
// The call is decoded in one typed pass: with a long transcript, decoding is most of the
// accept path's CPU. Only a call whose typed decode fails is walked again, piece by piece,
// by explainDecodeError, so that the 400 names the offending field with its detail index.
func (t *topLevel) parse(route string, credentialKeys []string, receivedAt time.Time) (*request, error) {
	if t.call == nil {
		if t.video {
			return nil, errVideoEvent
		}
		return nil, invalidf("call is required")
	}
	if isNull(t.call) {
		return nil, invalidf("call is required")
	}
	var call miitel.Call
	if err := decodeCall(t.call, &call); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, malformedAt(t.body, "")
		}
		return nil, explainDecodeError(t.call, err)
	}
	if err := checkCall(&call); err != nil {
		return nil, err
	}

	var payload map[string]any
	for _, m := range t.others {
		if slices.Contains(credentialKeys, m.key) {
			continue
		}
		if payload == nil {
			payload = make(map[string]any, len(t.others))
		}
		payload[m.key] = m.val
	}
	payloadJSON, err := json.Marshal(payload) // maps marshal with sorted keys; nil is null
	if err != nil {
		return nil, fmt.Errorf("receiver: encode payload: %w", err)
	}
	payloadHash := hashPayload(payloadJSON, call.TenantCode)
	req := &request{events: make([]*miitel.Event, len(call.Details)), details: make([][]byte, len(call.Details)),
		buffers: make([]*[]byte, 0, len(call.Details))}
	if len(payload) > 0 {
		req.payload = payloadJSON
	}
	for i := range call.Details {
		d := &call.Details[i]
		ev := &miitel.Event{
			Route: route, CallID: call.ID, TenantCode: call.TenantCode, Kind: miitel.Classify(d),
			ReceivedAt: receivedAt, Detail: *d, Payload: payload,
		}
		buf := getDetailBuffer()
		req.buffers = append(req.buffers, buf)
		// A detail encodes to about its share of the call's bytes (plus nulls for absent
		// keys): grown once, a 10 MiB transcript is not copied through every doubling.
		b, err := appendDetail(slices.Grow((*buf)[:0], len(t.call)/len(call.Details)+1024), d)
		*buf = b
		if err != nil {
			req.release()
			return nil, fmt.Errorf("receiver: encode detail: %w", err)
		}
		ev.DedupeKey = dedupeKey(route, call.ID, ev.Kind, d.ID, b, payloadHash)
		req.events[i], req.details[i] = ev, b
	}
	return req, nil
}

// release returns the details' buffers for reuse; req.details must not be used after it.
func (req *request) release() {
	for _, b := range req.buffers {
		putDetailBuffer(b)
	}
	req.buffers, req.details = nil, nil
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
	case len(c.Details) > maxDetails:
		return invalidf("call.details has %d entries, more than the %d one request may carry", len(c.Details), maxDetails)
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
func explainDecodeError(rawCall []byte, err error) error {
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

// plainString reports whether s, the inside of a JSON string, needs no decoding: no
// escapes, quotes or control characters (UTF-8 was checked by checkText).
func plainString(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c == '\\' || c == '"' {
			return false
		}
	}
	return true
}

func isNull(raw []byte) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

func decodeAny(raw []byte) (any, error) {
	if len(raw) > 0 && raw[0] == '"' {
		// A string without escapes (a payload credential, a team name) is its bytes. Its
		// closing quote is the split's; control characters go to encoding/json, which
		// refuses them.
		if len(raw) >= 2 && raw[len(raw)-1] == '"' && plainString(raw[1:len(raw)-1]) {
			return string(raw[1 : len(raw)-1]), nil
		}
		// Any other string (Go's encoding/json writes "&" as "\u0026") gets encoding/json's
		// verdict and value, as from the Decoder below but without its buffer: a string
		// holds no number for UseNumber to keep.
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return s, nil
	}
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

// hashPayload hashes the queued additional payload (its key-sorted JSON) together with the
// tenant code: both are part of what the worker will write, so a change in either is not a
// re-send.
func hashPayload(payloadJSON []byte, tenant string) [sha256.Size]byte {
	h := sha256.New()
	h.Write(payloadJSON)
	h.Write([]byte{0})
	h.Write([]byte(tenant))
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// dedupeKeyLen is the length of a dedupe key: 128 bits of SHA-256 in hex, plenty against
// accidental collisions and short enough to keep ledger keys small.
const dedupeKeyLen = 32

// dedupeKey names one event's content: route, call id, detail id, kind and the hash of the
// detail as it is queued (detailJSON, its typed encoding, the very bytes the task carries)
// plus the payload hash. In the typed encoding field order is fixed and keys the types do
// not know are dropped, exactly as in the task, so a re-send that differs only in key
// order, whitespace, number spelling (1.50 vs 1.5) or a key the worker never sees maps to
// the same key. NUL separators keep ("ab","c") and ("a","bc") apart.
//
// The detail's bytes (kilobytes: a transcript) are hashed with XXH3-128, 25 times faster
// than SHA-256 on the seed sample's detail (4% of the receiver's CPU went to SHA-256 here),
// and only that digest and the short fields go through SHA-256. A keyed or collision-proof
// hash buys nothing here: the key already holds the route, call and detail id, so whoever
// could craft a colliding detail could as well re-send that detail, and an accidental
// collision of 128 bits among one detail id's versions does not happen.
func dedupeKey(route, callID string, kind miitel.Kind, detailID string, detailJSON []byte, payloadHash [sha256.Size]byte) string {
	content := xxh3.Hash128(detailJSON).Bytes()
	h := sha256.New()
	for _, s := range []string{route, callID, detailID, string(kind)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	h.Write(content[:])
	h.Write(payloadHash[:])
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0]))[:dedupeKeyLen]
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
		case !ok:
			// not four hex digits, perhaps cut short by the body's end: validEscapes
			// reports it. Past the "\u" only: six bytes on may be past the end.
			i += 2
			continue
		case r < 0xd800 || r > 0xdfff:
			// not a surrogate
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

// validEscapes reports whether every backslash in body starts a JSON escape (\", \\, \/,
// \b, \f, \n, \r, \t or \u and four hex digits). A backslash is valid JSON only there,
// and the fast decoder (decodeCall) does not check the escapes of values it skips; this
// check makes it as strict as encoding/json. It costs one IndexByte walk over backslashes.
func validEscapes(body []byte) bool {
	for i := 0; ; {
		j := bytes.IndexByte(body[i:], '\\')
		if j < 0 {
			return true
		}
		i += j
		if i+1 >= len(body) {
			return false
		}
		switch body[i+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i += 2
		case 'u':
			if _, ok := hex4(body, i+2); !ok {
				return false
			}
			i += 6
		default:
			return false
		}
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
