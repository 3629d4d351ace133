package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot/hubspotfake"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

// wantCall is what a sales rep must find in the CRM for one MiiTel call detail.
type wantCall struct {
	detail string
	// contact is the national number of the seeded customer the activity is associated
	// with; "" when the detail carries no customer number (nothing to associate).
	contact string
	owner   bool // owned by the rep (the detail names the rep's login_id)
	inbound bool
	// seconds is the talk time (answered..ended); HubSpot stores it in ms.
	seconds int
	started string // dial_starts_at in UTC
	title   string // hs_call_title and Subject
	// body are texts the call body (HubSpot) and Description (Salesforce) must hold: memo,
	// comments, keywords, transcript, AI minutes, the MiiTel link, as the detail has them.
	body []string
}

// Every call detail of the samples and what it becomes. The seed sample's detail is also
// the first detail of the multi-detail request: one detail, one activity.
var sampleCalls = []wantCall{
	{detail: "0184f502-8b5f-b967-10c1-625c89785630", contact: "05099999999", owner: true, seconds: 23,
		started: "2022-12-09T03:41:48Z", title: "MiiTel outbound call 050-9999-9999",
		body: []string{"大項目①", "詳細項目①", "コメント", "みーてる", "IP電話ミーテルの鈴木と申します", "/app/calls/0184f502-8b5f-b967-10c1-625c89785630"}},
	{detail: "73578620-476d-4ae1-93c4-ba911ab4a14c", contact: "09000000000", owner: true, seconds: 0,
		started: "2023-11-28T07:26:06Z", title: "MiiTel unanswered call 090-0000-0000",
		body: []string{"tyo101-stg.miitel.jp/app/calls/73578620-476d-4ae1-93c4-ba911ab4a14c"}},
	{detail: "99e2fdb7-845a-46de-8d94-882add220551", contact: "4800000000", owner: false, seconds: 53,
		started: "2022-12-21T22:31:56Z", title: "MiiTel outbound call 4800000000",
		body: []string{"Left Message", "Backyard custom", "calling you from Midtown"}},
	{detail: "60e7d534-6d27-40a4-9d3a-385a648e5b28", contact: "09000000000", owner: true, seconds: 191,
		started: "2023-11-28T07:26:18Z", title: "MiiTel outbound call 090-0000-0000",
		body: []string{"参加者が3分間待つことに合意したこと", "【今後取るべき方針】"}},
	{detail: "99e2fdb7-845a-46de-8d94-882add220552", inbound: true, owner: true, seconds: 0,
		started: "2022-12-21T22:33:22Z", title: "MiiTel missed call",
		body: []string{"/app/calls/99e2fdb7-845a-46de-8d94-882add220551"}},
	{detail: "99e2fdb7-845a-46de-8d94-882add220553", inbound: true, owner: true, seconds: 0,
		started: "2022-12-21T22:33:41Z", title: "MiiTel IVR call",
		body: []string{"/app/calls/99e2fdb7-845a-46de-8d94-882add220551"}},
}

func contactStored(national string) string {
	for _, c := range customers {
		if c.national == national {
			return c.stored
		}
	}
	panic("no seeded customer " + national)
}

// checkCalls asserts that each CRM holds exactly the wanted activities, one per detail,
// with the fields a rep relies on.
func checkCalls(t *testing.T, s *stack, wants []wantCall) {
	t.Helper()
	checkHubSpot(t, s, wants)
	checkSalesforce(t, s, wants)
}

func checkHubSpot(t *testing.T, s *stack, wants []wantCall) {
	t.Helper()
	calls := s.hubspotCalls(t)
	if len(calls) != len(wants) {
		t.Errorf("HubSpot holds %d calls, want %d", len(calls), len(wants))
	}
	for _, w := range wants {
		started := mustTime(t, w.started)
		direction := "OUTBOUND"
		if w.inbound {
			direction = "INBOUND"
		}
		hsOwner := ""
		if w.owner {
			hsOwner = "<owner " + repEmail + ">"
		}
		hsContacts := []string{}
		if w.contact != "" {
			hsContacts = []string{"<contact " + contactStored(w.contact) + ">"}
		}
		c, ok := calls[w.detail]
		if !ok {
			t.Errorf("HubSpot has no call for detail %s", w.detail)
		} else {
			p := c.Properties
			got := map[string]string{"hs_timestamp": p["hs_timestamp"], "hs_call_title": p["hs_call_title"],
				"hs_call_direction": p["hs_call_direction"], "hs_call_duration": p["hs_call_duration"], "hubspot_owner_id": p["hubspot_owner_id"]}
			want := map[string]string{"hs_timestamp": started.UTC().Format("2006-01-02T15:04:05.000Z"), "hs_call_title": w.title,
				"hs_call_direction": direction, "hs_call_duration": fmt.Sprint(w.seconds * 1000), "hubspot_owner_id": hsOwner}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("HubSpot call of %s (-want +got):\n%s", w.detail, d)
			}
			if d := cmp.Diff(hsContacts, c.Contacts); d != "" {
				t.Errorf("HubSpot call of %s: associated contacts (-want +got):\n%s", w.detail, d)
			}
			for _, b := range w.body {
				if !strings.Contains(p["hs_call_body"], b) {
					t.Errorf("HubSpot call of %s: hs_call_body lacks %q:\n%s", w.detail, b, p["hs_call_body"])
				}
			}
		}
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func checkSalesforce(t *testing.T, s *stack, wants []wantCall) {
	t.Helper()
	tasks := s.salesforceTasks(t)
	if len(tasks) != len(wants) {
		t.Errorf("Salesforce holds %d Tasks, want %d", len(tasks), len(wants))
	}
	jst, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range wants {
		started := mustTime(t, w.started)
		callType := "Outbound"
		if w.inbound {
			callType = "Inbound"
		}
		sfOwner := "<integration user>" // a Task always has an owner
		if w.owner {
			sfOwner = "<user " + repEmail + ">"
		}
		task, ok := tasks[w.detail]
		if !ok {
			t.Errorf("Salesforce has no Task for detail %s", w.detail)
			continue
		}
		got := map[string]any{"Subject": task["Subject"], "CallType": task["CallType"], "CallDurationInSeconds": task["CallDurationInSeconds"],
			"ActivityDate": task["ActivityDate"], "OwnerId": task["OwnerId"], "TaskSubtype": task["TaskSubtype"], "Status": task["Status"]}
		want := map[string]any{"Subject": w.title, "CallType": callType, "CallDurationInSeconds": fmt.Sprint(w.seconds),
			"ActivityDate": started.In(jst).Format(time.DateOnly), "OwnerId": sfOwner, "TaskSubtype": "Call", "Status": "Completed"}
		if w.contact != "" {
			got["WhoId"], want["WhoId"] = task["WhoId"], "<contact "+contactStored(w.contact)+">"
		} else if who, has := task["WhoId"]; has {
			t.Errorf("Salesforce Task of %s: WhoId %v, want none (the detail has no customer number)", w.detail, who)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("Salesforce Task of %s (-want +got):\n%s", w.detail, d)
		}
		desc, _ := task["Description"].(string)
		for _, b := range w.body {
			if !strings.Contains(desc, b) {
				t.Errorf("Salesforce Task of %s: Description lacks %q:\n%s", w.detail, b, desc)
			}
		}
	}
}

// Every sample, sent to both CRMs' routes, ends as exactly one activity per call detail with
// the rep's fields; MiiTel's re-send of the same requests is dropped by the ledger and
// leaves both CRMs untouched.
func TestE2EEverySampleLandsOnceInEachCRM(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	s.start(t, "serve")

	// To HubSpot's route with the send subcommand, MiiTel's stand-in; to Salesforce's with
	// plain POSTs.
	send := []string{"send", "--url", "http://" + s.listen + "/webhooks/miitel/" + hubspotRoute,
		"--header", "Authorization: Bearer " + miitelToken}
	bodies := map[string][]byte{}
	for _, name := range samplePayloads {
		bodies[name] = readSample(t, name)
		send = append(send, samplePath(name))
		s.post(t, salesforceRoute, bodies[name])
	}
	if code, out, errOut := runCLI(t, s.getenv, send...); code != 0 {
		t.Fatalf("send: exit %d\n%s%s", code, out, errOut)
	}
	s.waitDelivered(t)
	checkCalls(t, s, sampleCalls)
	golden(t, "hubspot_calls.golden.json", s.hubspotCalls(t))
	golden(t, "salesforce_tasks.golden.json", s.salesforceTasks(t))

	hsCalls, hsRequests := s.hs.Calls(), len(s.hs.Requests())
	sfTasks, sfRequests := s.sf.Tasks(), s.sf.Count(salesforcefake.OpAPI)
	for _, name := range samplePayloads {
		for _, route := range []string{hubspotRoute, salesforceRoute} {
			n := len(detailIDs(t, bodies[name]))
			if a := s.post(t, route, bodies[name]); a.Queued != 0 || a.Duplicates != n {
				t.Errorf("re-send of %s to %s: queued %d, duplicates %d; want 0 and %d", name, route, a.Queued, a.Duplicates, n)
			}
		}
	}
	// Nothing was queued, so nothing can still be on its way: the CRMs must be as they were,
	// down to each record's write count, and must not even have been asked anything.
	s.waitDelivered(t)
	if d := cmp.Diff(hsCalls, s.hs.Calls(), cmpopts.IgnoreUnexported(hubspotfake.Object{})); d != "" {
		t.Errorf("HubSpot calls changed by the re-send (-before +after):\n%s", d)
	}
	if d := cmp.Diff(sfTasks, s.sf.Tasks()); d != "" {
		t.Errorf("Salesforce Tasks changed by the re-send (-before +after):\n%s", d)
	}
	if n := len(s.hs.Requests()); n != hsRequests {
		t.Errorf("HubSpot got %d more requests after the re-send", n-hsRequests)
	}
	if n := s.sf.Count(salesforcefake.OpAPI); n != sfRequests {
		t.Errorf("Salesforce got %d more requests after the re-send", n-sfRequests)
	}
}

// minutesFor builds the call_summarization_completed request MiiTel sends later for the same
// call as an analysis request: the minutes sample's shape and text, with the analysis
// sample's call, detail, times, numbers and participants.
func minutesFor(t *testing.T, analysis []byte) []byte {
	t.Helper()
	var a, m map[string]any
	if err := json.Unmarshal(analysis, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(readSample(t, "call_summarization_completed/sample1.json"), &m); err != nil {
		t.Fatal(err)
	}
	ac, mc := a["call"].(map[string]any), m["call"].(map[string]any)
	mc["id"], mc["tenant_code"] = ac["id"], ac["tenant_code"]
	ad := ac["details"].([]any)[0].(map[string]any)
	md := mc["details"].([]any)[0].(map[string]any)
	for _, k := range []string{"id", "dial_starts_at", "dial_answered_at", "dial_ends_at", "queueing_starts_at",
		"queueing_answered_at", "queueing_ends_at", "call_type", "circuit_number", "circuit_name", "from_number",
		"to_number", "previous_id"} {
		md[k] = ad[k]
	}
	var parts []any
	for _, p := range ad["participants"].([]any) {
		p := p.(map[string]any)
		delete(p, "analysis") // the minutes request carries no voice analysis
		parts = append(parts, p)
	}
	md["participants"] = parts
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The AI minutes arrive as a separate, later request. Whether they come after the analysis
// (the usual case), before it, or in the same instant, the CRM ends with the same record,
// holding both the minutes and everything the analysis brought.
func TestE2EMinutesBeforeOrAfterAnalysisGiveTheSameRecord(t *testing.T) {
	t.Parallel()
	analysis := readSample(t, "call_analysis_completed/sample1.json")
	minutes := minutesFor(t, analysis)
	const detail = "0184f502-8b5f-b967-10c1-625c89785630"

	type final struct {
		call hubspotCall
		task map[string]any
	}
	orders := []struct {
		name  string
		steps [][][]byte // requests of a step go out together; each step is delivered before the next
	}{
		{"analysis_then_minutes", [][][]byte{{analysis}, {minutes}}},
		{"minutes_then_analysis", [][][]byte{{minutes}, {analysis}}},
		{"together", [][][]byte{{minutes, analysis}}},
	}
	results := make([]final, len(orders))
	t.Run("orders", func(t *testing.T) {
		for i, o := range orders {
			t.Run(o.name, func(t *testing.T) {
				t.Parallel()
				s := newStack(t, stackOptions{})
				s.start(t, "serve")
				for _, step := range o.steps {
					for _, body := range step {
						s.postBoth(t, body)
					}
					s.waitDelivered(t)
				}
				want := sampleCalls[0]
				want.body = append(append([]string{}, want.body...), "参加者が3分間待つことに合意したこと")
				checkCalls(t, s, []wantCall{want})
				results[i] = final{s.hubspotCalls(t)[detail], s.salesforceTasks(t)[detail]}

				// The minutes carry no memo: the analysis's outcome and disposition stay.
				if got := results[i].call.Properties["hs_call_disposition"]; got != "f240bbac-87c9-4f6e-bf70-924b57d47db7" {
					t.Errorf("hs_call_disposition %q, want Connected", got)
				}
				if got := results[i].task["CallDisposition"]; got != "大項目①, 詳細項目①" {
					t.Errorf("CallDisposition %v, want the memos", got)
				}
			})
		}
	})
	if t.Failed() {
		return
	}
	for i := 1; i < len(orders); i++ {
		if d := cmp.Diff(results[0].call, results[i].call); d != "" {
			t.Errorf("HubSpot call after %s differs from %s (-%s +%s):\n%s", orders[i].name, orders[0].name, orders[0].name, orders[i].name, d)
		}
		if d := cmp.Diff(results[0].task, results[i].task); d != "" {
			t.Errorf("Salesforce Task after %s differs from %s (-%s +%s):\n%s", orders[i].name, orders[0].name, orders[0].name, orders[i].name, d)
		}
	}
}
