package salesforce_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

const extField = "MiiTel_Detail_Id__c"

// testKey is one RSA key for every JWT test: generating it is the slow part.
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func pemKey(k *rsa.PrivateKey) string {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

type env struct {
	fake *salesforcefake.Fake
	rdb  *redis.Client
	conn config.Connection
	reg  *prometheus.Registry
	logs *syncBuffer
	// client, when set, is the connector's HTTP client (default: the fake's).
	client *http.Client
}

// syncBuffer collects a connector's log lines; written by its goroutines, read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setup starts a fake org and a private Redis, and describes a connection using flow.
func setup(t *testing.T, flow string, opts salesforcefake.Options) *env {
	t.Helper()
	if flow == salesforce.FlowJWT && opts.JWTKey == nil {
		opts.JWTKey = &testKey().PublicKey
	}
	fake := salesforcefake.New(t, opts)
	sf := &config.Salesforce{
		LoginURL:        fake.URL,
		Flow:            flow,
		ClientID:        fake.ClientID(),
		ClientSecret:    config.FromValue(fake.ClientSecret()),
		ExternalIDField: extField,
	}
	switch flow {
	case salesforce.FlowJWT:
		sf.Username = salesforcefake.IntegrationUsername
		sf.PrivateKey = config.FromValue(pemKey(testKey()))
	case salesforce.FlowRefreshToken:
		sf.RefreshToken = config.FromValue(fake.IssueRefreshToken(salesforcefake.IntegrationUsername))
	}
	return &env{
		fake: fake,
		rdb:  redistest.Start(t).Client(),
		// A lone delivery's batch goes at once; batching tests set their own.
		conn: config.Connection{Name: "sf", Type: "salesforce", Salesforce: sf, Batch: config.Batch{Linger: time.Millisecond}},
		reg:  prometheus.NewRegistry(),
		logs: &syncBuffer{},
	}
}

func (e *env) connector(t *testing.T) *salesforce.Connector {
	t.Helper()
	hc := e.client
	if hc == nil {
		hc = e.fake.Client()
	}
	c, err := salesforce.New(salesforce.Options{
		Connection: e.conn, Redis: e.rdb, HTTPClient: hc, Registerer: e.reg, Context: t.Context(),
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil)),
	})
	if err != nil {
		t.Fatalf("salesforce.New: %v", err)
	}
	return c
}

// callRecord is what a Salesforce mapping renders for one answered outbound call.
func callRecord(id string) *mappers.Record {
	return &mappers.Record{
		Object:     "Task",
		ExternalID: mappers.ExternalID{Field: extField, Value: id},
		Fields: []mappers.Field{
			{Name: "Subject", Value: "Call: Outbound"},
			{Name: "TaskSubtype", Value: "Call", CreateOnly: true},
			{Name: "CallType", Value: "Outbound"},
			{Name: "CallDurationInSeconds", Value: int64(125)},
			{Name: "ActivityDate", Value: time.Date(2024, 3, 2, 8, 30, 0, 0, time.FixedZone("JST", 9*3600))},
			{Name: "Status", Value: "Completed"},
			{Name: "Description", Value: "memo", KeepLonger: true},
		},
		Contact: &mappers.ContactLookup{E164: "+81312345678", National: "0312345678", Raw: "03-1234-5678", Field: "WhoId"},
		Owner:   &mappers.OwnerLookup{Email: "rep@example.com", Field: "OwnerId"},
	}
}

func deliver(t *testing.T, c *salesforce.Connector, rec *mappers.Record) crm.Result {
	t.Helper()
	res, err := c.Deliver(t.Context(), rec)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	return res
}

func TestDeliverCreatesThenUpdatesOneTask(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
	owner := e.fake.AddUser(salesforcefake.User{Username: "rep@example.com.org", Email: "rep@example.com"})
	contact := e.fake.AddContact(salesforcefake.Person{LastName: "Tanaka", Phone: "03-1234-5678"})
	c := e.connector(t)

	first := deliver(t, c, callRecord("d-1"))
	if !first.Created || first.ContactID != contact || first.OwnerID != owner {
		t.Fatalf("first delivery = %+v, want created with contact %s and owner %s", first, contact, owner)
	}
	// A retry and a later event of the same call update the same Task.
	rec := callRecord("d-1")
	rec.Fields[6].Value = "memo\n\ntranscript"
	second := deliver(t, c, rec)
	if second.Created || second.ID != first.ID {
		t.Fatalf("second delivery = %+v, want an update of %s", second, first.ID)
	}

	tasks := e.fake.Tasks()
	if len(tasks) != 1 {
		t.Fatalf("fake holds %d tasks, want 1", len(tasks))
	}
	got := tasks[0]
	delete(got, "LastModifiedDate")
	want := salesforcefake.Record{
		"Id": first.ID, extField: "d-1", "Subject": "Call: Outbound", "TaskSubtype": "Call",
		"CallType": "Outbound", "CallDurationInSeconds": json.Number("125"), "ActivityDate": "2024-03-02",
		"Status": "Completed", "Priority": "Normal", "Description": "memo\n\ntranscript",
		"WhoId": contact, "OwnerId": owner,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored task (-want +got):\n%s", diff)
	}
	ups := e.fake.Upserts()
	if len(ups) != 2 {
		t.Fatalf("%d upserts, want 2", len(ups))
	}
	if _, ok := ups[0].Body["TaskSubtype"]; !ok {
		t.Errorf("create did not send TaskSubtype: %v", ups[0].Body)
	}
	if _, ok := ups[1].Body["TaskSubtype"]; ok {
		t.Errorf("update sent TaskSubtype: %v", ups[1].Body)
	}
	// Nothing is read before a write: the id map answers create or update.
	if n := e.fake.Count(salesforcefake.OpGetByExternal); n != 0 {
		t.Errorf("%d GETs by external id, want none", n)
	}
	if n := e.fake.Count(salesforcefake.OpCollection); n != 2 {
		t.Errorf("%d collection upserts, want 2", n)
	}
	// Lookups are cached.
	if q, s := e.fake.Count(salesforcefake.OpQuery), e.fake.Count(salesforcefake.OpSearch); q != 1 || s != 1 {
		t.Errorf("owner queries = %d, contact searches = %d; want 1 each (cached)", q, s)
	}
	// The org's daily allowance: 3 requests for a call's first event (owner, contact,
	// upsert), 1 for each later one.
	if n := e.fake.Count(salesforcefake.OpAPI); n != 4 {
		t.Errorf("%d API requests for two events, want 4", n)
	}
}

// A crash after the upsert but before the id map write (or a Redis that lost its data, or a
// batch answer lost on the way) must still end in an update of the one Task, without asking
// first: the create-only field goes out, Salesforce refuses it for that record, and the
// record goes again without it.
func TestRetryAfterLostIDMapUpdates(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
	c := e.connector(t)
	first := deliver(t, c, callRecord("d-crash"))
	if err := e.rdb.FlushDB(t.Context()).Err(); err != nil { // private redis-server
		t.Fatal(err)
	}
	second := deliver(t, e.connector(t), callRecord("d-crash"))
	if second.Created || second.ID != first.ID {
		t.Fatalf("redelivery = %+v, want update of %s", second, first.ID)
	}
	if n := len(e.fake.Tasks()); n != 1 {
		t.Fatalf("%d tasks, want 1", n)
	}
	ups := e.fake.Upserts()
	if len(ups) != 3 || ups[1].Status != 400 || ups[2].Status != 200 {
		t.Fatalf("upserts = %+v, want create, refused create-only, update", ups)
	}
	if diff := cmp.Diff([]string{"INVALID_FIELD_FOR_INSERT_UPDATE"}, ups[1].Errors); diff != "" {
		t.Errorf("refusal (-want +got):\n%s", diff)
	}
	if _, ok := ups[2].Body["TaskSubtype"]; ok {
		t.Error("the resend after the refusal still carried TaskSubtype")
	}
	if n := e.fake.Count(salesforcefake.OpGetByExternal); n != 0 {
		t.Errorf("%d GETs by external id, want none", n)
	}
}

func TestContactPolicies(t *testing.T) {
	old := time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)
	recent := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		seed       func(f *salesforcefake.Fake) (wantKey string)
		onMultiple string
		onNone     string
		wantLeads  int
		wantConts  int
	}{
		{name: "one contact", seed: func(f *salesforcefake.Fake) string {
			return f.AddContact(salesforcefake.Person{LastName: "A", Phone: "03-1234-5678"})
		}, wantConts: 1},
		{name: "contact stored in E.164 form", seed: func(f *salesforcefake.Fake) string {
			return f.AddContact(salesforcefake.Person{LastName: "A", MobilePhone: "+81 3 1234 5678"})
		}, wantConts: 1},
		{name: "contact wins over lead", seed: func(f *salesforcefake.Fake) string {
			f.AddLead(salesforcefake.Person{LastName: "L", Company: "X", Phone: "0312345678", LastModified: recent})
			return f.AddContact(salesforcefake.Person{LastName: "C", Phone: "0312345678", LastModified: old})
		}, wantLeads: 1, wantConts: 1},
		{name: "only a lead", seed: func(f *salesforcefake.Fake) string {
			return f.AddLead(salesforcefake.Person{LastName: "L", Company: "X", Phone: "0312345678"})
		}, wantLeads: 1},
		{name: "several: most recent", onMultiple: salesforce.OnMultipleMostRecent, seed: func(f *salesforcefake.Fake) string {
			f.AddContact(salesforcefake.Person{LastName: "Old", Phone: "0312345678", LastModified: old})
			return f.AddContact(salesforcefake.Person{LastName: "New", Phone: "0312345678", LastModified: recent})
		}, wantConts: 2},
		{name: "several: skip", onMultiple: salesforce.OnMultipleSkip, seed: func(f *salesforcefake.Fake) string {
			f.AddContact(salesforcefake.Person{LastName: "Old", Phone: "0312345678", LastModified: old})
			f.AddContact(salesforcefake.Person{LastName: "New", Phone: "0312345678", LastModified: recent})
			return ""
		}, wantConts: 2},
		{name: "none: unassociated", onNone: salesforce.OnNoneUnassociated, seed: func(f *salesforcefake.Fake) string {
			f.AddContact(salesforcefake.Person{LastName: "Other", Phone: "0399999999"})
			return ""
		}, wantConts: 1},
		{name: "none: create lead", onNone: salesforce.OnNoneCreateLead, seed: func(*salesforcefake.Fake) string { return "new" }, wantLeads: 1},
		{name: "none: create contact", onNone: salesforce.OnNoneCreateContact, seed: func(*salesforcefake.Fake) string { return "new" }, wantConts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
			owner := e.fake.AddUser(salesforcefake.User{Username: "rep", Email: "rep@example.com"})
			want := tt.seed(e.fake)
			c := e.connector(t)
			rec := callRecord("d-" + tt.name)
			rec.Contact.OnMultiple, rec.Contact.OnNone = tt.onMultiple, tt.onNone
			res := deliver(t, c, rec)
			if want == "new" {
				created := append(e.fake.Leads(), e.fake.Contacts()...)
				if len(created) != 1 {
					t.Fatalf("%d leads+contacts, want the 1 created", len(created))
				}
				want = created[0]["Id"].(string)
				if created[0]["OwnerId"] != owner || created[0]["Phone"] != "03-1234-5678" {
					t.Errorf("created record = %v, want owner %s and the caller's number", created[0], owner)
				}
			}
			if res.ContactID != want {
				t.Errorf("ContactID = %q, want %q", res.ContactID, want)
			}
			task, _ := e.fake.TaskByExternalID(extField, rec.ExternalID.Value)
			if got, _ := task["WhoId"].(string); got != want {
				t.Errorf("task WhoId = %q, want %q", got, want)
			}
			// A second call from the same number reuses the answer: the search index has
			// not seen a created record yet, so without the cache a duplicate would appear.
			rec2 := callRecord("d2-" + tt.name)
			rec2.Contact.OnMultiple, rec2.Contact.OnNone = tt.onMultiple, tt.onNone
			deliver(t, c, rec2)
			if n := e.fake.Count(salesforcefake.OpSearch); n != 1 && want != "" {
				t.Errorf("%d searches, want 1 (cached)", n)
			}
			if l, ct := len(e.fake.Leads()), len(e.fake.Contacts()); l != tt.wantLeads || ct != tt.wantConts {
				t.Errorf("leads = %d, contacts = %d; want %d, %d", l, ct, tt.wantLeads, tt.wantConts)
			}
		})
	}
}

func TestOwnerMatch(t *testing.T) {
	tests := []struct {
		name  string
		email string
		seed  []salesforcefake.User
		want  int // index into seed, -1 = no owner set
	}{
		{"exact", "rep@example.com", []salesforcefake.User{{Username: "u1", Email: "rep@example.com"}}, 0},
		{"case-insensitive", "Rep@Example.com", []salesforcefake.User{{Username: "u1", Email: "rep@example.com"}}, 0},
		{"quote in address", "o'brien\\x@example.com", []salesforcefake.User{{Username: "u1", Email: "o'brien\\x@example.com"}}, 0},
		{"injection attempt", "x' OR Email != '", []salesforcefake.User{{Username: "u1", Email: "rep@example.com"}}, -1},
		{"inactive user", "rep@example.com", []salesforcefake.User{{Username: "u1", Email: "rep@example.com", Inactive: true}}, -1},
		{"unknown", "nobody@example.com", []salesforcefake.User{{Username: "u1", Email: "rep@example.com"}}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
			var ids []string
			for _, u := range tt.seed {
				ids = append(ids, e.fake.AddUser(u))
			}
			rec := callRecord("d-owner")
			rec.Owner.Email = tt.email
			res := deliver(t, e.connector(t), rec)
			want := ""
			if tt.want >= 0 {
				want = ids[tt.want]
			}
			if res.OwnerID != want {
				t.Errorf("OwnerID = %q, want %q", res.OwnerID, want)
			}
			task, _ := e.fake.TaskByExternalID(extField, "d-owner")
			if want == "" {
				want = e.fake.UserID(salesforcefake.IntegrationUsername) // the run-as user owns it
			}
			if task["OwnerId"] != want {
				t.Errorf("task OwnerId = %v, want %s", task["OwnerId"], want)
			}
		})
	}
}

func TestFlows(t *testing.T) {
	for _, flow := range []string{salesforce.FlowClientCredentials, salesforce.FlowJWT, salesforce.FlowRefreshToken} {
		t.Run(flow, func(t *testing.T) {
			e := setup(t, flow, salesforcefake.Options{})
			c := e.connector(t)
			deliver(t, c, callRecord("d-"+flow))
			deliver(t, c, callRecord("d2-"+flow))
			if n := e.fake.Count(salesforcefake.OpToken); n != 1 {
				t.Errorf("%d token requests, want 1 (shared through redis)", n)
			}
			// A second replica (its own connector on the same Redis) reuses the token.
			deliver(t, e.connector(t), callRecord("d3-"+flow))
			if n := e.fake.Count(salesforcefake.OpToken); n != 1 {
				t.Errorf("%d token requests after a second replica, want 1", n)
			}
		})
	}
}

func TestJWTRefusedIsBroken(t *testing.T) {
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e := setup(t, salesforce.FlowJWT, salesforcefake.Options{JWTKey: &other.PublicKey})
	_, err = e.connector(t).Deliver(t.Context(), callRecord("d-jwt"))
	if crm.ClassOf(err) != crm.Broken {
		t.Fatalf("Deliver with an unknown signing key = %v, want a Broken error", err)
	}
}

func TestInvalidSessionRecovery(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
	c := e.connector(t)
	deliver(t, c, callRecord("d-1"))
	e.fake.ExpireSessions()
	deliver(t, c, callRecord("d-2"))
	if n := e.fake.Count(salesforcefake.OpToken); n != 2 {
		t.Errorf("%d token requests, want 2 (one after the session ended)", n)
	}

	// A second 401 in a row, with the fresh token: give up for now, transiently.
	e.fake.Fail(2, salesforcefake.Fault{Status: 401, Code: "INVALID_SESSION_ID", Message: "Session expired or invalid"})
	_, err := c.Deliver(t.Context(), callRecord("d-3"))
	var ce *crm.Error
	if !errors.As(err, &ce) || ce.Class != crm.Transient || ce.Code != "INVALID_SESSION_ID" {
		t.Fatalf("Deliver after two 401s = %v, want Transient INVALID_SESSION_ID", err)
	}
	if n := e.fake.Count(salesforcefake.OpToken); n != 3 {
		t.Errorf("%d token requests, want 3 (exactly one retry with a new token)", n)
	}
	deliver(t, c, callRecord("d-3")) // and it recovers
}

func TestRefreshTokenRotationIsPersisted(t *testing.T) {
	e := setup(t, salesforce.FlowRefreshToken, salesforcefake.Options{RotateRefreshTokens: true})
	initial := e.conn.Salesforce.RefreshToken.Value()
	c := e.connector(t)
	for i := range 3 {
		deliver(t, c, callRecord("d-rot"))
		e.fake.ExpireSessions()
		if i == 1 {
			c = e.connector(t) // a restarted replica with the same config still works
		}
	}
	stored, err := crm.NewTokenStore(e.rdb, e.conn.Name).RefreshToken(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if stored == "" || stored == initial {
		t.Fatalf("stored refresh token = %q, want the rotated one (not the initial)", stored)
	}
	if n := e.fake.Count(salesforcefake.OpToken); n != 3 {
		t.Errorf("%d token requests, want 3", n)
	}
}

func TestRevokedRefreshTokenIsBroken(t *testing.T) {
	e := setup(t, salesforce.FlowRefreshToken, salesforcefake.Options{})
	c := e.connector(t)
	deliver(t, c, callRecord("d-1"))
	e.fake.RevokeRefreshTokens()
	e.fake.ExpireSessions()
	_, err := c.Deliver(t.Context(), callRecord("d-2"))
	var ce *crm.Error
	if !errors.As(err, &ce) || ce.Class != crm.Broken || !ce.Throttled() || ce.After <= 0 {
		t.Fatalf("Deliver after revocation = %#v, want Broken with a wait", err)
	}
	tokens := e.fake.Count(salesforcefake.OpToken)
	// Parked: further attempts do not hammer the token endpoint.
	if _, err := c.Deliver(t.Context(), callRecord("d-2")); crm.ClassOf(err) != crm.Broken {
		t.Fatalf("second attempt = %v, want Broken", err)
	}
	if n := e.fake.Count(salesforcefake.OpToken); n != tokens {
		t.Errorf("token endpoint called %d more times while broken", n-tokens)
	}
}

func TestErrorClasses(t *testing.T) {
	tests := []struct {
		name      string
		fault     *salesforcefake.Fault
		mutate    func(*mappers.Record)
		limitWait time.Duration
		class     crm.Class
		code      string
		after     time.Duration
		msg       string
	}{
		{name: "request limit", fault: &salesforcefake.Fault{Status: 403, Code: "REQUEST_LIMIT_EXCEEDED", Message: "TotalRequests Limit exceeded."},
			class: crm.Throttled, code: "REQUEST_LIMIT_EXCEEDED", after: 15 * time.Minute},
		{name: "request limit, configured wait", fault: &salesforcefake.Fault{Status: 403, Code: "REQUEST_LIMIT_EXCEEDED"}, limitWait: time.Hour,
			class: crm.Throttled, code: "REQUEST_LIMIT_EXCEEDED", after: time.Hour},
		{name: "500", fault: &salesforcefake.Fault{Status: 500, Code: "UNKNOWN_EXCEPTION"}, class: crm.Transient, code: "UNKNOWN_EXCEPTION"},
		{name: "503", fault: &salesforcefake.Fault{Status: 503, Code: "SERVER_UNAVAILABLE"}, class: crm.Transient, code: "SERVER_UNAVAILABLE"},
		{name: "row lock", fault: &salesforcefake.Fault{Status: 400, Code: "UNABLE_TO_LOCK_ROW"}, class: crm.Transient, code: "UNABLE_TO_LOCK_ROW"},
		{name: "api disabled", fault: &salesforcefake.Fault{Status: 403, Code: "API_DISABLED_FOR_ORG"}, class: crm.Broken, code: "API_DISABLED_FOR_ORG", after: 15 * time.Minute},
		{name: "subject too long", mutate: func(r *mappers.Record) { r.Fields[0].Value = strings.Repeat("あ", 256) },
			class: crm.Permanent, code: "STRING_TOO_LONG", msg: "Subject: data value too large"},
		{name: "description too long", mutate: func(r *mappers.Record) { r.Fields[6].Value = strings.Repeat("x", 32001) },
			class: crm.Permanent, code: "STRING_TOO_LONG", msg: "(max length=32000)"},
		{name: "unknown field", mutate: func(r *mappers.Record) { r.Fields = append(r.Fields, mappers.Field{Name: "Nope__c", Value: "x"}) },
			class: crm.Permanent, code: "INVALID_FIELD", msg: "Nope__c"},
		{name: "bad call type", mutate: func(r *mappers.Record) { r.Fields[2].Value = "Sideways" },
			class: crm.Permanent, code: "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"},
		{name: "fractional duration", mutate: func(r *mappers.Record) { r.Fields[3].Value = 1.5 },
			class: crm.Permanent, code: "JSON_PARSER_ERROR", msg: "CallDurationInSeconds"},
		{name: "mapping sets Id", mutate: func(r *mappers.Record) { r.Fields = append(r.Fields, mappers.Field{Name: "Id", Value: "x"}) },
			class: crm.Permanent},
		{name: "unsupported value", mutate: func(r *mappers.Record) { r.Fields[0].Value = []string{"x"} },
			class: crm.Permanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
			e.conn.Salesforce.RequestLimitWait = tt.limitWait
			c := e.connector(t)
			rec := callRecord("d-err")
			rec.Owner, rec.Contact = nil, nil // one request after the token: the upsert
			if tt.mutate != nil {
				tt.mutate(rec)
			}
			if tt.fault != nil {
				e.fake.Fail(1, *tt.fault)
			}
			_, err := c.Deliver(t.Context(), rec)
			var ce *crm.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Deliver = %v, want a *crm.Error", err)
			}
			if ce.Class != tt.class || ce.Code != tt.code || ce.After != tt.after {
				t.Errorf("got class %v code %q after %v, want %v %q %v (%v)", ce.Class, ce.Code, ce.After, tt.class, tt.code, tt.after, err)
			}
			if !strings.Contains(ce.Msg, tt.msg) {
				t.Errorf("message %q does not contain %q", ce.Msg, tt.msg)
			}
			if got := errors.Is(err, asynq.SkipRetry); got != (tt.class == crm.Permanent) {
				t.Errorf("errors.Is(err, asynq.SkipRetry) = %v for class %v", got, tt.class)
			}
		})
	}
}

// A cached contact deleted in Salesforce does not dead-letter the call: the cache entry is
// dropped and the retry looks the caller up again.
func TestStaleCachedContactIsLookedUpAgain(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
	c := e.connector(t)
	merged := e.fake.AddContact(salesforcefake.Person{LastName: "A", Phone: "0312345678"})
	if res := deliver(t, c, callRecord("d-1")); res.ContactID != merged {
		t.Fatalf("ContactID = %s, want %s", res.ContactID, merged)
	}
	// A merge: the cached contact is deleted, the survivor holds the number.
	e.fake.Delete(merged)
	survivor := e.fake.AddContact(salesforcefake.Person{LastName: "A", Phone: "0312345678"})

	_, err := c.Deliver(t.Context(), callRecord("d-2"))
	var ce *crm.Error
	if !errors.As(err, &ce) || ce.Class != crm.Transient || ce.Code != "ENTITY_IS_DELETED" {
		t.Fatalf("Deliver with a stale cached contact = %v, want Transient ENTITY_IS_DELETED", err)
	}
	if res := deliver(t, c, callRecord("d-2")); res.ContactID != survivor {
		t.Errorf("retry ContactID = %s, want the survivor %s", res.ContactID, survivor)
	}
}

func TestAPIUsageGauge(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{APILimit: 5000})
	e.fake.SetAPIUsage(1234)
	c := e.connector(t)
	rec := callRecord("d-1")
	rec.Owner, rec.Contact = nil, nil
	deliver(t, c, rec) // the upsert alone
	m, _ := salesforce.NewMetrics(e.reg)
	if got := testutil.ToFloat64(m.APIUsage.WithLabelValues("sf")); got != 1235 {
		t.Errorf("api_usage = %v, want 1235", got)
	}
	if got := testutil.ToFloat64(m.APILimit.WithLabelValues("sf")); got != 5000 {
		t.Errorf("api_limit = %v, want 5000", got)
	}
}

func TestOldAPIVersionUpdateAnswers204(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
	e.conn.Salesforce.APIVersion = "45.0"
	c := e.connector(t)
	first := deliver(t, c, callRecord("d-1"))
	second := deliver(t, c, callRecord("d-1"))
	if second.Created || second.ID != first.ID {
		t.Fatalf("update on v45.0 = %+v, want update of %s", second, first.ID)
	}
	if ups := e.fake.Upserts(); ups[1].Status != 204 {
		t.Errorf("fake answered %d, want 204 for v45.0", ups[1].Status)
	}
}

func TestSearchTerms(t *testing.T) {
	got := salesforce.SOSL(&mappers.ContactLookup{E164: "+81312345678", National: "0312345678"})
	want := `FIND {0312345678 OR \+81312345678} IN PHONE FIELDS RETURNING Contact(Id,OwnerId,LastModifiedDate),Lead(Id,OwnerId,LastModifiedDate)`
	if got != want {
		t.Errorf("SOSL =\n%s\nwant\n%s", got, want)
	}
	if got := salesforce.SearchTerms(&mappers.ContactLookup{Raw: "050-1111-2222"}); !cmp.Equal(got, []string{"05011112222"}) {
		t.Errorf("SearchTerms(raw only) = %v", got)
	}
	if got := salesforce.SearchTerms(&mappers.ContactLookup{}); len(got) != 0 {
		t.Errorf("SearchTerms(empty) = %v, want none", got)
	}
}

func decodeJSON(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }

func TestRecordLink(t *testing.T) {
	for _, tt := range []struct{ template, want string }{
		{salesforce.DefaultRecordURL, "https://acme.my.salesforce.com/lightning/r/Task/00T5g000001abcD/view"},
		{"https://acme.lightning.force.com/{id}", "https://acme.lightning.force.com/00T5g000001abcD"},
	} {
		if got := salesforce.RecordLink(tt.template, "https://acme.my.salesforce.com/", "Task", "00T5g000001abcD"); got != tt.want {
			t.Errorf("RecordLink(%q) = %q, want %q", tt.template, got, tt.want)
		}
	}
	if got := salesforce.RecordLink(salesforce.DefaultRecordURL, "https://x", "Task", ""); got != "" {
		t.Errorf("no id, link %q", got)
	}
}
