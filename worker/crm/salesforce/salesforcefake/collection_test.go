package salesforcefake_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

const collectionPath = "/services/data/v62.0/composite/sobjects/Task/MiiTel_Detail_Id__c"

type result struct {
	ID      string `json:"id"`
	Success bool   `json:"success"`
	Created *bool  `json:"created"`
	Errors  []struct {
		StatusCode string   `json:"statusCode"`
		Message    string   `json:"message"`
		Fields     []string `json:"fields"`
	} `json:"errors"`
}

// send sends a raw request and returns the status and body.
func send(t *testing.T, f *salesforcefake.Fake, tok, method, path, contentType, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, f.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := f.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func records(recs ...string) string {
	return `{"allOrNone":false,"records":[` + strings.Join(recs, ",") + `]}`
}

func task(value, extra string) string {
	s := `{"attributes":{"type":"Task"},"MiiTel_Detail_Id__c":"` + value + `"`
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

func codes(r result) []string {
	var c []string
	for _, e := range r.Errors {
		c = append(c, e.StatusCode)
	}
	return c
}

// A collection answers per record, in order: a bad record fails alone with its own error,
// the others are written; a record that exists is updated and refuses a create-only field.
func TestCollectionPerRecordResults(t *testing.T) {
	f := salesforcefake.New(t, salesforcefake.Options{})
	tok := clientCredentials(t, f)
	if s, b := send(t, f, tok, "PATCH", collectionPath, "application/json", records(task("old", `"TaskSubtype":"Call"`))); s != 200 {
		t.Fatalf("seed: %d %s", s, b)
	}
	f.FailRecord("rule", 1, salesforcefake.Fault{Code: "FIELD_CUSTOM_VALIDATION_EXCEPTION", Message: "a validation rule"})
	status, body := send(t, f, tok, "PATCH", collectionPath, "application/json", records(
		task("a", `"Subject":"ok","TaskSubtype":"Call"`),
		task("b", `"Subject":"`+strings.Repeat("x", 256)+`"`),
		task("old", `"Subject":"again","TaskSubtype":"Call"`),
		task("old2", `"Subjekt":"x"`),
		task("rule", `"Subject":"y"`),
		`{"attributes":{"type":"Task"},"Subject":"no key"}`,
		task("dup", `"Subject":"1"`),
		task("dup", `"Subject":"2"`),
		task("c", `"Subject":"ok too"`),
		task("d", `"WhoId":"003000000000099AAA"`),
		task("e", `"Id":"00T000000000001AAA"`),
	))
	if status != 200 {
		t.Fatalf("status %d %s, want 200 with per-record results", status, body)
	}
	var got []result
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	want := [][]string{nil, {"STRING_TOO_LONG"}, {"INVALID_FIELD_FOR_INSERT_UPDATE"}, {"INVALID_FIELD"}, {"FIELD_CUSTOM_VALIDATION_EXCEPTION"},
		{"MISSING_ARGUMENT"}, {"DUPLICATE_EXTERNAL_ID"}, {"DUPLICATE_EXTERNAL_ID"}, nil, {"INVALID_CROSS_REFERENCE_KEY"}, {"INVALID_FIELD_FOR_INSERT_UPDATE"}}
	if len(got) != len(want) {
		t.Fatalf("%d results for %d records", len(got), len(want))
	}
	for i, w := range want {
		if diff := cmp.Diff(w, codes(got[i])); diff != "" || got[i].Success != (w == nil) {
			t.Errorf("record %d: success %v, errors (-want +got):\n%s", i, got[i].Success, diff)
		}
		if w == nil && (got[i].ID == "" || got[i].Created == nil || !*got[i].Created) {
			t.Errorf("record %d: %+v, want created with an id", i, got[i])
		}
	}
	if got[2].Errors[0].Fields[0] != "TaskSubtype" {
		t.Errorf("create-only refusal names fields %v, want TaskSubtype", got[2].Errors[0].Fields)
	}
	// Written: the seed, a and c. The rest left nothing behind.
	if n := len(f.Tasks()); n != 3 {
		t.Errorf("%d tasks, want 3", n)
	}
	// The refused update succeeds without the create-only field, and says it updated.
	_, body = send(t, f, tok, "PATCH", collectionPath, "application/json", records(task("old", `"Subject":"again"`)))
	_ = json.Unmarshal(body, &got)
	if !got[0].Success || got[0].Created == nil || *got[0].Created {
		t.Errorf("update = %+v, want success, created false", got[0])
	}
	colls := f.Collections()
	if len(colls) != 3 || len(colls[1].Values) != 11 || colls[1].Values[1] != "b" {
		t.Errorf("collections log = %+v", colls)
	}
}

// allOrNone true: one bad record rolls back the good ones.
func TestCollectionAllOrNone(t *testing.T) {
	f := salesforcefake.New(t, salesforcefake.Options{})
	tok := clientCredentials(t, f)
	body := `{"allOrNone":true,"records":[` + task("a", `"Subject":"ok"`) + "," + task("b", `"CallType":"sideways"`) + `]}`
	status, b := send(t, f, tok, "PATCH", collectionPath, "application/json", body)
	var got []result
	if err := json.Unmarshal(b, &got); status != 200 || err != nil {
		t.Fatalf("%d %s", status, b)
	}
	if diff := cmp.Diff([][]string{{"ALL_OR_NONE_OPERATION_ROLLED_BACK"}, {"INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"}}, [][]string{codes(got[0]), codes(got[1])}); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if n := len(f.Tasks()); n != 0 {
		t.Errorf("%d tasks written, want none (rolled back)", n)
	}
}

// What Salesforce refuses as a whole request, the fake refuses as a whole: nothing written.
func TestCollectionStrictRequest(t *testing.T) {
	f := salesforcefake.New(t, salesforcefake.Options{})
	tok := clientCredentials(t, f)
	many := make([]string, salesforcefake.MaxCollection+1)
	for i := range many {
		many[i] = task(fmt.Sprint("m", i), `"Subject":"x"`)
	}
	full := make([]string, salesforcefake.MaxCollection)
	copy(full, many)
	tests := []struct {
		name, method, path, ctype, body string
		status                          int
		code                            string
	}{
		{"201 records", "PATCH", collectionPath, "application/json", records(many...), 400, "EXCEEDED_ID_LIMIT"},
		{"no attributes", "PATCH", collectionPath, "application/json", records(`{"MiiTel_Detail_Id__c":"x","Subject":"x"}`), 400, "INVALID_TYPE"},
		{"other type", "PATCH", collectionPath, "application/json", records(`{"attributes":{"type":"Event"},"MiiTel_Detail_Id__c":"x"}`), 400, "INVALID_TYPE"},
		{"no records", "PATCH", collectionPath, "application/json", `{"allOrNone":false}`, 400, "JSON_PARSER_ERROR"},
		{"unknown key", "PATCH", collectionPath, "application/json", `{"records":[],"allornone":true}`, 400, "JSON_PARSER_ERROR"},
		{"a bare array", "PATCH", collectionPath, "application/json", `[` + task("x", "") + `]`, 400, "JSON_PARSER_ERROR"},
		{"form body", "PATCH", collectionPath, "application/x-www-form-urlencoded", "records=x", 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"unknown external id field", "PATCH", "/services/data/v62.0/composite/sobjects/Task/MiiTel_Call_Id__c", "application/json", records(task("x", "")), 404, "NOT_FOUND"},
		{"before API 46", "PATCH", "/services/data/v45.0/composite/sobjects/Task/MiiTel_Detail_Id__c", "application/json", records(task("x", "")), 404, "NOT_FOUND"},
		{"POST", "POST", collectionPath, "application/json", records(task("x", "")), 405, "METHOD_NOT_ALLOWED"},
		{"200 records ok", "PATCH", collectionPath, "application/json", records(full...), 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, b := send(t, f, tok, tt.method, tt.path, tt.ctype, tt.body)
			code := ""
			if status >= 400 {
				var errs []struct {
					Code string `json:"errorCode"`
				}
				if err := json.Unmarshal(b, &errs); err != nil || len(errs) == 0 {
					t.Fatalf("error body is not the error array: %s", b)
				}
				code = errs[0].Code
			}
			if status != tt.status || code != tt.code {
				t.Errorf("= %d %s, want %d %s", status, code, tt.status, tt.code)
			}
		})
	}
	if n := len(f.Tasks()); n != salesforcefake.MaxCollection {
		t.Errorf("%d tasks, want only the %d of the accepted request", n, salesforcefake.MaxCollection)
	}
}

// The describes say what the org has; an admin creating the field changes the answer and
// makes upserts by it work.
func TestDescribeAndCreatingTheField(t *testing.T) {
	f := salesforcefake.New(t, salesforcefake.Options{NoExternalIDFields: true, CustomTaskFields: map[string]int{"Note__c": 80},
		Access: map[string]salesforcefake.Access{"Task": {Read: true, Create: true}, "User": {Read: true}}})
	tok := clientCredentials(t, f)
	type field struct {
		Name       string `json:"name"`
		Type       string `json:"type"`
		Length     int    `json:"length"`
		ExternalID bool   `json:"externalId"`
		Unique     bool   `json:"unique"`
		Createable bool   `json:"createable"`
		Updateable bool   `json:"updateable"`
	}
	describe := func() map[string]field {
		status, b := send(t, f, tok, "GET", "/services/data/v62.0/sobjects/Task/describe", "", "")
		var d struct {
			Createable, Updateable bool
			Fields                 []field `json:"fields"`
		}
		if err := json.Unmarshal(b, &d); status != 200 || err != nil {
			t.Fatalf("describe: %d %s", status, b)
		}
		if !d.Createable || d.Updateable {
			t.Errorf("Task createable %v updateable %v, want what Access grants (true, false)", d.Createable, d.Updateable)
		}
		out := map[string]field{}
		for _, fl := range d.Fields {
			out[fl.Name] = fl
		}
		return out
	}
	fields := describe()
	if _, ok := fields["MiiTel_Detail_Id__c"]; ok {
		t.Error("describe lists a field the org does not have")
	}
	if got := fields["Subject"]; got.Type != "string" || got.Length != 255 || got.ExternalID {
		t.Errorf("Subject = %+v", got)
	}
	if got := fields["TaskSubtype"]; !got.Createable || got.Updateable {
		t.Errorf("TaskSubtype = %+v, want createable, not updateable", got)
	}
	if s, _ := send(t, f, tok, "PATCH", collectionPath, "application/json", records(task("x", ""))); s != 404 {
		t.Errorf("upsert by a missing field = %d, want 404", s)
	}
	if s, _ := send(t, f, tok, "PATCH", "/services/data/v62.0/composite/sobjects/Task/Note__c", "application/json", records(`{"attributes":{"type":"Task"},"Note__c":"x"}`)); s != 404 {
		t.Errorf("upsert by a field that is not an External ID = %d, want 404", s)
	}

	f.AddExternalIDField("MiiTel_Detail_Id__c", false)
	if got := describe()["MiiTel_Detail_Id__c"]; !got.ExternalID || got.Unique || got.Length != 255 {
		t.Errorf("created field = %+v, want External ID, not unique", got)
	}
	if s, b := send(t, f, tok, "PATCH", collectionPath, "application/json", records(task("x", ""))); s != 200 || !strings.Contains(string(b), `"success":true`) {
		t.Errorf("upsert after the field was created = %d %s", s, b)
	}

	// The global describe lists only what the user may read; a hidden object's describe is 404.
	status, b := send(t, f, tok, "GET", "/services/data/v62.0/sobjects/", "", "")
	var g struct {
		Sobjects []struct {
			Name       string `json:"name"`
			Createable bool   `json:"createable"`
		} `json:"sobjects"`
	}
	if err := json.Unmarshal(b, &g); status != 200 || err != nil {
		t.Fatalf("global describe: %d %s", status, b)
	}
	var names []string
	for _, o := range g.Sobjects {
		names = append(names, o.Name)
	}
	if diff := cmp.Diff([]string{"Task", "User"}, names); diff != "" {
		t.Errorf("global describe objects (-want +got):\n%s", diff)
	}
	if s, _ := send(t, f, tok, "GET", "/services/data/v62.0/sobjects/Contact/describe", "", ""); s != 404 {
		t.Errorf("describe of an object the user cannot read = %d, want 404", s)
	}
	if s, _ := send(t, f, tok, "POST", "/services/data/v62.0/sobjects/Task/describe", "", ""); s != 405 {
		t.Errorf("POST describe = %d, want 405", s)
	}
}
