package hubspotfake

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// ask is do without the headers.
func ask(t *testing.T, s *Server, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	code, out, _ := do(t, s, method, path, token, body)
	return code, out
}

// A token without an endpoint's scope gets HubSpot's 403 MISSING_SCOPES body naming it.
func TestMissingScopes(t *testing.T) {
	s := New(t, Options{})
	s.AddPrivateAppTokenWithScopes("narrow", "crm.objects.contacts.read")
	code, body := ask(t, s, "GET", "/crm/v3/owners?email=a@example.com", "narrow", "")
	if code != http.StatusForbidden || body["category"] != "MISSING_SCOPES" || body["status"] != "error" || body["correlationId"] == nil {
		t.Fatalf("owners without the scope: %d %v", code, body)
	}
	errs, _ := body["errors"].([]any)
	if len(errs) != 1 || !strings.Contains(mustJSON(errs[0]), `"requiredGranularScopes":["crm.objects.owners.read"]`) {
		t.Errorf("errors = %v, want the required scope", errs)
	}
	if code, _ := ask(t, s, "POST", "/crm/v3/objects/calls", "narrow", `{"properties":{"hs_timestamp":"1"}}`); code != http.StatusForbidden {
		t.Errorf("create call with read only: %d, want 403", code)
	}
	if code, _ := ask(t, s, "POST", "/crm/v3/objects/calls/search", "narrow", `{}`); code != http.StatusOK {
		t.Errorf("search calls with contacts read: %d, want 200", code)
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestCallPropertyAndAccount(t *testing.T) {
	s := New(t, Options{})
	s.AddPrivateAppToken("pat")
	s.DefineCallProperty("miitel_detail_id", true)
	if code, body := ask(t, s, "GET", "/crm/v3/properties/calls/miitel_detail_id", "pat", ""); code != 200 || body["hasUniqueValue"] != true || body["name"] != "miitel_detail_id" {
		t.Errorf("custom unique property: %d %v", code, body)
	}
	if code, body := ask(t, s, "GET", "/crm/v3/properties/calls/hs_call_title", "pat", ""); code != 200 || body["hasUniqueValue"] != false || body["hubspotDefined"] != true {
		t.Errorf("built-in property: %d %v", code, body)
	}
	if code, body := ask(t, s, "GET", "/crm/v3/properties/calls/nope", "pat", ""); code != 404 || body["category"] != "OBJECT_NOT_FOUND" {
		t.Errorf("unknown property: %d %v", code, body)
	}
	if code, _ := ask(t, s, "GET", "/crm/v3/properties/calls/nope", "", ""); code != 401 {
		t.Errorf("properties without a token: %d, want 401", code)
	}
	if code, body := ask(t, s, "GET", "/account-info/v3/details", "pat", ""); code != 200 || body["portalId"] != float64(DefaultPortalID) || body["uiDomain"] != DefaultUIDomain {
		t.Errorf("account details: %d %v", code, body)
	}
}

func TestTokenInfo(t *testing.T) {
	s := New(t, Options{})
	s.AddPrivateAppTokenWithScopes("pat", "crm.objects.contacts.read")
	code, body := ask(t, s, "POST", "/oauth/v2/private-apps/get/access-token-info", "", `{"tokenKey":"pat"}`)
	if code != 200 || mustJSON(body["scopes"]) != `["crm.objects.contacts.read"]` || body["hubId"] != float64(DefaultPortalID) {
		t.Errorf("private app token info: %d %v", code, body)
	}
	if code, _ := ask(t, s, "POST", "/oauth/v2/private-apps/get/access-token-info", "", `{"tokenKey":"other"}`); code != 400 {
		t.Errorf("unknown private app token: %d, want 400", code)
	}
	if code, _ := ask(t, s, "GET", "/oauth/v1/access-tokens/at-unknown", "", ""); code != 404 {
		t.Errorf("unknown access token: %d, want 404", code)
	}
}
