package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot"
)

const uniqueProperty = "miitel_detail_id"

// setHubSpot replaces the lines under the hs connection's `hubspot:` key in the stack's
// config (base_url is kept in front: the fake stands for api.hubapi.com).
func (s *stack) setHubSpot(t *testing.T, lines string) {
	t.Helper()
	b, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?s)(  - name: hs\n    type: hubspot\n    hubspot:\n).*?(  - name: sf\n)`)
	if !re.Match(b) {
		t.Fatalf("no hs connection in %s", b)
	}
	body := fmt.Sprintf("      base_url: %q\n", s.hs.URL) + lines
	b = re.ReplaceAllLiteral(b, []byte("  - name: hs\n    type: hubspot\n    hubspot:\n"+body+"  - name: sf\n"))
	if err := os.WriteFile(s.cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// hubspotDetails returns how many calls HubSpot holds per MiiTel detail id.
func (s *stack) hubspotDetails() map[string]int {
	out := map[string]int{}
	for _, c := range s.hs.Calls() {
		out[c.Properties["hs_call_external_id"]]++
	}
	return out
}

// A unique property named in the config but never created in HubSpot. `check` says so with
// the fix; the calls wait in the retry set with their retries untouched and the connection
// reads broken, instead of each going to the dead letter; once the admin creates the
// property every call lands exactly once, the gauge is back to 0, and `status` links the
// call's HubSpot page.
func TestE2EHubSpotMissingUniquePropertyParksCallsUntilCreated(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{maxRetry: 3})
	s.setHubSpot(t, "      private_app_token: {env: HUBSPOT_TOKEN}\n      unique_property: "+uniqueProperty+"\n")

	code, out, _ := runCLI(t, s.getenv, "check", "--config", s.cfgPath)
	if code != 1 || !regexp.MustCompile(`FAIL +hs +record_key +call property miitel_detail_id does not exist\n +fix: create the call property miitel_detail_id with hasUniqueValue: true`).MatchString(out) ||
		!strings.Contains(out, hubspot.DocRecordKey) {
		t.Fatalf("check = %d, want 1 with the record_key FAIL and its fix:\n%s", code, out)
	}

	s.start(t, "serve")
	queued := 0
	for _, name := range samplePayloads {
		queued += s.post(t, hubspotRoute, readSample(t, name)).Queued
	}
	s.waitParkedBroken(t, "hs", queued, hubspot.DocRecordKey)
	in := s.inspector(t)
	if n := len(s.hs.Calls()); n != 0 {
		t.Fatalf("%d calls written without the property", n)
	}

	// The admin creates the property; the parked calls would go when their wait is over
	// (hubspot.RecordKeyWait); run them now, as an operator may.
	s.hs.DefineCallProperty(uniqueProperty, true)
	if n, err := in.RunAllRetryTasks(queueName); err != nil || n != queued {
		t.Fatalf("run parked tasks: %d, %v; want %d", n, err, queued)
	}
	s.waitDelivered(t)
	details := s.hubspotDetails()
	if len(details) != len(sampleCalls) {
		t.Errorf("HubSpot holds calls for %d details, want %d: %v", len(details), len(sampleCalls), details)
	}
	for _, w := range sampleCalls {
		if details[w.detail] != 1 {
			t.Errorf("detail %s: %d calls, want 1", w.detail, details[w.detail])
		}
	}
	if v := s.metric(t, "mcs_crm_connection_broken", map[string]string{"connection": "hs"}); v != 0 {
		t.Errorf("after the property was created, mcs_crm_connection_broken = %v, want 0", v)
	}

	// status shows the call's HubSpot page.
	detail := sampleCalls[0].detail
	var callID string
	for _, c := range s.hs.Calls() {
		if c.Properties["hs_call_external_id"] == detail {
			callID = c.ID
		}
	}
	code, out, stderr := runCLI(t, s.getenv, "status", "--config", s.cfgPath, detail)
	link := fmt.Sprintf("https://app.hubspot.com/contacts/%d/record/0-48/%s", s.hs.PortalID(), callID)
	if code != 0 || !strings.Contains(out, "state:     done") || !strings.Contains(out, link) {
		t.Errorf("status of the delivered call (want done and %s):\n%s%s", link, out, stderr)
	}
	if code, out, _ := runCLI(t, s.getenv, "check", "--config", s.cfgPath); code != 0 {
		t.Errorf("check after the fix = %d:\n%s", code, out)
	}
}
