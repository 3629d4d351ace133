// Package dryrun is the connector of the embedded default (no CRM configured): instead of
// sending, it prints and records the HTTP requests a real connector would send for each
// record, so an admin can try MiiTel -> mapping -> CRM end to end without a CRM account.
//
// Records for HubSpot (object "calls") are rendered with the HubSpot connector's own request
// builders, so the bodies are exactly what it sends: owner lookup, contact search, then a
// create the first time a MiiTel detail is seen and an update afterwards. Records for
// Salesforce (object "Task", or any other sObject) show the owner SOQL, the phone SOSL and
// the upsert by external id. Ids that only the CRM could answer appear as placeholders
// ({owner_id}, {contact_id}, {call_id}). Nothing goes to the network.
package dryrun

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
)

// Placeholders for ids only the CRM knows.
const (
	OwnerID   = "{owner_id}"
	ContactID = "{contact_id}"
	CallID    = "{call_id}"
)

// Options configure the dry run.
type Options struct {
	// Out receives the printed requests; nil prints nothing (tests read Requests).
	Out io.Writer
	// HubSpotBaseURL and SalesforceBaseURL prefix the printed paths (defaults: the public
	// HubSpot API and a placeholder My Domain).
	HubSpotBaseURL    string
	SalesforceBaseURL string
	// HubSpotUniqueProperty prints the batch upsert instead of create/update.
	HubSpotUniqueProperty string
	// SalesforceAPIVersion defaults to the Salesforce connector's.
	SalesforceAPIVersion string
}

// Request is one request the dry run would have sent.
type Request struct {
	Method string          `json:"method"`
	URL    string          `json:"url"`
	Body   json.RawMessage `json:"body,omitempty"`
}

// Connector is the dry-run crm.Connector. It is safe for concurrent use.
type Connector struct {
	o Options

	mu       sync.Mutex
	seen     map[string]bool
	requests []Request
}

// New returns a dry-run connector.
func New(o Options) *Connector {
	if o.HubSpotBaseURL == "" {
		o.HubSpotBaseURL = hubspot.DefaultBaseURL
	}
	if o.SalesforceBaseURL == "" {
		o.SalesforceBaseURL = "https://{my-domain}.my.salesforce.com"
	}
	if o.SalesforceAPIVersion == "" {
		o.SalesforceAPIVersion = salesforce.DefaultAPIVersion
	}
	return &Connector{o: o, seen: map[string]bool{}}
}

// Requests returns every request recorded so far.
func (c *Connector) Requests() []Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.requests)
}

// Deliver records and prints the requests for rec. The Result's ID is a placeholder and
// Created is true the first time an external id is seen.
func (c *Connector) Deliver(_ context.Context, rec *mappers.Record) (crm.Result, error) {
	if rec.ExternalID.Value == "" {
		return crm.Result{}, &crm.Error{Class: crm.Permanent, Op: "dryrun: deliver", Code: "MAPPING", Msg: "record has no external id"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	key := rec.Object + "\x00" + rec.ExternalID.Value
	first := !c.seen[key]
	c.seen[key] = true

	var reqs []Request
	var err error
	res := crm.Result{ID: CallID, Created: first}
	if rec.Owner != nil && rec.Owner.Email != "" {
		res.OwnerID = OwnerID
	}
	if rec.Contact != nil {
		res.ContactID = ContactID
	}
	if rec.Object == "" || rec.Object == "calls" {
		reqs, err = c.hubspot(rec, first)
	} else {
		reqs, err = c.salesforce(rec, first)
	}
	if err != nil {
		return crm.Result{}, err
	}
	c.requests = append(c.requests, reqs...)
	if c.o.Out != nil {
		c.print(rec, first, reqs)
	}
	return res, nil
}

func (c *Connector) print(rec *mappers.Record, first bool, reqs []Request) {
	what := "update"
	if first {
		what = "create"
	}
	obj := rec.Object
	if obj == "" {
		obj = "calls"
	}
	fmt.Fprintf(c.o.Out, "--- dry-run: %s %s %s=%s (mapping %s), %d requests\n", what, obj, rec.ExternalID.Field, rec.ExternalID.Value, rec.MappingVersion, len(reqs))
	for _, r := range reqs {
		fmt.Fprintf(c.o.Out, "%s %s\n", r.Method, r.URL)
		if len(r.Body) > 0 {
			var pretty strings.Builder
			enc := json.NewEncoder(&pretty)
			enc.SetIndent("", "  ")
			enc.SetEscapeHTML(false)
			var v any
			_ = json.Unmarshal(r.Body, &v)
			_ = enc.Encode(v)
			fmt.Fprint(c.o.Out, pretty.String())
		}
	}
}

func record(base string, r crm.Request) (Request, error) {
	u := base + r.Path
	if len(r.Query) > 0 {
		u += "?" + r.Query.Encode()
	}
	for _, ph := range []string{OwnerID, ContactID, CallID} {
		u = strings.ReplaceAll(u, url.PathEscape(ph), ph) // placeholders stay readable
	}
	out := Request{Method: r.Method, URL: u}
	if r.Body != nil {
		b, err := json.Marshal(r.Body)
		if err != nil {
			return out, &crm.Error{Class: crm.Permanent, Op: "dryrun: encode", Err: err}
		}
		out.Body = b
	}
	return out, nil
}

func (c *Connector) hubspot(rec *mappers.Record, first bool) ([]Request, error) {
	var crs []crm.Request
	ownerID, ownerField, contactID := "", "", ""
	if rec.Owner != nil && rec.Owner.Email != "" {
		crs = append(crs, hubspot.OwnerRequest(rec.Owner.Email))
		ownerID, ownerField = OwnerID, rec.Owner.Field
	}
	if rec.Contact != nil && len(hubspot.PhoneForms(rec.Contact)) > 0 {
		crs = append(crs, hubspot.ContactSearchRequest(rec.Contact))
		contactID = ContactID
	}
	props, err := hubspot.RecordProperties(rec, ownerField, ownerID)
	if err != nil {
		return nil, err
	}
	switch {
	case c.o.HubSpotUniqueProperty != "":
		send := props.Always
		if first {
			send = props.All()
		}
		crs = append(crs, hubspot.UpsertCallRequest(c.o.HubSpotUniqueProperty, rec.ExternalID.Value, send))
		if contactID != "" {
			crs = append(crs, hubspot.AssociateRequest(CallID, contactID))
		}
	case first:
		crs = append(crs, hubspot.CreateCallRequest(props.All(), contactID))
	default:
		crs = append(crs, hubspot.UpdateCallRequest(CallID, props.Always))
	}
	out := make([]Request, 0, len(crs))
	for _, r := range crs {
		rr, err := record(c.o.HubSpotBaseURL, r)
		if err != nil {
			return nil, err
		}
		out = append(out, rr)
	}
	return out, nil
}

// dateFields are Salesforce Task fields of type date.
var dateFields = []string{"ActivityDate", "RecurrenceStartDateOnly", "RecurrenceEndDateOnly"}

func (c *Connector) salesforce(rec *mappers.Record, first bool) ([]Request, error) {
	base := c.o.SalesforceBaseURL + "/services/data/" + c.o.SalesforceAPIVersion
	var crs []crm.Request
	fields := map[string]any{}
	for _, f := range rec.Fields {
		if f.CreateOnly && !first {
			continue
		}
		if f.Name == rec.ExternalID.Field || f.Name == "Id" {
			continue // the upsert URL carries the external id; the body must not
		}
		switch v := f.Value.(type) {
		case nil:
			continue
		case time.Time:
			if slices.Contains(dateFields, f.Name) {
				fields[f.Name] = v.Format(time.DateOnly)
			} else {
				fields[f.Name] = v.Format("2006-01-02T15:04:05.000Z07:00")
			}
		case string, bool, int, int32, int64, float64:
			fields[f.Name] = v
		default:
			return nil, &crm.Error{Class: crm.Permanent, Op: "dryrun: render fields", Code: "MAPPING", Msg: fmt.Sprintf("field %s: unsupported value type %T", f.Name, f.Value)}
		}
	}
	if rec.Owner != nil && rec.Owner.Email != "" {
		q := "SELECT Id FROM User WHERE Email = '" + salesforce.EscapeSOQL(rec.Owner.Email) + "' AND IsActive = true LIMIT 1"
		crs = append(crs, crm.Request{Method: "GET", Path: "/query/", Query: url.Values{"q": {q}}})
		fields[cmpOr(rec.Owner.Field, "OwnerId")] = OwnerID
	}
	if rec.Contact != nil && len(salesforce.SearchTerms(rec.Contact)) > 0 {
		crs = append(crs, crm.Request{Method: "GET", Path: "/search/", Query: url.Values{"q": {salesforce.SOSL(rec.Contact)}}})
		fields[cmpOr(rec.Contact.Field, "WhoId")] = ContactID
	}
	crs = append(crs, crm.Request{Method: "PATCH",
		Path: "/sobjects/" + url.PathEscape(rec.Object) + "/" + url.PathEscape(rec.ExternalID.Field) + "/" + url.PathEscape(rec.ExternalID.Value),
		Body: fields})
	out := make([]Request, 0, len(crs))
	for _, r := range crs {
		rr, err := record(base, r)
		if err != nil {
			return nil, err
		}
		out = append(out, rr)
	}
	return out, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
