package hubspot

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/mappers"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/hubspot/hubspotfake"
)

const uniqueProp = "miitel_detail_id"

func checkLines(t *testing.T, c *Connector, o crm.CheckOptions) map[string]crm.CheckResult {
	t.Helper()
	out := map[string]crm.CheckResult{}
	for _, r := range c.Check(t.Context(), o) {
		if r.Connection != "hs" {
			t.Errorf("line %s names connection %q", r.Name, r.Connection)
		}
		if _, dup := out[r.Name]; dup {
			t.Errorf("two %s lines", r.Name)
		}
		out[r.Name] = r
	}
	return out
}

func statuses(lines map[string]crm.CheckResult) map[string]string {
	out := map[string]string{}
	for k, r := range lines {
		out[k] = r.Status.String()
	}
	return out
}

func withUnique(o *Options) { o.Connection.HubSpot.UniqueProperty = uniqueProp }

// noWrites fails the test when the fake received anything but reads.
func noWrites(t *testing.T, f *hubspotfake.Server) {
	t.Helper()
	for _, r := range f.Requests() {
		read := r.Method == http.MethodGet || strings.HasSuffix(r.Path, "/search") || strings.Contains(r.Path, "access-token-info")
		if !read {
			t.Errorf("the check wrote: %s", r.Route)
		}
	}
}

// A private app and an OAuth app set up as docs/crm-hubspot.md says pass every line.
func TestCheckPasses(t *testing.T) {
	for name, mut := range map[string]func(*env) func(*Options){
		"private app": func(*env) func(*Options) { return withUnique },
		"oauth app": func(e *env) func(*Options) {
			return func(o *Options) { oauthOptions(e, e.fake.IssueRefreshToken(), nil)(o); withUnique(o) }
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.fake.DefineCallProperty(uniqueProp, true)
			owner := e.fake.AddOwner("rep@example.com")
			lines := checkLines(t, e.connector(t, mut(e)), crm.CheckOptions{RecordKeys: []string{uniqueProp, ExternalIDProperty}, OwnerEmail: "Rep@Example.com"})
			want := map[string]string{"token": "pass", "permissions": "pass", "record_key": "pass", "owner_lookup": "pass"}
			if diff := cmp.Diff(want, statuses(lines)); diff != "" {
				t.Fatalf("check (-want +got):\n%s\n%+v", diff, lines)
			}
			if d := lines["record_key"].Detail; d != "call property miitel_detail_id exists with unique values" {
				t.Errorf("record_key detail %q", d)
			}
			if d := lines["permissions"].Detail; !strings.Contains(d, "crm.objects.owners.read") {
				t.Errorf("permissions detail %q lacks the scopes", d)
			}
			if d := lines["owner_lookup"].Detail; !strings.Contains(d, owner) {
				t.Errorf("owner_lookup detail %q lacks the owner id", d)
			}
			noWrites(t, e.fake)
		})
	}
	// Without a unique property and an owner e-mail those lines are skipped, saying why.
	e := newEnv(t)
	lines := checkLines(t, e.connector(t, nil), crm.CheckOptions{})
	if r := lines["record_key"]; r.Status != crm.CheckSkipped || !strings.Contains(r.Detail, "id map") {
		t.Errorf("record_key without unique_property = %+v, want skip naming the id map", r)
	}
	if st := lines["owner_lookup"].Status; st != crm.CheckSkipped {
		t.Errorf("owner_lookup without an e-mail = %v, want skip", st)
	}
}

// Each failure is named with its fix.
func TestCheckFailures(t *testing.T) {
	for _, tt := range []struct {
		name    string
		setup   func(*env) func(*Options)
		owner   string
		line    string
		detail  string
		fix     []string
		unknown []string // lines that could not be checked because of this failure
	}{
		{name: "private-app token rotated", setup: func(e *env) func(*Options) {
			return func(o *Options) {
				o.Connection.HubSpot.PrivateAppToken = config.FromValue("pat-na1-old")
				withUnique(o)
			}
		}, line: "token", detail: "does not accept the private-app token", fix: []string{"private_app_token", DocPrivateApp},
			unknown: []string{"permissions", "record_key"}},
		{name: "private app without the owners scope", setup: func(e *env) func(*Options) {
			e.fake.AddPrivateAppTokenWithScopes("pat-na1-narrow", "crm.objects.contacts.read", "crm.objects.contacts.write")
			return func(o *Options) { o.Connection.HubSpot.PrivateAppToken = config.FromValue("pat-na1-narrow") }
		}, line: "permissions", detail: "lacks the scope(s) crm.objects.owners.read", fix: []string{"Private Apps", "tick crm.objects.owners.read", DocPrivateApp}},
		{name: "oauth app without contacts write", setup: func(e *env) func(*Options) {
			e.fake.GrantOAuthScopes("crm.objects.contacts.read", "crm.objects.owners.read", "oauth")
			return oauthOptions(e, e.fake.IssueRefreshToken(), nil)
		}, line: "permissions", detail: "crm.objects.contacts.write", fix: []string{"oauth connect hubspot --connection hs", DocOAuthApp}},
		{name: "oauth grant revoked", setup: func(e *env) func(*Options) {
			o := oauthOptions(e, e.fake.IssueRefreshToken(), nil)
			e.fake.RevokeRefreshTokens()
			return o
		}, owner: "rep@example.com", line: "token", detail: "refused", fix: []string{"oauth connect hubspot --connection hs", DocOAuthApp},
			unknown: []string{"permissions", "owner_lookup"}},
		{name: "oauth client secret wrong", setup: func(e *env) func(*Options) {
			return func(o *Options) {
				oauthOptions(e, e.fake.IssueRefreshToken(), nil)(o)
				o.Connection.HubSpot.ClientSecret = config.FromValue("wrong")
			}
		}, line: "token", detail: "BAD_CLIENT_ID", fix: []string{"client_secret", DocOAuthApp}},
		{name: "unique property missing", setup: func(*env) func(*Options) { return withUnique },
			line: "record_key", detail: "call property miitel_detail_id does not exist",
			fix: []string{"create the call property miitel_detail_id with hasUniqueValue: true", "POST /crm/v3/properties/calls", DocRecordKey}},
		{name: "unique property not unique", setup: func(e *env) func(*Options) {
			e.fake.DefineCallProperty(uniqueProp, false)
			return withUnique
		}, line: "record_key", detail: "hasUniqueValue is false", fix: []string{"hasUniqueValue: true", DocRecordKey}},
		{name: "no such owner", setup: func(*env) func(*Options) { return nil }, owner: "nobody@example.com",
			line: "owner_lookup", detail: "no HubSpot user (owner) has the e-mail nobody@example.com", fix: []string{"MiiTel login e-mail", DocOwners}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			lines := checkLines(t, e.connector(t, tt.setup(e)), crm.CheckOptions{OwnerEmail: tt.owner})
			r, ok := lines[tt.line]
			if !ok {
				t.Fatalf("no %s line in %+v", tt.line, lines)
			}
			if r.Status != crm.CheckFail || !strings.Contains(r.Detail, tt.detail) {
				t.Errorf("%s = %v %q, want FAIL mentioning %q", tt.line, r.Status, r.Detail, tt.detail)
			}
			for _, f := range tt.fix {
				if !strings.Contains(r.Fix, f) {
					t.Errorf("fix %q lacks %q", r.Fix, f)
				}
			}
			for _, u := range tt.unknown {
				if lines[u].Status != crm.CheckUnknown {
					t.Errorf("%s = %v, want unknown (not checkable without a token)", u, lines[u].Status)
				}
			}
			for name, l := range lines {
				if strings.Contains(l.Detail+l.Fix, "at-") || strings.Contains(l.Detail+l.Fix, pat) {
					t.Errorf("%s line shows a token: %+v", name, l)
				}
			}
		})
	}
}

// HubSpot out of reach, or answering 5xx, is unknown, never a failure.
func TestCheckUnknownWhenUnreachable(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	t.Run("network, private app", func(t *testing.T) {
		e := newEnv(t)
		lines := checkLines(t, e.connector(t, func(o *Options) { o.Connection.HubSpot.BaseURL = dead.URL; withUnique(o) }),
			crm.CheckOptions{OwnerEmail: "rep@example.com"})
		for name, r := range lines {
			if r.Status != crm.CheckUnknown {
				t.Errorf("%s = %v %q, want unknown", name, r.Status, r.Detail)
			}
		}
	})
	t.Run("network, oauth token endpoint", func(t *testing.T) {
		e := newEnv(t)
		lines := checkLines(t, e.connector(t, func(o *Options) {
			oauthOptions(e, e.fake.IssueRefreshToken(), nil)(o)
			o.Connection.HubSpot.TokenURL = dead.URL + "/oauth/v1/token"
		}), crm.CheckOptions{})
		if r := lines["token"]; r.Status != crm.CheckUnknown {
			t.Errorf("token = %+v, want unknown", r)
		}
	})
	t.Run("5xx", func(t *testing.T) {
		e := newEnv(t)
		e.fake.AddOwner("rep@example.com")
		c := e.connector(t, withUnique)
		e.fake.InjectStatus(503, 503, 503, 503, 503, 503, 503, 503, 503, 503)
		lines := checkLines(t, c, crm.CheckOptions{OwnerEmail: "rep@example.com"})
		want := map[string]string{"token": "unknown", "permissions": "unknown", "record_key": "unknown", "owner_lookup": "unknown"}
		if diff := cmp.Diff(want, statuses(lines)); diff != "" {
			t.Errorf("check (-want +got):\n%s", diff)
		}
	})
}

func brokenGauge(t *testing.T, reg prometheus.Registerer) float64 {
	t.Helper()
	return testutil.ToFloat64(mustMetrics(t, reg).Broken.WithLabelValues("hs"))
}

func bareRecord(id string) *mappers.Record {
	r := record(id, "memo")
	r.Contact, r.Owner = nil, nil
	return r
}

// The unique property missing while running: HubSpot refuses the upsert; the connection is
// broken (calls wait, not dead-lettered, the gauge says so) until the property exists, and
// the first upsert after that clears it.
func TestMissingUniquePropertyBreaksConnection(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	c := e.connector(t, func(o *Options) { withUnique(o); o.Registerer = reg })
	for range 2 {
		_, err := c.Deliver(context.Background(), bareRecord("d1"))
		var ce *crm.Error
		if !errors.As(err, &ce) || ce.Class != crm.Broken || !ce.Throttled() || ce.After != RecordKeyWait ||
			!strings.Contains(ce.Msg, "call property miitel_detail_id does not exist") || !strings.Contains(ce.Msg, DocRecordKey) {
			t.Fatalf("err = %v, want Broken for %s naming the property and the fix", err, RecordKeyWait)
		}
		if crm.ClassOf(err) == crm.Permanent {
			t.Fatal("a missing property must not dead-letter the call")
		}
	}
	if g := brokenGauge(t, reg); g != 1 {
		t.Errorf("mcs_crm_connection_broken = %v, want 1", g)
	}
	if got := testutil.ToFloat64(mustMetrics(t, reg).BrokenTotal.WithLabelValues("hs")); got != 1 {
		t.Errorf("mcs_crm_connection_broken_total = %v, want 1 (set once)", got)
	}
	if n := len(e.fake.Calls()); n != 0 {
		t.Fatalf("%d calls written without the property", n)
	}
	e.fake.DefineCallProperty(uniqueProp, true)
	deliver(t, c, bareRecord("d1"))
	if g := brokenGauge(t, reg); g != 0 {
		t.Errorf("after the property was created, mcs_crm_connection_broken = %v, want 0", g)
	}
	if calls := e.fake.Calls(); len(calls) != 1 || calls[0].Properties[uniqueProp] != "d1" {
		t.Errorf("calls = %+v, want d1 once, keyed by %s", calls, uniqueProp)
	}
}

// A property without unique values is broken the same way; the check after an admin fixed
// it clears the mark at once.
func TestNonUniquePropertyBreaksUntilChecked(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	e.fake.DefineCallProperty(uniqueProp, false)
	c := e.connector(t, func(o *Options) { withUnique(o); o.Registerer = reg })
	_, err := c.Deliver(context.Background(), bareRecord("d1"))
	if crm.ClassOf(err) != crm.Broken || !strings.Contains(err.Error(), "hasUniqueValue is false") {
		t.Fatalf("err = %v, want Broken saying the property is not unique", err)
	}
	// A create carrying a property without unique values would go through and could
	// duplicate a call: first events are created only once the property is confirmed.
	if n := e.fake.Count("POST /crm/v3/objects/calls/batch/create"); n != 0 || len(e.fake.Calls()) != 0 {
		t.Fatalf("%d creates, %d calls written by a property without unique values", n, len(e.fake.Calls()))
	}
	e.fake.DefineCallProperty(uniqueProp, true)
	if r := checkLines(t, c, crm.CheckOptions{})["record_key"]; r.Status != crm.CheckPass {
		t.Fatalf("record_key = %+v", r)
	}
	if g := brokenGauge(t, reg); g != 0 {
		t.Errorf("broken gauge %v after a passing check, want 0", g)
	}
}

// Other validation errors of an upsert by the unique property stay what they are.
func TestOtherUpsertErrorsAreNotBroken(t *testing.T) {
	e := newEnv(t)
	e.fake.DefineCallProperty(uniqueProp, true)
	c := e.connector(t, withUnique)
	rec := bareRecord("d1")
	rec.Fields = append(rec.Fields, mappers.Field{Name: "hs_call_direction", Value: "SIDEWAYS"})
	_, err := c.Deliver(context.Background(), rec)
	if crm.ClassOf(err) != crm.Permanent {
		t.Errorf("err = %v, want Permanent (a bad value, not a missing property)", err)
	}
}

// A token without contacts write (the fake answers 403 MISSING_SCOPES as HubSpot does)
// parks the call: an admin must fix the app.
func TestMissingScopeOnWriteParks(t *testing.T) {
	e := newEnv(t)
	e.fake.AddPrivateAppTokenWithScopes("pat-read-only", "crm.objects.contacts.read", "crm.objects.owners.read")
	c := e.connector(t, func(o *Options) { o.Connection.HubSpot.PrivateAppToken = config.FromValue("pat-read-only") })
	_, err := c.Deliver(context.Background(), bareRecord("d1"))
	var ce *crm.Error
	if !errors.As(err, &ce) || ce.Class != crm.Broken || ce.Status != http.StatusForbidden || ce.Code != "MISSING_SCOPES" {
		t.Fatalf("err = %v, want Broken 403 MISSING_SCOPES", err)
	}
}
