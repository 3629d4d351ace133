package salesforce

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// owner finds the active User with the rep's e-mail (cached). "" means none: the Task then
// belongs to the integration user, which is better than no Task.
func (c *Connector) owner(ctx context.Context, api *crm.API, email string) (string, error) {
	return c.lookups.Resolve(ctx, crm.LookupOwner, strings.ToLower(email), func(ctx context.Context) (string, error) {
		var out struct {
			Records []struct {
				ID string `json:"Id"`
			} `json:"records"`
		}
		if _, err := api.Do(ctx, OwnerRequest(email), &out); err != nil {
			return "", err
		}
		if len(out.Records) == 0 {
			c.log.Debug("salesforce: no active user with the rep's e-mail")
			return "", nil
		}
		return out.Records[0].ID, nil
	})
}

// contactKey is the cache key of a contact lookup: the number and the policies, since they
// decide the answer (a miss cached under "unassociated" must not stop "create_lead").
func contactKey(cl *mappers.ContactLookup) string {
	return strings.Join([]string{cl.E164, cl.National, digitsOf(cl.Raw), cl.OnMultiple, cl.OnNone}, "|")
}

// SearchTerms are the phone numbers a SOSL search ORs together: the national form
// (0312345678, how Japanese orgs usually store numbers) and E.164 (+81312345678), since the
// search index matches the digits as stored; the raw number's digits when neither is known.
func SearchTerms(cl *mappers.ContactLookup) []string {
	var terms []string
	for _, t := range []string{cl.National, cl.E164} {
		if t != "" && !slices.Contains(terms, t) {
			terms = append(terms, t)
		}
	}
	if len(terms) == 0 {
		if d := digitsOf(cl.Raw); d != "" {
			terms = append(terms, d)
		}
	}
	return terms
}

// SOSL is the phone search for a contact lookup: every term escaped, ORed.
func SOSL(cl *mappers.ContactLookup) string {
	terms := SearchTerms(cl)
	for i, t := range terms {
		terms[i] = EscapeSOSL(t)
	}
	return "FIND {" + strings.Join(terms, " OR ") + "} IN PHONE FIELDS RETURNING " +
		"Contact(Id,OwnerId,LastModifiedDate),Lead(Id,OwnerId,LastModifiedDate)"
}

type match struct {
	Attributes struct {
		Type string `json:"type"`
	} `json:"attributes"`
	ID               string `json:"Id"`
	LastModifiedDate string `json:"LastModifiedDate"`
}

// contact finds the caller's Contact or Lead by phone (cached), applying the record's
// policies: several matches -> the most recently modified, or none ("skip"); no match ->
// unassociated, or a new Contact or Lead owned by the rep. Contacts win over Leads: a
// Contact is the qualified customer, a Lead with the same number usually a stale duplicate.
func (c *Connector) contact(ctx context.Context, api *crm.API, cl *mappers.ContactLookup, ownerID string) (string, error) {
	if len(SearchTerms(cl)) == 0 {
		return "", nil
	}
	return c.lookups.Resolve(ctx, crm.LookupContact, contactKey(cl), func(ctx context.Context) (string, error) {
		var out struct {
			SearchRecords []match `json:"searchRecords"`
		}
		if _, err := api.Do(ctx, ContactSearchRequest(cl), &out); err != nil {
			return "", err
		}
		var contacts, leads []match
		for _, m := range out.SearchRecords {
			switch m.Attributes.Type {
			case "Contact":
				contacts = append(contacts, m)
			case "Lead":
				leads = append(leads, m)
			}
		}
		candidates := contacts
		if len(candidates) == 0 {
			candidates = leads
		}
		switch {
		case len(candidates) == 1:
			return candidates[0].ID, nil
		case len(candidates) > 1:
			if cl.OnMultiple == OnMultipleSkip {
				c.log.Warn("salesforce: several records match the caller's number; not associating (on_multiple: skip)", "matches", len(candidates))
				return "", nil
			}
			return mostRecent(candidates).ID, nil
		}
		switch cl.OnNone {
		case OnNoneCreateLead, OnNoneCreateContact:
			return c.createPerson(ctx, api, cl, ownerID)
		}
		return "", nil
	})
}

func mostRecent(ms []match) match {
	best, bestT := ms[0], parseSFTime(ms[0].LastModifiedDate)
	for _, m := range ms[1:] {
		if t := parseSFTime(m.LastModifiedDate); t.After(bestT) {
			best, bestT = m, t
		}
	}
	return best
}

// parseSFTime reads Salesforce's datetime format (2024-01-02T03:04:05.000+0000).
func parseSFTime(s string) time.Time {
	for _, layout := range []string{"2006-01-02T15:04:05.000-0700", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

// createPerson creates a Contact or Lead for an unknown caller. The id goes into the lookup
// cache for the full TTL, which matters: the search index lags writes, so without the cache
// the next call from the number would not find the new record and create a second one.
func (c *Connector) createPerson(ctx context.Context, api *crm.API, cl *mappers.ContactLookup, ownerID string) (string, error) {
	object := "Contact"
	if cl.OnNone == OnNoneCreateLead {
		object = "Lead"
	}
	number := cmp.Or(cl.Raw, cl.National, cl.E164)
	body := map[string]any{"LastName": number, "Phone": number}
	if object == "Lead" {
		body["Company"] = NewLeadCompany
	}
	if ownerID != "" {
		body["OwnerId"] = ownerID
	}
	var out struct {
		ID string `json:"id"`
	}
	if _, err := api.Do(ctx, crm.Request{Op: "salesforce: create " + object, Method: http.MethodPost, Path: "/sobjects/" + object, Body: body}, &out); err != nil {
		return "", err
	}
	c.log.Info("salesforce: created a record for an unknown caller", "object", object, "id", out.ID)
	return out.ID, nil
}

func digitsOf(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}
