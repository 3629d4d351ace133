package salesforcefake

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2/jws"
)

// JWTGrantType is the grant_type of the JWT bearer flow.
const JWTGrantType = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// maxJWTLifetime is the longest exp Salesforce accepts in a JWT bearer assertion.
const maxJWTLifetime = 3 * time.Minute

// family is one chain of refresh tokens descended from one authorization. With rotation,
// only current is valid; replaying an older one revokes the family (theft detection).
type family struct {
	userID  string
	current string
	all     map[string]bool
	revoked bool
}

type authCode struct {
	redirectURI, challenge, userID string
	expires                        time.Time
}

type tokenError struct {
	status           int
	code, descripton string
}

func (f *Fake) serveToken(w http.ResponseWriter, r *http.Request) {
	f.count(OpToken)
	if r.Method != http.MethodPost {
		writeTokenError(w, tokenError{http.StatusBadRequest, "invalid_request", "must use HTTP POST"})
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		writeTokenError(w, tokenError{http.StatusBadRequest, "invalid_request", "unsupported content type"})
		return
	}
	if err := r.ParseForm(); err != nil {
		writeTokenError(w, tokenError{http.StatusBadRequest, "invalid_request", "malformed body"})
		return
	}
	form := r.PostForm
	id, secret := form.Get("client_id"), form.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var (
		userID, refresh string
		terr            *tokenError
	)
	switch form.Get("grant_type") {
	case "client_credentials":
		if terr = f.checkClient(id, secret, true); terr == nil {
			userID, terr = f.runAsUser()
		}
	case JWTGrantType:
		userID, terr = f.checkAssertion(form.Get("assertion"))
	case "refresh_token":
		if terr = f.checkClient(id, secret, true); terr == nil {
			userID, refresh, terr = f.useRefreshToken(form.Get("refresh_token"))
		}
	case "authorization_code":
		if terr = f.checkClient(id, secret, true); terr == nil {
			userID, terr = f.useCode(form.Get("code"), form.Get("redirect_uri"), form.Get("code_verifier"))
			if terr == nil {
				refresh = f.newFamily(userID)
			}
		}
	case "":
		terr = &tokenError{http.StatusBadRequest, "invalid_request", "grant type not specified"}
	default:
		terr = &tokenError{http.StatusBadRequest, "unsupported_grant_type", "grant type not supported"}
	}
	if terr != nil {
		writeTokenError(w, *terr)
		return
	}
	access := "00DFAKE!" + randomToken()
	f.sessions[access] = userID
	now := f.opts.Now()
	// Like Salesforce: no expires_in, and instance_url names the API host.
	resp := map[string]string{
		"access_token": access,
		"signature":    randomToken(),
		"scope":        "api refresh_token",
		"instance_url": f.URL,
		"id":           f.URL + "/id/00DFAKE000000001AAA/" + userID,
		"token_type":   "Bearer",
		"issued_at":    strconv.FormatInt(now.UnixMilli(), 10),
	}
	if refresh != "" {
		resp["refresh_token"] = refresh
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("Cache-Control", "no-cache,must-revalidate,max-age=0,no-store,private")
	_ = json.NewEncoder(w).Encode(resp)
}

func (f *Fake) checkClient(id, secret string, needSecret bool) *tokenError {
	if id != f.opts.ClientID {
		return &tokenError{http.StatusBadRequest, "invalid_client_id", "client identifier invalid"}
	}
	if needSecret && subtle.ConstantTimeCompare([]byte(secret), []byte(f.opts.ClientSecret)) != 1 {
		return &tokenError{http.StatusBadRequest, "invalid_client", "invalid client credentials"}
	}
	return nil
}

func (f *Fake) runAsUser() (string, *tokenError) {
	name := f.opts.RunAsUser
	if name == "-" {
		return "", &tokenError{http.StatusBadRequest, "invalid_grant", "no client credentials user enabled"}
	}
	if name == "" {
		name = IntegrationUsername
	}
	if id := f.activeUser(name); id != "" {
		return id, nil
	}
	return "", &tokenError{http.StatusBadRequest, "invalid_grant", "no client credentials user enabled"}
}

func (f *Fake) activeUser(username string) string {
	for id, u := range f.users {
		if strings.EqualFold(u.fields["Username"].(string), username) && u.fields["IsActive"] == true {
			return id
		}
	}
	return ""
}

// checkAssertion verifies a JWT bearer assertion the way Salesforce documents it: RS256
// signed by the connected app's certificate, iss = consumer key, aud = the login URL, sub = an
// active username, exp present, in the future and at most 3 minutes away.
func (f *Fake) checkAssertion(assertion string) (string, *tokenError) {
	invalid := func(desc string) (string, *tokenError) {
		return "", &tokenError{http.StatusBadRequest, "invalid_grant", desc}
	}
	if assertion == "" {
		return invalid("invalid assertion")
	}
	if f.opts.JWTKey == nil {
		return "", &tokenError{http.StatusBadRequest, "invalid_client", "invalid client credentials"}
	}
	header, _, ok := strings.Cut(assertion, ".")
	if !ok {
		return invalid("invalid assertion")
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if b, err := base64.RawURLEncoding.DecodeString(header); err != nil || json.Unmarshal(b, &h) != nil || h.Alg != "RS256" {
		return invalid("invalid assertion")
	}
	if err := jws.Verify(assertion, f.opts.JWTKey); err != nil {
		return invalid("invalid assertion")
	}
	cs, err := jws.Decode(assertion)
	if err != nil {
		return invalid("invalid assertion")
	}
	now := f.opts.Now()
	switch {
	case cs.Iss != f.opts.ClientID:
		return invalid("invalid client identifier")
	case cs.Aud != f.opts.Audience:
		return invalid("audience is invalid")
	case cs.Exp == 0 || time.Unix(cs.Exp, 0).Before(now):
		return invalid("expired authorization code")
	case time.Unix(cs.Exp, 0).Sub(now) > maxJWTLifetime:
		return invalid("invalid assertion: exp is more than 3 minutes away")
	}
	id := f.activeUser(cs.Sub)
	if id == "" {
		return invalid("user hasn't approved this consumer")
	}
	return id, nil
}

func (f *Fake) newFamily(userID string) string {
	tok := "5Aep" + randomToken()
	fam := &family{userID: userID, current: tok, all: map[string]bool{tok: true}}
	f.refresh[tok] = fam
	return tok
}

// useRefreshToken returns the user and, with rotation, the new refresh token.
func (f *Fake) useRefreshToken(tok string) (string, string, *tokenError) {
	expired := &tokenError{http.StatusBadRequest, "invalid_grant", "expired access/refresh token"}
	fam, ok := f.refresh[tok]
	if !ok || fam.revoked {
		return "", "", expired
	}
	if !f.opts.RotateRefreshTokens {
		return fam.userID, "", nil
	}
	if tok != fam.current {
		// An old token replayed: someone kept a copy. Revoke the whole family.
		fam.revoked = true
		return "", "", expired
	}
	next := "5Aep" + randomToken()
	fam.current = next
	fam.all[next] = true
	f.refresh[next] = fam
	return fam.userID, next, nil
}

// IssueRefreshToken makes a refresh token for a user as if an admin had connected the app
// (what `oauth connect` would store), for tests that start from the refresh token flow.
func (f *Fake) IssueRefreshToken(username string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.activeUser(username)
	if id == "" {
		panic(fmt.Sprintf("salesforcefake: no active user %q", username))
	}
	return f.newFamily(id)
}

// serveAuthorize plays the user's browser consent: it checks the request like Salesforce's
// authorize endpoint and redirects straight back with a code, as if the admin had logged in
// and approved (the admin is the integration user).
func (f *Fake) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	f.count(OpAuthorize)
	q := r.URL.Query()
	redirect := q.Get("redirect_uri")
	f.mu.Lock()
	defer f.mu.Unlock()
	if q.Get("client_id") != f.opts.ClientID {
		http.Error(w, "error=invalid_client_id: client identifier invalid", http.StatusBadRequest)
		return
	}
	if !f.callbackAllowed(redirect) {
		http.Error(w, "error=redirect_uri_mismatch: redirect_uri must match configuration", http.StatusBadRequest)
		return
	}
	back, _ := url.Parse(redirect)
	v := back.Query()
	if state := q.Get("state"); state != "" {
		v.Set("state", state)
	}
	fail := func(code, desc string) {
		v.Set("error", code)
		v.Set("error_description", desc)
		back.RawQuery = v.Encode()
		http.Redirect(w, r, back.String(), http.StatusFound)
	}
	if q.Get("response_type") != "code" {
		fail("unsupported_response_type", "response type not supported")
		return
	}
	challenge := q.Get("code_challenge")
	if challenge != "" && q.Get("code_challenge_method") != "S256" {
		fail("invalid_request", "code_challenge_method must be S256")
		return
	}
	code := "aPrx" + randomToken()
	f.codes[code] = &authCode{redirectURI: redirect, challenge: challenge, userID: f.activeUser(IntegrationUsername), expires: f.opts.Now().Add(15 * time.Minute)}
	v.Set("code", code)
	back.RawQuery = v.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (f *Fake) callbackAllowed(redirect string) bool {
	if f.opts.CallbackURL != "" {
		return redirect == f.opts.CallbackURL
	}
	u, err := url.Parse(redirect)
	if err != nil || u.Scheme != "http" {
		return false
	}
	h := u.Hostname()
	return h == "localhost" || h == "127.0.0.1" || h == "::1"
}

func (f *Fake) useCode(code, redirect, verifier string) (string, *tokenError) {
	bad := &tokenError{http.StatusBadRequest, "invalid_grant", "invalid authorization code"}
	ac, ok := f.codes[code]
	if !ok {
		return "", bad
	}
	delete(f.codes, code) // single use
	if f.opts.Now().After(ac.expires) {
		return "", &tokenError{http.StatusBadRequest, "invalid_grant", "expired authorization code"}
	}
	if redirect != ac.redirectURI {
		return "", &tokenError{http.StatusBadRequest, "redirect_uri_mismatch", "redirect_uri must match configuration"}
	}
	if ac.challenge != "" {
		sum := sha256.Sum256([]byte(verifier))
		if verifier == "" || base64.RawURLEncoding.EncodeToString(sum[:]) != ac.challenge {
			return "", &tokenError{http.StatusBadRequest, "invalid_grant", "invalid code verifier"}
		}
	}
	return ac.userID, nil
}

func writeTokenError(w http.ResponseWriter, e tokenError) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": e.code, "error_description": e.descripton})
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (f *Fake) count(op string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[op]++
}
