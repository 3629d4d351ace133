package config

import (
	"strings"
	"time"
)

// The vendors' documented defaults. They live here, not in the connector packages, so that
// the configuration a process prints and logs (`miitel-crm-sync config`, the start-up dump)
// is the one it runs with: Load fills every value the file leaves out, and a connector
// never sees a zero it would have to interpret.
const (
	HubSpotBaseURL  = "https://api.hubapi.com"
	HubSpotTokenURL = "https://api.hubapi.com/oauth/v1/token" // v1 sunsets 2027-02-16: /oauth/2026-03/token
	HubSpotAuthURL  = "https://app.hubspot.com/oauth/authorize"
	// Private apps get 100 (Free/Starter) to 190 (Pro/Enterprise) requests per 10 s, OAuth
	// apps 110; the lower figures are the safe defaults.
	HubSpotPrivateAppRequests = 100
	HubSpotOAuthRequests      = 110
	HubSpotRequestWindow      = 10 * time.Second
	HubSpotSearchPerSecond    = 5

	// SalesforceAPIVersion is the REST API version when the config names none; 46.0 or
	// later is needed for the upsert's "created" flag on updates.
	SalesforceAPIVersion = "v62.0"
	// SalesforceRequestLimitWait is how long tasks wait after 403 REQUEST_LIMIT_EXCEEDED.
	SalesforceRequestLimitWait = 15 * time.Minute
	// SalesforceDailyRequests is the allowance of the smallest Enterprise Edition org;
	// orgs with more licences have more (Setup > Company Information).
	SalesforceDailyRequests = 100_000
	SalesforceRequestWindow = 24 * time.Hour

	// LookupTTL and MissTTL are how long a found contact or owner, and a "not found", stay
	// cached (a contact created in the CRM is picked up after MissTTL).
	LookupTTL = 24 * time.Hour
	MissTTL   = 5 * time.Minute

	// The most calls one batch request may carry: HubSpot batch/create|update|upsert
	// inputs, Salesforce sObject Collections records. They are also the default batch size.
	HubSpotMaxBatch    = 100
	SalesforceMaxBatch = 200
	// BatchLinger is how long the first call of a batch waits for others: short enough that
	// a lone call is not noticeably late, long enough for a burst to share requests.
	BatchLinger = time.Second
)

// HubSpotScopes are the scopes the HubSpot connector needs: calls are written with the
// contacts scopes, owners read with crm.objects.owners.read.
func HubSpotScopes() []string {
	return []string{"crm.objects.contacts.read", "crm.objects.contacts.write", "crm.objects.owners.read"}
}

// fillDefaults gives every connection setting the file leaves out the value the connector
// would use, so the dump shows it. Only zero values are filled; validation still sees what
// the admin wrote (a negative rate limit stays negative and is refused).
func (c *Config) fillDefaults() {
	// worker.metrics_listen was the worker's ops address before every process had one; it
	// has no default of its own, so the dump shows it only where a file or MCS_ variable
	// still sets it.
	if d := Default(); c.Worker.MetricsListen != "" && c.Ops.Listen == d.Ops.Listen {
		c.Ops.Listen = c.Worker.MetricsListen
	}
	for i := range c.Connections {
		cn := &c.Connections[i]
		switch cn.Type {
		case "hubspot":
			if cn.HubSpot != nil {
				cn.HubSpot.fillDefaults(&cn.RateLimit)
			}
		case "salesforce":
			if cn.Salesforce != nil {
				cn.Salesforce.fillDefaults(&cn.RateLimit)
			}
		default:
			continue // the dry run has no limits and no cache
		}
		if cn.LookupTTL == 0 {
			cn.LookupTTL = LookupTTL
		}
		if cn.Batch.MaxSize == 0 {
			cn.Batch.MaxSize = map[string]int{"hubspot": HubSpotMaxBatch, "salesforce": SalesforceMaxBatch}[cn.Type]
		}
		if cn.Batch.Linger == 0 {
			cn.Batch.Linger = BatchLinger
		}
		if cn.MissTTL == 0 {
			cn.MissTTL = MissTTL
		}
	}
}

func (h *HubSpot) fillDefaults(rl *RateLimit) {
	h.BaseURL = or(h.BaseURL, HubSpotBaseURL)
	h.TokenURL = or(h.TokenURL, HubSpotTokenURL)
	h.AuthURL = or(h.AuthURL, HubSpotAuthURL)
	if len(h.Scopes) == 0 {
		h.Scopes = HubSpotScopes()
	}
	if rl.Requests == 0 {
		rl.Requests = HubSpotOAuthRequests
		if h.PrivateAppToken.Set() { // the connector prefers the private-app token
			rl.Requests = HubSpotPrivateAppRequests
		}
	}
	if rl.Per == 0 {
		rl.Per = HubSpotRequestWindow
	}
	if rl.SearchPerSecond == 0 {
		rl.SearchPerSecond = HubSpotSearchPerSecond
	}
}

// fillDefaults for Salesforce. The endpoints and the JWT audience derive from login_url
// exactly as the connector derives them; search_per_second stays 0 (no separate search
// budget: Salesforce has none).
func (s *Salesforce) fillDefaults(rl *RateLimit) {
	switch {
	case s.APIVersion == "":
		s.APIVersion = SalesforceAPIVersion
	case !strings.HasPrefix(s.APIVersion, "v"):
		s.APIVersion = "v" + s.APIVersion
	}
	if s.RequestLimitWait == 0 {
		s.RequestLimitWait = SalesforceRequestLimitWait
	}
	if login := strings.TrimRight(s.LoginURL, "/"); login != "" {
		s.TokenURL = or(s.TokenURL, login+"/services/oauth2/token")
		s.AuthURL = or(s.AuthURL, login+"/services/oauth2/authorize")
		if s.Flow == "jwt" {
			s.Audience = or(s.Audience, login)
		}
	}
	if rl.Requests == 0 {
		rl.Requests = SalesforceDailyRequests
	}
	if rl.Per == 0 {
		rl.Per = SalesforceRequestWindow
	}
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// RecordKey is the connection's own record key: the field its upserts are keyed by when a
// route's mapping names none (salesforce.external_id_field, hubspot.unique_property), ""
// when it has none (HubSpot without a unique property keeps an id map instead).
func (cn Connection) RecordKey() string {
	switch {
	case cn.Salesforce != nil && cn.Type == "salesforce":
		return cn.Salesforce.ExternalIDField
	case cn.HubSpot != nil && cn.Type == "hubspot":
		return cn.HubSpot.UniqueProperty
	}
	return ""
}
