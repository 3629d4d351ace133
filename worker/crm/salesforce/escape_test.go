package salesforce_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/crm/salesforce/salesforcefake"
)

func TestEscapeSOSL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0312345678", "0312345678"},
		{"+81312345678", `\+81312345678`},
		{"03-1234-5678", `03\-1234\-5678`},
		{"(03) 1234-5678", `\(03\) 1234\-5678`},
		{"} IN ALL FIELDS RETURNING User(Id", `\} IN ALL FIELDS RETURNING User\(Id`},
		{`a\b`, `a\\b`},
		{"*?", `\*\?`},
		{`?&|!{}[]()^~*:\"'+-`, `\?\&\|\!\{\}\[\]\(\)\^\~\*\:\\\"\'\+\-`},
		{"line\nbreak\x00", "linebreak"},
		{"０３ー１２３４", "０３ー１２３４"}, // full-width digits are not reserved
		{"", ""},
	}
	for _, tt := range tests {
		if got := salesforce.EscapeSOSL(tt.in); got != tt.want {
			t.Errorf("EscapeSOSL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestEscapeSOQL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"rep@example.com", "rep@example.com"},
		{"o'brien@example.com", `o\'brien@example.com`},
		{`back\slash`, `back\\slash`},
		{`x' OR Email != '`, `x\' OR Email != \'`},
		{"tab\there\nnl", `tab\there\nnl`},
		{`"q"`, `\"q\"`},
	}
	for _, tt := range tests {
		if got := salesforce.EscapeSOQL(tt.in); got != tt.want {
			t.Errorf("EscapeSOQL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// Every escaped term is a well-formed SOSL query for the fake, which, like Salesforce,
// refuses unescaped reserved characters; the unescaped term is refused.
func TestEscapedSOSLIsAccepted(t *testing.T) {
	e := setup(t, salesforce.FlowClientCredentials, salesforcefake.Options{})
	tok := fakeToken(t, e.fake)
	for _, term := range []string{"+81312345678", "03-1234-5678", "(03)1234", "x}y", `?&|!{}[]()^~*:\"'+-`} {
		for _, escape := range []bool{true, false} {
			q := term
			if escape {
				q = salesforce.EscapeSOSL(term)
			}
			status := get(t, e.fake, tok, "/services/data/v62.0/search/?q="+url.QueryEscape("FIND {"+q+"} IN PHONE FIELDS RETURNING Contact(Id)"))
			if want := map[bool]int{true: 200, false: 400}[escape]; status != want {
				t.Errorf("search for %q (escaped %v) = %d, want %d", term, escape, status, want)
			}
		}
	}
}

func fakeToken(t *testing.T, f *salesforcefake.Fake) string {
	t.Helper()
	resp, err := f.Client().PostForm(f.TokenURL(), url.Values{"grant_type": {"client_credentials"}, "client_id": {f.ClientID()}, "client_secret": {f.ClientSecret()}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := decodeJSON(resp, &out); err != nil || out.AccessToken == "" {
		t.Fatalf("token: %v %+v", err, out)
	}
	return out.AccessToken
}

func get(t *testing.T, f *salesforcefake.Fake, tok, path string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := f.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
