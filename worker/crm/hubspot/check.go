package hubspot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm"
)

var _ crm.Checker = (*Connector)(nil)

// Doc sections the fixes point to (docs/crm-hubspot.md; a test keeps them existing).
const (
	DocPrivateApp = "docs/crm-hubspot.md#private-app-simplest-one-account"
	DocOAuthApp   = "docs/crm-hubspot.md#oauth-app-several-accounts-or-a-marketplace-style-install"
	DocRecordKey  = "docs/crm-hubspot.md#2-make-each-call-unique-recommended"
	DocOwners     = "docs/crm-hubspot.md#3-owners-and-contacts"
)

// RecordKeyWait is how long calls wait while the unique property is missing (or not
// unique): each attempt after it is the probe that finds it created.
const RecordKeyWait = 5 * time.Minute

// Check verifies the connection before the first call (crm.Checker), reading only:
//
//	token         a private-app token: HubSpot knows it (its token info); an OAuth app: the
//	              refresh-token grant gets an access token (x/oauth2, as deliveries do)
//	permissions   the token carries the scopes in DefaultScopes (private apps: POST
//	              /oauth/v2/private-apps/get/access-token-info; OAuth: GET
//	              /oauth/v1/access-tokens/{token}); each missing one is named
//	record_key    with hubspot.unique_property: GET /crm/v3/properties/calls/{name} says
//	              it exists and has hasUniqueValue; without one, skipped (the id map is used)
//	owner_lookup  GET /crm/v3/owners?email= finds o.OwnerEmail (skipped without one)
//
// The connector upserts by unique_property alone (a mapping's external_id.field names the
// property that holds the MiiTel id, hs_call_external_id, not an upsert key), so o.RecordKeys
// are not checked as keys. Unreachable, 5xx or throttled is CheckUnknown, never a failure;
// a line that depends on a token that could not be had is CheckUnknown. A record key that
// passes clears its broken mark.
func (c *Connector) Check(ctx context.Context, o crm.CheckOptions) []crm.CheckResult {
	line := func(name string, st crm.CheckStatus, detail, fix string) crm.CheckResult {
		return crm.CheckResult{Connection: c.name, Name: name, Status: st, Detail: detail, Fix: fix}
	}
	var out []crm.CheckResult
	scopes, tokLine := c.checkToken(ctx, line)
	out = append(out, tokLine)
	if tokLine.Status != crm.CheckPass {
		why := "not checked: no usable token"
		out = append(out, line(crm.CheckPermissions, crm.CheckUnknown, why, ""))
		if c.unique != "" {
			out = append(out, line(crm.CheckRecordKey, crm.CheckUnknown, "call property "+c.unique+": "+why, ""))
		} else {
			out = append(out, c.noRecordKey(line))
		}
		if o.OwnerEmail != "" {
			out = append(out, line(crm.CheckOwnerLookup, crm.CheckUnknown, why, ""))
		} else {
			out = append(out, line(crm.CheckOwnerLookup, crm.CheckSkipped, "no owner e-mail to look up (connections[].check.owner_email)", ""))
		}
		return out
	}
	out = append(out, c.checkScopes(scopes, line))
	out = append(out, c.checkRecordKey(ctx, line))
	out = append(out, c.checkOwner(ctx, o.OwnerEmail, line))
	return out
}

type lineFunc func(name string, st crm.CheckStatus, detail, fix string) crm.CheckResult

// appDoc is the doc section of the connection's kind of app.
func (c *Connector) appDoc() string {
	if c.oauth {
		return DocOAuthApp
	}
	return DocPrivateApp
}

// reason describes a failed request without the request's URL (the OAuth token-info URL
// holds the access token).
func reason(err error) string {
	var ce *crm.Error
	if errors.As(err, &ce) && ce.Status != 0 {
		s := fmt.Sprintf("HTTP %d", ce.Status)
		if ce.Code != "" {
			s += " " + ce.Code
		}
		if ce.Msg != "" {
			s += ": " + crm.Snippet(ce.Msg, 300)
		}
		return s
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	if errors.As(err, &ce) && ce.Err != nil && errors.As(ce.Err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// refused reports whether HubSpot answered a request with a 4xx (an answer, not an outage).
func refused(err error) bool {
	var ce *crm.Error
	return errors.As(err, &ce) && ce.Status >= 400 && ce.Status < 500 && ce.Status != http.StatusTooManyRequests
}

func missingScopes(err error) bool {
	var ce *crm.Error
	return errors.As(err, &ce) && ce.Status == http.StatusForbidden && strings.HasPrefix(ce.Code, "MISSING_SCOPES")
}

// checkToken gets a token and its scopes: for a private app one token-info request proves
// both; for an OAuth app the refresh grant gives the token and the access-token info its
// scopes. scopes is nil when they could not be read (the permissions line is then unknown).
func (c *Connector) checkToken(ctx context.Context, line lineFunc) (scopes []string, _ crm.CheckResult) {
	if !c.oauth {
		var info struct {
			HubID  int64    `json:"hubId"`
			Scopes []string `json:"scopes"`
		}
		_, err := c.api.Do(ctx, crm.Request{Op: "hubspot: private app token info", Method: "POST",
			Path: "/oauth/v2/private-apps/get/access-token-info", Body: map[string]string{"tokenKey": c.privToken}}, &info)
		switch {
		case err == nil:
			return orEmpty(info.Scopes), line(crm.CheckToken, crm.CheckPass, fmt.Sprintf("private-app token accepted (portal %d)", info.HubID), "")
		case refused(err) && !missingScopes(err):
			return nil, line(crm.CheckToken, crm.CheckFail, "HubSpot does not accept the private-app token: "+reason(err),
				"copy the app's current access token (Settings → Integrations → Private Apps → the app → Auth; a rotated token replaces the old one) into hubspot.private_app_token; see "+DocPrivateApp)
		}
		return nil, line(crm.CheckToken, crm.CheckUnknown, "could not ask HubSpot about the private-app token: "+reason(err), "")
	}
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return nil, c.tokenFailure(err, line)
	}
	var info struct {
		HubID  int64    `json:"hub_id"`
		Scopes []string `json:"scopes"`
	}
	detail := "the refresh token got an access token"
	if _, err := c.api.Do(ctx, crm.Request{Op: "hubspot: access token info", Method: "GET",
		Path: "/oauth/v1/access-tokens/" + url.PathEscape(tok.AccessToken)}, &info); err != nil {
		// The token works for deliveries even if its info cannot be read.
		return nil, line(crm.CheckToken, crm.CheckPass, detail+" (its scopes could not be read: "+reason(err)+")", "")
	}
	return orEmpty(info.Scopes), line(crm.CheckToken, crm.CheckPass, fmt.Sprintf("%s (portal %d)", detail, info.HubID), "")
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// tokenFailure says whether the token endpoint refused the grant (Fail, with the fix) or
// could not be asked (Unknown).
func (c *Connector) tokenFailure(err error, line lineFunc) crm.CheckResult {
	reconnect := "run `miitel-crm-sync oauth connect hubspot --connection " + c.name + "` (or give a new refresh_token); see " + DocOAuthApp
	if crm.ClassOf(err) == crm.Broken {
		return line(crm.CheckToken, crm.CheckFail, "the refresh token was refused (app uninstalled or access revoked): "+err.Error(), reconnect)
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
		code := re.ErrorCode
		if code == "" { // the v1 endpoint: {"status":"BAD_CLIENT_ID","message":...}
			var v1 struct{ Status, Message string }
			if json.Unmarshal(re.Body, &v1) == nil && v1.Status != "" {
				code = v1.Status + ": " + crm.Snippet(v1.Message, 200)
			} else {
				code = crm.Snippet(string(re.Body), 200)
			}
		} else if re.ErrorDescription != "" {
			code += ": " + crm.Snippet(re.ErrorDescription, 200)
		}
		fix := "check hubspot.client_id and client_secret against the app's Auth page, and token_url; see " + DocOAuthApp
		if crm.IsRevoked(err) {
			fix = reconnect
		}
		return line(crm.CheckToken, crm.CheckFail, fmt.Sprintf("the token endpoint refused the refresh grant: HTTP %d %s", re.Response.StatusCode, code), fix)
	}
	return line(crm.CheckToken, crm.CheckUnknown, "could not get a token: "+reason(err), "")
}

// checkScopes compares the granted scopes with DefaultScopes.
func (c *Connector) checkScopes(granted []string, line lineFunc) crm.CheckResult {
	if granted == nil {
		return line(crm.CheckPermissions, crm.CheckUnknown, "the token's scopes could not be read", "")
	}
	var missing []string
	for _, s := range DefaultScopes {
		if !slices.Contains(granted, s) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		fix := "in HubSpot, Settings → Integrations → Private Apps → the app → Scopes: tick " + strings.Join(missing, ", ") + " and commit the change; see " + DocPrivateApp
		if c.oauth {
			fix = "add " + strings.Join(missing, ", ") + " to the app's scopes (Auth page; and to hubspot.scopes if you set it), then run `miitel-crm-sync oauth connect hubspot --connection " +
				c.name + "` again: a grant carries the scopes of its consent; see " + DocOAuthApp
		}
		return line(crm.CheckPermissions, crm.CheckFail, "the app lacks the scope(s) "+strings.Join(missing, ", "), fix)
	}
	detail := strings.Join(DefaultScopes, ", ") + " granted"
	if c.oauth && !slices.Contains(granted, "oauth") && strings.Contains(c.recordURL, "{portal_id}") {
		detail += " (without the oauth scope call status shows no HubSpot link)"
	}
	return line(crm.CheckPermissions, crm.CheckPass, detail, "")
}

// PropertyRequest is GET /crm/v3/properties/calls/{name}.
func PropertyRequest(name string) crm.Request {
	return crm.Request{Op: "hubspot: read call property", Method: "GET", Path: "/crm/v3/properties/calls/" + url.PathEscape(name)}
}

func (c *Connector) noRecordKey(line lineFunc) crm.CheckResult {
	return line(crm.CheckRecordKey, crm.CheckSkipped,
		"no hubspot.unique_property: calls are matched through the id map in Redis and hs_call_external_id", "")
}

// keyProblem reads the unique property and says what is wrong with it ("" when nothing);
// err is set when HubSpot could not say (or refused to, fix then names the scope).
func (c *Connector) keyProblem(ctx context.Context) (problem, fix string, err error) {
	var p struct {
		Name           string `json:"name"`
		HasUniqueValue bool   `json:"hasUniqueValue"`
	}
	create := fmt.Sprintf("create the call property %s with hasUniqueValue: true (Settings → Properties → Call properties, or POST /crm/v3/properties/calls), "+
		"or leave hubspot.unique_property empty to use the id map; see %s", c.unique, DocRecordKey)
	_, err = c.api.Do(ctx, PropertyRequest(c.unique), &p)
	var ce *crm.Error
	switch {
	case err == nil && p.HasUniqueValue:
		return "", "", nil
	case err == nil:
		return fmt.Sprintf("call property %s exists but does not have unique values (hasUniqueValue is false): HubSpot refuses to upsert by it", c.unique), create, nil
	case errors.As(err, &ce) && ce.Status == http.StatusNotFound:
		return fmt.Sprintf("call property %s does not exist", c.unique), create, nil
	}
	return "", "", err
}

func (c *Connector) checkRecordKey(ctx context.Context, line lineFunc) crm.CheckResult {
	if c.unique == "" {
		return c.noRecordKey(line)
	}
	problem, fix, err := c.keyProblem(ctx)
	switch {
	case err != nil && refused(err):
		r := line(crm.CheckRecordKey, crm.CheckFail, "call property "+c.unique+": HubSpot refused to read it: "+reason(err), "")
		if missingScopes(err) {
			r.Fix = "give the app crm.objects.contacts.read (or crm.schemas.calls.read); see " + c.appDoc()
		}
		return r
	case err != nil:
		return line(crm.CheckRecordKey, crm.CheckUnknown, "call property "+c.unique+": could not read it: "+reason(err), "")
	case problem != "":
		return line(crm.CheckRecordKey, crm.CheckFail, problem, fix)
	}
	c.recordKeyFound()
	c.key.set(true, time.Now())
	return line(crm.CheckRecordKey, crm.CheckPass, "call property "+c.unique+" exists with unique values", "")
}

func (c *Connector) checkOwner(ctx context.Context, email string, line lineFunc) crm.CheckResult {
	if email == "" {
		return line(crm.CheckOwnerLookup, crm.CheckSkipped, "no owner e-mail to look up (connections[].check.owner_email)", "")
	}
	// Asked, not taken from the lookup cache: the check is about the lookup working now.
	id, err := c.findOwner(ctx, email)
	if err != nil {
		if refused(err) {
			r := line(crm.CheckOwnerLookup, crm.CheckFail, "the owner lookup was refused: "+reason(err), "")
			if missingScopes(err) {
				r.Fix = "give the app crm.objects.owners.read; see " + c.appDoc()
			}
			return r
		}
		return line(crm.CheckOwnerLookup, crm.CheckUnknown, "the owner lookup failed: "+reason(err), "")
	}
	if id != "" {
		return line(crm.CheckOwnerLookup, crm.CheckPass, fmt.Sprintf("owner %s has the e-mail %s", id, email), "")
	}
	return line(crm.CheckOwnerLookup, crm.CheckFail, "no HubSpot user (owner) has the e-mail "+email,
		"the rep's HubSpot user must have the rep's MiiTel login e-mail (calls of reps without one have no owner); see "+DocOwners)
}

// ---- the unique property missing while running ----

func (c *Connector) recordKeyReason() string { return "record_key calls." + c.unique }

// recordKeyOutcome follows an upsert by the unique property: one that went through clears
// the broken mark; one HubSpot refused because the property is not a unique property
// ("Unable to perform update/upsert by non-unique 0-48 property X", a 400 VALIDATION_ERROR
// for a property that does not exist as for one without unique values), confirmed by the
// properties API, marks the connection broken instead: calls wait (crm.Broken, not counted
// as failures) rather than each going to the dead letter until an admin creates the
// property; the first upsert after that delivers them all. Every other error is returned
// as it is.
func (c *Connector) recordKeyOutcome(ctx context.Context, err error) error {
	if err == nil {
		c.recordKeyFound()
		return nil
	}
	var ce *crm.Error
	if !errors.As(err, &ce) || (ce.Status != http.StatusBadRequest && ce.Status != http.StatusMultiStatus) || ce.Code != "VALIDATION_ERROR" {
		return err
	}
	msg := strings.ToLower(ce.Msg)
	if !strings.Contains(msg, strings.ToLower(c.unique)) || !(strings.Contains(msg, "non-unique") || strings.Contains(msg, "unique identifier")) {
		return err
	}
	problem, fix, perr := c.keyProblem(ctx)
	// Until the property is confirmed unique again, first events are upserted (and refused
	// alike) rather than created.
	c.key.set(perr == nil && problem == "", time.Now())
	switch {
	case perr == nil && problem == "":
		// The property is there and unique after all (created a moment ago): retry.
		re := *ce
		re.Class = crm.Transient
		re.Msg = ce.Msg + " (yet the call property " + c.unique + " exists with unique values; retrying)"
		return &re
	case perr != nil:
		problem = fmt.Sprintf("hubspot refused the upsert by the call property %s as not unique (reading the property to confirm failed: %s)", c.unique, reason(perr))
		fix = fmt.Sprintf("create the call property %s with hasUniqueValue: true, or leave hubspot.unique_property empty; see %s", c.unique, DocRecordKey)
	}
	if c.broken.Set(c.recordKeyReason(), problem) {
		c.log.Error("hubspot: connection broken: the unique property is not usable; calls wait (not counted as failures) until it is fixed",
			"property", c.unique, "reason", problem, "fix", fix, "status", ce.Status, "code", ce.Code)
	}
	// Not wrapping ce: it is Permanent, and its asynq.SkipRetry would archive the call.
	return &crm.Error{Class: crm.Broken, Op: ce.Op, Status: ce.Status, Code: ce.Code, Msg: problem + "; fix: " + fix, After: RecordKeyWait}
}

// recordKeyFound clears the broken mark of the unique property once it is usable.
func (c *Connector) recordKeyFound() {
	if c.unique != "" && c.broken.Clear(c.recordKeyReason()) {
		c.log.Info("hubspot: the unique property works again; delivering", "property", c.unique)
	}
}

// findOwner asks HubSpot for the active owner with e-mail email ("" when none): the
// deliveries' owner lookup (through the cache) and the check's.
func (c *Connector) findOwner(ctx context.Context, email string) (string, error) {
	var out struct {
		Results []struct {
			ID       string `json:"id"`
			Email    string `json:"email"`
			Archived bool   `json:"archived"`
		} `json:"results"`
	}
	if _, err := c.api.Do(ctx, OwnerRequest(email), &out); err != nil {
		return "", err
	}
	for _, o := range out.Results {
		if !o.Archived && strings.EqualFold(o.Email, email) {
			return o.ID, nil
		}
	}
	return "", nil
}
