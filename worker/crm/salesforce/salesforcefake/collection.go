package salesforcefake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strings"
)

// MaxCollection is the most records one sObject Collections request may carry.
const MaxCollection = 200

// collectionError is one element of a collection record's errors[]: Salesforce names the
// code statusCode here, not errorCode as in a failed request's error array.
type collectionError struct {
	StatusCode string   `json:"statusCode"`
	Message    string   `json:"message"`
	Fields     []string `json:"fields"`
}

// upsertResult is one element of a collection upsert's answer (an UpsertResult).
type upsertResult struct {
	ID      string            `json:"id,omitempty"`
	Success bool              `json:"success"`
	Errors  []collectionError `json:"errors"`
	Created *bool             `json:"created,omitempty"`
}

// upsertCollection is PATCH composite/sobjects/Task/<field>: up to 200 Tasks upserted by
// the External ID field, as Salesforce documents it (API 46.0+):
//
//   - the body is {"allOrNone": bool (default false), "records": [...]}; anything else, or
//     a record without attributes.type, or of another type than the URL's, is a malformed
//     request: 400 for all, nothing written; more than 200 records likewise;
//   - each record carries its external id value in the field named by the URL (never Id);
//   - records are processed in order and the answer lists one UpsertResult per record in
//     the same order, with success, created, id and errors[] ({statusCode, message, fields});
//   - allOrNone false: each record stands alone; true: one failure rolls back every record,
//     and those that were fine answer ALL_OR_NONE_OPERATION_ROLLED_BACK;
//   - two records with the same external id both fail DUPLICATE_EXTERNAL_ID, and so does a
//     record whose external id matches several Tasks (the one-record upsert's 300).
//
// The caller holds mu and has checked the field.
func (f *Fake) upsertCollection(w http.ResponseWriter, r *http.Request, field, runAs string, version int, ver string) {
	malformed := func(code, msg string) {
		f.colls = append(f.colls, Collection{Field: field, Status: http.StatusBadRequest})
		writeErrors(w, http.StatusBadRequest, apiError{code, msg, nil})
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeErrors(w, http.StatusUnsupportedMediaType, apiError{"UNSUPPORTED_MEDIA_TYPE",
			"Content-Type header specified in HTTP request is not supported: " + r.Header.Get("Content-Type"), nil})
		return
	}
	// Keys are matched exactly (encoding/json would take "allornone" for allOrNone).
	var top map[string]json.RawMessage
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&top); err != nil || dec.More() || top == nil {
		malformed("JSON_PARSER_ERROR", "The request body is not a JSON object")
		return
	}
	var req struct {
		AllOrNone *bool
		Records   []json.RawMessage
	}
	for k, v := range top {
		var err error
		switch k {
		case "allOrNone":
			err = json.Unmarshal(v, &req.AllOrNone)
		case "records":
			err = json.Unmarshal(v, &req.Records)
		default:
			err = fmt.Errorf("unrecognized field %q", k)
		}
		if err != nil {
			malformed("JSON_PARSER_ERROR", fmt.Sprintf("The request body is not a collection upsert: %v", err))
			return
		}
	}
	if req.Records == nil {
		malformed("JSON_PARSER_ERROR", "records is required")
		return
	}
	if len(req.Records) > MaxCollection {
		malformed("EXCEEDED_ID_LIMIT", fmt.Sprintf("record limit reached. cannot submit more than %d records into this call", MaxCollection))
		return
	}
	bodies := make([]map[string]any, len(req.Records))
	for i, raw := range req.Records {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		var rec map[string]any
		if err := d.Decode(&rec); err != nil || rec == nil {
			malformed("JSON_PARSER_ERROR", fmt.Sprintf("records[%d] is not an object", i))
			return
		}
		attrs, _ := rec["attributes"].(map[string]any)
		typ, _ := attrs["type"].(string)
		switch {
		case typ == "":
			malformed("INVALID_TYPE", fmt.Sprintf("records[%d]: Must specify a type in the attributes of each record", i))
			return
		case typ != "Task":
			malformed("INVALID_TYPE", fmt.Sprintf("records[%d]: type %s does not match the type of the request, Task", i, typ))
			return
		}
		delete(rec, "attributes")
		bodies[i] = rec
	}
	allOrNone := req.AllOrNone != nil && *req.AllOrNone
	idx := len(f.colls)
	coll := Collection{Field: field, AllOrNone: allOrNone, Status: http.StatusOK}

	// The external id of each record, and which appear more than once.
	values := make([]string, len(bodies))
	count := map[string]int{}
	for i, b := range bodies {
		for name, v := range b {
			if strings.EqualFold(name, field) {
				switch x := v.(type) {
				case string:
					values[i] = x
				case json.Number:
					values[i] = x.String() // a text field takes a number as its text
				}
				delete(b, name)
			}
		}
		if values[i] != "" {
			count[values[i]]++
		}
		coll.Values = append(coll.Values, values[i])
	}

	schema := f.taskSchema()
	results := make([]upsertResult, len(bodies))
	logs := make([]Upsert, len(bodies))
	applies := make([]func() (string, bool), len(bodies))
	failed := false
	for i, body := range bodies {
		value := values[i]
		logs[i] = Upsert{Field: field, Value: value, Body: body, Collection: idx}
		var errs []collectionError
		fail := func(code, msg string, fields ...string) {
			errs = append(errs, collectionError{code, msg, append([]string{}, fields...)})
		}
		matches := f.tasksWith(field, value)
		switch {
		case value == "":
			fail("MISSING_ARGUMENT", field+" not specified")
		case count[value] > 1:
			fail("DUPLICATE_EXTERNAL_ID", "Duplicate external id specified: "+value, field)
		case len(matches) > 1:
			ids := make([]string, len(matches))
			for k, m := range matches {
				ids[k] = m.fields["Id"].(string)
			}
			fail("DUPLICATE_EXTERNAL_ID", fmt.Sprintf("more than one record found for external id field: [%s]", strings.Join(ids, ", ")), field)
		}
		if len(errs) == 0 {
			if fault, ok := f.takeRecordFault(value); ok {
				fail(fault.Code, fault.Message)
			}
		}
		if len(errs) == 0 {
			if _, has := body["Id"]; has {
				fail("INVALID_FIELD_FOR_INSERT_UPDATE", "Unable to create/update fields: Id. An upsert by external id names the record by that field, not by Id.", "Id")
				delete(body, "Id")
			}
			for _, e := range f.validate("Task", schema, body, len(matches) == 1) {
				fail(e.Code, e.Message, e.Fields...)
			}
		}
		if len(errs) > 0 {
			failed = true
			results[i] = upsertResult{Success: false, Errors: errs}
			logs[i].Status = http.StatusBadRequest
			for _, e := range errs {
				logs[i].Errors = append(logs[i].Errors, e.StatusCode)
			}
			continue
		}
		applies[i] = func() (string, bool) { return f.applyUpsert(f.tasksWith(field, value), field, value, body, runAs) }
	}
	for i, apply := range applies {
		if apply == nil {
			continue
		}
		if allOrNone && failed {
			results[i] = upsertResult{Success: false, Errors: []collectionError{{"ALL_OR_NONE_OPERATION_ROLLED_BACK",
				"Record rolled back because not all records were valid and the request was using AllOrNone header", []string{}}}}
			logs[i].Status, logs[i].Errors = http.StatusBadRequest, []string{"ALL_OR_NONE_OPERATION_ROLLED_BACK"}
			continue
		}
		id, created := apply()
		results[i] = upsertResult{ID: id, Success: true, Errors: []collectionError{}, Created: &created}
		logs[i].Status, logs[i].Created = http.StatusOK, created
		if created {
			logs[i].Status = http.StatusCreated
		}
	}
	f.upserts = append(f.upserts, logs...)
	f.colls = append(f.colls, coll)
	writeJSON(w, http.StatusOK, results)
}

// describeGlobal is GET sobjects/: the objects the user can see, with what it may do.
func (f *Fake) describeGlobal(w http.ResponseWriter, ver string) {
	var objs []any
	for _, name := range []string{"Contact", "Lead", "Task", "User"} {
		a := f.opts.Access[name]
		if !a.Read {
			continue
		}
		objs = append(objs, map[string]any{
			"name": name, "label": name, "custom": false, "queryable": true, "retrieveable": true, "searchable": name != "Task",
			"createable": a.Create, "updateable": a.Edit, "deletable": a.Edit,
			"urls": map[string]string{"sobject": "/services/data/" + ver + "/sobjects/" + name, "describe": "/services/data/" + ver + "/sobjects/" + name + "/describe"},
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"encoding": "UTF-8", "maxBatchSize": MaxCollection, "sobjects": objs})
}

// describe is GET sobjects/<object>/describe: the object's permissions and its fields as
// the user sees them (name, type, length, externalId, unique, createable, updateable, ...).
func (f *Fake) describe(w http.ResponseWriter, object, ver string) {
	a, known := f.opts.Access[object]
	var schema map[string]fieldSpec
	switch object {
	case "Task":
		schema = f.taskSchema()
	case "Contact", "Lead":
		schema = personSchema(object)
	case "User":
		schema = map[string]fieldSpec{"Username": {kind: kindString, max: 80, unique: true}, "Email": {kind: kindString, max: 128}, "IsActive": {kind: kindBool}}
	}
	if !known || !a.Read || schema == nil {
		writeErrors(w, http.StatusNotFound, apiError{"NOT_FOUND", "The requested resource does not exist", nil})
		return
	}
	fields := []any{map[string]any{"name": "Id", "type": "id", "length": 18, "externalId": false, "unique": false,
		"idLookup": true, "createable": false, "updateable": false, "nillable": false}}
	for _, name := range slices.Sorted(maps.Keys(schema)) {
		spec := schema[name]
		typ, length := "string", spec.max
		switch spec.kind {
		case kindPicklist:
			typ, length = "picklist", 255
		case kindInt:
			typ, length = "int", 0
		case kindDate:
			typ, length = "date", 0
		case kindDateTime:
			typ, length = "datetime", 0
		case kindBool:
			typ, length = "boolean", 0
		case kindRef:
			typ, length = "reference", 18
		}
		if name == "Description" {
			typ = "textarea"
		}
		fields = append(fields, map[string]any{
			"name": name, "type": typ, "length": length, "externalId": spec.externalID, "unique": spec.unique,
			"idLookup": spec.externalID || spec.unique, "createable": a.Create, "updateable": a.Edit && !spec.createOnly,
			"nillable": !spec.required, "custom": strings.HasSuffix(name, "__c"), "referenceTo": nonNil(spec.to),
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"name": object, "label": object, "custom": false, "queryable": true,
		"createable": a.Create, "updateable": a.Edit, "deletable": a.Edit,
		"fields": fields,
		"urls":   map[string]string{"describe": "/services/data/" + ver + "/sobjects/" + object + "/describe"},
	})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
