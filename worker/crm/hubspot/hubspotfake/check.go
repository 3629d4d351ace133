package hubspotfake

// What the connection check and the record links read: the scopes a token carries (and the
// 403 MISSING_SCOPES every endpoint answers without them), the token-info endpoints, the
// properties API for calls and the account details (portal id, UI domain).

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Scopes a token carries unless a test says otherwise: what docs/crm-hubspot.md tells an
// admin to tick, and, for OAuth apps, HubSpot's basic `oauth` scope.
var (
	DefaultPrivateAppScopes = []string{"crm.objects.contacts.read", "crm.objects.contacts.write", "crm.objects.owners.read"}
	DefaultOAuthScopes      = []string{"crm.objects.contacts.read", "crm.objects.contacts.write", "crm.objects.owners.read", "oauth"}
)

// Default account details.
const (
	DefaultPortalID = 24681357
	DefaultUIDomain = "app.hubspot.com"
	appID           = 3141592
	userID          = 9000
)

// checkState is the fake's part for the check; its zero value is the defaults.
type checkState struct {
	patScopes   map[string][]string // private-app token -> scopes; absent: DefaultPrivateAppScopes
	oauthScopes []string            // nil: DefaultOAuthScopes
	portalID    int
	uiDomain    string
}

// AddPrivateAppTokenWithScopes accepts tok as a private-app token that carries exactly
// scopes (an app whose admin did not tick them all).
func (s *Server) AddPrivateAppTokenWithScopes(tok string, scopes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.privateApps[tok] = true
	if s.check.patScopes == nil {
		s.check.patScopes = map[string][]string{}
	}
	s.check.patScopes[tok] = append([]string{}, scopes...)
}

// GrantOAuthScopes sets the scopes the OAuth app's grant carries, for every access token
// issued before or after (default DefaultOAuthScopes).
func (s *Server) GrantOAuthScopes(scopes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.check.oauthScopes = append([]string{}, scopes...)
}

// SetAccount sets the portal id and UI domain GET /account-info/v3/details answers
// (defaults DefaultPortalID, DefaultUIDomain; EU accounts have app-eu1.hubspot.com).
func (s *Server) SetAccount(portalID int, uiDomain string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.check.portalID, s.check.uiDomain = portalID, uiDomain
}

// PortalID is the account's portal (hub) id.
func (s *Server) PortalID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.portalID()
}

func (s *Server) portalID() int {
	if s.check.portalID != 0 {
		return s.check.portalID
	}
	return DefaultPortalID
}

// scopesOf returns the scopes of a bearer token the fake accepted and whether it is a
// private-app token.
func (s *Server) scopesOf(tok string) (scopes []string, private bool) {
	if s.privateApps[tok] {
		if sc, ok := s.check.patScopes[tok]; ok {
			return sc, true
		}
		return DefaultPrivateAppScopes, true
	}
	if s.check.oauthScopes != nil {
		return s.check.oauthScopes, false
	}
	return DefaultOAuthScopes, false
}

// requiredScopes is what HubSpot's OpenAPI specifications list for a request (any one of
// the returned scopes suffices); nil: none. Calls are read and written under the contacts
// scopes (PublicApiSpecs/CRM/Calls v3), and so are contacts and their v4 associations;
// owners need crm.objects.owners.read; reading a call property accepts, among many, the
// contacts read scope or crm.schemas.calls.read; account details need `oauth` from an OAuth
// app (private apps are not asked for a scope).
func requiredScopes(r *http.Request, private bool) []string {
	p := r.URL.Path
	read := r.Method == http.MethodGet || strings.HasSuffix(p, "/search") || strings.HasSuffix(p, "/batch/read")
	switch {
	case strings.HasPrefix(p, "/crm/v3/owners"):
		return []string{"crm.objects.owners.read"}
	case strings.HasPrefix(p, "/crm/v3/properties/calls"):
		return []string{"crm.objects.contacts.read", "crm.schemas.calls.read", "crm.objects.calls.read"}
	case strings.HasPrefix(p, "/crm/v3/objects/"), strings.HasPrefix(p, "/crm/v4/"):
		if read {
			return []string{"crm.objects.contacts.read"}
		}
		return []string{"crm.objects.contacts.write"}
	case strings.HasPrefix(p, "/account-info/"):
		if private {
			return nil
		}
		return []string{"oauth"}
	}
	return nil
}

// scoped answers 403 MISSING_SCOPES, in HubSpot's body, when the request's token lacks the
// endpoint's scope. Called with s.mu held, after authorised.
func (s *Server) scoped(w http.ResponseWriter, r *http.Request) bool {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	have, private := s.scopesOf(tok)
	need := requiredScopes(r, private)
	if len(need) == 0 || slices.ContainsFunc(need, func(sc string) bool { return slices.Contains(have, sc) }) {
		return true
	}
	writeJSON(w, http.StatusForbidden, map[string]any{
		"status":        "error",
		"message":       "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
		"correlationId": uuid(),
		"errors": []map[string]any{{"message": "One or more of the following scopes are required.",
			"context": map[string]any{"requiredGranularScopes": need}}},
		"links":    map[string]string{"scopes": "https://developers.hubspot.com/scopes"},
		"category": "MISSING_SCOPES",
	})
	return false
}

// unauthenticated reports whether a route takes no bearer token: the token-info endpoints
// name the token in the path or body instead.
func unauthenticated(route string) bool {
	return route == routeAccessTokenInfo || route == routePrivateAppTokenInfo
}

const (
	routeAccessTokenInfo     = "GET /oauth/v1/access-tokens/{token}"
	routePrivateAppTokenInfo = "POST /oauth/v2/private-apps/get/access-token-info"
	routeCallProperty        = "GET /crm/v3/properties/calls/{name}"
	routeAccountDetails      = "GET /account-info/v3/details"
)

var (
	reAccessToken  = regexp.MustCompile(`^/oauth/v1/access-tokens/([^/]+)$`)
	reCallProperty = regexp.MustCompile(`^/crm/v3/properties/(calls|0-48)/([^/]+)$`)
)

// checkRoute routes the endpoints of this file.
func (s *Server) checkRoute(r *http.Request) (string, func(http.ResponseWriter, *http.Request, []byte)) {
	p := r.URL.Path
	switch {
	case r.Method == http.MethodGet && reAccessToken.MatchString(p):
		return routeAccessTokenInfo, s.accessTokenInfo
	case r.Method == http.MethodPost && p == "/oauth/v2/private-apps/get/access-token-info":
		return routePrivateAppTokenInfo, s.privateAppTokenInfo
	case r.Method == http.MethodGet && reCallProperty.MatchString(p):
		return routeCallProperty, s.callProperty
	case r.Method == http.MethodGet && p == "/account-info/v3/details":
		return routeAccountDetails, s.accountDetails
	}
	return "", nil
}

// accessTokenInfo is GET /oauth/v1/access-tokens/{token}: an OAuth access token's metadata
// (AccessTokenInfoResponse). An unknown or expired token is a 404 (HubSpot's exact answer
// there is unconfirmed).
func (s *Server) accessTokenInfo(w http.ResponseWriter, r *http.Request, _ []byte) {
	tok, _ := url.PathUnescape(reAccessToken.FindStringSubmatch(r.URL.Path)[1])
	exp, ok := s.access[tok]
	if !ok || !time.Now().Before(exp) {
		writeError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "The access token is not valid or has expired.", nil)
		return
	}
	scopes, _ := s.scopesOf(tok)
	writeJSON(w, http.StatusOK, map[string]any{
		"token": tok, "user": "admin@example.com", "hub_domain": "example.com", "scopes": scopes,
		"hub_id": s.portalID(), "app_id": appID, "expires_in": int(time.Until(exp).Seconds()),
		"user_id": userID, "token_type": "access", "is_private_distribution": true,
	})
}

// privateAppTokenInfo is POST /oauth/v2/private-apps/get/access-token-info with
// {"tokenKey": "<private-app token>"}: the token's account, app and scopes. An unknown token
// is a 400 (unconfirmed).
func (s *Server) privateAppTokenInfo(w http.ResponseWriter, _ *http.Request, body []byte) {
	var in struct {
		TokenKey string `json:"tokenKey"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.TokenKey == "" {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "tokenKey is required", nil)
		return
	}
	if !s.privateApps[in.TokenKey] {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "The private app token is not valid.", nil)
		return
	}
	scopes, _ := s.scopesOf(in.TokenKey)
	writeJSON(w, http.StatusOK, map[string]any{"userId": userID, "hubId": s.portalID(), "appId": appID, "scopes": scopes})
}

// callProperty is GET /crm/v3/properties/calls/{name}: a HubSpot-defined or custom call
// property (Property schema), 404 when the account has no such property.
func (s *Server) callProperty(w http.ResponseWriter, r *http.Request, _ []byte) {
	name := reCallProperty.FindStringSubmatch(r.URL.Path)[2]
	unique, custom := s.callProps[name]
	if !custom && !callProperties[name] {
		writeError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", fmt.Sprintf("Unable to find property %s on object type 0-48", name), nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"name": name, "label": name, "type": "string", "fieldType": "text", "description": "",
		"groupName": "callinformation", "options": []any{}, "hasUniqueValue": unique, "hubspotDefined": !custom,
		"hidden": false, "formField": false, "archived": false,
		"modificationMetadata": map[string]bool{"archivable": custom, "readOnlyDefinition": !custom, "readOnlyValue": false},
	})
}

// accountDetails is GET /account-info/v3/details (PortalInformationResponse).
func (s *Server) accountDetails(w http.ResponseWriter, _ *http.Request, _ []byte) {
	domain := s.check.uiDomain
	if domain == "" {
		domain = DefaultUIDomain
	}
	location := "na1"
	if strings.HasPrefix(domain, "app-eu1") {
		location = "eu1"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"portalId": s.portalID(), "accountType": "STANDARD", "timeZone": "Asia/Tokyo", "companyCurrency": "JPY",
		"additionalCurrencies": []string{}, "utcOffset": "+09:00", "utcOffsetMilliseconds": 32400000,
		"uiDomain": domain, "dataHostingLocation": location,
	})
}

// nonUniqueMessage is HubSpot's 400 VALIDATION_ERROR message for an update or upsert by an
// idProperty that is not a unique property, whether it does not exist or exists without
// hasUniqueValue (HubSpot answers both alike, e.g. for hs_object_id: "Unable to perform
// update/upsert by non-unique 0-2 property hs_object_id in portal ID 21939747").
func (s *Server) nonUniqueMessage(prop string) string {
	return fmt.Sprintf("Unable to perform update/upsert by non-unique 0-48 property %s in portal ID %d", prop, s.portalID())
}
