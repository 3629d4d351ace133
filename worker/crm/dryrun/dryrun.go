// Package dryrun is the connector of the embedded default (no CRM configured): instead of
// sending, it prints and records the HTTP requests a real connector would send for each
// record, so an admin can try MiiTel -> mapping -> CRM end to end without a CRM account.
//
// Records for HubSpot (object "calls") are rendered with the HubSpot connector's own request
// builders, so the bodies are exactly what it sends: owner lookup, contact search, then a
// create the first time a MiiTel detail is seen and an update afterwards. Records for
// Salesforce (object "Task", or any other sObject) likewise go through the Salesforce
// connector's builders: owner SOQL, phone SOSL and the sObject Collections upsert that
// carries the record (with its create-only fields the first time). Ids that only the CRM
// could answer appear as placeholders
// ({owner_id}, {contact_id}, {call_id}). Nothing goes to the network.
package dryrun

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
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
	// Out receives the printed requests; nil prints nothing.
	Out io.Writer
	// Record keeps every request for Requests (tests). Off by default: `serve` without a CRM
	// may run for weeks, and the printed requests are all it needs.
	Record bool
	// HubSpotBaseURL and SalesforceBaseURL prefix the printed paths (defaults: the public
	// HubSpot API and a placeholder My Domain).
	HubSpotBaseURL    string
	SalesforceBaseURL string
	// HubSpotUniqueProperty prints the batch upsert instead of create/update.
	HubSpotUniqueProperty string
	// SalesforceAPIVersion defaults to the Salesforce connector's.
	SalesforceAPIVersion string
	// SalesforceExternalIDField is the record key a Salesforce record is printed under when
	// its mapping names none (as the shipped one does): a connection's external_id_field;
	// default MiiTel_Detail_Id__c, the name docs/crm-salesforce.md has admins create.
	SalesforceExternalIDField string
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
		o.HubSpotBaseURL = config.HubSpotBaseURL
	}
	if o.SalesforceBaseURL == "" {
		o.SalesforceBaseURL = "https://{my-domain}.my.salesforce.com"
	}
	if o.SalesforceExternalIDField == "" {
		o.SalesforceExternalIDField = "MiiTel_Detail_Id__c"
	}
	if o.SalesforceAPIVersion == "" {
		o.SalesforceAPIVersion = config.SalesforceAPIVersion
	}
	return &Connector{o: o, seen: map[string]bool{}}
}

// maxSeen bounds the external ids remembered to tell a create from an update.
const maxSeen = 100_000

// Requests returns every request recorded so far (Options.Record).
func (c *Connector) Requests() []Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.requests)
}

// Deliver records and prints the requests for rec. The Result's ids are placeholders
// (Assumed) and Created is true the first time an external id is seen.
func (c *Connector) Deliver(_ context.Context, rec *mappers.Record) (crm.Result, error) {
	if rec.ExternalID.Value == "" {
		return crm.Result{}, &crm.Error{Class: crm.Permanent, Op: "dryrun: deliver", Code: "MAPPING", Msg: "record has no external id"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	key := rec.Object + "\x00" + rec.ExternalID.Value
	first := !c.seen[key]
	if len(c.seen) >= maxSeen {
		// Bounded memory for a long dry run: forgetting only makes an old call's next event
		// print as a create.
		clear(c.seen)
	}
	c.seen[key] = true

	var reqs []Request
	var err error
	// The ids are placeholders: the dry run asks no CRM, so it can only assume the owner and
	// the contact would be found.
	res := crm.Result{ID: CallID, Created: first, Assumed: true}
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
	if c.o.Record {
		c.requests = append(c.requests, reqs...)
	}
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
	fmt.Fprintf(c.o.Out, "--- dry-run: %s %s external_id=%s (mapping %s), %d requests\n", what, obj, rec.ExternalID.Value, rec.MappingVersion, len(reqs))
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
	case c.o.HubSpotUniqueProperty != "" && first:
		// As the connector does once the property is confirmed unique: a create carrying
		// the unique value and the association (HubSpot refuses it if the value is taken,
		// and only then does the connector fall back to the upsert).
		all := props.All()
		all[c.o.HubSpotUniqueProperty] = rec.ExternalID.Value
		crs = append(crs, hubspot.CreateCallRequest(all, contactID))
	case c.o.HubSpotUniqueProperty != "":
		crs = append(crs, hubspot.UpsertCallRequest(c.o.HubSpotUniqueProperty, rec.ExternalID.Value, props.Always))
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

func (c *Connector) salesforce(rec *mappers.Record, first bool) ([]Request, error) {
	base := c.o.SalesforceBaseURL + "/services/data/" + c.o.SalesforceAPIVersion
	object, field, value := rec.Object, cmp.Or(rec.ExternalID.Field, c.o.SalesforceExternalIDField), rec.ExternalID.Value
	fields, createOnly, err := salesforce.Fields(rec.Fields, field)
	if err != nil {
		return nil, &crm.Error{Class: crm.Permanent, Op: "dryrun: render fields", Code: "MAPPING", Msg: err.Error()}
	}
	var crs []crm.Request
	if rec.Owner != nil && rec.Owner.Email != "" {
		crs = append(crs, salesforce.OwnerRequest(rec.Owner.Email))
		fields[salesforce.OwnerField(rec.Owner)] = OwnerID
	}
	if rec.Contact != nil && len(salesforce.SearchTerms(rec.Contact)) > 0 {
		crs = append(crs, salesforce.ContactSearchRequest(rec.Contact))
		fields[salesforce.ContactField(rec.Contact)] = ContactID
	}
	if first {
		// The connector's id map does not know the Task yet: the upsert carries the
		// create-only fields. Nothing is read before the write.
		maps.Copy(fields, createOnly)
	}
	if salesforce.HasCollections(c.o.SalesforceAPIVersion) {
		// The connector groups the records of concurrent calls into one collection request
		// (up to batch.max_size); the dry run prints each call's record in a request of its
		// own.
		crs = append(crs, salesforce.CollectionUpsertRequest(object, field, []map[string]any{salesforce.CollectionRecord(object, field, value, fields)}))
	} else {
		crs = append(crs, salesforce.UpsertRequest(object, field, value, fields))
	}
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
