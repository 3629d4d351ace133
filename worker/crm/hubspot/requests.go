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

// CreateCallRequest is POST /crm/v3/objects/calls with the contact association.
func CreateCallRequest(props map[string]string, contactID string) crm.Request {
	body := map[string]any{"properties": props}
	if contactID != "" {
		a := associationJSON{Types: contactAssociation()}
		a.To.ID = contactID
		body["associations"] = []associationJSON{a}
	}
	return crm.Request{Op: "hubspot: create call", Method: "POST", Path: "/crm/v3/objects/calls", Body: body}
}

// UpdateCallRequest is PATCH /crm/v3/objects/calls/{id}.
func UpdateCallRequest(id string, props map[string]string) crm.Request {
	return crm.Request{Op: "hubspot: update call", Method: "PATCH", Path: "/crm/v3/objects/calls/" + url.PathEscape(id),
		Body: map[string]any{"properties": props}}
}

// UpsertCallRequest is POST /crm/v3/objects/calls/batch/upsert with one input keyed by the
// unique property.
func UpsertCallRequest(uniqueProperty, value string, props map[string]string) crm.Request {
	// HubSpot sets the idProperty itself from id; sending it in properties as well is allowed
	// only with the same value, so leave it out.
	delete(props, uniqueProperty)
	return crm.Request{Op: "hubspot: upsert call", Method: "POST", Path: "/crm/v3/objects/calls/batch/upsert",
		Body: map[string]any{"inputs": []map[string]any{{"id": value, "idProperty": uniqueProperty, "properties": props}}}}
}

// AssociateRequest is PUT /crm/v4/objects/calls/{id}/associations/contacts/{contactId}.
func AssociateRequest(callID, contactID string) crm.Request {
	return crm.Request{Op: "hubspot: associate call", Method: "PUT",
		Path: "/crm/v4/objects/calls/" + url.PathEscape(callID) + "/associations/contacts/" + url.PathEscape(contactID),
		Body: contactAssociation()}
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

// ContactSearchRequest is POST /crm/v3/objects/contacts/search: one OR-ed filter group per
// (property, form), at most 4 groups of 1 filter (HubSpot allows 5 groups, 18 filters),
// newest modification first.
func ContactSearchRequest(l *mappers.ContactLookup) crm.Request {
	var groups []map[string]any
	for _, prop := range []string{"hs_searchable_calculated_phone_number", "hs_searchable_calculated_mobile_number"} {
		for _, f := range PhoneForms(l) {
			groups = append(groups, map[string]any{"filters": []map[string]string{{"propertyName": prop, "operator": "EQ", "value": f}}})
		}
	}
	return crm.Request{Op: "hubspot: search contact", Method: "POST", Path: "/crm/v3/objects/contacts/search",
		Body: map[string]any{
			"filterGroups": groups,
			"sorts":        []map[string]string{{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}},
			"properties":   []string{"lastmodifieddate"},
			"limit":        2, // one more than needed tells "several" from "one"
		}}
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
