package salesforcefake

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// apiError is one element of Salesforce's REST error array.
type apiError struct {
	Code    string   `json:"errorCode"`
	Message string   `json:"message"`
	Fields  []string `json:"fields,omitempty"`
}

func writeErrors(w http.ResponseWriter, status int, errs ...apiError) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errs)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

var (
	versionRe = regexp.MustCompile(`^v(\d{2})\.0$`)
	idRe      = regexp.MustCompile(`^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$`)
)

var errSession = apiError{"INVALID_SESSION_ID", "Session expired or invalid", nil}

// serveAPI is /services/data/vXX.X/...: the REST API. It holds the lock for the whole request,
// which keeps the fake simple and its behaviour deterministic.
func (f *Fake) serveAPI(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[OpAPI]++
	f.apiUsed++
	w.Header().Set("Sforce-Limit-Info", fmt.Sprintf("api-usage=%d/%d", f.apiUsed, f.opts.APILimit))

	if len(f.faults) > 0 {
		fault := f.faults[0]
		f.faults = f.faults[1:]
		for k, v := range fault.Header {
			w.Header()[k] = v
		}
		msg := fault.Message
		if msg == "" {
			msg = http.StatusText(fault.Status)
		}
		writeErrors(w, fault.Status, apiError{fault.Code, msg, nil})
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || f.sessions[tok] == "" {
		writeErrors(w, http.StatusUnauthorized, errSession)
		return
	}
	runAs := f.sessions[tok]

	// Split the escaped path so an external id value may hold an escaped "/".
	parts := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/services/data/"), "/")
	for i, p := range parts {
		parts[i], _ = url.PathUnescape(p)
	}
	version := 0
	if m := versionRe.FindStringSubmatch(parts[0]); m != nil {
		version, _ = strconv.Atoi(m[1])
	}
	if version < 31 || version > 66 {
		writeErrors(w, http.StatusNotFound, apiError{"NOT_FOUND", "The requested resource does not exist", nil})
		return
	}
	rest := parts[1:]
	if n := len(rest); n > 0 && rest[n-1] == "" {
		rest = rest[:n-1] // search/ and query/ are the documented spellings; both work
	}
	notFound := func() {
		writeErrors(w, http.StatusNotFound, apiError{"NOT_FOUND", "The requested resource does not exist", nil})
	}
	method := func(allowed ...string) bool {
		if slices.Contains(allowed, r.Method) {
			return true
		}
		writeErrors(w, http.StatusMethodNotAllowed, apiError{"METHOD_NOT_ALLOWED",
			fmt.Sprintf("HTTP Method '%s' not allowed. Allowed are %s", r.Method, strings.Join(allowed, ",")), nil})
		return false
	}
	switch {
	case len(rest) == 1 && rest[0] == "query":
		if method(http.MethodGet) {
			f.counts[OpQuery]++
			f.query(w, r.URL.Query().Get("q"), parts[0])
		}
	case len(rest) == 1 && rest[0] == "search":
		if method(http.MethodGet) {
			f.counts[OpSearch]++
			f.search(w, r.URL.Query().Get("q"), parts[0])
		}
	case len(rest) == 1 && rest[0] == "sobjects":
		if method(http.MethodGet) {
			f.counts[OpDescribeAll]++
			f.describeGlobal(w, parts[0])
		}
	case len(rest) == 3 && rest[0] == "sobjects" && rest[2] == "describe":
		if method(http.MethodGet) {
			f.counts[OpDescribe]++
			f.describe(w, rest[1], parts[0])
		}
	case len(rest) == 4 && rest[0] == "composite" && rest[1] == "sobjects":
		if version < 46 { // sObject Collections upsert came with API 46.0
			notFound()
			return
		}
		if rest[2] != "Task" {
			notFound() // the only object the fake keeps
			return
		}
		field, ok := f.externalIDField(rest[3])
		if !ok {
			// CRM.md: an upsert naming a field that does not exist answers 404 NOT_FOUND.
			// Salesforce does not document the collection's own answer; a connector must
			// not depend on which it is (see the connector's record key handling).
			writeErrors(w, http.StatusNotFound, apiError{"NOT_FOUND", "Provided external ID field does not exist or is not accessible: " + rest[3], nil})
			return
		}
		if method(http.MethodPatch) {
			f.counts[OpCollection]++
			f.upsertCollection(w, r, field, runAs, version, parts[0])
		}
	case len(rest) == 4 && rest[0] == "sobjects" && rest[1] == "Task":
		field, ok := f.externalIDField(rest[2])
		if !ok {
			writeErrors(w, http.StatusNotFound, apiError{"NOT_FOUND", "Provided external ID field does not exist or is not accessible: " + rest[2], nil})
			return
		}
		switch r.Method {
		case http.MethodPatch:
			f.counts[OpUpsert]++
			f.upsertTask(w, r, field, rest[3], runAs, version, parts[0])
		case http.MethodGet:
			f.counts[OpGetByExternal]++
			f.getTask(w, r, field, rest[3], parts[0])
		default:
			method(http.MethodGet, http.MethodPatch)
		}
	case len(rest) == 2 && rest[0] == "sobjects" && (rest[1] == "Lead" || rest[1] == "Contact"):
		if method(http.MethodPost) {
			f.counts[OpCreate]++
			f.create(w, r, rest[1], runAs)
		}
	default:
		notFound()
	}
}

// externalIDField resolves an External ID field name as Salesforce does: field names are
// case-insensitive. The caller holds mu.
func (f *Fake) externalIDField(name string) (string, bool) {
	for _, n := range slices.Sorted(maps.Keys(f.extFields)) {
		if strings.EqualFold(n, name) {
			return n, true
		}
	}
	return "", false
}

// fieldKind is a Salesforce field type as far as validation needs it.
type fieldKind int

const (
	kindString fieldKind = iota
	kindPicklist
	kindInt
	kindDate
	kindDateTime
	kindBool
	kindRef
)

type fieldSpec struct {
	kind       fieldKind
	max        int      // strings: maximum length in characters
	values     []string // restricted picklist values
	to         []string // references: the objects an id may name
	createOnly bool     // createable, not updateable
	required   bool     // on create
	externalID bool     // marked External ID
	unique     bool     // marked Unique
}

// taskSchema is Task's fields as the fake's org has them now. The caller holds mu.
func (f *Fake) taskSchema() map[string]fieldSpec {
	s := baseTaskSchema(f.opts.CustomTaskFields)
	for n, unique := range f.extFields {
		s[n] = fieldSpec{kind: kindString, max: 255, externalID: true, unique: unique}
	}
	return s
}

func baseTaskSchema(custom map[string]int) map[string]fieldSpec {
	s := map[string]fieldSpec{
		"Subject":               {kind: kindString, max: 255},
		"Description":           {kind: kindString, max: 32000},
		"TaskSubtype":           {kind: kindPicklist, values: []string{"Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"}, createOnly: true},
		"CallType":              {kind: kindPicklist, values: []string{"Inbound", "Internal", "Outbound"}},
		"CallDurationInSeconds": {kind: kindInt},
		"CallObject":            {kind: kindString, max: 255},
		"CallDisposition":       {kind: kindString, max: 255},
		"ActivityDate":          {kind: kindDate},
		"Status":                {kind: kindPicklist, values: []string{"Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"}},
		"Priority":              {kind: kindPicklist, values: []string{"High", "Normal", "Low"}},
		"Type":                  {kind: kindString, max: 40},
		"WhoId":                 {kind: kindRef, to: []string{"Contact", "Lead"}},
		"WhatId":                {kind: kindRef},
		"OwnerId":               {kind: kindRef, to: []string{"User"}},
		"IsReminderSet":         {kind: kindBool},
		"ReminderDateTime":      {kind: kindDateTime},
	}
	for n, max := range custom {
		s[n] = fieldSpec{kind: kindString, max: max}
	}
	return s
}

func personSchema(object string) map[string]fieldSpec {
	s := map[string]fieldSpec{
		"LastName":    {kind: kindString, max: 80, required: true},
		"FirstName":   {kind: kindString, max: 40},
		"Phone":       {kind: kindString, max: 40},
		"MobilePhone": {kind: kindString, max: 40},
		"LeadSource":  {kind: kindString, max: 255},
		"Description": {kind: kindString, max: 32000},
		"OwnerId":     {kind: kindRef, to: []string{"User"}},
	}
	if object == "Lead" {
		s["Company"] = fieldSpec{kind: kindString, max: 255, required: true}
		s["Status"] = fieldSpec{kind: kindString, max: 40}
	}
	return s
}

// decodeBody reads a JSON object body the way the REST API does: JSON only, numbers kept
// exact so an integer field can tell 60 from 60.5.
func decodeBody(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeErrors(w, http.StatusUnsupportedMediaType, apiError{"UNSUPPORTED_MEDIA_TYPE",
			"Content-Type header specified in HTTP request is not supported: " + r.Header.Get("Content-Type"), nil})
		return nil, false
	}
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	var body map[string]any
	if err := dec.Decode(&body); err != nil || body == nil {
		writeErrors(w, http.StatusBadRequest, apiError{"JSON_PARSER_ERROR", "Unexpected content in the request body", nil})
		return nil, false
	}
	if dec.More() {
		writeErrors(w, http.StatusBadRequest, apiError{"JSON_PARSER_ERROR", "Unexpected content after the JSON object", nil})
		return nil, false
	}
	delete(body, "attributes") // {"type": "Task"} annotations are allowed and ignored
	return body, true
}

// validate checks body against an object's fields and returns every problem, like the API's
// error array. update says the record exists, so create-only fields are refused.
func (f *Fake) validate(object string, schema map[string]fieldSpec, body map[string]any, update bool) []apiError {
	var errs []apiError
	for _, name := range slices.Sorted(maps.Keys(body)) {
		v := body[name]
		spec, ok := schema[name]
		if !ok {
			errs = append(errs, apiError{"INVALID_FIELD", fmt.Sprintf("No such column '%s' on sobject of type %s", name, object), nil})
			continue
		}
		if update && spec.createOnly {
			errs = append(errs, apiError{"INVALID_FIELD_FOR_INSERT_UPDATE",
				fmt.Sprintf("Unable to create/update fields: %s. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", name), []string{name}})
			continue
		}
		if v == nil {
			if spec.required || spec.createOnly {
				errs = append(errs, apiError{"REQUIRED_FIELD_MISSING", fmt.Sprintf("Required fields are missing: [%s]", name), []string{name}})
			}
			continue
		}
		parseErr := func(typ string) {
			errs = append(errs, apiError{"JSON_PARSER_ERROR", fmt.Sprintf("Cannot deserialize instance of %s from %v value %v or request may be missing a required field", typ, jsonKind(v), v), []string{name}})
		}
		switch spec.kind {
		case kindString, kindPicklist:
			s, ok := v.(string)
			if !ok {
				if _, num := v.(json.Number); !num {
					parseErr("string")
					continue
				}
				s = v.(json.Number).String() // the API coerces numbers into text fields
			}
			if spec.kind == kindString && utf8.RuneCountInString(s) > spec.max {
				errs = append(errs, apiError{"STRING_TOO_LONG", fmt.Sprintf("%s: data value too large: %s (max length=%d)", name, truncate(s, 40), spec.max), []string{name}})
			}
			if spec.kind == kindPicklist && !slices.Contains(spec.values, s) {
				errs = append(errs, apiError{"INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", fmt.Sprintf("%s: bad value for restricted picklist field: %s", name, s), []string{name}})
			}
		case kindInt:
			n, ok := v.(json.Number)
			if !ok {
				parseErr("int")
				continue
			}
			if _, err := strconv.ParseInt(n.String(), 10, 32); err != nil {
				parseErr("int")
			}
		case kindBool:
			if _, ok := v.(bool); !ok {
				parseErr("boolean")
			}
		case kindDate:
			s, ok := v.(string)
			if _, err := time.Parse(time.DateOnly, s); !ok || err != nil {
				parseErr("date")
			}
		case kindDateTime:
			s, ok := v.(string)
			if _, err := time.Parse(time.RFC3339, s); !ok || err != nil {
				if _, err2 := time.Parse("2006-01-02T15:04:05.000-0700", s); !ok || err2 != nil {
					parseErr("datetime")
				}
			}
		case kindRef:
			s, ok := v.(string)
			if !ok || !idRe.MatchString(s) {
				errs = append(errs, apiError{"MALFORMED_ID", fmt.Sprintf("%s: id value of incorrect type: %v", name, v), []string{name}})
				continue
			}
			if e, bad := f.checkRef(name, s, spec.to); bad {
				errs = append(errs, e)
			}
		}
	}
	if !update {
		for _, name := range slices.Sorted(maps.Keys(schema)) {
			if _, present := body[name]; schema[name].required && !present {
				errs = append(errs, apiError{"REQUIRED_FIELD_MISSING", fmt.Sprintf("Required fields are missing: [%s]", name), []string{name}})
			}
		}
	}
	return errs
}

func (f *Fake) checkRef(name, id string, to []string) (apiError, bool) {
	if len(to) == 0 {
		return apiError{}, false
	}
	if f.deleted[id] {
		return apiError{"ENTITY_IS_DELETED", "entity is deleted", []string{name}}, true
	}
	tables := map[string]map[string]*record{"Contact": f.contacts, "Lead": f.leads, "User": f.users}
	for _, obj := range to {
		if r, ok := tables[obj][id]; ok {
			if obj == "User" && r.fields["IsActive"] != true {
				return apiError{"INACTIVE_OWNER_OR_USER", "operation performed with inactive user", []string{name}}, true
			}
			return apiError{}, false
		}
	}
	return apiError{"INVALID_CROSS_REFERENCE_KEY", fmt.Sprintf("invalid cross reference id: %s", id), []string{name}}, true
}

func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "VALUE_STRING"
	case json.Number:
		if strings.ContainsAny(v.(json.Number).String(), ".eE") {
			return "VALUE_NUMBER_FLOAT"
		}
		return "VALUE_NUMBER_INT"
	case bool:
		return "VALUE_BOOLEAN"
	case map[string]any:
		return "START_OBJECT"
	case []any:
		return "START_ARRAY"
	}
	return "VALUE_NULL"
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "..."
}

func (f *Fake) upsertTask(w http.ResponseWriter, r *http.Request, field, value, runAs string, version int, ver string) {
	body, ok := decodeBody(w, r)
	if !ok {
		return
	}
	logged := Upsert{Field: field, Value: value, Body: body, Collection: -1}
	defer func() { f.upserts = append(f.upserts, logged) }()
	if fault, ok := f.takeRecordFault(value); ok {
		logged.Status, logged.Errors = cmp.Or(fault.Status, http.StatusBadRequest), []string{fault.Code}
		writeErrors(w, logged.Status, apiError{fault.Code, cmp.Or(fault.Message, "injected"), nil})
		return
	}
	matches := f.tasksWith(field, value)
	if len(matches) > 1 {
		logged.Status = http.StatusMultipleChoices
		urls := []string{}
		for _, m := range matches {
			urls = append(urls, "/services/data/"+ver+"/sobjects/Task/"+m.fields["Id"].(string))
		}
		writeJSON(w, http.StatusMultipleChoices, urls)
		return
	}
	var errs []apiError
	for name := range body {
		if strings.EqualFold(name, "Id") {
			errs = append(errs, apiError{"INVALID_FIELD_FOR_INSERT_UPDATE", "Unable to create/update fields: Id. An upsert by external id names the record in the URL, not in the body.", []string{"Id"}})
			delete(body, name)
		} else if strings.EqualFold(name, field) {
			errs = append(errs, apiError{"INVALID_FIELD", fmt.Sprintf("The external ID field %s can not be set in the body of an upsert by that field", field), []string{field}})
			delete(body, name)
		}
	}
	errs = append(errs, f.validate("Task", f.taskSchema(), body, len(matches) == 1)...)
	if len(errs) > 0 {
		logged.Status = http.StatusBadRequest
		for _, e := range errs {
			logged.Errors = append(logged.Errors, e.Code)
		}
		writeErrors(w, http.StatusBadRequest, errs...)
		return
	}
	id, created := f.applyUpsert(matches, field, value, body, runAs)
	if !created {
		logged.Status = http.StatusOK
		if version < 46 { // before API 46.0 an update answered 204 with no body
			logged.Status = http.StatusNoContent
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "success": true, "errors": []any{}, "created": false})
		return
	}
	logged.Status, logged.Created = http.StatusCreated, true
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "success": true, "errors": []any{}, "created": true})
}

// tasksWith returns the Tasks whose field holds value. The caller holds mu.
func (f *Fake) tasksWith(field, value string) []*record {
	var matches []*record
	for _, id := range slices.Sorted(maps.Keys(f.tasks)) {
		if t := f.tasks[id]; t.fields[field] == value {
			matches = append(matches, t)
		}
	}
	return matches
}

// applyUpsert writes a validated upsert: an update of the one match (a null clears a
// field), else a new Task owned by the run-as user. The caller holds mu.
func (f *Fake) applyUpsert(matches []*record, field, value string, body map[string]any, runAs string) (id string, created bool) {
	now := f.opts.Now()
	if len(matches) == 1 {
		t := matches[0]
		for k, v := range body {
			if v == nil {
				delete(t.fields, k)
			} else {
				t.fields[k] = v
			}
		}
		t.modified = now
		return t.fields["Id"].(string), false
	}
	id = f.newID("00T")
	fields := Record{"Id": id, field: value, "Status": "Not Started", "Priority": "Normal", "OwnerId": runAs, "TaskSubtype": "Task"}
	for k, v := range body {
		if v != nil {
			fields[k] = v
		}
	}
	f.tasks[id] = &record{fields: fields, modified: now, indexed: true}
	return id, true
}

func (f *Fake) getTask(w http.ResponseWriter, r *http.Request, field, value, ver string) {
	schema := f.taskSchema()
	var want []string
	if fs := r.URL.Query().Get("fields"); fs != "" {
		for _, n := range strings.Split(fs, ",") {
			n = strings.TrimSpace(n)
			if _, ok := schema[n]; !ok && n != "Id" && n != "LastModifiedDate" {
				writeErrors(w, http.StatusBadRequest, apiError{"INVALID_FIELD", fmt.Sprintf("No such column '%s' on sobject of type Task", n), nil})
				return
			}
			want = append(want, n)
		}
	}
	for _, t := range f.tasks {
		if t.fields[field] != value {
			continue
		}
		out := f.project("Task", t, want, ver)
		writeJSON(w, http.StatusOK, out)
		return
	}
	writeErrors(w, http.StatusNotFound, apiError{"NOT_FOUND", "The requested resource does not exist", nil})
}

// project renders a record the way the API returns it: attributes first, then the asked
// fields (all fields when none are asked), absent fields as null.
func (f *Fake) project(object string, r *record, fields []string, ver string) map[string]any {
	id := r.fields["Id"].(string)
	out := map[string]any{"attributes": map[string]string{"type": object, "url": "/services/data/" + ver + "/sobjects/" + object + "/" + id}}
	if len(fields) == 0 {
		maps.Copy(out, r.fields)
		out["LastModifiedDate"] = formatDateTime(r.modified)
		return out
	}
	for _, n := range fields {
		switch n {
		case "LastModifiedDate":
			out[n] = formatDateTime(r.modified)
		default:
			out[n] = r.fields[n] // nil when unset: the API returns null
		}
	}
	return out
}

func (f *Fake) create(w http.ResponseWriter, r *http.Request, object, runAs string) {
	body, ok := decodeBody(w, r)
	if !ok {
		return
	}
	if _, has := body["Id"]; has {
		writeErrors(w, http.StatusBadRequest, apiError{"INVALID_FIELD_FOR_INSERT_UPDATE", "Unable to create/update fields: Id.", []string{"Id"}})
		return
	}
	if errs := f.validate(object, personSchema(object), body, false); len(errs) > 0 {
		writeErrors(w, http.StatusBadRequest, errs...)
		return
	}
	prefix, table := "003", f.contacts
	if object == "Lead" {
		prefix, table = "00Q", f.leads
	}
	id := f.newID(prefix)
	fields := Record{"Id": id, "OwnerId": runAs}
	for k, v := range body {
		if v != nil {
			fields[k] = v
		}
	}
	// Not indexed: a new record reaches search only later (see IndexSearch).
	table[id] = &record{fields: fields, modified: f.opts.Now()}
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "success": true, "errors": []any{}})
}

// query answers the SOQL the connector sends: SELECT fields FROM User WHERE cond [AND cond]*
// [LIMIT n], where cond is Field = 'literal' or Field = true|false. A literal is parsed with
// SOQL's escapes, so an unescaped quote breaks the query as it would in Salesforce.
func (f *Fake) query(w http.ResponseWriter, q, ver string) {
	malformed := func(msg string) {
		writeErrors(w, http.StatusBadRequest, apiError{"MALFORMED_QUERY", msg, nil})
	}
	toks, err := lexSOQL(q)
	if err != nil {
		malformed(err.Error())
		return
	}
	p := &tokens{toks: toks}
	if !p.keyword("SELECT") {
		malformed("unexpected token: expected SELECT")
		return
	}
	var fields []string
	for {
		t, ok := p.next()
		if !ok || t.kind != tokIdent {
			malformed("unexpected token in field list")
			return
		}
		fields = append(fields, t.text)
		if !p.punct(",") {
			break
		}
	}
	if !p.keyword("FROM") {
		malformed("unexpected token: expected FROM")
		return
	}
	obj, ok := p.next()
	if !ok || obj.kind != tokIdent {
		malformed("unexpected token: expected an object name")
		return
	}
	if !strings.EqualFold(obj.text, "User") {
		writeErrors(w, http.StatusBadRequest, apiError{"INVALID_TYPE", fmt.Sprintf("sObject type '%s' is not supported.", obj.text), nil})
		return
	}
	userFields := []string{"Id", "Username", "Email", "IsActive"}
	canon := func(n string) (string, bool) {
		for _, c := range userFields {
			if strings.EqualFold(c, n) {
				return c, true
			}
		}
		return "", false
	}
	for i, n := range fields {
		c, ok := canon(n)
		if !ok {
			writeErrors(w, http.StatusBadRequest, apiError{"INVALID_FIELD", fmt.Sprintf("No such column '%s' on entity 'User'.", n), nil})
			return
		}
		fields[i] = c
	}
	type cond struct {
		field string
		value any
	}
	var conds []cond
	if p.keyword("WHERE") {
		for {
			ft, ok := p.next()
			if !ok || ft.kind != tokIdent {
				malformed("unexpected token: expected a field name")
				return
			}
			c, known := canon(ft.text)
			if !known {
				writeErrors(w, http.StatusBadRequest, apiError{"INVALID_FIELD", fmt.Sprintf("No such column '%s' on entity 'User'.", ft.text), nil})
				return
			}
			if !p.punct("=") {
				malformed("unexpected token: expected =")
				return
			}
			vt, ok := p.next()
			switch {
			case ok && vt.kind == tokString:
				conds = append(conds, cond{c, vt.text})
			case ok && vt.kind == tokIdent && (strings.EqualFold(vt.text, "true") || strings.EqualFold(vt.text, "false")):
				conds = append(conds, cond{c, strings.EqualFold(vt.text, "true")})
			default:
				malformed("unexpected token: expected a value")
				return
			}
			if !p.keyword("AND") {
				break
			}
		}
	}
	limit := -1
	if p.keyword("LIMIT") {
		t, ok := p.next()
		n, err := strconv.Atoi(t.text)
		if !ok || t.kind != tokNumber || err != nil {
			malformed("unexpected token: expected a number after LIMIT")
			return
		}
		limit = n
	}
	if t, more := p.next(); more {
		malformed(fmt.Sprintf("unexpected token: '%s'", t.text))
		return
	}
	records := []any{}
	ids := slices.Sorted(maps.Keys(f.users))
	for _, id := range ids {
		u := f.users[id]
		match := true
		for _, c := range conds {
			switch v := c.value.(type) {
			case string: // SOQL string comparison is case-insensitive
				s, _ := u.fields[c.field].(string)
				match = match && strings.EqualFold(s, v)
			case bool:
				match = match && u.fields[c.field] == v
			}
		}
		if match && (limit < 0 || len(records) < limit) {
			records = append(records, f.project("User", u, fields, ver))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"totalSize": len(records), "done": true, "records": records})
}

type tokKind int

const (
	tokIdent tokKind = iota
	tokString
	tokNumber
	tokPunct
)

type token struct {
	kind tokKind
	text string
}

type tokens struct {
	toks []token
	i    int
}

func (p *tokens) next() (token, bool) {
	if p.i >= len(p.toks) {
		return token{}, false
	}
	p.i++
	return p.toks[p.i-1], true
}

func (p *tokens) keyword(kw string) bool {
	if p.i < len(p.toks) && p.toks[p.i].kind == tokIdent && strings.EqualFold(p.toks[p.i].text, kw) {
		p.i++
		return true
	}
	return false
}

func (p *tokens) punct(s string) bool {
	if p.i < len(p.toks) && p.toks[p.i].kind == tokPunct && p.toks[p.i].text == s {
		p.i++
		return true
	}
	return false
}

// soqlEscapes are the escape sequences SOQL accepts in a quoted string (outside LIKE).
var soqlEscapes = map[byte]byte{'n': '\n', 'N': '\n', 'r': '\r', 'R': '\r', 't': '\t', 'T': '\t', 'b': '\b', 'B': '\b', 'f': '\f', 'F': '\f', '"': '"', '\'': '\'', '\\': '\\'}

func lexSOQL(q string) ([]token, error) {
	var out []token
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == ',' || c == '=':
			out = append(out, token{tokPunct, string(c)})
			i++
		case c == '\'':
			var b bytes.Buffer
			i++
			closed := false
			for i < len(q) {
				if q[i] == '\\' {
					if i+1 >= len(q) {
						return nil, fmt.Errorf("line 1:%d no viable alternative at character '\\'", i)
					}
					e, ok := soqlEscapes[q[i+1]]
					if !ok {
						return nil, fmt.Errorf("Invalid string literal. Illegal character sequence '\\%c' in string literal.", q[i+1])
					}
					b.WriteByte(e)
					i += 2
					continue
				}
				if q[i] == '\'' {
					closed = true
					i++
					break
				}
				b.WriteByte(q[i])
				i++
			}
			if !closed {
				return nil, fmt.Errorf("line 1:%d mismatched character '<EOF>' expecting '''", len(q))
			}
			out = append(out, token{tokString, b.String()})
		case c >= '0' && c <= '9':
			j := i
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			out = append(out, token{tokNumber, q[i:j]})
			i = j
		case c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z':
			j := i
			for j < len(q) && (q[j] == '_' || q[j] == '.' || q[j] >= 'A' && q[j] <= 'Z' || q[j] >= 'a' && q[j] <= 'z' || q[j] >= '0' && q[j] <= '9') {
				j++
			}
			out = append(out, token{tokIdent, q[i:j]})
			i = j
		default:
			return nil, fmt.Errorf("line 1:%d no viable alternative at character '%c'", i, c)
		}
	}
	return out, nil
}

// soslReserved are the characters a SOSL search term must backslash-escape.
const soslReserved = `?&|!{}[]()^~*:\"'+-`

// search answers FIND {term [OR term]*} IN PHONE FIELDS RETURNING Obj(fields)[,Obj(fields)].
// Reserved characters in a term must be escaped, as Salesforce requires. A term matches a
// record when its digits equal the digits of one of the record's phone fields (the search
// index ignores phone formatting).
func (f *Fake) search(w http.ResponseWriter, q, ver string) {
	malformed := func(msg string) {
		writeErrors(w, http.StatusBadRequest, apiError{"MALFORMED_SEARCH", msg, nil})
	}
	rest, ok := cutPrefixFold(strings.TrimSpace(q), "FIND")
	rest = strings.TrimLeft(rest, " ")
	if !ok || !strings.HasPrefix(rest, "{") {
		malformed("No search term found. The search term must be enclosed in braces.")
		return
	}
	var (
		words []string
		cur   strings.Builder
		i     = 1
	)
	flush := func() {
		if cur.Len() > 0 {
			words = append(words, cur.String())
			cur.Reset()
		}
	}
	closed := false
	for i < len(rest) {
		c := rest[i]
		if c == '\\' {
			if i+1 >= len(rest) {
				malformed("line 1:1 mismatched character '<EOF>'")
				return
			}
			cur.WriteByte(rest[i+1])
			i += 2
			continue
		}
		if c == '}' {
			closed = true
			i++
			break
		}
		if strings.IndexByte(soslReserved, c) >= 0 {
			malformed(fmt.Sprintf("line 1:%d mismatched character '%c' expecting '}'", i+5, c))
			return
		}
		if c == ' ' {
			flush()
		} else {
			cur.WriteByte(c)
		}
		i++
	}
	flush()
	if !closed {
		malformed("line 1:1 mismatched character '<EOF>' expecting '}'")
		return
	}
	var terms []string
	for k, wd := range words {
		if k%2 == 1 {
			if !strings.EqualFold(wd, "OR") {
				malformed("salesforcefake: only OR between search terms is implemented")
				return
			}
			continue
		}
		if len([]rune(wd)) < 2 {
			malformed("search term must be longer than one character: " + wd)
			return
		}
		terms = append(terms, digits(wd))
	}
	if len(words)%2 == 0 {
		malformed("No search term found.")
		return
	}
	tail := strings.Fields(rest[i:])
	if len(tail) < 4 || !strings.EqualFold(tail[0], "IN") || !strings.EqualFold(tail[1], "PHONE") || !strings.EqualFold(tail[2], "FIELDS") || !strings.EqualFold(tail[3], "RETURNING") {
		malformed("salesforcefake: expected IN PHONE FIELDS RETURNING")
		return
	}
	returning := strings.Join(tail[4:], "")
	if returning == "" {
		malformed("unexpected end of query after RETURNING")
		return
	}
	records := []any{}
	for _, spec := range splitReturning(returning) {
		obj, fieldList, ok := strings.Cut(spec, "(")
		if !ok || !strings.HasSuffix(fieldList, ")") {
			malformed("unexpected token: " + spec)
			return
		}
		var table map[string]*record
		switch obj {
		case "Contact":
			table = f.contacts
		case "Lead":
			table = f.leads
		default:
			writeErrors(w, http.StatusBadRequest, apiError{"INVALID_TYPE", fmt.Sprintf("sObject type '%s' is not supported.", obj), nil})
			return
		}
		fields := strings.Split(strings.TrimSuffix(fieldList, ")"), ",")
		allowed := []string{"Id", "OwnerId", "LastModifiedDate", "FirstName", "LastName", "Phone", "MobilePhone", "Company"}
		for _, fl := range fields {
			if !slices.Contains(allowed, fl) || (fl == "Company" && obj != "Lead") {
				writeErrors(w, http.StatusBadRequest, apiError{"INVALID_FIELD", fmt.Sprintf("No such column '%s' on entity '%s'.", fl, obj), nil})
				return
			}
		}
		for _, id := range slices.Sorted(maps.Keys(table)) {
			r := table[id]
			if r.indexed && phoneMatches(r, terms) {
				records = append(records, f.project(obj, r, fields, ver))
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"searchRecords": records})
}

func splitReturning(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func phoneMatches(r *record, terms []string) bool {
	for _, name := range []string{"Phone", "MobilePhone"} {
		p, _ := r.fields[name].(string)
		d := digits(p)
		if d == "" {
			continue
		}
		if slices.Contains(terms, d) {
			return true
		}
	}
	return false
}

func digits(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	return b.String()
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
