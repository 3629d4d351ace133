package dryrun

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot/hubspotfake"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var at = time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("JST", 9*3600))

func hubspotRecord(body string) *mappers.Record {
	return &mappers.Record{
		Object:     "calls",
		ExternalID: mappers.ExternalID{Field: "hs_call_external_id", Value: "detail-1"},
		Fields: []mappers.Field{
			{Name: "hs_timestamp", Value: at},
			{Name: "hs_call_title", Value: "MiiTel <inbound>"},
			{Name: "hs_call_body", Value: body},
			{Name: "hs_call_direction", Value: "INBOUND"},
			{Name: "hs_call_duration", Value: int64(83000)},
			{Name: "hs_call_disposition", Value: "f240bbac-87c9-4f6e-bf70-924b57d47db7", CreateOnly: true},
		},
		Contact:        &mappers.ContactLookup{E164: "+81312345678", National: "0312345678", OnMultiple: "most_recent"},
		Owner:          &mappers.OwnerLookup{Email: "rep@example.com", Field: "hubspot_owner_id"},
		MappingVersion: "m1",
	}
}

func salesforceRecord() *mappers.Record {
	return &mappers.Record{
		Object:     "Task",
		ExternalID: mappers.ExternalID{Field: "MiiTel_Detail_Id__c", Value: "detail-1"},
		Fields: []mappers.Field{
			{Name: "Subject", Value: "MiiTel call"},
			{Name: "ActivityDate", Value: at},
			{Name: "CallDurationInSeconds", Value: int64(83)},
			{Name: "TaskSubtype", Value: "Call", CreateOnly: true},
		},
		Contact:        &mappers.ContactLookup{E164: "+81312345678", National: "0312345678", Field: "WhoId"},
		Owner:          &mappers.OwnerLookup{Email: "o'brien@example.com", Field: "OwnerId"},
		MappingVersion: "m2",
	}
}

func TestGolden(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		recs []*mappers.Record
	}{
		{"hubspot", Options{}, []*mappers.Record{hubspotRecord("memo"), hubspotRecord("memo + minutes")}},
		{"hubspot_unique", Options{HubSpotUniqueProperty: "miitel_detail_id"}, []*mappers.Record{hubspotRecord("memo")}},
		{"salesforce", Options{}, []*mappers.Record{salesforceRecord(), salesforceRecord()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			tt.opts.Out = &out
			c := New(tt.opts)
			for i, r := range tt.recs {
				res, err := c.Deliver(context.Background(), r)
				if err != nil {
					t.Fatal(err)
				}
				if res.Created != (i == 0) {
					t.Errorf("delivery %d: Created = %v", i, res.Created)
				}
			}
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHubSpotRequestsMatchConnector proves "exact": the dry run's requests are what the real
// connector sends to HubSpot (here: the fake), once placeholders are replaced by real ids.
func TestHubSpotRequestsMatchConnector(t *testing.T) {
	fake := hubspotfake.New(t, hubspotfake.Options{})
	fake.AddPrivateAppToken("pat")
	owner := fake.AddOwner("rep@example.com")
	contact := fake.AddContact(map[string]string{"phone": "0312345678"})
	conn, err := hubspot.New(hubspot.Options{Options: crm.Options{
		Connection: config.Connection{Name: "hs", HubSpot: &config.HubSpot{BaseURL: fake.URL, PrivateAppToken: config.FromValue("pat")}},
		Redis:      redistest.Start(t).Client(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	dry := New(Options{HubSpotBaseURL: fake.URL, Record: true})
	var callID string
	for _, body := range []string{"memo", "memo + minutes"} {
		res, err := conn.Deliver(context.Background(), hubspotRecord(body))
		if err != nil {
			t.Fatal(err)
		}
		callID = res.ID
		if _, err := dry.Deliver(context.Background(), hubspotRecord(body)); err != nil {
			t.Fatal(err)
		}
	}
	var sent []Request
	for _, r := range fake.Requests() {
		if r.Route == "GET /account-info/v3/details" {
			continue // read once per connector for the record link, not a request of the call
		}
		u := fake.URL + r.Path
		if len(r.Query) > 0 {
			u += "?" + r.Query.Encode()
		}
		sent = append(sent, Request{Method: r.Method, URL: u, Body: normalise(t, r.Body)})
	}
	var printed []Request
	repl := strings.NewReplacer(OwnerID, owner, ContactID, contact, CallID, callID)
	for _, r := range dry.Requests() {
		if strings.Contains(r.URL, "/search") && len(printed) > 0 && strings.Contains(r.URL, "contacts") && containsSearch(printed) {
			continue // the connector's second delivery answers the lookups from its cache
		}
		if strings.Contains(r.URL, "/owners") && containsOwner(printed) {
			continue
		}
		printed = append(printed, Request{Method: r.Method, URL: repl.Replace(r.URL), Body: normalise(t, repl.Replace(string(r.Body)))})
	}
	if diff := cmp.Diff(sent, printed); diff != "" {
		t.Errorf("connector requests (-) vs dry-run requests (+):\n%s", diff)
	}
}

// recordingTransport keeps the API requests a connector sends (not the token requests).
type recordingTransport struct {
	next http.RoundTripper
	reqs []Request
}

func (t *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/services/data/") {
		var body []byte
		if r.Body != nil {
			body, _ = io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(body)))
		}
		t.reqs = append(t.reqs, Request{Method: r.Method, URL: r.URL.String(), Body: body})
	}
	return t.next.RoundTrip(r)
}

// TestSalesforceRequestsMatchConnector proves "exact" for Salesforce: the dry run's requests
// are what the connector sends to the fake org, once placeholders are replaced by real ids.
func TestSalesforceRequestsMatchConnector(t *testing.T) {
	fake := salesforcefake.New(t, salesforcefake.Options{ExternalIDFields: []string{"MiiTel_Detail_Id__c"}})
	owner := fake.AddUser(salesforcefake.User{Username: "obrien", Email: "o'brien@example.com"})
	contact := fake.AddContact(salesforcefake.Person{LastName: "Tanaka", Phone: "03-1234-5678"})
	rec := &recordingTransport{next: fake.Client().Transport}
	conn, err := salesforce.New(salesforce.Options{
		Connection: config.Connection{Name: "sf", Salesforce: &config.Salesforce{
			LoginURL: fake.URL, Flow: salesforce.FlowClientCredentials,
			ClientID: fake.ClientID(), ClientSecret: config.FromValue(fake.ClientSecret()),
		}},
		Redis:      redistest.Start(t).Client(),
		HTTPClient: &http.Client{Transport: rec},
		Context:    t.Context(),
	})
	if err != nil {
		t.Fatal(err)
	}
	dry := New(Options{SalesforceBaseURL: fake.URL, Record: true})
	var taskID string
	for range 2 {
		res, err := conn.Deliver(t.Context(), salesforceRecord())
		if err != nil {
			t.Fatal(err)
		}
		taskID = res.ID
		if _, err := dry.Deliver(t.Context(), salesforceRecord()); err != nil {
			t.Fatal(err)
		}
	}
	var sent []Request
	for _, r := range rec.reqs {
		sent = append(sent, Request{Method: r.Method, URL: r.URL, Body: normalise(t, string(r.Body))})
	}
	var printed []Request
	seen := map[string]bool{}
	repl := strings.NewReplacer(OwnerID, owner, ContactID, contact, CallID, taskID)
	for _, r := range dry.Requests() {
		if r.Method == http.MethodGet && seen[r.URL] {
			continue // the connector answers repeated lookups from its cache
		}
		seen[r.URL] = true
		printed = append(printed, Request{Method: r.Method, URL: repl.Replace(r.URL), Body: normalise(t, repl.Replace(string(r.Body)))})
	}
	if diff := cmp.Diff(sent, printed); diff != "" {
		t.Errorf("connector requests (-) vs dry-run requests (+):\n%s", diff)
	}
}

func containsSearch(rs []Request) bool {
	for _, r := range rs {
		if strings.Contains(r.URL, "contacts/search") {
			return true
		}
	}
	return false
}

func containsOwner(rs []Request) bool {
	for _, r := range rs {
		if strings.Contains(r.URL, "/owners") {
			return true
		}
	}
	return false
}

func normalise(t *testing.T, body string) json.RawMessage {
	if body == "" {
		return nil
	}
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	b, _ := json.Marshal(v)
	return b
}

// A dry run in `serve` runs as long as the process: it keeps no requests unless asked, and
// the ids it remembers to tell a create from an update are bounded.
func TestMemoryIsBounded(t *testing.T) {
	c := New(Options{Out: io.Discard})
	if _, err := c.Deliver(context.Background(), hubspotRecord("memo")); err != nil {
		t.Fatal(err)
	}
	if n := len(c.Requests()); n != 0 {
		t.Errorf("kept %d requests without Options.Record", n)
	}
	for i := range maxSeen {
		c.seen[strconv.Itoa(i)] = true
	}
	if _, err := c.Deliver(context.Background(), hubspotRecord("memo")); err != nil {
		t.Fatal(err)
	}
	if len(c.seen) != 1 {
		t.Errorf("after %d ids: %d remembered, want the set cleared", maxSeen, len(c.seen))
	}
}

// A dry run cannot know whether the CRM would find the contact and the owner: its result
// says the placeholder ids are assumed, so the worker does not log them as found.
func TestResultSaysTheLookupsAreAssumed(t *testing.T) {
	c := New(Options{})
	res, err := c.Deliver(t.Context(), salesforceRecord())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Assumed || res.ContactID != ContactID || res.OwnerID != OwnerID || !res.Created {
		t.Errorf("result %+v, want assumed placeholder ids", res)
	}
	rec := hubspotRecord("b")
	rec.Contact, rec.Owner = nil, nil
	if res, _ := c.Deliver(t.Context(), rec); res.ContactID != "" || res.OwnerID != "" {
		t.Errorf("no lookups asked, result %+v", res)
	}
}
