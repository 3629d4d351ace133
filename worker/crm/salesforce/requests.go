package salesforce

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// The request builders below are the Salesforce wire format in one place; the connector
// sends them and the dry-run connector prints them. Paths are relative to
// <instance_url>/services/data/<version>.

// OwnerRequest is the SOQL query for the active User with the rep's e-mail.
func OwnerRequest(email string) crm.Request {
	q := "SELECT Id FROM User WHERE Email = '" + EscapeSOQL(email) + "' AND IsActive = true LIMIT 1"
	return crm.Request{Op: "salesforce: find owner", Method: http.MethodGet, Path: "/query/", Query: url.Values{"q": {q}}}
}

// ContactSearchRequest is the SOSL phone search for a contact lookup (see SOSL).
func ContactSearchRequest(cl *mappers.ContactLookup) crm.Request {
	return crm.Request{Op: "salesforce: search contact", Method: http.MethodGet, Path: "/search/", Query: url.Values{"q": {SOSL(cl)}}}
}

func externalIDPath(object, field, value string) string {
	return "/sobjects/" + url.PathEscape(object) + "/" + url.PathEscape(field) + "/" + url.PathEscape(value)
}

// UpsertRequest is the one-record PATCH that creates or updates the record with the
// external id (API versions before 46.0, which have no collection upsert).
func UpsertRequest(object, field, value string, body map[string]any) crm.Request {
	return crm.Request{Op: "salesforce: upsert " + object, Method: http.MethodPatch, Path: externalIDPath(object, field, value), Body: body}
}

// CollectionRecord is one record of a collection upsert: the fields, the object type in
// attributes (required) and the external id value under its field (the URL names only the
// field).
func CollectionRecord(object, field, value string, fields map[string]any) map[string]any {
	r := make(map[string]any, len(fields)+2)
	maps.Copy(r, fields)
	r["attributes"] = map[string]string{"type": object}
	r[field] = value
	return r
}

// collectionBody is the body of a collection upsert. allOrNone is false, and sent: every
// record stands alone, so one refused call never holds back the others.
type collectionBody struct {
	AllOrNone bool             `json:"allOrNone"`
	Records   []map[string]any `json:"records"`
}

// CollectionUpsertRequest is the sObject Collections upsert (API 46.0+): up to
// config.SalesforceMaxBatch records of one object, by one External ID field, answered with
// one result per record in request order.
func CollectionUpsertRequest(object, field string, records []map[string]any) crm.Request {
	return crm.Request{Op: "salesforce: upsert " + object + " collection", Method: http.MethodPatch,
		Path: "/composite/sobjects/" + url.PathEscape(object) + "/" + url.PathEscape(field),
		Body: collectionBody{Records: records}}
}

// DescribeRequest is the describe of an object: its permissions and its fields.
func DescribeRequest(object string) crm.Request {
	return crm.Request{Op: "salesforce: describe " + object, Method: http.MethodGet, Path: "/sobjects/" + url.PathEscape(object) + "/describe"}
}

// DescribeGlobalRequest lists the objects the integration user can see, with what it may
// do on each.
func DescribeGlobalRequest() crm.Request {
	return crm.Request{Op: "salesforce: describe objects", Method: http.MethodGet, Path: "/sobjects/"}
}

// Fields turns a record's fields into the upsert body, keeping create-only fields apart. The
// external id field is dropped (the URL carries it and Salesforce refuses it in the body); an
// Id field can only be a mapping mistake.
func Fields(in []mappers.Field, extField string) (fields, createOnly map[string]any, err error) {
	fields, createOnly = map[string]any{}, map[string]any{}
	for _, f := range in {
		switch {
		case strings.EqualFold(f.Name, extField):
			continue
		case strings.EqualFold(f.Name, "Id"):
			return nil, nil, errors.New("the mapping sets Id; the Task is identified by its external id")
		}
		v, err := jsonValue(f.Name, f.Value)
		if err != nil {
			return nil, nil, err
		}
		if v == nil {
			continue
		}
		if f.CreateOnly {
			createOnly[f.Name] = v
		} else {
			fields[f.Name] = v
		}
	}
	return fields, createOnly, nil
}

// dateFields are the standard Task fields of type date (not datetime).
var dateFields = []string{"ActivityDate", "RecurrenceStartDateOnly", "RecurrenceEndDateOnly"}

// jsonValue converts a record value to what the REST API expects. A time becomes a date in
// its own zone (a call at 08:30 JST on the 2nd is an activity of the 2nd) for date fields,
// else a datetime with milliseconds and offset. For a custom date field, render a
// YYYY-MM-DD string in the mapping.
func jsonValue(name string, v any) (any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string, bool, int, int32, int64, float32, float64:
		return x, nil
	case time.Time:
		if slices.Contains(dateFields, name) {
			return x.Format(time.DateOnly), nil
		}
		return x.Format("2006-01-02T15:04:05.000Z07:00"), nil
	}
	return nil, fmt.Errorf("field %s: unsupported value type %T", name, v)
}

// OwnerField and ContactField are the fields the resolved owner and contact go in: the
// mapping's choice, else OwnerId and WhoId.
func OwnerField(o *mappers.OwnerLookup) string     { return cmp.Or(o.Field, "OwnerId") }
func ContactField(c *mappers.ContactLookup) string { return cmp.Or(c.Field, "WhoId") }
