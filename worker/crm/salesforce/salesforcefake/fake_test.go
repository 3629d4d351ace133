package salesforcefake_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2/jws"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	InstanceURL  string `json:"instance_url"`
	ExpiresIn    *int   `json:"expires_in"`
	Error        string `json:"error"`
}

func token(t *testing.T, f *salesforcefake.Fake, form url.Values) (int, tokenResponse) {
	t.Helper()
	resp, err := f.Client().PostForm(f.TokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr tokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, tr
}

func clientCredentials(t *testing.T, f *salesforcefake.Fake) string {
	t.Helper()
	status, tr := token(t, f, url.Values{"grant_type": {"client_credentials"}, "client_id": {f.ClientID()}, "client_secret": {f.ClientSecret()}})
	if status != 200 || tr.AccessToken == "" {
		t.Fatalf("client credentials: %d %+v", status, tr)
	}
	if tr.ExpiresIn != nil || tr.InstanceURL != f.URL {
		t.Errorf("token response has expires_in %v and instance_url %q; Salesforce sends none and its instance", tr.ExpiresIn, tr.InstanceURL)
	}
	return tr.AccessToken
}

type apiResult struct {
	status int
	errs   []struct {
		Code   string   `json:"errorCode"`
		Fields []string `json:"fields"`
	}
	limit string
}

func call(t *testing.T, f *salesforcefake.Fake, tok, method, path, body string) apiResult {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, f.URL+path, rd)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := apiResult{status: resp.StatusCode, limit: resp.Header.Get("Sforce-Limit-Info")}
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &r.errs); err != nil {
			t.Fatalf("%s %s: error body is not the error array: %s", method, path, b)
		}
	}
	return r
}

const upsertPath = "/services/data/v62.0/sobjects/Task/MiiTel_Detail_Id__c/"

func TestStrictREST(t *testing.T) {
	f := salesforcefake.New(t, salesforcefake.Options{})
	tok := clientCredentials(t, f)
	if r := call(t, f, tok, http.MethodPatch, upsertPath+"existing", `{"Subject":"x","TaskSubtype":"Call"}`); r.status != 201 {
		t.Fatalf("seed upsert = %d", r.status)
	}
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name, tok, method, path, body string
		status                        int
		code                          string
	}{
		{"unknown path", tok, "GET", "/services/data/v62.0/nope", "", 404, "NOT_FOUND"},
		{"unknown version", tok, "GET", "/services/data/v99.0/query?q=x", "", 404, "NOT_FOUND"},
		{"unknown object", tok, "POST", "/services/data/v62.0/sobjects/Account", `{"Name":"x"}`, 404, "NOT_FOUND"},
		{"no session", "", "GET", "/services/data/v62.0/query?q=SELECT+Id+FROM+User", "", 401, "INVALID_SESSION_ID"},
		{"bad session", "forged", "GET", "/services/data/v62.0/query?q=SELECT+Id+FROM+User", "", 401, "INVALID_SESSION_ID"},
		{"unknown external id field", tok, "PATCH", "/services/data/v62.0/sobjects/Task/Nope__c/1", `{"Subject":"x"}`, 404, "NOT_FOUND"},
		{"unknown field", tok, "PATCH", upsertPath + "1", `{"Subjekt":"x"}`, 400, "INVALID_FIELD"},
		{"subject 255 ok", tok, "PATCH", upsertPath + "2", `{"Subject":"` + long(255) + `"}`, 201, ""},
		{"subject 256", tok, "PATCH", upsertPath + "3", `{"Subject":"` + long(256) + `"}`, 400, "STRING_TOO_LONG"},
		{"subject 255 multibyte ok", tok, "PATCH", upsertPath + "3b", `{"Subject":"` + strings.Repeat("通", 255) + `"}`, 201, ""},
		{"description 32000 ok", tok, "PATCH", upsertPath + "4", `{"Description":"` + long(32000) + `"}`, 201, ""},
		{"description 32001", tok, "PATCH", upsertPath + "5", `{"Description":"` + long(32001) + `"}`, 400, "STRING_TOO_LONG"},
		{"TaskSubtype changed on update", tok, "PATCH", upsertPath + "existing", `{"TaskSubtype":"Task"}`, 400, "INVALID_FIELD_FOR_INSERT_UPDATE"},
		{"TaskSubtype on update", tok, "PATCH", upsertPath + "existing", `{"TaskSubtype":"Call"}`, 400, "INVALID_FIELD_FOR_INSERT_UPDATE"},
		{"update without TaskSubtype", tok, "PATCH", upsertPath + "existing", `{"Subject":"y"}`, 200, ""},
		{"Id in body", tok, "PATCH", upsertPath + "6", `{"Id":"00T000000000001AAA"}`, 400, "INVALID_FIELD_FOR_INSERT_UPDATE"},
		{"external id in body", tok, "PATCH", upsertPath + "7", `{"MiiTel_Detail_Id__c":"7"}`, 400, "INVALID_FIELD"},
		{"CallType bad", tok, "PATCH", upsertPath + "8", `{"CallType":"outbound"}`, 400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"},
		{"CallType ok", tok, "PATCH", upsertPath + "8b", `{"CallType":"Internal"}`, 201, ""},
		{"duration fractional", tok, "PATCH", upsertPath + "9", `{"CallDurationInSeconds":12.5}`, 400, "JSON_PARSER_ERROR"},
		{"duration string", tok, "PATCH", upsertPath + "10", `{"CallDurationInSeconds":"12"}`, 400, "JSON_PARSER_ERROR"},
		{"duration ms-sized ok", tok, "PATCH", upsertPath + "10b", `{"CallDurationInSeconds":125}`, 201, ""},
		{"ActivityDate datetime", tok, "PATCH", upsertPath + "11", `{"ActivityDate":"2024-03-02T08:30:00+09:00"}`, 400, "JSON_PARSER_ERROR"},
		{"ActivityDate invalid", tok, "PATCH", upsertPath + "12", `{"ActivityDate":"2024-13-02"}`, 400, "JSON_PARSER_ERROR"},
		{"WhoId unknown", tok, "PATCH", upsertPath + "13", `{"WhoId":"003000000000099AAA"}`, 400, "INVALID_CROSS_REFERENCE_KEY"},
		{"WhoId malformed", tok, "PATCH", upsertPath + "14", `{"WhoId":"nope"}`, 400, "MALFORMED_ID"},
		{"not json", tok, "PATCH", upsertPath + "15", `Subject=x`, 400, "JSON_PARSER_ERROR"},
		{"wrong method", tok, "PUT", upsertPath + "16", `{}`, 405, "METHOD_NOT_ALLOWED"},
		{"lead without company", tok, "POST", "/services/data/v62.0/sobjects/Lead", `{"LastName":"x"}`, 400, "REQUIRED_FIELD_MISSING"},
		{"contact ok", tok, "POST", "/services/data/v62.0/sobjects/Contact", `{"LastName":"x","Phone":"03"}`, 201, ""},
		{"soql unescaped quote", tok, "GET", "/services/data/v62.0/query?q=" + url.QueryEscape(`SELECT Id FROM User WHERE Email = 'o'brien'`), "", 400, "MALFORMED_QUERY"},
		{"soql bad escape", tok, "GET", "/services/data/v62.0/query?q=" + url.QueryEscape(`SELECT Id FROM User WHERE Email = 'a\-b'`), "", 400, "MALFORMED_QUERY"},
		{"soql unknown field", tok, "GET", "/services/data/v62.0/query?q=" + url.QueryEscape(`SELECT Nope FROM User`), "", 400, "INVALID_FIELD"},
		{"sosl unescaped", tok, "GET", "/services/data/v62.0/search?q=" + url.QueryEscape(`FIND {03-1234} IN PHONE FIELDS RETURNING Contact(Id)`), "", 400, "MALFORMED_SEARCH"},
		{"sosl unknown field", tok, "GET", "/services/data/v62.0/search?q=" + url.QueryEscape(`FIND {031234} IN PHONE FIELDS RETURNING Contact(Email)`), "", 400, "INVALID_FIELD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, f, tt.tok, tt.method, tt.path, tt.body)
			code := ""
			if len(r.errs) > 0 {
				code = r.errs[0].Code
			}
			if r.status != tt.status || code != tt.code {
				t.Errorf("%s %s = %d %s, want %d %s", tt.method, tt.path, r.status, code, tt.status, tt.code)
			}
			if !strings.HasPrefix(r.limit, "api-usage=") {
				t.Errorf("Sforce-Limit-Info = %q, want api-usage=N/M on every response", r.limit)
			}
		})
	}
	if n := len(f.Tasks()); n != 6 {
		t.Errorf("%d tasks stored, want 6 (only the accepted creates)", n)
	}
}

func TestFaultsAndLimitHeader(t *testing.T) {
	f := salesforcefake.New(t, salesforcefake.Options{APILimit: 15000})
	tok := clientCredentials(t, f)
	f.SetAPIUsage(100)
	f.Fail(1, salesforcefake.Fault{Status: 403, Code: "REQUEST_LIMIT_EXCEEDED", Message: "TotalRequests Limit exceeded."})
	r := call(t, f, tok, "GET", "/services/data/v62.0/query?q=SELECT+Id+FROM+User", "")
	if r.status != 403 || r.errs[0].Code != "REQUEST_LIMIT_EXCEEDED" || r.limit != "api-usage=101/15000" {
		t.Errorf("injected fault = %+v", r)
	}
	if r := call(t, f, tok, "GET", "/services/data/v62.0/query?q=SELECT+Id+FROM+User", ""); r.status != 200 {
		t.Errorf("after the fault = %d, want 200", r.status)
	}
	f.ExpireSessions()
	if r := call(t, f, tok, "GET", "/services/data/v62.0/query?q=SELECT+Id+FROM+User", ""); r.status != 401 {
		t.Errorf("expired session = %d, want 401", r.status)
	}
}

func TestJWTBearer(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := salesforcefake.New(t, salesforcefake.Options{JWTKey: &key.PublicKey})
	now := time.Now()
	valid := jws.ClaimSet{Iss: f.ClientID(), Sub: salesforcefake.IntegrationUsername, Aud: f.URL, Exp: now.Add(2 * time.Minute).Unix()}
	other, _ := rsa.GenerateKey(rand.Reader, 1024)
	tests := []struct {
		name   string
		mutate func(*jws.ClaimSet)
		key    *rsa.PrivateKey
		ok     bool
	}{
		{"valid", func(*jws.ClaimSet) {}, key, true},
		{"exactly 3 minutes", func(c *jws.ClaimSet) { c.Exp = now.Add(3 * time.Minute).Unix() }, key, true},
		{"exp too far", func(c *jws.ClaimSet) { c.Exp = now.Add(4 * time.Minute).Unix() }, key, false},
		{"expired", func(c *jws.ClaimSet) { c.Exp = now.Add(-time.Second).Unix() }, key, false},
		{"wrong audience", func(c *jws.ClaimSet) { c.Aud = f.TokenURL() }, key, false},
		{"wrong issuer", func(c *jws.ClaimSet) { c.Iss = "someone" }, key, false},
		{"unknown subject", func(c *jws.ClaimSet) { c.Sub = "nobody@example.com" }, key, false},
		{"wrong key", func(*jws.ClaimSet) {}, other, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := valid
			tt.mutate(&cs)
			assertion, err := jws.Encode(&jws.Header{Algorithm: "RS256", Typ: "JWT"}, &cs, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			status, tr := token(t, f, url.Values{"grant_type": {salesforcefake.JWTGrantType}, "assertion": {assertion}})
			if (status == 200) != tt.ok {
				t.Errorf("status %d (%s), want ok=%v", status, tr.Error, tt.ok)
			}
			if !tt.ok && tr.Error != "invalid_grant" {
				t.Errorf("error = %q, want invalid_grant", tr.Error)
			}
		})
	}
}

func TestRefreshTokenRotationRevokesFamilyOnReplay(t *testing.T) {
	f := salesforcefake.New(t, salesforcefake.Options{RotateRefreshTokens: true})
	rt0 := f.IssueRefreshToken(salesforcefake.IntegrationUsername)
	refresh := func(rt string) (int, tokenResponse) {
		return token(t, f, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {f.ClientID()}, "client_secret": {f.ClientSecret()}})
	}
	status, tr := refresh(rt0)
	if status != 200 || tr.RefreshToken == "" || tr.RefreshToken == rt0 {
		t.Fatalf("first refresh = %d %+v, want a rotated refresh token", status, tr)
	}
	rt1 := tr.RefreshToken
	if status, tr := refresh(rt0); status != 400 || tr.Error != "invalid_grant" {
		t.Fatalf("replayed old token = %d %+v, want invalid_grant", status, tr)
	}
	// The replay revoked the whole family, the current token included.
	if status, _ := refresh(rt1); status != 400 {
		t.Errorf("current token after a replay = %d, want 400 (family revoked)", status)
	}
}

func TestAuthorizationCodeWithPKCE(t *testing.T) {
	f := salesforcefake.New(t, salesforcefake.Options{})
	verifier := "a-verifier-of-enough-length-0123456789-abcdefghijk"
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	redirect := "http://127.0.0.1:9/callback"
	authorize := func(v url.Values) *url.URL {
		noFollow := *f.Client()
		noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := noFollow.Get(f.AuthURL() + "?" + v.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		return loc
	}
	loc := authorize(url.Values{"response_type": {"code"}, "client_id": {f.ClientID()}, "redirect_uri": {redirect},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"}, "state": {"st"}})
	code := loc.Query().Get("code")
	if code == "" || loc.Query().Get("state") != "st" {
		t.Fatalf("authorize redirected to %v", loc)
	}
	exchange := func(code, verifier string) (int, tokenResponse) {
		return token(t, f, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
			"code_verifier": {verifier}, "client_id": {f.ClientID()}, "client_secret": {f.ClientSecret()}})
	}
	if status, _ := exchange(code, "wrong-verifier"); status != 400 {
		t.Errorf("wrong verifier = %d, want 400", status)
	}
	// A code is single use, even after a failed exchange.
	if status, _ := exchange(code, verifier); status != 400 {
		t.Errorf("reused code = %d, want 400", status)
	}
	code = authorize(url.Values{"response_type": {"code"}, "client_id": {f.ClientID()}, "redirect_uri": {redirect},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"}}).Query().Get("code")
	status, tr := exchange(code, verifier)
	if status != 200 || tr.RefreshToken == "" {
		t.Fatalf("exchange = %d %+v, want a refresh token", status, tr)
	}
	// A non-loopback callback is refused when the app names none.
	resp, err := f.Client().Get(f.AuthURL() + "?" + url.Values{"response_type": {"code"}, "client_id": {f.ClientID()}, "redirect_uri": {"https://evil.example/cb"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("foreign redirect_uri = %d, want 400", resp.StatusCode)
	}
}

func TestSearchAndQuery(t *testing.T) {
	f := salesforcefake.New(t, salesforcefake.Options{})
	tok := clientCredentials(t, f)
	c := f.AddContact(salesforcefake.Person{LastName: "A", Phone: "03-1234-5678"})
	l := f.AddLead(salesforcefake.Person{LastName: "B", Company: "X", MobilePhone: "+81 3 1234 5678"})
	f.AddContact(salesforcefake.Person{LastName: "C", Phone: "0399999999"})
	u := f.AddUser(salesforcefake.User{Username: "u", Email: "O'Brien@example.com"})

	getJSON := func(path string, v any) {
		req, _ := http.NewRequest("GET", f.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := f.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, b)
		}
		if err := json.NewDecoder(bytes.NewReader(b)).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	var sr struct {
		SearchRecords []struct {
			Attributes struct{ Type string } `json:"attributes"`
			ID         string                `json:"Id"`
		} `json:"searchRecords"`
	}
	getJSON("/services/data/v62.0/search/?q="+url.QueryEscape(`FIND {0312345678 OR \+81312345678} IN PHONE FIELDS RETURNING Contact(Id,OwnerId,LastModifiedDate),Lead(Id,OwnerId,LastModifiedDate)`), &sr)
	var got []string
	for _, r := range sr.SearchRecords {
		got = append(got, r.Attributes.Type+":"+r.ID)
	}
	if diff := cmp.Diff([]string{"Contact:" + c, "Lead:" + l}, got); diff != "" {
		t.Errorf("search (-want +got):\n%s", diff)
	}
	var qr struct {
		TotalSize int `json:"totalSize"`
		Records   []struct {
			ID string `json:"Id"`
		} `json:"records"`
	}
	getJSON("/services/data/v62.0/query?q="+url.QueryEscape(`SELECT Id FROM User WHERE Email = 'o\'brien@example.com' AND IsActive = true LIMIT 1`), &qr)
	if qr.TotalSize != 1 || qr.Records[0].ID != u {
		t.Errorf("query = %+v, want user %s", qr, u)
	}
}
