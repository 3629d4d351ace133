package salesforce

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/oauth2"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

var _ crm.Checker = (*Connector)(nil)

// Doc sections of the flows, for the token line's fix.
var docFlow = map[string]string{
	FlowClientCredentials: "docs/crm-salesforce.md#client-credentials-simplest-for-a-server",
	FlowJWT:               "docs/crm-salesforce.md#jwt-bearer-no-secret-on-the-wire",
	FlowRefreshToken:      "docs/crm-salesforce.md#refresh-token-an-admin-connects-once",
}

// Check verifies the connection before the first call (crm.Checker), reading only:
//
//	token         the configured flow gets an access token (and the org's instance_url)
//	permissions   GET sobjects/: the integration user may create and edit Tasks and read
//	              Contacts, Leads and Users (an object it cannot read is not listed)
//	record_key    GET sobjects/Task/describe, for each record key in use: the field exists,
//	              is an External ID and is Unique
//	owner_lookup  the owner SOQL finds an active User for o.OwnerEmail (skipped without one)
//
// A network failure, a 5xx or a throttled answer is CheckUnknown, never a failure; a line
// that depends on one that could not run is CheckUnknown too. A record key that passes
// clears its broken mark (the worker's start-up check after an admin created the field).
func (c *Connector) Check(ctx context.Context, o crm.CheckOptions) []crm.CheckResult {
	line := func(name string, st crm.CheckStatus, detail, fix string) crm.CheckResult {
		return crm.CheckResult{Connection: c.name, Name: name, Status: st, Detail: detail, Fix: fix}
	}
	keys := c.recordKeys(o.RecordKeys)
	var out []crm.CheckResult

	api, err := c.api(ctx)
	if err != nil {
		st, detail := c.tokenFailure(err)
		out = append(out, line(crm.CheckToken, st, detail, c.tokenFix(st)))
		why := "not checked: no access token"
		out = append(out, line(crm.CheckPermissions, crm.CheckUnknown, why, ""))
		for _, k := range keys {
			out = append(out, line(crm.CheckRecordKey, crm.CheckUnknown, "Task."+k+": "+why, ""))
		}
		if o.OwnerEmail != "" {
			out = append(out, line(crm.CheckOwnerLookup, crm.CheckUnknown, why, ""))
		} else {
			out = append(out, line(crm.CheckOwnerLookup, crm.CheckSkipped, "no owner e-mail to look up (connections[].check.owner_email)", ""))
		}
		return out
	}
	out = append(out, line(crm.CheckToken, crm.CheckPass, fmt.Sprintf("the %s flow got an access token for %s", c.sf.Flow, strings.TrimSuffix(api.BaseURL, "/services/data/"+c.version)), ""))
	out = append(out, c.checkPermissions(ctx, api, line))
	out = append(out, c.checkRecordKeys(ctx, api, keys, line)...)
	out = append(out, c.checkOwner(ctx, api, o.OwnerEmail, line))
	return out
}

type lineFunc func(name string, st crm.CheckStatus, detail, fix string) crm.CheckResult

// recordKeys is the connection's external_id_field and the fields mappings name instead,
// each once.
func (c *Connector) recordKeys(given []string) []string {
	var keys []string
	for _, k := range append([]string{c.sf.ExternalIDField}, given...) {
		if k != "" && !slices.ContainsFunc(keys, func(s string) bool { return strings.EqualFold(s, k) }) {
			keys = append(keys, k)
		}
	}
	return keys
}

// unknownOrFail is the status of a check whose request failed: Unknown when Salesforce could
// not be asked (network, 5xx, throttled), Fail when it answered no.
func unknownOrFail(err error) crm.CheckStatus {
	var ce *crm.Error
	if errors.As(err, &ce) && (ce.Class == crm.Permanent || ce.Class == crm.Broken) && ce.Status != 0 {
		return crm.CheckFail
	}
	return crm.CheckUnknown
}

// tokenFailure says whether the token endpoint refused the credentials (Fail) or could not
// be asked (Unknown).
func (c *Connector) tokenFailure(err error) (crm.CheckStatus, string) {
	if crm.ClassOf(err) == crm.Broken {
		return crm.CheckFail, err.Error()
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
		return crm.CheckFail, fmt.Sprintf("the token endpoint refused the %s flow: HTTP %d %s %s", c.sf.Flow, re.Response.StatusCode, re.ErrorCode, re.ErrorDescription)
	}
	return crm.CheckUnknown, "could not get a token: " + err.Error()
}

func (c *Connector) tokenFix(st crm.CheckStatus) string {
	if st != crm.CheckFail {
		return ""
	}
	doc := docFlow[c.sf.Flow]
	switch c.sf.Flow {
	case FlowClientCredentials:
		return "check client_id and client_secret, tick Enable Client Credentials Flow and set Run As in the app's policies, and use your My Domain URL as login_url; see " + doc
	case FlowJWT:
		return "upload the certificate of private_key to the app (Use digital signatures), pre-authorize the user in username (Permitted Users: Admin approved), and check audience; see " + doc
	case FlowRefreshToken:
		return "run `miitel-crm-sync oauth connect salesforce --connection " + c.name + "` as the integration user; see " + doc
	}
	return "check the connection's flow; see docs/crm-salesforce.md#3-the-app-connected-app-or-external-client-app"
}

func (c *Connector) checkPermissions(ctx context.Context, api *crm.API, line lineFunc) crm.CheckResult {
	var global struct {
		Sobjects []struct {
			Name       string `json:"name"`
			Createable bool   `json:"createable"`
			Updateable bool   `json:"updateable"`
			Queryable  bool   `json:"queryable"`
		} `json:"sobjects"`
	}
	fix := "give the integration user's permission set API Enabled, Read, Create and Edit on Task, and Read on Contact, Lead and User; see " + DocIntegrationUser
	if _, err := api.Do(ctx, DescribeGlobalRequest(), &global); err != nil {
		st := unknownOrFail(err)
		if st == crm.CheckFail {
			return line(crm.CheckPermissions, st, "salesforce refused to list the objects: "+err.Error(), fix)
		}
		return line(crm.CheckPermissions, st, "could not list the objects: "+err.Error(), "")
	}
	type access struct{ read, create, edit bool }
	got := map[string]access{}
	for _, o := range global.Sobjects {
		got[o.Name] = access{o.Queryable, o.Createable, o.Updateable}
	}
	var missing []string
	for _, need := range []struct {
		object       string
		create, edit bool
	}{{"Task", true, true}, {"Contact", false, false}, {"Lead", false, false}, {"User", false, false}} {
		a := got[need.object]
		switch {
		case !a.read:
			missing = append(missing, "Read on "+need.object)
		case need.create && !a.create:
			missing = append(missing, "Create on "+need.object)
		}
		if a.read && need.edit && !a.edit {
			missing = append(missing, "Edit on "+need.object)
		}
	}
	if len(missing) > 0 {
		return line(crm.CheckPermissions, crm.CheckFail, "the integration user lacks "+strings.Join(missing, ", "), fix)
	}
	return line(crm.CheckPermissions, crm.CheckPass, "the integration user may create and edit Tasks and read Contacts, Leads and Users", "")
}

// checkRecordKeys checks each key on one Task describe. Not Unique is a failure, not a
// warning: Salesforce then answers an upsert matching two Tasks with 300 (the call goes to the
// dead letter), lets two concurrent creates make two Tasks for one call, and requires View
// All Data of the integration user to upsert by the field at all.
func (c *Connector) checkRecordKeys(ctx context.Context, api *crm.API, keys []string, line lineFunc) []crm.CheckResult {
	if len(keys) == 0 {
		return []crm.CheckResult{line(crm.CheckRecordKey, crm.CheckFail, "no record key: the connection has no external_id_field",
			"set connections[].salesforce.external_id_field to the Task External ID field; see "+DocRecordKey)}
	}
	d, err := c.describe(ctx, api, "Task")
	if err != nil {
		st := unknownOrFail(err)
		var out []crm.CheckResult
		for _, k := range keys {
			r := line(crm.CheckRecordKey, st, "Task."+k+": could not describe Task: "+err.Error(), "")
			if st == crm.CheckFail {
				r.Fix = "give the integration user Read on Task; see " + DocIntegrationUser
			}
			out = append(out, r)
		}
		return out
	}
	var out []crm.CheckResult
	for _, k := range keys {
		if problem, fix := keyProblem(d, "Task", k); problem != "" {
			out = append(out, line(crm.CheckRecordKey, crm.CheckFail, problem, fix))
			continue
		}
		f := d.field(k)
		switch {
		case !f.Unique:
			out = append(out, line(crm.CheckRecordKey, crm.CheckFail,
				fmt.Sprintf("Task.%s is an External ID but not Unique: a detail id on two Tasks makes every later event of that call fail (300), and upserting by it needs View All Data", f.Name),
				fmt.Sprintf("edit the field %s on Activity (Task): tick Unique; see %s", f.Name, DocRecordKey)))
		case !f.Createable:
			out = append(out, line(crm.CheckRecordKey, crm.CheckFail,
				fmt.Sprintf("Task.%s is read-only for the integration user: new Tasks cannot carry the detail id", f.Name),
				fmt.Sprintf("make %s visible and editable for the integration user (field-level security); see %s", f.Name, DocRecordKey)))
		default:
			c.recordKeyFound("Task", k)
			out = append(out, line(crm.CheckRecordKey, crm.CheckPass, fmt.Sprintf("Task.%s is an External ID, unique", f.Name), ""))
		}
	}
	return out
}

func (c *Connector) checkOwner(ctx context.Context, api *crm.API, email string, line lineFunc) crm.CheckResult {
	if email == "" {
		return line(crm.CheckOwnerLookup, crm.CheckSkipped, "no owner e-mail to look up (connections[].check.owner_email)", "")
	}
	var out struct {
		Records []struct {
			ID string `json:"Id"`
		} `json:"records"`
	}
	// Asked, not taken from the lookup cache: the check is about the query working now.
	if _, err := api.Do(ctx, OwnerRequest(email), &out); err != nil {
		st := unknownOrFail(err)
		r := line(crm.CheckOwnerLookup, st, "the owner query failed: "+err.Error(), "")
		if st == crm.CheckFail {
			r.Fix = "give the integration user read access to User, its Email and IsActive fields; see " + DocIntegrationUser
		}
		return r
	}
	if len(out.Records) == 0 {
		return line(crm.CheckOwnerLookup, crm.CheckFail, "no active User has the e-mail "+email,
			"the rep's Salesforce User must be active and have the rep's MiiTel login e-mail as Email (Tasks of reps without one belong to the integration user); see docs/crm-salesforce.md#how-a-call-is-written")
	}
	return line(crm.CheckOwnerLookup, crm.CheckPass, fmt.Sprintf("the owner query finds User %s for %s", out.Records[0].ID, email), "")
}
