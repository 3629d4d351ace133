package salesforce_test

import (
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

// checkLines runs the check and returns its lines by name (record_key lines by field).
func checkLines(t *testing.T, c *salesforce.Connector, o crm.CheckOptions) map[string]crm.CheckResult {
	t.Helper()
	out := map[string]crm.CheckResult{}
	for _, r := range c.Check(t.Context(), o) {
		key := r.Name
		if r.Name == crm.CheckRecordKey {
			key += " " + strings.TrimSuffix(strings.Fields(strings.TrimPrefix(r.Detail, "Task."))[0], ":")
		}
		if r.Connection != "sf" {
			t.Errorf("line %s names connection %q", r.Name, r.Connection)
		}
		out[key] = r
	}
	return out
}

func statuses(lines map[string]crm.CheckResult) map[string]string {
	out := map[string]string{}
	for k, r := range lines {
		out[k] = r.Status.String()
	}
	return out
}

// A connection set up as docs/crm-salesforce.md says passes every line.
func TestCheckPasses(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
	user := e.fake.AddUser(salesforcefake.User{Username: "rep", Email: "rep@example.com"})
	lines := checkLines(t, e.connector(t), crm.CheckOptions{RecordKeys: []string{extField}, OwnerEmail: "rep@example.com"})
	want := map[string]string{"token": "pass", "permissions": "pass", "record_key " + extField: "pass", "owner_lookup": "pass"}
	if diff := cmp.Diff(want, statuses(lines)); diff != "" {
		t.Fatalf("check (-want +got):\n%s\n%+v", diff, lines)
	}
	if d := lines["record_key "+extField].Detail; d != "Task."+extField+" is an External ID, unique" {
		t.Errorf("record_key detail %q", d)
	}
	if !strings.Contains(lines["owner_lookup"].Detail, user) {
		t.Errorf("owner_lookup detail %q lacks the user id", lines["owner_lookup"].Detail)
	}
	for _, op := range []string{salesforcefake.OpUpsert, salesforcefake.OpCollection, salesforcefake.OpCreate} {
		if n := e.fake.Count(op); n != 0 {
			t.Errorf("the check wrote: %d %s requests", n, op)
		}
	}
	// Without an owner e-mail the owner line is skipped.
	if st := checkLines(t, e.connector(t), crm.CheckOptions{})["owner_lookup"].Status; st != crm.CheckSkipped {
		t.Errorf("owner_lookup without an e-mail = %v, want skip", st)
	}
}

// Each failure is named with its fix.
func TestCheckFailures(t *testing.T) {
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		flow    string
		opts    salesforcefake.Options
		mutate  func(*env)
		keys    []string
		owner   string
		line    string
		detail  string
		fix     []string
		unknown []string // lines that could not be checked because of this failure
	}{
		{name: "wrong client secret", opts: salesforcefake.Options{},
			mutate: func(e *env) { e.conn.Salesforce.ClientSecret = config.FromValue("wrong") },
			line:   "token", detail: "refused", fix: []string{"client_secret", "Run As", "docs/crm-salesforce.md#client-credentials-simplest-for-a-server"},
			unknown: []string{"permissions", "record_key " + extField}},
		{name: "jwt certificate not uploaded", flow: salesforce.FlowJWT, opts: salesforcefake.Options{JWTKey: &other.PublicKey},
			line: "token", detail: "invalid_grant", fix: []string{"certificate", "docs/crm-salesforce.md#jwt-bearer-no-secret-on-the-wire"}},
		{name: "revoked refresh token", flow: salesforce.FlowRefreshToken, opts: salesforcefake.Options{},
			mutate: func(e *env) { e.fake.RevokeRefreshTokens() },
			line:   "token", detail: "invalid_grant", fix: []string{"oauth connect salesforce --connection sf"}},
		{name: "no edit on Task", opts: salesforcefake.Options{Access: map[string]salesforcefake.Access{
			"Task": {Read: true, Create: true}, "Contact": {Read: true}, "Lead": {Read: true}, "User": {Read: true}}},
			line: "permissions", detail: "Edit on Task", fix: []string{"permission set", salesforce.DocIntegrationUser}},
		{name: "no read on Lead", opts: salesforcefake.Options{Access: map[string]salesforcefake.Access{
			"Task": {Read: true, Create: true, Edit: true}, "Contact": {Read: true}, "User": {Read: true}}},
			line: "permissions", detail: "Read on Lead", fix: []string{salesforce.DocIntegrationUser}},
		{name: "field missing", opts: salesforcefake.Options{NoExternalIDFields: true},
			line: "record_key " + extField, detail: "Task." + extField + " does not exist",
			fix: []string{"create the Text(255) field " + extField, "Unique and External ID", salesforce.DocRecordKey}},
		{name: "the mapping's field missing", opts: salesforcefake.Options{}, keys: []string{"Call_Key__c"},
			line: "record_key Call_Key__c", detail: "Task.Call_Key__c does not exist", fix: []string{"field Call_Key__c", salesforce.DocRecordKey}},
		{name: "not an External ID", opts: salesforcefake.Options{NoExternalIDFields: true, CustomTaskFields: map[string]int{extField: 255}},
			line: "record_key " + extField, detail: "is not an External ID", fix: []string{"tick External ID", salesforce.DocRecordKey}},
		{name: "not Unique", opts: salesforcefake.Options{NoExternalIDFields: true, NonUniqueExternalIDFields: []string{extField}},
			line: "record_key " + extField, detail: "not Unique", fix: []string{"tick Unique", salesforce.DocRecordKey}},
		{name: "no such rep", opts: salesforcefake.Options{}, owner: "nobody@example.com",
			line: "owner_lookup", detail: "no active User has the e-mail nobody@example.com", fix: []string{"MiiTel login e-mail"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, cmpOr(tt.flow, salesforce.FlowClientCredentials), tt.opts)
			if tt.mutate != nil {
				tt.mutate(e)
			}
			lines := checkLines(t, e.connector(t), crm.CheckOptions{RecordKeys: tt.keys, OwnerEmail: tt.owner})
			r, ok := lines[tt.line]
			if !ok {
				t.Fatalf("no %s line in %+v", tt.line, lines)
			}
			if r.Status != crm.CheckFail || !strings.Contains(r.Detail, tt.detail) {
				t.Errorf("%s = %v %q, want FAIL mentioning %q", tt.line, r.Status, r.Detail, tt.detail)
			}
			for _, f := range tt.fix {
				if !strings.Contains(r.Fix, f) {
					t.Errorf("fix %q lacks %q", r.Fix, f)
				}
			}
			for _, u := range tt.unknown {
				if lines[u].Status != crm.CheckUnknown {
					t.Errorf("%s = %v, want unknown (not checkable without a token)", u, lines[u].Status)
				}
			}
			if !crm.Failed(c2s(lines)) {
				t.Error("crm.Failed = false")
			}
		})
	}
}

// Salesforce out of reach, or answering 5xx, is unknown, never a failure.
func TestCheckUnknownWhenUnreachable(t *testing.T) {
	t.Run("network", func(t *testing.T) {
		e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		e.conn.Salesforce.LoginURL, e.conn.Salesforce.TokenURL = dead.URL, dead.URL+"/services/oauth2/token"
		e.client = &http.Client{}
		lines := checkLines(t, e.connector(t), crm.CheckOptions{OwnerEmail: "rep@example.com"})
		for name, r := range lines {
			if r.Status != crm.CheckUnknown {
				t.Errorf("%s = %v %q, want unknown", name, r.Status, r.Detail)
			}
		}
		if crm.Failed(c2s(lines)) {
			t.Error("crm.Failed = true for an unreachable CRM")
		}
	})
	t.Run("5xx", func(t *testing.T) {
		e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
		c := e.connector(t)
		deliverTokenOnly(t, e, c)
		e.fake.Fail(3, salesforcefake.Fault{Status: 503, Code: "SERVER_UNAVAILABLE"})
		lines := checkLines(t, c, crm.CheckOptions{OwnerEmail: "rep@example.com"})
		want := map[string]string{"token": "pass", "permissions": "unknown", "record_key " + extField: "unknown", "owner_lookup": "unknown"}
		if diff := cmp.Diff(want, statuses(lines)); diff != "" {
			t.Errorf("check (-want +got):\n%s", diff)
		}
	})
}

// The worker's start-up check after an admin created the field clears the broken mark at
// once, without waiting for the parked calls' next attempt.
func TestCheckClearsTheRecordKeyMark(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{NoExternalIDFields: true})
	c := e.connector(t)
	_, err := c.Deliver(t.Context(), bare("d-1"))
	wantBroken(t, err)
	e.fake.AddExternalIDField(extField, true)
	if r := checkLines(t, c, crm.CheckOptions{})["record_key "+extField]; r.Status != crm.CheckPass {
		t.Fatalf("record_key = %+v", r)
	}
	if g := brokenGauge(t, e); g != 0 {
		t.Errorf("broken gauge %v after a passing check, want 0", g)
	}
}

func c2s(m map[string]crm.CheckResult) []crm.CheckResult {
	var out []crm.CheckResult
	for _, r := range m {
		out = append(out, r)
	}
	return out
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
