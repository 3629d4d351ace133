package receiver

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestChallengeWithCallRefused: MiiTel sends a challenge only when an admin saves the
// webhook setting, never together with a call. A body with both is refused as a whole, so
// a 2xx can never acknowledge a call that was not queued (issue 8).
func TestChallengeWithCallRefused(t *testing.T) {
	seed := sample(t, "call_analysis_completed/seed_sample.json")
	const msg = "a body with both challenge and call is ambiguous: MiiTel sends challenge only when the webhook setting is saved, never with a call; nothing was queued"
	tests := []struct {
		name string
		body []byte
	}{
		{"challenge first", edit(t, seed, func(m map[string]any) { m["challenge"] = "a1b2c3" })},
		{"challenge null", edit(t, seed, func(m map[string]any) { m["challenge"] = nil })},
		{"call null", []byte(`{"challenge":"a1b2","call":null,"params_key":"z&aH+&Kz8saC"}`)},
		{"call after challenge", []byte(`{"params_key":"z&aH+&Kz8saC","challenge":"00ff","call":{"id":"c","tenant_code":"t","details":[{"id":"d","call_type":"OUTGOING_CALL"}]}}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			resp, body := h.post("/webhooks/miitel/seed", tc.body, nil)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
			}
			assertErrorBody(t, body, "challenge_with_call", msg)
			if n := h.redisKeys(); n != 0 {
				t.Errorf("refused body wrote %d redis keys", n)
			}
			_, err := ParseEvents("r", tc.body, []string{"params_key"}, fixedNow)
			if err == nil || errors.Is(err, ErrChallenge) || !strings.Contains(err.Error(), msg) {
				t.Errorf("ParseEvents: %v, want the ambiguity error", err)
			}
		})
	}
}

// TestInvalidUTF8Refused: encoding/json would replace invalid bytes with U+FFFD and the
// CRM would get "Left\ufffd\ufffdMessage"; the body is refused, naming the first bad byte.
// JSON escapes that decode to no character (lone UTF-16 surrogates) are the same defect in
// escaped form (a sender whose text held undecodable bytes) and are refused the same way;
// a proper surrogate pair is a character and is accepted.
func TestInvalidUTF8Refused(t *testing.T) {
	seed := string(sample(t, "call_analysis_completed/seed_sample.json"))
	at := func(s, sub string) int {
		t.Helper()
		i := strings.Index(s, sub)
		if i < 0 {
			t.Fatalf("%q not in body", sub)
		}
		return i
	}
	inTranscript := strings.Replace(seed, "Left Message", "Left\xff\xfeMessage", 1)
	inKey := strings.Replace(seed, `"call_type"`, "\"call\xc3_type\"", 1)
	inTopKey := strings.Replace(seed, `"params_key"`, "\"params\xe3\x81_key\"", 1)
	truncated := strings.Replace(seed, "Left Message", "Left \xe3\x81", 1)
	overlong := strings.Replace(seed, "Left Message", "Left \xc0\xafMessage", 1)
	encodedSurrogate := strings.Replace(seed, "Left Message", "Left \xed\xa0\x80Message", 1) // U+D800 in UTF-8 form
	tests := []struct {
		name string
		body string
		want string
	}{
		{"in a string value", inTranscript, utf8Msg(at(inTranscript, "\xff"))},
		{"in a key", inKey, utf8Msg(at(inKey, "\xc3_"))},
		{"in a top-level key", inTopKey, utf8Msg(at(inTopKey, "\xe3\x81_"))},
		{"truncated sequence", truncated, utf8Msg(at(truncated, "\xe3\x81"))},
		{"overlong encoding", overlong, utf8Msg(at(overlong, "\xc0"))},
		{"surrogate encoded as UTF-8", encodedSurrogate, utf8Msg(at(encodedSurrogate, "\xed"))},
		{"outside any string", "\xef" + seed, utf8Msg(0)},
	}
	for _, esc := range []struct{ name, esc string }{
		{"lone high surrogate", `\ud800`}, {"lone low surrogate", `\udc00`}, {"upper case", `\uDBFF`},
		{"high then letter", `\ud83dx`}, {"high then non-surrogate escape", `\ud83d\u0041`},
		{"two highs", `\ud83d\ud83d`}, {"low then high", `\ude00\ud83d`},
	} {
		body := strings.Replace(seed, "Left Message", "Left "+esc.esc+" Message", 1)
		off := at(body, esc.esc)
		if esc.name == "low then high" {
			off = at(body, `\ude00`)
		}
		tests = append(tests, struct{ name, body, want string }{esc.name, body, surrogateMsg(body[off:off+6], off)})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			resp, body := h.post("/webhooks/miitel/open", []byte(tc.body), nil)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
			}
			assertErrorBody(t, body, "invalid_utf8", tc.want)
			if n := h.redisKeys(); n != 0 {
				t.Errorf("refused body wrote %d redis keys", n)
			}
			if _, err := ParseEvents("r", []byte(tc.body), nil, fixedNow); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseEvents: %v", err)
			}
		})
	}

	accepted := []struct{ name, esc, want string }{
		{"surrogate pair", `\ud83d\ude00`, "Left \U0001F600 Message"},
		{"upper-case pair", `\uD83D\uDE00`, "Left \U0001F600 Message"},
		{"escaped backslash before u", `\\ud800`, `Left \ud800 Message`},
		{"U+FFFD itself", `\ufffd`, "Left \ufffd Message"},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			body := strings.Replace(seed, "Left Message", "Left "+tc.esc+" Message", 1)
			h.postOK("/webhooks/miitel/seed", []byte(body))
			evs := h.pending()
			if len(evs) != 1 || evs[0].Detail.CallType == "" {
				t.Fatalf("queued %v", evs)
			}
			found := false
			for _, tag := range evs[0].Detail.Tags {
				found = found || tag.Value == tc.want
			}
			if !found {
				t.Errorf("memo %q not queued as %q: %+v", tc.esc, tc.want, evs[0].Detail.Tags)
			}
		})
	}
}

func utf8Msg(off int) string {
	return "request body is not valid UTF-8: invalid byte at offset " + strconv.Itoa(off)
}

func surrogateMsg(esc string, off int) string {
	return "request body is not valid UTF-8: the escape " + esc + " at offset " + strconv.Itoa(off) + " is a lone UTF-16 surrogate, not a character"
}

// TestShortUnicodeEscapeNearTheEndRefused: a \u escape cut short within six bytes of the
// body's end (`{"a":"\ud"}`) once sent the surrogate scan past the body and panicked into
// a 500, which MiiTel retries; it is malformed JSON, a 400 that names where.
func TestShortUnicodeEscapeNearTheEndRefused(t *testing.T) {
	for _, body := range []string{`{"a":"\ud"}`, `{"a":"\uD8"}`, `{"a":"\udc0"}`, `{"a":"\ud8"`, `"\ud`} {
		t.Run(body, func(t *testing.T) {
			h := newHarness(t)
			resp, got := h.post("/webhooks/miitel/open", []byte(body), nil)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, got)
			}
			var eb errorBody
			if err := json.Unmarshal(got, &eb); err != nil || eb.Code != "malformed_json" ||
				!strings.HasPrefix(eb.Error, "malformed JSON at byte ") {
				t.Errorf("error body %s, want malformed_json at a byte offset", got)
			}
			if n := h.redisKeys(); n != 0 {
				t.Errorf("refused body wrote %d redis keys", n)
			}
		})
	}
}

// TestVideoEventRefusedByName: MiiTel's video-meeting event is not call history. The
// answer names it, with a stable code, instead of "call is required"; ParseEvents returns
// the same error, recognisable with errors.Is(err, ErrVideoEvent).
func TestVideoEventRefusedByName(t *testing.T) {
	const msg = "video_analysis_completed events (MiiTel video meetings) are not call history; this service syncs calls"
	for _, name := range []string{"video_analysis_completed/sample1.json", "video_analysis_completed/sample2.json"} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			body := sample(t, name)
			resp, got := h.post("/webhooks/miitel/open", body, nil)
			if resp.StatusCode != http.StatusUnprocessableEntity {
				t.Fatalf("status %d, want 422: %s", resp.StatusCode, got)
			}
			assertErrorBody(t, got, "unsupported_event", msg)
			if n := h.redisKeys(); n != 0 {
				t.Errorf("video event wrote %d redis keys", n)
			}
			_, err := ParseEvents("r", body, nil, fixedNow)
			if !errors.Is(err, ErrVideoEvent) || !strings.Contains(err.Error(), msg) {
				t.Errorf("ParseEvents: %v, want ErrVideoEvent", err)
			}
		})
	}
	t.Run("a call whose admin payload has a video key is still a call", func(t *testing.T) {
		h := newHarness(t)
		body := edit(t, sample(t, "call_analysis_completed/seed_sample.json"), func(m map[string]any) { m["video"] = "yes" })
		if a := h.postOK("/webhooks/miitel/seed", body); a.Queued != 1 {
			t.Fatalf("%+v", a)
		}
		if got := h.pending()[0].Payload; got["video"] != "yes" || got["params_key"] != nil {
			t.Errorf("payload %v", got)
		}
	})
}
