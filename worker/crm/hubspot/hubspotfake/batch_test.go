package hubspotfake

import (
	"fmt"
	"strings"
	"testing"
)

func inputs(n int, f func(i int) string) string {
	parts := make([]string, n)
	for i := range n {
		parts[i] = f(i)
	}
	return `{"inputs":[` + strings.Join(parts, ",") + `]}`
}

const ts = `"hs_timestamp":"2026-03-04T05:06:07.000Z"`

// The batch endpoints refuse what HubSpot refuses, for the whole request.
func TestBatchRejectsWhatHubSpotRejects(t *testing.T) {
	s := New(t, Options{RequestsPer10s: 1000})
	s.AddPrivateAppToken("pat")
	s.DefineCallProperty("miitel_detail_id", true)
	create := func(i int) string {
		return fmt.Sprintf(`{"properties":{%s,"hs_call_external_id":"d%d"},"objectWriteTraceId":"%d"}`, ts, i, i)
	}
	upsert := func(id string) func(int) string {
		return func(i int) string {
			return fmt.Sprintf(`{"id":"%s%d","idProperty":"miitel_detail_id","properties":{%s},"objectWriteTraceId":"%d"}`, id, i, ts, i)
		}
	}
	values := func(n int) string {
		v := make([]string, n)
		for i := range v {
			v[i] = fmt.Sprintf(`"%d"`, i)
		}
		return `{"filterGroups":[{"filters":[{"propertyName":"phone","operator":"IN","values":[` + strings.Join(v, ",") + `]}]}]}`
	}
	tests := []struct {
		name, path, body string
		want             string
	}{
		{"101 creates", "/crm/v3/objects/calls/batch/create", inputs(101, create), "1 to 100"},
		{"no inputs", "/crm/v3/objects/calls/batch/upsert", `{"inputs":[]}`, "1 to 100"},
		{"upsert names a value twice", "/crm/v3/objects/calls/batch/upsert", inputs(2, func(int) string { return upsert("same")(0) }), "Duplicate IDs"},
		{"update names a call twice", "/crm/v3/objects/calls/batch/update", `{"inputs":[{"id":"1","properties":{}},{"id":"1","properties":{}}]}`, "Duplicate IDs"},
		{"upsert with associations", "/crm/v3/objects/calls/batch/upsert", `{"inputs":[{"id":"x","idProperty":"miitel_detail_id","properties":{` + ts + `},"associations":[{"to":{"id":"1"}}]}]}`, "associations"},
		{"upsert by a property that is not unique", "/crm/v3/objects/calls/batch/upsert", `{"inputs":[{"id":"x","idProperty":"hs_call_title","properties":{` + ts + `}}]}`, "by non-unique 0-48 property hs_call_title"},
		{"IN with 101 values", "/crm/v3/objects/contacts/search", values(101), "1 to 100 values"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out, _ := do(t, s, "POST", tt.path, "pat", tt.body)
			if status != 400 || !strings.Contains(fmt.Sprint(out["message"]), tt.want) {
				t.Errorf("%d %v, want 400 naming %q", status, out, tt.want)
			}
		})
	}
	if n := len(s.Calls()); n != 0 {
		t.Errorf("refused batches wrote %d calls", n)
	}
	if status, _, _ := do(t, s, "POST", "/crm/v3/objects/contacts/search", "pat", values(100)); status != 200 {
		t.Errorf("IN with 100 values: %d, want 200", status)
	}
}

// With a trace id on every input, a failing input is answered alone in a 207 naming its
// trace id and the others are written; without them the batch is all or nothing.
func TestBatchMultiStatus(t *testing.T) {
	s := New(t, Options{})
	s.AddPrivateAppToken("pat")
	bad := func(trace string) func(int) string {
		return func(i int) string {
			dir := "INBOUND"
			if i == 1 {
				dir = "SIDEWAYS"
			}
			tr := ""
			if trace != "" {
				tr = fmt.Sprintf(`,"objectWriteTraceId":"%s%d"`, trace, i)
			}
			return fmt.Sprintf(`{"properties":{%s,"hs_call_direction":"%s"}%s}`, ts, dir, tr)
		}
	}
	status, out, _ := do(t, s, "POST", "/crm/v3/objects/calls/batch/create", "pat", inputs(3, bad("")))
	if status != 400 || len(s.Calls()) != 0 {
		t.Fatalf("untraced batch with a bad input: %d %v, %d calls; want 400 and nothing written", status, out, len(s.Calls()))
	}
	status, out, _ = do(t, s, "POST", "/crm/v3/objects/calls/batch/create", "pat", inputs(3, bad("t")))
	errs, _ := out["errors"].([]any)
	results, _ := out["results"].([]any)
	if status != 207 || len(errs) != 1 || len(results) != 2 || len(s.Calls()) != 2 {
		t.Fatalf("traced batch: %d %v; want 207 with 1 error and 2 results", status, out)
	}
	ctx := errs[0].(map[string]any)["context"].(map[string]any)
	if fmt.Sprint(ctx["objectWriteTraceId"]) != "[t1]" || results[0].(map[string]any)["objectWriteTraceId"] != "t0" {
		t.Errorf("errors %v, results %v: want the trace ids echoed", errs, results)
	}
	// An injected per-input failure, and an association to a missing contact.
	s.FailCall("d9", 1, Fault{Category: "INTERNAL_ERROR", Message: "boom"})
	status, out, _ = do(t, s, "POST", "/crm/v3/objects/calls/batch/create", "pat",
		`{"inputs":[{"properties":{`+ts+`,"hs_call_external_id":"d9"},"objectWriteTraceId":"a"},{"properties":{`+ts+`},"objectWriteTraceId":"b"}]}`)
	if errs, _ := out["errors"].([]any); status != 207 || len(errs) != 1 || errs[0].(map[string]any)["category"] != "INTERNAL_ERROR" {
		t.Errorf("injected failure: %d %v", status, out)
	}
	call := s.Calls()[0].ID
	status, out, _ = do(t, s, "POST", "/crm/v4/associations/calls/contacts/batch/create", "pat",
		`{"inputs":[{"from":{"id":"`+call+`"},"to":{"id":"404"},"types":[{"associationCategory":"HUBSPOT_DEFINED","associationTypeId":194}]}]}`)
	if errs, _ := out["errors"].([]any); status != 207 || len(errs) != 1 {
		t.Errorf("association to a missing contact: %d %v, want 207 with its error", status, out)
	}
}

// A create carrying a value a unique property holds already is refused, never written: the
// input alone in a 207 naming the property (its traced neighbour is created), or, with
// TakenUniqueRefusesBatch, the whole request in a 409 with nothing written.
func TestBatchCreateRefusesTakenUniqueValue(t *testing.T) {
	for _, whole := range []bool{false, true} {
		s := New(t, Options{RequestsPer10s: 1000, TakenUniqueRefusesBatch: whole})
		s.AddPrivateAppToken("pat")
		s.DefineCallProperty("miitel_detail_id", true)
		in := func(v, trace string) string {
			return fmt.Sprintf(`{"properties":{%s,"miitel_detail_id":"%s"},"objectWriteTraceId":"%s"}`, ts, v, trace)
		}
		if status, out, _ := do(t, s, "POST", "/crm/v3/objects/calls/batch/create", "pat", `{"inputs":[`+in("d1", "0")+`]}`); status != 201 {
			t.Fatalf("first create: %d %v", status, out)
		}
		status, out, _ := do(t, s, "POST", "/crm/v3/objects/calls/batch/create", "pat", `{"inputs":[`+in("d1", "0")+`,`+in("d2", "1")+`]}`)
		errs, _ := out["errors"].([]any)
		switch {
		case whole && (status != 409 || out["category"] != "CONFLICT" || !strings.Contains(fmt.Sprint(out["message"]), "miitel_detail_id") || len(s.Calls()) != 1):
			t.Errorf("whole request: %d %v, %d calls; want 409 CONFLICT naming the property, nothing written", status, out, len(s.Calls()))
		case !whole && (status != 207 || len(errs) != 1 || !strings.Contains(fmt.Sprint(errs[0]), "miitel_detail_id") || len(s.Calls()) != 2):
			t.Errorf("per input: %d %v, %d calls; want 207 with the taken value's error naming the property, d2 written", status, out, len(s.Calls()))
		}
	}
}
