package main

import (
	"slices"
	"testing"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
)

// config owns the vendors' defaults and fills them in; the connectors still keep their own
// for a zero they are handed directly. The two must not drift apart (until the connectors
// read config's constants).
func TestVendorDefaultsMatchTheConnectors(t *testing.T) {
	for name, pair := range map[string][2]any{
		"hubspot base url":           {config.HubSpotBaseURL, hubspot.DefaultBaseURL},
		"hubspot token url":          {config.HubSpotTokenURL, hubspot.DefaultTokenURL},
		"hubspot auth url":           {config.HubSpotAuthURL, hubspot.DefaultAuthURL},
		"hubspot private app":        {config.HubSpotPrivateAppRequests, hubspot.DefaultPrivateAppRequests},
		"hubspot oauth":              {config.HubSpotOAuthRequests, hubspot.DefaultOAuthRequests},
		"hubspot search":             {config.HubSpotSearchPerSecond, hubspot.DefaultSearchPerSecond},
		"salesforce api version":     {config.SalesforceAPIVersion, salesforce.DefaultAPIVersion},
		"salesforce limit wait":      {config.SalesforceRequestLimitWait, salesforce.DefaultRequestLimitWait},
		"salesforce daily requests":  {config.SalesforceDailyRequests, salesforce.DefaultDailyRequests},
		"hubspot window (connector)": {config.HubSpotRequestWindow, 10 * time.Second},
	} {
		if pair[0] != pair[1] {
			t.Errorf("%s: config %v, connector %v", name, pair[0], pair[1])
		}
	}
	if !slices.Equal(config.HubSpotScopes(), hubspot.DefaultScopes) {
		t.Errorf("scopes: config %v, connector %v", config.HubSpotScopes(), hubspot.DefaultScopes)
	}
}
