package mappers

// Record is what rendering one call detail through a mapping produces: a connector-neutral
// description of the CRM activity to upsert. The worker hands it to a connector
// (worker/crm/...), which turns it into that CRM's requests.
type Record struct {
	// Object is the CRM object to write, e.g. "calls" (HubSpot) or "Task" (Salesforce).
	Object string `json:"object"`
	// ExternalID identifies the activity across retries and events: Salesforce upserts by
	// it, HubSpot by a unique property or through the stored id map.
	ExternalID ExternalID `json:"external_id"`
	// Fields in mapping order. A field whose expression yielded nothing is absent, so an
	// update never blanks what an earlier event wrote.
	Fields []Field `json:"fields"`
	// Contact asks the worker to find the customer's record by phone number.
	Contact *ContactLookup `json:"contact,omitempty"`
	// Owner asks the worker to find the rep's CRM user by e-mail.
	Owner *OwnerLookup `json:"owner,omitempty"`
	// MappingVersion is the content hash of the mapping that rendered the record.
	MappingVersion string `json:"mapping_version"`
}

// ExternalID is the field that carries the MiiTel id in the CRM and its value.
type ExternalID struct {
	// Field is the record-key field a mapping names; "" (the usual) leaves it to the
	// connection (salesforce.external_id_field, hubspot.unique_property).
	Field string `json:"field,omitempty"`
	Value string `json:"value"`
}

// Field is one CRM property with a typed value: string, int64, float64, bool or time.Time.
type Field struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
	// CreateOnly fields are sent when the activity is created and never on update
	// (Salesforce rejects a changed TaskSubtype).
	CreateOnly bool `json:"create_only,omitempty"`
	// KeepLonger marks long text (body, description) that a poorer, later event must not
	// shorten when the call's merged state is no longer available.
	KeepLonger bool `json:"keep_longer,omitempty"`
}

// ContactLookup is the customer's phone number in the forms a CRM search needs.
type ContactLookup struct {
	E164     string `json:"e164"`     // +81312345678
	National string `json:"national"` // 0312345678 (no separators)
	Raw      string `json:"raw"`      // as MiiTel sent it
	// Field names the record field that receives the contact id, e.g. "WhoId"; empty means
	// the connector's own association (HubSpot associations).
	Field string `json:"field,omitempty"`
	// OnMultiple is "most_recent" or "skip"; OnNone is "unassociated", "create_contact" or
	// "create_lead".
	OnMultiple string `json:"on_multiple,omitempty"`
	OnNone     string `json:"on_none,omitempty"`
}

// OwnerLookup is the rep's e-mail (MiiTel login_id) and the field that receives the owner id.
type OwnerLookup struct {
	Email string `json:"email"`
	Field string `json:"field"` // e.g. "hubspot_owner_id", "OwnerId"
}

// Skip explains why a mapping's `when` rule skipped a detail.
type Skip struct {
	Reason string `json:"reason"`
}
