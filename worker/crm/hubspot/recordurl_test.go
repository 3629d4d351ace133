package hubspot

import (
	"context"
	"fmt"
	"testing"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot/hubspotfake"
)

const accountRoute = "GET /account-info/v3/details"

// The link is the call's page on the account's UI domain (EU accounts live on app-eu1),
// with the portal id read once per connector.
func TestRecordLinkFromAccountDetails(t *testing.T) {
	e := newEnv(t)
	e.fake.SetAccount(14725836, "app-eu1.hubspot.com")
	c := e.connector(t, nil)
	for i := range 3 {
		res := deliver(t, c, bareRecord(fmt.Sprintf("d%d", i)))
		if want := "https://app-eu1.hubspot.com/contacts/14725836/record/0-48/" + res.ID; res.URL != want {
			t.Errorf("URL = %q, want %q", res.URL, want)
		}
	}
	if n := e.fake.Count(accountRoute); n != 1 {
		t.Errorf("account details asked %d times, want once per connector", n)
	}
}

// connections[].record_url overrides the template; one with only {id} needs no request.
func TestRecordURLTemplate(t *testing.T) {
	for _, tt := range []struct {
		template, want string
		asks           int
	}{
		{"https://crm.example.com/hs/{portal_id}/calls/{id}", "https://crm.example.com/hs/%d/calls/%s", 1},
		{"https://app.hubspot.com/contacts/123/record/0-48/{id}", "https://app.hubspot.com/contacts/123/record/0-48/%[2]s", 0},
	} {
		e := newEnv(t)
		c := e.connector(t, func(o *Options) { o.Connection.RecordURL = tt.template })
		res := deliver(t, c, bareRecord("d1"))
		if want := fmt.Sprintf(tt.want, e.fake.PortalID(), res.ID); res.URL != want {
			t.Errorf("%s: URL = %q, want %q", tt.template, res.URL, want)
		}
		if n := e.fake.Count(accountRoute); n != tt.asks {
			t.Errorf("%s: account details asked %d times, want %d", tt.template, n, tt.asks)
		}
	}
}

// Without the account details (an OAuth app without the oauth scope: 403) the call is
// written all the same, without a link, and the next calls do not ask again at once.
func TestRecordLinkUnavailable(t *testing.T) {
	e := newEnv(t)
	e.fake.GrantOAuthScopes(hubspotfake.DefaultPrivateAppScopes...) // no oauth scope
	c := e.connector(t, oauthOptions(e, e.fake.IssueRefreshToken(), nil))
	for i := range 2 {
		res, err := c.Deliver(context.Background(), bareRecord(fmt.Sprintf("d%d", i)))
		if err != nil || res.ID == "" || res.URL != "" {
			t.Fatalf("Deliver = %+v, %v; want the call written without a link", res, err)
		}
	}
	if n := e.fake.Count(accountRoute); n != 1 {
		t.Errorf("account details asked %d times, want 1 (no retry within %s)", n, accountRetry)
	}
	if n := len(e.fake.Calls()); n != 2 {
		t.Errorf("calls = %d, want 2", n)
	}
}
