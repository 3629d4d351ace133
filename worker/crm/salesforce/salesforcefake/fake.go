// Package salesforcefake is a local HTTP fake of the Salesforce APIs the connector uses: the
// OAuth2 token and authorize endpoints (client credentials, JWT bearer, refresh token with
// optional rotation, authorization code with PKCE) and the REST resources for Task upsert by
// external id (one record, and sObject Collections of up to 200), the describes (global and
// per object), SOSL phone search, SOQL user query and Lead/Contact create.
//
// It is strict on purpose: whatever the real API rejects (an unknown path or field, a string
// over its length, a changed create-only field, a wrong type or picklist value, a missing or
// expired session) the fake rejects too, with the same status and error array, so a connector
// that passes against the fake does not first fail in a customer's org. Like the real API the
// token response has no expires_in and names the instance_url (the fake itself), and every
// REST response carries Sforce-Limit-Info.
//
// Tests seed users, contacts and leads, inspect what was stored, count requests and inject
// failures (REQUEST_LIMIT_EXCEEDED, 5xx, expired sessions, revoked refresh tokens, an error
// for one record of a collection), and change the org as an admin would (create the
// External ID field).
package salesforcefake

import (
	"crypto/rsa"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configure a Fake. Zero values take the defaults noted.
type Options struct {
	// ClientID and ClientSecret are the connected app's consumer key and secret
	// (defaults "fake-client-id", "fake-client-secret").
	ClientID     string
	ClientSecret string
	// JWTKey verifies JWT-bearer assertions: the public half of the certificate uploaded to
	// the connected app. Nil refuses the JWT bearer grant.
	JWTKey *rsa.PublicKey
	// Audience is the aud a JWT assertion must carry (default: the fake's URL, standing in
	// for https://login.salesforce.com).
	Audience string
	// RunAsUser is the username the client credentials flow runs as (default: the
	// integration user New seeds). "-" disables the flow, like an app without a run-as user.
	RunAsUser string
	// RotateRefreshTokens issues a new refresh token on every refresh and revokes the whole
	// token family when an older one is replayed (Salesforce refresh token rotation).
	RotateRefreshTokens bool
	// CallbackURL is the connected app's callback; empty accepts any loopback http URL.
	CallbackURL string
	// ExternalIDFields are the Task fields marked External ID + Unique
	// (default MiiTel_Detail_Id__c, the field docs/crm-salesforce.md has admins create).
	// NoExternalIDFields gives an org without any: an admin who skipped that step.
	ExternalIDFields   []string
	NoExternalIDFields bool
	// NonUniqueExternalIDFields are Task fields marked External ID but not Unique.
	NonUniqueExternalIDFields []string
	// CustomTaskFields are further custom text fields on Task with their maximum length.
	CustomTaskFields map[string]int
	// APILimit is the M of Sforce-Limit-Info: api-usage=N/M (default 100000).
	APILimit int
	// Access is what the integration user's profile and permission sets grant on each
	// object, as the describes report it (default: read, create and edit on Task, Contact
	// and Lead; read on User). An object without Read is absent from the global describe
	// and its describe answers 404, as Salesforce hides objects a user cannot see. The
	// fake reports these permissions; it does not enforce them on writes.
	Access map[string]Access
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Access is a user's permission on one object.
type Access struct{ Read, Create, Edit bool }

// DefaultAccess is the access Options.Access defaults to: what docs/crm-salesforce.md has
// admins grant the integration user.
func DefaultAccess() map[string]Access {
	return map[string]Access{
		"Task":    {Read: true, Create: true, Edit: true},
		"Contact": {Read: true, Create: true, Edit: true},
		"Lead":    {Read: true, Create: true, Edit: true},
		"User":    {Read: true},
	}
}

// Integration user New seeds: the client credentials run-as user and a valid JWT subject.
const (
	IntegrationUsername = "integration@fake.example.com"
	IntegrationEmail    = "integration@fake.example.com"
)

// Request kinds counted by Count.
const (
	OpToken         = "token"           // POST /services/oauth2/token, any grant
	OpAuthorize     = "authorize"       // GET /services/oauth2/authorize
	OpUpsert        = "upsert"          // PATCH sobjects/Task/<field>/<value>
	OpCollection    = "collection"      // PATCH composite/sobjects/Task/<field>
	OpGetByExternal = "get_by_external" // GET sobjects/Task/<field>/<value>
	OpDescribe      = "describe"        // GET sobjects/<object>/describe
	OpDescribeAll   = "describe_global" // GET sobjects/
	OpSearch        = "search"          // GET search?q=FIND ...
	OpQuery         = "query"           // GET query?q=SELECT ...
	OpCreate        = "create"          // POST sobjects/<Lead|Contact>
	OpAPI           = "api"             // every /services/data request, whatever it was
)

// Record is a stored sObject as the API would return it: field name -> JSON value (string,
// json.Number, bool or nil), plus Id.
type Record map[string]any

// Person seeds a Contact or a Lead.
type Person struct {
	FirstName, LastName, Company string
	Phone, MobilePhone           string
	OwnerID                      string
	LastModified                 time.Time // default: now
}

// User seeds a User.
type User struct {
	Username, Email string
	Inactive        bool
}

// Upsert is one record of an upsert as the fake received it, for assertions such as
// "TaskSubtype was never sent on update". For a record of a collection, Status is the
// record's own outcome (201 created, 200 updated, 400 refused) and Collection is the index
// of its request in Collections.
type Upsert struct {
	Field, Value string
	Body         map[string]any
	Status       int
	Created      bool
	Errors       []string // the error codes of a refused record
	Collection   int      // -1 for the one-record upsert
}

// Collection is one sObject Collections upsert request as the fake received it.
type Collection struct {
	Field     string
	Values    []string // the records' external ids, in request order
	AllOrNone bool
	Status    int // the HTTP status (200 even when records failed)
}

// Fake is a running fake Salesforce org.
type Fake struct {
	URL string

	srv  *httptest.Server
	opts Options

	mu        sync.Mutex
	seq       int
	users     map[string]*record
	contacts  map[string]*record
	leads     map[string]*record
	tasks     map[string]*record
	deleted   map[string]bool
	sessions  map[string]string // access token -> user id
	refresh   map[string]*family
	codes     map[string]*authCode
	faults    []Fault
	recFaults map[string][]Fault // external id value -> per-record faults to answer
	counts    map[string]int
	upserts   []Upsert
	colls     []Collection
	extFields map[string]bool // External ID field -> unique
	apiUsed   int
	lastAPIAt time.Time
}

type record struct {
	fields   Record
	modified time.Time
	indexed  bool // visible to SOSL; API-created records are not until IndexSearch
}

// Fault is a failure the next API requests answer with instead of doing their work.
type Fault struct {
	Status  int
	Code    string // errorCode in the error array
	Message string
	Header  http.Header
}

// New starts a fake on a loopback port and closes it when the test ends.
func New(tb testing.TB, opts Options) *Fake {
	tb.Helper()
	f := &Fake{
		users: map[string]*record{}, contacts: map[string]*record{}, leads: map[string]*record{},
		tasks: map[string]*record{}, deleted: map[string]bool{}, sessions: map[string]string{}, refresh: map[string]*family{},
		codes: map[string]*authCode{}, counts: map[string]int{}, recFaults: map[string][]Fault{},
		extFields: map[string]bool{},
	}
	if opts.ClientID == "" {
		opts.ClientID = "fake-client-id"
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = "fake-client-secret"
	}
	if len(opts.ExternalIDFields) == 0 && !opts.NoExternalIDFields {
		opts.ExternalIDFields = []string{"MiiTel_Detail_Id__c"}
	}
	for _, n := range opts.ExternalIDFields {
		f.extFields[n] = true
	}
	for _, n := range opts.NonUniqueExternalIDFields {
		f.extFields[n] = false
	}
	if opts.Access == nil {
		opts.Access = DefaultAccess()
	}
	if opts.APILimit == 0 {
		opts.APILimit = 100000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serveHTTP))
	f.URL = f.srv.URL
	if opts.Audience == "" {
		opts.Audience = f.URL
	}
	f.opts = opts
	f.AddUser(User{Username: IntegrationUsername, Email: IntegrationEmail})
	tb.Cleanup(f.srv.Close)
	return f
}

// ClientID and ClientSecret are the connected app's credentials the fake accepts.
func (f *Fake) ClientID() string     { return f.opts.ClientID }
func (f *Fake) ClientSecret() string { return f.opts.ClientSecret }

// TokenURL and AuthURL are the OAuth2 endpoints.
func (f *Fake) TokenURL() string { return f.URL + "/services/oauth2/token" }
func (f *Fake) AuthURL() string  { return f.URL + "/services/oauth2/authorize" }

// Client is an HTTP client for the fake's server.
func (f *Fake) Client() *http.Client { return f.srv.Client() }

func (f *Fake) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/services/oauth2/token":
		f.serveToken(w, r)
	case r.URL.Path == "/services/oauth2/authorize":
		f.serveAuthorize(w, r)
	case strings.HasPrefix(r.URL.Path, "/services/data/"):
		f.serveAPI(w, r)
	default:
		writeErrors(w, http.StatusNotFound, apiError{"NOT_FOUND", "The requested resource does not exist", nil})
	}
}

// AddUser seeds a User and returns its id.
func (f *Fake) AddUser(u User) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.newID("005")
	f.users[id] = &record{fields: Record{"Id": id, "Username": u.Username, "Email": u.Email, "IsActive": !u.Inactive}, modified: f.opts.Now(), indexed: true}
	return id
}

// UserID returns the id of the user with this username ("" if none).
func (f *Fake) UserID(username string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, u := range f.users {
		if strings.EqualFold(u.fields["Username"].(string), username) {
			return id
		}
	}
	return ""
}

// AddContact seeds a Contact, searchable at once, and returns its id.
func (f *Fake) AddContact(p Person) string { return f.addPerson("003", f.contacts, p) }

// AddLead seeds a Lead, searchable at once, and returns its id.
func (f *Fake) AddLead(p Person) string { return f.addPerson("00Q", f.leads, p) }

func (f *Fake) addPerson(prefix string, into map[string]*record, p Person) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.newID(prefix)
	owner := p.OwnerID
	if owner == "" {
		for uid, u := range f.users {
			if u.fields["Username"] == IntegrationUsername {
				owner = uid
			}
		}
	}
	mod := p.LastModified
	if mod.IsZero() {
		mod = f.opts.Now()
	}
	fields := Record{"Id": id, "LastName": p.LastName, "OwnerId": owner}
	for k, v := range map[string]string{"FirstName": p.FirstName, "Phone": p.Phone, "MobilePhone": p.MobilePhone} {
		if v != "" {
			fields[k] = v
		}
	}
	if prefix == "00Q" {
		fields["Company"] = p.Company
	}
	into[id] = &record{fields: fields, modified: mod, indexed: true}
	return id
}

// Delete deletes a record of any object (a user deleting or merging it in Salesforce);
// references to it are refused with ENTITY_IS_DELETED afterwards.
func (f *Fake) Delete(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range []map[string]*record{f.users, f.contacts, f.leads, f.tasks} {
		if _, ok := m[id]; ok {
			delete(m, id)
			f.deleted[id] = true
			return true
		}
	}
	return false
}

// IndexSearch makes records created through the API visible to SOSL. Until then a search
// does not find them, like the real search index that lags writes.
func (f *Fake) IndexSearch() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range []map[string]*record{f.contacts, f.leads} {
		for _, r := range m {
			r.indexed = true
		}
	}
}

// Tasks returns copies of the stored Tasks, ordered by id (creation order).
func (f *Fake) Tasks() []Record { return f.list(f.tasks) }

// Leads returns copies of the stored Leads, ordered by id.
func (f *Fake) Leads() []Record { return f.list(f.leads) }

// Contacts returns copies of the stored Contacts, ordered by id.
func (f *Fake) Contacts() []Record { return f.list(f.contacts) }

// Users returns copies of the stored Users, ordered by id.
func (f *Fake) Users() []Record { return f.list(f.users) }

// TaskByExternalID returns the Task whose external id field holds value.
func (f *Fake) TaskByExternalID(field, value string) (Record, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.tasks {
		if t.fields[field] == value {
			return f.view(t), true
		}
	}
	return nil, false
}

func (f *Fake) list(m map[string]*record) []Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := slices.Sorted(maps.Keys(m))
	out := make([]Record, 0, len(ids))
	for _, id := range ids {
		out = append(out, f.view(m[id]))
	}
	return out
}

func (f *Fake) view(r *record) Record {
	c := maps.Clone(r.fields)
	c["LastModifiedDate"] = formatDateTime(r.modified)
	return c
}

// Upserts returns every upsert request received, in order.
func (f *Fake) Upserts() []Upsert {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.upserts)
}

// Collections returns every sObject Collections upsert request received, in order.
func (f *Fake) Collections() []Collection {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.colls)
	for i := range out {
		out[i].Values = slices.Clone(out[i].Values)
	}
	return out
}

// AddExternalIDField creates a text field on Task marked External ID (and Unique when
// unique), as an admin does in Setup: upserts by it work from the next request on.
func (f *Fake) AddExternalIDField(name string, unique bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.extFields[name] = unique
}

// FailRecord makes the next n upserts of the record with this external id value fail with
// the fault: in a collection, that record alone gets the error (fault.Code and Message in
// its errors[]; fault.Status is not used), the others are processed; a one-record upsert
// answers the fault as a whole. For example an org's validation rule refusing one call:
// FailRecord(id, 1, Fault{Code: "FIELD_CUSTOM_VALIDATION_EXCEPTION", Message: "..."}).
func (f *Fake) FailRecord(value string, n int, fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.recFaults[value] = append(f.recFaults[value], fault)
	}
}

// takeRecordFault returns the next fault for value, if any. The caller holds mu.
func (f *Fake) takeRecordFault(value string) (Fault, bool) {
	q := f.recFaults[value]
	if len(q) == 0 {
		return Fault{}, false
	}
	f.recFaults[value] = q[1:]
	return q[0], true
}

// Count returns how many requests of a kind (Op*) the fake received.
func (f *Fake) Count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[op]
}

// Fail makes the next n API requests (/services/data/...) answer with the fault instead of
// doing their work, e.g. Fail(1, Fault{Status: 403, Code: "REQUEST_LIMIT_EXCEEDED"}).
func (f *Fake) Fail(n int, fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.faults = append(f.faults, fault)
	}
}

// ExpireSessions invalidates every access token issued so far: the next API request with one
// of them gets 401 INVALID_SESSION_ID.
func (f *Fake) ExpireSessions() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.sessions)
}

// RevokeRefreshTokens revokes every refresh token issued so far (an admin revoked the app's
// access): refreshing with one answers 400 invalid_grant.
func (f *Fake) RevokeRefreshTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fam := range f.refresh {
		fam.revoked = true
	}
}

// SetAPIUsage sets the N of Sforce-Limit-Info: api-usage=N/M.
func (f *Fake) SetAPIUsage(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apiUsed = n
}

// newID makes an 18-character Salesforce id with the object's key prefix. The caller holds mu.
func (f *Fake) newID(prefix string) string {
	f.seq++
	id15 := fmt.Sprintf("%s5F%010d", prefix, f.seq)
	return id15 + idSuffix(id15)
}

// idSuffix is the case-safe 3-character suffix of an 18-character id: one character per
// 5-character chunk encoding which of its characters are upper case.
func idSuffix(id15 string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
	var s [3]byte
	for chunk := range 3 {
		bits := 0
		for i := range 5 {
			c := id15[chunk*5+i]
			if c >= 'A' && c <= 'Z' {
				bits |= 1 << i
			}
		}
		s[chunk] = alphabet[bits]
	}
	return string(s[:])
}

func formatDateTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000+0000") }
