package receiver

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/miitel-crm-sync/miitel-crm-sync/examples"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// FuzzCallCodecMatchesStd: whatever the fast decoder accepts as a call, encoding/json
// accepts too, into the same value, and appendDetail writes json.Marshal's bytes. A call the fast decoder refuses goes to encoding/json anyway (decodeCall),
// so only leniency or a different value would be a bug.
func FuzzCallCodecMatchesStd(f *testing.F) {
	for _, name := range []string{"call_analysis_completed/sample2.json", "call_summarization_completed/sample1.json"} {
		b, err := examples.Payload(name)
		if err != nil {
			f.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(m["call"]))
	}
	for _, s := range []string{
		`{"id":"c","tenant_code":"t","details":[{"id":"d","call_type":"X","analysis":{"score":1e400}}]}`,
		`{"id":"c","tenant_code":"t","details":[{"id":"d","call_type":"X","phrases":[{"raw":[{"order":1.5}]}]}]}`,
		`{"id":"c\u0000","ID":"x","Tenant_Code":"t","details":[{"id":"d\t","call_type":"<&>\u2028","minutes":"\ud83d\ude00"}]}`,
		"{\"id\":\"c\x01\",\"details\":[]}",
		`{"id":"c","details":[{"id":"d","analysis":{"rally_count":9223372036854775808}}],"x":[1,{"a":tru}]}`,
		`{"id":"c","details":[{"id":"d","keywords":[{"starts_at":-0.0000001,"value":"v"}],"tags":null}]}`,
	} {
		f.Add([]byte(s))
	}
	// sonic writes \u0008 and \u000c for these; appendDetail must not.
	f.Add([]byte(`{"id":"c","details":[{"id":"\b\f\u0001\u001f","tags":[{"value":"\\u0008 <&> \u2028\u2029 \ufffd"}]}]}`))
	f.Add([]byte(`{"id":"c","details":[{"analysis":{"score":1e-7,"tlr":1e21,"silence_positions":[[0.000001,123456789012345678901234567890,-0,5e-324]]}}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var fast miitel.Call
		if len(raw) == 0 || callDecoder.UnmarshalFromString(string(raw), &fast) != nil {
			return
		}
		// decodeCall only sees bodies splitTop passed (checkText, validEscapes); outside
		// those the fast decoder may differ.
		if checkText(raw) != nil || !validEscapes(raw) {
			return
		}
		var std miitel.Call
		if err := json.Unmarshal(raw, &std); err != nil {
			t.Fatalf("the fast decoder accepted what encoding/json refuses (%v): %q", err, raw)
		}
		if diff := cmp.Diff(std, fast, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("decoded differently (-std +fast):\n%s\ninput %q", diff, raw)
		}
		for i := range std.Details {
			want, werr := json.Marshal(&std.Details[i])
			got, gerr := appendDetail([]byte("x"), &std.Details[i])
			if (werr == nil) != (gerr == nil) || !bytes.Equal(got[1:], want) || got[0] != 'x' {
				t.Fatalf("detail %d encoded differently:\n got %s (%v)\nwant %s (%v)", i, got, gerr, want, werr)
			}
		}
	})
}

// BenchmarkCallCodec compares decodeCall with encoding/json on the seed sample's call.
func BenchmarkCallCodec(b *testing.B) {
	body, err := examples.Payload("call_analysis_completed/seed_sample.json")
	if err != nil {
		b.Fatal(err)
	}
	top, err := splitTop(body)
	if err != nil {
		b.Fatal(err)
	}
	raw := top.call
	b.Run("decode/std", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			var c miitel.Call
			if err := json.Unmarshal(raw, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/fast", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			var c miitel.Call
			if err := decodeCall(raw, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestPretouch: sonic compiles the call's decoder and the detail's encoder when the
// receiver is built (New), not on the first request; an error there would leave the first
// requests after every start waiting for the compile again.
func TestPretouch(t *testing.T) {
	if err := pretouch(); err != nil {
		t.Fatalf("sonic could not compile the codec ahead of time: %v", err)
	}
}
