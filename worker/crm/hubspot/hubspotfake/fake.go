// Package hubspotfake is a local HTTP fake of the HubSpot APIs the connector uses: the OAuth
// token endpoint, owners, contact and call search, calls (single and batch), contact create
// and v4 associations. It follows HubSpot's documented paths, bodies, status codes, error
// bodies and limits and rejects, like HubSpot, what HubSpot would
// reject. Where it is stricter than HubSpot it says so: property values must be JSON
// strings (HubSpot coerces numbers; we promise strings).
//
// Tests seed contacts, owners and custom properties, inject failures (429 storms, 5xx,
// expired or revoked tokens, search-index lag) and inspect what was stored and requested.
package hubspotfake

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configure a fake account.
type Options struct {
	// ClientID and ClientSecret of the OAuth app (defaults "client-id", "client-secret").
	ClientID, ClientSecret string
	// RotateRefreshTokens makes every refresh return a new refresh token and revoke the old
	// one (HubSpot does not rotate; other CRMs do: the connector must cope either way).
	RotateRefreshTokens bool
	// RequestsPer10s is the account's rolling 10-second limit (default 100, Free/Starter).
	RequestsPer10s int
	// SearchPerSecond is the search endpoints' limit (default 5).
	SearchPerSecond int
	// Daily is the daily allowance reported in headers (default 250000).
	Daily int
	// TakenUniqueRefusesBatch makes a batch create whose input carries a value a unique
	// property already holds refuse the whole request (409 CONFLICT, nothing written)
	// instead of that input alone in a 207. HubSpot documents per-input answers for traced
	// inputs (the default here) but not this case specifically; the connector copes with
	// either.
	TakenUniqueRefusesBatch bool
	// CountryCode is stripped from +E.164 phone numbers to compute the searchable phone
	// properties (default "81").
	CountryCode string
}

// Object is a stored CRM record.
type Object struct {
	ID         string            `json:"id"`
	Properties map[string]string `json:"properties"`
	CreatedAt  time.Time         `json:"createdAt"`
	UpdatedAt  time.Time         `json:"updatedAt"`
	// Contacts the object (a call) is associated with, by association type 194.
	Contacts []string `json:"-"`
	// Writes counts creates and updates of the object.
	Writes    int       `json:"-"`
	indexedAt time.Time // visible to search from then on
}

// Request is one request the fake received.
type Request struct {
	Method string
	Path   string
	Query  url.Values
	Body   string
	Route  string // e.g. "POST /crm/v3/objects/calls"
}

// Server is a fake HubSpot account.
type Server struct {
	*httptest.Server
	o Options

	mu            sync.Mutex
	calls         map[string]*Object
	callsBy       map[string]map[string]bool // property "\x00" value -> ids of the calls holding it
	contacts      map[string]*Object
	owners        map[string]string // id -> email
	callProps     map[string]bool   // custom call properties -> hasUniqueValue
	dispositions  map[string]bool
	privateApps   map[string]bool
	access        map[string]time.Time // OAuth access token -> expiry
	refresh       map[string]bool
	codes         map[string]string // authorization code -> redirect uri
	nextID        int
	window        []time.Time // API requests in the last 10 s
	searchWindow  []time.Time // search requests in the last 1 s
	daily         int
	storm         int // next API requests answered 429
	failures      []int
	searchLag     time.Duration
	requests      []Request
	tokenRequests int
	check         checkState // scopes, token info, properties, account (check.go)
	batch         batchState // batch.go
}

// New starts a fake and closes it when the test ends.
func New(t testing.TB, o Options) *Server {
	if o.ClientID == "" {
		o.ClientID = "client-id"
	}
	if o.ClientSecret == "" {
		o.ClientSecret = "client-secret"
	}
	if o.RequestsPer10s == 0 {
		o.RequestsPer10s = 100
	}
	if o.SearchPerSecond == 0 {
		o.SearchPerSecond = 5
	}
	if o.Daily == 0 {
		o.Daily = 250000
	}
	if o.CountryCode == "" {
		o.CountryCode = "81"
	}
	s := &Server{
		o: o, calls: map[string]*Object{}, callsBy: map[string]map[string]bool{}, contacts: map[string]*Object{}, owners: map[string]string{},
		callProps: map[string]bool{}, dispositions: map[string]bool{}, privateApps: map[string]bool{},
		access: map[string]time.Time{}, refresh: map[string]bool{}, codes: map[string]string{}, nextID: 1000,
	}
	for _, d := range defaultDispositions {
		s.dispositions[d] = true
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// TokenURL is the v1 token endpoint (BAD_REFRESH_TOKEN style errors).
func (s *Server) TokenURL() string { return s.URL + "/oauth/v1/token" }

// TokenURL2026 is the dated token endpoint (RFC 6749 invalid_grant style errors).
func (s *Server) TokenURL2026() string { return s.URL + "/oauth/2026-03/token" }

// ---- seeding and hooks ----

// AddPrivateAppToken accepts tok as a static bearer token.
func (s *Server) AddPrivateAppToken(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.privateApps[tok] = true
}

// IssueRefreshToken returns a new valid refresh token, as after an admin's consent.
func (s *Server) IssueRefreshToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := "rt-" + randHex(8)
	s.refresh[rt] = true
	return rt
}

// AddAuthCode makes code redeemable once with the authorization_code grant.
func (s *Server) AddAuthCode(code, redirectURI string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = redirectURI
}

// RevokeRefreshTokens revokes every refresh token and access token (app uninstalled).
func (s *Server) RevokeRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh = map[string]bool{}
	s.access = map[string]time.Time{}
}

// ExpireAccessTokens makes every issued access token expired, as 30 minutes later.
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.access {
		s.access[k] = time.Now().Add(-time.Minute)
	}
}

// AddOwner adds a HubSpot user (owner) and returns its id.
func (s *Server) AddOwner(email string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newID()
	s.owners[id] = email
	return id
}

// AddContact adds a contact with properties (phone, mobilephone, email, ...) and returns its
// id. lastmodifieddate is set to now unless given (RFC 3339).
func (s *Server) AddContact(props map[string]string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addContact(props, time.Time{})
}

func (s *Server) addContact(props map[string]string, indexedAt time.Time) string {
	id := s.newID()
	now := time.Now().UTC()
	p := map[string]string{"createdate": now.Format(time.RFC3339Nano), "lastmodifieddate": now.Format(time.RFC3339Nano), "hs_object_id": id}
	for k, v := range props {
		p[k] = v
	}
	p["hs_searchable_calculated_phone_number"] = s.searchable(p["phone"])
	p["hs_searchable_calculated_mobile_number"] = s.searchable(p["mobilephone"])
	s.contacts[id] = &Object{ID: id, Properties: p, CreatedAt: now, UpdatedAt: now, indexedAt: indexedAt}
	return id
}

// searchable models HubSpot's calculated phone properties: digits only, without the country
// code when the number was entered with one.
func (s *Server) searchable(phone string) string {
	if phone == "" {
		return ""
	}
	var b strings.Builder
	for _, r := range phone {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	d := b.String()
	if strings.HasPrefix(strings.TrimSpace(phone), "+") {
		d = strings.TrimPrefix(d, s.o.CountryCode)
	}
	return d
}

// DefineCallProperty creates a custom call property; unique means hasUniqueValue: true.
func (s *Server) DefineCallProperty(name string, unique bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.callProps[name] = unique
}

// Inject429 answers the next n API requests with 429 TEN_SECONDLY_ROLLING.
func (s *Server) Inject429(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storm = n
}

// InjectStatus answers the next API requests with these statuses (e.g. 502, 503, 423).
func (s *Server) InjectStatus(statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, statuses...)
}

// SetSearchLag delays the visibility of new and changed records to search.
func (s *Server) SetSearchLag(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.searchLag = d
}

// ---- inspection ----

// Calls returns copies of the stored calls, ordered by id.
func (s *Server) Calls() []Object {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedCopies(s.calls)
}

// Contacts returns copies of the stored contacts, ordered by id.
func (s *Server) Contacts() []Object {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedCopies(s.contacts)
}

// Call returns a copy of one call.
func (s *Server) Call(id string) (Object, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.calls[id]
	if !ok {
		return Object{}, false
	}
	return copyObject(c), true
}

// Requests returns every API request received (token requests excluded), in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Count returns how many API requests matched route, e.g. "POST /crm/v3/objects/contacts/search".
func (s *Server) Count(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r.Route == route {
			n++
		}
	}
	return n
}

// TokenRequests counts calls to the token endpoints.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenRequests
}

func sortedCopies(m map[string]*Object) []Object {
	out := make([]Object, 0, len(m))
	for _, o := range m {
		out = append(out, copyObject(o))
	}
	sort.Slice(out, func(i, j int) bool { return numLess(out[i].ID, out[j].ID) })
	return out
}

func numLess(a, b string) bool {
	ai, _ := strconv.Atoi(a)
	bi, _ := strconv.Atoi(b)
	return ai < bi
}

func copyObject(o *Object) Object {
	c := *o
	c.Properties = make(map[string]string, len(o.Properties))
	for k, v := range o.Properties {
		c.Properties[k] = v
	}
	c.Contacts = append([]string(nil), o.Contacts...)
	return c
}

func (s *Server) newID() string {
	s.nextID++
	return strconv.Itoa(s.nextID)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ---- HTTP ----

var (
	reCall        = regexp.MustCompile(`^/crm/v3/objects/calls/([^/]+)$`)
	reAssociation = regexp.MustCompile(`^/crm/v4/objects/(calls?)/([^/]+)/associations/(contacts?)/([^/]+)$`)
)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/oauth/v1/token" || r.URL.Path == "/oauth/2026-03/token" {
		s.token(w, r)
		return
	}
	body, err := readBody(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON", nil)
		return
	}
	route, handler := s.route(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Body: string(body), Route: route})
	if handler == nil {
		writeError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "Unable to route "+r.Method+" request to "+r.URL.Path, nil)
		return
	}
	if !unauthenticated(route) && (!s.authorised(w, r) || !s.scoped(w, r)) {
		return
	}
	search := strings.HasSuffix(r.URL.Path, "/search")
	if !s.admit(w, search) {
		return
	}
	if len(s.failures) > 0 {
		st := s.failures[0]
		s.failures = s.failures[1:]
		if st == 477 || st == http.StatusLocked {
			w.Header().Set("Retry-After", "1")
		}
		writeError(w, st, "INTERNAL_ERROR", http.StatusText(st), nil)
		return
	}
	handler(w, r, body)
}

func (s *Server) route(r *http.Request) (string, func(http.ResponseWriter, *http.Request, []byte)) {
	p := r.URL.Path
	switch {
	case r.Method == http.MethodGet && p == "/crm/v3/owners":
		return "GET /crm/v3/owners", s.getOwners
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/crm/v3/owners/"):
		return "GET /crm/v3/owners/{id}", s.getOwner
	case r.Method == http.MethodPost && p == "/crm/v3/objects/contacts/search":
		return "POST /crm/v3/objects/contacts/search", func(w http.ResponseWriter, r *http.Request, b []byte) { s.search(w, b, s.contacts) }
	case r.Method == http.MethodPost && p == "/crm/v3/objects/calls/search":
		return "POST /crm/v3/objects/calls/search", func(w http.ResponseWriter, r *http.Request, b []byte) { s.search(w, b, s.calls) }
	case r.Method == http.MethodPost && p == "/crm/v3/objects/contacts":
		return "POST /crm/v3/objects/contacts", s.createContact
	case r.Method == http.MethodPost && p == "/crm/v3/objects/calls":
		return "POST /crm/v3/objects/calls", s.createCall
	case r.Method == http.MethodPost && p == "/crm/v3/objects/calls/batch/upsert":
		return "POST /crm/v3/objects/calls/batch/upsert", s.batchUpsert
	case r.Method == http.MethodPost && p == "/crm/v3/objects/calls/batch/create":
		return "POST /crm/v3/objects/calls/batch/create", s.batchCreate
	case r.Method == http.MethodPost && p == "/crm/v3/objects/calls/batch/update":
		return "POST /crm/v3/objects/calls/batch/update", s.batchUpdate
	case r.Method == http.MethodPost && p == "/crm/v4/associations/calls/contacts/batch/create":
		return "POST /crm/v4/associations/calls/contacts/batch/create", s.batchAssociate
	case r.Method == http.MethodPost && p == "/crm/v3/objects/calls/batch/read":
		return "POST /crm/v3/objects/calls/batch/read", s.batchRead
	case r.Method == http.MethodPatch && reCall.MatchString(p) && !strings.Contains(p, "/batch"):
		return "PATCH /crm/v3/objects/calls/{id}", s.updateCall
	case r.Method == http.MethodGet && reCall.MatchString(p):
		return "GET /crm/v3/objects/calls/{id}", s.getCall
	case r.Method == http.MethodPut && reAssociation.MatchString(p):
		return "PUT /crm/v4/objects/calls/{id}/associations/contacts/{id}", s.associate
	}
	if route, h := s.checkRoute(r); h != nil {
		return route, h
	}
	return r.Method + " " + p, nil
}

func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	defer r.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
		if b.Len() > 10<<20 {
			return nil, fmt.Errorf("body too large")
		}
	}
	return []byte(b.String()), nil
}

// authorised checks the bearer token: a private-app token or an unexpired OAuth token.
func (s *Server) authorised(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		writeError(w, http.StatusUnauthorized, "INVALID_AUTHENTICATION",
			"Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview", nil)
		return false
	}
	if s.privateApps[tok] {
		return true
	}
	exp, known := s.access[tok]
	if !known {
		writeError(w, http.StatusUnauthorized, "INVALID_AUTHENTICATION", "The OAuth token used to make this call is not valid.", nil)
		return false
	}
	if !time.Now().Before(exp) {
		mins := int(time.Since(exp).Minutes())
		writeError(w, http.StatusUnauthorized, "EXPIRED_AUTHENTICATION", fmt.Sprintf("The OAuth token used to make this call expired %d minute(s) ago.", mins), nil)
		return false
	}
	return true
}

// admit applies the rolling limits and sets the rate-limit headers (search responses carry
// none, as documented).
func (s *Server) admit(w http.ResponseWriter, search bool) bool {
	now := time.Now()
	s.window = prune(s.window, now.Add(-10*time.Second))
	s.searchWindow = prune(s.searchWindow, now.Add(-time.Second))
	if s.storm > 0 {
		s.storm--
		s.rateHeaders(w, 0)
		writeRateLimit(w, "TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit.")
		return false
	}
	if search {
		if len(s.searchWindow) >= s.o.SearchPerSecond {
			writeRateLimit(w, "SECONDLY", "You have reached your secondly limit.")
			return false
		}
		s.searchWindow = append(s.searchWindow, now)
	}
	if len(s.window) >= s.o.RequestsPer10s {
		if !search {
			s.rateHeaders(w, 0)
		}
		writeRateLimit(w, "TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit.")
		return false
	}
	s.window = append(s.window, now)
	s.daily++
	if !search {
		s.rateHeaders(w, s.o.RequestsPer10s-len(s.window))
	}
	return true
}

func (s *Server) rateHeaders(w http.ResponseWriter, remaining int) {
	h := w.Header()
	h.Set("X-HubSpot-RateLimit-Max", strconv.Itoa(s.o.RequestsPer10s))
	h.Set("X-HubSpot-RateLimit-Remaining", strconv.Itoa(max(remaining, 0)))
	h.Set("X-HubSpot-RateLimit-Interval-Milliseconds", "10000")
	h.Set("X-HubSpot-RateLimit-Daily", strconv.Itoa(s.o.Daily))
	h.Set("X-HubSpot-RateLimit-Daily-Remaining", strconv.Itoa(max(s.o.Daily-s.daily, 0)))
}

func prune(ts []time.Time, after time.Time) []time.Time {
	i := 0
	for i < len(ts) && !ts[i].After(after) {
		i++
	}
	return ts[i:]
}

func writeRateLimit(w http.ResponseWriter, policy, msg string) {
	writeJSON(w, http.StatusTooManyRequests, map[string]any{
		"status": "error", "message": msg, "errorType": "RATE_LIMIT",
		"correlationId": uuid(), "policyName": policy, "requestId": uuid(),
	})
}

// writeError writes a v3 error body.
func writeError(w http.ResponseWriter, status int, category, message string, errs []map[string]any) {
	body := map[string]any{"status": "error", "message": message, "correlationId": uuid(), "category": category}
	if len(errs) > 0 {
		body["errors"] = errs
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func uuid() string {
	b := randHex(16)
	return b[:8] + "-" + b[8:12] + "-" + b[12:16] + "-" + b[16:20] + "-" + b[20:]
}

// ---- OAuth ----

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	dated := strings.Contains(r.URL.Path, "2026-03")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenRequests++
	if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		s.tokenError(w, dated, "invalid_request", "BAD_REQUEST", "the token endpoint takes a form-encoded POST")
		return
	}
	if err := r.ParseForm(); err != nil {
		s.tokenError(w, dated, "invalid_request", "BAD_REQUEST", "unreadable form")
		return
	}
	f := r.PostForm
	if f.Get("client_id") != s.o.ClientID || f.Get("client_secret") != s.o.ClientSecret {
		s.tokenError(w, dated, "invalid_client", "BAD_CLIENT_ID", "missing or unknown client id")
		return
	}
	var rt string
	switch f.Get("grant_type") {
	case "authorization_code":
		redirect, ok := s.codes[f.Get("code")]
		if !ok || redirect != f.Get("redirect_uri") {
			s.tokenError(w, dated, "invalid_grant", "BAD_AUTH_CODE", "missing or invalid auth code")
			return
		}
		delete(s.codes, f.Get("code"))
		rt = "rt-" + randHex(8)
		s.refresh[rt] = true
	case "refresh_token":
		rt = f.Get("refresh_token")
		if !s.refresh[rt] {
			s.tokenError(w, dated, "invalid_grant", "BAD_REFRESH_TOKEN", "missing or invalid refresh token")
			return
		}
		if s.o.RotateRefreshTokens {
			delete(s.refresh, rt)
			rt = "rt-" + randHex(8)
			s.refresh[rt] = true
		}
	default:
		s.tokenError(w, dated, "unsupported_grant_type", "BAD_GRANT_TYPE", "grant_type must be authorization_code or refresh_token")
		return
	}
	at := "at-" + randHex(12)
	s.access[at] = time.Now().Add(30 * time.Minute)
	writeJSON(w, http.StatusOK, map[string]any{"token_type": "bearer", "refresh_token": rt, "access_token": at, "expires_in": 1800})
}

// tokenError answers like the v1 endpoint ({"status":"BAD_REFRESH_TOKEN",...}) or like the
// dated one (RFC 6749 {"error":"invalid_grant",...}).
func (s *Server) tokenError(w http.ResponseWriter, dated bool, oauthCode, status, msg string) {
	if dated {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": oauthCode, "error_description": msg})
		return
	}
	writeJSON(w, http.StatusBadRequest, map[string]any{"status": status, "message": msg, "correlationId": uuid()})
}

// ---- owners ----

func (s *Server) getOwners(w http.ResponseWriter, r *http.Request, _ []byte) {
	email := r.URL.Query().Get("email")
	results := []map[string]any{}
	ids := make([]string, 0, len(s.owners))
	for id := range s.owners {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return numLess(ids[i], ids[j]) })
	for _, id := range ids {
		if email == "" || strings.EqualFold(s.owners[id], email) {
			results = append(results, ownerJSON(id, s.owners[id]))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results})
}

func (s *Server) getOwner(w http.ResponseWriter, r *http.Request, _ []byte) {
	id := strings.TrimPrefix(r.URL.Path, "/crm/v3/owners/")
	email, ok := s.owners[id]
	if !ok {
		writeError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "resource not found", nil)
		return
	}
	writeJSON(w, http.StatusOK, ownerJSON(id, email))
}

func ownerJSON(id, email string) map[string]any {
	return map[string]any{"id": id, "email": email, "type": "PERSON", "firstName": "", "lastName": "",
		"userId": 9000, "archived": false, "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-01T00:00:00Z"}
}
