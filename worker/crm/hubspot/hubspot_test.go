package hubspot

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot/hubspotfake"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

const pat = "pat-na1-test"

var callTime = time.Date(2026, 3, 4, 5, 6, 7, 890e6, time.FixedZone("JST", 9*3600))

type env struct {
	fake *hubspotfake.Server
	rdb  redis.UniversalClient
}

func newEnv(t *testing.T) *env {
	t.Helper()
	f := hubspotfake.New(t, hubspotfake.Options{})
	f.AddPrivateAppToken(pat)
	return &env{fake: f, rdb: redistest.Start(t).Client()}
}

func (e *env) connector(t *testing.T, mut func(*Options)) *Connector {
	t.Helper()
	o := Options{Options: crm.Options{
		Connection: config.Connection{Name: "hs", Type: "hubspot", HubSpot: &config.HubSpot{
			BaseURL: e.fake.URL, PrivateAppToken: config.FromValue(pat)}},
		Redis: e.rdb,
	}}
	if mut != nil {
		mut(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// record is what a mapping renders for one answered inbound call.
func record(detailID, body string) *mappers.Record {
	return &mappers.Record{
		Object:     "calls",
		ExternalID: mappers.ExternalID{Field: "hs_call_external_id", Value: detailID},
		Fields: []mappers.Field{
			{Name: "hs_timestamp", Value: callTime},
			{Name: "hs_call_title", Value: "MiiTel inbound call"},
			{Name: "hs_call_body", Value: body, KeepLonger: true},
			{Name: "hs_call_direction", Value: "INBOUND"},
			{Name: "hs_call_duration", Value: int64(83000)},
			{Name: "hs_call_status", Value: "COMPLETED"},
			{Name: "hs_call_from_number", Value: "+81312345678"},
			{Name: "hs_call_disposition", Value: "f240bbac-87c9-4f6e-bf70-924b57d47db7", CreateOnly: true},
		},
		Contact: &mappers.ContactLookup{E164: "+81312345678", National: "0312345678", Raw: "03-1234-5678", OnMultiple: "most_recent", OnNone: "unassociated"},
		Owner:   &mappers.OwnerLookup{Email: "Rep@Example.com", Field: "hubspot_owner_id"},
	}
}

func deliver(t *testing.T, c *Connector, rec *mappers.Record) crm.Result {
	t.Helper()
	res, err := c.Deliver(context.Background(), rec)
	if err != nil {
		t.Fatalf("Deliver(%s): %v", rec.ExternalID.Value, err)
	}
	return res
}

func TestDeliverCreatesOnceThenUpdates(t *testing.T) {
	e := newEnv(t)
	owner := e.fake.AddOwner("rep@example.com")
	contact := e.fake.AddContact(map[string]string{"phone": "+81 3-1234-5678", "firstname": "Taro"})
	c := e.connector(t, nil)

	first := deliver(t, c, record("d1", "memo"))
	second := deliver(t, c, record("d1", "memo + transcript"))

	link := fmt.Sprintf("https://app.hubspot.com/contacts/%d/record/0-48/%s", e.fake.PortalID(), first.ID)
	if diff := cmp.Diff(crm.Result{ID: first.ID, Created: true, ContactID: contact, OwnerID: owner, URL: link}, first); diff != "" {
		t.Errorf("first result (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(crm.Result{ID: first.ID, Created: false, ContactID: contact, OwnerID: owner, URL: link}, second); diff != "" {
		t.Errorf("second result (-want +got):\n%s", diff)
	}
	calls := e.fake.Calls()
	if len(calls) != 1 {
		t.Fatalf("calls in HubSpot = %d, want 1", len(calls))
	}
	got := calls[0]
	want := map[string]string{
		"hs_timestamp": "2026-03-03T20:06:07.890Z", "hs_call_title": "MiiTel inbound call", "hs_call_body": "memo + transcript",
		"hs_call_direction": "INBOUND", "hs_call_duration": "83000", "hs_call_status": "COMPLETED",
		"hs_call_from_number": "+81312345678", "hs_call_disposition": "f240bbac-87c9-4f6e-bf70-924b57d47db7",
		"hs_call_external_id": "d1", "hubspot_owner_id": owner,
	}
	for k, v := range want {
		if got.Properties[k] != v {
			t.Errorf("property %s = %q, want %q", k, got.Properties[k], v)
		}
	}
	if diff := cmp.Diff([]string{contact}, got.Contacts); diff != "" {
		t.Errorf("associations (-want +got):\n%s", diff)
	}
	if got.Writes != 2 {
		t.Errorf("writes = %d, want create + update", got.Writes)
	}
	// The create-only disposition went with the create only.
	for _, r := range e.fake.Requests() {
		if r.Route == "POST /crm/v3/objects/calls/batch/update" && strings.Contains(r.Body, "hs_call_disposition") {
			t.Errorf("update sent a create-only field: %s", r.Body)
		}
	}
	if n := e.fake.Count("POST /crm/v3/objects/calls/batch/create"); n != 1 {
		t.Errorf("creates = %d, want 1", n)
	}
}

func TestDeliverUniqueProperty(t *testing.T) {
	e := newEnv(t)
	e.fake.DefineCallProperty("miitel_detail_id", true)
	contact := e.fake.AddContact(map[string]string{"phone": "03-1234-5678"})
	c := e.connector(t, func(o *Options) { o.Connection.HubSpot.UniqueProperty = "miitel_detail_id" })

	first := deliver(t, c, record("d1", "memo"))
	second := deliver(t, c, record("d1", "memo 2"))
	if !first.Created || second.Created || first.ID != second.ID || first.ContactID != contact {
		t.Errorf("results = %+v, %+v", first, second)
	}
	calls := e.fake.Calls()
	if len(calls) != 1 || calls[0].Properties["miitel_detail_id"] != "d1" || calls[0].Properties["hs_call_external_id"] != "d1" || calls[0].Properties["hs_call_body"] != "memo 2" {
		t.Fatalf("calls = %+v", calls)
	}
	// The first event is created with the association inline (once the property read says
	// it has unique values), the second upserted by the property.
	if diff := cmp.Diff(map[string]int{"upsert": 1, "associate": 0, "create": 1, "property": 1}, map[string]int{
		"upsert":    e.fake.Count("POST /crm/v3/objects/calls/batch/upsert"),
		"associate": e.fake.Count("POST /crm/v4/associations/calls/contacts/batch/create"),
		"create":    e.fake.Count("POST /crm/v3/objects/calls/batch/create"),
		"property":  e.fake.Count("GET /crm/v3/properties/calls/{name}"),
	}); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestDeliverUniquePropertyPerItemError(t *testing.T) {
	e := newEnv(t)
	e.fake.DefineCallProperty("miitel_detail_id", true)
	c := e.connector(t, func(o *Options) { o.Connection.HubSpot.UniqueProperty = "miitel_detail_id" })
	rec := record("d1", "memo")
	rec.Fields = append(rec.Fields, mappers.Field{Name: "hs_call_direction", Value: "SIDEWAYS"})
	_, err := c.Deliver(context.Background(), rec)
	var ce *crm.Error
	if !errors.As(err, &ce) || ce.Class != crm.Permanent || ce.Status != http.StatusMultiStatus || !strings.Contains(ce.Msg, "INVALID_OPTION") {
		t.Fatalf("err = %v, want permanent 207 per-item validation error", err)
	}
}

// dropAfter loses the response to the first request matching, after the server handled it:
// the create happened, the worker never learned its id (a crash between write and map).
type dropAfter struct {
	match   func(*http.Request) bool
	mu      sync.Mutex
	dropped bool
}

func (d *dropAfter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil && !d.dropped && d.match(r) {
		d.dropped = true
		resp.Body.Close()
		return nil, errors.New("connection reset by peer")
	}
	return resp, err
}

func isCreate(r *http.Request) bool {
	return r.Method == "POST" && r.URL.Path == "/crm/v3/objects/calls/batch/create"
}

func TestCrashBetweenCreateAndIDMapRecovered(t *testing.T) {
	e := newEnv(t)
	c := e.connector(t, func(o *Options) {
		o.HTTPClient = &http.Client{Transport: &dropAfter{match: isCreate}}
		o.SearchLag = time.Nanosecond // the fake's index has no lag here
	})
	_, err := c.Deliver(context.Background(), record("d1", "memo"))
	if crm.ClassOf(err) != crm.Transient {
		t.Fatalf("first attempt: err = %v, want transient (outcome unknown)", err)
	}
	res := deliver(t, c, record("d1", "memo 2"))
	if res.Created {
		t.Error("retry reported a create; it must adopt the call the lost attempt created")
	}
	calls := e.fake.Calls()
	if len(calls) != 1 || calls[0].ID != res.ID || calls[0].Properties["hs_call_body"] != "memo 2" {
		t.Fatalf("calls = %+v, want the one adopted and updated", calls)
	}
	if n := e.fake.Count("POST /crm/v3/objects/calls/search"); n != 1 {
		t.Errorf("call searches = %d, want 1", n)
	}
	// Later events go straight to the stored id.
	deliver(t, c, record("d1", "memo 3"))
	if n := e.fake.Count("POST /crm/v3/objects/calls/search"); n != 1 || len(e.fake.Calls()) != 1 {
		t.Errorf("after adoption: searches %d, calls %d", n, len(e.fake.Calls()))
	}
}

func TestCrashRetryWaitsForSearchIndex(t *testing.T) {
	e := newEnv(t)
	e.fake.SetSearchLag(time.Hour)
	c := e.connector(t, func(o *Options) {
		o.HTTPClient = &http.Client{Transport: &dropAfter{match: isCreate}}
		o.SearchLag = time.Hour
	})
	_, _ = c.Deliver(context.Background(), record("d1", "memo"))
	_, err := c.Deliver(context.Background(), record("d1", "memo"))
	var ce *crm.Error
	if !errors.As(err, &ce) || ce.Class != crm.Transient || ce.Code != "PENDING_CREATE" || ce.After <= 59*time.Minute {
		t.Fatalf("err = %v, want transient PENDING_CREATE waiting about an hour", err)
	}
	if n := e.fake.Count("POST /crm/v3/objects/calls/search"); n != 0 {
		t.Errorf("searched %d times before the index could hold the call", n)
	}
	if len(e.fake.Calls()) != 1 {
		t.Errorf("calls = %d, want 1 (no second create)", len(e.fake.Calls()))
	}
}

func TestContactPolicies(t *testing.T) {
	tests := []struct {
		name        string
		contacts    []map[string]string
		onMultiple  string
		onNone      string
		wantContact int // index into contacts; -1 none; -2 a created one
	}{
		{"one match by national number", []map[string]string{{"phone": "03-1234-5678"}}, "most_recent", "unassociated", 0},
		{"one match by +81 number", []map[string]string{{"mobilephone": "+81 3 1234 5678"}}, "most_recent", "unassociated", 0},
		{"several: most recently modified", []map[string]string{
			{"phone": "0312345678", "lastmodifieddate": "2026-01-01T00:00:00Z"},
			{"phone": "+81312345678", "lastmodifieddate": "2026-02-01T00:00:00Z"},
			{"phone": "03-1234-5678", "lastmodifieddate": "2025-12-01T00:00:00Z"}}, "most_recent", "unassociated", 1},
		{"several: skip", []map[string]string{{"phone": "0312345678"}, {"phone": "+81312345678"}}, "skip", "unassociated", -1},
		{"other numbers only", []map[string]string{{"phone": "0399999999"}}, "most_recent", "unassociated", -1},
		{"none: create contact", nil, "most_recent", "create_contact", -2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var ids []string
			for _, p := range tt.contacts {
				ids = append(ids, e.fake.AddContact(p))
			}
			c := e.connector(t, nil)
			rec := record("d1", "memo")
			rec.Owner = nil
			rec.Contact.OnMultiple, rec.Contact.OnNone = tt.onMultiple, tt.onNone
			res := deliver(t, c, rec)
			call := e.fake.Calls()[0]
			switch tt.wantContact {
			case -1:
				if res.ContactID != "" || len(call.Contacts) != 0 {
					t.Errorf("associated with %q / %v, want none", res.ContactID, call.Contacts)
				}
			case -2:
				all := e.fake.Contacts()
				if len(all) != 1 || all[0].Properties["phone"] != "+81312345678" || res.ContactID != all[0].ID {
					t.Fatalf("contacts = %+v, result %+v; want one created with the caller's number", all, res)
				}
				if diff := cmp.Diff([]string{res.ContactID}, call.Contacts); diff != "" {
					t.Errorf("associations (-want +got):\n%s", diff)
				}
			default:
				want := ids[tt.wantContact]
				if res.ContactID != want || !cmp.Equal([]string{want}, call.Contacts) {
					t.Errorf("contact = %q, associations %v; want %q", res.ContactID, call.Contacts, want)
				}
			}
		})
	}
}

func TestOwnerMatch(t *testing.T) {
	e := newEnv(t)
	e.fake.AddOwner("someone@example.com")
	rep := e.fake.AddOwner("rep@example.com")
	c := e.connector(t, nil)
	if res := deliver(t, c, record("d1", "memo")); res.OwnerID != rep {
		t.Errorf("owner = %q, want %q (e-mail matched case-insensitively)", res.OwnerID, rep)
	}
	rec := record("d2", "memo")
	rec.Owner.Email = "stranger@example.com"
	res := deliver(t, c, rec)
	call, _ := e.fake.Call(res.ID)
	if res.OwnerID != "" || call.Properties["hubspot_owner_id"] != "" {
		t.Errorf("unknown rep got owner %q / %q", res.OwnerID, call.Properties["hubspot_owner_id"])
	}
}

func TestLookupsAreCached(t *testing.T) {
	e := newEnv(t)
	e.fake.AddOwner("rep@example.com")
	e.fake.AddContact(map[string]string{"phone": "0312345678"})
	c := e.connector(t, nil)
	// A second replica shares the cache through Redis.
	c2 := e.connector(t, nil)
	deliver(t, c, record("d1", "memo"))
	deliver(t, c2, record("d2", "memo"))
	deliver(t, c, record("d3", "memo"))
	if n := e.fake.Count("POST /crm/v3/objects/contacts/search"); n != 1 {
		t.Errorf("contact searches = %d, want 1", n)
	}
	if n := e.fake.Count("GET /crm/v3/owners"); n != 1 {
		t.Errorf("owner lookups = %d, want 1", n)
	}
	// Misses are cached too.
	rec := record("d4", "memo")
	rec.Contact.E164, rec.Contact.National = "+81399999999", "0399999999"
	deliver(t, c, rec)
	deliver(t, c, func() *mappers.Record { r := record("d5", "memo"); r.Contact = rec.Contact; return r }())
	if n := e.fake.Count("POST /crm/v3/objects/contacts/search"); n != 2 {
		t.Errorf("contact searches after a repeated miss = %d, want 2", n)
	}
}

// retryLikeAsynq delivers until success, as the queue would, and fails the test on a
// permanent error or after too many attempts.
func retryLikeAsynq(t *testing.T, c *Connector, rec *mappers.Record) (res crm.Result, throttled int) {
	t.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		res, err := c.Deliver(context.Background(), rec)
		if err == nil {
			return res, throttled
		}
		switch crm.ClassOf(err) {
		case crm.Throttled:
			throttled++
		case crm.Transient:
		default:
			t.Fatalf("Deliver(%s): %v", rec.ExternalID.Value, err)
		}
	}
	t.Fatalf("Deliver(%s) did not succeed in 50 attempts", rec.ExternalID.Value)
	return res, throttled
}

func Test429StormEveryCallOnce(t *testing.T) {
	e := newEnv(t)
	e.fake.AddOwner("rep@example.com")
	e.fake.AddContact(map[string]string{"phone": "0312345678"})
	// Our own budget is set high so the test is not paced by it; the fake's storm decides.
	c := e.connector(t, func(o *Options) { o.Connection.RateLimit.Requests = 1000 })
	e.fake.Inject429(25)
	const n = 12
	throttled := 0
	for i := range n {
		_, th := retryLikeAsynq(t, c, record(fmt.Sprintf("d%d", i), "memo"))
		throttled += th
	}
	if throttled == 0 {
		t.Error("the storm produced no throttled attempt")
	}
	seen := map[string]int{}
	for _, call := range e.fake.Calls() {
		seen[call.Properties["hs_call_external_id"]]++
	}
	if len(seen) != n {
		t.Errorf("distinct calls = %d, want %d", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("call %s written %d times", id, k)
		}
	}
}

func TestTransientStatuses(t *testing.T) {
	for _, status := range []int{502, 503, 504, 423, 477, 500} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			e := newEnv(t)
			// A 5xx leaves the create's outcome unknown: the retry searches at once here.
			c := e.connector(t, func(o *Options) { o.SearchLag = time.Nanosecond })
			rec := record("d1", "memo")
			rec.Contact, rec.Owner = nil, nil
			e.fake.InjectStatus(status)
			_, err := c.Deliver(context.Background(), rec)
			if crm.ClassOf(err) != crm.Transient {
				t.Fatalf("err = %v, want transient", err)
			}
			deliver(t, c, rec)
			if len(e.fake.Calls()) != 1 {
				t.Errorf("calls = %d, want 1", len(e.fake.Calls()))
			}
		})
	}
}

func TestValidationErrorsArePermanent(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*mappers.Record)
		want   string
	}{
		{"missing hs_timestamp", func(r *mappers.Record) { r.Fields = r.Fields[1:] }, "REQUIRED_PROPERTY"},
		{"unknown property", func(r *mappers.Record) { r.Fields = append(r.Fields, mappers.Field{Name: "miitel_nope", Value: "x"}) }, "PROPERTY_DOESNT_EXIST"},
		{"duration not ms integer", func(r *mappers.Record) { r.Fields[4].Value = 83.5 }, "INVALID_INTEGER"},
		{"text too long", func(r *mappers.Record) { r.Fields[2].Value = strings.Repeat("あ", 65537) }, "INVALID_LENGTH"},
		{"unsupported value type", func(r *mappers.Record) { r.Fields[2].Value = []string{"x"} }, "unsupported value type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			c := e.connector(t, nil)
			rec := record("d1", "memo")
			rec.Contact, rec.Owner = nil, nil
			tt.mutate(rec)
			_, err := c.Deliver(context.Background(), rec)
			var ce *crm.Error
			if !errors.As(err, &ce) || ce.Class != crm.Permanent || !strings.Contains(ce.Msg, tt.want) {
				t.Fatalf("err = %v, want permanent mentioning %s", err, tt.want)
			}
			if !errors.Is(err, asynq.SkipRetry) {
				t.Error("permanent error does not reach asynq.SkipRetry")
			}
			// Nothing was created, so a fixed mapping replayed later creates at once.
			if _, ok, _ := crm.NewIDMap(e.rdb, "hs", 0, 0).Get(context.Background(), "calls", "d1"); ok {
				t.Error("a pending marker survived a refused create")
			}
		})
	}
}

func oauthOptions(e *env, refresh string, reg prometheus.Registerer) func(*Options) {
	return func(o *Options) {
		o.Connection.HubSpot = &config.HubSpot{BaseURL: e.fake.URL, TokenURL: e.fake.TokenURL(),
			ClientID: "client-id", ClientSecret: config.FromValue("client-secret"), RefreshToken: config.FromValue(refresh)}
		o.Registerer = reg
	}
}

func TestOAuthTokenExpiryMidRun(t *testing.T) {
	e := newEnv(t)
	c := e.connector(t, oauthOptions(e, e.fake.IssueRefreshToken(), nil))
	rec := func(id string) *mappers.Record { r := record(id, "memo"); r.Contact, r.Owner = nil, nil; return r }
	deliver(t, c, rec("d1"))
	if n := e.fake.TokenRequests(); n != 1 {
		t.Fatalf("token requests = %d, want 1", n)
	}
	deliver(t, c, rec("d2")) // the shared token is reused
	e.fake.ExpireAccessTokens()
	// HubSpot answers 401 EXPIRED_AUTHENTICATION: the attempt is retried with a new token.
	retryLikeAsynq(t, c, rec("d3"))
	retryLikeAsynq(t, c, rec("d4"))
	if n := e.fake.TokenRequests(); n != 2 {
		t.Errorf("token requests = %d, want 2 (one refresh after expiry)", n)
	}
	if n := len(e.fake.Calls()); n != 4 {
		t.Errorf("calls = %d, want 4, each once", n)
	}
}

func TestOAuthRevokedRefreshTokenBreaksConnection(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	c := e.connector(t, oauthOptions(e, e.fake.IssueRefreshToken(), reg))
	e.fake.RevokeRefreshTokens()
	rec := record("d1", "memo")
	for range 3 {
		_, err := c.Deliver(context.Background(), rec)
		var ce *crm.Error
		if !errors.As(err, &ce) || ce.Class != crm.Broken || !ce.Throttled() || ce.After <= 0 {
			t.Fatalf("err = %v, want Broken (parked, not a failed attempt)", err)
		}
	}
	if n := e.fake.TokenRequests(); n != 1 {
		t.Errorf("token requests = %d, want 1 (later tasks park without asking)", n)
	}
	if n := len(e.fake.Requests()); n != 0 {
		t.Errorf("API requests = %d, want 0", n)
	}
	if got := testutil.ToFloat64(mustMetrics(t, reg).BrokenTotal.WithLabelValues("hs")); got != 1 {
		t.Errorf("mcs_crm_connection_broken_total = %v, want 1", got)
	}
	// An admin reconnects (oauth connect stores a new refresh token, as here): delivery resumes.
	if err := crm.NewTokenStore(e.rdb, "hs").SaveRefreshToken(context.Background(), e.fake.IssueRefreshToken()); err != nil {
		t.Fatal(err)
	}
	deliver(t, c, rec)
}

func mustMetrics(t *testing.T, reg prometheus.Registerer) *crm.Metrics {
	m, err := crm.NewMetrics(reg) // returns the collectors already registered
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRateLimitSharedByTwoConnectors(t *testing.T) {
	e := newEnv(t)
	limited := func(o *Options) {
		o.Connection.RateLimit = config.RateLimit{Requests: 4, Per: time.Hour} // burst 1, then 3 per hour
		o.RateLimitMaxWait = time.Millisecond
	}
	a, b := e.connector(t, limited), e.connector(t, limited)
	var throttled *crm.Error
	for i := range 6 {
		c := a
		if i%2 == 1 {
			c = b
		}
		rec := record(fmt.Sprintf("d%d", i), "memo")
		rec.Contact, rec.Owner = nil, nil
		if _, err := c.Deliver(context.Background(), rec); err != nil && !errors.As(err, &throttled) {
			t.Fatalf("Deliver: %v", err)
		}
	}
	if n := len(e.fake.Requests()); n != 1 {
		t.Errorf("HubSpot received %d requests, want the shared burst of 1", n)
	}
	if throttled == nil || throttled.Class != crm.Throttled || throttled.Code != "LOCAL_RATE_LIMIT" || throttled.After <= 0 {
		t.Errorf("throttled = %v, want a local Throttled error with After", throttled)
	}
}
