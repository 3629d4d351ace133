package hubspot

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// DefaultRecordURL is a call's page in HubSpot: {ui_domain} and {portal_id} come from the
// account details (GET /account-info/v3/details: app.hubspot.com, or app-eu1.hubspot.com
// for an account hosted in the EU), 0-48 is the calls object type. HubSpot does not
// document the path; connections[].record_url overrides it.
const DefaultRecordURL = "https://{ui_domain}/contacts/{portal_id}/record/0-48/{id}"

// accountRetry is how long the connector goes without links after the account details
// could not be read, before it asks again: links are a convenience, the writes must not pay
// a failing request each.
const accountRetry = time.Minute

// account is the connection's portal id and UI domain, read once per connector.
type account struct {
	mu       sync.Mutex
	portalID string
	uiDomain string
	retryAt  time.Time // after a failure: no new attempt before
}

// AccountRequest is GET /account-info/v3/details.
func AccountRequest() crm.Request {
	return crm.Request{Op: "hubspot: account details", Method: "GET", Path: "/account-info/v3/details"}
}

// RecordLink fills a record_url template: {portal_id}, {ui_domain} and {id}. An empty id
// gives no link.
func RecordLink(template, portalID, uiDomain, id string) string {
	if id == "" {
		return ""
	}
	return strings.NewReplacer("{portal_id}", url.PathEscape(portalID), "{ui_domain}", uiDomain, "{id}", url.PathEscape(id)).Replace(template)
}

// recordLink is the link of call id, "" when the template needs the account details and
// they cannot be had (the write itself succeeded; a missing link is logged, not an error).
func (c *Connector) recordLink(ctx context.Context, id string) string {
	if id == "" {
		return ""
	}
	if !strings.Contains(c.recordURL, "{portal_id}") && !strings.Contains(c.recordURL, "{ui_domain}") {
		return RecordLink(c.recordURL, "", "", id)
	}
	portal, domain, err := c.accountDetails(ctx)
	if err != nil {
		return ""
	}
	return RecordLink(c.recordURL, portal, domain, id)
}

// errNoAccount: the account details failed recently; not asked again yet.
var errNoAccount = errors.New("hubspot: account details unavailable")

// accountDetails returns the portal id and UI domain, asking HubSpot the first time only.
func (c *Connector) accountDetails(ctx context.Context) (portalID, uiDomain string, err error) {
	a := &c.account
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.portalID != "" {
		return a.portalID, a.uiDomain, nil
	}
	if time.Now().Before(a.retryAt) {
		return "", "", errNoAccount
	}
	var out struct {
		PortalID int64  `json:"portalId"`
		UIDomain string `json:"uiDomain"`
	}
	if _, err := c.api.Do(ctx, AccountRequest(), &out); err != nil || out.PortalID == 0 {
		a.retryAt = time.Now().Add(accountRetry)
		if err == nil {
			err = errors.New("hubspot: account details without a portal id")
		}
		c.log.Warn("hubspot: cannot read the account details; call status shows no HubSpot link for now (an OAuth app needs the oauth scope)",
			"error", err.Error(), "retry_in", accountRetry.String())
		return "", "", err
	}
	a.portalID, a.uiDomain = strconv.FormatInt(out.PortalID, 10), out.UIDomain
	if a.uiDomain == "" {
		a.uiDomain = "app.hubspot.com"
	}
	return a.portalID, a.uiDomain, nil
}
