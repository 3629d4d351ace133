package receiver

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/miitel-crm-sync/miitel-crm-sync/examples"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// parseBody parses the way the handler does after authentication; a challenge is nil, nil.
func parseBody(body []byte, authKeys []string) ([]*miitel.Event, error) {
	events, err := ParseEvents("r", body, authKeys, fixedNow)
	if errors.Is(err, ErrChallenge) {
		return nil, nil
	}
	return events, err
}

// TestParseErrors pins the 400 messages: each names the field and says what is wrong.
func TestParseErrors(t *testing.T) {
	const d = `"id":"d1","call_type":"OUTGOING_CALL"`
	tests := []struct {
		body string
		want string
	}{
		{`{"call": null}`, "call is required"},
		{`{"call": []}`, "call must be an object"},
		{`{"call": {"tenant_code":"t","details":[{` + d + `}]}}`, "call.id is required"},
		{`{"call": {"id":"","tenant_code":"t","details":[{` + d + `}]}}`, "call.id is required"},
		{`{"call": {"id":7,"tenant_code":"t","details":[{` + d + `}]}}`, "call.id must be a string"},
		{`{"call": {"id":"c","details":[{` + d + `}]}}`, "call.tenant_code is required"},
		{`{"call": {"id":"c","tenant_code":"t"}}`, "call.details is required"},
		{`{"call": {"id":"c","tenant_code":"t","details":null}}`, "call.details is required"},
		{`{"call": {"id":"c","tenant_code":"t","details":{}}}`, "call.details must be an array"},
		{`{"call": {"id":"c","tenant_code":"t","details":[]}}`, "call.details must not be empty"},
		{`{"call": {"id":"c","tenant_code":"t","details":[null]}}`, "call.details[0].id is required"},
		{`{"call": {"id":"c","tenant_code":"t","details":[{` + d + `},{"call_type":"OUTGOING_CALL"}]}}`, "call.details[1].id is required"},
		{`{"call": {"id":"c","tenant_code":"t","details":[{"id":"d1"}]}}`, "call.details[0].call_type is required"},
		{`{"call": {"id":"c","tenant_code":"t","details":[{"id":7,"call_type":"X"}]}}`, "call.details[0].id must be a string, got number"},
		{`{"call": {"id":"c","tenant_code":"t","details":["x"]}}`, "call.details[0] must be an object"},
		{`{"call": {"id":"c","tenant_code":"t","details":[{` + d + `,"dial_starts_at":"yesterday"}]}}`, "call.details[0].dial_starts_at is not an RFC 3339 time"},
		{`{"call": {"id":"c","tenant_code":"t","details":[{` + d + `,"dial_ends_at":"2023-11-28 07:26:11"}]}}`, "call.details[0].dial_ends_at is not an RFC 3339 time"},
		{`{"call": {"id":"c","tenant_code":"t","details":[{` + d + `,"queueing_answered_at":5}]}}`, "call.details[0].queueing_answered_at must be a string, got number"},
		{`{"call": {"id":"c","tenant_code":"t","details":[{` + d + `,"participants":{}}]}}`, "call.details[0].participants must be an array, got object"},
		{`{"call": {"id":"c","tenant_code":"t","details":[{` + d + `,"participants":[{"name":1}]}]}}`, "call.details[0].participants.name must be a string, got number"},
		{`{"call": {"id":"c","tenant_code":"t","details":[{` + d + `},{` + d + `,"tags":[{"value":false}]}]}}`, "call.details[1].tags.value must be a string, got bool"},
		{`{"call": {"id":"c","tenant_code":7,"details":[{` + d + `}]}}`, "call.tenant_code must be a string"},
		{`{"call": {"id":"c","tenant_code":"t","details":[{` + d + `,"analysis":{"score":"high"}}]}}`, "call.details[0].analysis.score must be a number, got string"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			_, err := parseBody([]byte(tc.body), nil)
			var ie *invalidError
			if !errors.As(err, &ie) {
				t.Fatalf("err %v, want an invalidError", err)
			}
			if ie.msg != tc.want || ie.code != "invalid_payload" {
				t.Errorf("got %s %q, want invalid_payload %q", ie.code, ie.msg, tc.want)
			}
		})
	}
}

// TestParseTolerates unknown keys, nulls, empty strings for times, absent sections and
// call types MiiTel may add later.
func TestParseTolerates(t *testing.T) {
	body := `{"call": {"id":"c","tenant_code":"t","new_call_key":{"x":1},"details":[{"id":"d1","call_type":"SOMETHING_NEW",
		"dial_starts_at":"2023-11-28T07:26:06.123+09:00","dial_answered_at":"","dial_ends_at":null,"queueing_starts_at":null,
		"analysis":null,"participants":null,"phrases":null,"new_detail_key":[1,2]}]},"params_key":"secret","team":null}`
	pc, err := parseBody([]byte(body), []string{"params_key"})
	if err != nil {
		t.Fatal(err)
	}
	ev := pc[0]
	if ev.Kind != miitel.KindUnanswered || ev.CallID != "c" || ev.TenantCode != "t" || ev.Detail.ID != "d1" {
		t.Errorf("event %+v", ev)
	}
	if diff := cmp.Diff(map[string]any{"team": nil}, ev.Payload); diff != "" {
		t.Errorf("payload (-want +got):\n%s", diff)
	}
}

// FuzzParse feeds arbitrary bodies to the parser: it must never panic, and whatever it
// accepts must satisfy what the worker relies on.
func FuzzParse(f *testing.F) {
	// Small seeds only: the fuzzer minimizes every new interesting input, which for the
	// 11 KB analysis samples takes longer than a short CI fuzz run.
	for _, name := range []string{"call_analysis_completed/sample2.json", "call_summarization_completed/sample1.json"} {
		b, err := examples.Payload(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"challenge":"abc","params_key":"x"}`))
	f.Add([]byte(`{"call":{"id":"c","tenant_code":"t","details":[{"id":"d","call_type":"READ_DTMF","dial_starts_at":"2023-11-28T07:26:06+00:00"}]},"params_key":1}`))
	f.Add([]byte(`{"call":{"id":"c","tenant_code":"t","details":[{"id":"d","call_type":"X","minutes":null}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		pc, err := parseBody(body, []string{"params_key"})
		if err != nil {
			var ie *invalidError
			if !errors.As(err, &ie) {
				t.Fatalf("parser error is not a 400: %v", err)
			}
			if ie.msg == "" || !utf8.ValidString(ie.msg) {
				t.Fatalf("bad error message %q", ie.msg)
			}
			return
		}
		if pc == nil { // a challenge
			return
		}
		if len(pc) == 0 {
			t.Fatal("accepted a call without events")
		}
		for _, ev := range pc {
			if strings.TrimSpace(ev.CallID) == "" || strings.TrimSpace(ev.TenantCode) == "" ||
				strings.TrimSpace(ev.Detail.ID) == "" || ev.Detail.CallType == "" {
				t.Fatalf("accepted an event without its essentials: %+v", ev)
			}
			if _, err := hex.DecodeString(ev.DedupeKey); err != nil || len(ev.DedupeKey) != dedupeKeyLen {
				t.Fatalf("dedupe key %q", ev.DedupeKey)
			}
			if _, ok := ev.Payload["params_key"]; ok {
				t.Fatal("the credential key reached the queued payload")
			}
			if ev.Kind != miitel.Classify(&ev.Detail) {
				t.Fatalf("kind %s", ev.Kind)
			}
		}
		// What is queued is what tasks.NewCallEvent would have queued.
		checkTaskPayloads(t, body, []string{"params_key"}, "r")
		// Parsing is deterministic: the same body gives the same keys.
		again, err := parseBody(body, []string{"params_key"})
		if err != nil {
			t.Fatalf("second parse failed: %v", err)
		}
		for i := range pc {
			if again[i].DedupeKey != pc[i].DedupeKey {
				t.Fatal("dedupe key not deterministic")
			}
		}
	})
}

// TestParseSkippedValuesStrict: values the typed decode skips (keys the types do not know)
// are as strictly checked as with encoding/json, whose message (and offset) the 400 carries.
// The fast decoder does not check escapes of values it skips (decodeCall, validEscapes).
func TestParseSkippedValuesStrict(t *testing.T) {
	const d = `"id":"d1","call_type":"OUTGOING_CALL"`
	for _, tc := range []struct{ body, want string }{
		{`{"call":{"id":"c","tenant_code":"t","x":"\0","details":[{` + d + `}]}}`,
			`malformed JSON at byte 43: invalid character '0' in string escape code`},
		{`{"call":{"id":"c","tenant_code":"t","details":[{` + d + `,"new":["\u12G4"]}]}}`,
			`malformed JSON at byte 99: invalid character 'G' in \u hexadecimal character escape`},
		{"{\"call\":{\"id\":\"c\",\"tenant_code\":\"t\",\"details\":[{" + d + ",\"new\":{\"a\":\"\x01\"}}]}}",
			`malformed JSON at byte 99: invalid character '\x01' in string literal`},
		{`{"call":{"id":"c","tenant_code":"t","details":[{` + d + `,"new":[1,2,]}]}}`,
			`malformed JSON at byte 98: invalid character ']' looking for beginning of value`},
		{`{"call":{"id":"c","tenant_code":"t","details":[{` + d + `,"new":01}]}}`,
			`malformed JSON at byte 94: invalid character '1' after object key:value pair`},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := parseBody([]byte(tc.body), nil)
			var ie *invalidError
			if !errors.As(err, &ie) || ie.code != "malformed_json" || ie.msg != tc.want {
				t.Fatalf("got %v, want malformed_json %q", err, tc.want)
			}
		})
	}
}

// TestSkipValue: the split finds where each top-level value ends and counts the containers
// and elements decodeCost charges for, ignoring whatever strings hold.
func TestSkipValue(t *testing.T) {
	for _, tc := range []struct {
		in                     string
		end                    int // -1: refused
		objects, arrays, elems int64
	}{
		{in: `"a,{b]"`, end: 7},
		{in: `12.5e3,`, end: 6},
		{in: `true}`, end: 4},
		{in: `{}`, end: 2, objects: 1},
		{in: `[1, 2 ,3] ,"x"`, end: 9, arrays: 1, elems: 2},
		{in: `{"a":[{"b":"}]"},{}],"c":"\"{"} tail`, end: 31, objects: 3, arrays: 1, elems: 2},
		{in: `{"k":"ends with backslash\\"}`, end: 29, objects: 1},
		{in: "{\n  \"a\": [\n    [9.43, 13.38]\n  ]\n}", end: 34, objects: 1, arrays: 2, elems: 1},
		{in: `{"a":"unterminated}`, end: -1},
		{in: `[[1,2]`, end: -1},
		{in: ``, end: -1},
	} {
		var top topLevel
		end, ok := top.skipValue([]byte(tc.in), 0)
		if !ok {
			end = -1
		}
		if end != tc.end {
			t.Errorf("%q: end %d, want %d", tc.in, end, tc.end)
			continue
		}
		if ok && (top.objects != tc.objects || top.arrays != tc.arrays || top.elems != tc.elems) {
			t.Errorf("%q: counted %d objects, %d arrays, %d elements; want %d, %d, %d",
				tc.in, top.objects, top.arrays, top.elems, tc.objects, tc.arrays, tc.elems)
		}
	}
}

// FuzzDecodeAnyMatchesDecoder pins decodeAny's fast paths (a plain string taken as its
// bytes, any other string through json.Unmarshal) to what a UseNumber Decoder, which
// decodes every other value, says of the same top-level value: the same error or none,
// and the same value, for every value splitTop hands it (text checkText has passed: a
// body with invalid UTF-8 or a lone surrogate never gets that far).
func FuzzDecodeAnyMatchesDecoder(f *testing.F) {
	for _, s := range []string{`"z&aH+&Kz8saC"`, `"z\u0026aH+\u0026Kz8saC"`, `"\ud83d\ude00"`, `"\ud83d"`,
		`"a\/b\"c\\"`, `"\x"`, `"\u12"`, "\"\x01\"", "\"\xff\"", `""`, `"`, `"a"b"`, `7`, `{"a":1.5}`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if checkText(raw) != nil {
			return
		}
		got, gotErr := decodeAny(raw)
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var want any
		wantErr := dec.Decode(&want)
		if wantErr == nil {
			if _, err := dec.Token(); err != io.EOF {
				wantErr = errors.New("trailing data")
			}
		}
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("decodeAny(%q): err %v, the Decoder's %v", raw, gotErr, wantErr)
		}
		if gotErr == nil && !cmp.Equal(got, want) {
			t.Fatalf("decodeAny(%q) = %#v, the Decoder's %#v", raw, got, want)
		}
	})
}
