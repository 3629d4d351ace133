package hubspotfake

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Outcome GUIDs HubSpot defines for hs_call_disposition.
var defaultDispositions = []string{
	"9d9162e7-6cf3-4944-bf63-4dff82258764", // Busy
	"f240bbac-87c9-4f6e-bf70-924b57d47db7", // Connected
	"a4c4c377-d246-4b32-a13b-75a56a4cd0ff", // Left live message
	"b2cf5968-551e-4856-9783-52b3da59a7d0", // Left voicemail
	"73a0d17f-1163-4015-bdd5-ec830791da20", // No answer
	"17b47fee-58de-441e-a44c-c6300d46f273", // Wrong number
}

// callProperties are HubSpot's call properties the fake knows (custom ones are added with
// DefineCallProperty).
var callProperties = map[string]bool{
	"hs_timestamp": true, "hs_call_title": true, "hs_call_body": true, "hs_call_direction": true,
	"hs_call_duration": true, "hs_call_from_number": true, "hs_call_to_number": true,
	"hs_call_status": true, "hs_call_disposition": true, "hs_call_recording_url": true,
	"hubspot_owner_id": true, "hs_call_external_id": true, "hs_call_source": true,
	"hs_call_external_account_id": true, "hs_activity_type": true, "hs_attachment_ids": true,
	"hs_call_callee_object_id": true, "hs_call_callee_object_type_id": true,
	"hs_object_id": true, "hs_createdate": true, "hs_lastmodifieddate": true,
}

var contactProperties = map[string]bool{
	"email": true, "firstname": true, "lastname": true, "phone": true, "mobilephone": true,
	"company": true, "hubspot_owner_id": true, "lifecyclestage": true, "jobtitle": true,
	"hs_object_id": true, "createdate": true, "lastmodifieddate": true,
	"hs_searchable_calculated_phone_number": true, "hs_searchable_calculated_mobile_number": true,
}

var (
	callDirections = map[string]bool{"INBOUND": true, "OUTBOUND": true}
	callStatuses   = map[string]bool{"BUSY": true, "CALLING_CRM_USER": true, "CANCELED": true, "COMPLETED": true,
		"CONNECTING": true, "FAILED": true, "IN_PROGRESS": true, "NO_ANSWER": true, "QUEUED": true,
		"RINGING": true, "MISSED": true}
	reDigits = regexp.MustCompile(`^[0-9]+$`)
)

// maxText is HubSpot's limit for a text property value.
const maxText = 65536

type propError struct {
	Name, Code, Msg string
}

// validationFailure answers 400 VALIDATION_ERROR in HubSpot's "Property values were not
// valid" shape.
func validationFailure(w http.ResponseWriter, errs []propError) {
	writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", propErrorMessage(errs), propErrorDetails(errs))
}

func propErrorMessage(errs []propError) string {
	items := make([]map[string]any, 0, len(errs))
	for _, e := range errs {
		items = append(items, map[string]any{"isValid": false, "message": e.Msg, "error": e.Code, "name": e.Name})
	}
	b, _ := json.Marshal(items)
	return "Property values were not valid: " + string(b)
}

func propErrorDetails(errs []propError) []map[string]any {
	out := make([]map[string]any, 0, len(errs))
	for _, e := range errs {
		out = append(out, map[string]any{"message": e.Msg, "code": e.Code, "context": map[string]any{"propertyName": []string{e.Name}}})
	}
	return out
}

// decodeProps reads a properties object whose values must all be strings (or null, which
// HubSpot treats as clearing the value).
func decodeProps(raw map[string]json.RawMessage) (map[string]string, []propError) {
	out := make(map[string]string, len(raw))
	var errs []propError
	for k, v := range raw {
		if string(v) == "null" {
			out[k] = ""
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			errs = append(errs, propError{k, "INVALID_TYPE", fmt.Sprintf("Property %q must be sent as a string (fake is stricter than HubSpot here)", k)})
			continue
		}
		out[k] = s
	}
	return out, errs
}

// validateCallProps checks call properties as HubSpot does; create requires hs_timestamp.
func (s *Server) validateCallProps(props map[string]string, create bool, selfID string) []propError {
	var errs []propError
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := props[k]
		_, custom := s.callProps[k]
		if !callProperties[k] && !custom {
			errs = append(errs, propError{k, "PROPERTY_DOESNT_EXIST", fmt.Sprintf("Property %q does not exist", k)})
			continue
		}
		if utf8.RuneCountInString(v) > maxText {
			errs = append(errs, propError{k, "INVALID_LENGTH", fmt.Sprintf("Property %q value is %d characters, over the limit of %d", k, utf8.RuneCountInString(v), maxText)})
			continue
		}
		if v == "" {
			if k == "hs_timestamp" {
				errs = append(errs, propError{k, "INVALID_DATE", "hs_timestamp must not be empty"})
			}
			continue
		}
		switch k {
		case "hs_timestamp":
			if !validTimestamp(v) {
				errs = append(errs, propError{k, "INVALID_DATE", fmt.Sprintf("%q is not a valid datetime: use ISO 8601 or epoch milliseconds", v)})
			}
		case "hs_call_duration":
			if !reDigits.MatchString(v) {
				errs = append(errs, propError{k, "INVALID_INTEGER", fmt.Sprintf("%q was not a valid number of milliseconds", v)})
			}
		case "hs_call_direction":
			if !callDirections[v] {
				errs = append(errs, propError{k, "INVALID_OPTION", fmt.Sprintf("%q was not one of the allowed options: [INBOUND, OUTBOUND]", v)})
			}
		case "hs_call_status":
			if !callStatuses[v] {
				errs = append(errs, propError{k, "INVALID_OPTION", fmt.Sprintf("%q was not one of the allowed options", v)})
			}
		case "hs_call_disposition":
			if !s.dispositions[v] {
				errs = append(errs, propError{k, "INVALID_OPTION", fmt.Sprintf("%q is not a call outcome of this account", v)})
			}
		case "hs_call_recording_url":
			if !strings.HasPrefix(v, "https://") {
				errs = append(errs, propError{k, "INVALID_URL", "hs_call_recording_url must be an https URL"})
			}
		case "hubspot_owner_id":
			if _, ok := s.owners[v]; !ok {
				errs = append(errs, propError{k, "INVALID_OWNER_ID", fmt.Sprintf("%q is not a valid owner id", v)})
			}
		}
		if unique := s.callProps[k]; unique {
			for _, id := range s.callsWith(k, v) {
				if id != selfID {
					errs = append(errs, propError{k, "DUPLICATE_UNIQUE_VALUE", fmt.Sprintf("%q already has that value (call %s)", v, id)})
				}
			}
		}
	}
	if create {
		if _, ok := props["hs_timestamp"]; !ok {
			errs = append(errs, propError{"hs_timestamp", "REQUIRED_PROPERTY", "Property \"hs_timestamp\" is required when creating a call"})
		}
	}
	return errs
}

func validTimestamp(v string) bool {
	if reDigits.MatchString(v) {
		return true
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.000Z", "2006-01-02"} {
		if _, err := time.Parse(layout, v); err == nil {
			return true
		}
	}
	return false
}

type association struct {
	To struct {
		ID string `json:"id"`
	} `json:"to"`
	Types []assocType `json:"types"`
}

type assocType struct {
	AssociationCategory string `json:"associationCategory"`
	AssociationTypeID   int    `json:"associationTypeId"`
}

// validateAssociations accepts call->contact (HUBSPOT_DEFINED 194) to existing contacts.
func (s *Server) validateAssociations(as []association) (contacts []string, msg string) {
	for _, a := range as {
		if len(a.Types) == 0 {
			return nil, "association to " + a.To.ID + " has no types"
		}
		for _, t := range a.Types {
			if t.AssociationCategory != "HUBSPOT_DEFINED" || t.AssociationTypeID != 194 {
				return nil, fmt.Sprintf("invalid association type %s/%d from calls to contacts", t.AssociationCategory, t.AssociationTypeID)
			}
		}
		if _, ok := s.contacts[a.To.ID]; !ok {
			return nil, "association target contact " + a.To.ID + " does not exist"
		}
		contacts = append(contacts, a.To.ID)
	}
	return contacts, ""
}

func (s *Server) objectJSON(o *Object, only []string) map[string]any {
	props := o.Properties
	if only != nil {
		props = map[string]string{}
		for _, k := range append(only, "hs_object_id", "hs_createdate", "hs_lastmodifieddate", "createdate", "lastmodifieddate") {
			if v, ok := o.Properties[k]; ok {
				props[k] = v
			}
		}
	}
	return map[string]any{"id": o.ID, "properties": props, "createdAt": o.CreatedAt.Format(time.RFC3339Nano),
		"updatedAt": o.UpdatedAt.Format(time.RFC3339Nano), "archived": false}
}

// ---- calls ----

func (s *Server) createCall(w http.ResponseWriter, r *http.Request, body []byte) {
	var in struct {
		Properties   map[string]json.RawMessage `json:"properties"`
		Associations []association              `json:"associations"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON on line 1: "+err.Error(), nil)
		return
	}
	props, errs := decodeProps(in.Properties)
	errs = append(errs, s.validateCallProps(props, true, "")...)
	if len(errs) > 0 {
		validationFailure(w, errs)
		return
	}
	contacts, msg := s.validateAssociations(in.Associations)
	if msg != "" {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", msg, nil)
		return
	}
	c := s.storeCall(props)
	c.Contacts = contacts
	writeJSON(w, http.StatusCreated, s.objectJSON(c, nil))
}

func (s *Server) storeCall(props map[string]string) *Object {
	now := time.Now().UTC()
	id := s.newID()
	p := map[string]string{"hs_object_id": id, "hs_createdate": now.Format(time.RFC3339Nano), "hs_lastmodifieddate": now.Format(time.RFC3339Nano)}
	for k, v := range props {
		p[k] = v
	}
	c := &Object{ID: id, Properties: p, CreatedAt: now, UpdatedAt: now, Writes: 1, indexedAt: now.Add(s.searchLag)}
	s.calls[id] = c
	for k, v := range p {
		s.indexCall(id, k, "", v)
	}
	return c
}

// indexCall moves call id from (k, old) to (k, v) in the lookup by property value, so a
// unique-value check or an idProperty lookup does not scan every call (a load run holds
// tens of thousands). Called with mu held.
func (s *Server) indexCall(id, k, old, v string) {
	if old != "" {
		delete(s.callsBy[k+"\x00"+old], id)
	}
	if v != "" {
		key := k + "\x00" + v
		if s.callsBy[key] == nil {
			s.callsBy[key] = map[string]bool{}
		}
		s.callsBy[key][id] = true
	}
}

// callsWith returns the ids of the calls whose property k holds v, in id order.
func (s *Server) callsWith(k, v string) []string {
	ids := slices.Collect(maps.Keys(s.callsBy[k+"\x00"+v]))
	sort.Slice(ids, func(i, j int) bool { return numLess(ids[i], ids[j]) })
	return ids
}

func (s *Server) updateStored(c *Object, props map[string]string) {
	now := time.Now().UTC()
	for k, v := range props {
		s.indexCall(c.ID, k, c.Properties[k], v)
		c.Properties[k] = v
	}
	s.indexCall(c.ID, "hs_lastmodifieddate", c.Properties["hs_lastmodifieddate"], now.Format(time.RFC3339Nano))
	c.Properties["hs_lastmodifieddate"] = now.Format(time.RFC3339Nano)
	c.UpdatedAt = now
	c.Writes++
}

// findCall resolves a path id, by hs_object_id or by the idProperty query parameter.
func (s *Server) findCall(id, idProperty string) *Object {
	if idProperty == "" || idProperty == "hs_object_id" {
		return s.calls[id]
	}
	if ids := s.callsWith(idProperty, id); len(ids) > 0 {
		return s.calls[ids[0]]
	}
	return nil
}

func (s *Server) updateCall(w http.ResponseWriter, r *http.Request, body []byte) {
	id := reCall.FindStringSubmatch(r.URL.Path)[1]
	idProp := r.URL.Query().Get("idProperty")
	if idProp != "" && idProp != "hs_object_id" && !s.callProps[idProp] {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", s.nonUniqueMessage(idProp), nil)
		return
	}
	c := s.findCall(id, idProp)
	if c == nil {
		writeError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "resource not found", nil)
		return
	}
	var in struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON on line 1: "+err.Error(), nil)
		return
	}
	props, errs := decodeProps(in.Properties)
	errs = append(errs, s.validateCallProps(props, false, c.ID)...)
	if len(errs) > 0 {
		validationFailure(w, errs)
		return
	}
	s.updateStored(c, props)
	writeJSON(w, http.StatusOK, s.objectJSON(c, nil))
}

func (s *Server) getCall(w http.ResponseWriter, r *http.Request, _ []byte) {
	id := reCall.FindStringSubmatch(r.URL.Path)[1]
	c := s.findCall(id, r.URL.Query().Get("idProperty"))
	if c == nil {
		writeError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "resource not found", nil)
		return
	}
	writeJSON(w, http.StatusOK, s.objectJSON(c, nil))
}

func (s *Server) batchRead(w http.ResponseWriter, r *http.Request, body []byte) {
	var in struct {
		IDProperty string   `json:"idProperty"`
		Properties []string `json:"properties"`
		Inputs     []struct {
			ID string `json:"id"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(body, &in); err != nil || len(in.Inputs) > 100 {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input: 1 to 100 inputs", nil)
		return
	}
	results := []map[string]any{}
	var missing []string
	for _, item := range in.Inputs {
		if c := s.findCall(item.ID, in.IDProperty); c != nil {
			results = append(results, s.objectJSON(c, in.Properties))
		} else {
			missing = append(missing, item.ID)
		}
	}
	resp := map[string]any{"status": "COMPLETE", "results": results}
	status := http.StatusOK
	if len(missing) > 0 {
		resp["errors"] = []map[string]any{{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some CALL objects, they may be deleted or not exist.", "context": map[string]any{"ids": missing}}}
		resp["numErrors"] = 1
		status = http.StatusMultiStatus
	}
	writeJSON(w, status, resp)
}

func (s *Server) associate(w http.ResponseWriter, r *http.Request, body []byte) {
	m := reAssociation.FindStringSubmatch(r.URL.Path)
	callID, contactID := m[2], m[4]
	var types []assocType
	if err := json.Unmarshal(body, &types); err != nil || len(types) == 0 {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "body must be a non-empty array of association types", nil)
		return
	}
	for _, t := range types {
		if t.AssociationCategory != "HUBSPOT_DEFINED" || t.AssociationTypeID != 194 {
			writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", fmt.Sprintf("invalid association type %s/%d from calls to contacts", t.AssociationCategory, t.AssociationTypeID), nil)
			return
		}
	}
	c, ok := s.calls[callID]
	if !ok {
		writeError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "call "+callID+" not found", nil)
		return
	}
	if _, ok := s.contacts[contactID]; !ok {
		writeError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "contact "+contactID+" not found", nil)
		return
	}
	found := false
	for _, x := range c.Contacts {
		found = found || x == contactID
	}
	if !found {
		c.Contacts = append(c.Contacts, contactID)
	}
	writeJSON(w, http.StatusOK, map[string]any{"fromObjectTypeId": "0-48", "fromObjectId": callID, "toObjectTypeId": "0-1",
		"toObjectId": contactID, "labels": []string{}})
}

// ---- contacts ----

func (s *Server) createContact(w http.ResponseWriter, r *http.Request, body []byte) {
	var in struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON on line 1: "+err.Error(), nil)
		return
	}
	props, errs := decodeProps(in.Properties)
	for k, v := range props {
		if !contactProperties[k] {
			errs = append(errs, propError{k, "PROPERTY_DOESNT_EXIST", fmt.Sprintf("Property %q does not exist", k)})
		}
		if k == "hubspot_owner_id" && v != "" {
			if _, ok := s.owners[v]; !ok {
				errs = append(errs, propError{k, "INVALID_OWNER_ID", fmt.Sprintf("%q is not a valid owner id", v)})
			}
		}
	}
	if len(errs) > 0 {
		validationFailure(w, errs)
		return
	}
	if e := props["email"]; e != "" {
		for id, c := range s.contacts {
			if strings.EqualFold(c.Properties["email"], e) {
				writeError(w, http.StatusConflict, "CONFLICT", "Contact already exists. Existing ID: "+id, nil)
				return
			}
		}
	}
	id := s.addContact(props, time.Now().Add(s.searchLag))
	writeJSON(w, http.StatusCreated, s.objectJSON(s.contacts[id], nil))
}

// ---- search ----

type filter struct {
	PropertyName string   `json:"propertyName"`
	Operator     string   `json:"operator"`
	Value        string   `json:"value"`
	Values       []string `json:"values"`
}

func (s *Server) search(w http.ResponseWriter, body []byte, objects map[string]*Object) {
	var in struct {
		FilterGroups []struct {
			Filters []filter `json:"filters"`
		} `json:"filterGroups"`
		Sorts []struct {
			PropertyName string `json:"propertyName"`
			Direction    string `json:"direction"`
		} `json:"sorts"`
		Properties []string `json:"properties"`
		Limit      int      `json:"limit"`
		After      string   `json:"after"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "Invalid input JSON on line 1: "+err.Error(), nil)
		return
	}
	total := 0
	if len(in.FilterGroups) > 5 {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", fmt.Sprintf("Too many filter groups (%d); the maximum is 5", len(in.FilterGroups)), nil)
		return
	}
	for _, g := range in.FilterGroups {
		if len(g.Filters) > 6 {
			writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", fmt.Sprintf("Too many filters in a group (%d); the maximum is 6", len(g.Filters)), nil)
			return
		}
		total += len(g.Filters)
		for _, f := range g.Filters {
			switch f.Operator {
			case "EQ", "NEQ", "HAS_PROPERTY", "NOT_HAS_PROPERTY":
			case "IN", "NOT_IN":
				if len(f.Values) == 0 || len(f.Values) > MaxInValues {
					writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", fmt.Sprintf("%s filter on %s takes 1 to %d values, got %d", f.Operator, f.PropertyName, MaxInValues, len(f.Values)), nil)
					return
				}
			default:
				writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", fmt.Sprintf("Unsupported filter operator %q", f.Operator), nil)
				return
			}
		}
	}
	if total > 18 {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", fmt.Sprintf("Too many filters (%d); the maximum is 18", total), nil)
		return
	}
	if in.Limit == 0 {
		in.Limit = 10
	}
	if in.Limit < 0 || in.Limit > 200 {
		writeError(w, http.StatusBadRequest, "VALIDATION_ERROR", "limit must be between 1 and 200", nil)
		return
	}
	now := time.Now()
	var hits []*Object
	for _, o := range objects {
		if now.Before(o.indexedAt) {
			continue // not yet in the search index
		}
		match := len(in.FilterGroups) == 0
		for _, g := range in.FilterGroups {
			all := true
			for _, f := range g.Filters {
				all = all && matches(o.Properties[f.PropertyName], f)
			}
			match = match || all
		}
		if match {
			hits = append(hits, o)
		}
	}
	sort.Slice(hits, func(i, j int) bool { return numLess(hits[i].ID, hits[j].ID) })
	if len(in.Sorts) > 0 {
		sp, desc := in.Sorts[0].PropertyName, in.Sorts[0].Direction == "DESCENDING"
		sort.SliceStable(hits, func(i, j int) bool {
			a, b := hits[i].Properties[sp], hits[j].Properties[sp]
			if desc {
				return a > b
			}
			return a < b
		})
	}
	start, _ := strconv.Atoi(in.After)
	start = min(max(start, 0), len(hits))
	end := min(start+in.Limit, len(hits))
	results := []map[string]any{}
	only := in.Properties
	if only == nil {
		only = []string{}
	}
	for _, o := range hits[start:end] {
		results = append(results, s.objectJSON(o, only))
	}
	resp := map[string]any{"total": len(hits), "results": results}
	if end < len(hits) {
		resp["paging"] = map[string]any{"next": map[string]any{"after": strconv.Itoa(end)}}
	}
	writeJSON(w, http.StatusOK, resp)
}

func matches(v string, f filter) bool {
	switch f.Operator {
	case "EQ":
		return strings.EqualFold(v, f.Value)
	case "NEQ":
		return !strings.EqualFold(v, f.Value)
	case "IN", "NOT_IN":
		in := false
		for _, x := range f.Values {
			in = in || strings.EqualFold(v, x)
		}
		return in == (f.Operator == "IN")
	case "HAS_PROPERTY":
		return v != ""
	case "NOT_HAS_PROPERTY":
		return v == ""
	}
	return false
}
