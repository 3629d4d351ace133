package hubspot

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

// The request builders below are the HubSpot wire format in one place; the connector sends
// them and the dry-run connector prints them.

const (
	// ExternalIDProperty is HubSpot's call property for the calling system's id; every call
	// carries the MiiTel detail id in it, so a lost id-map entry can be found by search.
	ExternalIDProperty = "hs_call_external_id"
	// OwnerProperty is the default owner field.
	OwnerProperty = "hubspot_owner_id"
	// AssocCallToContact is HubSpot's association type id for call -> contact.
	AssocCallToContact = 194
)

// Properties are a call's properties split by when they may be sent.
type Properties struct {
	Always     map[string]string
	CreateOnly map[string]string
}

// All returns the properties for a create.
func (p Properties) All() map[string]string {
	out := make(map[string]string, len(p.Always)+len(p.CreateOnly))
	for k, v := range p.CreateOnly {
		out[k] = v
	}
	for k, v := range p.Always {
		out[k] = v
	}
	return out
}

// RecordProperties turns a record's typed fields into HubSpot property strings and sets the
// external id property. ownerField/ownerID add the resolved owner.
func RecordProperties(rec *mappers.Record, ownerField, ownerID string) (Properties, error) {
	p := Properties{Always: map[string]string{}, CreateOnly: map[string]string{}}
	for _, f := range rec.Fields {
		v, ok, err := PropertyValue(f.Value)
		if err != nil {
			return p, &crm.Error{Class: crm.Permanent, Op: "hubspot: render properties", Code: "MAPPING", Msg: fmt.Sprintf("field %s: %v", f.Name, err)}
		}
		if !ok {
			continue
		}
		if f.CreateOnly {
			p.CreateOnly[f.Name] = v
		} else {
			p.Always[f.Name] = v
		}
	}
	p.Always[ExternalIDProperty] = rec.ExternalID.Value
	if ownerID != "" {
		if ownerField == "" {
			ownerField = OwnerProperty
		}
		p.Always[ownerField] = ownerID
	}
	return p, nil
}

// PropertyValue formats a typed record value the way HubSpot wants every property: as a
// string. Times become ISO-8601 UTC with milliseconds. ok is false for nil (not sent).
func PropertyValue(v any) (s string, ok bool, err error) {
	switch x := v.(type) {
	case nil:
		return "", false, nil
	case string:
		return x, true, nil
	case int64:
		return strconv.FormatInt(x, 10), true, nil
	case int:
		return strconv.Itoa(x), true, nil
	case int32:
		return strconv.FormatInt(int64(x), 10), true, nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true, nil
	case bool:
		return strconv.FormatBool(x), true, nil
	case time.Time:
		return x.UTC().Format("2006-01-02T15:04:05.000Z"), true, nil
	case *time.Time:
		if x == nil {
			return "", false, nil
		}
		return x.UTC().Format("2006-01-02T15:04:05.000Z"), true, nil
	}
	return "", false, fmt.Errorf("unsupported value type %T", v)
}

type assocTypeJSON struct {
	AssociationCategory string `json:"associationCategory"`
	AssociationTypeID   int    `json:"associationTypeId"`
}

type associationJSON struct {
	To struct {
		ID string `json:"id"`
	} `json:"to"`
	Types []assocTypeJSON `json:"types"`
}

func contactAssociation() []assocTypeJSON {
	return []assocTypeJSON{{AssociationCategory: "HUBSPOT_DEFINED", AssociationTypeID: AssocCallToContact}}
}

// Calls are written through the batch endpoints, one input per call (batch.go groups the
// inputs of concurrent deliveries into one request). Each input carries an
// objectWriteTraceId unique in its request, so a failing input is answered alone (207).

// Batch write endpoints.
const (
	PathBatchCreate    = "/crm/v3/objects/calls/batch/create"
	PathBatchUpdate    = "/crm/v3/objects/calls/batch/update"
	PathBatchUpsert    = "/crm/v3/objects/calls/batch/upsert"
	PathBatchAssociate = "/crm/v4/associations/calls/contacts/batch/create"
)

// CreateCallInput is one batch/create input: the properties and the contact association.
func CreateCallInput(props map[string]string, contactID, trace string) map[string]any {
	in := map[string]any{"properties": props, "objectWriteTraceId": trace}
	if contactID != "" {
		a := associationJSON{Types: contactAssociation()}
		a.To.ID = contactID
		in["associations"] = []associationJSON{a}
	}
	return in
}

// UpdateCallInput is one batch/update input.
func UpdateCallInput(id string, props map[string]string, trace string) map[string]any {
	return map[string]any{"id": id, "properties": props, "objectWriteTraceId": trace}
}

// UpsertCallInput is one batch/upsert input keyed by the unique property. HubSpot sets the
// idProperty itself from id; sending it in properties as well is allowed only with the same
// value, so it is left out. Upsert inputs carry no associations.
func UpsertCallInput(uniqueProperty, value string, props map[string]string, trace string) map[string]any {
	p := make(map[string]string, len(props))
	for k, v := range props {
		if k != uniqueProperty {
			p[k] = v
		}
	}
	return map[string]any{"id": value, "idProperty": uniqueProperty, "properties": p, "objectWriteTraceId": trace}
}

// AssociateInput is one v4 associations batch/create input: call -> contact, type 194.
func AssociateInput(callID, contactID string) map[string]any {
	return map[string]any{"from": map[string]string{"id": callID}, "to": map[string]string{"id": contactID}, "types": contactAssociation()}
}

// BatchRequest is a POST of inputs to one of the batch endpoints.
func BatchRequest(op, path string, inputs []map[string]any) crm.Request {
	return crm.Request{Op: op, Method: "POST", Path: path, Body: map[string]any{"inputs": inputs}}
}

// CreateCallRequest is what a lone call's create sends: batch/create with one input.
func CreateCallRequest(props map[string]string, contactID string) crm.Request {
	return BatchRequest("hubspot: create calls", PathBatchCreate, []map[string]any{CreateCallInput(props, contactID, "0")})
}

// UpdateCallRequest is what a lone call's update sends: batch/update with one input.
func UpdateCallRequest(id string, props map[string]string) crm.Request {
	return BatchRequest("hubspot: update calls", PathBatchUpdate, []map[string]any{UpdateCallInput(id, props, "0")})
}

// UpsertCallRequest is what a lone call's upsert sends: batch/upsert with one input.
func UpsertCallRequest(uniqueProperty, value string, props map[string]string) crm.Request {
	return BatchRequest("hubspot: upsert calls", PathBatchUpsert, []map[string]any{UpsertCallInput(uniqueProperty, value, props, "0")})
}

// AssociateRequest is what a lone association sends: v4 batch/create with one input.
func AssociateRequest(callID, contactID string) crm.Request {
	return BatchRequest("hubspot: associate calls", PathBatchAssociate, []map[string]any{AssociateInput(callID, contactID)})
}

// OwnerRequest is GET /crm/v3/owners?email=.
func OwnerRequest(email string) crm.Request {
	return crm.Request{Op: "hubspot: find owner", Method: "GET", Path: "/crm/v3/owners",
		Query: url.Values{"email": {email}, "limit": {"1"}}}
}

// PhoneForms are the digit strings a contact's calculated phone properties may hold: the
// national number with its trunk prefix (entered without country code) and without it
// (entered with one), e.g. 0312345678 and 312345678.
func PhoneForms(l *mappers.ContactLookup) []string {
	national := digits(l.National)
	if national == "" {
		national = digits(l.Raw)
	}
	var forms []string
	if national != "" {
		forms = append(forms, national)
	}
	if nsn := strings.TrimLeft(national, "0"); nsn != "" && nsn != national && strings.HasSuffix(digits(l.E164), nsn) {
		forms = append(forms, nsn)
	}
	return forms
}

func digits(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// ContactSearchRequest is what a lone lookup sends: the batch search (batch.go) for the
// number's forms.
func ContactSearchRequest(l *mappers.ContactLookup) crm.Request {
	return ContactBatchSearchRequest(PhoneForms(l), "")
}

// CreateContactRequest is POST /crm/v3/objects/contacts with the caller's number.
func CreateContactRequest(l *mappers.ContactLookup) crm.Request {
	phone := l.E164
	if phone == "" {
		phone = l.Raw
	}
	return crm.Request{Op: "hubspot: create contact", Method: "POST", Path: "/crm/v3/objects/contacts",
		Body: map[string]any{"properties": map[string]string{"phone": phone}}}
}

// CallSearchRequest is POST /crm/v3/objects/calls/search for the external id.
func CallSearchRequest(externalID string) crm.Request {
	return crm.Request{Op: "hubspot: search call", Method: "POST", Path: "/crm/v3/objects/calls/search",
		Body: map[string]any{
			"filterGroups": []map[string]any{{"filters": []map[string]string{{"propertyName": ExternalIDProperty, "operator": "EQ", "value": externalID}}}},
			"properties":   []string{ExternalIDProperty},
			"limit":        1,
		}}
}
