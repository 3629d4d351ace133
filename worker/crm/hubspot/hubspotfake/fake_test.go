package hubspotfake

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func do(t *testing.T, s *Server, method, path, token, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out, resp.Header
}

func callBody(props string) string { return `{"properties":{` + props + `}}` }

func TestFakeRejectsWhatHubSpotRejects(t *testing.T) {
	s := New(t, Options{})
	s.AddPrivateAppToken("pat")
	contact := s.AddContact(map[string]string{"phone": "0312345678"})
	ts := `"hs_timestamp":"2026-03-04T05:06:07.000Z"`
	groups := func(n, per int) string {
		var gs []string
		for range n {
			var fs []string
			for range per {
				fs = append(fs, `{"propertyName":"phone","operator":"EQ","value":"1"}`)
			}
			gs = append(gs, `{"filters":[`+strings.Join(fs, ",")+`]}`)
		}
		return `{"filterGroups":[` + strings.Join(gs, ",") + `]}`
	}
	tests := []struct {
		name, method, path, token, body string
		status                          int
		want                            string // in the message or category
	}{
		{"unknown path", "GET", "/crm/v3/objects/callz", "pat", "", 404, "OBJECT_NOT_FOUND"},
		{"no bearer", "POST", "/crm/v3/objects/calls", "", callBody(ts), 401, "INVALID_AUTHENTICATION"},
		{"unknown bearer", "POST", "/crm/v3/objects/calls", "nope", callBody(ts), 401, "INVALID_AUTHENTICATION"},
		{"missing hs_timestamp", "POST", "/crm/v3/objects/calls", "pat", callBody(`"hs_call_title":"x"`), 400, "REQUIRED_PROPERTY"},
		{"unknown property", "POST", "/crm/v3/objects/calls", "pat", callBody(ts + `,"nope":"x"`), 400, "PROPERTY_DOESNT_EXIST"},
		{"duration in seconds with fraction", "POST", "/crm/v3/objects/calls", "pat", callBody(ts + `,"hs_call_duration":"83.5"`), 400, "INVALID_INTEGER"},
		{"number not string", "POST", "/crm/v3/objects/calls", "pat", callBody(ts + `,"hs_call_duration":83000`), 400, "INVALID_TYPE"},
		{"bad direction", "POST", "/crm/v3/objects/calls", "pat", callBody(ts + `,"hs_call_direction":"IN"`), 400, "INVALID_OPTION"},
		{"bad status", "POST", "/crm/v3/objects/calls", "pat", callBody(ts + `,"hs_call_status":"DONE"`), 400, "INVALID_OPTION"},
		{"text too long", "POST", "/crm/v3/objects/calls", "pat", callBody(ts + `,"hs_call_body":"` + strings.Repeat("x", 65537) + `"`), 400, "INVALID_LENGTH"},
		{"http recording", "POST", "/crm/v3/objects/calls", "pat", callBody(ts + `,"hs_call_recording_url":"http://x"`), 400, "INVALID_URL"},
		{"unknown owner", "POST", "/crm/v3/objects/calls", "pat", callBody(ts + `,"hubspot_owner_id":"1"`), 400, "INVALID_OWNER_ID"},
		{"bad association type", "POST", "/crm/v3/objects/calls", "pat",
			`{"properties":{` + ts + `},"associations":[{"to":{"id":"` + contact + `"},"types":[{"associationCategory":"HUBSPOT_DEFINED","associationTypeId":182}]}]}`, 400, "invalid association type"},
		{"association to missing contact", "POST", "/crm/v3/objects/calls", "pat",
			`{"properties":{` + ts + `},"associations":[{"to":{"id":"999"},"types":[{"associationCategory":"HUBSPOT_DEFINED","associationTypeId":194}]}]}`, 400, "does not exist"},
		{"6 filter groups", "POST", "/crm/v3/objects/contacts/search", "pat", groups(6, 1), 400, "maximum is 5"},
		{"7 filters in a group", "POST", "/crm/v3/objects/contacts/search", "pat", groups(1, 7), 400, "maximum is 6"},
		{"19 filters", "POST", "/crm/v3/objects/contacts/search", "pat", groups(4, 5), 400, "maximum is 18"},
		{"upsert without unique property", "POST", "/crm/v3/objects/calls/batch/upsert", "pat",
			`{"inputs":[{"id":"d1","idProperty":"hs_call_external_id","properties":{` + ts + `}}]}`, 400, "upsert by non-unique 0-48 property"},
		{"valid create", "POST", "/crm/v3/objects/calls", "pat",
			`{"properties":{` + ts + `,"hs_call_duration":"83000","hs_call_direction":"INBOUND"},"associations":[{"to":{"id":"` + contact + `"},"types":[{"associationCategory":"HUBSPOT_DEFINED","associationTypeId":194}]}]}`, 201, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, _ := do(t, s, tt.method, tt.path, tt.token, tt.body)
			if status != tt.status {
				t.Fatalf("status = %d, want %d (%v)", status, tt.status, body)
			}
			if tt.status >= 400 {
				if body["status"] != "error" || body["correlationId"] == "" {
					t.Errorf("error body not in v3 shape: %v", body)
				}
				if got := fmt.Sprint(body["message"], body["category"]); !strings.Contains(got, tt.want) {
					t.Errorf("error %q does not mention %q", got, tt.want)
				}
			}
		})
	}
}

func TestFakeLimits(t *testing.T) {
	s := New(t, Options{RequestsPer10s: 3, SearchPerSecond: 2})
	s.AddPrivateAppToken("pat")
	search := `{"filterGroups":[]}`
	st1, _, h := do(t, s, "POST", "/crm/v3/objects/contacts/search", "pat", search)
	st2, _, _ := do(t, s, "POST", "/crm/v3/objects/contacts/search", "pat", search)
	st3, body, _ := do(t, s, "POST", "/crm/v3/objects/contacts/search", "pat", search)
	if st1 != 200 || st2 != 200 || st3 != 429 || body["policyName"] != "SECONDLY" || body["errorType"] != "RATE_LIMIT" {
		t.Fatalf("search statuses %d %d %d body %v; want 200 200 429 SECONDLY", st1, st2, st3, body)
	}
	if h.Get("X-HubSpot-RateLimit-Max") != "" {
		t.Error("search responses carry no rate-limit headers")
	}
	st, _, h := do(t, s, "GET", "/crm/v3/owners", "pat", "")
	if st != 200 || h.Get("X-HubSpot-RateLimit-Remaining") != "0" || h.Get("X-HubSpot-RateLimit-Interval-Milliseconds") != "10000" {
		t.Fatalf("owners: %d remaining %q", st, h.Get("X-HubSpot-RateLimit-Remaining"))
	}
	st, body, _ = do(t, s, "GET", "/crm/v3/owners", "pat", "")
	if st != 429 || body["policyName"] != "TEN_SECONDLY_ROLLING" {
		t.Fatalf("over the 10 s budget: %d %v", st, body)
	}
}

func TestFakeStormAndInjectedStatus(t *testing.T) {
	s := New(t, Options{})
	s.AddPrivateAppToken("pat")
	s.Inject429(2)
	s.InjectStatus(502)
	var got []int
	for range 4 {
		st, _, _ := do(t, s, "GET", "/crm/v3/owners", "pat", "")
		got = append(got, st)
	}
	if fmt.Sprint(got) != "[429 429 502 200]" {
		t.Errorf("statuses = %v", got)
	}
}

func TestFakeOAuth(t *testing.T) {
	s := New(t, Options{RotateRefreshTokens: true})
	s.AddAuthCode("code-1", "http://127.0.0.1:9999/callback")
	post := func(u string, form url.Values) (int, map[string]any) {
		resp, err := http.PostForm(u, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	client := url.Values{"client_id": {"client-id"}, "client_secret": {"client-secret"}}
	with := func(kv ...string) url.Values {
		v := url.Values{}
		for k, vs := range client {
			v[k] = vs
		}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	st, tok := post(s.TokenURL(), with("grant_type", "authorization_code", "code", "code-1", "redirect_uri", "http://127.0.0.1:9999/callback"))
	if st != 200 || tok["expires_in"] != float64(1800) || tok["refresh_token"] == "" {
		t.Fatalf("code exchange: %d %v", st, tok)
	}
	rt := tok["refresh_token"].(string)
	if st, _, _ := do(t, s, "GET", "/crm/v3/owners", tok["access_token"].(string), ""); st != 200 {
		t.Fatalf("API with the new token: %d", st)
	}
	st, tok2 := post(s.TokenURL(), with("grant_type", "refresh_token", "refresh_token", rt))
	if st != 200 || tok2["refresh_token"] == rt {
		t.Fatalf("refresh with rotation: %d %v", st, tok2)
	}
	// The rotated-away token is dead: v1 says BAD_REFRESH_TOKEN, the dated endpoint invalid_grant.
	if st, body := post(s.TokenURL(), with("grant_type", "refresh_token", "refresh_token", rt)); st != 400 || body["status"] != "BAD_REFRESH_TOKEN" {
		t.Errorf("v1 replay: %d %v", st, body)
	}
	if st, body := post(s.TokenURL2026(), with("grant_type", "refresh_token", "refresh_token", rt)); st != 400 || body["error"] != "invalid_grant" {
		t.Errorf("dated replay: %d %v", st, body)
	}
	s.ExpireAccessTokens()
	if st, body, _ := do(t, s, "GET", "/crm/v3/owners", tok2["access_token"].(string), ""); st != 401 || body["category"] != "EXPIRED_AUTHENTICATION" {
		t.Errorf("expired token: %d %v", st, body)
	}
}

func TestFakeSearchLagAndSort(t *testing.T) {
	s := New(t, Options{})
	s.AddPrivateAppToken("pat")
	old := s.AddContact(map[string]string{"phone": "+81 3-1234-5678", "lastmodifieddate": "2026-01-01T00:00:00Z"})
	newer := s.AddContact(map[string]string{"phone": "03-1234-5678", "lastmodifieddate": "2026-02-01T00:00:00Z"})
	body := `{"filterGroups":[{"filters":[{"propertyName":"hs_searchable_calculated_phone_number","operator":"EQ","value":"312345678"}]},
		{"filters":[{"propertyName":"hs_searchable_calculated_phone_number","operator":"EQ","value":"0312345678"}]}],
		"sorts":[{"propertyName":"lastmodifieddate","direction":"DESCENDING"}],"limit":10}`
	_, out, _ := do(t, s, "POST", "/crm/v3/objects/contacts/search", "pat", body)
	res := out["results"].([]any)
	if len(res) != 2 || res[0].(map[string]any)["id"] != newer || res[1].(map[string]any)["id"] != old {
		t.Fatalf("results = %v, want newest first", res)
	}
	s.SetSearchLag(3600e9)
	_, _, _ = do(t, s, "POST", "/crm/v3/objects/calls", "pat", callBody(`"hs_timestamp":"1700000000000","hs_call_external_id":"d1"`))
	_, out, _ = do(t, s, "POST", "/crm/v3/objects/calls/search", "pat", `{"filterGroups":[{"filters":[{"propertyName":"hs_call_external_id","operator":"EQ","value":"d1"}]}]}`)
	if out["total"] != float64(0) {
		t.Errorf("a call written now is already searchable: %v", out)
	}
}
