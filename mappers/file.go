package mappers

import (
	"github.com/invopop/jsonschema"
)

// File is a mapping file as written by an admin. The same types drive the strict decoder
// (unknown keys, missing required keys and wrong types are errors) and the JSON Schema that
// editors use to autocomplete the file, so the two cannot drift apart.
type File struct {
	Version  int    `yaml:"version" jsonschema:"required,enum=1" jsonschema_description:"Version of the mapping language. Always 1."`
	CRM      string `yaml:"crm" jsonschema:"required,enum=hubspot,enum=salesforce" jsonschema_description:"The CRM whose connector writes the records."`
	Object   string `yaml:"object" jsonschema:"required,minLength=1" jsonschema_description:"The CRM object every record is written to, e.g. calls (HubSpot) or Task (Salesforce)."`
	Timezone string `yaml:"timezone,omitempty" jsonschema_description:"IANA time zone that format_time uses by default. Default Asia/Tokyo."`
	Region   string `yaml:"region,omitempty" jsonschema:"pattern=^[A-Z]{2}$" jsonschema_description:"Default region (ISO 3166 alpha-2) for phone numbers written without a country code. Default JP."`

	ExternalID *ExternalIDDef      `yaml:"external_id,omitempty" jsonschema_description:"How retries and later events find the same activity: the id's value (default detail.id) and, rarely, the CRM field that holds it (default: the connection's record key)."`
	Skip       []SkipRule          `yaml:"skip,omitempty" jsonschema_description:"Rules that skip a call detail: the first rule whose when is true wins and its reason is reported."`
	Tables     map[string]TableDef `yaml:"tables,omitempty" jsonschema_description:"Lookup tables used by lookup() and lookup_first(), by name."`
	Fields     []FieldDef          `yaml:"fields" jsonschema:"required,minItems=1" jsonschema_description:"The CRM fields of a record, in the order they are sent."`
	Contact    *ContactDef         `yaml:"contact,omitempty" jsonschema_description:"How the worker finds the customer's CRM record by phone number."`
	Owner      *OwnerDef           `yaml:"owner,omitempty" jsonschema_description:"How the worker finds the rep's CRM user by e-mail."`
}

// ExternalIDDef is the external id's value and, optionally, the CRM field that holds it. The
// field is normally left out: the connection's record key (Salesforce external_id_field,
// HubSpot unique_property) is the one source of truth, so the mapping and the CRM setup
// cannot name different fields. A mapping names one only to write a route's activities
// under a different key than the connection's.
type ExternalIDDef struct {
	Field string `yaml:"field,omitempty" jsonschema:"minLength=1" jsonschema_description:"Overrides the connection's record key for this mapping: the Salesforce External ID field (e.g. MiiTel_Detail_Id__c) or the HubSpot unique call property. Leave it out to use the connection's (salesforce.external_id_field, hubspot.unique_property)."`
	Value *Expr  `yaml:"value,omitempty" jsonschema_description:"Expression of the id. Default detail.id (the call detail id)."`
	at    pos
}

// SkipRule skips a call detail when its condition holds.
type SkipRule struct {
	When   Expr   `yaml:"when" jsonschema:"required" jsonschema_description:"Boolean expression; true skips the detail."`
	Reason string `yaml:"reason" jsonschema:"required,minLength=1" jsonschema_description:"Why the detail is skipped (shown by preview and logged by the worker)."`
	at     pos
}

// TableDef maps keys to values, with a default for keys not listed.
type TableDef struct {
	Default *string           `yaml:"default,omitempty" jsonschema_description:"Value for keys not listed. Without it lookup() yields nothing and the field is omitted."`
	Values  map[string]string `yaml:"values" jsonschema:"required" jsonschema_description:"Key -> value. Keys and values are text; unquoted numbers are read as text."`
	at      pos
}

// FieldDef is one CRM field.
type FieldDef struct {
	Name       string   `yaml:"name" jsonschema:"required,minLength=1" jsonschema_description:"CRM field (property) name."`
	Value      *Expr    `yaml:"value,omitempty" jsonschema_description:"Expression of the value. Nothing (nil, empty text) omits the field. Exactly one of value or const."`
	Const      *Literal `yaml:"const,omitempty" jsonschema_description:"A constant value (text, number or boolean). Exactly one of value or const."`
	When       *Expr    `yaml:"when,omitempty" jsonschema_description:"Boolean expression; when false the field is omitted."`
	CreateOnly bool     `yaml:"create_only,omitempty" jsonschema_description:"Send only when the activity is created, never on update (Salesforce TaskSubtype)."`
	KeepLonger bool     `yaml:"keep_longer,omitempty" jsonschema_description:"Long text that a later, poorer event must not shorten (bodies, descriptions)."`
	MaxLen     int      `yaml:"max_len,omitempty" jsonschema:"minimum=1" jsonschema_description:"CRM length limit in characters (UTF-16 code units, as Salesforce and HubSpot count). Longer text is cut on a character boundary and ends with the truncation marker."`
	HTML       bool     `yaml:"html,omitempty" jsonschema_description:"The value is HTML: max_len never cuts inside a tag or an entity."`
	at         pos
}

// ContactDef declares the customer's phone number; the worker searches the CRM with it.
type ContactDef struct {
	Number     Expr   `yaml:"number" jsonschema:"required" jsonschema_description:"Expression of the customer's phone number, e.g. customer_number."`
	Region     string `yaml:"region,omitempty" jsonschema:"pattern=^[A-Z]{2}$" jsonschema_description:"Region for numbers without a country code. Default: the file's region."`
	Field      string `yaml:"field,omitempty" jsonschema_description:"Record field that receives the contact id, e.g. WhoId. Empty: the connector associates (HubSpot)."`
	OnMultiple string `yaml:"on_multiple,omitempty" jsonschema:"enum=most_recent,enum=skip" jsonschema_description:"Several records match: use the most recently modified, or associate none. Default most_recent."`
	OnNone     string `yaml:"on_none,omitempty" jsonschema:"enum=unassociated,enum=create_contact,enum=create_lead" jsonschema_description:"No record matches: write the activity unassociated, or create a contact or lead. Default unassociated."`
	at         pos
}

// OwnerDef declares the rep's e-mail; the worker looks the CRM user up with it.
type OwnerDef struct {
	Email Expr   `yaml:"email" jsonschema:"required" jsonschema_description:"Expression of the rep's e-mail, e.g. rep_email (the rep participant's login_id)."`
	Field string `yaml:"field" jsonschema:"required,minLength=1" jsonschema_description:"Record field that receives the owner id, e.g. hubspot_owner_id or OwnerId."`
	at    pos
}

// Expr is the source of an expression (github.com/expr-lang/expr) and where it is in the file.
type Expr struct {
	Src string
	at  pos
}

// JSONSchema describes an expression in the schema: YAML text, or a bare number or boolean.
func (Expr) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{
		AnyOf: []*jsonschema.Schema{
			{Type: "string", MinLength: ptr(uint64(1))},
			{Type: "number"},
			{Type: "boolean"},
		},
		Description: "An expression over the call (see docs/mapping.md), e.g. detail.to_number or duration_ms(answered_at, ended_at).",
	}
}

// Literal is a constant of a field: text, a number or a boolean.
type Literal struct {
	Value any // string, int64, float64 or bool
	at    pos
}

// JSONSchema describes a constant in the schema.
func (Literal) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{
		AnyOf: []*jsonschema.Schema{
			{Type: "string"},
			{Type: "number"},
			{Type: "boolean"},
		},
		Description: "A constant value.",
	}
}

func ptr[T any](v T) *T { return &v }
